//! The audit log's rows: appending an entry (inside the transaction of the action it
//! records, or on its own), reading the chain in pages, its head, and the signed
//! checkpoints.
//!
//! A row holds exactly the fields [`crate::audit::chain`] hashes, as the strings that were
//! hashed, so a verifier recomputes every hash from the rows alone. Every append first
//! updates the one row of `audit_head` (`UPDATE ... RETURNING`): on PostgreSQL concurrent
//! appenders wait for each other's commit on that row lock, on SQLite the single writer
//! serializes them, so two entries never take the same predecessor and the chain never
//! forks. An action and its entry commit together or not at all.

use std::collections::BTreeMap;

use super::backend::{Backend, Param, Value};
use super::sql::{self, SqlStore};
use super::{AuditProblem, AuditPruned, StoreError};
use crate::audit::{Anchor, AuditKey, Checkpoint, Detail, Entry, EntryHash, Event, Head, Verifier};

/// One `audit_log` row as read: seq, time, action, outcome, actor, target user, target
/// device, source, details (JSON), previous hash, hash.
type Row = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    String,
    Vec<u8>,
    Vec<u8>,
);

/// The `audit_anchor` row as read: seq, hash, prune time, entry time, signature, key.
type AnchorRow = (i64, Vec<u8>, i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// The anchor of a row. An absent or malformed signature or key reads as zeros, which
/// verify under no key.
fn anchor(row: AnchorRow) -> Result<Anchor, StoreError> {
    let (seq, hash, time_ms, entry_time_ms, signature, public_key) = row;
    Ok(Anchor {
        head: Head {
            seq: sql::to_u64(seq, "audit_anchor.seq")?,
            hash: to_entry_hash(hash, "audit_anchor.hash")?,
        },
        entry_time_ms,
        pruned_at_ms: time_ms,
        signature: signature
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .unwrap_or([0; 64]),
        public_key: public_key
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .unwrap_or([0; 32]),
    })
}

/// One `audit_checkpoints` row as read: seq, head, time, public key, signature.
type CheckpointRow = (i64, Vec<u8>, i64, Vec<u8>, Vec<u8>);

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
    /// Appends `event` at `time_ms` inside the caller's transaction: the entry commits
    /// with the action or not at all. Returns the entry.
    pub(super) async fn append(
        conn: &mut B::Connection,
        event: &Event,
        time_ms: i64,
    ) -> Result<Entry, StoreError> {
        // Taking the next number locks the head row until the commit (PostgreSQL); the
        // hash returned is still the predecessor's, rewritten below.
        let (seq, prev): (i64, Vec<u8>) =
            sqlx::query_as("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut *conn)
                .await?;
        let head = Head {
            seq: sql::to_u64(seq.saturating_sub(1), "audit_head.seq")?,
            hash: to_entry_hash(prev, "audit_head.hash")?,
        };
        let entry = head.next(event, time_ms);
        let details = details_json(&entry.details);
        sqlx::query(
            "INSERT INTO audit_log (seq, time_ms, action, outcome, actor, target_user, \
             target_device, source_ip, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(seq)
        .bind(entry.time_ms)
        .bind(entry.action.as_str())
        .bind(entry.outcome.as_str())
        .bind(entry.actor.as_deref())
        .bind(entry.target_user.as_deref())
        .bind(entry.target_device.map(i64::from))
        .bind(entry.source_ip.as_deref())
        .bind(details.as_str())
        .bind(entry.prev_hash.0.as_slice())
        .bind(entry.hash.0.as_slice())
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(entry.hash.0.as_slice())
            .execute(&mut *conn)
            .await?;
        Ok(entry)
    }

    /// Appends `event` on its own (an event that no other write goes with).
    pub(super) async fn append_audit(
        &self,
        event: &Event,
        now: tacit_api::Timestamp,
    ) -> Result<Entry, StoreError> {
        let mut tx = self.write.begin().await?;
        let entry = Self::append(&mut tx, event, now.0).await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Up to `limit` entries with a sequence number above `after`, in ascending order. A
    /// row that cannot be read as an entry ends the page; a page that would begin with
    /// one is [`StoreError::AuditUnreadable`].
    pub(super) async fn audit_entries(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, time_ms, action, outcome, actor, target_user, target_device, \
             source_ip, details, prev_hash, hash FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(sql::to_i64(after, "audit_log.seq")?)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        // An unreadable row ends the page before it, so that the entries ahead of it are
        // verified first; read from there, it is the error.
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            match entry(row) {
                Ok(entry) => entries.push(entry),
                Err(e) if entries.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(entries)
    }

    /// The head the database records: the last appended entry's number and hash.
    pub(super) async fn audit_head(&self) -> Result<Head, StoreError> {
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(&self.read)
                .await?;
        Ok(Head {
            seq: sql::to_u64(seq, "audit_head.seq")?,
            hash: to_entry_hash(hash, "audit_head.hash")?,
        })
    }

    /// Where the stored chain starts: the last entry retention pruned, as signed then
    /// (`head` [`Head::EMPTY`] and a zero signature while nothing was pruned).
    pub(super) async fn audit_anchor(&self) -> Result<Anchor, StoreError> {
        let row: AnchorRow = sqlx::query_as(
            "SELECT seq, hash, time_ms, entry_time_ms, signature, public_key FROM audit_anchor \
             WHERE id = 1",
        )
        .fetch_one(&self.read)
        .await?;
        anchor(row)
    }

    /// Deletes the oldest entries appended before `before_ms`, at most `limit` of them and
    /// never the last one, moves the anchor to the last one deleted and appends
    /// `event` with `count`, `from_seq`, `to_seq` and `anchor` added: one transaction, so
    /// the anchor and the `audit-prune` entry that records it commit together. Only a
    /// prefix of the chain goes (the first entry appended at or after `before_ms` stops
    /// it, whatever follows). `None` when nothing was old enough.
    pub(super) async fn prune_audit(
        &self,
        before_ms: i64,
        limit: u32,
        key: &AuditKey,
        event: &Event,
        now: tacit_api::Timestamp,
    ) -> Result<Option<AuditPruned>, StoreError> {
        let mut tx = self.write.begin().await?;
        // The anchor row's lock serializes two pruners (two nodes of a cluster).
        let row: AnchorRow = sqlx::query_as(
            "UPDATE audit_anchor SET seq = seq WHERE id = 1 \
             RETURNING seq, hash, time_ms, entry_time_ms, signature, public_key",
        )
        .fetch_one(&mut *tx)
        .await?;
        let start = anchor(row)?;
        let refused = |why: String| StoreError::AuditPruneRefused(why);
        // Only from a start this key signed: an anchor moved by hand is never built on.
        if start.head != Head::EMPTY {
            start
                .verify(&key.public())
                .map_err(|e| refused(e.to_string()))?;
        }
        let (head,): (i64,) = sqlx::query_as("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let anchor_seq = sql::to_i64(start.head.seq, "audit_anchor.seq")?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, time_ms, action, outcome, actor, target_user, target_device, \
             source_ip, details, prev_hash, hash FROM audit_log WHERE seq > $1 AND seq < $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(anchor_seq)
        .bind(head)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        // Every entry pruned is checked first (its hash, its link, no gap), so that what
        // decides its age, `time_ms`, is what was hashed: an entry made to look old by an
        // edit, or a gap, stops the prune with an error instead of being signed away.
        let (mut verifier, _) =
            Verifier::from_anchor(start.head, Vec::new()).map_err(|e| refused(e.to_string()))?;
        let mut cut = None;
        for row in rows {
            let entry = entry(row)?;
            if entry.time_ms >= before_ms {
                break;
            }
            verifier.push(&entry).map_err(|e| refused(e.to_string()))?;
            cut = Some((entry.seq, entry.time_ms, entry.hash));
        }
        let Some((to_seq, entry_time_ms, hash)) = cut else {
            return Ok(None);
        };
        let head = Head { seq: to_seq, hash };
        let to_seq = sql::to_i64(to_seq, "audit_log.seq")?;
        let anchor = key.anchor(head, entry_time_ms, now.0);
        let done = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(to_seq)
            .execute(&mut *tx)
            .await?;
        let deleted = B::rows_affected(&done);
        sqlx::query(
            "UPDATE audit_anchor SET seq = $1, hash = $2, time_ms = $3, entry_time_ms = $4, \
             signature = $5, public_key = $6 WHERE id = 1",
        )
        .bind(to_seq)
        .bind(hash.0.as_slice())
        .bind(now.0)
        .bind(entry_time_ms)
        .bind(anchor.signature.as_slice())
        .bind(anchor.public_key.as_slice())
        .execute(&mut *tx)
        .await?;
        let pruned = AuditPruned {
            count: deleted,
            from_seq: start.head.seq + 1,
            anchor: head,
        };
        let event = event
            .clone()
            .detail(Detail::Count, pruned.count)
            .detail(Detail::FromSeq, pruned.from_seq)
            .detail(Detail::ToSeq, pruned.anchor.seq)
            .detail(Detail::Anchor, pruned.anchor.hash.to_string());
        Self::append(&mut tx, &event, now.0).await?;
        tx.commit().await?;
        Ok(Some(pruned))
    }

    /// Stores a signed checkpoint and appends `event` (its `audit-checkpoint` entry), in
    /// one transaction.
    pub(super) async fn put_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        event: &Event,
        now: tacit_api::Timestamp,
    ) -> Result<Entry, StoreError> {
        let bytes = |text: &str, what| hex::decode(text).map_err(|_| StoreError::Corrupt(what));
        let head = bytes(&checkpoint.head, "checkpoint.head")?;
        let public_key = bytes(&checkpoint.public_key, "checkpoint.public_key")?;
        let signature = bytes(&checkpoint.signature, "checkpoint.signature")?;
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head, time_ms, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sql::to_i64(checkpoint.seq, "checkpoint.seq")?)
        .bind(head.as_slice())
        .bind(checkpoint.time_ms)
        .bind(public_key.as_slice())
        .bind(signature.as_slice())
        .execute(&mut *tx)
        .await?;
        let entry = Self::append(&mut tx, event, now.0).await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// The checkpoint stored last, if any.
    pub(super) async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<CheckpointRow> = sqlx::query_as(
            "SELECT seq, head, time_ms, public_key, signature FROM audit_checkpoints \
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?;
        row.map(|(seq, head, time_ms, public_key, signature)| {
            Ok(Checkpoint {
                version: 1,
                seq: sql::to_u64(seq, "audit_checkpoints.seq")?,
                head: hex::encode(head),
                time_ms,
                public_key: hex::encode(public_key),
                signature: hex::encode(signature),
            })
        })
        .transpose()
    }
}

/// The details as stored: a JSON object of strings, keys in order.
fn details_json(details: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(details).unwrap_or_default()
}

fn to_entry_hash(bytes: Vec<u8>, what: &'static str) -> Result<EntryHash, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(EntryHash)
        .map_err(|_| StoreError::Corrupt(what))
}

/// A row as an entry. A row that cannot even be read as one (a column edited into a
/// value no append writes) is reported with its sequence number, as verification reports
/// any other edited entry.
fn entry(row: Row) -> Result<Entry, StoreError> {
    let (seq, time_ms, action, outcome, actor, target_user, device, source_ip, details, prev, hash) =
        row;
    let unreadable = |problem| StoreError::AuditUnreadable { seq, problem };
    let seq_number = u64::try_from(seq).map_err(|_| unreadable(AuditProblem::Seq))?;
    let target_device = device
        .map(u32::try_from)
        .transpose()
        .map_err(|_| unreadable(AuditProblem::TargetDevice))?;
    let details: BTreeMap<String, String> =
        serde_json::from_str(&details).map_err(|_| unreadable(AuditProblem::Details))?;
    let hash_of = |bytes: Vec<u8>| {
        <[u8; 32]>::try_from(bytes)
            .map(EntryHash)
            .map_err(|_| unreadable(AuditProblem::Hash))
    };
    Ok(Entry {
        seq: seq_number,
        time_ms,
        action,
        outcome,
        actor,
        target_user,
        target_device,
        source_ip,
        details,
        prev_hash: hash_of(prev)?,
        hash: hash_of(hash)?,
    })
}
