//! HTTP transport to a Tacit server, with the server's TLS trusted by the system roots, a
//! CA file, or a pinned certificate fingerprint. Plain `http://` is allowed only to a
//! loopback address.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Method, StatusCode, Url};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tacit_api as api;
use thiserror::Error;

/// Why the server could not be reached, in terms a person can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectProblem {
    /// The certificate chains to no trusted root: self-signed, or from a private CA.
    UntrustedCertificate,
    /// The certificate is not the pinned one.
    PinMismatch,
    /// The certificate is trusted but not valid here (another name, expired, revoked).
    InvalidCertificate,
    /// Nothing accepts connections at that address and port.
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// No answer in time.
    TimedOut,
    /// The other end does not speak the scheme the URL names (`https` to a plain-HTTP
    /// server, or `http` to a TLS one), or is not a Tacit server.
    WrongProtocol,
    /// The connection broke (reset, closed early) or failed another way.
    Broken,
}

impl std::fmt::Display for ConnectProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UntrustedCertificate => {
                "its certificate is not trusted (self-signed, or signed by an unknown CA)"
            }
            Self::PinMismatch => "its certificate is not the pinned one",
            Self::InvalidCertificate => "its certificate is not valid for this address",
            Self::Refused => "nothing is listening there (is the server running, on that port?)",
            Self::UnknownHost => "the host name does not resolve",
            Self::TimedOut => "no answer in time",
            Self::WrongProtocol => "it does not speak the protocol of the URL (https or http)",
            Self::Broken => "the connection failed",
        })
    }
}

/// The cause, shown only where the problem alone does not say enough.
fn detail_suffix(problem: ConnectProblem, detail: &str) -> String {
    match problem {
        ConnectProblem::Broken | ConnectProblem::InvalidCertificate if !detail.is_empty() => {
            format!(" ({detail})")
        }
        _ => String::new(),
    }
}

/// A failed exchange with the server, classified.
fn connect_error(error: reqwest::Error) -> TransportError {
    let server = error
        .url()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|| "the server".into());
    let (problem, detail) = classify(&error);
    TransportError::Connect {
        server,
        problem,
        detail,
    }
}

fn tls_problem(error: &rustls::Error) -> ConnectProblem {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => ConnectProblem::UntrustedCertificate,
        rustls::Error::InvalidCertificate(C::ApplicationVerificationFailure) => {
            ConnectProblem::PinMismatch
        }
        rustls::Error::InvalidCertificate(_) => ConnectProblem::InvalidCertificate,
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            ConnectProblem::WrongProtocol
        }
        _ => ConnectProblem::Broken,
    }
}

/// The TLS error an I/O error carries, through any number of I/O errors wrapped in one
/// another (the HTTP stack wraps the TLS library's twice).
fn tls_inside(io: &std::io::Error) -> Option<&rustls::Error> {
    let inner = io.get_ref()?;
    match inner.downcast_ref::<std::io::Error>() {
        Some(nested) => tls_inside(nested),
        None => inner.downcast_ref::<rustls::Error>(),
    }
}

/// Walks the cause chain of a reqwest error for the TLS or socket error inside it; the
/// few causes whose types are private to the HTTP stack are recognised by their text.
fn classify(error: &reqwest::Error) -> (ConnectProblem, String) {
    let mut innermost = error.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut problem = None;
    while let Some(current) = cause {
        innermost = current.to_string();
        if problem.is_none() {
            if let Some(tls) = current.downcast_ref::<rustls::Error>() {
                problem = Some(tls_problem(tls));
            } else if let Some(io) = current.downcast_ref::<std::io::Error>() {
                if let Some(tls) = tls_inside(io) {
                    problem = Some(tls_problem(tls));
                } else {
                    problem = match io.kind() {
                        std::io::ErrorKind::ConnectionRefused => Some(ConnectProblem::Refused),
                        std::io::ErrorKind::TimedOut => Some(ConnectProblem::TimedOut),
                        _ => None,
                    };
                }
            }
        }
        cause = current.source();
    }
    let problem = problem.unwrap_or_else(|| {
        let text = innermost.to_ascii_lowercase();
        if error.is_timeout() {
            ConnectProblem::TimedOut
        } else if text.contains("dns error") || text.contains("failed to lookup address") {
            ConnectProblem::UnknownHost
        } else if text.contains("invalid http version") || text.contains("invalid status") {
            ConnectProblem::WrongProtocol
        } else {
            ConnectProblem::Broken
        }
    });
    (problem, innermost)
}

/// Why a request to the server failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The server URL is malformed or not allowed.
    #[error("bad server URL {url}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TLS trust settings could not be loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The server could not be reached, or the connection failed (including a TLS
    /// certificate that does not match the pin or the trusted roots). One line: what went
    /// wrong, as far as the client can tell, and the innermost cause.
    #[error("could not reach {server}: {problem}{}", detail_suffix(*.problem, detail))]
    Connect {
        /// The server's origin (`https://host:port`).
        server: String,
        /// What went wrong.
        problem: ConnectProblem,
        /// The innermost cause as the TLS or network library put it.
        detail: String,
    },
    /// The server answered with an error.
    #[error("server refused the request ({code}): {message}")]
    Api {
        /// The stable error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The device set of a send is out of date.
    #[error("the recipient's device list changed")]
    DeviceMismatch(api::DeviceMismatch),
    /// The server's answer was not what the API promises.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The WebSocket failed or closed.
    #[error("connection to the server lost: {0}")]
    Socket(String),
    /// A blob upload was at another offset than the one sent; resume from this one.
    #[error("the server holds {offset} bytes of this upload")]
    UploadOffset {
        /// Where the upload must continue.
        offset: u64,
    },
    /// A local file being uploaded could not be read.
    #[error("reading the file to upload: {0}")]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// Whether trying again later may succeed: the connection failed, the server is busy
    /// or unavailable, or an upload must resume from another offset.
    pub fn is_transient(&self) -> bool {
        match self {
            // A certificate problem does not go away by trying again.
            Self::Connect { problem, .. } => matches!(
                problem,
                ConnectProblem::Refused
                    | ConnectProblem::UnknownHost
                    | ConnectProblem::TimedOut
                    | ConnectProblem::Broken
            ),
            Self::UploadOffset { .. } | Self::Socket(_) => true,
            Self::Api { code, .. } => {
                matches!(
                    code.as_str(),
                    // `storage_full`: nothing was stored, the server recovers by itself;
                    // `request_timeout`: a stalled upload, kept for a resume.
                    "conflict"
                        | "unavailable"
                        | "rate_limited"
                        | "internal"
                        | "storage_full"
                        | "request_timeout"
                )
            }
            _ => false,
        }
    }
}

/// Pieces a blob upload reads from its file at a time.
const UPLOAD_PIECE: usize = 64 * 1024;

/// The time allowed for moving `bytes` of a blob in one request: 30 s, and one more second
/// per 256 KiB (an upload that takes longer resumes where it stopped).
fn transfer_timeout(bytes: u64) -> std::time::Duration {
    std::time::Duration::from_secs(30 + bytes / (256 * 1024))
}

/// How to trust the server's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The operating system's root certificates.
    SystemRoots,
    /// The CA certificate(s) in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate whose DER encoding has this SHA-256 (as the server logs it).
    Pin([u8; 32]),
}

impl Trust {
    /// Parses a pin written as 64 hex digits (colons allowed).
    pub fn pin_from_hex(hex: &str) -> Option<Self> {
        let digits: String = hex.chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 {
            return None;
        }
        let mut pin = [0u8; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self::Pin(pin))
    }
}

/// A connection to one server, optionally authenticated as one device.
#[derive(Debug, Clone)]
pub struct Transport {
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    base: Url,
    credential: Option<String>,
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl Transport {
    /// A transport to `server` (`https://host:port`, or `http://` to a loopback address).
    pub fn new(server: &str, trust: &Trust) -> Result<Self, TransportError> {
        let bad = |reason| TransportError::BadUrl {
            url: server.to_owned(),
            reason,
        };
        let base = Url::parse(server).map_err(|_| bad("not a URL"))?;
        match base.scheme() {
            "https" => {}
            "http" if is_loopback(&base) => {}
            "http" => return Err(bad("plain http is allowed only to a loopback address")),
            _ => return Err(bad("the scheme must be https (or http to loopback)")),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let config = match trust {
            Trust::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
            Trust::SystemRoots | Trust::CaFile(_) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = match trust {
                    Trust::CaFile(path) => {
                        let pem = std::fs::read(path)
                            .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
                        rustls_pemfile::certs(&mut pem.as_slice())
                            .collect::<Result<_, _>>()
                            .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?
                    }
                    _ => rustls_native_certs::load_native_certs().certs,
                };
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| TransportError::Tls(e.to_string()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config.clone())
            .timeout(std::time::Duration::from_secs(30))
            // Below the server's idle keep-alive time (its header read timeout, 10 s by
            // default), so a request is never written on a connection the server is
            // closing as idle.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            tls: Arc::new(config),
            base,
            credential: None,
        })
    }

    /// The server URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The same transport, authenticating as a device.
    pub fn with_credential(mut self, credential: &str) -> Self {
        self.credential = Some(credential.to_owned());
        self
    }

    /// The URL of `segments` under the server URL, each segment percent-encoded (so a
    /// username such as `../keys` cannot reach another endpoint).
    fn url(&self, segments: &[&str]) -> Result<Url, TransportError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| TransportError::Protocol("server URL cannot take a path".into()))?
            .clear()
            .extend(segments);
        Ok(url)
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&B>,
    ) -> Result<Option<R>, TransportError> {
        self.call_query(method, path, &[], body).await
    }

    /// [`Self::call`] with query parameters (each percent-encoded).
    async fn call_query<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<Option<R>, TransportError> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self.http.request(method, url);
        if let Some(credential) = &self.credential {
            request = request.bearer_auth(credential);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(connect_error)?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = response.bytes().await.map_err(connect_error)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TransportError::Protocol(e.to_string()));
        }
        Err(error_from(status, &bytes))
    }

    /// A request to `path`, with the credential if there is one.
    fn request(
        &self,
        method: Method,
        path: &[&str],
    ) -> Result<reqwest::RequestBuilder, TransportError> {
        let mut request = self.http.request(method, self.url(path)?);
        if let Some(credential) = &self.credential {
            request = request.bearer_auth(credential);
        }
        Ok(request)
    }

    async fn expect<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&B>,
    ) -> Result<R, TransportError> {
        self.call(method, path, body)
            .await?
            .ok_or_else(|| TransportError::Protocol(format!("empty answer to /{}", path.join("/"))))
    }

    /// `POST /v1/accounts`.
    pub async fn register(
        &self,
        request: &api::RegisterRequest,
    ) -> Result<api::RegisterResponse, TransportError> {
        self.expect(Method::POST, &["v1", "accounts"], Some(request))
            .await
    }

    /// `GET /v1/oidc/config` (no credential): the server's identity provider, or
    /// [`TransportError::Api`] with `not_found` when it has none.
    pub async fn oidc_config(&self) -> Result<api::OidcConfig, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "oidc", "config"], None)
            .await
    }

    /// `POST /v1/devices/sso` (no credential): add a device to the account bound to the ID
    /// token's identity.
    pub async fn sso_device(
        &self,
        request: &api::SsoDeviceRequest,
    ) -> Result<api::SsoDeviceResponse, TransportError> {
        self.expect(Method::POST, &["v1", "devices", "sso"], Some(request))
            .await
    }

    /// `GET /v1/keys/count`.
    pub async fn prekey_count(&self) -> Result<api::PrekeyCount, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "keys", "count"], None)
            .await
    }

    /// `GET /v1/policy`: what the organisation asks clients to enforce (the server's word).
    pub async fn policy(&self) -> Result<api::Policy, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "policy"], None)
            .await
    }

    /// `PUT /v1/keys`.
    pub async fn upload_keys(
        &self,
        request: &api::UploadKeysRequest,
    ) -> Result<(), TransportError> {
        self.call::<_, serde_json::Value>(Method::PUT, &["v1", "keys"], Some(request))
            .await
            .map(drop)
    }

    /// `POST /v1/users/{username}/bundles`.
    pub async fn claim_bundles(
        &self,
        username: &str,
        request: &api::ClaimBundlesRequest,
    ) -> Result<api::PrekeyBundles, TransportError> {
        self.expect(
            Method::POST,
            &["v1", "users", username, "bundles"],
            Some(request),
        )
        .await
    }

    /// `GET /v1/users/{username}/devices`.
    pub async fn user_devices(&self, username: &str) -> Result<api::DeviceList, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "users", username, "devices"], None)
            .await
    }

    /// `GET /v1/devices`.
    pub async fn own_devices(&self) -> Result<api::DeviceList, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "devices"], None)
            .await
    }

    /// `POST /v1/messages`.
    pub async fn send(
        &self,
        request: &api::SendMessageRequest,
    ) -> Result<api::SendMessageResponse, TransportError> {
        self.expect(Method::POST, &["v1", "messages"], Some(request))
            .await
    }

    /// `POST /v1/multicast`: one ciphertext for many devices.
    pub async fn multicast(
        &self,
        request: &api::MulticastRequest,
    ) -> Result<api::SendMessageResponse, TransportError> {
        self.expect(Method::POST, &["v1", "multicast"], Some(request))
            .await
    }

    /// `GET /v1/messages`.
    pub async fn fetch(&self) -> Result<api::EnvelopeBatch, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "messages"], None)
            .await
    }

    /// `POST /v1/messages/ack`.
    pub async fn ack(&self, request: &api::AckRequest) -> Result<(), TransportError> {
        self.call::<_, serde_json::Value>(Method::POST, &["v1", "messages", "ack"], Some(request))
            .await
            .map(drop)
    }

    /// `DELETE /v1/accounts/me`: delete the whole account.
    pub async fn delete_account(&self) -> Result<(), TransportError> {
        self.call::<(), serde_json::Value>(Method::DELETE, &["v1", "accounts", "me"], None)
            .await
            .map(drop)
    }

    /// `DELETE /v1/devices/{id}`: remove a device of the account.
    pub async fn remove_device(&self, device: api::DeviceId) -> Result<(), TransportError> {
        let id = device.to_string();
        self.call::<(), serde_json::Value>(Method::DELETE, &["v1", "devices", &id], None)
            .await
            .map(drop)
    }

    /// `GET /v1/admin/users?search=&after=&limit=`: a page of users with their devices
    /// (admin).
    pub async fn admin_users(
        &self,
        search: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<api::AdminUserList, TransportError> {
        let mut query = Vec::new();
        if let Some(search) = search {
            query.push(("search", search.to_owned()));
        }
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.call_query::<(), _>(Method::GET, &["v1", "admin", "users"], &query, None)
            .await?
            .ok_or_else(|| TransportError::Protocol("empty answer to /v1/admin/users".into()))
    }

    /// `GET /v1/admin/users/{username}` (admin).
    pub async fn admin_user(&self, username: &str) -> Result<api::AdminUser, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "admin", "users", username], None)
            .await
    }

    /// `POST /v1/admin/users/{username}/disable` (admin).
    pub async fn admin_disable_user(&self, username: &str) -> Result<(), TransportError> {
        self.no_content(Method::POST, &["v1", "admin", "users", username, "disable"])
            .await
    }

    /// `POST /v1/admin/users/{username}/enable` (admin).
    pub async fn admin_enable_user(&self, username: &str) -> Result<(), TransportError> {
        self.no_content(Method::POST, &["v1", "admin", "users", username, "enable"])
            .await
    }

    /// `DELETE /v1/admin/users/{username}/devices/{device_id}` (admin).
    pub async fn admin_remove_device(
        &self,
        username: &str,
        device: api::DeviceId,
    ) -> Result<(), TransportError> {
        let id = device.to_string();
        self.no_content(
            Method::DELETE,
            &["v1", "admin", "users", username, "devices", &id],
        )
        .await
    }

    /// `DELETE /v1/admin/users/{username}`: delete the account (admin).
    pub async fn admin_delete_user(&self, username: &str) -> Result<(), TransportError> {
        self.no_content(Method::DELETE, &["v1", "admin", "users", username])
            .await
    }

    /// `PUT /v1/admin/users/{username}/roles/{role}` (admin).
    pub async fn admin_grant_role(
        &self,
        username: &str,
        role: api::Role,
    ) -> Result<(), TransportError> {
        self.no_content(
            Method::PUT,
            &["v1", "admin", "users", username, "roles", role.as_str()],
        )
        .await
    }

    /// `DELETE /v1/admin/users/{username}/roles/{role}` (admin).
    pub async fn admin_revoke_role(
        &self,
        username: &str,
        role: api::Role,
    ) -> Result<(), TransportError> {
        self.no_content(
            Method::DELETE,
            &["v1", "admin", "users", username, "roles", role.as_str()],
        )
        .await
    }

    /// `PUT /v1/admin/users/{username}/quota` (admin).
    pub async fn admin_set_quota(
        &self,
        username: &str,
        quota: &api::SetQuotaRequest,
    ) -> Result<(), TransportError> {
        self.call::<_, serde_json::Value>(
            Method::PUT,
            &["v1", "admin", "users", username, "quota"],
            Some(quota),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/admin/invites` (admin).
    pub async fn admin_invites(&self) -> Result<api::InviteList, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "admin", "invites"], None)
            .await
    }

    /// `POST /v1/admin/invites` (admin).
    pub async fn admin_create_invite(
        &self,
        request: &api::CreateInviteRequest,
    ) -> Result<api::CreateInviteResponse, TransportError> {
        self.expect(Method::POST, &["v1", "admin", "invites"], Some(request))
            .await
    }

    /// `DELETE /v1/admin/invites/{id}` (admin).
    pub async fn admin_revoke_invite(&self, id: &str) -> Result<(), TransportError> {
        self.no_content(Method::DELETE, &["v1", "admin", "invites", id])
            .await
    }

    /// `GET /v1/admin/audit?after=&limit=`: a page of the audit log (auditor or admin).
    pub async fn admin_audit(
        &self,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<api::AuditPage, TransportError> {
        let mut query = Vec::new();
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.call_query::<(), _>(Method::GET, &["v1", "admin", "audit"], &query, None)
            .await?
            .ok_or_else(|| TransportError::Protocol("empty answer to /v1/admin/audit".into()))
    }

    /// A bodiless request answered with `204` (or any success, its body ignored).
    async fn no_content(&self, method: Method, path: &[&str]) -> Result<(), TransportError> {
        self.call::<(), serde_json::Value>(method, path, None)
            .await
            .map(drop)
    }

    /// `POST /v1/provisioning`: open a channel for linking this (new) device.
    pub async fn open_channel(
        &self,
        request: &api::OpenChannelRequest,
    ) -> Result<api::OpenChannelResponse, TransportError> {
        self.expect(Method::POST, &["v1", "provisioning"], Some(request))
            .await
    }

    /// `GET /v1/provisioning/{channel}`.
    pub async fn channel_state(&self, channel: &str) -> Result<api::ChannelState, TransportError> {
        self.expect::<(), _>(Method::GET, &["v1", "provisioning", channel], None)
            .await
    }

    /// `PUT /v1/provisioning/{channel}`: answer a new device's channel.
    pub async fn answer_channel(
        &self,
        channel: &str,
        request: &api::AnswerChannelRequest,
    ) -> Result<(), TransportError> {
        self.call::<_, serde_json::Value>(
            Method::PUT,
            &["v1", "provisioning", channel],
            Some(request),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/devices/link`: add this new device with the link token.
    pub async fn link_device(
        &self,
        request: &api::LinkDeviceRequest,
    ) -> Result<api::AddDeviceResponse, TransportError> {
        self.expect(Method::POST, &["v1", "devices", "link"], Some(request))
            .await
    }

    /// `POST /v1/blobs`: reserve a blob of `size` bytes.
    pub async fn create_blob(&self, size: u64) -> Result<api::CreateBlobResponse, TransportError> {
        self.expect(
            Method::POST,
            &["v1", "blobs"],
            Some(&api::CreateBlobRequest { size }),
        )
        .await
    }

    /// `HEAD /v1/blobs/{id}`: how many bytes of one of our uploads the server holds.
    pub async fn blob_offset(&self, blob_id: &str) -> Result<u64, TransportError> {
        let response = self
            .request(Method::HEAD, &["v1", "blobs", blob_id])?
            .send()
            .await
            .map_err(connect_error)?;
        let status = response.status();
        if !status.is_success() {
            // A HEAD answer has no body to explain itself.
            return Err(match status {
                StatusCode::NOT_FOUND => TransportError::Api {
                    code: "not_found".into(),
                    message: "blob not found (expired or deleted)".into(),
                },
                _ => TransportError::Protocol(format!("HTTP {status}")),
            });
        }
        header_u64(&response, api::UPLOAD_OFFSET)
            .ok_or_else(|| TransportError::Protocol("no upload offset in the answer".into()))
    }

    /// `PATCH /v1/blobs/{id}`: sends bytes `offset..total` of `file` (read from there, in
    /// pieces; never whole in memory), telling `progress` how far the sending got. Returns
    /// the offset the server reached.
    pub async fn upload_blob_part(
        &self,
        blob_id: &str,
        file: &std::fs::File,
        offset: u64,
        total: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, TransportError> {
        use futures_util::StreamExt as _;
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let remaining = total.saturating_sub(offset);
        let mut reader = tokio::fs::File::from_std(file.try_clone()?);
        reader.seek(std::io::SeekFrom::Start(offset)).await?;
        let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(offset);
        let mut sent = offset;
        let body =
            tokio_util::io::ReaderStream::with_capacity(reader.take(remaining), UPLOAD_PIECE)
                .inspect(move |piece| {
                    if let Ok(piece) = piece {
                        sent += piece.len() as u64;
                        let _ = sent_tx.send(sent);
                    }
                });
        let request = self
            .request(Method::PATCH, &["v1", "blobs", blob_id])?
            .header(reqwest::header::CONTENT_TYPE, api::BLOB_UPLOAD_CONTENT_TYPE)
            .header(api::UPLOAD_OFFSET, offset)
            .header(reqwest::header::CONTENT_LENGTH, remaining)
            .timeout(transfer_timeout(remaining))
            .body(reqwest::Body::wrap_stream(body))
            .send();
        tokio::pin!(request);
        let response = loop {
            tokio::select! {
                response = &mut request => break response.map_err(connect_error)?,
                Ok(()) = sent_rx.changed() => progress(*sent_rx.borrow_and_update()),
            }
        };
        let status = response.status();
        if status.is_success() {
            return header_u64(&response, api::UPLOAD_OFFSET)
                .ok_or_else(|| TransportError::Protocol("no upload offset in the answer".into()));
        }
        let at = header_u64(&response, api::UPLOAD_OFFSET);
        let bytes = response.bytes().await.map_err(connect_error)?;
        match (status, at) {
            (StatusCode::CONFLICT, Some(offset)) => Err(TransportError::UploadOffset { offset }),
            _ => Err(error_from(status, &bytes)),
        }
    }

    /// Uploads `file` (exactly `total` bytes) into the blob, resuming where the server is:
    /// asks for the offset, sends the rest, and after a failure that may pass (a dropped
    /// connection, a timeout, a busy server) asks again and continues from there.
    pub async fn upload_blob(
        &self,
        blob_id: &str,
        file: &std::fs::File,
        total: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), TransportError> {
        const ATTEMPTS: u32 = 8;
        // Consecutive failures without progress; any progress starts the count again.
        let mut failures = 0;
        let mut reached = 0;
        loop {
            let result = async {
                let offset = self.blob_offset(blob_id).await?;
                progress(offset);
                if offset > reached {
                    reached = offset;
                    failures = 0;
                }
                if offset >= total {
                    return Ok(offset);
                }
                self.upload_blob_part(blob_id, file, offset, total, progress)
                    .await
            }
            .await;
            match result {
                Ok(offset) if offset >= total => return Ok(()),
                Ok(_) if failures + 1 < ATTEMPTS => failures += 1,
                Ok(offset) => {
                    return Err(TransportError::Protocol(format!(
                        "the upload keeps stopping at byte {offset} of {total}"
                    )));
                }
                Err(error) if error.is_transient() && failures + 1 < ATTEMPTS => {
                    failures += 1;
                    let pause = 100u64 << failures.min(6);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `GET /v1/blobs/{id}` from byte `start` (a resumed download asks for the rest).
    pub async fn download_blob(
        &self,
        blob_id: &str,
        start: u64,
    ) -> Result<BlobDownload, TransportError> {
        let mut request = self.request(Method::GET, &["v1", "blobs", blob_id])?;
        if start > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={start}-"));
        }
        // The whole answer may take long; a stalled one fails and is resumed.
        let response = request
            .timeout(std::time::Duration::from_secs(24 * 60 * 60))
            .send()
            .await
            .map_err(connect_error)?;
        let status = response.status();
        let expected = if start > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if status != expected {
            if status.is_success() {
                return Err(TransportError::Protocol(format!(
                    "HTTP {status} to a download from byte {start}"
                )));
            }
            let bytes = response.bytes().await.map_err(connect_error)?;
            return Err(error_from(status, &bytes));
        }
        let len = response.content_length();
        Ok(BlobDownload { response, len })
    }

    /// Opens the WebSocket (`GET /v1/ws`) with the same trust settings as HTTP.
    pub async fn connect_socket(&self) -> Result<Socket, TransportError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut url = self.url(&["v1", "ws"])?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| TransportError::Protocol("cannot make a WebSocket URL".into()))?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| TransportError::Socket(e.to_string()))?;
        if let Some(credential) = &self.credential {
            let value = format!("{} {credential}", api::AUTHORIZATION_SCHEME)
                .parse()
                .map_err(|_| TransportError::Protocol("credential is not a header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let (stream, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(response) => {
                        let body = response
                            .body()
                            .as_deref()
                            .and_then(|b| serde_json::from_slice::<api::ErrorBody>(b).ok());
                        match body {
                            Some(body) => TransportError::Api {
                                code: body.code.as_str().to_owned(),
                                message: body.message,
                            },
                            None => TransportError::Socket(format!("HTTP {}", response.status())),
                        }
                    }
                    other => TransportError::Socket(other.to_string()),
                })?;
        Ok(Socket { stream })
    }
}

/// The error an API answer carries.
fn error_from(status: StatusCode, bytes: &[u8]) -> TransportError {
    match serde_json::from_slice::<api::ErrorBody>(bytes) {
        Ok(api::ErrorBody {
            code: api::ErrorCode::DeviceMismatch,
            mismatch: Some(mismatch),
            ..
        }) => TransportError::DeviceMismatch(mismatch),
        Ok(body) => TransportError::Api {
            code: body.code.as_str().to_owned(),
            message: body.message,
        },
        Err(_) => TransportError::Protocol(format!("HTTP {status}")),
    }
}

fn header_u64(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// A blob download under way: its bytes arrive in pieces.
#[derive(Debug)]
pub struct BlobDownload {
    response: reqwest::Response,
    len: Option<u64>,
}

impl BlobDownload {
    /// How many bytes this answer carries, if the server said.
    pub fn content_length(&self) -> Option<u64> {
        self.len
    }

    /// The next piece, or `None` at the end. An error (a dropped connection) may be resumed
    /// with a new download from the bytes received so far.
    pub async fn chunk(&mut self) -> Result<Option<impl AsRef<[u8]> + use<>>, TransportError> {
        self.response.chunk().await.map_err(connect_error)
    }
}

/// An open WebSocket to the server: envelopes are pushed as they arrive.
pub struct Socket {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").finish_non_exhaustive()
    }
}

impl Socket {
    /// The next frame from the server, or `None` once the server closed the socket.
    /// Cancel-safe: dropping the future loses no frame.
    pub async fn next_frame(&mut self) -> Result<Option<api::ServerFrame>, TransportError> {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.stream.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map(Some)
                        .map_err(|e| TransportError::Protocol(format!("bad frame: {e}")));
                }
                // Pings are answered by the library; nothing else is expected.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(TransportError::Socket(e.to_string())),
            }
        }
    }

    /// Sends a frame (an acknowledgement or a ping).
    pub async fn send(&mut self, frame: &api::ClientFrame) -> Result<(), TransportError> {
        use futures_util::SinkExt as _;
        let text =
            serde_json::to_string(frame).map_err(|e| TransportError::Protocol(e.to_string()))?;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .map_err(|e| TransportError::Socket(e.to_string()))
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Accepts exactly one certificate, by the SHA-256 of its DER encoding; handshake
/// signatures are still verified with the certificate's key.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(digest.ct_eq(&self.pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problem a request to `url` runs into.
    async fn problem_at(url: &str) -> ConnectProblem {
        let transport = Transport::new(url, &Trust::SystemRoots).unwrap();
        match transport.own_devices().await {
            Err(TransportError::Connect { problem, .. }) => problem,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn connection_failures_say_what_is_wrong() {
        // A port nobody listens on.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        assert_eq!(
            problem_at(&format!("https://127.0.0.1:{port}")).await,
            ConnectProblem::Refused
        );

        // A plain-HTTP server reached with https, and a TLS-looking one reached with http.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut socket, _)) = plain.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = socket.read(&mut buf).await;
                    // A TLS alert record: what a TLS server answers to a plain request.
                    let reply: &[u8] = if buf.starts_with(b"GET") {
                        &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]
                    } else {
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
                    };
                    let _ = socket.write_all(reply).await;
                });
            }
        });
        assert_eq!(
            problem_at(&format!("https://{addr}")).await,
            ConnectProblem::WrongProtocol
        );
        assert_eq!(
            problem_at(&format!("http://{addr}")).await,
            ConnectProblem::WrongProtocol
        );
        let error = Transport::new(&format!("http://{addr}"), &Trust::SystemRoots)
            .unwrap()
            .own_devices()
            .await
            .unwrap_err();
        // One line, the cause not repeated.
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("could not reach http://{addr}: ")),
            "{text}"
        );
        assert!(!text.contains("error sending request"), "{text}");
        assert!(std::error::Error::source(&error).is_none());
        assert!(!error.is_transient());
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:2",
            "https://chat.example.com",
        ] {
            assert!(Transport::new(ok, &Trust::SystemRoots).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:80",
            "http://chat.example.com",
            "ftp://127.0.0.1",
            "nonsense",
        ] {
            assert!(
                matches!(
                    Transport::new(bad, &Trust::SystemRoots),
                    Err(TransportError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn usernames_cannot_escape_their_path_segment() {
        let transport = Transport::new("http://127.0.0.1:9/base/", &Trust::SystemRoots).unwrap();
        let url = transport
            .url(&["v1", "users", "../keys", "devices"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/users/..%2Fkeys/devices"
        );
        let url = transport.url(&["v1", "users", "a?b#c", "devices"]).unwrap();
        assert_eq!(url.path(), "/v1/users/a%3Fb%23c/devices");
    }

    #[test]
    fn pins_parse_from_hex() {
        let hex = "ab".repeat(32);
        assert_eq!(Trust::pin_from_hex(&hex), Some(Trust::Pin([0xab; 32])));
        let with_colons = vec!["AB"; 32].join(":");
        assert_eq!(
            Trust::pin_from_hex(&with_colons),
            Some(Trust::Pin([0xab; 32]))
        );
        assert_eq!(Trust::pin_from_hex("abcd"), None);
        assert_eq!(Trust::pin_from_hex(&"zz".repeat(32)), None);
    }
}
