//! Public keys: a device's signed prekeys, its one-time prekeys, and claiming a bundle.

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{KIND_KEM, KIND_X25519, Mailbox, StoreError, signed};
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
    pub(super) async fn after_restore(
        &self,
        audit: &crate::audit::Event,
        now: tacit_api::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write.begin().await?;
        let gone = sqlx::query("DELETE FROM one_time_prekeys")
            .execute(&mut *tx)
            .await?;
        let gone = B::rows_affected(&gone);
        sqlx::query("UPDATE devices SET last_seen_at = $1")
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        let audit = audit.clone().detail(crate::audit::Detail::Count, gone);
        Self::append(&mut tx, &audit, now.0).await?;
        tx.commit().await?;
        Ok(gone)
    }

    pub(super) async fn insert_one_time(
        conn: &mut B::Connection,
        account: AccountId,
        device_id: i64,
        x25519: &[tacit_api::OneTimePrekey],
        kem: &[tacit_api::SignedPrekey],
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO one_time_prekeys \
             (account_id, device_id, kind, key_id, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (account_id, device_id, kind, key_id) \
             DO UPDATE SET public_key = excluded.public_key, signature = excluded.signature";
        for key in x25519 {
            sqlx::query(SQL)
                .bind(account)
                .bind(device_id)
                .bind(KIND_X25519)
                .bind(i64::from(key.id))
                .bind(key.public_key.as_slice())
                .bind(key.signature.as_slice())
                .execute(&mut *conn)
                .await?;
        }
        for key in kem {
            sqlx::query(SQL)
                .bind(account)
                .bind(device_id)
                .bind(KIND_KEM)
                .bind(i64::from(key.id))
                .bind(key.public_key.as_slice())
                .bind(key.signature.as_slice())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn upload_keys(
        &self,
        mailbox: Mailbox,
        keys: &tacit_api::UploadKeysRequest,
    ) -> Result<(), StoreError> {
        let account = mailbox.account;
        let device = i64::from(mailbox.device.0);
        let mut tx = self.write.begin().await?;
        if let Some(identity) = &keys.identity_key {
            sqlx::query(
                "UPDATE devices SET identity_key = $1 \
                 WHERE account_id = $2 AND device_id = $3",
            )
            .bind(identity.as_slice())
            .bind(account)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(k) = &keys.signed_prekey {
            sqlx::query(
                "UPDATE devices SET signed_prekey_id = $1, signed_prekey = $2, \
                 signed_prekey_sig = $3 WHERE account_id = $4 AND device_id = $5",
            )
            .bind(i64::from(k.id))
            .bind(k.public_key.as_slice())
            .bind(k.signature.as_slice())
            .bind(account)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(k) = &keys.kem_last_resort_prekey {
            sqlx::query(
                "UPDATE devices SET kem_prekey_id = $1, kem_prekey = $2, \
                 kem_prekey_sig = $3 WHERE account_id = $4 AND device_id = $5",
            )
            .bind(i64::from(k.id))
            .bind(k.public_key.as_slice())
            .bind(k.signature.as_slice())
            .bind(account)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        Self::insert_one_time(
            &mut tx,
            account,
            device,
            &keys.one_time_prekeys,
            &keys.one_time_kem_prekeys,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn prekey_count(
        &self,
        mailbox: Mailbox,
    ) -> Result<tacit_api::PrekeyCount, StoreError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT kind, COUNT(*) FROM one_time_prekeys \
             WHERE account_id = $1 AND device_id = $2 GROUP BY kind",
        )
        .bind(mailbox.account)
        .bind(i64::from(mailbox.device.0))
        .fetch_all(&self.read)
        .await?;
        let mut count = tacit_api::PrekeyCount {
            one_time_prekeys: 0,
            one_time_kem_prekeys: 0,
        };
        for (kind, n) in rows {
            let n = sql::to_u64(n, "count")?;
            match kind {
                KIND_X25519 => count.one_time_prekeys = n,
                KIND_KEM => count.one_time_kem_prekeys = n,
                _ => return Err(StoreError::Corrupt("kind")),
            }
        }
        Ok(count)
    }

    pub(super) async fn claim_bundle(
        &self,
        mailbox: Mailbox,
    ) -> Result<Option<tacit_api::PrekeyBundle>, StoreError> {
        type Row = (Vec<u8>, i64, Vec<u8>, Vec<u8>, i64, Vec<u8>, Vec<u8>);
        let mut tx = self.write.begin().await?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT identity_key, signed_prekey_id, signed_prekey, signed_prekey_sig, \
             kem_prekey_id, kem_prekey, kem_prekey_sig FROM devices \
             WHERE account_id = $1 AND device_id = $2",
        )
        .bind(mailbox.account)
        .bind(i64::from(mailbox.device.0))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((identity, spk_id, spk, spk_sig, kem_id, kem, kem_sig)) = row else {
            return Ok(None);
        };
        let one_time = Self::claim_one_time(&mut tx, mailbox, KIND_X25519).await?;
        let one_time_kem = Self::claim_one_time(&mut tx, mailbox, KIND_KEM).await?;
        tx.commit().await?;
        let (kem_prekey, kem_prekey_is_last_resort) = match one_time_kem {
            Some((id, public, sig)) => (signed(id, public, sig)?, false),
            None => (signed(kem_id, kem, kem_sig)?, true),
        };
        Ok(Some(tacit_api::PrekeyBundle {
            device_id: mailbox.device,
            identity_key: identity.into(),
            signed_prekey: signed(spk_id, spk, spk_sig)?,
            one_time_prekey: one_time
                .map(|(id, public, signature)| super::one_time(id, public, signature))
                .transpose()?,
            kem_prekey,
            kem_prekey_is_last_resort,
        }))
    }

    pub(super) async fn claim_one_time(
        conn: &mut B::Connection,
        mailbox: Mailbox,
        kind: i64,
    ) -> Result<Option<(i64, Vec<u8>, Vec<u8>)>, StoreError> {
        let sql = format!(
            "DELETE FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2 \
             AND kind = $3 AND key_id = (SELECT key_id FROM one_time_prekeys \
             WHERE account_id = $1 AND device_id = $2 AND kind = $3 \
             ORDER BY key_id LIMIT 1 {}) RETURNING key_id, public_key, signature",
            B::CLAIM_LOCK
        );
        let row: Option<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(&sql)
            .bind(mailbox.account)
            .bind(i64::from(mailbox.device.0))
            .bind(kind)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row)
    }
}
