//! Checking an ID token or a logout token: the signature with the provider's key for the
//! token's `kid` (the algorithm derived from the key, never taken from the token alone),
//! then `iss`, `aud` (and `azp`), `exp`, `nbf` and `iat` with the configured leeway.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::{KeySet, Lookup};
use super::{Refusal, VerifyError};
use crate::config::OidcSettings;

/// Longest token read, in bytes (the API allows 16384 characters).
pub(crate) const MAX_TOKEN: usize = 16 * 1024;
/// The event a logout token carries (Back-Channel Logout 1.0 §2.4).
pub(crate) const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Which kind of token is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An ID token (`sub` required).
    IdToken,
    /// A back-channel logout token (`events`, `jti`, `sub` or `sid`, no `nonce`).
    Logout,
}

/// A token whose signature and claims passed.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// The issuer (the configured one).
    pub(crate) issuer: String,
    /// The subject (always present in an ID token).
    pub(crate) subject: Option<String>,
    /// The provider's session id.
    pub(crate) sid: Option<String>,
    /// When it expires (seconds since the epoch).
    pub(crate) expires_at: i64,
    /// SHA-256 of the compact token, or for a logout token of its `jti`: the replay key.
    pub(crate) replay_key: [u8; 32],
    /// Every claim, for the username and groups claims.
    pub(crate) claims: Map<String, Value>,
}

fn refuse(reason: Refusal, message: impl Into<String>) -> VerifyError {
    VerifyError::Refused {
        reason,
        message: message.into(),
    }
}

/// The algorithm a key is for: RSA → RS256, EC P-256 → ES256, OKP Ed25519 → EdDSA. A
/// JWK `alg` must agree.
pub(crate) fn key_algorithm(jwk: &Jwk) -> Result<Algorithm, VerifyError> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => {
            return Err(refuse(
                Refusal::Algorithm,
                "the provider's key is not RSA, EC P-256 or Ed25519",
            ));
        }
    };
    if let Some(declared) = jwk.common.key_algorithm
        && declared.to_string() != format!("{alg:?}")
    {
        return Err(refuse(
            Refusal::Algorithm,
            format!("the provider's key declares alg {declared}, not {alg:?}"),
        ));
    }
    Ok(alg)
}

/// The header's `alg` as written, when the header is readable JSON (to name `none` and
/// HMAC, which the JWT library refuses to parse or to verify with a public key).
fn raw_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// Verify `token` as `kind`, at `now` (seconds since the epoch).
pub(crate) async fn verify(
    settings: &OidcSettings,
    keys: &KeySet,
    token: &str,
    kind: Kind,
    now: i64,
) -> Result<Verified, VerifyError> {
    if token.len() > MAX_TOKEN {
        return Err(refuse(
            Refusal::Malformed,
            format!("longer than {MAX_TOKEN} bytes"),
        ));
    }
    let header = match jsonwebtoken::decode_header(token) {
        Ok(header) => header,
        Err(_) => {
            return Err(match raw_alg(token) {
                Some(alg) if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") => {
                    refuse(Refusal::Algorithm, format!("alg {alg} is never accepted"))
                }
                Some(alg) if !settings.algorithms.contains(&alg) => refuse(
                    Refusal::Algorithm,
                    format!("alg {alg} is not among the accepted algorithms"),
                ),
                _ => refuse(Refusal::Malformed, "not a signed JWT (JWS compact form)"),
            });
        }
    };
    let header_alg = header.alg;
    if matches!(
        header_alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(refuse(
            Refusal::Algorithm,
            format!("alg {header_alg:?} (HMAC) is never accepted"),
        ));
    }
    if kind == Kind::Logout
        && let Some(typ) = &header.typ
        && !typ.eq_ignore_ascii_case("logout+jwt")
    {
        return Err(refuse(
            Refusal::Malformed,
            format!("typ {typ:?} is not logout+jwt"),
        ));
    }
    let jwk = match keys.lookup(header.kid.as_deref()).await? {
        Lookup::Found(jwk) => jwk,
        Lookup::Unknown => {
            return Err(refuse(
                Refusal::UnknownKey,
                match &header.kid {
                    Some(kid) => format!("the provider publishes no key with kid {kid:?}"),
                    None => "the token names no kid and the provider has several keys".to_owned(),
                },
            ));
        }
    };
    let alg = key_algorithm(&jwk)?;
    if !settings.algorithms.iter().any(|a| *a == format!("{alg:?}")) {
        return Err(refuse(
            Refusal::Algorithm,
            format!("alg {alg:?} is not among the accepted algorithms"),
        ));
    }
    if header_alg != alg {
        return Err(refuse(
            Refusal::Algorithm,
            format!("the header says alg {header_alg:?} but the key is for {alg:?}"),
        ));
    }
    let key = DecodingKey::from_jwk(&jwk)
        .map_err(|_| refuse(Refusal::UnknownKey, "the provider's key is unusable"))?;
    let mut validation = Validation::new(alg);
    validation.leeway = settings.clock_skew_secs;
    validation.validate_nbf = true;
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&settings.accepted_audiences());
    match kind {
        Kind::IdToken => validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]),
        Kind::Logout => validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]),
    }
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| from_jwt_error(&e))?;
    let claims = data.claims;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| refuse(Refusal::Malformed, "iat is missing or not a number"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| refuse(Refusal::Malformed, "exp is missing or not a number"))?;
    let skew = i64::try_from(settings.clock_skew_secs).unwrap_or(i64::MAX);
    let max_age = i64::try_from(settings.max_token_age_secs).unwrap_or(i64::MAX);
    if iat > now.saturating_add(skew) {
        return Err(refuse(
            Refusal::IssuedInFuture,
            "iat is in the future (check the clocks)",
        ));
    }
    if iat < now.saturating_sub(max_age) {
        return Err(refuse(
            Refusal::Stale,
            format!("issued more than {max_age} s ago; sign in again"),
        ));
    }
    if let Some(Value::Array(auds)) = claims.get("aud")
        && auds.len() > 1
        && claims.get("azp").and_then(Value::as_str) != Some(settings.client_id.as_str())
    {
        return Err(refuse(
            Refusal::Audience,
            "several audiences but azp is not this server's client",
        ));
    }
    let text = |name: &str| -> Result<Option<String>, VerifyError> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
            Some(_) => Err(refuse(
                Refusal::Malformed,
                format!("{name} is not a string of 1 to 255 bytes"),
            )),
        }
    };
    let subject = text("sub")?;
    let sid = text("sid")?;
    let replay_key: [u8; 32] = match kind {
        Kind::IdToken => Sha256::digest(token.as_bytes()).into(),
        Kind::Logout => {
            let events = claims.get("events").and_then(Value::as_object);
            if !events.is_some_and(|e| e.get(LOGOUT_EVENT).is_some_and(Value::is_object)) {
                return Err(refuse(
                    Refusal::Malformed,
                    format!("events has no {LOGOUT_EVENT} member"),
                ));
            }
            if claims.contains_key("nonce") {
                return Err(refuse(
                    Refusal::Malformed,
                    "a logout token carries no nonce",
                ));
            }
            if subject.is_none() && sid.is_none() {
                return Err(refuse(Refusal::Malformed, "neither sub nor sid"));
            }
            let jti = text("jti")?.ok_or_else(|| refuse(Refusal::Malformed, "jti is missing"))?;
            let mut hash = Sha256::new();
            hash.update(b"tacit logout jti\0");
            hash.update(settings.issuer.as_bytes());
            hash.update([0]);
            hash.update(jti.as_bytes());
            hash.finalize().into()
        }
    };
    Ok(Verified {
        issuer: settings.issuer.clone(),
        subject,
        sid,
        expires_at: exp,
        replay_key,
        claims,
    })
}

fn from_jwt_error(e: &jsonwebtoken::errors::Error) -> VerifyError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => refuse(Refusal::Expired, "the token has expired"),
        K::ImmatureSignature => refuse(Refusal::NotYetValid, "the token is not valid yet (nbf)"),
        K::InvalidIssuer => refuse(Refusal::Issuer, "iss is not the configured issuer"),
        K::InvalidAudience => refuse(Refusal::Audience, "aud does not name this server's client"),
        K::InvalidSignature => refuse(Refusal::Signature, "the signature does not verify"),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            refuse(Refusal::Algorithm, "the algorithm does not fit the key")
        }
        K::MissingRequiredClaim(claim) => {
            refuse(Refusal::Malformed, format!("the claim {claim} is missing"))
        }
        K::InvalidClaimFormat(claim) => refuse(
            Refusal::Malformed,
            format!("the claim {claim} is malformed"),
        ),
        K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
            refuse(Refusal::UnknownKey, "the provider's key is unusable")
        }
        _ => refuse(Refusal::Malformed, "not a well-formed token"),
    }
}
