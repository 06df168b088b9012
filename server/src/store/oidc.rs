//! Sign-in with the identity provider: identities bound to accounts, used tokens, and the
//! provider session each device was signed in with.

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{NewDevice, OidcDeviceAdded, OidcLogin, RevocationKind, StoreError};
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
    /// Record the token as used, or [`StoreError::TokenReplayed`].
    async fn use_token_in(
        conn: &mut B::Connection,
        token_hash: &[u8; 32],
        expires_at: tacit_api::Timestamp,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO oidc_used_tokens (token_hash, expires_at) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(token_hash.as_slice())
        .bind(expires_at.0)
        .execute(&mut *conn)
        .await?;
        if B::rows_affected(&done) == 1 {
            Ok(())
        } else {
            Err(StoreError::TokenReplayed)
        }
    }

    async fn apply_roles_in(
        conn: &mut B::Connection,
        account: AccountId,
        login: &OidcLogin,
        now: tacit_api::Timestamp,
    ) -> Result<(), StoreError> {
        for (role, grant) in &login.roles {
            if *grant {
                sqlx::query(
                    "INSERT INTO account_roles (account_id, role, granted_at) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(account)
                .bind(role.as_str())
                .bind(now.0)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query("DELETE FROM account_roles WHERE account_id = $1 AND role = $2")
                    .bind(account)
                    .bind(role.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn set_sid_in(
        conn: &mut B::Connection,
        account: AccountId,
        device: i64,
        sid: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET oidc_sid = $1 WHERE account_id = $2 AND device_id = $3")
            .bind(sid)
            .bind(account)
            .bind(device)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    pub(super) async fn create_oidc_account(
        &self,
        username: &str,
        device: NewDevice,
        login: &OidcLogin,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<AccountId, StoreError> {
        let mut tx = self.write.begin().await?;
        Self::use_token_in(&mut tx, &login.token_hash, login.token_expires_at).await?;
        let bound: Option<String> = sqlx::query_scalar(
            "SELECT a.username FROM oidc_identities i JOIN accounts a ON a.id = i.account_id \
             WHERE i.issuer = $1 AND i.subject = $2",
        )
        .bind(login.issuer.as_str())
        .bind(login.subject.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(name) = bound {
            return Err(StoreError::IdentityBound(name));
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
            Err(e) if sql::is_unique_violation(&e) => return Err(StoreError::UsernameTaken),
            Err(e) => return Err(e.into()),
        };
        match sqlx::query(
            "INSERT INTO oidc_identities (account_id, issuer, subject, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(account)
        .bind(login.issuer.as_str())
        .bind(login.subject.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await
        {
            Ok(_) => {}
            // Bound by a registration that committed after the check above.
            Err(e) if sql::is_unique_violation(&e) => {
                return Err(StoreError::IdentityBound(String::new()));
            }
            Err(e) => return Err(e.into()),
        }
        Self::insert_device(&mut tx, account, 1, &device, now).await?;
        Self::set_sid_in(&mut tx, account, 1, login.sid.as_deref()).await?;
        Self::apply_roles_in(&mut tx, account, login, now).await?;
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        Ok(account)
    }

    pub(super) async fn add_oidc_device(
        &self,
        device: NewDevice,
        login: &OidcLogin,
        max_devices: u32,
        replace: Option<&Event>,
        now: tacit_api::Timestamp,
        audit: &Event,
    ) -> Result<OidcDeviceAdded, StoreError> {
        let mut tx = self.write.begin().await?;
        Self::use_token_in(&mut tx, &login.token_hash, login.token_expires_at).await?;
        let found: Option<(AccountId, String, Option<i64>)> = sqlx::query_as(
            "SELECT a.id, a.username, a.disabled_at FROM oidc_identities i \
             JOIN accounts a ON a.id = i.account_id \
             WHERE i.issuer = $1 AND i.subject = $2 AND a.username NOT LIKE '#deleted-%'",
        )
        .bind(login.issuer.as_str())
        .bind(login.subject.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((account, username, disabled_at)) = found else {
            return Err(StoreError::IdentityUnbound);
        };
        if disabled_at.is_some() {
            return Err(StoreError::AccountDisabled);
        }
        // Lock the account row (as removing a device does), then list the devices the
        // new one replaces.
        sqlx::query("UPDATE accounts SET next_device_id = next_device_id WHERE id = $1")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        let others: Vec<i64> = sqlx::query_scalar(
            "SELECT device_id FROM devices WHERE account_id = $1 ORDER BY device_id",
        )
        .bind(account)
        .fetch_all(&mut *tx)
        .await?;
        let mut replaced = Vec::with_capacity(others.len());
        if !others.is_empty() {
            // Dropping the transaction leaves the token unused.
            let Some(removal) = replace else {
                return Err(StoreError::OtherDevices(others.len()));
            };
            // Keys and envelopes go with the devices (ON DELETE CASCADE). Link channels an
            // old device answered go too: whoever holds one must not link back in.
            for sql in [
                "DELETE FROM devices WHERE account_id = $1",
                "DELETE FROM provisioning_channels WHERE account_id = $1",
            ] {
                sqlx::query(sql).bind(account).execute(&mut *tx).await?;
            }
            Self::record_revocations(&mut tx, account, &others, RevocationKind::Revoke, now)
                .await?;
            for device in &others {
                let device = sql::to_device(*device)?;
                let event = removal.clone().target(username.as_str()).device(device.0);
                Self::append(&mut tx, &event, now.0).await?;
                replaced.push(device);
            }
        }
        let device_id = match Self::add_device_in(&mut tx, account, &device, max_devices, now).await
        {
            Ok(id) => id,
            // Disabled (or deleted) after the read above.
            Err(StoreError::AccountGone) => return Err(StoreError::AccountDisabled),
            Err(e) => return Err(e),
        };
        Self::set_sid_in(
            &mut tx,
            account,
            i64::from(device_id.0),
            login.sid.as_deref(),
        )
        .await?;
        Self::apply_roles_in(&mut tx, account, login, now).await?;
        let audit = audit.clone().target(username.as_str()).device(device_id.0);
        Self::append(&mut tx, &audit, now.0).await?;
        tx.commit().await?;
        Ok(OidcDeviceAdded {
            account,
            username,
            device: device_id,
            replaced,
        })
    }

    pub(super) async fn oidc_account(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<(AccountId, String)>, StoreError> {
        let found: Option<(AccountId, String)> = sqlx::query_as(
            "SELECT a.id, a.username FROM oidc_identities i \
             JOIN accounts a ON a.id = i.account_id \
             WHERE i.issuer = $1 AND i.subject = $2 AND a.username NOT LIKE '#deleted-%'",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.read)
        .await?;
        Ok(found)
    }

    pub(super) async fn oidc_session_devices(
        &self,
        issuer: &str,
        sid: &str,
    ) -> Result<Vec<(AccountId, String, tacit_api::DeviceId)>, StoreError> {
        let rows: Vec<(AccountId, String, i64)> = sqlx::query_as(
            "SELECT a.id, a.username, d.device_id FROM devices d \
             JOIN accounts a ON a.id = d.account_id \
             JOIN oidc_identities i ON i.account_id = a.id \
             WHERE i.issuer = $1 AND d.oidc_sid = $2 ORDER BY a.id, d.device_id",
        )
        .bind(issuer)
        .bind(sid)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(a, name, d)| Ok((a, name, sql::to_device(d)?)))
            .collect()
    }

    pub(super) async fn use_oidc_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: tacit_api::Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        match Self::use_token_in(&mut tx, token_hash, expires_at).await {
            Ok(()) => {}
            Err(StoreError::TokenReplayed) => return Ok(false),
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        Ok(true)
    }
}
