//! The audit log as the services use it: who caused an audited action ([`Origin`]), and
//! verifying, exporting and checkpointing the stored chain (`tacit-server audit ...`).
//!
//! The entries of audited actions are appended by the store inside each action's own
//! transaction; this module only builds their events. Verification reads the chain in
//! pages through [`Verifier`], so the whole log is never held in memory, and works while
//! the server appends (the head is read first, and entries are only ever added after it).

use std::net::IpAddr;

use ed25519_dalek::VerifyingKey;

use super::{Services, now};
use crate::audit::export::Record;
use crate::audit::{
    Action, Anchor, AuditKey, Broken, Checkpoint, CheckpointError, Detail, Event, Head, Outcome,
    Verifier,
};
use crate::store::StoreError;

/// Entries read per page when verifying or exporting.
const PAGE: u32 = 1000;

/// Who caused an audited action: what its entry records of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `tacit-server` run on the server host (recorded as `via: host`).
    Host,
    /// A client's request, from this address when the listener knows it.
    Client(Option<IpAddr>),
    /// The running server by itself (its housekeeping: periodic checkpoints, purges).
    Server,
}

impl Origin {
    /// A successful `action`'s event, with what this origin records.
    #[must_use]
    pub fn event(self, action: Action) -> Event {
        let event = Event::new(action, Outcome::Success);
        match self {
            Self::Host => event.detail(Detail::Via, "host"),
            Self::Client(Some(ip)) => event.source(ip.to_string()),
            Self::Client(None) | Self::Server => event,
        }
    }
}

/// Where an export starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Every entry.
    Start,
    /// Entries from this sequence number on.
    Seq(u64),
    /// Entries appended at or after this time (ms since the epoch).
    Time(i64),
}

/// Why the audit log could not be verified, or where it is broken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The chain is broken at this entry.
    #[error(transparent)]
    Broken(#[from] Broken),
    /// The chain ends before the head the database records: its last entries were
    /// deleted.
    #[error(
        "audit entry {missing}: it is missing: the log ends at entry {last} but the database's head records entry {head} (truncated)"
    )]
    BehindHead {
        /// The first missing entry.
        missing: u64,
        /// The last stored entry.
        last: u64,
        /// The entry the head records.
        head: u64,
    },
    /// Entries were pruned up to the anchor, but no `audit-prune` entry in the chain
    /// records a prune: the anchor row was written by hand (a prefix deleted with it).
    #[error(
        "audit log starts after entry {anchor}, but no audit-prune entry records a prune (entries deleted and the anchor moved by hand)"
    )]
    AnchorUnrecorded {
        /// The last pruned entry, as the anchor row says.
        anchor: u64,
    },
    /// The last `audit-prune` entry records another end of the pruned entries than the
    /// anchor row holds.
    #[error(
        "audit log starts after entry {anchor}, but the last prune (entry {entry}) records another anchor (the anchor row was rewritten)"
    )]
    AnchorMismatch {
        /// The last pruned entry, as the anchor row says.
        anchor: u64,
        /// The last `audit-prune` entry.
        entry: u64,
    },
    /// The signed anchor says its last pruned entry was appended less than the audit
    /// floor (a year) before the prune: no retention prune does that.
    #[error(
        "audit log starts after entry {0}, which was pruned less than a year after it was appended (the floor retention never goes below)"
    )]
    AnchorTooRecent(u64),
    /// The entry the database's head names has another hash than the head records.
    #[error(
        "audit entry {0}: it differs from the head the database records (rewritten at or before it)"
    )]
    HeadMismatch(u64),
    /// A checkpoint (kept or stored) is not valid under the server's audit key.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The store failed, or a row is unreadable ([`StoreError::AuditUnreadable`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the export failed.
    #[error("writing the export: {0}")]
    Write(#[source] std::io::Error),
}

impl AuditError {
    /// Whether the log itself is found broken (as opposed to the check failing to run).
    #[must_use]
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            Self::Broken(_)
                | Self::BehindHead { .. }
                | Self::AnchorUnrecorded { .. }
                | Self::AnchorMismatch { .. }
                | Self::AnchorTooRecent(_)
                | Self::Checkpoint(CheckpointError::BadAnchorSignature(_))
                | Self::HeadMismatch(_)
                | Self::Store(StoreError::AuditUnreadable { .. })
        )
    }
}

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The head of the unbroken chain (its `seq` is the number of entries ever appended).
    pub head: Head,
    /// Where the stored chain starts: the last entry retention pruned
    /// ([`Head::EMPTY`] when none was).
    pub anchor: Head,
    /// How many checkpoints it was compared against.
    pub checkpoints: usize,
    /// How many checkpoints cover only pruned entries (and so could not be compared).
    pub before_anchor: usize,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// How many entries.
    pub count: u64,
    /// The first and last exported entry, if any.
    pub range: Option<(u64, u64)>,
}

impl Services {
    /// Checks the stored chain from its first entry (or, once retention pruned the oldest
    /// ones, from the anchor: the first kept entry must follow it, and the `audit-prune`
    /// entry that set it must record it): every hash, every link, no gap; that it reaches
    /// the head the database records; and that it matches every checkpoint in `kept` and
    /// the last stored one (each checked under `key` first; one older than the anchor can
    /// no longer be compared and is only counted). Returns the first problem found.
    pub async fn audit_verify(
        &self,
        kept: &[Checkpoint],
        key: Option<&VerifyingKey>,
    ) -> Result<Verified, AuditError> {
        let mut checkpoints: Vec<&Checkpoint> = kept.iter().collect();
        let stored = self.store.last_checkpoint().await?;
        checkpoints.extend(stored.as_ref());
        let mut loaded = None;
        let mut key = || -> Result<VerifyingKey, AuditError> {
            if let Some(key) = key {
                return Ok(*key);
            }
            if let Some(key) = loaded {
                return Ok(key);
            }
            let key = AuditKey::load(&self.config.audit_key_file())?.public();
            loaded = Some(key);
            Ok(key)
        };
        let mut expected = Vec::with_capacity(checkpoints.len());
        for checkpoint in &checkpoints {
            expected.push(checkpoint.verify(&key()?)?);
        }
        // A prune that commits while we read moves the anchor past what we were about to
        // read, or appends its entry: start again from the new anchor (a few times at
        // most).
        let mut attempts = 0;
        loop {
            attempts += 1;
            // The anchor, then the head: whatever is appended while we read lies after the
            // head, and a prune that commits meanwhile leaves a gap after this anchor (and
            // moves it), which starts the check again.
            let anchor = self.store.audit_anchor().await?;
            let recorded = self.store.audit_head().await?;
            if anchor.head != Head::EMPTY {
                anchor.verify(&key()?)?;
            }
            match self
                .verify_from(anchor, recorded, expected.clone(), checkpoints.len())
                .await
            {
                Err(e)
                    if attempts < 4
                        && e.is_broken()
                        && self.store.audit_anchor().await? != anchor =>
                {
                    continue;
                }
                result => return result,
            }
        }
    }

    /// [`Self::audit_verify`] from one (verified) anchor, up to the `recorded` head.
    async fn verify_from(
        &self,
        anchor: Anchor,
        recorded: Head,
        expected: Vec<Head>,
        checkpoints: usize,
    ) -> Result<Verified, AuditError> {
        let floor_ms = i64::from(crate::config::AUDIT_FLOOR_DAYS) * 24 * 3600 * 1000;
        if anchor.head != Head::EMPTY
            && anchor.entry_time_ms.saturating_add(floor_ms) > anchor.pruned_at_ms
        {
            return Err(AuditError::AnchorTooRecent(anchor.head.seq));
        }
        let (mut verifier, before_anchor) = Verifier::from_anchor(anchor.head, expected)?;
        let mut last_prune: Option<(u64, Option<String>, Option<String>)> = None;
        let mut after = anchor.head.seq;
        let prune = Action::AuditPrune.as_str();
        'pages: loop {
            let page = self.store.audit_entries(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                if entry.seq > recorded.seq {
                    // Appended after we started: not part of what is verified.
                    break 'pages;
                }
                verifier.push(entry)?;
                if entry.seq == recorded.seq && entry.hash != recorded.hash {
                    return Err(AuditError::HeadMismatch(entry.seq));
                }
                if entry.action == prune {
                    let detail = |key: Detail| entry.details.get(key.as_str()).cloned();
                    last_prune = Some((entry.seq, detail(Detail::ToSeq), detail(Detail::Anchor)));
                }
            }
        }
        let head = verifier.finish()?;
        if head.seq < recorded.seq {
            return Err(AuditError::BehindHead {
                missing: head.seq + 1,
                last: head.seq,
                head: recorded.seq,
            });
        }
        let anchor = anchor.head;
        if anchor != Head::EMPTY {
            // The chain itself must say where the last prune ended, as the anchor does.
            let Some((seq, to_seq, hash)) = last_prune else {
                return Err(AuditError::AnchorUnrecorded { anchor: anchor.seq });
            };
            if to_seq != Some(anchor.seq.to_string()) || hash != Some(anchor.hash.to_string()) {
                return Err(AuditError::AnchorMismatch {
                    anchor: anchor.seq,
                    entry: seq,
                });
            }
        }
        Ok(Verified {
            head,
            anchor,
            checkpoints: checkpoints - before_anchor,
            before_anchor,
        })
    }

    /// Writes the entries from `since` on as ECS-style JSON lines (see `docs/AUDIT.md`),
    /// then records the export itself in the log (an `audit-export` entry, after the ones
    /// exported).
    pub async fn audit_export(
        &self,
        since: Since,
        out: &mut (dyn std::io::Write + Send),
        origin: Origin,
    ) -> Result<Exported, AuditError> {
        let mut after = match since {
            Since::Seq(seq) => seq.saturating_sub(1),
            Since::Start | Since::Time(_) => 0,
        };
        let mut exported = Exported {
            count: 0,
            range: None,
        };
        loop {
            let page = self.store.audit_entries(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                if let Since::Time(time) = since
                    && entry.time_ms < time
                {
                    continue;
                }
                writeln!(out, "{}", Record::of(entry).to_line()).map_err(AuditError::Write)?;
                exported.count += 1;
                exported.range = Some(match exported.range {
                    Some((first, _)) => (first, entry.seq),
                    None => (entry.seq, entry.seq),
                });
            }
        }
        out.flush().map_err(AuditError::Write)?;
        let mut event = origin
            .event(Action::AuditExport)
            .detail(Detail::Count, exported.count);
        if let Some((first, last)) = exported.range {
            event = event
                .detail(Detail::FromSeq, first)
                .detail(Detail::ToSeq, last);
        }
        self.audit_event(&event).await?;
        Ok(exported)
    }

    /// Signs the head the database records now with `key`, stores the checkpoint and
    /// records it in the log (an `audit-checkpoint` entry, after the ones it covers).
    pub async fn audit_checkpoint(
        &self,
        key: &AuditKey,
        origin: Origin,
    ) -> Result<Checkpoint, AuditError> {
        let head = self.store.audit_head().await?;
        let time = now();
        let checkpoint = key.checkpoint(head, time.0);
        let event = origin
            .event(Action::AuditCheckpoint)
            .detail(Detail::ToSeq, head.seq);
        match self.store.put_checkpoint(&checkpoint, &event, time).await {
            Ok(_) => self.count_audited(Action::AuditCheckpoint),
            Err(e) => {
                self.metrics.audit_append_failures.inc();
                return Err(e.into());
            }
        }
        Ok(checkpoint)
    }

    /// The housekeeping task's checkpoint: signs and stores one with `key` (as
    /// [`Services::audit_checkpoint`] does) when entries were appended since the last
    /// stored checkpoint, other than that checkpoint's own `audit-checkpoint` entry, so
    /// that the same head is never signed twice. `None` when there was nothing new.
    pub async fn periodic_checkpoint(
        &self,
        key: &AuditKey,
    ) -> Result<Option<Checkpoint>, AuditError> {
        /// Entries read past the last checkpoint: one that is not a checkpoint's entry
        /// is enough.
        const LOOK_AHEAD: u32 = 16;
        let covered = self
            .store
            .last_checkpoint()
            .await?
            .map_or(0, |checkpoint| checkpoint.seq);
        let after = self.store.audit_entries(covered, LOOK_AHEAD).await?;
        let checkpoint_entry = Action::AuditCheckpoint.as_str();
        let nothing_new = u32::try_from(after.len()).is_ok_and(|n| n < LOOK_AHEAD)
            && after.iter().all(|entry| entry.action == checkpoint_entry);
        if nothing_new {
            return Ok(None);
        }
        self.audit_checkpoint(key, Origin::Server).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::config::Config;

    /// The periodic checkpoint signs only a head it has not signed: not an empty log, not
    /// the log again when only its own `audit-checkpoint` entry came after.
    #[tokio::test]
    async fn periodic_checkpoints_sign_each_head_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let svc = Services::new(store.clone(), Arc::new(Config::default()));
        let key = AuditKey::from_seed(&[9; 32]);
        assert!(svc.periodic_checkpoint(&key).await.unwrap().is_none());
        svc.audit_event(&Origin::Server.event(Action::RetentionPurge))
            .await
            .unwrap();
        let first = svc.periodic_checkpoint(&key).await.unwrap().unwrap();
        assert_eq!(first.seq, 1);
        assert!(svc.periodic_checkpoint(&key).await.unwrap().is_none());
        assert!(svc.periodic_checkpoint(&key).await.unwrap().is_none());
        svc.audit_event(&Origin::Server.event(Action::RetentionPurge))
            .await
            .unwrap();
        let second = svc.periodic_checkpoint(&key).await.unwrap().unwrap();
        assert_eq!(
            second.seq, 3,
            "the first checkpoint's entry and the new one"
        );
        assert!(svc.periodic_checkpoint(&key).await.unwrap().is_none());
        let entries = store.audit_entries(0, 10).await.unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "retention-purge",
                "audit-checkpoint",
                "retention-purge",
                "audit-checkpoint"
            ]
        );
        assert!(!entries[1].details.contains_key("via"), "not from the host");
        let text = svc
            .metrics
            .render(None, &crate::metrics::Operations::default());
        assert!(
            text.contains("tacit_audit_events_total{action=\"audit-checkpoint\"} 2"),
            "{text}"
        );
        store.close().await;
    }
}
