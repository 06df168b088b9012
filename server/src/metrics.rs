//! Prometheus metrics, kept in memory in a [`prometheus_client`] registry and rendered in the
//! OpenMetrics text format ([`CONTENT_TYPE`]).
//!
//! Request counts and latencies are labelled by route template (never by a concrete path,
//! which could name a user). Store-derived gauges (mailbox depth, prekey stock) and the
//! write-health flag are read at scrape time and encoded from a registry built for that
//! scrape, so they are absent (not stale) when the store cannot answer.
//!
//! Counters are registered without their `_total` suffix: the encoder appends it, so the
//! samples keep the names they always had (`tacit_envelopes_accepted_total`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::MatchedPath;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::audit::Action;
use crate::store::StoreStats;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The latency histogram's bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A request's route template: axum's [`MatchedPath`] (an `Arc<str>`, so labelling a
/// request allocates nothing), or `unmatched`.
#[derive(Clone, Debug)]
pub struct Route(Option<MatchedPath>);

impl Route {
    /// The route of a request that matched `path`, or of one that matched none.
    #[must_use]
    pub fn new(path: Option<&MatchedPath>) -> Self {
        Self(path.cloned())
    }

    /// The template, as labelled.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The server's metrics. The public fields are handles into [`Self`]'s registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    audit_events: Family<ActionLabels, Counter>,
    /// Open WebSockets.
    pub sockets: Gauge,
    /// Envelopes accepted (stored).
    pub envelopes_accepted: Counter,
    /// Envelopes pushed over WebSockets.
    pub envelopes_pushed: Counter,
    /// Envelopes acknowledged (deleted).
    pub envelopes_acked: Counter,
    /// Claims refused by the rate limiter.
    pub claims_rate_limited: Counter,
    /// Group-commit transactions.
    pub write_batches: Counter,
    /// Sends and acknowledgements in those transactions.
    pub write_batch_ops: Counter,
    /// Writes that failed with an outage (a full disk, a failing or lost database).
    pub write_failures: Counter,
    /// Whether the last write failed with an outage (`/readyz` is not ready meanwhile).
    /// State the health check swaps, exposed as `tacit_writes_failing` at scrape time.
    pub writes_failing: AtomicBool,
    /// Requests with a credential that did not authenticate.
    pub auth_failures: Counter,
    /// Requests refused because their source failed authentication too often.
    pub auth_rate_limited: Counter,
    /// Connections refused because the server had all it takes.
    pub connections_refused: Counter,
    /// Open client connections (HTTP and the WebSockets upgraded from them).
    pub connections_open: Gauge,
    /// Audit entries of their own (security events, checkpoints, exports) that could not
    /// be appended.
    pub audit_append_failures: Counter,
    /// Admin API requests refused because the caller lacked the role.
    pub admin_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "tacit_http_requests",
            "HTTP requests by route template and status",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "tacit_http_request_duration_seconds",
            "HTTP request latency by route template",
            latency.clone(),
        );
        let audit_events = Family::<ActionLabels, Counter>::default();
        // Every action is listed from the start, at zero.
        for action in Action::ALL {
            drop(audit_events.get_or_create(&ActionLabels {
                action: action.as_str(),
            }));
        }
        registry.register(
            "tacit_audit_events",
            "Entries appended to the audit log, by action",
            audit_events.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let sockets = gauge("tacit_websockets_open", "Open WebSocket connections");
        let connections_open = gauge("tacit_connections_open", "Open client connections");
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        Self {
            envelopes_accepted: counter(
                "tacit_envelopes_accepted",
                "Envelopes accepted and stored",
            ),
            envelopes_pushed: counter("tacit_envelopes_pushed", "Envelopes pushed over WebSockets"),
            envelopes_acked: counter(
                "tacit_envelopes_acked",
                "Envelopes acknowledged and deleted",
            ),
            claims_rate_limited: counter(
                "tacit_claims_rate_limited",
                "Bundle claims refused by the rate limiter",
            ),
            write_batches: counter("tacit_write_batches", "Group-commit transactions"),
            write_batch_ops: counter(
                "tacit_write_batch_operations",
                "Sends and acknowledgements committed by those transactions",
            ),
            write_failures: counter(
                "tacit_write_failures",
                "Writes that failed with an outage (a full disk, a failing or lost database)",
            ),
            auth_failures: counter(
                "tacit_auth_failures",
                "Requests whose credential did not authenticate",
            ),
            auth_rate_limited: counter(
                "tacit_auth_rate_limited",
                "Requests refused because their source failed authentication too often",
            ),
            connections_refused: counter(
                "tacit_connections_refused",
                "Connections refused because the server had all it takes",
            ),
            admin_refused: counter(
                "tacit_admin_refused",
                "Admin API requests refused because the caller lacked the role",
            ),
            audit_append_failures: counter(
                "tacit_audit_append_failures",
                "Audit entries of their own (security events, checkpoints, exports) that could not be appended",
            ),
            writes_failing: AtomicBool::new(false),
            audit_events,
            registry,
            requests,
            latency,
            sockets,
            connections_open,
        }
    }
}

impl Metrics {
    /// Count one request: two map look-ups under a read lock (a write lock only for the
    /// first request of a route and status), no allocation.
    pub fn observe_request(&self, route: &Route, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Count one entry appended to the audit log.
    pub fn audited(&self, action: Action) {
        self.audit_events
            .get_or_create(&ActionLabels {
                action: action.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text, with the write-health flag and the store's totals.
    #[must_use]
    pub fn render(&self, stats: Option<StoreStats>) -> String {
        let mut scrape = Registry::default();
        scrape.register(
            "tacit_writes_failing",
            "1 while writes fail (the server answers not ready), else 0",
            ConstGauge::new(i64::from(self.writes_failing.load(Ordering::Relaxed))),
        );
        if let Some(s) = stats {
            let mut gauge = |name: &str, help: &str, v: u64| {
                let v = i64::try_from(v).unwrap_or(i64::MAX);
                scrape.register(name, help, ConstGauge::new(v));
            };
            gauge(
                "tacit_mailbox_envelopes",
                "Envelopes waiting in all mailboxes",
                s.envelopes,
            );
            gauge(
                "tacit_mailbox_depth_max",
                "Envelopes waiting in the deepest mailbox",
                s.max_mailbox_depth,
            );
            gauge(
                "tacit_message_bodies",
                "Multicast ciphertexts stored once for many envelopes",
                s.message_bodies,
            );
            gauge("tacit_devices", "Registered devices", s.devices);
            let prekeys = Family::<KindLabels, Gauge>::default();
            for (kind, n) in [
                ("x25519", s.one_time_prekeys),
                ("ml_kem", s.one_time_kem_prekeys),
            ] {
                prekeys
                    .get_or_create(&KindLabels { kind })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            scrape.register(
                "tacit_one_time_prekeys",
                "One-time prekeys in stock, by kind",
                prekeys,
            );
        }
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &scrape))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample keeps the name and labels it had with the hand-written text format.
    #[test]
    fn names_and_labels() {
        let m = Metrics::default();
        m.observe_request(&Route::new(None), 404, Duration::from_millis(3));
        m.envelopes_accepted.inc_by(2);
        m.sockets.inc();
        m.audited(Action::AuthFailureBurst);
        m.audited(Action::AuthFailureBurst);
        m.audit_append_failures.inc();
        let text = m.render(Some(StoreStats {
            envelopes: 4,
            max_mailbox_depth: 3,
            message_bodies: 1,
            one_time_prekeys: 7,
            one_time_kem_prekeys: 6,
            devices: 2,
        }));
        for line in [
            "tacit_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "tacit_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"unmatched\"} 0",
            "tacit_http_request_duration_seconds_bucket{le=\"0.005\",route=\"unmatched\"} 1",
            "tacit_http_request_duration_seconds_count{route=\"unmatched\"} 1",
            "tacit_websockets_open 1",
            "tacit_envelopes_accepted_total 2",
            "tacit_envelopes_pushed_total 0",
            "tacit_envelopes_acked_total 0",
            "tacit_claims_rate_limited_total 0",
            "tacit_write_batches_total 0",
            "tacit_write_batch_operations_total 0",
            "tacit_write_failures_total 0",
            "tacit_writes_failing 0",
            "tacit_auth_failures_total 0",
            "tacit_auth_rate_limited_total 0",
            "tacit_connections_open 0",
            "tacit_connections_refused_total 0",
            "tacit_mailbox_envelopes 4",
            "tacit_mailbox_depth_max 3",
            "tacit_message_bodies 1",
            "tacit_devices 2",
            "tacit_one_time_prekeys{kind=\"x25519\"} 7",
            "tacit_one_time_prekeys{kind=\"ml_kem\"} 6",
            "tacit_audit_events_total{action=\"auth-failure-burst\"} 2",
            "tacit_audit_events_total{action=\"audit-checkpoint\"} 0",
            "tacit_audit_append_failures_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        for action in Action::ALL {
            let prefix = format!(
                "tacit_audit_events_total{{action=\"{}\"}} ",
                action.as_str()
            );
            assert!(
                text.lines().any(|l| l.starts_with(&prefix)),
                "{prefix} missing from\n{text}"
            );
        }
        let without = m.render(None);
        assert!(!without.contains("tacit_mailbox_envelopes"), "{without}");
        assert!(without.contains("tacit_writes_failing 0"), "{without}");
    }
}
