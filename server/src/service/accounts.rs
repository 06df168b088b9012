//! Accounts, invites and devices.

use crate::store::AccountId;
use tacit_api::{
    AddDeviceRequest, AddDeviceResponse, DeviceId, DeviceInfo, DeviceKeys, DeviceList,
    RegisterRequest, RegisterResponse,
};
use tracing::info;

use super::{AuthedDevice, Origin, Services, hash_secret, now, random_secret};
use crate::audit::Action;
use crate::error::ApiError;
use crate::store::{Mailbox, NewDevice, StoreError};

const MAX_DEVICE_NAME: usize = 64;
/// Longest invite token a request may carry (tokens the server makes are 43 characters).
const MAX_INVITE: usize = 128;

/// Usernames: 3 to 32 of `a-z 0-9 _ - .`.
pub(crate) fn validate_username(username: &str) -> Result<(), ApiError> {
    if tacit_api::is_username(username) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "username: {}",
            tacit_api::USERNAME_RULE
        )))
    }
}

/// The username an identity provider's claim gives ([`tacit_api::username_from_claim`],
/// the one rule the clients use too), or the username rules' error.
pub(crate) fn normalise_username(
    claim: &str,
    allowed_domains: &[String],
) -> Result<String, ApiError> {
    tacit_api::username_from_claim(claim, allowed_domains)
        .ok_or_else(|| ApiError::BadRequest(format!("username: {}", tacit_api::USERNAME_RULE)))
}

pub(crate) fn validate_device_name(name: Option<&str>) -> Result<(), ApiError> {
    match name {
        Some(n) if n.chars().count() > MAX_DEVICE_NAME || n.chars().any(char::is_control) => {
            Err(ApiError::BadRequest(
                "device_name: at most 64 characters, no control characters".into(),
            ))
        }
        _ => Ok(()),
    }
}

impl Services {
    /// Check sizes and counts of a device's initial key set.
    pub(crate) fn validate_device_keys(&self, keys: &DeviceKeys) -> Result<(), ApiError> {
        self.validate_key("keys.identity_key", keys.identity_key.len())?;
        self.validate_signed("keys.signed_prekey", &keys.signed_prekey)?;
        self.validate_signed("keys.kem_last_resort_prekey", &keys.kem_last_resort_prekey)?;
        self.validate_one_time(&keys.one_time_prekeys, &keys.one_time_kem_prekeys)
    }

    /// Create an account and its first device (audited).
    pub async fn register(
        &self,
        req: RegisterRequest,
        origin: Origin,
    ) -> Result<RegisterResponse, ApiError> {
        if req.id_token.is_some() {
            return self.register_oidc(req, origin).await;
        }
        if self.oidc_settings().is_some_and(|o| !o.invites) {
            return Err(ApiError::BadRequest(
                "this server registers only through its identity provider: send an id_token \
                 (see GET /v1/oidc/config)"
                    .into(),
            ));
        }
        validate_username(&req.username)?;
        validate_device_name(req.device_name.as_deref())?;
        self.validate_device_keys(&req.keys)?;
        self.scim_allows_registration(&req.username, false).await?;
        if req
            .invite
            .as_deref()
            .is_some_and(|t| t.chars().count() > MAX_INVITE)
        {
            return Err(ApiError::BadRequest(
                "invite: at most 128 characters".into(),
            ));
        }
        let invite = if self.config.open_registration {
            None
        } else {
            match req.invite.as_deref() {
                Some(token) if !token.is_empty() => Some(hash_secret(token.as_bytes())),
                _ => return Err(ApiError::InviteRequired),
            }
        };
        // The credential is made before the account id is known, so its secret is random
        // and the account number is filled in afterwards.
        let secret = random_secret()?;
        let device = NewDevice {
            name: req.device_name,
            credential_hash: hash_secret(&secret),
            keys: req.keys,
        };
        let audit = origin
            .event(Action::AccountRegister)
            .actor(&req.username)
            .target(&req.username);
        let account = self
            .store
            .create_account(&req.username, invite, device, now(), &audit)
            .await?;
        self.count_audited(Action::AccountRegister);
        info!(account = account.0, "account registered");
        Ok(RegisterResponse {
            device_id: DeviceId(1),
            credential: tacit_api::DeviceCredential {
                account: account.0,
                device: DeviceId(1),
                secret,
            },
        })
    }

    /// Add a device to the caller's account (audited).
    pub async fn add_device(
        &self,
        caller: &AuthedDevice,
        req: AddDeviceRequest,
        origin: Origin,
    ) -> Result<AddDeviceResponse, ApiError> {
        validate_device_name(req.device_name.as_deref())?;
        self.validate_device_keys(&req.keys)?;
        let account = caller.mailbox.account;
        let secret = random_secret()?;
        let device = NewDevice {
            name: req.device_name,
            credential_hash: hash_secret(&secret),
            keys: req.keys,
        };
        let audit = origin
            .event(Action::DeviceAdd)
            .actor(&caller.username)
            .target(&caller.username);
        let device_id = self
            .store
            .add_device(
                account,
                device,
                self.config.limits.max_devices_per_account,
                now(),
                &audit,
            )
            .await?;
        self.count_audited(Action::DeviceAdd);
        info!(account = account.0, device = device_id.0, "device added");
        Ok(AddDeviceResponse {
            device_id,
            credential: tacit_api::DeviceCredential {
                account: account.0,
                device: device_id,
                secret,
            },
        })
    }

    /// Remove a device of the caller's account: its credential stops working at once, its
    /// socket is closed and its mailbox and keys are deleted (audited).
    pub async fn remove_device(
        &self,
        caller: &AuthedDevice,
        device: DeviceId,
        origin: Origin,
    ) -> Result<(), ApiError> {
        let mailbox = Mailbox {
            account: caller.mailbox.account,
            device,
        };
        let audit = origin
            .event(Action::DeviceRemove)
            .actor(&caller.username)
            .target(&caller.username)
            .device(device.0);
        if !self.store.remove_device(mailbox, now(), &audit).await? {
            return Err(ApiError::NotFound("device"));
        }
        self.count_audited(Action::DeviceRemove);
        self.credentials
            .revoke(mailbox, super::credentials::Revoked::Removed);
        self.hub.revoke(mailbox);
        info!(
            account = mailbox.account.0,
            device = device.0,
            "device removed"
        );
        Ok(())
    }

    /// Delete the caller's whole account: every device's credential stops working at once,
    /// sockets close, keys and mailboxes are deleted and the username becomes free
    /// (audited).
    pub async fn delete_account(
        &self,
        caller: &AuthedDevice,
        origin: Origin,
    ) -> Result<(), ApiError> {
        let audit = origin
            .event(Action::AccountDelete)
            .actor(&caller.username)
            .target(&caller.username);
        self.delete_account_of(caller.mailbox.account, &caller.username, &audit)
            .await
    }

    /// Delete an account (see [`Self::delete_account`]), recording `audit`.
    pub(crate) async fn delete_account_of(
        &self,
        account: AccountId,
        username: &str,
        audit: &crate::audit::Event,
    ) -> Result<(), ApiError> {
        let devices = self.store.delete_account(account, now(), audit).await?;
        self.count_audited(Action::AccountDelete);
        for device in &devices {
            let mailbox = Mailbox {
                account,
                device: *device,
            };
            self.credentials
                .revoke(mailbox, super::credentials::Revoked::Removed);
            self.hub.revoke(mailbox);
        }
        self.forget_account_id(username);
        self.delete_account_blobs(account).await?;
        info!(
            account = account.0,
            devices = devices.len(),
            "account deleted"
        );
        Ok(())
    }

    /// The caller's own devices, with their names.
    pub async fn own_devices(&self, caller: &AuthedDevice) -> Result<DeviceList, ApiError> {
        self.device_list(caller.mailbox.account, caller.username.clone(), true)
            .await
    }

    /// Another user's devices, without names.
    pub async fn user_devices(&self, username: &str) -> Result<DeviceList, ApiError> {
        validate_username(username).map_err(|_| ApiError::NotFound("user"))?;
        let account = self.account_id(username).await?;
        let list = self
            .device_list(account, username.to_owned(), false)
            .await?;
        if !list.devices.is_empty() {
            return Ok(list);
        }
        // Every account has a device, so the cached id is of a deleted account.
        self.forget_account_id(username);
        let account = self.account_id(username).await?;
        self.device_list(account, username.to_owned(), false).await
    }

    async fn device_list(
        &self,
        account: AccountId,
        username: String,
        with_names: bool,
    ) -> Result<DeviceList, ApiError> {
        let devices = self.store.devices(account).await?;
        Ok(DeviceList {
            username,
            devices: devices
                .into_iter()
                .map(|d| DeviceInfo {
                    device_id: d.device_id,
                    name: if with_names { d.name } else { None },
                    created_at: d.created_at,
                    identity_key: d.identity_key.into(),
                })
                .collect(),
        })
    }

    /// Create a registration invite for one registration that never expires (audited);
    /// returns the token, which is stored only as a hash (and never in the audit log).
    pub async fn create_invite(&self, origin: Origin) -> Result<String, ApiError> {
        let audit = origin.event(Action::InviteCreate);
        let created = self.create_invite_with(None, 1, &audit).await?;
        Ok(created.token)
    }

    /// Create an invite admitting `max_uses` registrations until `expires_at` (audited).
    pub(crate) async fn create_invite_with(
        &self,
        expires_at: Option<tacit_api::Timestamp>,
        max_uses: u32,
        audit: &crate::audit::Event,
    ) -> Result<tacit_api::CreateInviteResponse, ApiError> {
        let secret = random_secret()?;
        let token: String = hex::encode(secret);
        let hash = hash_secret(token.as_bytes());
        let created_at = now();
        let audit = audit.clone().detail(crate::audit::Detail::Limit, max_uses);
        self.store
            .create_invite(hash, expires_at, max_uses, created_at, &audit)
            .await?;
        self.count_audited(Action::InviteCreate);
        Ok(tacit_api::CreateInviteResponse {
            token,
            invite: tacit_api::InviteInfo {
                id: hex::encode(hash.as_bytes()),
                created_at,
                expires_at,
                max_uses,
                uses: 0,
                revoked_at: None,
            },
        })
    }

    /// All invites, newest first (the tokens are not stored).
    pub async fn list_invites(&self) -> Result<Vec<tacit_api::InviteInfo>, StoreError> {
        self.store.invites().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["bob", "alice.smith", "a-b_c", "x12"] {
            validate_username(ok).unwrap();
        }
        for bad in ["", "ab", "Alice", "a b", "ümlaut", &"x".repeat(33)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }
}
