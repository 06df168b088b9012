//! Provisioning channels and linking a new device through one.

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{ChannelAnswer, ChannelRecord, NewDevice, SecretHash, StoreError};
use crate::audit::Event;
use crate::store::AccountId;
use crate::store::ChannelId;

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
    pub(super) async fn create_channel(
        &self,
        id: &ChannelId,
        public_key: &[u8],
        now: tacit_api::Timestamp,
        expires_at: tacit_api::Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provisioning_channels (id, public_key, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_bytes())
        .bind(public_key)
        .bind(now.0)
        .bind(expires_at.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn channel(
        &self,
        id: &ChannelId,
        now: tacit_api::Timestamp,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        let row: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT public_key, message FROM provisioning_channels \
             WHERE id = $1 AND expires_at > $2",
        )
        .bind(id.as_bytes())
        .bind(now.0)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|(public_key, message)| ChannelRecord {
            public_key,
            message,
        }))
    }

    pub(super) async fn answer_channel(
        &self,
        id: &ChannelId,
        account: AccountId,
        token_hash: SecretHash,
        message: &[u8],
        now: tacit_api::Timestamp,
    ) -> Result<ChannelAnswer, StoreError> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE provisioning_channels SET account_id = $1, token_hash = $2, \
             message = $3 WHERE id = $4 AND expires_at > $5 AND message IS NULL",
        )
        .bind(account)
        .bind(token_hash.as_bytes().as_slice())
        .bind(message)
        .bind(id.as_bytes())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        let answer = if B::rows_affected(&done) == 1 {
            ChannelAnswer::Stored
        } else {
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT created_at FROM provisioning_channels \
                 WHERE id = $1 AND expires_at > $2",
            )
            .bind(id.as_bytes())
            .bind(now.0)
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_some() {
                ChannelAnswer::AlreadyAnswered
            } else {
                ChannelAnswer::NotFound
            }
        };
        tx.commit().await?;
        Ok(answer)
    }

    pub(super) async fn link_device(
        &self,
        id: &ChannelId,
        token_hash: SecretHash,
        device: NewDevice,
        max_devices: u32,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<Option<(AccountId, tacit_api::DeviceId)>, StoreError> {
        let mut tx = self.write.begin().await?;
        let row: Option<(Option<i64>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT account_id, token_hash FROM provisioning_channels \
             WHERE id = $1 AND expires_at > $2",
        )
        .bind(id.as_bytes())
        .bind(now.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((Some(account), Some(stored))) = row else {
            return Ok(None);
        };
        let stored = sql::to_hash(stored)?;
        if !stored.ct_eq(&token_hash) {
            return Ok(None);
        }
        let done = sqlx::query("DELETE FROM provisioning_channels WHERE id = $1")
            .bind(id.as_bytes())
            .execute(&mut *tx)
            .await?;
        if B::rows_affected(&done) != 1 {
            return Ok(None);
        }
        let account = AccountId(account);
        let device_id = Self::add_device_in(&mut tx, account, &device, max_devices, now).await?;
        let username: String = sqlx::query_scalar("SELECT username FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await?;
        let event = audit
            .clone()
            .actor(username.clone())
            .target(username)
            .device(device_id.0);
        Self::append(&mut tx, &event, now.0).await?;
        tx.commit().await?;
        Ok(Some((account, device_id)))
    }
}
