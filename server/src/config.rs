//! Configuration: built-in defaults, then a TOML file, then `TACIT_*` environment variables
//! (then command-line flags, applied by `main`). [`Config::validate`] runs before the server
//! starts, and every error names the key at fault.
//!
//! `server/tacit-server.example.toml` documents every key. Environment variables are the
//! key path in upper case joined by `_`, prefixed with `TACIT_`: `limits.max_body_bytes` is
//! `TACIT_LIMITS_MAX_BODY_BYTES`.
//!
//! # Why the variables are mapped by hand
//!
//! A layered config crate (`figment` with its `Toml` and `Env` providers, or `config`) was
//! weighed for [`Config::apply_env`] and kept out; it would not remove the key-by-key
//! mapping, only move it, and it would lose the error messages:
//!
//! - **The names.** Keys and sections hold `_` themselves (`rate_limits`,
//!   `max_body_bytes`), and so does the separator: `Env::split("_")` (or `config`'s
//!   `separator("_")`) reads `TACIT_LIMITS_MAX_BODY_BYTES` as `limits.max.body.bytes`. Keeping
//!   every variable name means telling the provider which underscore splits, that is, a
//!   list of sections or keys in an `Env::map` closure.
//! - **The prefix is shared.** `TACIT_TEST_DATABASE_URL` (the test harness) and the
//!   client's variables live in the same environments; a prefix provider reads them as keys,
//!   which `deny_unknown_fields` then refuses, unless an `Env::only` list (the key list
//!   again) filters them out.
//! - **The messages.** A failure here names the variable and the key
//!   (`invalid environment variable TACIT_LIMITS_FETCH_BATCH (config key
//!   `limits.fetch_batch`): invalid digit found in string`, as docs/SERVER.md shows); the
//!   crates name the key path and the provider, not the variable. An empty path variable
//!   (`TACIT_BLOBS_DIR=`) meaning "the default" would need a custom deserializer.
//! - **The cost.** The defaults provider needs `Serialize` on every config type (and a
//!   [`Redacted`] that serializes its secret), plus the crate and its dependencies, to
//!   replace about 200 lines that only call one `set` helper per key.
//!
//! The one risk of the hand mapping, a key without its variable or with a misspelt one, is
//! a test: `every_key_has_its_variable` checks that the variables read are exactly the key
//! paths of the example file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Why the configuration is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad or unknown key (the message names it).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with the key.
        message: String,
    },
    /// An environment variable does not parse.
    #[error("invalid environment variable {var} (config key `{key}`): {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// The config key it sets.
        key: &'static str,
        /// Why it is invalid.
        message: String,
    },
    /// A value is out of range or contradicts another.
    #[error("invalid config key `{key}`: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

/// A string that may hold a secret (a database password): `Debug` and `Display` redact it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl Redacted {
    /// The value itself, for the one place that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("expected `text` or `json`, got `{s}`")),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Directory for the SQLite database and the generated TLS certificate.
    pub data_dir: PathBuf,
    /// `postgres://...` for PostgreSQL, `sqlite:...` for SQLite; empty means
    /// `<data_dir>/tacit.db`.
    pub database_url: Redacted,
    /// Let anyone register without an invite.
    pub open_registration: bool,
    /// Serve plain HTTP instead of TLS; refused unless `listen` is a loopback address.
    pub plain_http: bool,
    /// TLS certificate.
    pub tls: TlsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Size and count limits.
    pub limits: Limits,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// WebSocket heartbeats.
    pub websocket: WebSocketConfig,
    /// The blob store (encrypted attachments).
    pub blobs: BlobConfig,
    /// What the housekeeping task deletes beside expired envelopes and blobs, and in what
    /// batches.
    pub retention: RetentionConfig,
    /// Connections: how many, and how long each step may take.
    pub http: Http,
    /// Where `/metrics` is served (and who may scrape it).
    pub metrics: MetricsConfig,
    /// The audit log's signing key.
    pub audit: AuditConfig,
    /// Sign-in with the company's OpenID Connect provider; absent: off (invites only).
    pub oidc: Option<OidcSettings>,
    /// SCIM 2.0 provisioning by the identity provider (docs/SCIM.md); absent: off, the
    /// `/scim` routes answer 404.
    pub scim: Option<ScimSettings>,
    /// How long shutdown waits for requests and sockets to finish, in seconds.
    pub shutdown_grace_secs: u64,
}

/// TLS certificate files. Both or neither; with neither, a self-signed certificate is made
/// in `<data_dir>/tls/` on first start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `tacit_server=debug,info`.
    pub level: String,
}

/// Size and count limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Largest single ciphertext.
    pub max_envelope_bytes: u64,
    /// Most envelopes waiting in one device's mailbox.
    pub max_mailbox_depth: u64,
    /// Most devices of one account.
    pub max_devices_per_account: u32,
    /// Most one-time prekeys (of each kind) in one upload.
    pub max_prekeys_per_upload: u32,
    /// Most one-time prekeys (of each kind) a device may hold on the server.
    pub max_one_time_prekeys: u32,
    /// Largest public key or signature.
    pub max_key_bytes: u64,
    /// How long an undelivered envelope is kept, in seconds.
    pub message_ttl_secs: u64,
    /// How long a send's client message id is remembered, so that a retry is answered as
    /// a duplicate (at most `message_ttl_secs`), in seconds.
    pub idempotency_ttl_secs: u64,
    /// Most envelopes returned by one `GET /v1/messages`.
    pub fetch_batch: u32,
}

/// Rate limits on bundle claims, to stop prekey draining.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Device bundles one account may claim per minute.
    pub claims_per_minute_per_requester: u32,
    /// Device bundles of one account that may be claimed per minute, by everyone together.
    pub claims_per_minute_per_target: u32,
    /// Provisioning channels (device links) that may be opened per minute, by everyone
    /// together: opening one needs no credential.
    pub provisioning_channels_per_minute: u32,
    /// Failed authentications one source address may make per minute; beyond it, its
    /// requests with a credential are answered `429` until the bucket refills.
    pub auth_failures_per_minute_per_source: u32,
}

/// Connection limits and timeouts: every connection is bounded in number and in time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http {
    /// Most connections at once, open WebSockets included (their connection's slot is
    /// kept); beyond it a connection gets `503` with `Retry-After`. The last tenth is kept
    /// for devices' WebSockets. Lowered at start to what the open-file limit allows.
    pub max_connections: u32,
    /// Seconds a TLS handshake may take.
    pub handshake_timeout_secs: u64,
    /// Seconds a request's headers may take to arrive, counted from when the connection is
    /// ready for a request; an idle keep-alive connection is closed after it too.
    pub header_read_timeout_secs: u64,
    /// Seconds a whole request may take (its body read and its answer made), for every
    /// route but the blob upload and download and the WebSocket.
    pub request_timeout_secs: u64,
    /// Seconds a blob upload may wait for the next piece of its body (a stalled upload is
    /// answered `408` and keeps what arrived, to resume later).
    pub body_read_timeout_secs: u64,
    /// Seconds a write to a client may make no progress (a client that stops reading a
    /// download, an answer or its socket's pushes) before the connection is closed.
    pub write_timeout_secs: u64,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            body_read_timeout_secs: 30,
            write_timeout_secs: 30,
        }
    }
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A separate plain-HTTP listener for `/metrics` only (for example `127.0.0.1:9090`);
    /// when set, the public listener does not serve `/metrics`.
    pub listen: Option<SocketAddr>,
    /// A bearer token a scraper must present on the public listener; without `listen` or a
    /// token, `/metrics` on the public listener answers `404`.
    pub token: Option<Redacted>,
}

/// WebSocket heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Seconds between server pings.
    pub heartbeat_interval_secs: u64,
    /// A socket silent for this long is closed.
    pub heartbeat_timeout_secs: u64,
}

/// The blob store: a directory of opaque blobs (attachments the clients encrypted), with
/// limits and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    /// Where blobs are kept; `None` (or empty) means `<data_dir>/blobs`.
    pub dir: Option<PathBuf>,
    /// Largest file one blob may carry. The blob itself may be larger by the attachment
    /// format's overhead (17 bytes, and 16 bytes per 64 KiB), so that a file of exactly this
    /// size can be sent.
    pub max_file_bytes: u64,
    /// Most bytes of blobs, stored and reserved by uploads under way, one account may hold.
    pub quota_bytes_per_account: u64,
    /// Seconds after its creation when a blob (complete or not) is deleted.
    pub ttl_secs: u64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_file_bytes: 100 * 1024 * 1024,
            quota_bytes_per_account: 1024 * 1024 * 1024,
            ttl_secs: 30 * 24 * 3600,
        }
    }
}

/// Retention (docs/SERVER.md, "Retention"): envelopes expire after
/// `limits.message_ttl_secs` and blobs after `blobs.ttl_secs`; this section adds idle
/// devices and says how much one purge step deletes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days without contact (no authenticated request; a device never seen counts from its
    /// creation) after which a device is removed, audited; an account all of whose devices
    /// are that idle is deleted. 0 (the default): never.
    pub idle_device_days: u32,
    /// Rows one purge transaction deletes at most; the housekeeping task yields between
    /// batches, so sends and acknowledgements are not held up behind a long purge.
    pub purge_batch: u32,
    /// Days an audit entry is kept; older ones are pruned from the start of the chain (an
    /// `audit-prune` entry records the new start, and verification starts there). 0 (the
    /// default): kept forever. Otherwise at least [`AUDIT_FLOOR_DAYS`]: no configuration
    /// can empty the log.
    pub audit_days: u32,
    /// The organisation's maximum for disappearing messages, in seconds, published to
    /// clients (`GET /v1/policy`), which keep no message longer (a conversation's own
    /// shorter timer still applies). 0 (the default): no maximum. Otherwise at least
    /// [`DISAPPEARING_FLOOR_SECS`]: clients refuse a shorter one (a server's word cannot
    /// wipe their history).
    pub disappearing_max_secs: u64,
}

/// The fewest days `retention.audit_days` may keep (a year).
pub const AUDIT_FLOOR_DAYS: u32 = 365;

/// The shortest maximum for disappearing messages a server may publish (an hour); clients
/// ignore a shorter one (`tacit_api::DISAPPEARING_POLICY_FLOOR_SECS`).
pub const DISAPPEARING_FLOOR_SECS: u64 = tacit_api::DISAPPEARING_POLICY_FLOOR_SECS;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            idle_device_days: 0,
            purge_batch: 1000,
            audit_days: 0,
            disappearing_max_secs: 0,
        }
    }
}

/// The audit log (`docs/AUDIT.md`): where the key that signs its checkpoints is kept, and
/// how often the running server signs one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 seed file (mode 0600, made on first use); `None` (or empty) means
    /// `<data_dir>/audit.key`. Kept outside the database, so that whoever can rewrite the
    /// database cannot sign a checkpoint of a rewritten chain: keep it out of the
    /// database's backups too.
    pub key_file: Option<PathBuf>,
    /// Seconds between the checkpoints the running server signs and stores by itself
    /// (only when entries were appended since the last one); `0` turns them off. It bounds
    /// how long entries are protected by the chain alone.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            checkpoint_interval_secs: 3600,
        }
    }
}

/// `[oidc]`: registration and device sign-in with an OpenID Connect identity provider,
/// and its back-channel logout (docs/SSO.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer URL: discovery is read from `{issuer}/.well-known/openid-configuration`
    /// and every token's `iss` must equal it exactly. `https` unless the host is loopback.
    pub issuer: String,
    /// The public client the CLI uses; the accepted audience unless `audiences` says else.
    pub client_id: String,
    /// Accepted `aud` values (default: `[client_id]`). A token naming several audiences
    /// must carry `azp` equal to `client_id`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted: a subset of `RS256`, `ES256`, `EdDSA`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The ID token claim that becomes the username.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Domains whose `@domain` suffix is removed from the username claim.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// The claim listing the user's groups, for `role_map`.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Group name to Tacit role (`admin`, `auditor`), applied at registration and at each
    /// device added through the provider.
    #[serde(default)]
    pub role_map: std::collections::BTreeMap<String, String>,
    /// Leeway for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u64,
    /// Tokens issued longer ago than this are refused (`stale`); it also bounds how long
    /// the replay table keeps a token.
    #[serde(default = "default_max_token_age")]
    pub max_token_age_secs: u64,
    /// An unknown key id refetches the JWKS at most once per this many seconds.
    #[serde(default = "default_jwks_refresh_min")]
    pub jwks_refresh_min_secs: u64,
    /// Whether invite registration stays open besides the provider.
    #[serde(default = "default_true")]
    pub invites: bool,
    /// What a back-channel logout token does: `disable` the account, or `remove-devices`.
    #[serde(default)]
    pub backchannel_logout: BackchannelLogout,
    /// The scopes a client asks for (`openid` first).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// A PEM file of CA certificates trusted for the provider besides the system's (a
    /// private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `[scim]`: the identity provider's SCIM client provisions users (docs/SCIM.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimSettings {
    /// The file holding the bearer token the SCIM client sends (made by
    /// `tacit-server scim-token`); read at start, at least 32 characters.
    pub bearer_token_file: PathBuf,
    /// Refuse (403) an OpenID Connect registration of a username that SCIM did not
    /// create: only provisioned users may register through the provider.
    #[serde(default)]
    pub require_provisioning: bool,
}

/// Shortest SCIM bearer token accepted.
pub const MIN_SCIM_TOKEN_CHARS: usize = 32;

impl ScimSettings {
    /// The bearer token, read from `bearer_token_file` (surrounding white space removed).
    ///
    /// # Errors
    /// The file is unreadable, or the token shorter than [`MIN_SCIM_TOKEN_CHARS`].
    pub fn token(&self) -> Result<Redacted, ConfigError> {
        let path = &self.bearer_token_file;
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
            key: "scim.bearer_token_file",
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let token = text.trim();
        if token.chars().count() < MIN_SCIM_TOKEN_CHARS {
            return Err(ConfigError::Invalid {
                key: "scim.bearer_token_file",
                message: format!(
                    "{} holds a token shorter than {MIN_SCIM_TOKEN_CHARS} characters \
                     (make one with `tacit-server scim-token --out FILE`)",
                    path.display()
                ),
            });
        }
        Ok(Redacted(token.to_owned()))
    }
}

/// What a back-channel logout does to the named user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackchannelLogout {
    /// Disable the account: every device's credential is revoked, sockets close.
    #[default]
    Disable,
    /// Remove the devices signed in with the token's `sid`. When that is every device of
    /// the account, or the token names only `sub`, the account is disabled instead (an
    /// account keeps at least one device).
    RemoveDevices,
}

/// The signature algorithms `[oidc] algorithms` may list.
pub const OIDC_ALGORITHMS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

fn default_algorithms() -> Vec<String> {
    OIDC_ALGORITHMS.iter().map(|&a| a.to_owned()).collect()
}
fn default_username_claim() -> String {
    "preferred_username".to_owned()
}
fn default_clock_skew() -> u64 {
    60
}
fn default_max_token_age() -> u64 {
    600
}
fn default_jwks_refresh_min() -> u64 {
    30
}
fn default_true() -> bool {
    true
}
fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"]
        .iter()
        .map(|&s| s.to_owned())
        .collect()
}

impl OidcSettings {
    /// The accepted audiences (`audiences`, or `[client_id]` when empty).
    #[must_use]
    pub fn accepted_audiences(&self) -> Vec<String> {
        if self.audiences.is_empty() {
            vec![self.client_id.clone()]
        } else {
            self.audiences.clone()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        let (scheme, rest) = self
            .issuer
            .split_once("://")
            .ok_or_else(|| invalid("oidc.issuer", "must be an https:// URL"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host_only = if host.starts_with('[') {
            host.split(']')
                .next()
                .unwrap_or_default()
                .trim_start_matches('[')
        } else {
            host.split(':').next().unwrap_or_default()
        };
        if host_only.is_empty() {
            return Err(invalid("oidc.issuer", "has no host"));
        }
        let loopback = host_only == "localhost"
            || host_only
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match scheme {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(invalid(
                    "oidc.issuer",
                    "must be an https:// URL (http:// only on a loopback host)",
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(invalid("oidc.client_id", "must not be empty"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                "oidc.algorithms",
                "must name at least one algorithm",
            ));
        }
        for alg in &self.algorithms {
            if !OIDC_ALGORITHMS.contains(&alg.as_str()) {
                return Err(invalid(
                    "oidc.algorithms",
                    format!("`{alg}` is not accepted: only RS256, ES256 and EdDSA"),
                ));
            }
        }
        if self.username_claim.is_empty() {
            return Err(invalid("oidc.username_claim", "must not be empty"));
        }
        for role in self.role_map.values() {
            if tacit_api::Role::from_name(role).is_none() {
                return Err(invalid(
                    "oidc.role_map",
                    format!("`{role}` is not a role: `admin` or `auditor`"),
                ));
            }
        }
        if self.clock_skew_secs > 600 {
            return Err(invalid("oidc.clock_skew_secs", "must be at most 600"));
        }
        if !(1..=86_400).contains(&self.max_token_age_secs) {
            return Err(invalid(
                "oidc.max_token_age_secs",
                "must be from 1 to 86400",
            ));
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                invalid(
                    "oidc.ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "oidc.ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
        }
        if self.scopes.first().map(String::as_str) != Some("openid") {
            return Err(invalid("oidc.scopes", "must start with `openid`"));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            data_dir: PathBuf::from("tacit-data"),
            database_url: Redacted::default(),
            open_registration: false,
            plain_http: false,
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            websocket: WebSocketConfig::default(),
            blobs: BlobConfig::default(),
            retention: RetentionConfig::default(),
            http: Http::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            oidc: None,
            scim: None,
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_envelope_bytes: 256 * 1024,
            max_mailbox_depth: 10_000,
            max_devices_per_account: 10,
            max_prekeys_per_upload: 200,
            max_one_time_prekeys: 1000,
            max_key_bytes: 4096,
            message_ttl_secs: 30 * 24 * 3600,
            idempotency_ttl_secs: 7 * 24 * 3600,
            fetch_batch: 100,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            claims_per_minute_per_requester: 120,
            claims_per_minute_per_target: 60,
            provisioning_channels_per_minute: 60,
            auth_failures_per_minute_per_source: 600,
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_secs: 30,
            heartbeat_timeout_secs: 90,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|var| std::env::var(var).ok())?;
        Ok(config)
    }

    /// Defaults overridden by a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Defaults overridden by TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Override keys from `TACIT_*` variables, read through `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn set<T: FromStr>(
            env: &impl Fn(&str) -> Option<String>,
            var: &'static str,
            key: &'static str,
            field: &mut T,
        ) -> Result<(), ConfigError>
        where
            T::Err: fmt::Display,
        {
            if let Some(value) = env(var) {
                *field = value.parse().map_err(|e: T::Err| ConfigError::Env {
                    var,
                    key,
                    message: e.to_string(),
                })?;
            }
            Ok(())
        }
        fn set_path(
            env: &impl Fn(&str) -> Option<String>,
            var: &'static str,
            field: &mut Option<PathBuf>,
        ) {
            if let Some(value) = env(var) {
                *field = (!value.is_empty()).then(|| PathBuf::from(value));
            }
        }
        let e = &env;
        set(e, "TACIT_LISTEN", "listen", &mut self.listen)?;
        set(e, "TACIT_DATA_DIR", "data_dir", &mut self.data_dir)?;
        set(
            e,
            "TACIT_DATABASE_URL",
            "database_url",
            &mut self.database_url,
        )?;
        set(
            e,
            "TACIT_OPEN_REGISTRATION",
            "open_registration",
            &mut self.open_registration,
        )?;
        set(e, "TACIT_PLAIN_HTTP", "plain_http", &mut self.plain_http)?;
        set_path(e, "TACIT_TLS_CERT_FILE", &mut self.tls.cert_file);
        set_path(e, "TACIT_TLS_KEY_FILE", &mut self.tls.key_file);
        set(e, "TACIT_LOG_FORMAT", "log.format", &mut self.log.format)?;
        set(e, "TACIT_LOG_LEVEL", "log.level", &mut self.log.level)?;
        let l = &mut self.limits;
        set(
            e,
            "TACIT_LIMITS_MAX_BODY_BYTES",
            "limits.max_body_bytes",
            &mut l.max_body_bytes,
        )?;
        set(
            e,
            "TACIT_LIMITS_MAX_ENVELOPE_BYTES",
            "limits.max_envelope_bytes",
            &mut l.max_envelope_bytes,
        )?;
        set(
            e,
            "TACIT_LIMITS_MAX_MAILBOX_DEPTH",
            "limits.max_mailbox_depth",
            &mut l.max_mailbox_depth,
        )?;
        set(
            e,
            "TACIT_LIMITS_MAX_DEVICES_PER_ACCOUNT",
            "limits.max_devices_per_account",
            &mut l.max_devices_per_account,
        )?;
        set(
            e,
            "TACIT_LIMITS_MAX_PREKEYS_PER_UPLOAD",
            "limits.max_prekeys_per_upload",
            &mut l.max_prekeys_per_upload,
        )?;
        set(
            e,
            "TACIT_LIMITS_MAX_ONE_TIME_PREKEYS",
            "limits.max_one_time_prekeys",
            &mut l.max_one_time_prekeys,
        )?;
        set(
            e,
            "TACIT_LIMITS_MAX_KEY_BYTES",
            "limits.max_key_bytes",
            &mut l.max_key_bytes,
        )?;
        set(
            e,
            "TACIT_LIMITS_MESSAGE_TTL_SECS",
            "limits.message_ttl_secs",
            &mut l.message_ttl_secs,
        )?;
        set(
            e,
            "TACIT_LIMITS_IDEMPOTENCY_TTL_SECS",
            "limits.idempotency_ttl_secs",
            &mut l.idempotency_ttl_secs,
        )?;
        set(
            e,
            "TACIT_LIMITS_FETCH_BATCH",
            "limits.fetch_batch",
            &mut l.fetch_batch,
        )?;
        let r = &mut self.rate_limits;
        set(
            e,
            "TACIT_RATE_LIMITS_CLAIMS_PER_MINUTE_PER_REQUESTER",
            "rate_limits.claims_per_minute_per_requester",
            &mut r.claims_per_minute_per_requester,
        )?;
        set(
            e,
            "TACIT_RATE_LIMITS_CLAIMS_PER_MINUTE_PER_TARGET",
            "rate_limits.claims_per_minute_per_target",
            &mut r.claims_per_minute_per_target,
        )?;
        set(
            e,
            "TACIT_RATE_LIMITS_PROVISIONING_CHANNELS_PER_MINUTE",
            "rate_limits.provisioning_channels_per_minute",
            &mut r.provisioning_channels_per_minute,
        )?;
        let w = &mut self.websocket;
        set(
            e,
            "TACIT_WEBSOCKET_HEARTBEAT_INTERVAL_SECS",
            "websocket.heartbeat_interval_secs",
            &mut w.heartbeat_interval_secs,
        )?;
        set(
            e,
            "TACIT_WEBSOCKET_HEARTBEAT_TIMEOUT_SECS",
            "websocket.heartbeat_timeout_secs",
            &mut w.heartbeat_timeout_secs,
        )?;
        let b = &mut self.blobs;
        set_path(e, "TACIT_BLOBS_DIR", &mut b.dir);
        set_path(e, "TACIT_AUDIT_KEY_FILE", &mut self.audit.key_file);
        set(
            e,
            "TACIT_AUDIT_CHECKPOINT_INTERVAL_SECS",
            "audit.checkpoint_interval_secs",
            &mut self.audit.checkpoint_interval_secs,
        )?;
        set(
            e,
            "TACIT_BLOBS_MAX_FILE_BYTES",
            "blobs.max_file_bytes",
            &mut b.max_file_bytes,
        )?;
        set(
            e,
            "TACIT_BLOBS_QUOTA_BYTES_PER_ACCOUNT",
            "blobs.quota_bytes_per_account",
            &mut b.quota_bytes_per_account,
        )?;
        set(e, "TACIT_BLOBS_TTL_SECS", "blobs.ttl_secs", &mut b.ttl_secs)?;
        set(
            e,
            "TACIT_RETENTION_IDLE_DEVICE_DAYS",
            "retention.idle_device_days",
            &mut self.retention.idle_device_days,
        )?;
        set(
            e,
            "TACIT_RETENTION_PURGE_BATCH",
            "retention.purge_batch",
            &mut self.retention.purge_batch,
        )?;
        set(
            e,
            "TACIT_RETENTION_AUDIT_DAYS",
            "retention.audit_days",
            &mut self.retention.audit_days,
        )?;
        set(
            e,
            "TACIT_RETENTION_DISAPPEARING_MAX_SECS",
            "retention.disappearing_max_secs",
            &mut self.retention.disappearing_max_secs,
        )?;
        set(
            e,
            "TACIT_RATE_LIMITS_AUTH_FAILURES_PER_MINUTE_PER_SOURCE",
            "rate_limits.auth_failures_per_minute_per_source",
            &mut self.rate_limits.auth_failures_per_minute_per_source,
        )?;
        let h = &mut self.http;
        set(
            e,
            "TACIT_HTTP_MAX_CONNECTIONS",
            "http.max_connections",
            &mut h.max_connections,
        )?;
        set(
            e,
            "TACIT_HTTP_HANDSHAKE_TIMEOUT_SECS",
            "http.handshake_timeout_secs",
            &mut h.handshake_timeout_secs,
        )?;
        set(
            e,
            "TACIT_HTTP_HEADER_READ_TIMEOUT_SECS",
            "http.header_read_timeout_secs",
            &mut h.header_read_timeout_secs,
        )?;
        set(
            e,
            "TACIT_HTTP_REQUEST_TIMEOUT_SECS",
            "http.request_timeout_secs",
            &mut h.request_timeout_secs,
        )?;
        set(
            e,
            "TACIT_HTTP_BODY_READ_TIMEOUT_SECS",
            "http.body_read_timeout_secs",
            &mut h.body_read_timeout_secs,
        )?;
        set(
            e,
            "TACIT_HTTP_WRITE_TIMEOUT_SECS",
            "http.write_timeout_secs",
            &mut h.write_timeout_secs,
        )?;
        if let Some(v) = e("TACIT_METRICS_LISTEN") {
            self.metrics.listen =
                Some(
                    v.parse()
                        .map_err(|err: std::net::AddrParseError| ConfigError::Env {
                            var: "TACIT_METRICS_LISTEN",
                            key: "metrics.listen",
                            message: err.to_string(),
                        })?,
                );
        }
        if let Some(v) = e("TACIT_METRICS_TOKEN") {
            self.metrics.token = Some(Redacted(v));
        }
        set(
            e,
            "TACIT_SHUTDOWN_GRACE_SECS",
            "shutdown_grace_secs",
            &mut self.shutdown_grace_secs,
        )?;
        Ok(())
    }

    /// Check ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        if self.plain_http && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "plain_http",
                format!(
                    "plain HTTP is only allowed on a loopback address, but `listen` is {}",
                    self.listen
                ),
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid(
                "tls.cert_file",
                "set both `tls.cert_file` and `tls.key_file`, or neither",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let url = self.database_url.expose();
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with `sqlite:`, `postgres://` or `postgresql://`",
            ));
        }
        if let Some(scim) = &self.scim {
            scim.token()?;
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "not a valid tracing filter"));
        }
        let l = &self.limits;
        let positive: [(&'static str, u64); 10] = [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_envelope_bytes", l.max_envelope_bytes),
            ("limits.max_mailbox_depth", l.max_mailbox_depth),
            (
                "limits.max_devices_per_account",
                u64::from(l.max_devices_per_account),
            ),
            (
                "limits.max_prekeys_per_upload",
                u64::from(l.max_prekeys_per_upload),
            ),
            (
                "limits.max_one_time_prekeys",
                u64::from(l.max_one_time_prekeys),
            ),
            ("limits.max_key_bytes", l.max_key_bytes),
            ("limits.message_ttl_secs", l.message_ttl_secs),
            ("limits.idempotency_ttl_secs", l.idempotency_ttl_secs),
            ("limits.fetch_batch", u64::from(l.fetch_batch)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if l.max_envelope_bytes > l.max_body_bytes {
            return Err(invalid(
                "limits.max_envelope_bytes",
                "must not exceed `limits.max_body_bytes`",
            ));
        }
        if usize::try_from(l.max_body_bytes).is_err() || l.max_body_bytes > 1 << 30 {
            return Err(invalid("limits.max_body_bytes", "must be at most 1 GiB"));
        }
        if l.message_ttl_secs > 10 * 365 * 24 * 3600 {
            return Err(invalid(
                "limits.message_ttl_secs",
                "must be at most ten years",
            ));
        }
        if l.fetch_batch > 1000 {
            return Err(invalid("limits.fetch_batch", "must be at most 1000"));
        }
        let r = &self.rate_limits;
        if r.claims_per_minute_per_requester == 0 {
            return Err(invalid(
                "rate_limits.claims_per_minute_per_requester",
                "must be greater than 0",
            ));
        }
        if r.claims_per_minute_per_target == 0 {
            return Err(invalid(
                "rate_limits.claims_per_minute_per_target",
                "must be greater than 0",
            ));
        }
        if r.provisioning_channels_per_minute == 0 {
            return Err(invalid(
                "rate_limits.provisioning_channels_per_minute",
                "must be greater than 0",
            ));
        }
        let w = &self.websocket;
        if w.heartbeat_interval_secs == 0 {
            return Err(invalid(
                "websocket.heartbeat_interval_secs",
                "must be greater than 0",
            ));
        }
        if w.heartbeat_timeout_secs <= w.heartbeat_interval_secs {
            return Err(invalid(
                "websocket.heartbeat_timeout_secs",
                "must be greater than `websocket.heartbeat_interval_secs`",
            ));
        }
        let h = &self.http;
        for (key, value) in [
            ("http.max_connections", u64::from(h.max_connections)),
            ("http.handshake_timeout_secs", h.handshake_timeout_secs),
            ("http.header_read_timeout_secs", h.header_read_timeout_secs),
            ("http.request_timeout_secs", h.request_timeout_secs),
            ("http.body_read_timeout_secs", h.body_read_timeout_secs),
            ("http.write_timeout_secs", h.write_timeout_secs),
            (
                "rate_limits.auth_failures_per_minute_per_source",
                u64::from(self.rate_limits.auth_failures_per_minute_per_source),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
            if key.ends_with("_secs") && value > 24 * 3600 {
                return Err(invalid(key, "must be at most one day (86400)"));
            }
        }
        if self
            .metrics
            .token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err(invalid("metrics.token", "must be at least 16 characters"));
        }
        let b = &self.blobs;
        for (key, value) in [
            ("blobs.max_file_bytes", b.max_file_bytes),
            ("blobs.quota_bytes_per_account", b.quota_bytes_per_account),
            ("blobs.ttl_secs", b.ttl_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if b.max_file_bytes > 1 << 50 {
            return Err(invalid("blobs.max_file_bytes", "must be at most 1 PiB"));
        }
        if b.max_file_bytes > b.quota_bytes_per_account {
            return Err(invalid(
                "blobs.max_file_bytes",
                "must not exceed `blobs.quota_bytes_per_account`",
            ));
        }
        if b.quota_bytes_per_account > i64::MAX as u64 / 2 {
            return Err(invalid(
                "blobs.quota_bytes_per_account",
                "must be at most 2^62 bytes",
            ));
        }
        if b.ttl_secs > 10 * 365 * 24 * 3600 {
            return Err(invalid("blobs.ttl_secs", "must be at most ten years"));
        }
        if self.retention.idle_device_days > 3650 {
            return Err(invalid(
                "retention.idle_device_days",
                "must be at most 3650 (ten years); 0 keeps idle devices",
            ));
        }
        if !(1..=100_000).contains(&self.retention.purge_batch) {
            return Err(invalid(
                "retention.purge_batch",
                "must be between 1 and 100000",
            ));
        }
        let audit_days = self.retention.audit_days;
        if audit_days != 0 && !(AUDIT_FLOOR_DAYS..=36_500).contains(&audit_days) {
            return Err(invalid(
                "retention.audit_days",
                "must be 0 (keep the audit log forever) or between 365 and 36500: the audit \
                 log is never kept for less than a year",
            ));
        }
        let max = self.retention.disappearing_max_secs;
        if max != 0 && !(DISAPPEARING_FLOOR_SECS..=10 * 365 * 24 * 3600).contains(&max) {
            return Err(invalid(
                "retention.disappearing_max_secs",
                "must be 0 (no maximum) or between 3600 (an hour; clients ignore a shorter \
                 one) and ten years",
            ));
        }
        if self.audit.checkpoint_interval_secs > 7 * 24 * 3600 {
            return Err(invalid(
                "audit.checkpoint_interval_secs",
                "must be at most one week (604800); 0 turns periodic checkpoints off",
            ));
        }
        Ok(())
    }

    /// The blob directory: `blobs.dir`, or `<data_dir>/blobs`.
    #[must_use]
    pub fn blob_dir(&self) -> PathBuf {
        match &self.blobs.dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
            _ => self.data_dir.join("blobs"),
        }
    }

    /// The audit key file: `audit.key_file`, or `<data_dir>/audit.key`.
    #[must_use]
    pub fn audit_key_file(&self) -> PathBuf {
        match &self.audit.key_file {
            Some(file) if !file.as_os_str().is_empty() => file.clone(),
            _ => self.data_dir.join("audit.key"),
        }
    }

    /// The database URL to use: the configured one, or the SQLite file in the data directory.
    #[must_use]
    pub fn effective_database_url(&self) -> String {
        if self.database_url.expose().is_empty() {
            format!("sqlite://{}", self.data_dir.join("tacit.db").display())
        } else {
            self.database_url.expose().to_owned()
        }
    }

    /// Which backend the configuration selects, for logs (never the URL itself).
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        let url = self.effective_database_url();
        if url.starts_with("postgres") {
            "postgresql"
        } else {
            "sqlite"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_are_valid_and_example_parses() {
        Config::default().validate().unwrap();
        let example = include_str!("../tacit-server.example.toml");
        let parsed = Config::from_toml(example).unwrap();
        parsed.validate().unwrap();
    }

    /// The one risk of mapping the variables by hand: a key without its variable, or a
    /// misspelt one. Every key of the example file (commented-out ones included) is read
    /// from exactly the variable its path names, and no other variable is read.
    #[test]
    fn every_key_has_its_variable() {
        fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in table {
                let path = format!("{prefix}{}", k.to_uppercase());
                match v {
                    toml::Value::Table(t) => keys(&format!("{path}_"), t, out),
                    _ => out.push(path),
                }
            }
        }
        let example: String = include_str!("../tacit-server.example.toml")
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| {
                        r.starts_with(|c: char| c.is_ascii_lowercase()) && r.contains(" = ")
                    })
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = toml::from_str(&example).unwrap();
        let mut expected = Vec::new();
        keys("TACIT_", &table, &mut expected);
        expected.sort();
        let read = std::cell::RefCell::new(Vec::new());
        Config::default()
            .apply_env(|var| {
                read.borrow_mut().push(var.to_owned());
                None
            })
            .unwrap();
        let mut read = read.into_inner();
        read.sort();
        assert_eq!(read, expected);
    }

    #[test]
    fn file_then_env() {
        let mut c = Config::from_toml(
            "listen = \"127.0.0.1:9000\"\nplain_http = true\n[limits]\nmax_mailbox_depth = 5\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_mailbox_depth, 5);
        assert_eq!(c.limits.max_envelope_bytes, 256 * 1024);
        let env: HashMap<&str, &str> = [
            ("TACIT_LIMITS_MAX_MAILBOX_DEPTH", "7"),
            ("TACIT_DATABASE_URL", "postgres://u:secret@h/db"),
        ]
        .into();
        c.apply_env(|v| env.get(v).map(|s| (*s).to_owned()))
            .unwrap();
        assert_eq!(c.limits.max_mailbox_depth, 7);
        assert!(!format!("{c:?}").contains("secret"));
        c.validate().unwrap();
        assert_eq!(c.backend_name(), "postgresql");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml("[limits]\nmax_body_bytes = \"big\"\n").unwrap_err();
        assert!(err.contains("max_body_bytes"), "{err}");
        let err = Config::from_toml("listen_port = 3\n").unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
        let mut c = Config::default();
        let err = c
            .apply_env(|v| (v == "TACIT_LIMITS_FETCH_BATCH").then(|| "x".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("limits.fetch_batch"), "{err}");
        let c = Config {
            plain_http: true,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("plain_http"));
        let mut c = Config::default();
        c.limits.max_envelope_bytes = c.limits.max_body_bytes + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("limits.max_envelope_bytes")
        );
        let mut c = Config::default();
        c.blobs.max_file_bytes = c.blobs.quota_bytes_per_account + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("blobs.max_file_bytes"), "{err}");
        let mut c = Config::default();
        let err = c
            .apply_env(|v| (v == "TACIT_BLOBS_TTL_SECS").then(|| "soon".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("blobs.ttl_secs"), "{err}");
    }

    #[test]
    fn blob_settings() {
        let mut c = Config::from_toml("data_dir = \"/srv/t\"\n[blobs]\nttl_secs = 60\n").unwrap();
        assert_eq!(c.blobs.ttl_secs, 60);
        assert_eq!(c.blobs.max_file_bytes, 100 * 1024 * 1024);
        assert_eq!(c.blob_dir(), PathBuf::from("/srv/t/blobs"));
        let env: HashMap<&str, &str> = [
            ("TACIT_BLOBS_DIR", "/var/blobs"),
            ("TACIT_BLOBS_QUOTA_BYTES_PER_ACCOUNT", "500000000"),
        ]
        .into();
        c.apply_env(|v| env.get(v).map(|s| (*s).to_owned()))
            .unwrap();
        assert_eq!(c.blob_dir(), PathBuf::from("/var/blobs"));
        assert_eq!(c.blobs.quota_bytes_per_account, 500_000_000);
        c.validate().unwrap();
        c.blobs.ttl_secs = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("blobs.ttl_secs")
        );
    }

    #[test]
    fn retention_settings() {
        let mut c =
            Config::from_toml("[retention]\nidle_device_days = 90\npurge_batch = 50\n").unwrap();
        assert_eq!(
            (c.retention.idle_device_days, c.retention.purge_batch),
            (90, 50)
        );
        c.validate().unwrap();
        let env: HashMap<&str, &str> = [("TACIT_RETENTION_IDLE_DEVICE_DAYS", "0")].into();
        c.apply_env(|v| env.get(v).map(|s| (*s).to_owned()))
            .unwrap();
        assert_eq!(c.retention.idle_device_days, 0);
        for (days, batch, key) in [
            (3651, 1000, "retention.idle_device_days"),
            (30, 0, "retention.purge_batch"),
            (30, 100_001, "retention.purge_batch"),
        ] {
            c.retention.idle_device_days = days;
            c.retention.purge_batch = batch;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        c.retention.idle_device_days = 30;
        c.retention.purge_batch = 10;
        // The audit floor: a year, or forever; never less, whatever the configuration says.
        for (days, ok) in [
            (0, true),
            (1, false),
            (364, false),
            (365, true),
            (36_501, false),
        ] {
            c.retention.audit_days = days;
            let result = c.validate();
            assert_eq!(result.is_ok(), ok, "audit_days = {days}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("retention.audit_days"), "{e}");
            }
        }
        let env: HashMap<&str, &str> = [
            ("TACIT_RETENTION_AUDIT_DAYS", "400"),
            ("TACIT_RETENTION_DISAPPEARING_MAX_SECS", "86400"),
        ]
        .into();
        c.apply_env(|v| env.get(v).map(|s| (*s).to_owned()))
            .unwrap();
        assert_eq!(
            (c.retention.audit_days, c.retention.disappearing_max_secs),
            (400, 86_400)
        );
        c.validate().unwrap();
        for (max, ok) in [(0, true), (60, false), (3599, false), (3600, true)] {
            c.retention.disappearing_max_secs = max;
            assert_eq!(c.validate().is_ok(), ok, "disappearing_max_secs = {max}");
        }
        assert!(Config::from_toml("[retention]\nidle_devices = 3\n").is_err());
    }

    #[test]
    fn checkpoint_interval() {
        let mut c = Config::default();
        assert_eq!(c.audit.checkpoint_interval_secs, 3600);
        let c2 = Config::from_toml("[audit]\ncheckpoint_interval_secs = 0\n").unwrap();
        assert_eq!(c2.audit.checkpoint_interval_secs, 0);
        c2.validate().unwrap();
        c.apply_env(|v| (v == "TACIT_AUDIT_CHECKPOINT_INTERVAL_SECS").then(|| "60".to_owned()))
            .unwrap();
        assert_eq!(c.audit.checkpoint_interval_secs, 60);
        let err = c
            .apply_env(|v| (v == "TACIT_AUDIT_CHECKPOINT_INTERVAL_SECS").then(|| "-1".to_owned()))
            .unwrap_err();
        assert!(
            err.to_string().contains("audit.checkpoint_interval_secs"),
            "{err}"
        );
        c.audit.checkpoint_interval_secs = 7 * 24 * 3600 + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("audit.checkpoint_interval_secs"), "{err}");
    }
}
