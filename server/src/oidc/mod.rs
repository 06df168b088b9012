//! Sign-in with the company's OpenID Connect provider (`[oidc]`): its keys
//! ([`jwks`](self)) and the checks on ID and back-channel logout tokens.
//!
//! The provider is reached lazily: the server starts while it is down and answers SSO
//! requests `503 unavailable` until its keys can be fetched.

mod jwks;
mod verify;

use std::sync::Arc;

use serde_json::Value;

use crate::config::OidcSettings;
pub use jwks::FetchError;
pub(crate) use verify::{Kind, Verified};

/// Why a token was refused: a stable code, recorded as the audit entry's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iat` is in the future.
    IssuedInFuture,
    /// `iat` is older than `max_token_age_secs`.
    Stale,
    /// `iss` is not the configured issuer.
    Issuer,
    /// `aud` (or `azp`) does not name this server's client.
    Audience,
    /// No published key has the token's `kid`.
    UnknownKey,
    /// The algorithm is `none`, HMAC, not allowed, or not the key's.
    Algorithm,
    /// The signature does not verify.
    Signature,
    /// Not a well-formed token, or a claim is missing or malformed.
    Malformed,
    /// The token was used before.
    Replayed,
    /// The username claim does not give a valid username.
    UsernameInvalid,
    /// The request's username is not the one the token gives.
    UsernameMismatch,
    /// No account is bound to the token's identity.
    NotBound,
}

impl Refusal {
    /// The stable name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::Stale => "stale",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::UnknownKey => "unknown_key",
            Self::Algorithm => "algorithm",
            Self::Signature => "signature",
            Self::Malformed => "malformed",
            Self::Replayed => "replayed",
            Self::UsernameInvalid => "username_invalid",
            Self::UsernameMismatch => "username_mismatch",
            Self::NotBound => "not_bound",
        }
    }
}

/// Why a token could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is refused.
    #[error("{message} ({})", reason.as_str())]
    Refused {
        /// The stable reason.
        reason: Refusal,
        /// What is wrong, for the client (never the token).
        message: String,
    },
    /// The provider's keys could not be fetched.
    #[error("the identity provider is unreachable: {0}")]
    Unavailable(#[from] FetchError),
}

/// The configured provider and its cached keys.
#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    keys: jwks::KeySet,
}

impl Oidc {
    /// The provider `settings` names; nothing is fetched yet. (A `ca_file` that cannot
    /// be read makes every fetch fail with that reason; the configuration check refuses
    /// one at start.)
    #[must_use]
    pub fn new(settings: OidcSettings) -> Arc<Self> {
        let keys = jwks::KeySet::new(&settings);
        Arc::new(Self { settings, keys })
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Fetch the keys now (at start, to log whether the provider answers).
    ///
    /// # Errors
    /// The provider is unreachable or its documents are wrong.
    pub async fn warm_up(&self) -> Result<(), FetchError> {
        self.keys.lookup(Some("")).await.map(|_| ())
    }

    /// Verify `token` as `kind` at `now` (seconds since the epoch).
    pub(crate) async fn verify(
        &self,
        token: &str,
        kind: Kind,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        verify::verify(&self.settings, &self.keys, token, kind, now).await
    }

    /// The username the token's username claim gives.
    pub(crate) fn username(&self, token: &Verified) -> Result<String, VerifyError> {
        let claim = &self.settings.username_claim;
        let value = token
            .claims
            .get(claim)
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::Refused {
                reason: Refusal::UsernameInvalid,
                message: format!("the token has no {claim} claim"),
            })?;
        crate::service::normalise_username(value, &self.settings.allowed_domains).map_err(|_| {
            VerifyError::Refused {
                reason: Refusal::UsernameInvalid,
                message: format!(
                    "the {claim} claim does not give a valid username ({})",
                    tacit_api::USERNAME_RULE
                ),
            }
        })
    }

    /// The roles `role_map` gives for the token's groups claim.
    pub(crate) fn roles(&self, token: &Verified) -> Vec<tacit_api::Role> {
        let Some(claim) = &self.settings.groups_claim else {
            return Vec::new();
        };
        let groups: Vec<&str> = match token.claims.get(claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(one)) => vec![one.as_str()],
            _ => Vec::new(),
        };
        let mut roles: Vec<tacit_api::Role> = groups
            .iter()
            .filter_map(|g| self.settings.role_map.get(*g))
            .filter_map(|r| tacit_api::Role::from_name(r))
            .collect();
        roles.sort_by_key(|r| r.as_str());
        roles.dedup();
        roles
    }
}

#[cfg(test)]
mod tests;
