//! The SQL shared by both backends, as a macro instantiated once per backend.
//!
//! `impl_store!(Type, Db, "claim lock clause", positional)` implements [`super::Store`] for `Type`, which
//! must have `write: sqlx::Pool<Db>` and `read: sqlx::Pool<Db>` fields and a
//! `MIGRATOR: sqlx::migrate::Migrator` associated constant.

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

/// How the destinations of a send differ from the current devices: for each recipient, all
/// its devices (less the sending one for a message to oneself); for the sender's account,
/// its other devices.
pub(crate) fn mismatches(
    m: &super::NewMessage,
    devices: &std::collections::HashMap<i64, std::collections::BTreeSet<tacit_api::DeviceId>>,
) -> Vec<super::AccountMismatch> {
    use std::collections::BTreeSet;
    let sender = m.sender.account;
    let mut accounts = m.recipients.clone();
    if !accounts.contains(&sender) {
        accounts.push(sender);
    }
    let mut out = Vec::new();
    for account in accounts {
        let mut expected = devices.get(&account).cloned().unwrap_or_default();
        if account == sender {
            expected.remove(&m.sender.device);
        }
        let given: BTreeSet<tacit_api::DeviceId> = m
            .envelopes
            .iter()
            .filter(|(mb, _)| mb.account == account)
            .map(|(mb, _)| mb.device)
            .collect();
        let missing: Vec<_> = expected.difference(&given).copied().collect();
        let stale: Vec<_> = given.difference(&expected).copied().collect();
        if !missing.is_empty() || !stale.is_empty() {
            out.push(super::AccountMismatch {
                account,
                missing,
                stale,
            });
        }
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

/// The fate of one send of a batch, while the batch is being decided.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Not decided yet.
    Open,
    /// The same client message id appears earlier in the batch, at this index.
    RepeatOf(usize),
    /// Decided.
    Done(Result<super::SendOutcome, super::StoreError>),
}

/// Final results: repeats within the batch answer like their first occurrence would on a
/// retry (a duplicate of a stored send, or the same refusal).
pub(crate) fn resolve(
    mut decisions: Vec<Decision>,
    messages: &[super::NewMessage],
) -> Vec<Result<super::SendOutcome, super::StoreError>> {
    use super::{SendOutcome, StoreError};
    let snapshot: Vec<Option<Result<SendOutcome, StoreError>>> = decisions
        .iter()
        .map(|d| match d {
            Decision::Done(Ok(SendOutcome::Stored(_))) => None,
            Decision::Done(Ok(other)) => Some(Ok(other.clone())),
            Decision::Done(Err(StoreError::MailboxFull)) => Some(Err(StoreError::MailboxFull)),
            _ => Some(Err(StoreError::BatchFailed)),
        })
        .collect();
    for decision in &mut decisions {
        if let Decision::RepeatOf(j) = *decision {
            *decision = Decision::Done(match &snapshot[j] {
                None => Ok(SendOutcome::Duplicate(messages[j].server_ts)),
                Some(Ok(o)) => Ok(o.clone()),
                Some(Err(StoreError::MailboxFull)) => Err(StoreError::MailboxFull),
                Some(Err(_)) => Err(StoreError::BatchFailed),
            });
        }
    }
    decisions
        .into_iter()
        .map(|d| match d {
            Decision::Done(r) => r,
            Decision::Open | Decision::RepeatOf(_) => Err(StoreError::BatchFailed),
        })
        .collect()
}

/// Whether an error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `u64` ids and counts to the database's `i64`.
pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64, super::StoreError> {
    i64::try_from(v).map_err(|_| super::StoreError::Corrupt(what))
}

/// The database's `i64` counts and ids to `u64`.
pub(crate) fn to_u64(v: i64, what: &'static str) -> Result<u64, super::StoreError> {
    u64::try_from(v).map_err(|_| super::StoreError::Corrupt(what))
}

/// The database's `i64` device numbers to [`tacit_api::DeviceId`].
pub(crate) fn to_device(v: i64) -> Result<tacit_api::DeviceId, super::StoreError> {
    u32::try_from(v)
        .map(tacit_api::DeviceId)
        .map_err(|_| super::StoreError::Corrupt("device_id"))
}

/// The database's hash bytes to a [`super::SecretHash`].
pub(crate) fn to_hash(v: Vec<u8>) -> Result<super::SecretHash, super::StoreError> {
    v.try_into()
        .map_err(|_| super::StoreError::Corrupt("credential_hash"))
}

macro_rules! impl_store {
    ($ty:ident, $db:ty, $claim_lock:expr, $positional:expr) => {
        impl $ty {
            async fn insert_device(
                conn: &mut <$db as sqlx::Database>::Connection,
                account: i64,
                device_id: i64,
                device: &$crate::store::NewDevice,
                now: tacit_api::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
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
                .bind(&device.credential_hash[..])
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

            async fn add_device_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                account: i64,
                device: &$crate::store::NewDevice,
                max_devices: u32,
                now: tacit_api::Timestamp,
            ) -> Result<tacit_api::DeviceId, $crate::store::StoreError> {
                // Taking the next number first locks the account row, so that two concurrent
                // additions cannot both pass the count check.
                // A deleted account (its tombstone) takes no device: this waits for a
                // deletion under way and then finds the tombstone.
                let next: Option<i64> = sqlx::query_scalar(
                    "UPDATE accounts SET next_device_id = next_device_id + 1 \
                     WHERE id = $1 AND username NOT LIKE '#deleted-%' \
                     RETURNING next_device_id - 1",
                )
                .bind(account)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(next) = next else {
                    return Err($crate::store::StoreError::AccountGone);
                };
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE account_id = $1")
                        .bind(account)
                        .fetch_one(&mut *conn)
                        .await?;
                if count >= i64::from(max_devices) {
                    return Err($crate::store::StoreError::TooManyDevices);
                }
                let device_id = super::sql::to_device(next)?;
                Self::insert_device(conn, account, next, device, now).await?;
                Ok(device_id)
            }

            async fn insert_one_time(
                conn: &mut <$db as sqlx::Database>::Connection,
                account: i64,
                device_id: i64,
                x25519: &[tacit_api::OneTimePrekey],
                kem: &[tacit_api::SignedPrekey],
            ) -> Result<(), $crate::store::StoreError> {
                const SQL: &str = "INSERT INTO one_time_prekeys \
                     (account_id, device_id, kind, key_id, public_key, signature) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (account_id, device_id, kind, key_id) \
                     DO UPDATE SET public_key = excluded.public_key, signature = excluded.signature";
                for key in x25519 {
                    sqlx::query(SQL)
                        .bind(account)
                        .bind(device_id)
                        .bind($crate::store::KIND_X25519)
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
                        .bind($crate::store::KIND_KEM)
                        .bind(i64::from(key.id))
                        .bind(key.public_key.as_slice())
                        .bind(key.signature.as_slice())
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }

            async fn claim_one_time(
                conn: &mut <$db as sqlx::Database>::Connection,
                mailbox: $crate::store::Mailbox,
                kind: i64,
            ) -> Result<Option<(i64, Vec<u8>, Vec<u8>)>, $crate::store::StoreError> {
                let sql = concat!(
                    "DELETE FROM one_time_prekeys WHERE account_id = $1 AND device_id = $2 \
                     AND kind = $3 AND key_id = (SELECT key_id FROM one_time_prekeys \
                     WHERE account_id = $1 AND device_id = $2 AND kind = $3 \
                     ORDER BY key_id LIMIT 1 ",
                    $claim_lock,
                    ") RETURNING key_id, public_key, signature"
                );
                let row: Option<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(sql)
                    .bind(mailbox.account)
                    .bind(i64::from(mailbox.device.0))
                    .bind(kind)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(row)
            }

            /// Store a batch of sends with a fixed number of statements, whatever the batch
            /// size: look up earlier sends and the destination mailboxes, decide each send in
            /// memory, then insert all accepted ones in bulk. Each send is all-or-nothing.
            async fn insert_batch(
                conn: &mut <$db as sqlx::Database>::Connection,
                messages: &[$crate::store::NewMessage],
            ) -> Result<
                (
                    Vec<Result<$crate::store::SendOutcome, $crate::store::StoreError>>,
                    Vec<($crate::store::Mailbox, tacit_api::Envelope)>,
                ),
                $crate::store::StoreError,
            > {
                use std::collections::HashMap;
                use $crate::store::{Mailbox, SendOutcome, StoreError};
                use super::sql::{Decision, placeholders, to_device, to_i64, ROWS_PER_STATEMENT};

                let mut decisions: Vec<Decision> = Vec::with_capacity(messages.len());
                // 1. Repeats of an id within this batch follow their first occurrence.
                let mut first: HashMap<(i64, u32, &str), usize> = HashMap::new();
                for (i, m) in messages.iter().enumerate() {
                    let key = (m.sender.account, m.sender.device.0, m.client_message_id.as_str());
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
                        super::sql::key_probes(chunk.len(), $positional)
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
                        if let Some(i) = first.get(&(account, device.0, id.as_str())) {
                            decisions[*i] = Decision::Done(Ok(SendOutcome::Duplicate(
                                tacit_api::Timestamp(ts),
                            )));
                        }
                    }
                }
                // 3. The current devices of every account involved, with their depth.
                let mut devices: HashMap<i64, std::collections::BTreeSet<tacit_api::DeviceId>> =
                    HashMap::new();
                let mut depth: HashMap<Mailbox, i64> = HashMap::new();
                let accounts: Vec<i64> = {
                    let mut a: Vec<i64> = open
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
                        placeholders(chunk.len(), 1, $positional)
                    );
                    let mut query = sqlx::query_as::<_, (i64, i64, i64)>(&sql).persistent(false);
                    for account in chunk {
                        query = query.bind(*account);
                    }
                    for (account, device, count) in query.fetch_all(&mut *conn).await? {
                        let device = to_device(device)?;
                        devices.entry(account).or_default().insert(device);
                        depth.insert(Mailbox { account, device }, count);
                    }
                }
                // 4. Decide, in order: the device sets must match exactly, and every
                //    mailbox must have room (counting what this batch adds).
                let mut accepted = Vec::new();
                for i in open {
                    if !matches!(decisions[i], Decision::Open) {
                        continue;
                    }
                    let m = &messages[i];
                    let mismatches = super::sql::mismatches(m, &devices);
                    if !mismatches.is_empty() {
                        decisions[i] = Decision::Done(Ok(SendOutcome::Mismatch(mismatches)));
                        continue;
                    }
                    let max = to_i64(m.max_mailbox_depth, "depth")?;
                    if m.envelopes.iter().any(|(mb, _)| depth.get(mb).is_some_and(|d| *d >= max)) {
                        decisions[i] = Decision::Done(Err(StoreError::MailboxFull));
                        continue;
                    }
                    for (mb, _) in &m.envelopes {
                        *depth.entry(*mb).or_default() += 1;
                    }
                    accepted.push(i);
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
                        placeholders(chunk.len(), 5, $positional)
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
                        fresh.insert((account, to_device(device)?.0, id));
                    }
                }
                // 6. The envelopes of the fresh sends, in bulk.
                let mut rows = Vec::new();
                // The shared body of each fresh multicast, stored once.
                let mut body_ids: HashMap<usize, i64> = HashMap::new();
                for i in &accepted {
                    let m = &messages[*i];
                    let key = (m.sender.account, m.sender.device.0, m.client_message_id.clone());
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
                        decisions[*i] = Decision::Done(Ok(SendOutcome::Duplicate(
                            tacit_api::Timestamp(ts),
                        )));
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
                        placeholders(chunk.len(), 8, $positional)
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
                            Mailbox { account, device: to_device(device)? },
                            tacit_api::Envelope {
                                id: super::sql::to_u64(id, "id")?,
                                sender,
                                sender_device: to_device(sender_device)?,
                                server_timestamp: tacit_api::Timestamp(ts),
                                ciphertext,
                            },
                        ));
                    }
                }
                Ok((super::sql::resolve(decisions, messages), stored))
            }

            /// Apply many acknowledgements with one statement per chunk of ids; returns the
            /// number deleted per acknowledgement.
            async fn delete_acked_bulk(
                conn: &mut <$db as sqlx::Database>::Connection,
                acks: &[($crate::store::Mailbox, Vec<u64>)],
            ) -> Result<Vec<u64>, $crate::store::StoreError> {
                // Each (mailbox, id) counts for the first acknowledgement of that mailbox
                // that names it: an id named by another account's acknowledgement is that
                // account's business and changes nothing here. An id beyond the column's
                // range names no envelope; it is skipped, never an error for the batch.
                let mut owner: std::collections::HashMap<($crate::store::Mailbox, i64), usize> =
                    std::collections::HashMap::new();
                let mut by_mailbox: std::collections::BTreeMap<$crate::store::Mailbox, Vec<i64>> =
                    std::collections::BTreeMap::new();
                for (op, (mailbox, ids)) in acks.iter().enumerate() {
                    for id in ids {
                        let Ok(id) = i64::try_from(*id) else { continue };
                        if owner.insert((*mailbox, id), op).is_none() {
                            by_mailbox.entry(*mailbox).or_default().push(id);
                        }
                    }
                }
                let rows: Vec<($crate::store::Mailbox, i64)> = by_mailbox
                    .iter()
                    .flat_map(|(mb, ids)| ids.iter().map(move |id| (*mb, *id)))
                    .collect();
                let mut acked = vec![0u64; acks.len()];
                // Bounded statements: at most ROWS_PER_STATEMENT ids (3 parameters each),
                // far under both backends' parameter limits whatever the batch holds.
                for chunk in rows.chunks(super::sql::ROWS_PER_STATEMENT) {
                    let sql = if $positional {
                        // SQLite: one OR-group per mailbox, so each uses the primary key.
                        let mut sql = String::from("DELETE FROM envelopes WHERE ");
                        let mut previous: Option<$crate::store::Mailbox> = None;
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
                            super::sql::placeholders(chunk.len(), 3, false)
                        )
                    };
                    let mut query = sqlx::query_as::<_, (i64, i64, i64)>(&sql).persistent(false);
                    let mut previous: Option<$crate::store::Mailbox> = None;
                    for (mailbox, id) in chunk {
                        if !$positional || previous != Some(*mailbox) {
                            query = query
                                .bind(mailbox.account)
                                .bind(i64::from(mailbox.device.0));
                            previous = Some(*mailbox);
                        }
                        query = query.bind(*id);
                    }
                    for (account, device, id) in query.fetch_all(&mut *conn).await? {
                        let mailbox = $crate::store::Mailbox {
                            account,
                            device: super::sql::to_device(device)?,
                        };
                        if let Some(op) = owner.get(&(mailbox, id)) {
                            acked[*op] += 1;
                        }
                    }
                }
                Ok(acked)
            }

            async fn delete_acked(
                conn: &mut <$db as sqlx::Database>::Connection,
                mailbox: $crate::store::Mailbox,
                ids: &[u64],
            ) -> Result<u64, $crate::store::StoreError> {
                let mut deleted = 0;
                // An id beyond the column's range names no envelope.
                let ids: Vec<i64> = ids.iter().filter_map(|id| i64::try_from(*id).ok()).collect();
                for chunk in ids.chunks(super::sql::ACK_CHUNK) {
                    // Generated parameters throughout: sqlx cannot mix `$n` and `?`.
                    let mut sql = format!(
                        "DELETE FROM envelopes WHERE account_id = {} AND device_id = {} AND id IN (",
                        super::sql::param(1, $positional),
                        super::sql::param(2, $positional)
                    );
                    for i in 0..chunk.len() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&super::sql::param(i + 3, $positional));
                    }
                    sql.push(')');
                    let mut query = sqlx::query(&sql)
                        .persistent(false)
                        .bind(mailbox.account)
                        .bind(i64::from(mailbox.device.0));
                    for id in chunk {
                        query = query.bind(*id);
                    }
                    deleted += query.execute(&mut *conn).await?.rows_affected();
                }
                Ok(deleted)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $ty {
            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                Self::MIGRATOR.run(&self.write).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.read).await?;
                Ok(())
            }

            async fn close(&self) {
                self.write.close().await;
                self.read.close().await;
            }

            async fn create_invite(
                &self,
                token_hash: $crate::store::SecretHash,
                now: tacit_api::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query("INSERT INTO invites (token_hash, created_at) VALUES ($1, $2)")
                    .bind(&token_hash[..])
                    .bind(now.0)
                    .execute(&self.write)
                    .await?;
                Ok(())
            }

            async fn list_invites(
                &self,
            ) -> Result<Vec<$crate::store::InviteRecord>, $crate::store::StoreError> {
                let rows: Vec<(Vec<u8>, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT token_hash, created_at, used_at FROM invites \
                     ORDER BY created_at DESC",
                )
                .fetch_all(&self.read)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(hash, created_at, used_at)| $crate::store::InviteRecord {
                        hash_prefix: hex::encode(&hash[..hash.len().min(4)]),
                        created_at: tacit_api::Timestamp(created_at),
                        used_at: used_at.map(tacit_api::Timestamp),
                    })
                    .collect())
            }

            async fn create_account(
                &self,
                username: &str,
                invite: Option<$crate::store::SecretHash>,
                device: $crate::store::NewDevice,
                now: tacit_api::Timestamp,
            ) -> Result<i64, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                if let Some(hash) = invite {
                    let done = sqlx::query(
                        "UPDATE invites SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
                    )
                    .bind(now.0)
                    .bind(&hash[..])
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err($crate::store::StoreError::InviteInvalid);
                    }
                }
                let account: i64 = match sqlx::query_scalar(
                    "INSERT INTO accounts (username, created_at, next_device_id) \
                     VALUES ($1, $2, 2) RETURNING id",
                )
                .bind(username)
                .bind(now.0)
                .fetch_one(&mut *tx)
                .await
                {
                    Ok(id) => id,
                    Err(e) if super::sql::is_unique_violation(&e) => {
                        return Err($crate::store::StoreError::UsernameTaken);
                    }
                    Err(e) => return Err(e.into()),
                };
                Self::insert_device(&mut tx, account, 1, &device, now).await?;
                tx.commit().await?;
                Ok(account)
            }

            async fn add_device(
                &self,
                account: i64,
                device: $crate::store::NewDevice,
                max_devices: u32,
                now: tacit_api::Timestamp,
            ) -> Result<tacit_api::DeviceId, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                let device_id =
                    Self::add_device_in(&mut tx, account, &device, max_devices, now).await?;
                tx.commit().await?;
                Ok(device_id)
            }

            async fn remove_device(
                &self,
                mailbox: $crate::store::Mailbox,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                // Lock the account row, so that two devices removing each other at once
                // cannot leave the account with none.
                sqlx::query("UPDATE accounts SET next_device_id = next_device_id WHERE id = $1")
                    .bind(mailbox.account)
                    .execute(&mut *tx)
                    .await?;
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE account_id = $1")
                        .bind(mailbox.account)
                        .fetch_one(&mut *tx)
                        .await?;
                // Keys and envelopes go with the device (ON DELETE CASCADE).
                let done =
                    sqlx::query("DELETE FROM devices WHERE account_id = $1 AND device_id = $2")
                        .bind(mailbox.account)
                        .bind(i64::from(mailbox.device.0))
                        .execute(&mut *tx)
                        .await?;
                if done.rows_affected() == 1 && count <= 1 {
                    // Dropping the transaction rolls the deletion back.
                    return Err($crate::store::StoreError::LastDevice);
                }
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_account(
                &self,
                account: i64,
            ) -> Result<Vec<tacit_api::DeviceId>, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                // The row stays as a tombstone under a name no user can pick (`#` is not
                // allowed in usernames), so that the account number is never reused: a
                // number names mailboxes and credentials, in caches too.
                // The tombstone first: it locks the account row, so that a device or blob
                // being added at the same time either committed before (and is deleted
                // here or by the blob deletion that follows) or waits and then finds the
                // account gone.
                sqlx::query(
                    "UPDATE accounts SET username = '#deleted-' || id WHERE id = $1",
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
                    "DELETE FROM sent_messages WHERE account_id = $1",
                    "DELETE FROM provisioning_channels WHERE account_id = $1",
                ] {
                    sqlx::query(sql).bind(account).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                devices.into_iter().map(super::sql::to_device).collect()
            }

            async fn create_channel(
                &self,
                id: &[u8],
                public_key: &[u8],
                now: tacit_api::Timestamp,
                expires_at: tacit_api::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO provisioning_channels (id, public_key, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(public_key)
                .bind(now.0)
                .bind(expires_at.0)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn channel(
                &self,
                id: &[u8],
                now: tacit_api::Timestamp,
            ) -> Result<Option<$crate::store::ChannelRecord>, $crate::store::StoreError> {
                let row: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
                    "SELECT public_key, message FROM provisioning_channels \
                     WHERE id = $1 AND expires_at > $2",
                )
                .bind(id)
                .bind(now.0)
                .fetch_optional(&self.read)
                .await?;
                Ok(row.map(|(public_key, message)| $crate::store::ChannelRecord {
                    public_key,
                    message,
                }))
            }

            async fn answer_channel(
                &self,
                id: &[u8],
                account: i64,
                token_hash: $crate::store::SecretHash,
                message: &[u8],
                now: tacit_api::Timestamp,
            ) -> Result<$crate::store::ChannelAnswer, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                let done = sqlx::query(
                    "UPDATE provisioning_channels SET account_id = $1, token_hash = $2, \
                     message = $3 WHERE id = $4 AND expires_at > $5 AND message IS NULL",
                )
                .bind(account)
                .bind(&token_hash[..])
                .bind(message)
                .bind(id)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
                let answer = if done.rows_affected() == 1 {
                    $crate::store::ChannelAnswer::Stored
                } else {
                    let exists: Option<i64> = sqlx::query_scalar(
                        "SELECT created_at FROM provisioning_channels \
                         WHERE id = $1 AND expires_at > $2",
                    )
                    .bind(id)
                    .bind(now.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if exists.is_some() {
                        $crate::store::ChannelAnswer::AlreadyAnswered
                    } else {
                        $crate::store::ChannelAnswer::NotFound
                    }
                };
                tx.commit().await?;
                Ok(answer)
            }

            async fn link_device(
                &self,
                id: &[u8],
                token_hash: $crate::store::SecretHash,
                device: $crate::store::NewDevice,
                max_devices: u32,
                now: tacit_api::Timestamp,
            ) -> Result<Option<(i64, tacit_api::DeviceId)>, $crate::store::StoreError> {
                use subtle::ConstantTimeEq as _;
                let mut tx = self.write.begin().await?;
                let row: Option<(Option<i64>, Option<Vec<u8>>)> = sqlx::query_as(
                    "SELECT account_id, token_hash FROM provisioning_channels \
                     WHERE id = $1 AND expires_at > $2",
                )
                .bind(id)
                .bind(now.0)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((Some(account), Some(stored))) = row else {
                    return Ok(None);
                };
                let stored = super::sql::to_hash(stored)?;
                if !bool::from(stored.ct_eq(&token_hash)) {
                    return Ok(None);
                }
                let done = sqlx::query("DELETE FROM provisioning_channels WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                let device_id =
                    Self::add_device_in(&mut tx, account, &device, max_devices, now).await?;
                tx.commit().await?;
                Ok(Some((account, device_id)))
            }

            async fn device_auth(
                &self,
                mailbox: $crate::store::Mailbox,
            ) -> Result<Option<$crate::store::DeviceAuth>, $crate::store::StoreError> {
                let row: Option<(String, Vec<u8>)> = sqlx::query_as(
                    "SELECT a.username, d.credential_hash FROM devices d \
                     JOIN accounts a ON a.id = d.account_id \
                     WHERE d.account_id = $1 AND d.device_id = $2",
                )
                .bind(mailbox.account)
                .bind(i64::from(mailbox.device.0))
                .fetch_optional(&self.read)
                .await?;
                row.map(|(username, hash)| {
                    Ok($crate::store::DeviceAuth {
                        username,
                        credential_hash: super::sql::to_hash(hash)?,
                    })
                })
                .transpose()
            }

            async fn account_id(
                &self,
                username: &str,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&self.read)
                    .await?)
            }

            async fn devices(
                &self,
                account: i64,
            ) -> Result<Vec<$crate::store::DeviceRecord>, $crate::store::StoreError> {
                let rows: Vec<(i64, Option<String>, i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT device_id, name, created_at, identity_key FROM devices \
                     WHERE account_id = $1 ORDER BY device_id",
                )
                .bind(account)
                .fetch_all(&self.read)
                .await?;
                rows.into_iter()
                    .map(|(device_id, name, created_at, identity_key)| {
                        Ok($crate::store::DeviceRecord {
                            device_id: super::sql::to_device(device_id)?,
                            name,
                            created_at: tacit_api::Timestamp(created_at),
                            identity_key,
                        })
                    })
                    .collect()
            }

            async fn upload_keys(
                &self,
                mailbox: $crate::store::Mailbox,
                keys: &tacit_api::UploadKeysRequest,
            ) -> Result<(), $crate::store::StoreError> {
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

            async fn prekey_count(
                &self,
                mailbox: $crate::store::Mailbox,
            ) -> Result<tacit_api::PrekeyCount, $crate::store::StoreError> {
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
                    let n = super::sql::to_u64(n, "count")?;
                    match kind {
                        $crate::store::KIND_X25519 => count.one_time_prekeys = n,
                        $crate::store::KIND_KEM => count.one_time_kem_prekeys = n,
                        _ => return Err($crate::store::StoreError::Corrupt("kind")),
                    }
                }
                Ok(count)
            }

            async fn claim_bundle(
                &self,
                mailbox: $crate::store::Mailbox,
            ) -> Result<Option<tacit_api::PrekeyBundle>, $crate::store::StoreError> {
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
                let one_time =
                    Self::claim_one_time(&mut tx, mailbox, $crate::store::KIND_X25519).await?;
                let one_time_kem =
                    Self::claim_one_time(&mut tx, mailbox, $crate::store::KIND_KEM).await?;
                tx.commit().await?;
                let (kem_prekey, kem_prekey_is_last_resort) = match one_time_kem {
                    Some((id, public, sig)) => ($crate::store::signed(id, public, sig)?, false),
                    None => ($crate::store::signed(kem_id, kem, kem_sig)?, true),
                };
                Ok(Some(tacit_api::PrekeyBundle {
                    device_id: mailbox.device,
                    identity_key: identity.into(),
                    signed_prekey: $crate::store::signed(spk_id, spk, spk_sig)?,
                    one_time_prekey: one_time
                        .map(|(id, public, signature)| $crate::store::one_time(id, public, signature))
                        .transpose()?,
                    kem_prekey,
                    kem_prekey_is_last_resort,
                }))
            }

            async fn store_message(
                &self,
                message: $crate::store::NewMessage,
            ) -> Result<$crate::store::SendOutcome, $crate::store::StoreError> {
                let outcome = self.write_batch(std::slice::from_ref(&message), &[]).await?;
                outcome
                    .sent
                    .into_iter()
                    .next()
                    .unwrap_or(Err($crate::store::StoreError::BatchFailed))
            }

            async fn write_batch(
                &self,
                messages: &[$crate::store::NewMessage],
                acks: &[($crate::store::Mailbox, Vec<u64>)],
            ) -> Result<$crate::store::BatchOutcome, $crate::store::StoreError> {
                use sqlx::Connection as _;
                let mut conn = self.write.acquire().await?;
                let result = async {
                    let mut tx = conn.begin().await?;
                    let (sent, stored) = if messages.is_empty() {
                        (Vec::new(), Vec::new())
                    } else {
                        Self::insert_batch(&mut tx, messages).await?
                    };
                    let acked = Self::delete_acked_bulk(&mut tx, acks).await?;
                    tx.commit().await?;
                    Ok($crate::store::BatchOutcome {
                        sent,
                        acked,
                        stored,
                    })
                }
                .await;
                if matches!(
                    result,
                    Err($crate::store::StoreError::Database(_) | $crate::store::StoreError::StorageFull(_))
                ) {
                    // A failed statement or COMMIT (a full disk, a lost server) can leave
                    // the connection inside a transaction that its driver no longer
                    // tracks, where every later write would vanish with it: never reuse
                    // it. The pool opens a fresh one for the next write.
                    conn.close_on_drop();
                }
                result
            }

            async fn mailbox(
                &self,
                mailbox: $crate::store::Mailbox,
                after: u64,
                limit: u32,
                now: tacit_api::Timestamp,
            ) -> Result<Vec<tacit_api::Envelope>, $crate::store::StoreError> {
                let rows: Vec<(i64, String, i64, i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT e.id, e.sender, e.sender_device, e.server_ts, \
                     COALESCE(b.ciphertext, e.ciphertext) FROM envelopes e \
                     LEFT JOIN message_bodies b ON b.id = e.body_id \
                     WHERE e.account_id = $1 AND e.device_id = $2 AND e.id > $3 \
                     AND e.expires_at > $4 ORDER BY e.id LIMIT $5",
                )
                .bind(mailbox.account)
                .bind(i64::from(mailbox.device.0))
                .bind(super::sql::to_i64(after, "id")?)
                .bind(now.0)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
                rows.into_iter()
                    .map(|(id, sender, sender_device, ts, ciphertext)| {
                        Ok(tacit_api::Envelope {
                            id: super::sql::to_u64(id, "id")?,
                            sender,
                            sender_device: super::sql::to_device(sender_device)?,
                            server_timestamp: tacit_api::Timestamp(ts),
                            ciphertext: tacit_api::Ciphertext(ciphertext.into()),
                        })
                    })
                    .collect()
            }

            async fn ack(
                &self,
                mailbox: $crate::store::Mailbox,
                ids: &[u64],
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                let deleted = Self::delete_acked(&mut tx, mailbox, ids).await?;
                tx.commit().await?;
                Ok(deleted)
            }

            async fn purge_expired(
                &self,
                now: tacit_api::Timestamp,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                let gone = sqlx::query("DELETE FROM envelopes WHERE expires_at <= $1")
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM sent_messages WHERE expires_at <= $1")
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM provisioning_channels WHERE expires_at <= $1")
                    .bind(now.0)
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

            async fn create_blob(
                &self,
                blob: &$crate::store::NewBlob,
                quota: u64,
            ) -> Result<(), $crate::store::StoreError> {
                let size = super::sql::to_i64(blob.size, "size")?;
                let quota = super::sql::to_i64(quota, "quota")?;
                let mut tx = self.write.begin().await?;
                // Lock the account row (a no-op update), so that two concurrent
                // reservations of one account cannot both pass the quota check.
                // A deleted account (its tombstone) reserves nothing.
                let live = sqlx::query(
                    "UPDATE accounts SET next_device_id = next_device_id \
                     WHERE id = $1 AND username NOT LIKE '#deleted-%'",
                )
                .bind(blob.owner.account)
                .execute(&mut *tx)
                .await?;
                if live.rows_affected() != 1 {
                    return Err($crate::store::StoreError::AccountGone);
                }
                let used: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs \
                     WHERE account_id = $1 AND expires_at > $2",
                )
                .bind(blob.owner.account)
                .bind(blob.created_at.0)
                .fetch_one(&mut *tx)
                .await?;
                if used.saturating_add(size) > quota {
                    return Err($crate::store::StoreError::QuotaExceeded);
                }
                sqlx::query(
                    "INSERT INTO blobs (id, account_id, device_id, size, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(blob.id.as_slice())
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

            async fn blob(
                &self,
                id: &[u8],
                now: tacit_api::Timestamp,
            ) -> Result<Option<$crate::store::BlobRecord>, $crate::store::StoreError> {
                let row: Option<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT account_id, size, expires_at FROM blobs \
                     WHERE id = $1 AND expires_at > $2",
                )
                .bind(id)
                .bind(now.0)
                .fetch_optional(&self.read)
                .await?;
                row.map(|(account, size, expires_at)| {
                    Ok($crate::store::BlobRecord {
                        account,
                        size: super::sql::to_u64(size, "size")?,
                        expires_at: tacit_api::Timestamp(expires_at),
                    })
                })
                .transpose()
            }

            async fn delete_blob(
                &self,
                id: &[u8],
                account: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM blobs WHERE id = $1 AND account_id = $2")
                    .bind(id)
                    .bind(account)
                    .execute(&self.write)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn expired_blobs(
                &self,
                now: tacit_api::Timestamp,
                limit: u32,
            ) -> Result<Vec<Vec<u8>>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM blobs WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
                )
                .bind(now.0)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?)
            }

            async fn delete_blob_records(
                &self,
                ids: &[Vec<u8>],
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.write.begin().await?;
                for id in ids {
                    sqlx::query("DELETE FROM blobs WHERE id = $1")
                        .bind(id.as_slice())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete_account_blobs(
                &self,
                account: i64,
            ) -> Result<Vec<Vec<u8>>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("DELETE FROM blobs WHERE account_id = $1 RETURNING id")
                    .bind(account)
                    .fetch_all(&self.write)
                    .await?)
            }

            async fn probe_write(
                &self,
                now: tacit_api::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO write_probe (id, probed_at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
                )
                .bind(now.0)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn maintain(&self) -> Result<(), $crate::store::StoreError> {
                self.checkpoint().await
            }

            async fn stats(
                &self,
            ) -> Result<$crate::store::StoreStats, $crate::store::StoreError> {
                let envelopes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM envelopes")
                    .fetch_one(&self.read)
                    .await?;
                let max_depth: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM envelopes \
                     GROUP BY account_id, device_id) t",
                )
                .fetch_one(&self.read)
                .await?;
                let keys: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT kind, COUNT(*) FROM one_time_prekeys GROUP BY kind",
                )
                .fetch_all(&self.read)
                .await?;
                let devices: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices")
                    .fetch_one(&self.read)
                    .await?;
                let bodies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_bodies")
                    .fetch_one(&self.read)
                    .await?;
                let mut stats = $crate::store::StoreStats {
                    envelopes: super::sql::to_u64(envelopes, "count")?,
                    max_mailbox_depth: super::sql::to_u64(max_depth.unwrap_or(0), "count")?,
                    devices: super::sql::to_u64(devices, "count")?,
                    message_bodies: super::sql::to_u64(bodies, "count")?,
                    ..Default::default()
                };
                for (kind, n) in keys {
                    let n = super::sql::to_u64(n, "count")?;
                    match kind {
                        $crate::store::KIND_X25519 => stats.one_time_prekeys = n,
                        $crate::store::KIND_KEM => stats.one_time_kem_prekeys = n,
                        _ => return Err($crate::store::StoreError::Corrupt("kind")),
                    }
                }
                Ok(stats)
            }
        }
    };
}

pub(crate) use impl_store;
