//! Administration: roles, disabling, quotas, invites with expiry and use counts, the
//! administrator's view of users and devices, devices' last authentication, and the
//! revocations every node applies to its caches and sockets.

use tacit_api::{AdminDevice, AdminUser, InviteInfo, Role, SetQuotaRequest, Timestamp};

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{Mailbox, Revocation, RevocationKind, SecretHash, StoreError};
use crate::audit::Event;
use crate::store::AccountId;

/// How long revocation rows are kept: longer than any node takes to read them (a few
/// times a second) and than a cached credential lives.
pub(crate) const REVOCATION_KEEP_MS: i64 = 10 * 60 * 1000;

type UserRow = (i64, String, i64, Option<i64>, Option<i64>, Option<i64>);
type DeviceRow = (i64, Option<String>, i64, Option<i64>, i64, i64, i64);
type InviteRow = (Vec<u8>, i64, Option<i64>, i64, i64, Option<i64>);

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
    /// Record revocations of `devices` of `account`, in the caller's transaction.
    pub(super) async fn record_revocations(
        conn: &mut B::Connection,
        account: AccountId,
        devices: &[i64],
        kind: RevocationKind,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        for device in devices {
            sqlx::query(
                "INSERT INTO revocations (account_id, device_id, kind, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(account)
            .bind(*device)
            .bind(kind.as_str())
            .bind(now.0)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    pub(super) async fn grant_role(
        &self,
        account: AccountId,
        role: Role,
        grant: bool,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        // Lock the account row; a tombstone takes no role.
        let live = sqlx::query(
            "UPDATE accounts SET next_device_id = next_device_id \
             WHERE id = $1 AND username NOT LIKE '#deleted-%'",
        )
        .bind(account)
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&live) != 1 {
            return Err(StoreError::AccountGone);
        }
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT granted_at FROM account_roles WHERE account_id = $1 AND role = $2",
        )
        .bind(account)
        .bind(role.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_some() == grant {
            return Ok(false);
        }
        if grant {
            sqlx::query(
                "INSERT INTO account_roles (account_id, role, granted_at) VALUES ($1, $2, $3)",
            )
            .bind(account)
            .bind(role.as_str())
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM account_roles WHERE account_id = $1 AND role = $2")
                .bind(account)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
        }
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn roles(&self, account: AccountId) -> Result<Vec<Role>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT role FROM account_roles WHERE account_id = $1 ORDER BY role",
        )
        .bind(account)
        .fetch_all(&self.read)
        .await?;
        names
            .iter()
            .map(|name| Role::from_name(name).ok_or(StoreError::Corrupt("account_roles.role")))
            .collect()
    }

    pub(super) async fn set_disabled(
        &self,
        account: AccountId,
        disabled: bool,
        now: Timestamp,
        audit: &Event,
    ) -> Result<Option<Vec<tacit_api::DeviceId>>, StoreError> {
        let mut tx = self.write.begin().await?;
        let changed = if disabled {
            sqlx::query(
                "UPDATE accounts SET disabled_at = $1 \
                 WHERE id = $2 AND disabled_at IS NULL AND username NOT LIKE '#deleted-%'",
            )
            .bind(now.0)
            .bind(account)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "UPDATE accounts SET disabled_at = NULL \
                 WHERE id = $1 AND disabled_at IS NOT NULL",
            )
            .bind(account)
            .execute(&mut *tx)
            .await?
        };
        if B::rows_affected(&changed) != 1 {
            return Ok(None);
        }
        let devices: Vec<i64> = sqlx::query_scalar(
            "SELECT device_id FROM devices WHERE account_id = $1 ORDER BY device_id",
        )
        .bind(account)
        .fetch_all(&mut *tx)
        .await?;
        let kind = if disabled {
            RevocationKind::Disable
        } else {
            RevocationKind::Restore
        };
        Self::record_revocations(&mut tx, account, &devices, kind, now).await?;
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        devices
            .into_iter()
            .map(sql::to_device)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    pub(super) async fn set_quota(
        &self,
        account: AccountId,
        quota: &SetQuotaRequest,
        now: Timestamp,
        audit: &Event,
    ) -> Result<(), StoreError> {
        let bytes = quota
            .blob_quota_bytes
            .map(|b| sql::to_i64(b, "blob_quota_bytes"))
            .transpose()?;
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE accounts SET max_devices = $1, blob_quota_bytes = $2 \
             WHERE id = $3 AND username NOT LIKE '#deleted-%'",
        )
        .bind(quota.max_devices.map(i64::from))
        .bind(bytes)
        .bind(account)
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&done) != 1 {
            return Err(StoreError::AccountGone);
        }
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Users whose name contains `search` (or all), in name order, after `after`; or the
    /// one user named `exact`.
    pub(super) async fn admin_users(
        &self,
        search: Option<&str>,
        exact: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AdminUser>, StoreError> {
        // `_` and `%` are literal in a search (usernames may hold `_`).
        let pattern = search.map(|s| {
            let escaped = s
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT id, username, created_at, disabled_at, max_devices, blob_quota_bytes \
             FROM accounts WHERE username NOT LIKE '#deleted-%' \
             AND ($1 IS NULL OR username LIKE $1 ESCAPE '\\') \
             AND ($2 IS NULL OR username = $2) \
             AND ($3 IS NULL OR username > $3) \
             ORDER BY username LIMIT $4",
        )
        .bind(pattern.as_deref())
        .bind(exact)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut users = Vec::with_capacity(rows.len());
        for (id, username, created_at, disabled_at, max_devices, quota) in rows {
            let account = AccountId(id);
            users.push(AdminUser {
                username,
                created_at: Timestamp(created_at),
                disabled_at: disabled_at.map(Timestamp),
                roles: self.roles(account).await?,
                max_devices: max_devices
                    .map(|m| u32::try_from(m).map_err(|_| StoreError::Corrupt("max_devices")))
                    .transpose()?,
                blob_quota_bytes: quota
                    .map(|q| sql::to_u64(q, "blob_quota_bytes"))
                    .transpose()?,
                devices: self.admin_devices(account).await?,
            });
        }
        Ok(users)
    }

    async fn admin_devices(&self, account: AccountId) -> Result<Vec<AdminDevice>, StoreError> {
        let rows: Vec<DeviceRow> = sqlx::query_as(
            "SELECT d.device_id, d.name, d.created_at, d.last_seen_at, \
             (SELECT COUNT(*) FROM one_time_prekeys k WHERE k.account_id = d.account_id \
              AND k.device_id = d.device_id AND k.kind = 0), \
             (SELECT COUNT(*) FROM one_time_prekeys k WHERE k.account_id = d.account_id \
              AND k.device_id = d.device_id AND k.kind = 1), \
             (SELECT COUNT(*) FROM envelopes e WHERE e.account_id = d.account_id \
              AND e.device_id = d.device_id) \
             FROM devices d WHERE d.account_id = $1 ORDER BY d.device_id",
        )
        .bind(account)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(
                |(device, name, created_at, last_seen, x25519, kem, depth)| {
                    Ok(AdminDevice {
                        device_id: sql::to_device(device)?,
                        name,
                        created_at: Timestamp(created_at),
                        last_seen_at: last_seen.map(Timestamp),
                        one_time_prekeys: sql::to_u64(x25519, "prekey count")?,
                        one_time_kem_prekeys: sql::to_u64(kem, "prekey count")?,
                        mailbox_depth: sql::to_u64(depth, "mailbox depth")?,
                    })
                },
            )
            .collect()
    }

    pub(super) async fn touch_devices(
        &self,
        seen: &[(Mailbox, Timestamp)],
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        for (mailbox, at) in seen {
            sqlx::query(
                "UPDATE devices SET last_seen_at = $1 WHERE account_id = $2 AND device_id = $3",
            )
            .bind(at.0)
            .bind(mailbox.account)
            .bind(i64::from(mailbox.device.0))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn invites(&self) -> Result<Vec<InviteInfo>, StoreError> {
        let rows: Vec<InviteRow> = sqlx::query_as(
            "SELECT token_hash, created_at, expires_at, max_uses, uses, revoked_at \
             FROM invites ORDER BY created_at DESC, token_hash",
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(
                |(hash, created_at, expires_at, max_uses, uses, revoked_at)| {
                    Ok(InviteInfo {
                        id: hex::encode(hash),
                        created_at: Timestamp(created_at),
                        expires_at: expires_at.map(Timestamp),
                        max_uses: u32::try_from(max_uses)
                            .map_err(|_| StoreError::Corrupt("invites.max_uses"))?,
                        uses: u32::try_from(uses)
                            .map_err(|_| StoreError::Corrupt("invites.uses"))?,
                        revoked_at: revoked_at.map(Timestamp),
                    })
                },
            )
            .collect()
    }

    pub(super) async fn revoke_invite(
        &self,
        token_hash: SecretHash,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE invites SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now.0)
        .bind(token_hash.as_bytes().as_slice())
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&done) != 1 {
            return Ok(false);
        }
        Self::append(&mut tx, audit, now.0).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "SELECT id, account_id, device_id, kind FROM revocations WHERE id > $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(id, account, device, kind)| {
                Ok(Revocation {
                    id,
                    mailbox: Mailbox {
                        account: AccountId(account),
                        device: sql::to_device(device)?,
                    },
                    kind: RevocationKind::from_name(&kind)
                        .ok_or(StoreError::Corrupt("revocations.kind"))?,
                })
            })
            .collect()
    }

    pub(super) async fn last_revocation(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM revocations")
                .fetch_one(&self.read)
                .await?,
        )
    }
}
