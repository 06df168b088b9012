//! Sign-in with the company's identity provider: registration and device sign-in with an
//! ID token, the client's configuration, and back-channel logout. Every refused token is
//! audited (`oidc-token-refused` with its reason); the token itself never is.

use tacit_api::{
    DeviceCredential, ErrorCode, OidcConfig, RegisterRequest, RegisterResponse, SsoDeviceRequest,
    SsoDeviceResponse, Timestamp,
};
use tracing::{info, warn};

use super::accounts::{validate_device_name, validate_username};
use super::admin::Admin;
use super::{Origin, Services, hash_secret, now, random_secret};
use crate::audit::{Action, Detail, Event, Outcome};
use crate::config::{BackchannelLogout, OidcSettings};
use crate::error::ApiError;
use crate::oidc::{Kind, Refusal, Verified, VerifyError};
use crate::store::{Mailbox, NewDevice, OidcLogin, StoreError};

/// Why a logout token was refused (the answer is only `invalid_request`, as the spec says).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogoutError {
    /// The token is refused, or the request malformed.
    #[error("invalid logout request: {0}")]
    Invalid(String),
    /// The provider or the database is unreachable: the provider may retry (or, 404, the
    /// server has no identity provider).
    #[error(transparent)]
    Unavailable(ApiError),
}

/// A server without `[oidc]`: 404, as `GET /v1/oidc/config` answers.
fn no_provider() -> ApiError {
    ApiError::Status {
        code: ErrorCode::NotFound,
        message: "this server has no identity provider configured ([oidc]); register with an \
                  invite"
            .into(),
    }
}

fn unavailable(e: &impl std::fmt::Display) -> ApiError {
    ApiError::Status {
        code: ErrorCode::Unavailable,
        message: format!("{e}; sign-in with the identity provider is unavailable, retry later"),
    }
}

impl Services {
    /// The `[oidc]` settings, when configured.
    pub(crate) fn oidc_settings(&self) -> Option<&OidcSettings> {
        self.oidc.as_deref().map(crate::oidc::Oidc::settings)
    }

    /// The identity provider, when configured.
    #[must_use]
    pub fn oidc(&self) -> Option<std::sync::Arc<crate::oidc::Oidc>> {
        self.oidc.clone()
    }

    /// `GET /v1/oidc/config`.
    pub fn oidc_config(&self) -> Result<OidcConfig, ApiError> {
        let s = self
            .oidc_settings()
            .ok_or(ApiError::NotFound("identity provider"))?;
        Ok(OidcConfig {
            issuer: s.issuer.clone(),
            client_id: s.client_id.clone(),
            scopes: s.scopes.clone(),
            username_claim: s.username_claim.clone(),
            allowed_domains: s.allowed_domains.clone(),
            invites: s.invites,
        })
    }

    /// Audit a refused token and turn the refusal into the client's error.
    async fn token_refused(&self, origin: Origin, reason: Refusal, message: String) -> ApiError {
        let mut event = origin.event(Action::OidcTokenRefused);
        event.outcome = Outcome::Failure;
        let event = event.detail(Detail::Reason, reason.as_str());
        if let Err(e) = self.audit_event(&event).await {
            warn!(error = %e, "recording a refused ID token failed");
        }
        match reason {
            Refusal::Replayed => ApiError::IdTokenReplayed,
            _ => ApiError::IdTokenRefused(format!("{message} ({})", reason.as_str())),
        }
    }

    /// Verify an ID token, auditing a refusal.
    async fn checked(
        &self,
        token: &str,
        kind: Kind,
        origin: Origin,
    ) -> Result<(std::sync::Arc<crate::oidc::Oidc>, Verified), ApiError> {
        let Some(oidc) = self.oidc.clone() else {
            return Err(no_provider());
        };
        match oidc.verify(token, kind, now().0 / 1000).await {
            Ok(verified) => Ok((oidc, verified)),
            Err(VerifyError::Refused { reason, message }) => {
                Err(self.token_refused(origin, reason, message).await)
            }
            Err(VerifyError::Unavailable(e)) => Err(unavailable(&e)),
        }
    }

    /// The login a verified ID token makes, with the roles its groups give.
    fn login(oidc: &crate::oidc::Oidc, token: &Verified) -> Result<OidcLogin, ApiError> {
        let subject = token
            .subject
            .clone()
            .ok_or_else(|| ApiError::IdTokenRefused("sub is missing (malformed)".into()))?;
        // Granted at registration and at every device added through the provider; never
        // revoked by it (docs/SSO.md): an administrator revokes a role.
        let roles: Vec<(tacit_api::Role, bool)> =
            oidc.roles(token).into_iter().map(|r| (r, true)).collect();
        let settings = oidc.settings();
        // Kept past the token's expiry by the leeway, so that it stays refused while
        // it could still be accepted.
        let keep_secs = token
            .expires_at
            .saturating_add(i64::try_from(settings.clock_skew_secs).unwrap_or(0));
        Ok(OidcLogin {
            issuer: token.issuer.clone(),
            subject,
            sid: token.sid.clone(),
            token_hash: token.replay_key,
            token_expires_at: Timestamp(keep_secs.saturating_mul(1000)),
            roles,
        })
    }

    /// `POST /v1/accounts` with an `id_token`: register the name the token's username
    /// claim gives, bound to the token's identity.
    pub(crate) async fn register_oidc(
        &self,
        req: RegisterRequest,
        origin: Origin,
    ) -> Result<RegisterResponse, ApiError> {
        if self.oidc.is_none() {
            return Err(no_provider());
        }
        if req.invite.is_some() {
            return Err(ApiError::BadRequest(
                "send either an invite or an id_token, not both".into(),
            ));
        }
        let token = req.id_token.as_deref().unwrap_or_default();
        validate_device_name(req.device_name.as_deref())?;
        self.validate_device_keys(&req.keys)?;
        let (oidc, verified) = self.checked(token, Kind::IdToken, origin).await?;
        let username = match oidc.username(&verified) {
            Ok(name) => name,
            Err(VerifyError::Refused { reason, message }) => {
                return Err(self.token_refused(origin, reason, message).await);
            }
            Err(VerifyError::Unavailable(e)) => return Err(unavailable(&e)),
        };
        if req.username != username {
            validate_username(&req.username)?;
            return Err(self
                .token_refused(
                    origin,
                    Refusal::UsernameMismatch,
                    format!("the identity provider's account gives the username {username:?}"),
                )
                .await);
        }
        self.scim_allows_registration(&username, true).await?;
        let login = Self::login(&oidc, &verified)?;
        let secret = random_secret()?;
        let device = NewDevice {
            name: req.device_name,
            credential_hash: hash_secret(&secret),
            keys: req.keys,
        };
        let mut audit = origin
            .event(Action::AccountRegister)
            .actor(&username)
            .target(&username)
            .detail(Detail::Via, "oidc");
        let roles: Vec<&str> = login
            .roles
            .iter()
            .filter(|(_, g)| *g)
            .map(|(r, _)| r.as_str())
            .collect();
        if !roles.is_empty() {
            audit = audit.detail(Detail::Role, roles.join(","));
        }
        let account = match self
            .store
            .create_oidc_account(&username, device, &login, now(), &audit)
            .await
        {
            Ok(account) => account,
            Err(StoreError::TokenReplayed) => {
                return Err(self
                    .token_refused(origin, Refusal::Replayed, String::new())
                    .await);
            }
            Err(StoreError::IdentityBound(name)) => {
                return Err(ApiError::Status {
                    code: ErrorCode::UsernameTaken,
                    message: if name.is_empty() {
                        "this identity already has an account: add a device with \
                         POST /v1/devices/sso instead"
                            .to_owned()
                    } else {
                        format!(
                            "this identity already has the account {name:?}: add a device \
                             with POST /v1/devices/sso instead"
                        )
                    },
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.count_audited(Action::AccountRegister);
        info!(
            account = account.0,
            "account registered through the identity provider"
        );
        Ok(RegisterResponse {
            device_id: tacit_api::DeviceId(1),
            credential: DeviceCredential {
                account: account.0,
                device: tacit_api::DeviceId(1),
                secret,
            },
        })
    }

    /// `POST /v1/devices/sso`: add a device to the account bound to the token's identity.
    pub async fn sso_add_device(
        &self,
        req: SsoDeviceRequest,
        origin: Origin,
    ) -> Result<SsoDeviceResponse, ApiError> {
        validate_device_name(req.device_name.as_deref())?;
        self.validate_device_keys(&req.keys)?;
        let (oidc, verified) = self.checked(&req.id_token, Kind::IdToken, origin).await?;
        let login = Self::login(&oidc, &verified)?;
        let secret = random_secret()?;
        let device = NewDevice {
            name: req.device_name,
            credential_hash: hash_secret(&secret),
            keys: req.keys,
        };
        let audit = origin.event(Action::DeviceAdd).detail(Detail::Via, "oidc");
        let removal = origin
            .event(Action::DeviceRemove)
            .detail(Detail::Via, "oidc");
        let added = match self
            .store
            .add_oidc_device(
                device,
                &login,
                self.config.limits.max_devices_per_account,
                req.replace_devices.then_some(&removal),
                now(),
                &audit,
            )
            .await
        {
            Ok(added) => added,
            Err(StoreError::OtherDevices(_)) => {
                return Err(ApiError::Conflict(
                    "the account has other devices, and a device signed in through the identity \
                     provider replaces them all (it cannot receive the account identity): link \
                     from one of them instead, or ask again with replace_devices to sign them out",
                ));
            }
            Err(StoreError::TokenReplayed) => {
                return Err(self
                    .token_refused(origin, Refusal::Replayed, String::new())
                    .await);
            }
            Err(StoreError::IdentityUnbound) => {
                return Err(self
                    .token_refused(
                        origin,
                        Refusal::NotBound,
                        "no account is bound to this identity: register first".to_owned(),
                    )
                    .await);
            }
            Err(StoreError::AccountDisabled) => return Err(ApiError::AccountDisabled),
            Err(e) => return Err(e.into()),
        };
        let account = added.account;
        self.count_audited(Action::DeviceAdd);
        for device in &added.replaced {
            self.count_audited(Action::DeviceRemove);
            let mailbox = Mailbox {
                account,
                device: *device,
            };
            self.credentials
                .revoke(mailbox, super::credentials::Revoked::Removed);
            self.hub.revoke(mailbox);
        }
        info!(
            account = account.0,
            device = added.device.0,
            replaced = added.replaced.len(),
            "device signed in through the identity provider"
        );
        Ok(SsoDeviceResponse {
            username: added.username,
            device_id: added.device,
            credential: DeviceCredential {
                account: account.0,
                device: added.device,
                secret,
            },
            replaced_devices: added.replaced,
        })
    }

    /// `POST /v1/oidc/backchannel-logout`: verify the logout token, then disable the user
    /// or remove the session's devices, as configured. Returns how many devices it
    /// reached.
    pub async fn backchannel_logout(
        &self,
        token: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<usize, LogoutError> {
        let origin = Origin::Client(source);
        let Some(oidc) = self.oidc.clone() else {
            return Err(LogoutError::Unavailable(no_provider()));
        };
        let verified = match oidc.verify(token, Kind::Logout, now().0 / 1000).await {
            Ok(v) => v,
            Err(VerifyError::Refused { reason, message }) => {
                let e = self.token_refused(origin, reason, message).await;
                return Err(LogoutError::Invalid(e.to_string()));
            }
            Err(VerifyError::Unavailable(e)) => {
                return Err(LogoutError::Unavailable(unavailable(&e)));
            }
        };
        let keep = Timestamp(
            verified
                .expires_at
                .saturating_add(i64::try_from(oidc.settings().clock_skew_secs).unwrap_or(0))
                .saturating_mul(1000),
        );
        let fresh = self
            .store
            .use_oidc_token(&verified.replay_key, keep)
            .await
            .map_err(|e| LogoutError::Unavailable(e.into()))?;
        if !fresh {
            let e = self
                .token_refused(origin, Refusal::Replayed, String::new())
                .await;
            return Err(LogoutError::Invalid(e.to_string()));
        }
        // Who: the account bound to sub, or those with devices in the session sid.
        let mut targets: Vec<(
            crate::store::AccountId,
            String,
            Option<Vec<tacit_api::DeviceId>>,
        )> = Vec::new();
        if let Some(sub) = &verified.subject
            && let Some((account, name)) = self
                .store
                .oidc_account(&verified.issuer, sub)
                .await
                .map_err(|e| LogoutError::Unavailable(e.into()))?
        {
            targets.push((account, name, None));
        }
        if let Some(sid) = &verified.sid {
            let devices = self
                .store
                .oidc_session_devices(&verified.issuer, sid)
                .await
                .map_err(|e| LogoutError::Unavailable(e.into()))?;
            let only: Option<crate::store::AccountId> = targets.first().map(|t| t.0);
            let mut by_account: Vec<(crate::store::AccountId, String, Vec<tacit_api::DeviceId>)> =
                Vec::new();
            for (account, name, device) in devices {
                // With both sub and sid, the session's devices of that account only.
                if only.is_some_and(|a| a != account) {
                    continue;
                }
                match by_account.iter_mut().find(|(a, _, _)| *a == account) {
                    Some((_, _, list)) => list.push(device),
                    None => by_account.push((account, name, vec![device])),
                }
            }
            if only.is_some() {
                // The account named by sub: only its devices in that session (none
                // may be; a disabling still applies to the account).
                for target in &mut targets {
                    target.2 = Some(Vec::new());
                }
                targets.retain(|t| !by_account.iter().any(|(a, _, _)| *a == t.0));
            }
            targets.extend(by_account.into_iter().map(|(a, n, d)| (a, n, Some(d))));
        }
        let admin = Admin::Idp {
            via: "oidc-logout",
            source,
        };
        let mut count = 0;
        for (account, username, devices) in targets {
            let reached = self
                .logout_account(admin, account, &username, devices, origin)
                .await
                .map_err(LogoutError::Unavailable)?;
            count += reached;
        }
        info!(devices = count, "back-channel logout");
        Ok(count)
    }

    /// Apply a logout to one account: disable it, or remove `devices` (every device when
    /// `None`; an account's last device cannot be removed, so then it is disabled).
    async fn logout_account(
        &self,
        admin: Admin<'_>,
        account: crate::store::AccountId,
        username: &str,
        devices: Option<Vec<tacit_api::DeviceId>>,
        origin: Origin,
    ) -> Result<usize, ApiError> {
        let all = self.store.devices(account).await?;
        let chosen: Vec<tacit_api::DeviceId> = match &devices {
            Some(list) => list.clone(),
            None => all.iter().map(|d| d.device_id).collect(),
        };
        let mode = self
            .oidc_settings()
            .map_or(BackchannelLogout::Disable, |s| s.backchannel_logout);
        let disable = mode == BackchannelLogout::Disable || chosen.len() >= all.len();
        let mut reached = 0;
        if disable {
            self.set_user_disabled(admin, username, true).await?;
            reached = all.len();
        } else {
            for device in &chosen {
                match self.admin_remove_device(admin, username, *device).await {
                    Ok(()) => reached += 1,
                    Err(ApiError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let event: Event = origin
            .event(Action::OidcLogout)
            .target(username)
            .detail(Detail::Via, "oidc-logout")
            .detail(Detail::Count, reached)
            .detail(
                Detail::Scope,
                if disable { "disable" } else { "remove-devices" },
            );
        if let Err(e) = self.audit_event(&event).await {
            warn!(error = %e, "recording a back-channel logout failed");
        }
        Ok(reached)
    }
}
