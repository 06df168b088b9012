//! Prometheus metrics, kept in memory and rendered in the text exposition format.
//!
//! Request counts and latencies are labelled by route template (never by a concrete path,
//! which could name a user). Store-derived gauges (mailbox depth, prekey stock) are read from
//! the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StoreStats;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Open WebSockets.
    pub sockets: AtomicI64,
    /// Envelopes accepted (stored).
    pub envelopes_accepted: AtomicU64,
    /// Envelopes pushed over WebSockets.
    pub envelopes_pushed: AtomicU64,
    /// Envelopes acknowledged (deleted).
    pub envelopes_acked: AtomicU64,
    /// Claims refused by the rate limiter.
    pub claims_rate_limited: AtomicU64,
    /// Group-commit transactions.
    pub write_batches: AtomicU64,
    /// Sends and acknowledgements in those transactions.
    pub write_batch_ops: AtomicU64,
    /// Writes that failed with an outage (a full disk, a failing or lost database).
    pub write_failures: AtomicU64,
    /// Whether the last write failed with an outage (`/readyz` is not ready meanwhile).
    pub writes_failing: AtomicBool,
    /// Requests with a credential that did not authenticate.
    pub auth_failures: AtomicU64,
    /// Requests refused because their source failed authentication too often.
    pub auth_rate_limited: AtomicU64,
    /// Connections refused because the server had all it takes.
    pub connections_refused: AtomicU64,
    /// Open client connections (HTTP and the WebSockets upgraded from them).
    pub connections_open: AtomicI64,
}

impl Metrics {
    /// Count one request.
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut latency = lock(&self.latency);
        let h = latency.entry(route.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The text exposition, with the store's totals.
    #[must_use]
    pub fn render(&self, stats: Option<StoreStats>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tacit_http_requests_total HTTP requests by route template and status.\n\
             # TYPE tacit_http_requests_total counter"
        );
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "tacit_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tacit_http_request_duration_seconds HTTP request latency by route template.\n\
             # TYPE tacit_http_request_duration_seconds histogram"
        );
        for (route, h) in lock(&self.latency).iter() {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "tacit_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "tacit_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 tacit_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 tacit_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "tacit_websockets_open",
            "gauge",
            "Open WebSocket connections.",
            self.sockets.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_envelopes_accepted_total",
            "counter",
            "Envelopes accepted and stored.",
            self.envelopes_accepted.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_envelopes_pushed_total",
            "counter",
            "Envelopes pushed over WebSockets.",
            self.envelopes_pushed.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_envelopes_acked_total",
            "counter",
            "Envelopes acknowledged and deleted.",
            self.envelopes_acked.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_claims_rate_limited_total",
            "counter",
            "Bundle claims refused by the rate limiter.",
            self.claims_rate_limited.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_write_batches_total",
            "counter",
            "Group-commit transactions.",
            self.write_batches.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_write_batch_operations_total",
            "counter",
            "Sends and acknowledgements committed by those transactions.",
            self.write_batch_ops.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_write_failures_total",
            "counter",
            "Writes that failed with an outage (a full disk, a failing or lost database).",
            self.write_failures.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_writes_failing",
            "gauge",
            "1 while writes fail (the server answers not ready), else 0.",
            u8::from(self.writes_failing.load(Ordering::Relaxed)).to_string(),
        );
        gauge(
            &mut out,
            "tacit_auth_failures_total",
            "counter",
            "Requests whose credential did not authenticate.",
            self.auth_failures.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_auth_rate_limited_total",
            "counter",
            "Requests refused because their source failed authentication too often.",
            self.auth_rate_limited.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_connections_open",
            "gauge",
            "Open client connections.",
            self.connections_open.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tacit_connections_refused_total",
            "counter",
            "Connections refused because the server had all it takes.",
            self.connections_refused.load(Ordering::Relaxed).to_string(),
        );
        if let Some(s) = stats {
            gauge(
                &mut out,
                "tacit_mailbox_envelopes",
                "gauge",
                "Envelopes waiting in all mailboxes.",
                s.envelopes.to_string(),
            );
            gauge(
                &mut out,
                "tacit_mailbox_depth_max",
                "gauge",
                "Envelopes waiting in the deepest mailbox.",
                s.max_mailbox_depth.to_string(),
            );
            gauge(
                &mut out,
                "tacit_message_bodies",
                "gauge",
                "Multicast ciphertexts stored once for many envelopes.",
                s.message_bodies.to_string(),
            );
            gauge(
                &mut out,
                "tacit_devices",
                "gauge",
                "Registered devices.",
                s.devices.to_string(),
            );
            let _ = writeln!(
                out,
                "# HELP tacit_one_time_prekeys One-time prekeys in stock, by kind.\n\
                 # TYPE tacit_one_time_prekeys gauge\n\
                 tacit_one_time_prekeys{{kind=\"x25519\"}} {}\n\
                 tacit_one_time_prekeys{{kind=\"ml_kem\"}} {}",
                s.one_time_prekeys, s.one_time_kem_prekeys
            );
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
