//! Security events in the audit log: failed-authentication bursts, rate-limit trips and
//! retention purges, each an entry of its own ([`Services::audit_event`]).
//!
//! Refusals are not written as they happen: an attacker would then make the server write
//! one audit row per request. They are counted in memory ([`Tally`]) and flushed by the
//! housekeeping task every few seconds ([`Services::flush_security_events`]), at most one
//! entry per source (or per rate limit) per [`WINDOW`], whose `count` is the refusals since
//! the previous entry for it. The tally holds at most [`MAX_SOURCES`] sources; refusals from
//! further sources are counted together, in one entry without a source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Origin, Services, now};
use crate::audit::{Action, Detail, Entry, Event, Outcome};
use crate::store::StoreError;

/// At most one entry per source (or per rate limit) in this window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Most sources counted one by one; refusals from further sources share one count.
pub const MAX_SOURCES: usize = 10_000;

/// The `reason` of the entry that counts the refusals of sources beyond [`MAX_SOURCES`].
pub const OTHER_SOURCES: &str = "other-sources";

/// A rate limit that can refuse requests: its stable name is the `scope` of its
/// `rate-limit-trip` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Bundle claims per requesting account (`rate_limits.claims_per_minute_per_requester`).
    ClaimsPerRequester,
    /// Bundle claims per target account (`rate_limits.claims_per_minute_per_target`).
    ClaimsPerTarget,
    /// Provisioning channels opened by everyone (`rate_limits.provisioning_channels_per_minute`).
    ProvisioningChannels,
}

impl Limit {
    /// The stable name (`tacit.details.scope`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClaimsPerRequester => "claims-per-requester",
            Self::ClaimsPerTarget => "claims-per-target",
            Self::ProvisioningChannels => "provisioning-channels",
        }
    }
}

/// Per key: refusals not yet written, and when the last entry for it was.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    count: u64,
    last_entry: Option<Instant>,
}

impl Pending {
    /// Takes the count if it is due at `now`: something to report, and no entry for this
    /// key within the window.
    fn take_due(&mut self, now: Instant) -> Option<u64> {
        let due = self.count > 0
            && self
                .last_entry
                .is_none_or(|at| now.saturating_duration_since(at) >= WINDOW);
        due.then(|| {
            self.last_entry = Some(now);
            std::mem::take(&mut self.count)
        })
    }

    /// Whether it behaves like an absent key (nothing pending, no entry in the window).
    fn idle(&self, now: Instant) -> bool {
        self.count == 0
            && self
                .last_entry
                .is_none_or(|at| now.saturating_duration_since(at) >= WINDOW)
    }
}

#[derive(Debug)]
struct TallyState<K> {
    keys: HashMap<K, Pending>,
    overflow: Pending,
}

/// Refusals counted per key, in bounded memory, until they are flushed into entries.
#[derive(Debug)]
pub struct Tally<K> {
    cap: usize,
    state: Mutex<TallyState<K>>,
}

impl<K: std::hash::Hash + Eq + Copy> Tally<K> {
    /// A tally of at most `cap` keys (refusals of further keys share one overflow count).
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            state: Mutex::new(TallyState {
                keys: HashMap::new(),
                overflow: Pending::default(),
            }),
        }
    }

    /// Counts one refusal for `key`.
    pub fn record(&self, key: K) {
        let mut state = self.lock();
        let TallyState { keys, overflow } = &mut *state;
        if let Some(pending) = keys.get_mut(&key) {
            pending.count = pending.count.saturating_add(1);
        } else if keys.len() < self.cap {
            keys.insert(
                key,
                Pending {
                    count: 1,
                    last_entry: None,
                },
            );
        } else {
            overflow.count = overflow.count.saturating_add(1);
        }
    }

    /// The counts due at `now` (a key, or `None` for the overflow count), reset; keys
    /// that are idle again are forgotten. The lock is held for this only, never across a
    /// write.
    pub fn flush(&self, now: Instant) -> Vec<(Option<K>, u64)> {
        let mut state = self.lock();
        let TallyState { keys, overflow } = &mut *state;
        let mut due: Vec<(Option<K>, u64)> = Vec::new();
        for (key, pending) in keys.iter_mut() {
            if let Some(count) = pending.take_due(now) {
                due.push((Some(*key), count));
            }
        }
        keys.retain(|_, pending| !pending.idle(now));
        if let Some(count) = overflow.take_due(now) {
            due.push((None, count));
        }
        due
    }

    /// How many keys are tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState<K>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The security events waiting to be written.
#[derive(Debug)]
pub(crate) struct SecurityEvents {
    /// Requests refused because their source used up its failed-authentication allowance.
    auth_refusals: Tally<IpAddr>,
    /// Requests refused by the other rate limits.
    limit_refusals: Tally<Limit>,
}

impl Default for SecurityEvents {
    fn default() -> Self {
        Self {
            auth_refusals: Tally::new(MAX_SOURCES),
            limit_refusals: Tally::new(MAX_SOURCES),
        }
    }
}

impl Services {
    /// Appends a standalone entry (one that goes with no other write), and counts it in
    /// `/metrics` (or its failure).
    pub async fn audit_event(&self, event: &Event) -> Result<Entry, StoreError> {
        match self.store.append_audit(event, now()).await {
            Ok(entry) => {
                self.count_audited(event.action);
                Ok(entry)
            }
            Err(e) => {
                self.metrics.audit_append_failures.inc();
                Err(e)
            }
        }
    }

    /// Counts one appended audit entry of `action` in `/metrics`.
    pub fn count_audited(&self, action: Action) {
        self.metrics.audited(action);
    }

    /// Notes a request refused by `limit` (written by the next flush).
    pub(crate) fn rate_limit_tripped(&self, limit: Limit) {
        self.security.limit_refusals.record(limit);
    }

    /// Notes a request from `source` refused for too many failed authentications.
    pub(crate) fn auth_refused(&self, source: IpAddr) {
        self.security.auth_refusals.record(source);
    }

    /// Writes the security events that are due (see the module docs); called by the
    /// housekeeping task every few seconds. A failed append is logged and its count lost.
    /// Returns how many entries were written.
    pub async fn flush_security_events(&self) -> usize {
        self.flush_security_events_at(Instant::now()).await
    }

    async fn flush_security_events_at(&self, at: Instant) -> usize {
        let mut events = Vec::new();
        for (source, count) in self.security.auth_refusals.flush(at) {
            let event = Event::new(Action::AuthFailureBurst, Outcome::Failure);
            let event = match source {
                Some(ip) => event.source(ip.to_string()),
                None => event.detail(Detail::Reason, OTHER_SOURCES),
            };
            events.push(event.detail(Detail::Count, count));
        }
        for (limit, count) in self.security.limit_refusals.flush(at) {
            let mut event =
                Event::new(Action::RateLimitTrip, Outcome::Failure).detail(Detail::Count, count);
            if let Some(limit) = limit {
                event = event.detail(Detail::Scope, limit.as_str());
            }
            events.push(event);
        }
        let mut written = 0;
        for event in &events {
            match self.audit_event(event).await {
                Ok(_) => written += 1,
                Err(e) => warn!(
                    error = %e,
                    action = event.action.as_str(),
                    "could not append a security event to the audit log"
                ),
            }
        }
        written
    }

    /// Records a retention purge of `count` rows of `scope` (`envelopes`, `blobs`); nothing
    /// when none went. A failure is logged.
    pub async fn audit_purge(&self, scope: &'static str, count: u64) {
        if count == 0 {
            return;
        }
        let event = Origin::Server
            .event(Action::RetentionPurge)
            .detail(Detail::Scope, scope)
            .detail(Detail::Count, count);
        if let Err(e) = self.audit_event(&event).await {
            warn!(error = %e, scope, "could not append a retention purge to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    #[test]
    fn a_burst_is_one_count_per_window() {
        let tally = Tally::new(10);
        let t = Instant::now();
        for _ in 0..5 {
            tally.record(ip(1));
        }
        tally.record(ip(2));
        let mut due = tally.flush(t);
        due.sort_by_key(|(k, _)| *k);
        assert_eq!(due, [(Some(ip(1)), 5), (Some(ip(2)), 1)]);
        assert!(tally.flush(t).is_empty(), "nothing new");
        // More refusals within the window wait for it to end.
        for _ in 0..3 {
            tally.record(ip(1));
        }
        assert!(tally.flush(t + Duration::from_secs(5)).is_empty());
        assert!(tally.flush(t + Duration::from_secs(59)).is_empty());
        tally.record(ip(1));
        assert_eq!(tally.flush(t + WINDOW), [(Some(ip(1)), 4)]);
        // Idle sources are forgotten once their window is over.
        assert_eq!(tally.len(), 1);
        assert!(tally.flush(t + 2 * WINDOW).is_empty());
        assert!(tally.is_empty());
        // And reported at once again.
        tally.record(ip(2));
        assert_eq!(
            tally.flush(t + 2 * WINDOW + Duration::from_secs(1)),
            [(Some(ip(2)), 1)]
        );
    }

    #[test]
    fn sources_beyond_the_cap_share_one_count() {
        let tally = Tally::new(3);
        let t = Instant::now();
        for n in 0..10 {
            tally.record(ip(n));
            tally.record(ip(n));
        }
        assert_eq!(tally.len(), 3, "memory is bounded");
        let mut due = tally.flush(t);
        due.sort_by_key(|(k, _)| *k);
        assert_eq!(
            due,
            [
                (None, 14),
                (Some(ip(0)), 2),
                (Some(ip(1)), 2),
                (Some(ip(2)), 2)
            ]
        );
        // The overflow count has its window too.
        tally.record(ip(9));
        assert!(tally.flush(t + Duration::from_secs(1)).is_empty());
        assert_eq!(tally.flush(t + WINDOW), [(None, 1)]);
    }

    #[tokio::test]
    async fn flushed_events_are_appended_once_per_window() {
        use crate::config::Config;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let svc = Services::new(store.clone(), Arc::new(Config::default()));
        let source = ip(0x0a00_0001);
        let t = Instant::now();
        for _ in 0..7 {
            svc.auth_refused(source);
        }
        svc.rate_limit_tripped(Limit::ClaimsPerTarget);
        svc.rate_limit_tripped(Limit::ClaimsPerTarget);
        assert_eq!(svc.flush_security_events_at(t).await, 2);
        svc.auth_refused(source);
        assert_eq!(
            svc.flush_security_events_at(t + Duration::from_secs(3))
                .await,
            0
        );
        svc.audit_purge("envelopes", 0).await;
        svc.audit_purge("blobs", 3).await;
        let entries = store.audit_entries(0, 100).await.unwrap();
        type Summary<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, &'a str)>);
        let summary: Vec<Summary<'_>> = entries
            .iter()
            .map(|e| {
                (
                    e.action.as_str(),
                    e.source_ip.as_deref(),
                    e.details
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("auth-failure-burst", Some("10.0.0.1"), vec![("count", "7")]),
                (
                    "rate-limit-trip",
                    None,
                    vec![("count", "2"), ("scope", "claims-per-target")]
                ),
                (
                    "retention-purge",
                    None,
                    vec![("count", "3"), ("scope", "blobs")]
                ),
            ]
        );
        assert_eq!(entries[0].outcome, "failure");
        let text = svc
            .metrics
            .render(None, &crate::metrics::Operations::default());
        for line in [
            "tacit_audit_events_total{action=\"auth-failure-burst\"} 1",
            "tacit_audit_events_total{action=\"rate-limit-trip\"} 1",
            "tacit_audit_events_total{action=\"retention-purge\"} 1",
            "tacit_audit_append_failures_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // The refusal left over is written once the window is over.
        assert_eq!(svc.flush_security_events_at(t + WINDOW).await, 1);
        let last = store.audit_entries(3, 10).await.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].details.get("count").map(String::as_str), Some("1"));
        store.close().await;
    }
}
