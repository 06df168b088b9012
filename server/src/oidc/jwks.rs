//! The provider's discovery document and signing keys (JWKS): fetched lazily, cached, and
//! refetched on an unknown key id at most once per `jwks_refresh_min_secs`, by one task
//! at a time (the others wait for its result instead of fetching too).

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tracing::{info, warn};

use crate::config::OidcSettings;

/// Largest discovery document or JWKS read, in bytes.
const MAX_BODY: usize = 512 * 1024;
/// How long one fetch may take in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fetched key set is used before a lookup refetches it anyway.
const MAX_CACHE_AGE: Duration = Duration::from_secs(3600);

/// Why the keys could not be fetched (the provider is down or answers nonsense).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The request failed (connection, TLS, timeout) or the status was not 200.
    #[error("{url}: {message}")]
    Http {
        /// What was fetched.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The body is not the JSON expected, or too large.
    #[error("{url}: {message}")]
    Body {
        /// What was fetched.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The discovery document names another issuer than the configured one.
    #[error("the discovery document names issuer {found:?}, not the configured one")]
    IssuerMismatch {
        /// The issuer the document names.
        found: String,
    },
    /// The HTTP client could not be built (a bad `ca_file`).
    #[error("{0}")]
    Client(String),
}

/// What the server reads from the discovery document.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Debug, Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Debug, Default)]
struct Cache {
    jwks_uri: Option<String>,
    keys: Vec<Jwk>,
    fetched_at: Option<Instant>,
}

/// The fetches tried: while the provider is down, it is asked at most once per
/// [`RETRY_AFTER_FAILURE`] however many requests arrive.
#[derive(Debug, Default)]
struct Attempts {
    last: Option<Instant>,
    failed: Option<(Instant, String)>,
}

/// How long a failed fetch is answered from memory before the provider is asked again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The outcome of looking a key up.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The key with that id (or the only key, for a token without `kid`).
    Found(Box<Jwk>),
    /// The provider does not publish it (after a refetch, or too soon to refetch).
    Unknown,
}

/// The cached keys of one provider.
#[derive(Debug)]
pub(crate) struct KeySet {
    issuer: String,
    refresh_min: Duration,
    /// The client, or why it could not be built (every fetch then fails with that).
    http: Result<reqwest::Client, String>,
    cache: RwLock<Cache>,
    /// Held by the one task fetching; the last fetch attempt's time, and the last failure.
    fetching: Mutex<Attempts>,
}

/// The HTTP client for the provider: system roots plus `ca_file`, no redirects, timeouts.
fn http_client(settings: &OidcSettings) -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    for cert in rustls_native_certs::load_native_certs().certs {
        if let Ok(cert) = reqwest::Certificate::from_der(&cert) {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| FetchError::Client(format!("oidc.ca_file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| FetchError::Client(format!("oidc.ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(FetchError::Client(format!(
                "oidc.ca_file {}: no certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| FetchError::Client(format!("the HTTP client: {e}")))
}

impl KeySet {
    /// Keys of the provider `settings` names, fetched on first use.
    pub(crate) fn new(settings: &OidcSettings) -> Self {
        Self {
            issuer: settings.issuer.clone(),
            refresh_min: Duration::from_secs(settings.jwks_refresh_min_secs),
            http: http_client(settings).map_err(|e| e.to_string()),
            cache: RwLock::new(Cache::default()),
            fetching: Mutex::new(Attempts::default()),
        }
    }

    /// The key `kid` names (`None`: the token has no `kid`, which finds the only key).
    pub(crate) async fn lookup(&self, kid: Option<&str>) -> Result<Lookup, FetchError> {
        let fresh_at = {
            let cache = self.cache.read().await;
            if let Some(key) = find(&cache.keys, kid)
                && cache
                    .fetched_at
                    .is_some_and(|at| at.elapsed() < MAX_CACHE_AGE)
            {
                return Ok(Lookup::Found(Box::new(key.clone())));
            }
            cache.fetched_at
        };
        // One task fetches; the others wait here and then find what it fetched.
        let mut attempts = self.fetching.lock().await;
        {
            let cache = self.cache.read().await;
            if cache.fetched_at != fresh_at
                && let Some(key) = find(&cache.keys, kid)
            {
                return Ok(Lookup::Found(Box::new(key.clone())));
            }
        }
        if let Some((at, message)) = &attempts.failed
            && at.elapsed() < RETRY_AFTER_FAILURE
        {
            let cache = self.cache.read().await;
            return match find(&cache.keys, kid) {
                Some(key) => Ok(Lookup::Found(Box::new(key.clone()))),
                None => Err(FetchError::Http {
                    url: self.issuer.clone(),
                    message: message.clone(),
                }),
            };
        }
        let too_soon = attempts
            .last
            .is_some_and(|at| at.elapsed() < self.refresh_min);
        let stale = fresh_at.is_none_or(|at| at.elapsed() >= MAX_CACHE_AGE);
        if too_soon && !stale {
            return Ok(Lookup::Unknown);
        }
        if too_soon && fresh_at.is_some() {
            // Stale but refetched moments ago: use what there is.
            let cache = self.cache.read().await;
            return Ok(find(&cache.keys, kid)
                .map_or(Lookup::Unknown, |k| Lookup::Found(Box::new(k.clone()))));
        }
        attempts.last = Some(Instant::now());
        match self.fetch().await {
            Ok(()) => attempts.failed = None,
            Err(e) => {
                warn!(error = %e, "fetching the identity provider's keys failed");
                attempts.failed = Some((Instant::now(), e.to_string()));
                let cache = self.cache.read().await;
                // A key already known still verifies while the provider is away.
                if let Some(key) = find(&cache.keys, kid) {
                    return Ok(Lookup::Found(Box::new(key.clone())));
                }
                return Err(e);
            }
        }
        let cache = self.cache.read().await;
        Ok(find(&cache.keys, kid).map_or(Lookup::Unknown, |k| Lookup::Found(Box::new(k.clone()))))
    }

    /// Read the discovery document (once) and the JWKS into the cache.
    async fn fetch(&self) -> Result<(), FetchError> {
        let jwks_uri = self.cache.read().await.jwks_uri.clone();
        let jwks_uri = match jwks_uri {
            Some(uri) => uri,
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let discovery: Discovery = self.get_json(&url).await?;
                if discovery.issuer != self.issuer {
                    return Err(FetchError::IssuerMismatch {
                        found: discovery.issuer,
                    });
                }
                check_url(&discovery.jwks_uri)?;
                self.cache.write().await.jwks_uri = Some(discovery.jwks_uri.clone());
                discovery.jwks_uri
            }
        };
        let raw: RawJwkSet = self.get_json(&jwks_uri).await?;
        // A key of a type this crate does not know is skipped, not fatal for the others.
        let keys: Vec<Jwk> = raw
            .keys
            .into_iter()
            .filter_map(|key| serde_json::from_value(key).ok())
            .collect();
        info!(keys = keys.len(), "fetched the identity provider's keys");
        let mut cache = self.cache.write().await;
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let http = |message: String| FetchError::Http {
            url: url.to_owned(),
            message,
        };
        let body = |message: String| FetchError::Body {
            url: url.to_owned(),
            message,
        };
        let client = self
            .http
            .as_ref()
            .map_err(|e| FetchError::Client(e.clone()))?;
        let mut response = client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| http(without_url(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(http(format!("status {}", response.status())));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| http(without_url(&e)))? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(body(format!("larger than {MAX_BODY} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|e| body(format!("not the JSON expected: {e}")))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// The `jwks_uri` must be https, or http on a loopback host (as the issuer).
fn check_url(url: &str) -> Result<(), FetchError> {
    let bad = || FetchError::Body {
        url: url.to_owned(),
        message: "jwks_uri must be https (http only on a loopback host)".to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']');
            if is_loopback(host) {
                Ok(())
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

/// `localhost` or a loopback address.
pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn find<'a>(keys: &'a [Jwk], kid: Option<&str>) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid)),
        None => match keys {
            [only] => Some(only),
            _ => None,
        },
    }
}
