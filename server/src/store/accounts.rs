//! Invites, accounts and devices: creation, removal, deletion (the tombstone), and what
//! authentication and the device lists read.

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{
    DeviceAuth, DeviceRecord, IdleDevice, Mailbox, NewDevice, RevocationKind, SecretHash,
    StoreError,
};
use crate::audit::Event;
use crate::store::AccountId;

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
    pub(super) async fn create_invite(
        &self,
        token_hash: SecretHash,
        expires_at: Option<tacit_api::Timestamp>,
        max_uses: u32,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO invites (token_hash, created_at, expires_at, max_uses) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash.as_bytes().as_slice())
        .bind(now.0)
        .bind(expires_at.map(|t| t.0))
        .bind(i64::from(max_uses))
        .execute(&mut *tx)
        .await?;
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn create_account(
        &self,
        username: &str,
        invite: Option<SecretHash>,
        device: NewDevice,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<AccountId, StoreError> {
        let mut tx = self.write.begin().await?;
        if let Some(hash) = invite {
            // An invite admits up to `max_uses` registrations, until it expires or is
            // revoked.
            let done = sqlx::query(
                "UPDATE invites SET uses = uses + 1, used_at = COALESCE(used_at, $1) \
                 WHERE token_hash = $2 AND uses < max_uses AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $1)",
            )
            .bind(now.0)
            .bind(hash.as_bytes().as_slice())
            .execute(&mut *tx)
            .await?;
            if B::rows_affected(&done) != 1 {
                return Err(StoreError::InviteInvalid);
            }
        }
        let account: AccountId = match sqlx::query_scalar(
            "INSERT INTO accounts (username, created_at, next_device_id) \
             VALUES ($1, $2, 2) RETURNING id",
        )
        .bind(username)
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await
        {
            Ok(id) => id,
            Err(e) if sql::is_unique_violation(&e) => {
                return Err(StoreError::UsernameTaken);
            }
            Err(e) => return Err(e.into()),
        };
        Self::insert_device(&mut tx, account, 1, &device, now).await?;
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        Ok(account)
    }

    pub(super) async fn insert_device(
        conn: &mut B::Connection,
        account: AccountId,
        device_id: i64,
        device: &NewDevice,
        now: tacit_api::Timestamp,
    ) -> Result<(), StoreError> {
        let k = &device.keys;
        sqlx::query(
            "INSERT INTO devices (account_id, device_id, name, credential_hash, created_at, \
             identity_key, signed_prekey_id, signed_prekey, signed_prekey_sig, \
             kem_prekey_id, kem_prekey, kem_prekey_sig) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(account)
        .bind(device_id)
        .bind(device.name.as_deref())
        .bind(device.credential_hash.as_bytes().as_slice())
        .bind(now.0)
        .bind(k.identity_key.as_slice())
        .bind(i64::from(k.signed_prekey.id))
        .bind(k.signed_prekey.public_key.as_slice())
        .bind(k.signed_prekey.signature.as_slice())
        .bind(i64::from(k.kem_last_resort_prekey.id))
        .bind(k.kem_last_resort_prekey.public_key.as_slice())
        .bind(k.kem_last_resort_prekey.signature.as_slice())
        .execute(&mut *conn)
        .await?;
        Self::insert_one_time(
            conn,
            account,
            device_id,
            &k.one_time_prekeys,
            &k.one_time_kem_prekeys,
        )
        .await
    }

    pub(super) async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u32,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<tacit_api::DeviceId, StoreError> {
        let mut tx = self.write.begin().await?;
        let device_id = Self::add_device_in(&mut tx, account, &device, max_devices, now).await?;
        Self::append(&mut tx, &audit.clone().device(device_id.0), now.0).await?;
        tx.commit().await?;
        Ok(device_id)
    }

    pub(super) async fn add_device_in(
        conn: &mut B::Connection,
        account: AccountId,
        device: &NewDevice,
        max_devices: u32,
        now: tacit_api::Timestamp,
    ) -> Result<tacit_api::DeviceId, StoreError> {
        // Taking the next number first locks the account row, so that two concurrent
        // additions cannot both pass the count check.
        // A deleted account (its tombstone) takes no device: this waits for a
        // deletion under way and then finds the tombstone.
        // A disabled account takes no device either; the account's own limit (set by an
        // administrator) replaces the server's.
        let next: Option<(i64, Option<i64>)> = sqlx::query_as(
            "UPDATE accounts SET next_device_id = next_device_id + 1 \
             WHERE id = $1 AND username NOT LIKE '#deleted-%' AND disabled_at IS NULL \
             RETURNING next_device_id - 1, max_devices",
        )
        .bind(account)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((next, own_max)) = next else {
            return Err(StoreError::AccountGone);
        };
        let max_devices = own_max.unwrap_or(i64::from(max_devices));
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE account_id = $1")
            .bind(account)
            .fetch_one(&mut *conn)
            .await?;
        if count >= max_devices {
            return Err(StoreError::TooManyDevices);
        }
        let device_id = sql::to_device(next)?;
        Self::insert_device(conn, account, next, device, now).await?;
        Ok(device_id)
    }

    pub(super) async fn remove_device(
        &self,
        mailbox: Mailbox,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        // Lock the account row, so that two devices removing each other at once
        // cannot leave the account with none.
        sqlx::query("UPDATE accounts SET next_device_id = next_device_id WHERE id = $1")
            .bind(mailbox.account)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE account_id = $1")
            .bind(mailbox.account)
            .fetch_one(&mut *tx)
            .await?;
        // Keys and envelopes go with the device (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM devices WHERE account_id = $1 AND device_id = $2")
            .bind(mailbox.account)
            .bind(i64::from(mailbox.device.0))
            .execute(&mut *tx)
            .await?;
        if B::rows_affected(&done) == 1 && count <= 1 {
            // Dropping the transaction rolls the deletion back.
            return Err(StoreError::LastDevice);
        }
        let removed = B::rows_affected(&done) == 1;
        if removed {
            // A link channel the removed device answered would let whoever holds it link
            // a new device in: the account's answered channels go (a link under way on
            // another device of the account is started again).
            sqlx::query("DELETE FROM provisioning_channels WHERE account_id = $1")
                .bind(mailbox.account)
                .execute(&mut *tx)
                .await?;
            Self::record_revocations(
                &mut tx,
                mailbox.account,
                &[i64::from(mailbox.device.0)],
                RevocationKind::Revoke,
                now,
            )
            .await?;
            Self::append(&mut tx, audit, now.0).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    pub(super) async fn delete_account(
        &self,
        account: AccountId,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<Vec<tacit_api::DeviceId>, StoreError> {
        let mut tx = self.write.begin().await?;
        // The row stays as a tombstone under a name no user can pick (`#` is not
        // allowed in usernames), so that the account number is never reused: a
        // number names mailboxes and credentials, in caches too.
        // The tombstone first: it locks the account row, so that a device or blob
        // being added at the same time either committed before (and is deleted
        // here or by the blob deletion that follows) or waits and then finds the
        // account gone.
        sqlx::query(
            "UPDATE accounts SET username = '#deleted-' || id, disabled_at = NULL WHERE id = $1",
        )
        .bind(account)
        .execute(&mut *tx)
        .await?;
        let devices: Vec<i64> = sqlx::query_scalar(
            "SELECT device_id FROM devices WHERE account_id = $1 ORDER BY device_id",
        )
        .bind(account)
        .fetch_all(&mut *tx)
        .await?;
        // Keys and mailboxes go with the devices (ON DELETE CASCADE).
        for sql in [
            "DELETE FROM devices WHERE account_id = $1",
            "DELETE FROM oidc_identities WHERE account_id = $1",
            "DELETE FROM sent_messages WHERE account_id = $1",
            "DELETE FROM provisioning_channels WHERE account_id = $1",
            "DELETE FROM account_roles WHERE account_id = $1",
        ] {
            sqlx::query(sql).bind(account).execute(&mut *tx).await?;
        }
        Self::record_revocations(&mut tx, account, &devices, RevocationKind::Revoke, now).await?;
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        devices.into_iter().map(sql::to_device).collect()
    }

    pub(super) async fn device_auth(
        &self,
        mailbox: Mailbox,
    ) -> Result<Option<DeviceAuth>, StoreError> {
        let row: Option<(String, Vec<u8>, Option<i64>)> = sqlx::query_as(
            "SELECT a.username, d.credential_hash, a.disabled_at FROM devices d \
             JOIN accounts a ON a.id = d.account_id \
             WHERE d.account_id = $1 AND d.device_id = $2",
        )
        .bind(mailbox.account)
        .bind(i64::from(mailbox.device.0))
        .fetch_optional(&self.read)
        .await?;
        row.map(|(username, hash, disabled_at)| {
            Ok(DeviceAuth {
                username,
                credential_hash: sql::to_hash(hash)?,
                disabled: disabled_at.is_some(),
            })
        })
        .transpose()
    }

    pub(super) async fn account_id(&self, username: &str) -> Result<Option<AccountId>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub(super) async fn devices(
        &self,
        account: AccountId,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows: Vec<(i64, Option<String>, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT device_id, name, created_at, identity_key FROM devices \
             WHERE account_id = $1 ORDER BY device_id",
        )
        .bind(account)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(device_id, name, created_at, identity_key)| {
                Ok(DeviceRecord {
                    device_id: sql::to_device(device_id)?,
                    name,
                    created_at: tacit_api::Timestamp(created_at),
                    identity_key,
                })
            })
            .collect()
    }

    pub(super) async fn idle_devices(
        &self,
        before: tacit_api::Timestamp,
        limit: u32,
    ) -> Result<Vec<IdleDevice>, StoreError> {
        let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
            "SELECT d.account_id, d.device_id, a.username, \
             (SELECT COUNT(*) FROM devices o WHERE o.account_id = d.account_id \
              AND COALESCE(o.last_seen_at, o.created_at) > $1) \
             FROM devices d JOIN accounts a ON a.id = d.account_id \
             WHERE COALESCE(d.last_seen_at, d.created_at) <= $1 AND a.disabled_at IS NULL \
             ORDER BY d.account_id, d.device_id LIMIT $2",
        )
        .bind(before.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(account, device, username, active)| {
                Ok(IdleDevice {
                    mailbox: Mailbox {
                        account: AccountId(account),
                        device: sql::to_device(device)?,
                    },
                    username,
                    others_active: active > 0,
                })
            })
            .collect()
    }
}
