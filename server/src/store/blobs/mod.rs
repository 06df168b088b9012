//! Blobs: their records (reservation against the account's quota, lookup, deletion and
//! expiry) here, their files (`BlobFiles`) in `files.rs`.

mod files;

pub use files::{Appender, BlobFiles, BlobRead, Opened, WriteGuard};

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{BlobRecord, NewBlob, StoreError};
use crate::store::{AccountId, BlobId};

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
    pub(super) async fn create_blob(&self, blob: &NewBlob, quota: u64) -> Result<(), StoreError> {
        let size = sql::to_i64(blob.size, "size")?;
        let quota = sql::to_i64(quota, "quota")?;
        let mut tx = self.write.begin().await?;
        // Lock the account row (a no-op update), so that two concurrent
        // reservations of one account cannot both pass the quota check.
        // A deleted account (its tombstone) reserves nothing.
        // The account's own quota (set by an administrator) replaces the server's.
        let live: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE accounts SET next_device_id = next_device_id \
             WHERE id = $1 AND username NOT LIKE '#deleted-%' RETURNING blob_quota_bytes",
        )
        .bind(blob.owner.account)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(own_quota) = live else {
            return Err(StoreError::AccountGone);
        };
        let quota = own_quota.unwrap_or(quota);
        let used: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs \
             WHERE account_id = $1 AND expires_at > $2",
        )
        .bind(blob.owner.account)
        .bind(blob.created_at.0)
        .fetch_one(&mut *tx)
        .await?;
        if used.saturating_add(size) > quota {
            return Err(StoreError::QuotaExceeded);
        }
        sqlx::query(
            "INSERT INTO blobs (id, account_id, device_id, size, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(blob.id.as_bytes())
        .bind(blob.owner.account)
        .bind(i64::from(blob.owner.device.0))
        .bind(size)
        .bind(blob.created_at.0)
        .bind(blob.expires_at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn blob(
        &self,
        id: BlobId,
        now: tacit_api::Timestamp,
    ) -> Result<Option<BlobRecord>, StoreError> {
        let row: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT account_id, size, expires_at FROM blobs \
             WHERE id = $1 AND expires_at > $2",
        )
        .bind(id.as_bytes())
        .bind(now.0)
        .fetch_optional(&self.read)
        .await?;
        row.map(|(account, size, expires_at)| {
            Ok(BlobRecord {
                account: AccountId(account),
                size: sql::to_u64(size, "size")?,
                expires_at: tacit_api::Timestamp(expires_at),
            })
        })
        .transpose()
    }

    pub(super) async fn delete_blob(
        &self,
        id: BlobId,
        account: AccountId,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM blobs WHERE id = $1 AND account_id = $2")
            .bind(id.as_bytes())
            .bind(account)
            .execute(&self.write)
            .await?;
        Ok(B::rows_affected(&done) == 1)
    }

    pub(super) async fn expired_blobs(
        &self,
        now: tacit_api::Timestamp,
        limit: u32,
    ) -> Result<Vec<BlobId>, StoreError> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT id FROM blobs WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(BlobId::from_row).collect()
    }

    pub(super) async fn delete_blob_records(&self, ids: &[BlobId]) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM blobs WHERE id = $1")
                .bind(id.as_bytes())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn delete_account_blobs(
        &self,
        account: AccountId,
    ) -> Result<Vec<BlobId>, StoreError> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("DELETE FROM blobs WHERE account_id = $1 RETURNING id")
                .bind(account)
                .fetch_all(&self.write)
                .await?;
        rows.into_iter().map(BlobId::from_row).collect()
    }
}
