//! Administration: who may do it ([`Admin`], roles), and what an administrator does to
//! users, devices, roles, invites and quotas; the audit log for auditors; and how every
//! node learns of revocations made elsewhere.
//!
//! An administrator acts either through the API, from a device of an account holding the
//! `admin` role (`auditor` for the audit log), or on the server host (`tacit-server admin`,
//! which needs no role: whoever runs it can read the database anyway). Every change is
//! audited in its own transaction. Nothing here reads or writes content.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tacit_api::{
    AdminUser, AdminUserList, AuditPage, CreateInviteRequest, CreateInviteResponse, InviteList,
    Role, SetQuotaRequest, Timestamp,
};
use tracing::info;

use super::accounts::validate_username;
use super::credentials::Revoked;
use super::{AuthedDevice, Origin, Services, now};
use crate::audit::export::Record;
use crate::audit::{Action, Detail, Event};
use crate::error::ApiError;
use crate::store::{AccountId, Mailbox, RevocationKind, SecretHash, StoreError};

/// Most users or audit entries one page returns.
pub(crate) const MAX_PAGE: u32 = 1000;
/// Users or audit entries a page returns when the request does not say.
pub(crate) const DEFAULT_PAGE: u32 = 100;
/// Longest invite lifetime, in seconds (366 days).
pub(crate) const MAX_INVITE_SECS: u64 = 366 * 24 * 3600;
/// Most registrations one invite admits.
pub(crate) const MAX_INVITE_USES: u32 = 100_000;
/// Highest per-account device limit.
pub(crate) const MAX_DEVICES_QUOTA: u32 = 1000;
/// Revocations read per poll.
const REVOCATIONS_PER_POLL: u32 = 1000;
/// Most devices whose last authentication waits to be written.
const MAX_LAST_SEEN: usize = 100_000;

/// Who performs an administrative operation.
#[derive(Debug, Clone, Copy)]
pub enum Admin<'a> {
    /// `tacit-server admin ...` on the server host: no role needed.
    Host,
    /// A device, through the API: its account needs the role.
    Device {
        /// The authenticated device.
        caller: &'a AuthedDevice,
        /// Its address, when the listener knows it.
        source: Option<IpAddr>,
    },
    /// The company's identity provider: its SCIM client (with the SCIM bearer token) or a
    /// back-channel logout token it signed. No role needed: the server's operator
    /// configured the provider to be trusted with accounts.
    Idp {
        /// Recorded as `tacit.details.via`: `scim` or `oidc-logout`.
        via: &'static str,
        /// Its address, when the listener knows it.
        source: Option<IpAddr>,
    },
}

impl Admin<'_> {
    fn origin(self) -> Origin {
        match self {
            Self::Host => Origin::Host,
            Self::Device { source, .. } | Self::Idp { source, .. } => Origin::Client(source),
        }
    }

    /// A successful `action`'s event, with who did it.
    pub(super) fn event(self, action: Action) -> Event {
        let event = self.origin().event(action);
        match self {
            Self::Host => event,
            Self::Device { caller, .. } => event.actor(&caller.username),
            Self::Idp { via, .. } => event.detail(Detail::Via, via),
        }
    }
}

/// When devices last authenticated, kept in memory and written about once a minute in one
/// transaction, so that authentication itself writes nothing.
#[derive(Debug, Default)]
pub(crate) struct LastSeen {
    pending: Mutex<HashMap<Mailbox, Timestamp>>,
}

impl LastSeen {
    /// Note that `mailbox` authenticated now.
    pub(crate) fn saw(&self, mailbox: Mailbox) {
        let mut pending = self.lock();
        if pending.len() < MAX_LAST_SEEN || pending.contains_key(&mailbox) {
            pending.insert(mailbox, now());
        }
    }

    fn take(&self) -> Vec<(Mailbox, Timestamp)> {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Mailbox, Timestamp>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(ApiError::BadRequest(format!("limit: from 1 to {MAX_PAGE}"))),
    }
}

impl Services {
    /// Refuse unless the caller holds one of `roles` ([`ApiError::Forbidden`]).
    async fn require(&self, admin: Admin<'_>, roles: &[Role]) -> Result<(), ApiError> {
        let Admin::Device { caller, .. } = admin else {
            return Ok(());
        };
        let held = self.store.roles(caller.mailbox.account).await?;
        if held.iter().any(|role| roles.contains(role)) {
            Ok(())
        } else {
            self.metrics.admin_refused.inc();
            Err(ApiError::Forbidden(if roles.contains(&Role::Auditor) {
                "admin or auditor"
            } else {
                "admin"
            }))
        }
    }

    /// The live account of `username` (read from the database, never a cache: an
    /// administrator acts on what is there now).
    async fn admin_account(&self, username: &str) -> Result<AccountId, ApiError> {
        validate_username(username).map_err(|_| ApiError::NotFound("user"))?;
        self.store
            .account_id(username)
            .await?
            .ok_or(ApiError::NotFound("user"))
    }

    /// A page of users whose name contains `search`, after `after`, in name order.
    pub async fn admin_users(
        &self,
        admin: Admin<'_>,
        search: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<AdminUserList, ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        let limit = page_size(limit)?;
        if let Some(search) = search
            && (search.chars().count() > 32 || search.chars().any(char::is_control))
        {
            return Err(ApiError::BadRequest(
                "search: at most 32 characters, no control characters".into(),
            ));
        }
        if after.is_some_and(|a| a.chars().count() > 32) {
            return Err(ApiError::BadRequest("after: at most 32 characters".into()));
        }
        let users = self
            .store
            .admin_users(search.filter(|s| !s.is_empty()), None, after, limit)
            .await?;
        let next = (users.len() == limit as usize)
            .then(|| users.last().map(|u| u.username.clone()))
            .flatten();
        Ok(AdminUserList { users, next })
    }

    /// One user, with devices.
    pub async fn admin_user(
        &self,
        admin: Admin<'_>,
        username: &str,
    ) -> Result<AdminUser, ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        validate_username(username).map_err(|_| ApiError::NotFound("user"))?;
        self.store
            .admin_users(None, Some(username), None, 1)
            .await?
            .pop()
            .ok_or(ApiError::NotFound("user"))
    }

    /// Disable (`disabled`) or enable a user. Disabling revokes every device's
    /// credential and closes every socket of the account at once on this node (other
    /// nodes, and the server when this runs on the host, within a second through the
    /// revocations); the name stays taken. Returns whether anything changed.
    pub async fn set_user_disabled(
        &self,
        admin: Admin<'_>,
        username: &str,
        disabled: bool,
    ) -> Result<bool, ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        let account = self.admin_account(username).await?;
        let action = if disabled {
            Action::UserDisable
        } else {
            Action::UserEnable
        };
        let audit = admin.event(action).target(username);
        let Some(devices) = self
            .store
            .set_disabled(account, disabled, now(), &audit)
            .await?
        else {
            return Ok(false);
        };
        for device in devices {
            let mailbox = Mailbox { account, device };
            if disabled {
                self.credentials.revoke(mailbox, Revoked::Disabled);
                self.hub.revoke(mailbox);
            } else {
                self.credentials.restore(mailbox);
            }
        }
        self.count_audited(action);
        info!(account = account.0, disabled, "account disabled or enabled");
        Ok(true)
    }

    /// Remove one device of a user (not its last: delete the account instead).
    pub async fn admin_remove_device(
        &self,
        admin: Admin<'_>,
        username: &str,
        device: tacit_api::DeviceId,
    ) -> Result<(), ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        let account = self.admin_account(username).await?;
        let mailbox = Mailbox { account, device };
        let audit = admin
            .event(Action::DeviceRemove)
            .target(username)
            .device(device.0);
        if !self.store.remove_device(mailbox, now(), &audit).await? {
            return Err(ApiError::NotFound("device"));
        }
        self.credentials.revoke(mailbox, Revoked::Removed);
        self.hub.revoke(mailbox);
        self.count_audited(Action::DeviceRemove);
        info!(
            account = account.0,
            device = device.0,
            "device removed by an administrator"
        );
        Ok(())
    }

    /// Delete a user's account (for one who lost every device): the name is free again,
    /// and whoever registers it has a new identity, which contacts are told of.
    pub async fn admin_delete_user(
        &self,
        admin: Admin<'_>,
        username: &str,
    ) -> Result<(), ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        let account = self.admin_account(username).await?;
        let audit = admin.event(Action::AccountDelete).target(username);
        self.delete_account_of(account, username, &audit).await?;
        Ok(())
    }

    /// Grant (`grant`) or revoke a role. Returns whether anything changed.
    pub async fn set_role(
        &self,
        admin: Admin<'_>,
        username: &str,
        role: Role,
        grant: bool,
    ) -> Result<bool, ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        let account = self.admin_account(username).await?;
        let action = if grant {
            Action::RoleGrant
        } else {
            Action::RoleRevoke
        };
        let audit = admin
            .event(action)
            .target(username)
            .detail(Detail::Role, role.as_str());
        let changed = self
            .store
            .grant_role(account, role, grant, now(), &audit)
            .await
            .map_err(|e| match e {
                StoreError::AccountGone => ApiError::NotFound("user"),
                e => e.into(),
            })?;
        if changed {
            self.count_audited(action);
        }
        Ok(changed)
    }

    /// Set a user's own limits (an absent one returns to the server's).
    pub async fn set_quota(
        &self,
        admin: Admin<'_>,
        username: &str,
        quota: &SetQuotaRequest,
    ) -> Result<(), ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        if quota
            .max_devices
            .is_some_and(|m| !(1..=MAX_DEVICES_QUOTA).contains(&m))
        {
            return Err(ApiError::BadRequest(format!(
                "max_devices: from 1 to {MAX_DEVICES_QUOTA}"
            )));
        }
        if quota
            .blob_quota_bytes
            .is_some_and(|b| b > i64::MAX as u64 / 2)
        {
            return Err(ApiError::BadRequest(format!(
                "blob_quota_bytes: at most {}",
                i64::MAX as u64 / 2
            )));
        }
        let account = self.admin_account(username).await?;
        let show = |v: Option<String>| v.unwrap_or_else(|| "default".to_owned());
        let audit = admin.event(Action::QuotaSet).target(username).detail(
            Detail::Limit,
            format!(
                "max_devices={} blob_quota_bytes={}",
                show(quota.max_devices.map(|m| m.to_string())),
                show(quota.blob_quota_bytes.map(|b| b.to_string()))
            ),
        );
        self.store
            .set_quota(account, quota, now(), &audit)
            .await
            .map_err(|e| match e {
                StoreError::AccountGone => ApiError::NotFound("user"),
                e => e.into(),
            })?;
        self.count_audited(Action::QuotaSet);
        Ok(())
    }

    /// Create an invite with an expiry and a use count.
    pub async fn admin_create_invite(
        &self,
        admin: Admin<'_>,
        req: &CreateInviteRequest,
    ) -> Result<CreateInviteResponse, ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        let max_uses = req.max_uses.unwrap_or(1);
        if !(1..=MAX_INVITE_USES).contains(&max_uses) {
            return Err(ApiError::BadRequest(format!(
                "max_uses: from 1 to {MAX_INVITE_USES}"
            )));
        }
        let expires_at = match req.expires_in_secs {
            None => None,
            Some(secs @ 1..=MAX_INVITE_SECS) => {
                // At most 366 days in milliseconds: no overflow.
                Some(Timestamp(now().0.saturating_add(
                    i64::try_from(secs * 1000).unwrap_or(i64::MAX),
                )))
            }
            Some(_) => {
                return Err(ApiError::BadRequest(format!(
                    "expires_in_secs: from 1 to {MAX_INVITE_SECS}"
                )));
            }
        };
        let audit = admin.event(Action::InviteCreate);
        let created = self
            .create_invite_with(expires_at, max_uses, &audit)
            .await?;
        Ok(created)
    }

    /// Every invite, newest first.
    pub async fn admin_invites(&self, admin: Admin<'_>) -> Result<InviteList, ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        Ok(InviteList {
            invites: self.store.invites().await?,
        })
    }

    /// Revoke an invite by its id (the SHA-256 of its token, in hex).
    pub async fn admin_revoke_invite(&self, admin: Admin<'_>, id: &str) -> Result<(), ApiError> {
        self.require(admin, &[Role::Admin]).await?;
        let hash: [u8; 32] = hex::decode(id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(ApiError::NotFound("invite"))?;
        let audit = admin.event(Action::InviteRevoke);
        if !self
            .store
            .revoke_invite(SecretHash::from_bytes(hash), now(), &audit)
            .await?
        {
            return Err(ApiError::NotFound("invite"));
        }
        self.count_audited(Action::InviteRevoke);
        Ok(())
    }

    /// A page of audit entries after `after`, as ECS records, for an auditor or an admin;
    /// the read itself is audited (`audit-export`).
    pub async fn audit_page(
        &self,
        admin: Admin<'_>,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<AuditPage, ApiError> {
        self.require(admin, &[Role::Admin, Role::Auditor]).await?;
        let limit = page_size(limit)?;
        let entries = self.store.audit_entries(after.unwrap_or(0), limit).await?;
        let mut event = admin
            .event(Action::AuditExport)
            .detail(Detail::Count, entries.len());
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            event = event
                .detail(Detail::FromSeq, first.seq)
                .detail(Detail::ToSeq, last.seq);
        }
        self.store.append_audit(&event, now()).await?;
        self.count_audited(Action::AuditExport);
        let next = (entries.len() == limit as usize)
            .then(|| entries.last().map(|e| e.seq))
            .flatten();
        let entries = entries
            .iter()
            .map(|entry| serde_json::to_value(Record::of(entry)))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                tracing::error!(error = %e, "an audit record did not serialize");
                ApiError::Unavailable
            })?;
        Ok(AuditPage { entries, next })
    }

    /// Apply the revocations recorded since the last call (by this node, another node or
    /// `tacit-server admin`): drop cached credentials, close sockets, forget revocations of
    /// enabled accounts. The first call only notes where the record ends (this node's
    /// caches start empty). Called a few times a second.
    pub async fn apply_revocations(&self) -> Result<usize, StoreError> {
        let mut seen = self.revocations_seen.lock().await;
        let Some(mut after) = *seen else {
            *seen = Some(self.store.last_revocation().await?);
            return Ok(0);
        };
        let mut applied = 0;
        loop {
            let page = self
                .store
                .revocations_after(after, REVOCATIONS_PER_POLL)
                .await?;
            for r in &page {
                match r.kind {
                    RevocationKind::Revoke => {
                        self.credentials.revoke(r.mailbox, Revoked::Removed);
                        self.hub.revoke(r.mailbox);
                    }
                    RevocationKind::Disable => {
                        self.credentials.revoke(r.mailbox, Revoked::Disabled);
                        self.hub.revoke(r.mailbox);
                    }
                    RevocationKind::Restore => self.credentials.restore(r.mailbox),
                }
                after = r.id;
                *seen = Some(after);
            }
            applied += page.len();
            if page.len() < REVOCATIONS_PER_POLL as usize {
                return Ok(applied);
            }
        }
    }

    /// Write the devices' last authentications noted since the last call.
    pub async fn flush_last_seen(&self) -> Result<(), StoreError> {
        let seen = self.last_seen.take();
        if seen.is_empty() {
            return Ok(());
        }
        self.store.touch_devices(&seen).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_keeps_the_latest_time_and_stays_bounded() {
        let seen = LastSeen::default();
        let mb = |d: u32| Mailbox {
            account: AccountId(1),
            device: tacit_api::DeviceId(d),
        };
        seen.saw(mb(1));
        seen.saw(mb(1));
        seen.saw(mb(2));
        let mut taken = seen.take();
        taken.sort_by_key(|(m, _)| *m);
        assert_eq!(
            taken.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            [mb(1), mb(2)]
        );
        assert!(seen.take().is_empty(), "taking empties it");
        for d in 0..u32::try_from(MAX_LAST_SEEN).unwrap() + 10 {
            seen.saw(mb(d));
        }
        assert_eq!(seen.take().len(), MAX_LAST_SEEN);
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_size(Some(MAX_PAGE)).unwrap(), MAX_PAGE);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_PAGE + 1)).is_err());
    }
}
