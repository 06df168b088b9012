//! The SQL store: [`SqlStore`], generic over its [`Backend`], and what its per-concern
//! modules share (parameter lists, conversions of the database's integers).
//!
//! The SQL itself is in the concern modules (`accounts`, `keys`, `mailbox`, `blobs`,
//! `provisioning`, `audit`), each an `impl<B: Backend> SqlStore<B>` block of ordinary
//! functions; the [`Store`] implementation at the bottom of this file only delegates to
//! them.

use crate::audit::{Anchor, AuditKey, Checkpoint, Entry, Event, Head};
use crate::store::{AccountId, BlobId, ChannelId};
use async_trait::async_trait;
use sqlx::Pool;
use tacit_api::{DeviceId, Envelope, PrekeyBundle, PrekeyCount, Timestamp, UploadKeysRequest};

use super::backend::{Backend, Param, Value};
use super::{
    AuditPruned, BatchOutcome, BlobRecord, ChannelAnswer, ChannelRecord, DeviceAuth, DeviceRecord,
    IdleDevice, KIND_KEM, KIND_X25519, Mailbox, NewBlob, NewDevice, NewMessage, Revocation,
    SecretHash, SendOutcome, SendRules, Store, StoreError, StoreStats,
};

/// The store over one database: a pool that writes and a pool that reads (for SQLite, a
/// single writer connection and several readers; for PostgreSQL, one pool for both).
#[derive(Debug)]
pub struct SqlStore<B: Backend> {
    pub(super) write: Pool<B>,
    pub(super) read: Pool<B>,
}

/// Longest `IN (...)` list used for one acknowledgement statement.
pub(crate) const ACK_CHUNK: usize = 256;

/// Bulk statements have a different text for every batch size, so they are not kept in
/// sqlx's prepared-statement cache (`persistent(false)`), where they would only evict the
/// fixed statements.
///
/// Most rows in one bulk statement (7 parameters per envelope row stays far below both
/// backends' parameter limits).
pub(crate) const ROWS_PER_STATEMENT: usize = 256;

/// Parameter `n` (1-based): `$n`, or `?` where the backend prefers positional parameters.
/// One statement must not mix the two forms (sqlx numbers `?` separately).
///
/// SQLite looks a numbered parameter's name up by a linear scan, so binding the hundreds of
/// parameters of a bulk statement costs quadratic time with `$n`; with `?` (bound in order
/// of appearance, which is how every bulk statement here is written) it does not.
pub(crate) fn param(n: usize, positional: bool) -> String {
    if positional {
        "?".to_owned()
    } else {
        format!("${n}")
    }
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` parameters.
pub(crate) fn placeholders(rows: usize, cols: usize, positional: bool) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&param(r * cols + c + 1, positional));
        }
        out.push(')');
    }
    out
}

/// The condition selecting `n` sent-message keys. SQLite (the backend with positional
/// parameters) answers a row-value `IN (VALUES …)` with a full scan, so it gets an OR of
/// primary-key probes; PostgreSQL plans a long OR slowly and the row-value `IN` well.
pub(crate) fn key_probes(n: usize, positional: bool) -> String {
    if !positional {
        return format!(
            "(account_id, device_id, client_message_id) IN (VALUES {})",
            placeholders(n, 3, false)
        );
    }
    (0..n)
        .map(|i| {
            format!(
                "(account_id = {} AND device_id = {} AND client_message_id = {})",
                param(3 * i + 1, positional),
                param(3 * i + 2, positional),
                param(3 * i + 3, positional)
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Whether an error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `u64` ids and counts to the database's `i64`.
pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(what))
}

/// The database's `i64` counts and ids to `u64`.
pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(what))
}

/// The database's `i64` device numbers to [`DeviceId`].
pub(crate) fn to_device(v: i64) -> Result<DeviceId, StoreError> {
    u32::try_from(v)
        .map(DeviceId)
        .map_err(|_| StoreError::Corrupt("device_id"))
}

/// The database's hash bytes to a [`SecretHash`].
pub(crate) fn to_hash(v: Vec<u8>) -> Result<SecretHash, StoreError> {
    <[u8; 32]>::try_from(v)
        .map(SecretHash::from_bytes)
        .map_err(|_| StoreError::Corrupt("credential_hash"))
}

/// The store as a whole: migrations, health, totals.
impl<B> SqlStore<B>
where
    B: Backend,
    for<'c> &'c mut B::Connection: sqlx::Executor<'c, Database = B>,
    for<'q> B::Arguments<'q>: sqlx::IntoArguments<'q, B>,
    usize: sqlx::ColumnIndex<B::Row>,
    i64: Value<B>,
    Option<i64>: Value<B>,
    String: Value<B>,
    Vec<u8>: Value<B>,
    for<'q> &'q str: Param<'q, B>,
    for<'q> &'q [u8]: Param<'q, B>,
    for<'q> Option<&'q str>: Param<'q, B>,
{
    async fn probe_write(&self, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO write_probe (id, probed_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let envelopes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes")
            .fetch_one(&self.read)
            .await?;
        let max_depth: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM envelopes \
             GROUP BY account_id, device_id) t",
        )
        .fetch_one(&self.read)
        .await?;
        let keys: Vec<(i64, i64)> =
            sqlx::query_as("SELECT kind, COUNT(*) FROM one_time_prekeys GROUP BY kind")
                .fetch_all(&self.read)
                .await?;
        let devices: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices")
            .fetch_one(&self.read)
            .await?;
        let bodies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_bodies")
            .fetch_one(&self.read)
            .await?;
        let mut stats = StoreStats {
            envelopes: to_u64(envelopes, "count")?,
            max_mailbox_depth: to_u64(max_depth.unwrap_or(0), "count")?,
            devices: to_u64(devices, "count")?,
            message_bodies: to_u64(bodies, "count")?,
            ..Default::default()
        };
        for (kind, n) in keys {
            let n = to_u64(n, "count")?;
            match kind {
                KIND_X25519 => stats.one_time_prekeys = n,
                KIND_KEM => stats.one_time_kem_prekeys = n,
                _ => return Err(StoreError::Corrupt("kind")),
            }
        }
        // Devices at or above the low-water mark, per kind; the others (also those with
        // none at all) are low.
        let stocked: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT kind, COUNT(*) FROM (SELECT kind FROM one_time_prekeys \
             GROUP BY account_id, device_id, kind HAVING COUNT(*) >= $1) t GROUP BY kind",
        )
        .bind(i64::try_from(tacit_api::PREKEY_LOW_WATER).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        let (mut x25519, mut kem) = (0, 0);
        for (kind, n) in stocked {
            let n = to_u64(n, "count")?;
            match kind {
                KIND_X25519 => x25519 = n,
                KIND_KEM => kem = n,
                _ => return Err(StoreError::Corrupt("kind")),
            }
        }
        stats.devices_low_one_time_prekeys = stats.devices.saturating_sub(x25519);
        stats.devices_low_one_time_kem_prekeys = stats.devices.saturating_sub(kem);
        Ok(stats)
    }
}

#[async_trait]
impl<B> Store for SqlStore<B>
where
    B: Backend,
    for<'c> &'c mut B::Connection: sqlx::Executor<'c, Database = B>,
    for<'q> B::Arguments<'q>: sqlx::IntoArguments<'q, B>,
    usize: sqlx::ColumnIndex<B::Row>,
    i64: Value<B>,
    Option<i64>: Value<B>,
    String: Value<B>,
    Vec<u8>: Value<B>,
    for<'q> &'q str: Param<'q, B>,
    for<'q> &'q [u8]: Param<'q, B>,
    for<'q> Option<&'q str>: Param<'q, B>,
{
    async fn migrate(&self) -> Result<(), StoreError> {
        B::migrate(&self.write).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn create_invite(
        &self,
        token_hash: SecretHash,
        expires_at: Option<Timestamp>,
        max_uses: u32,
        now: Timestamp,
        audit: &Event,
    ) -> Result<(), StoreError> {
        self.create_invite(token_hash, expires_at, max_uses, now, audit)
            .await
    }

    async fn invites(&self) -> Result<Vec<tacit_api::InviteInfo>, StoreError> {
        self.invites().await
    }

    async fn revoke_invite(
        &self,
        token_hash: SecretHash,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        self.revoke_invite(token_hash, now, audit).await
    }

    async fn grant_role(
        &self,
        account: AccountId,
        role: tacit_api::Role,
        grant: bool,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        self.grant_role(account, role, grant, now, audit).await
    }

    async fn roles(&self, account: AccountId) -> Result<Vec<tacit_api::Role>, StoreError> {
        self.roles(account).await
    }

    async fn set_disabled(
        &self,
        account: AccountId,
        disabled: bool,
        now: Timestamp,
        audit: &Event,
    ) -> Result<Option<Vec<DeviceId>>, StoreError> {
        self.set_disabled(account, disabled, now, audit).await
    }

    async fn set_quota(
        &self,
        account: AccountId,
        quota: &tacit_api::SetQuotaRequest,
        now: Timestamp,
        audit: &Event,
    ) -> Result<(), StoreError> {
        self.set_quota(account, quota, now, audit).await
    }

    async fn admin_users(
        &self,
        search: Option<&str>,
        exact: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<tacit_api::AdminUser>, StoreError> {
        self.admin_users(search, exact, after, limit).await
    }

    async fn touch_devices(&self, seen: &[(Mailbox, Timestamp)]) -> Result<(), StoreError> {
        self.touch_devices(seen).await
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.revocations_after(after, limit).await
    }

    async fn last_revocation(&self) -> Result<i64, StoreError> {
        self.last_revocation().await
    }

    async fn create_account(
        &self,
        username: &str,
        invite: Option<SecretHash>,
        device: NewDevice,
        now: Timestamp,
        audit: &Event,
    ) -> Result<AccountId, StoreError> {
        Self::create_account(self, username, invite, device, now, audit).await
    }

    async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u32,
        now: Timestamp,
        audit: &Event,
    ) -> Result<DeviceId, StoreError> {
        Self::add_device(self, account, device, max_devices, now, audit).await
    }

    async fn create_oidc_account(
        &self,
        username: &str,
        device: NewDevice,
        login: &super::OidcLogin,
        now: Timestamp,
        audit: &Event,
    ) -> Result<AccountId, StoreError> {
        Self::create_oidc_account(self, username, device, login, now, audit).await
    }

    async fn add_oidc_device(
        &self,
        device: NewDevice,
        login: &super::OidcLogin,
        max_devices: u32,
        replace: Option<&Event>,
        now: Timestamp,
        audit: &Event,
    ) -> Result<super::OidcDeviceAdded, StoreError> {
        Self::add_oidc_device(self, device, login, max_devices, replace, now, audit).await
    }

    async fn oidc_account(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<(AccountId, String)>, StoreError> {
        Self::oidc_account(self, issuer, subject).await
    }

    async fn oidc_session_devices(
        &self,
        issuer: &str,
        sid: &str,
    ) -> Result<Vec<(AccountId, String, DeviceId)>, StoreError> {
        Self::oidc_session_devices(self, issuer, sid).await
    }

    async fn use_oidc_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        Self::use_oidc_token(self, token_hash, expires_at).await
    }

    async fn scim_users(
        &self,
        username: Option<&str>,
        external_id: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<(u64, Vec<super::ScimUser>), StoreError> {
        Self::scim_users(self, username, external_id, offset, limit).await
    }

    async fn scim_user(
        &self,
        id: Option<&str>,
        username: Option<&str>,
    ) -> Result<Option<super::ScimUser>, StoreError> {
        Self::scim_user(self, id, username).await
    }

    async fn create_scim_user(
        &self,
        user: &super::ScimUser,
        audit: &Event,
    ) -> Result<(), StoreError> {
        Self::create_scim_user(self, user, audit).await
    }

    async fn update_scim_user(
        &self,
        user: &super::ScimUser,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        Self::update_scim_user(self, user, audit).await
    }

    async fn delete_scim_user(
        &self,
        id: &str,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        Self::delete_scim_user(self, id, now, audit).await
    }

    async fn remove_device(
        &self,
        mailbox: Mailbox,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        Self::remove_device(self, mailbox, now, audit).await
    }

    async fn delete_account(
        &self,
        account: AccountId,
        now: Timestamp,
        audit: &Event,
    ) -> Result<Vec<DeviceId>, StoreError> {
        Self::delete_account(self, account, now, audit).await
    }

    async fn create_channel(
        &self,
        id: &ChannelId,
        public_key: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        Self::create_channel(self, id, public_key, now, expires_at).await
    }

    async fn channel(
        &self,
        id: &ChannelId,
        now: Timestamp,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        Self::channel(self, id, now).await
    }

    async fn answer_channel(
        &self,
        id: &ChannelId,
        account: AccountId,
        token_hash: SecretHash,
        message: &[u8],
        now: Timestamp,
    ) -> Result<ChannelAnswer, StoreError> {
        Self::answer_channel(self, id, account, token_hash, message, now).await
    }

    async fn link_device(
        &self,
        id: &ChannelId,
        token_hash: SecretHash,
        device: NewDevice,
        max_devices: u32,
        now: Timestamp,
        audit: &Event,
    ) -> Result<Option<(AccountId, DeviceId)>, StoreError> {
        Self::link_device(self, id, token_hash, device, max_devices, now, audit).await
    }

    async fn device_auth(&self, mailbox: Mailbox) -> Result<Option<DeviceAuth>, StoreError> {
        Self::device_auth(self, mailbox).await
    }

    async fn account_id(&self, username: &str) -> Result<Option<AccountId>, StoreError> {
        Self::account_id(self, username).await
    }

    async fn devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError> {
        Self::devices(self, account).await
    }

    async fn upload_keys(
        &self,
        mailbox: Mailbox,
        keys: &UploadKeysRequest,
    ) -> Result<(), StoreError> {
        Self::upload_keys(self, mailbox, keys).await
    }

    async fn prekey_count(&self, mailbox: Mailbox) -> Result<PrekeyCount, StoreError> {
        Self::prekey_count(self, mailbox).await
    }

    async fn claim_bundle(&self, mailbox: Mailbox) -> Result<Option<PrekeyBundle>, StoreError> {
        Self::claim_bundle(self, mailbox).await
    }

    async fn store_message(
        &self,
        message: NewMessage,
        rules: &dyn SendRules,
    ) -> Result<SendOutcome, StoreError> {
        Self::store_message(self, message, rules).await
    }

    async fn write_batch(
        &self,
        messages: &[NewMessage],
        acks: &[(Mailbox, Vec<u64>)],
        rules: &dyn SendRules,
    ) -> Result<BatchOutcome, StoreError> {
        Self::write_batch(self, messages, acks, rules).await
    }

    async fn mailbox(
        &self,
        mailbox: Mailbox,
        after: u64,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, StoreError> {
        Self::mailbox(self, mailbox, after, limit, now).await
    }

    async fn ack(&self, mailbox: Mailbox, ids: &[u64]) -> Result<u64, StoreError> {
        Self::ack(self, mailbox, ids).await
    }

    async fn purge_expired(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError> {
        Self::purge_expired(self, now, limit).await
    }

    async fn idle_devices(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<IdleDevice>, StoreError> {
        Self::idle_devices(self, before, limit).await
    }

    async fn after_restore(&self, audit: &Event, now: Timestamp) -> Result<u64, StoreError> {
        Self::after_restore(self, audit, now).await
    }

    async fn create_blob(&self, blob: &NewBlob, quota: u64) -> Result<(), StoreError> {
        Self::create_blob(self, blob, quota).await
    }

    async fn blob(&self, id: BlobId, now: Timestamp) -> Result<Option<BlobRecord>, StoreError> {
        Self::blob(self, id, now).await
    }

    async fn delete_blob(&self, id: BlobId, account: AccountId) -> Result<bool, StoreError> {
        Self::delete_blob(self, id, account).await
    }

    async fn expired_blobs(&self, now: Timestamp, limit: u32) -> Result<Vec<BlobId>, StoreError> {
        Self::expired_blobs(self, now, limit).await
    }

    async fn delete_blob_records(&self, ids: &[BlobId]) -> Result<(), StoreError> {
        Self::delete_blob_records(self, ids).await
    }

    async fn delete_account_blobs(&self, account: AccountId) -> Result<Vec<BlobId>, StoreError> {
        Self::delete_account_blobs(self, account).await
    }

    async fn append_audit(&self, event: &Event, now: Timestamp) -> Result<Entry, StoreError> {
        Self::append_audit(self, event, now).await
    }

    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<Entry>, StoreError> {
        Self::audit_entries(self, after, limit).await
    }

    async fn audit_head(&self) -> Result<Head, StoreError> {
        Self::audit_head(self).await
    }

    async fn audit_anchor(&self) -> Result<Anchor, StoreError> {
        Self::audit_anchor(self).await
    }

    async fn prune_audit(
        &self,
        before_ms: i64,
        limit: u32,
        key: &AuditKey,
        audit: &Event,
        now: Timestamp,
    ) -> Result<Option<AuditPruned>, StoreError> {
        Self::prune_audit(self, before_ms, limit, key, audit, now).await
    }

    async fn put_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        audit: &Event,
        now: Timestamp,
    ) -> Result<Entry, StoreError> {
        Self::put_checkpoint(self, checkpoint, audit, now).await
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Self::last_checkpoint(self).await
    }

    async fn try_job_lock(&self, job: super::Job) -> Result<Option<super::JobLock>, StoreError> {
        B::try_job_lock(&self.write, job.key()).await
    }

    async fn probe_write(&self, now: Timestamp) -> Result<(), StoreError> {
        Self::probe_write(self, now).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Self::stats(self).await
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        B::maintain(&self.read).await
    }
}
