//! Mailboxes: the group-commit write of sends and acknowledgements, reading a mailbox, and
//! purging what expired.

use crate::store::AccountId;
use std::collections::HashMap;

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::sql::{ROWS_PER_STATEMENT, placeholders, to_device, to_u64};
use super::{
    BatchOutcome, Decision, DeviceFacts, Mailbox, NewMessage, SendOutcome, SendRules, StoreError,
};

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
    pub(super) async fn store_message(
        &self,
        message: NewMessage,
        rules: &dyn SendRules,
    ) -> Result<SendOutcome, StoreError> {
        let outcome = self
            .write_batch(std::slice::from_ref(&message), &[], rules)
            .await?;
        outcome
            .sent
            .into_iter()
            .next()
            .unwrap_or(Err(StoreError::BatchFailed))
    }

    pub(super) async fn write_batch(
        &self,
        messages: &[NewMessage],
        acks: &[(Mailbox, Vec<u64>)],
        rules: &dyn SendRules,
    ) -> Result<BatchOutcome, StoreError> {
        use sqlx::Connection as _;
        let mut conn = self.write.acquire().await?;
        let result = async {
            let mut tx = conn.begin().await?;
            let (sent, stored) = if messages.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                Self::insert_batch(&mut tx, messages, rules).await?
            };
            let acked = Self::delete_acked_bulk(&mut tx, acks).await?;
            tx.commit().await?;
            Ok(BatchOutcome {
                sent,
                acked,
                stored,
            })
        }
        .await;
        if matches!(
            result,
            Err(StoreError::Database(_) | StoreError::StorageFull(_))
        ) {
            // A failed statement or COMMIT (a full disk, a lost server) can leave
            // the connection inside a transaction that its driver no longer
            // tracks, where every later write would vanish with it: never reuse
            // it. The pool opens a fresh one for the next write.
            conn.close_on_drop();
        }
        result
    }

    /// Store a batch of sends with a fixed number of statements, whatever the batch
    /// size: look up earlier sends and the destination mailboxes, decide each send in
    /// memory by the service's `rules`, then insert all accepted ones in bulk. Each send is
    /// all-or-nothing.
    pub(super) async fn insert_batch(
        conn: &mut B::Connection,
        messages: &[NewMessage],
        rules: &dyn SendRules,
    ) -> Result<
        (
            Vec<Result<SendOutcome, StoreError>>,
            Vec<(Mailbox, tacit_api::Envelope)>,
        ),
        StoreError,
    > {
        let mut decisions: Vec<Decision> = Vec::with_capacity(messages.len());
        // 1. Repeats of an id within this batch follow their first occurrence.
        let mut first: HashMap<(AccountId, u32, &str), usize> = HashMap::new();
        for (i, m) in messages.iter().enumerate() {
            let key = (
                m.sender.account,
                m.sender.device.0,
                m.client_message_id.as_str(),
            );
            match first.get(&key) {
                Some(j) => decisions.push(Decision::RepeatOf(*j)),
                None => {
                    first.insert(key, i);
                    decisions.push(Decision::Open);
                }
            }
        }
        // 2. Sends stored by an earlier batch.
        let open: Vec<usize> = (0..messages.len())
            .filter(|i| matches!(decisions[*i], Decision::Open))
            .collect();
        for chunk in open.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT account_id, device_id, client_message_id, server_ts FROM sent_messages \
                 WHERE {}",
                sql::key_probes(chunk.len(), B::POSITIONAL)
            );
            let mut query = sqlx::query_as::<_, (i64, i64, String, i64)>(&sql).persistent(false);
            for i in chunk {
                let m = &messages[*i];
                query = query
                    .bind(m.sender.account)
                    .bind(i64::from(m.sender.device.0))
                    .bind(&m.client_message_id);
            }
            for (account, device, id, ts) in query.fetch_all(&mut *conn).await? {
                let device = to_device(device)?;
                if let Some(i) = first.get(&(AccountId(account), device.0, id.as_str())) {
                    decisions[*i] =
                        Decision::Done(Ok(SendOutcome::Duplicate(tacit_api::Timestamp(ts))));
                }
            }
        }
        // 3. The current devices of every account involved, with their depth.
        let mut facts = DeviceFacts::default();
        let accounts: Vec<AccountId> = {
            let mut a: Vec<AccountId> = open
                .iter()
                .filter(|i| matches!(decisions[**i], Decision::Open))
                .flat_map(|i| {
                    let m = &messages[*i];
                    m.recipients.iter().copied().chain([m.sender.account])
                })
                .collect();
            a.sort_unstable();
            a.dedup();
            a
        };
        for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT d.account_id, d.device_id, (SELECT COUNT(*) FROM envelopes e \
                 WHERE e.account_id = d.account_id AND e.device_id = d.device_id) \
                 FROM devices d WHERE d.account_id IN ({})",
                placeholders(chunk.len(), 1, B::POSITIONAL)
            );
            let mut query = sqlx::query_as::<_, (i64, i64, i64)>(&sql).persistent(false);
            for account in chunk {
                query = query.bind(*account);
            }
            for (account, device, count) in query.fetch_all(&mut *conn).await? {
                let account = AccountId(account);
                let device = to_device(device)?;
                facts.devices.entry(account).or_default().insert(device);
                facts
                    .depth
                    .insert(Mailbox { account, device }, to_u64(count, "count")?);
            }
        }
        // 4. Decide, in order, by the service's rules (the device sets must match, the
        //    mailboxes must have room, counting what this batch adds).
        let mut accepted = Vec::new();
        for i in open {
            if !matches!(decisions[i], Decision::Open) {
                continue;
            }
            match rules.check(&messages[i], &mut facts) {
                Some(outcome) => decisions[i] = Decision::Done(outcome),
                None => accepted.push(i),
            }
        }
        // 5. Record the accepted ids; a concurrent writer (another node) may have
        //    stored one meanwhile, and then it is a duplicate after all.
        let mut fresh = std::collections::HashSet::new();
        for chunk in accepted.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO sent_messages \
                 (account_id, device_id, client_message_id, server_ts, expires_at) \
                 VALUES {} ON CONFLICT (account_id, device_id, client_message_id) \
                 DO NOTHING RETURNING account_id, device_id, client_message_id",
                placeholders(chunk.len(), 5, B::POSITIONAL)
            );
            let mut query = sqlx::query_as::<_, (i64, i64, String)>(&sql).persistent(false);
            for i in chunk {
                let m = &messages[*i];
                query = query
                    .bind(m.sender.account)
                    .bind(i64::from(m.sender.device.0))
                    .bind(&m.client_message_id)
                    .bind(m.server_ts.0)
                    .bind(m.remember_until.0);
            }
            for (account, device, id) in query.fetch_all(&mut *conn).await? {
                fresh.insert((AccountId(account), to_device(device)?.0, id));
            }
        }
        // 6. The envelopes of the fresh sends, in bulk.
        let mut rows = Vec::new();
        // The shared body of each fresh multicast, stored once.
        let mut body_ids: HashMap<usize, i64> = HashMap::new();
        for i in &accepted {
            let m = &messages[*i];
            let key = (
                m.sender.account,
                m.sender.device.0,
                m.client_message_id.clone(),
            );
            if fresh.contains(&key) {
                if let Some(body) = &m.body {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO message_bodies (expires_at, ciphertext) \
                         VALUES ($1, $2) RETURNING id",
                    )
                    .bind(m.expires_at.0)
                    .bind(body.0.as_slice())
                    .fetch_one(&mut *conn)
                    .await?;
                    body_ids.insert(*i, id);
                }
                for (mb, ct) in &m.envelopes {
                    rows.push((*i, *mb, ct));
                }
                decisions[*i] = Decision::Done(Ok(SendOutcome::Stored(
                    m.envelopes.iter().map(|(mb, _)| *mb).collect(),
                )));
            } else {
                let ts: i64 = sqlx::query_scalar(
                    "SELECT server_ts FROM sent_messages WHERE account_id = $1 \
                     AND device_id = $2 AND client_message_id = $3",
                )
                .bind(m.sender.account)
                .bind(i64::from(m.sender.device.0))
                .bind(&m.client_message_id)
                .fetch_one(&mut *conn)
                .await?;
                decisions[*i] =
                    Decision::Done(Ok(SendOutcome::Duplicate(tacit_api::Timestamp(ts))));
            }
        }
        let bodies: HashMap<i64, &tacit_api::Ciphertext> = body_ids
            .iter()
            .filter_map(|(i, id)| messages[*i].body.as_ref().map(|b| (*id, b)))
            .collect();
        let mut stored = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            // A multicast's rows carry no ciphertext, only the body's id; the pushed
            // envelopes get the body from memory, not from the database.
            let sql = format!(
                "INSERT INTO envelopes (account_id, device_id, sender, sender_device, \
                 server_ts, expires_at, ciphertext, body_id) VALUES {} RETURNING id, \
                 account_id, device_id, sender, sender_device, server_ts, ciphertext, \
                 body_id",
                placeholders(chunk.len(), 8, B::POSITIONAL)
            );
            type Row = (i64, i64, i64, String, i64, i64, Vec<u8>, Option<i64>);
            let mut query = sqlx::query_as::<_, Row>(&sql).persistent(false);
            for (i, mb, ct) in chunk {
                let m = &messages[*i];
                query = query
                    .bind(mb.account)
                    .bind(i64::from(mb.device.0))
                    .bind(&m.sender_username)
                    .bind(i64::from(m.sender.device.0))
                    .bind(m.server_ts.0)
                    .bind(m.expires_at.0)
                    .bind(ct.0.as_slice())
                    .bind(body_ids.get(i).copied());
            }
            for (id, account, device, sender, sender_device, ts, ct, body_id) in
                query.fetch_all(&mut *conn).await?
            {
                let ciphertext = match body_id.and_then(|b| bodies.get(&b)) {
                    Some(body) => (*body).clone(),
                    None => tacit_api::Ciphertext(ct.into()),
                };
                stored.push((
                    Mailbox {
                        account: AccountId(account),
                        device: to_device(device)?,
                    },
                    tacit_api::Envelope {
                        id: sql::to_u64(id, "id")?,
                        sender,
                        sender_device: to_device(sender_device)?,
                        server_timestamp: tacit_api::Timestamp(ts),
                        ciphertext,
                    },
                ));
            }
        }
        Ok((rules.resolve(decisions, messages), stored))
    }

    /// Apply many acknowledgements with one statement per chunk of ids; returns the
    /// number deleted per acknowledgement.
    pub(super) async fn delete_acked_bulk(
        conn: &mut B::Connection,
        acks: &[(Mailbox, Vec<u64>)],
    ) -> Result<Vec<u64>, StoreError> {
        // Each (mailbox, id) counts for the first acknowledgement of that mailbox
        // that names it: an id named by another account's acknowledgement is that
        // account's business and changes nothing here. An id beyond the column's
        // range names no envelope; it is skipped, never an error for the batch.
        let mut owner: std::collections::HashMap<(Mailbox, i64), usize> =
            std::collections::HashMap::new();
        let mut by_mailbox: std::collections::BTreeMap<Mailbox, Vec<i64>> =
            std::collections::BTreeMap::new();
        for (op, (mailbox, ids)) in acks.iter().enumerate() {
            for id in ids {
                let Ok(id) = i64::try_from(*id) else { continue };
                if owner.insert((*mailbox, id), op).is_none() {
                    by_mailbox.entry(*mailbox).or_default().push(id);
                }
            }
        }
        let rows: Vec<(Mailbox, i64)> = by_mailbox
            .iter()
            .flat_map(|(mb, ids)| ids.iter().map(move |id| (*mb, *id)))
            .collect();
        let mut acked = vec![0u64; acks.len()];
        // Bounded statements: at most ROWS_PER_STATEMENT ids (3 parameters each),
        // far under both backends' parameter limits whatever the batch holds.
        for chunk in rows.chunks(sql::ROWS_PER_STATEMENT) {
            let sql = if B::POSITIONAL {
                // SQLite: one OR-group per mailbox, so each uses the primary key.
                let mut sql = String::from("DELETE FROM envelopes WHERE ");
                let mut previous: Option<Mailbox> = None;
                for (mailbox, _) in chunk {
                    if previous == Some(*mailbox) {
                        sql.push_str(", ?");
                        continue;
                    }
                    if previous.is_some() {
                        sql.push_str(")) OR ");
                    }
                    sql.push_str("(account_id = ? AND device_id = ? AND id IN (?");
                    previous = Some(*mailbox);
                }
                sql.push_str(")) RETURNING account_id, device_id, id");
                sql
            } else {
                // PostgreSQL plans a long OR slowly: join a VALUES list instead.
                format!(
                    "DELETE FROM envelopes e USING (VALUES {}) AS a(account_id, device_id, id) \
                     WHERE e.account_id = a.account_id AND e.device_id = a.device_id \
                     AND e.id = a.id RETURNING e.account_id, e.device_id, e.id",
                    sql::placeholders(chunk.len(), 3, false)
                )
            };
            let mut query = sqlx::query_as::<_, (i64, i64, i64)>(&sql).persistent(false);
            let mut previous: Option<Mailbox> = None;
            for (mailbox, id) in chunk {
                if !B::POSITIONAL || previous != Some(*mailbox) {
                    query = query
                        .bind(mailbox.account)
                        .bind(i64::from(mailbox.device.0));
                    previous = Some(*mailbox);
                }
                query = query.bind(*id);
            }
            for (account, device, id) in query.fetch_all(&mut *conn).await? {
                let mailbox = Mailbox {
                    account: AccountId(account),
                    device: sql::to_device(device)?,
                };
                if let Some(op) = owner.get(&(mailbox, id)) {
                    acked[*op] += 1;
                }
            }
        }
        Ok(acked)
    }

    pub(super) async fn mailbox(
        &self,
        mailbox: Mailbox,
        after: u64,
        limit: u32,
        now: tacit_api::Timestamp,
    ) -> Result<Vec<tacit_api::Envelope>, StoreError> {
        let rows: Vec<(i64, String, i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT e.id, e.sender, e.sender_device, e.server_ts, \
             COALESCE(b.ciphertext, e.ciphertext) FROM envelopes e \
             LEFT JOIN message_bodies b ON b.id = e.body_id \
             WHERE e.account_id = $1 AND e.device_id = $2 AND e.id > $3 \
             AND e.expires_at > $4 ORDER BY e.id LIMIT $5",
        )
        .bind(mailbox.account)
        .bind(i64::from(mailbox.device.0))
        .bind(sql::to_i64(after, "id")?)
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(id, sender, sender_device, ts, ciphertext)| {
                Ok(tacit_api::Envelope {
                    id: sql::to_u64(id, "id")?,
                    sender,
                    sender_device: sql::to_device(sender_device)?,
                    server_timestamp: tacit_api::Timestamp(ts),
                    ciphertext: tacit_api::Ciphertext(ciphertext.into()),
                })
            })
            .collect()
    }

    pub(super) async fn ack(&self, mailbox: Mailbox, ids: &[u64]) -> Result<u64, StoreError> {
        let mut tx = self.write.begin().await?;
        let deleted = Self::delete_acked(&mut tx, mailbox, ids).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    pub(super) async fn delete_acked(
        conn: &mut B::Connection,
        mailbox: Mailbox,
        ids: &[u64],
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        // An id beyond the column's range names no envelope.
        let ids: Vec<i64> = ids
            .iter()
            .filter_map(|id| i64::try_from(*id).ok())
            .collect();
        for chunk in ids.chunks(sql::ACK_CHUNK) {
            // Generated parameters throughout: sqlx cannot mix `$n` and `?`.
            let mut sql = format!(
                "DELETE FROM envelopes WHERE account_id = {} AND device_id = {} AND id IN (",
                sql::param(1, B::POSITIONAL),
                sql::param(2, B::POSITIONAL)
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&sql::param(i + 3, B::POSITIONAL));
            }
            sql.push(')');
            let mut query = sqlx::query(&sql)
                .persistent(false)
                .bind(mailbox.account)
                .bind(i64::from(mailbox.device.0));
            for id in chunk {
                query = query.bind(*id);
            }
            let done = query.execute(&mut *conn).await?;
            deleted += B::rows_affected(&done);
        }
        Ok(deleted)
    }

    pub(super) async fn purge_expired(
        &self,
        now: tacit_api::Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write.begin().await?;
        let gone = sqlx::query(
            "DELETE FROM envelopes WHERE id IN (SELECT id FROM envelopes \
             WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        let gone = B::rows_affected(&gone);
        sqlx::query("DELETE FROM sent_messages WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM provisioning_channels WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM oidc_used_tokens WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM revocations WHERE created_at <= $1")
            .bind(now.0.saturating_sub(super::admin::REVOCATION_KEEP_MS))
            .execute(&mut *tx)
            .await?;
        // Multicast bodies no envelope refers to any more (acknowledged or expired).
        sqlx::query(
            "DELETE FROM message_bodies WHERE expires_at <= $1 OR NOT EXISTS \
             (SELECT 1 FROM envelopes e WHERE e.body_id = message_bodies.id)",
        )
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone)
    }
}
