//! SCIM provisioning: the users the identity provider's SCIM client keeps, linked to
//! accounts by username.

use tacit_api::Timestamp;

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{ScimUser, StoreError};
use crate::audit::Event;

type ScimRow = (
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    i64,
    i64,
);

const COLUMNS: &str = "id, username, external_id, active, display_name, created_at, updated_at";

fn to_user(row: ScimRow) -> ScimUser {
    let (id, username, external_id, active, display_name, created_at, updated_at) = row;
    ScimUser {
        id,
        username,
        external_id,
        active: active != 0,
        display_name,
        created_at: Timestamp(created_at),
        updated_at: Timestamp(updated_at),
    }
}

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
    pub(super) async fn scim_users(
        &self,
        username: Option<&str>,
        external_id: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<(u64, Vec<ScimUser>), StoreError> {
        let condition = "($1 IS NULL OR username = $1) AND ($2 IS NULL OR external_id = $2)";
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM scim_users WHERE {condition}"
        ))
        .bind(username)
        .bind(external_id)
        .fetch_one(&self.read)
        .await?;
        let rows: Vec<ScimRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM scim_users WHERE {condition} \
             ORDER BY created_at, id LIMIT $3 OFFSET $4"
        ))
        .bind(username)
        .bind(external_id)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(&self.read)
        .await?;
        Ok((
            sql::to_u64(total, "count")?,
            rows.into_iter().map(to_user).collect(),
        ))
    }

    pub(super) async fn scim_user(
        &self,
        id: Option<&str>,
        username: Option<&str>,
    ) -> Result<Option<ScimUser>, StoreError> {
        let row: Option<ScimRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM scim_users WHERE id = $1 OR username = $2"
        ))
        .bind(id)
        .bind(username)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(to_user))
    }

    pub(super) async fn create_scim_user(
        &self,
        user: &ScimUser,
        audit: &Event,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        match sqlx::query(
            "INSERT INTO scim_users \
             (id, username, external_id, active, display_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.external_id.as_deref())
        .bind(i64::from(user.active))
        .bind(user.display_name.as_deref())
        .bind(user.created_at.0)
        .bind(user.updated_at.0)
        .execute(&mut *tx)
        .await
        {
            Ok(_) => {}
            Err(e) if sql::is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
            Err(e) => return Err(e.into()),
        }
        Self::append(&mut tx, audit, user.updated_at.0).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn update_scim_user(
        &self,
        user: &ScimUser,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE scim_users SET external_id = $1, active = $2, display_name = $3, \
             updated_at = $4 WHERE id = $5",
        )
        .bind(user.external_id.as_deref())
        .bind(i64::from(user.active))
        .bind(user.display_name.as_deref())
        .bind(user.updated_at.0)
        .bind(user.id.as_str())
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&done) == 0 {
            return Ok(false);
        }
        Self::append(&mut tx, audit, user.updated_at.0).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn delete_scim_user(
        &self,
        id: &str,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query("DELETE FROM scim_users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if B::rows_affected(&done) == 0 {
            return Ok(false);
        }
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        Ok(true)
    }
}
