//! The rules of the relay. Services decide; they know nothing of HTTP and write no SQL.

use crate::store::AccountId;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tacit_api::{DeviceCredential, Timestamp};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::push::Hub;
use crate::store::{Mailbox, SecretHash, Store, StoreError};

mod accounts;
mod admin;
mod audit;
mod blobs;
mod commit;
mod credentials;
mod health;
mod keys;
mod messages;
mod oidc;
mod provisioning;
mod ratelimit;
mod retention;
mod rules;
mod scim;
mod security;

pub use crate::store::BlobRead;
pub(crate) use accounts::normalise_username;
pub use admin::Admin;
pub use audit::{AuditError, Exported, Origin, Since, Verified};
pub use blobs::{UploadStatus, max_blob_bytes};
pub(crate) use messages::MAX_MULTICAST_DEVICES;
pub use oidc::LogoutError;
pub(crate) use provisioning::MAX_ANSWER_BYTES;
pub use ratelimit::RateLimiter;
pub use retention::IdlePurge;
pub use rules::Rules;
pub use scim::{
    Changes as ScimChanges, ScimError, parse_patch as parse_scim_patch,
    parse_put as parse_scim_put, resource_types as scim_resource_types, schemas as scim_schemas,
    service_provider_config as scim_service_provider_config,
};
pub use security::{Limit, MAX_SOURCES, OTHER_SOURCES, Tally, WINDOW};

/// Everything the handlers need, shared by all requests.
#[derive(Debug)]
pub struct Services {
    /// Persistence: reached only through the service's methods.
    store: Arc<dyn Store>,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Connected devices.
    pub hub: Arc<Hub>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Claims per requester.
    claims_by_requester: RateLimiter<AccountId>,
    /// Claims per target.
    claims_by_target: RateLimiter<AccountId>,
    /// Failed authentications per source address.
    auth_failures: RateLimiter<std::net::IpAddr>,
    /// Provisioning channels opened, by everyone together (one key).
    channels_opened: RateLimiter,
    /// Refusals counted until they are written to the audit log as security events.
    security: security::SecurityEvents,
    /// The group-commit writer for sends and acknowledgements.
    committer: commit::Committer,
    /// The store's totals for `/metrics`, with when they were read.
    stats: tokio::sync::Mutex<Option<(std::time::Instant, crate::store::StoreStats)>>,
    /// Whether writes succeed (for `/readyz`).
    health: Arc<health::WriteHealth>,
    /// Recently checked credential hashes.
    credentials: credentials::CredentialCache,
    /// The blob directory and the uploads under way.
    blobs: crate::store::BlobFiles,
    /// When devices last authenticated, written to the store about once a minute.
    last_seen: admin::LastSeen,
    /// The last revocation this node applied (see [`Services::apply_revocations`]).
    revocations_seen: tokio::sync::Mutex<Option<i64>>,
    /// Username to account id. Usernames never change; a deleted account's entry is
    /// dropped on this node, and a device-list lookup that finds no devices re-resolves the
    /// name (another node may have deleted the account and the name been registered again).
    account_ids: std::sync::Mutex<std::collections::HashMap<String, AccountId>>,
    /// The identity provider, when `[oidc]` is configured.
    oidc: Option<Arc<crate::oidc::Oidc>>,
    /// The SCIM client's bearer token, when `[scim]` is configured (and its file read).
    scim_token: Option<crate::config::Redacted>,
}

/// The key a source address is limited by: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's network: rotating addresses inside it gains nothing).
#[must_use]
pub fn source_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 @ std::net::IpAddr::V4(_) => v4,
    }
}

/// How long a scrape waits for each of the store's answers (its totals, its ping) before
/// it leaves the totals out and reports not ready.
pub const SCRAPE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the store's totals for `/metrics` are reused.
pub const STATS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// A device whose credential was checked.
#[derive(Debug, Clone)]
pub struct AuthedDevice {
    /// Its mailbox address (account and device).
    pub mailbox: Mailbox,
    /// Its account's username.
    pub username: String,
}

impl Services {
    /// Build the services over a migrated store. Starts the group-commit writer task, so
    /// it must be called inside a Tokio runtime.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, config: Arc<Config>) -> Self {
        let r = &config.rate_limits;
        let hub = Arc::new(Hub::default());
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(health::WriteHealth::new(metrics.clone()));
        Self {
            committer: commit::Committer::start(
                store.clone(),
                hub.clone(),
                metrics.clone(),
                health.clone(),
            ),
            health,
            stats: tokio::sync::Mutex::new(None),
            account_ids: std::sync::Mutex::new(std::collections::HashMap::new()),
            credentials: credentials::CredentialCache::default(),
            last_seen: admin::LastSeen::default(),
            revocations_seen: tokio::sync::Mutex::new(None),
            blobs: crate::store::BlobFiles::new(config.blob_dir()),
            claims_by_requester: RateLimiter::per_minute(r.claims_per_minute_per_requester),
            claims_by_target: RateLimiter::per_minute(r.claims_per_minute_per_target),
            channels_opened: RateLimiter::per_minute(r.provisioning_channels_per_minute),
            auth_failures: RateLimiter::per_minute(r.auth_failures_per_minute_per_source),
            security: security::SecurityEvents::default(),
            oidc: config.oidc.clone().map(crate::oidc::Oidc::new),
            scim_token: config.scim.as_ref().and_then(|s| s.token().ok()),
            store,
            config,
            hub,
            metrics,
        }
    }

    /// Check a device credential: the stored hash is compared in constant time.
    pub async fn authenticate(
        &self,
        credential: &DeviceCredential,
    ) -> Result<AuthedDevice, ApiError> {
        let mailbox = Mailbox {
            account: AccountId(credential.account),
            device: credential.device,
        };
        let auth = match self.credentials.get(mailbox) {
            Some(auth) => auth,
            None => {
                let Some(auth) = self.store.device_auth(mailbox).await? else {
                    return Err(ApiError::Unauthorized);
                };
                self.credentials.insert(mailbox, auth.clone());
                auth
            }
        };
        // Checked after the lookup: a removal or a disabling that raced with it still wins.
        let revoked = self.credentials.revoked(mailbox);
        if revoked == Some(credentials::Revoked::Removed) {
            return Err(ApiError::Unauthorized);
        }
        let presented = hash_secret(&credential.secret);
        if presented.ct_eq(&auth.credential_hash) {
            // Only the holder of the credential learns that the account is disabled.
            if auth.disabled || revoked == Some(credentials::Revoked::Disabled) {
                return Err(ApiError::AccountDisabled);
            }
            self.last_seen.saw(mailbox);
            Ok(AuthedDevice {
                mailbox,
                username: auth.username,
            })
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// The store's totals, read at most every [`STATS_MAX_AGE`] (they cost table scans);
    /// `None` when the store cannot answer within [`SCRAPE_DEADLINE`].
    pub async fn cached_stats(&self) -> Option<crate::store::StoreStats> {
        let mut cached = tokio::time::timeout(SCRAPE_DEADLINE, self.stats.lock())
            .await
            .ok()?;
        if let Some((at, stats)) = *cached
            && at.elapsed() < STATS_MAX_AGE
        {
            return Some(stats);
        }
        let stats = tokio::time::timeout(SCRAPE_DEADLINE, self.store.stats())
            .await
            .ok()?
            .ok()?;
        *cached = Some((std::time::Instant::now(), stats));
        Some(stats)
    }

    /// What `/metrics` reports beside the counters: readiness, the mailbox limit, the
    /// free space of the data and blob directories, the process's figures.
    pub async fn operations(&self) -> crate::metrics::Operations {
        use crate::metrics::FsSpace;
        let data = self.config.data_dir.clone();
        let blobs = self.config.blob_dir();
        // statvfs and /proc reads are blocking system calls (fast, but off the runtime).
        let (filesystems, process) = tokio::task::spawn_blocking(move || {
            let filesystems = [("data", data), ("blobs", blobs)]
                .into_iter()
                .filter_map(|(role, dir)| FsSpace::of(&dir).map(|space| (role, space)))
                .collect();
            (filesystems, crate::metrics::ProcessStats::current())
        })
        .await
        .unwrap_or_default();
        // A database that does not answer must show as not ready, not as a scrape that
        // times out (Prometheus gives up after 10 s by default, and the alert would read
        // "down").
        let ready = tokio::time::timeout(SCRAPE_DEADLINE, self.ready())
            .await
            .unwrap_or(false);
        crate::metrics::Operations {
            ready,
            mailbox_depth_limit: self.config.limits.max_mailbox_depth,
            filesystems,
            process,
        }
    }

    /// Take a failed-authentication token for `source` before checking its credential;
    /// `false` (counted in `/metrics`, and in the next `auth-failure-burst` audit entry of
    /// this source) when it has used them all up.
    pub fn auth_attempt(&self, source: std::net::IpAddr) -> bool {
        let allowed = self.auth_failures.try_take(source, 1);
        if !allowed {
            self.metrics.auth_rate_limited.inc();
            self.auth_refused(source);
        }
        allowed
    }

    /// After the check: a good credential gets its token back, a failure is counted.
    pub fn auth_outcome(&self, source: std::net::IpAddr, authenticated: bool) {
        if authenticated {
            self.auth_failures.refund(source, 1);
        } else {
            self.metrics.auth_failures.inc();
        }
    }

    /// Whether the device was removed (or its account deleted or disabled) lately.
    #[must_use]
    pub fn is_revoked(&self, mailbox: Mailbox) -> bool {
        self.credentials.revoked(mailbox).is_some()
    }

    /// The account id of a username, or `NotFound`.
    pub(crate) async fn account_id(&self, username: &str) -> Result<AccountId, ApiError> {
        const MAX_CACHED: usize = 100_000;
        let cached = self.lock_account_ids().get(username).copied();
        if let Some(id) = cached {
            return Ok(id);
        }
        let id = self
            .store
            .account_id(username)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        let mut cache = self.lock_account_ids();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(username.to_owned(), id);
        Ok(id)
    }

    /// Drop a cached username (its account was deleted).
    pub(crate) fn forget_account_id(&self, username: &str) {
        self.lock_account_ids().remove(username);
    }

    fn lock_account_ids(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, AccountId>> {
        self.account_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the server can take requests: the database answers, and writes succeed.
    /// While writes are failing, the housekeeping task tries a small write every second
    /// (never a request: `/readyz` is public), so readiness comes back by itself once the
    /// disk has room again (or the database is back).
    pub async fn ready(&self) -> bool {
        !self.health.is_failing() && self.store.ping().await.is_ok()
    }

    /// Try a small write; records the outcome. Returns whether it succeeded.
    pub async fn probe_writes(&self) -> bool {
        match self.store.probe_write(now()).await {
            Ok(()) => {
                self.health.succeeded();
                true
            }
            Err(e) => {
                self.health.failed(&e);
                false
            }
        }
    }

    /// Whether the last write failed with an outage (a full disk, a failing database).
    #[must_use]
    pub fn writes_failing(&self) -> bool {
        self.health.is_failing()
    }

    /// Writes that failed with an outage since the start.
    #[must_use]
    pub fn write_failures(&self) -> u64 {
        self.health.failures()
    }

    /// The store's periodic upkeep (for SQLite, the WAL checkpoint); called about once a
    /// second.
    pub async fn maintain_store(&self) -> Result<(), StoreError> {
        self.store.maintain().await
    }

    /// Forget rate-limiter entries that have refilled; called periodically.
    pub fn prune(&self) {
        self.claims_by_requester.prune();
        self.claims_by_target.prune();
        self.channels_opened.prune();
        self.auth_failures.prune();
        self.credentials.prune();
    }
}

/// SHA-256 of a high-entropy secret (a credential or an invite token). A fast hash is right
/// here: the secrets are 256-bit random values, not passwords, so there is nothing to
/// brute-force.
#[must_use]
pub fn hash_secret(secret: &[u8]) -> SecretHash {
    SecretHash::from_bytes(Sha256::digest(secret).into())
}

/// 32 random bytes from the operating system.
pub fn random_secret() -> Result<[u8; 32], ApiError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| {
        tracing::error!(error = %e, "operating system RNG failed");
        ApiError::Unavailable
    })?;
    Ok(secret)
}

/// Milliseconds since the epoch.
#[must_use]
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_limited_by_address_or_ipv6_network() {
        let v4: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source_key(v4), v4);
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b), "one /64");
        assert_ne!(source_key(a), source_key(other));
        let mapped: std::net::IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), v4);
    }
}
