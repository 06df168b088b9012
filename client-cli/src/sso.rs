//! Sign-in with the server's identity provider (OpenID Connect): the OAuth 2.0 Device
//! Authorization Grant (RFC 8628), or the authorization code flow with PKCE on a loopback
//! redirect (RFC 8252) for providers without it. The ID token is checked here (signature
//! with the provider's keys, issuer, audience, expiry, and the nonce in the code flow) so
//! that the username shown is the provider's, and checked again by the server.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreGenderClaim, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthorizationCode, ClientId, CsrfToken,
    DeviceAuthorizationUrl, DeviceCodeErrorResponseType, IssuerUrl, Nonce, PkceCodeChallenge,
    ProviderMetadata, RedirectUrl, RequestTokenError, Scope,
};
use serde::{Deserialize, Serialize};
use tacit_api::OidcConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How the CLI gets the ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Flow {
    /// OAuth 2.0 Device Authorization Grant (RFC 8628): a URL and a code to enter in any
    /// browser.
    Device,
    /// Authorization code with PKCE (S256), state and nonce, on a loopback redirect.
    Pkce,
}

/// The discovery field the device grant needs (`device_authorization_endpoint`), which the
/// core metadata leaves out.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceMetadata {
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}

impl AdditionalProviderMetadata for DeviceMetadata {}

type Metadata = ProviderMetadata<
    DeviceMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Every claim of an ID token beyond the standard ones, so that any `username_claim` the
/// server names (`upn`, a custom claim...) can be read.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

/// An ID token with all its claims, verified by the same verifier as the core one.
type FullIdToken = openidconnect::IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type FullClaims = openidconnect::IdTokenClaims<OtherClaims, CoreGenderClaim>;

/// A verified sign-in: the ID token to send to the server and the username it makes.
pub(crate) struct SignIn {
    /// The compact ID token (a bearer secret until the server has used it: never printed).
    pub(crate) id_token: String,
    /// The username the claim normalises to (what the server will derive too).
    pub(crate) username: String,
}

/// How long the user has to finish the code flow in the browser.
const PKCE_TIMEOUT: Duration = Duration::from_secs(600);

/// An HTTP client for the provider: system roots over the workspace's rustls, no
/// redirects (the OAuth crates ask for that, against SSRF through redirects).
fn http_client() -> Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A root the TLS library cannot use is skipped, as the system's other clients do.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// The issuer must be https, or http to a loopback address (as for the server).
fn check_issuer(issuer: &str) -> Result<IssuerUrl> {
    let url = url::Url::parse(issuer).with_context(|| format!("issuer {issuer:?} is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => bail!("the identity provider {issuer} must use https (plain http only on loopback)"),
    }
    Ok(IssuerUrl::new(issuer.to_owned())?)
}

/// The server names the identity provider (`GET /v1/oidc/config`): a lying server could
/// send the user to a sign-in page of its choosing. With `--issuer` the user pins the
/// provider they expect, and any other is refused before anything is opened.
fn check_pin(named: &str, pinned: Option<&str>) -> Result<()> {
    let Some(pinned) = pinned else {
        eprintln!(
            "tacit: the server names the identity provider {named} (pin it with --issuer {named})"
        );
        return Ok(());
    };
    if named.trim_end_matches('/') != pinned.trim_end_matches('/') {
        bail!(
            "the server names the identity provider {named:?}, not {pinned:?} (--issuer): \
             refusing to sign in there; check the server's address, or ask its administrator"
        );
    }
    Ok(())
}

/// Signs in at the provider `config` names with `flow`, checks the ID token and works out
/// the username. With `pinned` (`--issuer`), a provider other than that one is refused.
pub(crate) async fn sign_in(
    config: &OidcConfig,
    flow: Flow,
    pinned: Option<&str>,
) -> Result<SignIn> {
    check_pin(&config.issuer, pinned)?;
    let http = http_client()?;
    let issuer = check_issuer(&config.issuer)?;
    let metadata = Metadata::discover_async(issuer, &http)
        .await
        .with_context(|| format!("discovering the identity provider {}", config.issuer))?;
    let device_endpoint = metadata
        .additional_metadata()
        .device_authorization_endpoint
        .clone();
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(config.client_id.clone()), None)
            .set_auth_type(AuthType::RequestBody);
    let scopes = config
        .scopes
        .iter()
        .filter(|s| s.as_str() != "openid")
        .map(|s| Scope::new(s.clone()));
    let (id_token, claims) = match flow {
        Flow::Device => {
            let endpoint = device_endpoint.ok_or_else(|| {
                anyhow!("the identity provider offers no device grant; use --sso-flow pkce")
            })?;
            let client = client.set_device_authorization_url(endpoint);
            let details: CoreDeviceAuthorizationResponse = client
                .exchange_device_code()
                .add_scopes(scopes)
                .request_async(&http)
                .await
                .context("starting the device grant")?;
            let complete = details
                .verification_uri_complete()
                .map(|u| u.secret().as_str())
                .unwrap_or("-");
            // One stable line, for people and for scripts: fields separated by single spaces.
            eprintln!(
                "tacit: sign in at {} with code {} (or open {complete})",
                details.verification_uri().as_str(),
                details.user_code().secret()
            );
            let token = client
                .exchange_device_access_token(&details)?
                .request_async(&http, tokio::time::sleep, None)
                .await
                .map_err(|e| match e {
                    RequestTokenError::ServerResponse(ref r) => match r.error() {
                        DeviceCodeErrorResponseType::AccessDenied => {
                            anyhow!("the sign-in was denied at the identity provider")
                        }
                        DeviceCodeErrorResponseType::ExpiredToken => {
                            anyhow!("the code expired before the sign-in finished; start again")
                        }
                        other => anyhow!("the identity provider refused the device grant: {other}"),
                    },
                    other => anyhow!("polling the identity provider: {other}"),
                })?;
            let id_token = token
                .extra_fields()
                .id_token()
                .ok_or_else(|| anyhow!("the identity provider sent no ID token"))?
                .clone();
            // The device grant carries no nonce (none is sent); the token came straight from
            // the token endpoint over the connection just checked.
            let compact = id_token.to_string();
            let claims = full_token(&compact)?
                .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
                .map_err(|e| anyhow!("the ID token does not verify: {e}"))?
                .clone();
            (compact, claims)
        }
        Flow::Pkce => {
            let listener = tokio::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
                .await
                .context("listening for the loopback redirect")?;
            let port = listener.local_addr()?.port();
            let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/callback"))?;
            let client = client.set_redirect_uri(redirect);
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let (url, state, nonce) = client
                .authorize_url(
                    CoreAuthenticationFlow::AuthorizationCode,
                    CsrfToken::new_random,
                    Nonce::new_random,
                )
                .add_scopes(scopes)
                .set_pkce_challenge(challenge)
                .url();
            eprintln!("tacit: sign in by opening {url}");
            let code = tokio::time::timeout(PKCE_TIMEOUT, callback(&listener, &state))
                .await
                .map_err(|_| {
                    anyhow!("no sign-in came back within {} s", PKCE_TIMEOUT.as_secs())
                })??;
            let token = client
                .exchange_code(code)?
                .set_pkce_verifier(verifier)
                .request_async(&http)
                .await
                .map_err(|e| anyhow!("exchanging the authorization code: {e}"))?;
            let id_token = token
                .extra_fields()
                .id_token()
                .ok_or_else(|| anyhow!("the identity provider sent no ID token"))?
                .clone();
            let compact = id_token.to_string();
            let claims = full_token(&compact)?
                .claims(&client.id_token_verifier(), &nonce)
                .map_err(|e| anyhow!("the ID token does not verify: {e}"))?
                .clone();
            (compact, claims)
        }
    };
    let raw = claim(&claims, &config.username_claim)?;
    let username =
        tacit_api::username_from_claim(&raw, &config.allowed_domains).ok_or_else(|| {
            anyhow!(
                "the identity provider's {} {raw:?} does not make a valid username (3 to 32 of \
             a-z, 0-9, `_`, `-`, `.`); ask the server's administrator",
                config.username_claim
            )
        })?;
    Ok(SignIn { id_token, username })
}

/// The ID token with all its claims (parsed by openidconnect, verified by the caller).
fn full_token(compact: &str) -> Result<FullIdToken> {
    compact
        .parse()
        .map_err(|e| anyhow!("the identity provider sent a malformed ID token: {e}"))
}

/// The value of the claim `name` (the server's `username_claim`) as a string: the standard
/// `preferred_username`, `email` and `sub`, or any other string claim.
fn claim(claims: &FullClaims, name: &str) -> Result<String> {
    let value = match name {
        "preferred_username" => claims.preferred_username().map(|u| u.as_str().to_owned()),
        "email" => claims.email().map(|e| e.as_str().to_owned()),
        "sub" => Some(claims.subject().as_str().to_owned()),
        other => match claims.additional_claims().0.get(other) {
            Some(serde_json::Value::String(value)) => Some(value.clone()),
            Some(_) => bail!("the ID token's {other} claim is not a string"),
            None => None,
        },
    };
    value.ok_or_else(|| anyhow!("the ID token has no {name} claim"))
}

async fn callback(
    listener: &tokio::net::TcpListener,
    state: &CsrfToken,
) -> Result<AuthorizationCode> {
    let (mut stream, _) = listener.accept().await?;
    let mut buffer = vec![0u8; 8192];
    let mut filled = 0;
    while !buffer[..filled].windows(4).any(|w| w == b"\r\n\r\n") && filled < buffer.len() {
        let n = stream.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = String::from_utf8_lossy(&buffer[..filled]);
    let target = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .ok_or_else(|| anyhow!("the loopback redirect was not an HTTP request"))?;
    let url = url::Url::parse(&format!("http://127.0.0.1{target}"))?;
    let query = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let outcome = if url.path() != "/callback" {
        Err(anyhow!(
            "the redirect went to {}, not /callback",
            url.path()
        ))
    } else if let Some(error) = query("error") {
        Err(anyhow!("the identity provider answered {error}"))
    } else if query("state").as_deref().map(str::as_bytes) != Some(state.secret().as_bytes()) {
        Err(anyhow!(
            "the redirect's state does not match: not our sign-in"
        ))
    } else {
        query("code")
            .map(AuthorizationCode::new)
            .ok_or_else(|| anyhow!("the redirect carries no code"))
    };
    let body = if outcome.is_ok() {
        "Signed in: you can close this page and return to tacit."
    } else {
        "Sign-in failed: see tacit's output."
    };
    let _ = stream
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_issuer_must_be_the_one_the_server_names() {
        check_pin("https://idp.example/realms/acme", None).unwrap();
        check_pin(
            "https://idp.example/realms/acme",
            Some("https://idp.example/realms/acme/"),
        )
        .unwrap();
        for other in [
            "https://idp.example/realms/evil",
            "https://idp.example.evil/realms/acme",
            "http://idp.example/realms/acme",
            "https://idp.example/realms/acme/x",
        ] {
            let error = check_pin(other, Some("https://idp.example/realms/acme")).unwrap_err();
            assert!(error.to_string().contains("refusing"), "{error}");
        }
    }

    #[test]
    fn the_username_claim_can_be_any_string_claim() {
        let claims: FullClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://idp.example", "sub": "00u1", "aud": "tacit",
            "exp": 2_000_000_000, "iat": 1_900_000_000,
            "preferred_username": "Alice@example.com", "email": "a@example.com",
            "upn": "alice.s@example.com", "employee": 5
        }))
        .unwrap();
        assert_eq!(
            claim(&claims, "preferred_username").unwrap(),
            "Alice@example.com"
        );
        assert_eq!(claim(&claims, "email").unwrap(), "a@example.com");
        assert_eq!(claim(&claims, "sub").unwrap(), "00u1");
        assert_eq!(claim(&claims, "upn").unwrap(), "alice.s@example.com");
        assert!(claim(&claims, "employee").is_err());
        assert!(claim(&claims, "nickname").is_err());
    }

    #[test]
    fn issuer_must_be_https_or_loopback() {
        assert!(check_issuer("https://idp.example").is_ok());
        assert!(check_issuer("http://127.0.0.1:8080").is_ok());
        assert!(check_issuer("http://idp.example").is_err());
    }
}
