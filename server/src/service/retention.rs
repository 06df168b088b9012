//! Retention: what the housekeeping task deletes, in batches of `retention.purge_batch`
//! with a yield between them (so the group-commit writer gets the database between two
//! batches and sends are not held up behind a long purge), counted in
//! `tacit_retention_purged_total{kind}` and written to the audit log.
//!
//! - Envelopes past `limits.message_ttl_secs`: one `retention-purge` entry per purge.
//! - Blobs past `blobs.ttl_secs` (service/blobs.rs): likewise.
//! - Devices idle for `retention.idle_device_days`: each removed with its own
//!   `device-remove` entry (`reason: idle`); an account all of whose devices are idle is
//!   deleted with an `account-delete` entry (`reason: idle`).
//! - Audit entries older than `retention.audit_days` (never less than a year): pruned from
//!   the start of the chain, each batch with an `audit-prune` entry that records the new
//!   anchor, from which `audit verify` starts.
//!
//! It also answers `GET /v1/policy`: the disappearing-message maximum clients enforce.

use std::collections::HashSet;

use tacit_api::Timestamp;
use tracing::info;

use super::Origin;
use super::Services;
use super::credentials::Revoked;
use crate::audit::{Action, Detail};
use crate::error::ApiError;
use crate::store::StoreError;

/// A day, in the store's milliseconds.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What one idle-device purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdlePurge {
    /// Devices removed from accounts that keep another, active device.
    pub devices: u64,
    /// Accounts deleted because every device of theirs was idle.
    pub accounts: u64,
}

impl Services {
    /// The minutely retention job, on one node of a cluster at a time (the store's job
    /// lock; a node that finds it held skips this round, the holder is doing it): purge
    /// expired envelopes and blobs, prune old audit entries with `prune_key`, and (with
    /// `idle`) remove idle devices. Each failure is logged and the others still run.
    /// Returns whether this node ran it.
    pub async fn run_retention(
        &self,
        prune_key: Option<&crate::audit::AuditKey>,
        idle: bool,
    ) -> Result<bool, StoreError> {
        use tracing::warn;
        let Some(lock) = self
            .store
            .try_job_lock(crate::store::Job::Retention)
            .await?
        else {
            return Ok(false);
        };
        match self.purge_expired_messages(super::now()).await {
            Ok(0) => {}
            Ok(n) => info!(envelopes = n, "purged expired envelopes"),
            Err(e) => warn!(error = %e, "purging expired envelopes failed"),
        }
        match self.purge_expired_blobs(super::now()).await {
            Ok(0) => {}
            Ok(n) => info!(blobs = n, "purged expired blobs"),
            Err(e) => warn!(error = %e, "purging expired blobs failed"),
        }
        if let Some(key) = prune_key
            && let Err(e) = self.purge_audit(super::now(), key).await
        {
            warn!(error = %e, "pruning old audit entries failed");
        }
        if idle && let Err(e) = self.purge_idle_devices(super::now()).await {
            warn!(error = %e, "removing idle devices failed");
        }
        lock.release().await;
        Ok(true)
    }

    /// Delete the envelopes expired at `now` (and the idempotency records, provisioning
    /// channels and used sign-in tokens expired with them), a batch at a time. Returns how
    /// many envelopes went (one `retention-purge` audit entry when some did).
    pub async fn purge_expired_messages(&self, now: Timestamp) -> Result<u64, StoreError> {
        let batch = self.config.retention.purge_batch;
        let mut purged = 0;
        loop {
            let gone = self.store.purge_expired(now, batch).await;
            let gone = match gone {
                Ok(gone) => gone,
                Err(e) => {
                    // What went before this batch is gone and must be recorded.
                    self.audit_purge("envelopes", purged).await;
                    return Err(e);
                }
            };
            purged += gone;
            self.metrics.purged("envelopes", gone);
            if gone < u64::from(batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
        self.audit_purge("envelopes", purged).await;
        Ok(purged)
    }

    /// Prune the audit entries appended more than `retention.audit_days` before `now`
    /// (none when it is 0), a batch at a time from the start of the chain; each batch is
    /// one transaction with its `audit-prune` entry (`count`, `from_seq`, `to_seq`,
    /// `anchor`). Returns how many entries went.
    ///
    /// Each new anchor is signed with `key` (the audit key): without it, someone who can
    /// write the database could delete a prefix and claim retention did.
    pub async fn purge_audit(
        &self,
        now: Timestamp,
        key: &crate::audit::AuditKey,
    ) -> Result<u64, StoreError> {
        let days = self.config.retention.audit_days;
        if days == 0 {
            return Ok(0);
        }
        // Configuration is validated at load; the floor holds here whatever it says.
        let days = days.max(crate::config::AUDIT_FLOOR_DAYS);
        let before = now.0.saturating_sub(i64::from(days) * DAY_MS);
        let event = Origin::Server
            .event(Action::AuditPrune)
            .detail(Detail::Reason, "retention");
        let mut purged = 0;
        loop {
            let batch = self.config.retention.purge_batch;
            match self
                .store
                .prune_audit(before, batch, key, &event, now)
                .await
            {
                Ok(Some(pruned)) => {
                    self.count_audited(Action::AuditPrune);
                    self.metrics.purged("audit", pruned.count);
                    purged += pruned.count;
                    if pruned.count < u64::from(batch) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.metrics.audit_append_failures.inc();
                    return Err(e);
                }
            }
            tokio::task::yield_now().await;
        }
        if purged > 0 {
            info!(entries = purged, days, "pruned old audit entries");
        }
        Ok(purged)
    }

    /// The policy clients are asked to enforce (`GET /v1/policy`).
    pub fn policy(&self) -> tacit_api::Policy {
        let max = self.config.retention.disappearing_max_secs;
        tacit_api::Policy {
            disappearing_max_secs: (max > 0).then_some(max),
        }
    }

    /// Count the devices with a socket open to this node as seen now (written with the
    /// next flush of contact times). Called hourly by every node, so that a device that
    /// stays connected to one node is not idle to the others.
    pub fn mark_connected_seen(&self) {
        for mailbox in self.hub.connected() {
            self.last_seen.saw(mailbox);
        }
    }

    /// Remove the devices with no contact for `retention.idle_device_days` before `now`
    /// (none when it is 0), and delete the accounts all of whose devices are idle. Each
    /// removal is audited with `reason: idle`; credentials stop working and sockets close
    /// at once, as for an administrator's removal.
    pub async fn purge_idle_devices(&self, now: Timestamp) -> Result<IdlePurge, ApiError> {
        let mut done = IdlePurge::default();
        let days = self.config.retention.idle_device_days;
        if days == 0 {
            return Ok(done);
        }
        // A device on an open socket is in contact (it authenticated when the socket
        // opened, maybe days ago); contact is written to the store about once a minute:
        // write what is pending first.
        self.mark_connected_seen();
        self.flush_last_seen().await?;
        let before = Timestamp(now.0.saturating_sub(i64::from(days) * DAY_MS));
        let batch = self.config.retention.purge_batch;
        loop {
            let idle = self.store.idle_devices(before, batch).await?;
            let mut progress = false;
            let mut deleted = HashSet::new();
            for device in &idle {
                let account = device.mailbox.account;
                if deleted.contains(&account) {
                    continue;
                }
                if device.others_active {
                    let audit = Origin::Server
                        .event(Action::DeviceRemove)
                        .target(&device.username)
                        .device(device.mailbox.device.0)
                        .detail(Detail::Reason, "idle");
                    match self.store.remove_device(device.mailbox, now, &audit).await {
                        Ok(true) => {
                            self.count_audited(Action::DeviceRemove);
                            self.credentials.revoke(device.mailbox, Revoked::Removed);
                            self.hub.revoke(device.mailbox);
                            self.metrics.purged("devices", 1);
                            done.devices += 1;
                            progress = true;
                        }
                        // Removed meanwhile, or the account's active devices went meanwhile
                        // (the next purge deletes the account).
                        Ok(false) | Err(StoreError::LastDevice) => {}
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    let audit = Origin::Server
                        .event(Action::AccountDelete)
                        .target(&device.username)
                        .detail(Detail::Reason, "idle");
                    self.delete_account_of(account, &device.username, &audit)
                        .await?;
                    self.metrics.purged("accounts", 1);
                    deleted.insert(account);
                    done.accounts += 1;
                    progress = true;
                }
            }
            if idle.len() < batch as usize || !progress {
                break;
            }
            tokio::task::yield_now().await;
        }
        if done != IdlePurge::default() {
            info!(
                devices = done.devices,
                accounts = done.accounts,
                days,
                "removed idle devices"
            );
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use tacit_api::{Ciphertext, DeviceId};

    use super::*;
    use crate::config::Config;
    use crate::store::{
        Mailbox, NewDevice, NewMessage, PostgresStore, SecretHash, SqliteStore, Store,
    };

    fn device(tag: u8) -> NewDevice {
        NewDevice {
            name: None,
            credential_hash: SecretHash::from_bytes([tag; 32]),
            keys: crate::store::tests::keys(2),
        }
    }

    fn ev() -> crate::audit::Event {
        crate::audit::Event::new(Action::AccountRegister, crate::audit::Outcome::Success)
    }

    /// Expired envelopes and blobs go in batches, each purge counted and audited once
    /// (blobs with their files); idle devices go one by
    /// one, an account with only idle devices as a whole, each audited `reason: idle`; the
    /// active ones stay, and with `idle_device_days = 0` nothing is removed.
    async fn retention(store: Arc<dyn Store>) {
        store.migrate().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let start = Timestamp(1_000);
        let month = Timestamp(start.0 + 31 * DAY_MS);
        let alice = store
            .create_account("alice", None, device(1), start, &ev())
            .await
            .unwrap();
        store
            .add_device(alice, device(2), 5, start, &ev())
            .await
            .unwrap();
        let bob = store
            .create_account("bob", None, device(3), start, &ev())
            .await
            .unwrap();
        // Carol registered a week before the purge; alice's first device was seen then.
        let carol = store
            .create_account(
                "carol",
                None,
                device(4),
                Timestamp(month.0 - 7 * DAY_MS),
                &ev(),
            )
            .await
            .unwrap();
        // Dave's account was disabled by an administrator: kept, idle or not.
        let dave = store
            .create_account("dave", None, device(5), start, &ev())
            .await
            .unwrap();
        store
            .set_disabled(dave, true, start, &ev())
            .await
            .unwrap()
            .unwrap();
        // Erin's only device has had a socket open since long before: in contact, kept.
        let erin = store
            .create_account("erin", None, device(6), start, &ev())
            .await
            .unwrap();
        let alice1 = Mailbox {
            account: alice,
            device: DeviceId(1),
        };
        store
            .touch_devices(&[(alice1, Timestamp(month.0 - 7 * DAY_MS))])
            .await
            .unwrap();
        let carol1 = Mailbox {
            account: carol,
            device: DeviceId(1),
        };
        for i in 0..7 {
            let sent = store
                .store_message(
                    NewMessage {
                        sender: Mailbox {
                            account: bob,
                            device: DeviceId(1),
                        },
                        recipients: vec![carol],
                        sender_username: "bob".into(),
                        client_message_id: format!("m{i}"),
                        server_ts: start,
                        expires_at: Timestamp(start.0 + 1000),
                        remember_until: Timestamp(start.0 + 1000),
                        max_mailbox_depth: 100,
                        envelopes: vec![(carol1, Ciphertext(vec![7].into()))],
                        body: None,
                    },
                    &crate::service::Rules,
                )
                .await;
            assert!(
                matches!(sent, Ok(crate::store::SendOutcome::Stored(_))),
                "{sent:?}"
            );
        }

        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.retention.purge_batch = 3;
        let keep = Services::new(store.clone(), Arc::new(config.clone()));
        assert_eq!(
            keep.purge_idle_devices(month).await.unwrap(),
            IdlePurge::default()
        );
        config.retention.idle_device_days = 30;
        let svc = Services::new(store.clone(), Arc::new(config));
        let _socket = svc.hub.register(Mailbox {
            account: erin,
            device: DeviceId(1),
        });

        // Seven envelopes in batches of three: one purge, one audit entry.
        assert_eq!(svc.purge_expired_messages(month).await.unwrap(), 7);
        assert_eq!(svc.purge_expired_messages(month).await.unwrap(), 0);
        assert_eq!(store.stats().await.unwrap().envelopes, 0);
        // Blobs: kept until their TTL, then deleted with their files.
        let caller = crate::service::AuthedDevice {
            mailbox: carol1,
            username: "carol".into(),
        };
        for size in [4, 8] {
            svc.create_blob(&caller, tacit_api::CreateBlobRequest { size })
                .await
                .unwrap();
        }
        let real_now = crate::service::now();
        assert_eq!(svc.purge_expired_blobs(real_now).await.unwrap(), 0);
        let later = Timestamp(real_now.0 + 31 * DAY_MS);
        assert_eq!(svc.purge_expired_blobs(later).await.unwrap(), 2);
        assert!(store.expired_blobs(later, 10).await.unwrap().is_empty());

        assert_eq!(
            svc.purge_idle_devices(month).await.unwrap(),
            IdlePurge {
                devices: 1,
                accounts: 1
            }
        );
        let alice_devices: Vec<u32> = store
            .devices(alice)
            .await
            .unwrap()
            .iter()
            .map(|d| d.device_id.0)
            .collect();
        assert_eq!(alice_devices, [1], "the idle second device went");
        assert_eq!(store.account_id("bob").await.unwrap(), None);
        assert!(store.devices(bob).await.unwrap().is_empty());
        assert_eq!(store.devices(carol).await.unwrap().len(), 1);
        assert_eq!(
            store.devices(dave).await.unwrap().len(),
            1,
            "disabled, kept"
        );
        assert_eq!(
            store.devices(erin).await.unwrap().len(),
            1,
            "connected, kept"
        );
        // Nothing more is idle.
        assert_eq!(
            svc.purge_idle_devices(month).await.unwrap(),
            IdlePurge::default()
        );

        let entries = store.audit_entries(0, 100).await.unwrap();
        let of = |action: &str| -> Vec<&crate::audit::Entry> {
            entries.iter().filter(|e| e.action == action).collect()
        };
        let purges: Vec<(&str, &str)> = of("retention-purge")
            .iter()
            .map(|e| (e.details["scope"].as_str(), e.details["count"].as_str()))
            .collect();
        assert_eq!(purges, [("envelopes", "7"), ("blobs", "2")]);
        let removed = of("device-remove");
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].target_user.as_deref(), Some("alice"));
        assert_eq!(removed[0].target_device, Some(2));
        assert_eq!(removed[0].details["reason"], "idle");
        let deleted = of("account-delete");
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(deleted[0].target_user.as_deref(), Some("bob"));
        assert_eq!(deleted[0].details["reason"], "idle");

        let text = svc
            .metrics
            .render(None, &crate::metrics::Operations::default());
        for line in [
            "tacit_retention_purged_total{kind=\"envelopes\"} 7",
            "tacit_retention_purged_total{kind=\"devices\"} 1",
            "tacit_retention_purged_total{kind=\"accounts\"} 1",
            "tacit_retention_purged_total{kind=\"blobs\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    /// Runs SQL on the store's database directly (as someone who can write it).
    async fn exec(url: &str, statements: &[&str]) {
        use sqlx::Connection as _;
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
            c.close().await.unwrap();
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
            c.close().await.unwrap();
        }
    }

    /// Audit entries older than `retention.audit_days` are pruned from the start of the
    /// chain in batches, each batch with an `audit-prune` entry naming the new anchor;
    /// the pruned chain verifies from the anchor; the floor of a year holds even when the
    /// configuration says less; and a prefix deleted by hand, with or without the anchor
    /// moved, is reported.
    async fn audit_retention(store: Arc<dyn Store>, url: &str) {
        use crate::audit::{Outcome, chain::Problem};
        use crate::service::AuditError;

        store.migrate().await.unwrap();
        let t0 = 1_000_000;
        let recent = t0 + 300 * DAY_MS;
        for i in 0..10 {
            let time = if i < 8 { t0 + i } else { recent + i };
            let event = crate::audit::Event::new(Action::QuotaSet, Outcome::Success)
                .target(format!("user{i}"));
            store.append_audit(&event, Timestamp(time)).await.unwrap();
        }
        let mut config = Config::default();
        config.retention.audit_days = 365;
        config.retention.purge_batch = 3;
        let svc = Services::new(store.clone(), Arc::new(config));
        let key = crate::audit::AuditKey::from_seed(&[3; 32]);
        let public = key.public();
        // A checkpoint kept outside, of entry 5: it will cover only pruned entries.
        let all = store.audit_entries(0, 100).await.unwrap();
        let early = key.checkpoint(crate::audit::Head::of(&all[4]), t0);
        let now = Timestamp(t0 + 370 * DAY_MS);
        // Entries 1 to 8 are older than a year; 9 and 10 are not. Batches of three: 1-3,
        // 4-6, 7-8, each with its own audit-prune entry (11, 12, 13).
        assert_eq!(svc.purge_audit(now, &key).await.unwrap(), 8);
        assert_eq!(svc.purge_audit(now, &key).await.unwrap(), 0);
        let signed = store.audit_anchor().await.unwrap();
        signed.verify(&public).unwrap();
        assert_eq!(signed.entry_time_ms, t0 + 7);
        assert_eq!(signed.pruned_at_ms, now.0);
        let anchor = signed.head;
        assert_eq!(anchor.seq, 8);
        let kept = store.audit_entries(0, 100).await.unwrap();
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [9, 10, 11, 12, 13]);
        assert_eq!(kept[0].prev_hash, anchor.hash);
        let prunes: Vec<[&str; 4]> = kept[2..]
            .iter()
            .map(|e| {
                assert_eq!(e.action, "audit-prune");
                assert_eq!(e.details["reason"], "retention");
                [
                    e.details["count"].as_str(),
                    e.details["from_seq"].as_str(),
                    e.details["to_seq"].as_str(),
                    e.details["anchor"].as_str(),
                ]
            })
            .collect();
        let anchor_hex = anchor.hash.to_string();
        assert_eq!(prunes[0][..3], ["3", "1", "3"]);
        assert_eq!(prunes[1][..3], ["3", "4", "6"]);
        assert_eq!(prunes[2], ["2", "7", "8", anchor_hex.as_str()]);
        let verified = svc.audit_verify(&[early], Some(&public)).await.unwrap();
        assert_eq!(
            (
                verified.head.seq,
                verified.anchor,
                verified.checkpoints,
                verified.before_anchor
            ),
            (13, anchor, 0, 1)
        );
        let text = svc
            .metrics
            .render(None, &crate::metrics::Operations::default());
        for line in [
            "tacit_retention_purged_total{kind=\"audit\"} 8",
            "tacit_audit_events_total{action=\"audit-prune\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }

        // The floor: a configuration of one day (refused at load) still keeps a year.
        let mut short = Config::default();
        short.retention.audit_days = 1;
        let hasty = Services::new(store.clone(), Arc::new(short));
        let later = Timestamp(recent + 10 * DAY_MS);
        assert_eq!(hasty.purge_audit(later, &key).await.unwrap(), 0);
        assert_eq!(store.audit_anchor().await.unwrap(), signed);

        // Tampering, each undone before the next.
        exec(
            url,
            &[
                "CREATE TABLE saved_log AS SELECT * FROM audit_log",
                "CREATE TABLE saved_anchor AS SELECT * FROM audit_anchor",
                "CREATE TABLE saved_head AS SELECT * FROM audit_head",
            ],
        )
        .await;
        let undo = [
            "DELETE FROM audit_log",
            "INSERT INTO audit_log SELECT * FROM saved_log",
            "DELETE FROM audit_anchor",
            "INSERT INTO audit_anchor SELECT * FROM saved_anchor",
            "DELETE FROM audit_head",
            "INSERT INTO audit_head SELECT * FROM saved_head",
        ];
        let broken = |result: Result<_, AuditError>| {
            let e = result.unwrap_err();
            assert!(e.is_broken(), "{e}");
            e
        };
        // Entry 9 deleted: a gap right after the anchor.
        exec(url, &["DELETE FROM audit_log WHERE seq = 9"]).await;
        match broken(svc.audit_verify(&[], Some(&public)).await) {
            AuditError::Broken(b) => {
                assert_eq!((b.seq, b.problem), (9, Problem::Missing { found: 10 }));
            }
            other => panic!("{other}"),
        }
        exec(url, &undo).await;
        // Entry 9 deleted and the anchor moved onto it, as if a prune had taken it (the
        // prune entry that would name it can be forged; the anchor's signature cannot).
        exec(
            url,
            &[
                "UPDATE audit_anchor SET seq = 9, hash = (SELECT hash FROM audit_log WHERE seq = 9)",
                "DELETE FROM audit_log WHERE seq = 9",
            ],
        )
        .await;
        assert!(matches!(
            broken(svc.audit_verify(&[], Some(&public)).await),
            AuditError::Checkpoint(crate::audit::CheckpointError::BadAnchorSignature(9))
        ));
        // Retention never builds on it: the next prune is refused, nothing deleted.
        let later = Timestamp(recent + 400 * DAY_MS);
        let err = svc.purge_audit(later, &key).await.unwrap_err();
        assert!(matches!(err, StoreError::AuditPruneRefused(_)), "{err}");
        exec(url, &undo).await;
        // Entry 9 made to look a year old by an edit of its time: the prune checks the
        // hash before it trusts the time, refuses, and deletes nothing.
        exec(url, &["UPDATE audit_log SET time_ms = 0 WHERE seq = 9"]).await;
        let err = svc.purge_audit(now, &key).await.unwrap_err();
        assert!(matches!(err, StoreError::AuditPruneRefused(_)), "{err}");
        assert_eq!(store.audit_anchor().await.unwrap(), signed);
        assert_eq!(store.audit_entries(0, 1).await.unwrap()[0].seq, 9);
        exec(url, &undo).await;
        // The anchor reset: the pruned prefix reads as deleted.
        let zeros = if url.starts_with("sqlite:") {
            "zeroblob(32)"
        } else {
            "decode(repeat('00', 32), 'hex')"
        };
        exec(
            url,
            &[&format!("UPDATE audit_anchor SET seq = 0, hash = {zeros}")],
        )
        .await;
        match broken(svc.audit_verify(&[], Some(&public)).await) {
            AuditError::Broken(b) => {
                assert_eq!((b.seq, b.problem), (1, Problem::Missing { found: 9 }));
            }
            other => panic!("{other}"),
        }
        exec(url, &undo).await;
        // The anchor's hash rewritten: its signature no longer holds.
        exec(
            url,
            &["UPDATE audit_anchor SET hash = (SELECT hash FROM audit_log WHERE seq = 10)"],
        )
        .await;
        assert!(matches!(
            broken(svc.audit_verify(&[], Some(&public)).await),
            AuditError::Checkpoint(crate::audit::CheckpointError::BadAnchorSignature(8))
        ));
        exec(url, &undo).await;
        // Every audit-prune entry gone with the rest of the chain rewritten is beyond what
        // the chain alone shows; without them, the anchor is unrecorded.
        exec(url, &["DELETE FROM audit_log WHERE seq > 10"]).await;
        exec(
            url,
            &["UPDATE audit_head SET seq = 10, hash = (SELECT hash FROM audit_log WHERE seq = 10)"],
        )
        .await;
        assert!(matches!(
            broken(svc.audit_verify(&[], Some(&public)).await),
            AuditError::AnchorUnrecorded { anchor: 8 }
        ));
        exec(url, &undo).await;
        svc.audit_verify(&[], Some(&public)).await.unwrap();
        // A node with another audit key (a cluster whose nodes do not share the key file)
        // does not prune on from this anchor.
        let other = crate::audit::AuditKey::from_seed(&[9; 32]);
        let later = Timestamp(recent + 400 * DAY_MS);
        let err = svc.purge_audit(later, &other).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::AuditPruneRefused(why) if why.contains("another key")),
            "{err}"
        );
        assert_eq!(store.audit_anchor().await.unwrap(), signed);
    }

    #[tokio::test]
    async fn sqlite_audit_retention() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
        audit_retention(Arc::new(SqliteStore::connect(&url).await.unwrap()), &url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_audit_retention() {
        let db = tacit_tests::TestDatabase::create()
            .await
            .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
        audit_retention(
            Arc::new(PostgresStore::connect(&db.url).await.unwrap()),
            &db.url,
        )
        .await;
    }

    /// The retention job runs on one node at a time: a second node on the same database
    /// finds the lock held and skips its round; the lock comes back when released, and
    /// when its holder dies (its connection closes); SQLite (one node) always has it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_retention_runs_on_one_node_at_a_time() {
        use crate::store::Job;
        let db = tacit_tests::TestDatabase::create()
            .await
            .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
        let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).await.unwrap());
        a.migrate().await.unwrap();
        let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&db.url).await.unwrap());
        let node_b = Services::new(b.clone(), Arc::new(Config::default()));
        let held = a.try_job_lock(Job::Retention).await.unwrap().expect("free");
        assert!(b.try_job_lock(Job::Retention).await.unwrap().is_none());
        assert!(!node_b.run_retention(None, true).await.unwrap(), "skipped");
        held.release().await;
        assert!(node_b.run_retention(None, true).await.unwrap(), "ran");
        // Released after the run: node a can take it.
        a.try_job_lock(Job::Retention)
            .await
            .unwrap()
            .expect("released after the run")
            .release()
            .await;
        // A holder that goes away without releasing (a node killed): its connection
        // closes, and the lock with it.
        let held = b.try_job_lock(Job::Retention).await.unwrap().unwrap();
        drop(held);
        let mut freed = false;
        for _ in 0..100 {
            if let Some(lock) = a.try_job_lock(Job::Retention).await.unwrap() {
                lock.release().await;
                freed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(freed, "a dropped lock is released by its closed connection");
        a.close().await;
        b.close().await;
    }

    #[tokio::test]
    async fn sqlite_retention_job_lock_is_always_granted() {
        use crate::store::Job;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let first = store.try_job_lock(Job::Retention).await.unwrap().unwrap();
        let second = store.try_job_lock(Job::Retention).await.unwrap();
        assert!(second.is_some(), "one node: nothing to exclude");
        first.release().await;
    }

    #[tokio::test]
    async fn sqlite_retention() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
        retention(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_retention() {
        let db = tacit_tests::TestDatabase::create()
            .await
            .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
        retention(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
    }
}
