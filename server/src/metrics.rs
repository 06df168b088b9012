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

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

/// What retention deletes, as labelled in `tacit_retention_purged_total{kind}`.
pub const RETENTION_KINDS: [&str; 5] = ["envelopes", "blobs", "devices", "accounts", "audit"];

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    dir: &'static str,
}

/// The free and total space of the filesystem holding a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged process can still write.
    pub available: u64,
    /// The filesystem's size in bytes.
    pub size: u64,
}

impl FsSpace {
    /// The filesystem of `dir`, or of its nearest existing ancestor (a blob directory is
    /// made on the first upload); `None` when none can be asked.
    #[must_use]
    pub fn of(dir: &Path) -> Option<Self> {
        let mut at = Some(dir);
        while let Some(path) = at {
            if let Ok(st) = rustix::fs::statvfs(path) {
                return Some(Self {
                    available: st.f_bavail.saturating_mul(st.f_frsize),
                    size: st.f_blocks.saturating_mul(st.f_frsize),
                });
            }
            at = path.parent().filter(|p| !p.as_os_str().is_empty());
        }
        None
    }
}

/// The process's own figures, as Prometheus's client libraries name them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// This process's figures from `/proc/self` (Linux); `None` elsewhere or when `/proc`
    /// cannot be read.
    #[cfg(target_os = "linux")]
    #[must_use]
    pub fn current() -> Option<Self> {
        use procfs::WithCurrentSystemInfo as _;
        let me = procfs::process::Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        let max_fds = match me.limits().ok()?.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(n) => Some(n),
            procfs::process::LimitValue::Unlimited => None,
        };
        // `starttime` counts clock ticks since boot.
        let start = procfs::boot_time_secs().ok()? as f64 + stat.starttime as f64 / ticks;
        Some(Self {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss_bytes().get(),
            virtual_bytes: stat.vsize,
            open_fds: u64::try_from(me.fd_count().ok()?).unwrap_or(u64::MAX),
            max_fds,
            start_time_seconds: start,
        })
    }

    /// This process's figures: not available off Linux.
    #[cfg(not(target_os = "linux"))]
    #[must_use]
    pub fn current() -> Option<Self> {
        None
    }
}

/// What `/metrics` reports about the server's operation beside its counters: read at
/// scrape time by [`crate::service::Services::operations`].
#[derive(Clone, Debug, Default)]
pub struct Operations {
    /// Whether the database answered (within the scrape's deadline) and writes succeed:
    /// `/readyz`'s answer, except that it also reports a graceful shutdown.
    pub ready: bool,
    /// The most envelopes a mailbox holds (`limits.max_mailbox_depth`).
    pub mailbox_depth_limit: u64,
    /// The filesystems of the server's directories, by role (`data`, `blobs`).
    pub filesystems: Vec<(&'static str, FsSpace)>,
    /// The process's figures.
    pub process: Option<ProcessStats>,
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
    retention_purged: Family<KindLabels, Counter>,
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
    /// The most client connections the listener takes (`http.max_connections`).
    pub connections_max: Gauge,
    /// When the TLS certificate expires (seconds since the Unix epoch); 0 when the
    /// server serves no TLS (or the certificate's validity could not be read).
    pub tls_expiry: AtomicI64,
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
        let retention_purged = Family::<KindLabels, Counter>::default();
        for kind in RETENTION_KINDS {
            drop(retention_purged.get_or_create(&KindLabels { kind }));
        }
        registry.register(
            "tacit_retention_purged",
            "What retention deleted: expired envelopes and blobs, idle devices, accounts whose devices were all idle, audit entries past retention.audit_days",
            retention_purged.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let sockets = gauge("tacit_websockets_open", "Open WebSocket connections");
        let connections_open = gauge("tacit_connections_open", "Open client connections");
        let connections_max = gauge(
            "tacit_connections_max",
            "The most client connections the listener takes",
        );
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
            tls_expiry: AtomicI64::new(0),
            connections_max,
            audit_events,
            retention_purged,
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

    /// Count what one purge deleted (`kind`: one of [`RETENTION_KINDS`]).
    pub fn purged(&self, kind: &'static str, n: u64) {
        self.retention_purged
            .get_or_create(&KindLabels { kind })
            .inc_by(n);
    }

    /// Count one entry appended to the audit log.
    pub fn audited(&self, action: Action) {
        self.audit_events
            .get_or_create(&ActionLabels {
                action: action.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text, with the write-health flag, the store's totals and the
    /// operation figures read for this scrape.
    #[must_use]
    pub fn render(&self, stats: Option<StoreStats>, ops: &Operations) -> String {
        let mut scrape = Registry::default();
        scrape.register(
            "tacit_writes_failing",
            "1 while writes fail (the server answers not ready), else 0",
            ConstGauge::new(i64::from(self.writes_failing.load(Ordering::Relaxed))),
        );
        scrape.register(
            "tacit_ready",
            "1 while the database answers (within 2 s) and writes succeed, else 0 (a graceful shutdown, which /readyz reports, does not count)",
            ConstGauge::new(i64::from(ops.ready)),
        );
        scrape.register(
            "tacit_mailbox_depth_limit",
            "The most envelopes one mailbox holds (limits.max_mailbox_depth)",
            ConstGauge::new(i64::try_from(ops.mailbox_depth_limit).unwrap_or(i64::MAX)),
        );
        let expiry = self.tls_expiry.load(Ordering::Relaxed);
        if expiry != 0 {
            scrape.register(
                "tacit_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires (notAfter), in seconds since the Unix epoch",
                ConstGauge::new(expiry),
            );
        }
        if !ops.filesystems.is_empty() {
            let available = Family::<DirLabels, Gauge>::default();
            let size = Family::<DirLabels, Gauge>::default();
            for &(dir, space) in &ops.filesystems {
                let labels = DirLabels { dir };
                available
                    .get_or_create(&labels)
                    .set(i64::try_from(space.available).unwrap_or(i64::MAX));
                size.get_or_create(&labels)
                    .set(i64::try_from(space.size).unwrap_or(i64::MAX));
            }
            scrape.register(
                "tacit_filesystem_available_bytes",
                "Bytes still writable on the filesystem of the server's directory, by role",
                available,
            );
            scrape.register(
                "tacit_filesystem_size_bytes",
                "Size of the filesystem of the server's directory, by role",
                size,
            );
        }
        if let Some(p) = ops.process {
            let int = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            scrape.register(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                prometheus_client::metrics::counter::ConstCounter::new(p.cpu_seconds),
            );
            scrape.register(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                int(p.resident_bytes),
            );
            scrape.register(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                int(p.virtual_bytes),
            );
            scrape.register("process_open_fds", "Open file descriptors", int(p.open_fds));
            if let Some(max) = p.max_fds {
                scrape.register(
                    "process_max_fds",
                    "The most open file descriptors (the soft limit)",
                    int(max),
                );
            }
            scrape.register(
                "process_start_time_seconds",
                "When the process started, in seconds since the Unix epoch",
                ConstGauge::new(p.start_time_seconds),
            );
        }
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
            let low = Family::<KindLabels, Gauge>::default();
            for (kind, n) in [
                ("x25519", s.devices_low_one_time_prekeys),
                ("ml_kem", s.devices_low_one_time_kem_prekeys),
            ] {
                low.get_or_create(&KindLabels { kind })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            scrape.register(
                "tacit_devices_low_one_time_prekeys",
                "Devices with fewer one-time prekeys of a kind than clients replenish at",
                low,
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
        m.purged("devices", 2);
        m.connections_max.set(500);
        m.tls_expiry.store(1_935_619_200, Ordering::Relaxed);
        let text = m.render(
            Some(StoreStats {
                envelopes: 4,
                max_mailbox_depth: 3,
                message_bodies: 1,
                one_time_prekeys: 7,
                one_time_kem_prekeys: 6,
                devices: 2,
                devices_low_one_time_prekeys: 1,
                devices_low_one_time_kem_prekeys: 2,
            }),
            &Operations {
                ready: true,
                mailbox_depth_limit: 10_000,
                filesystems: vec![(
                    "data",
                    FsSpace {
                        available: 5,
                        size: 9,
                    },
                )],
                process: Some(ProcessStats {
                    cpu_seconds: 1.5,
                    resident_bytes: 4096,
                    virtual_bytes: 8192,
                    open_fds: 12,
                    max_fds: Some(65_536),
                    start_time_seconds: 1_700_000_000.0,
                }),
            },
        );
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
            "tacit_devices_low_one_time_prekeys{kind=\"x25519\"} 1",
            "tacit_devices_low_one_time_prekeys{kind=\"ml_kem\"} 2",
            "tacit_ready 1",
            "tacit_retention_purged_total{kind=\"devices\"} 2",
            "tacit_retention_purged_total{kind=\"envelopes\"} 0",
            "tacit_mailbox_depth_limit 10000",
            "tacit_connections_max 500",
            "tacit_tls_certificate_expiry_timestamp_seconds 1935619200",
            "tacit_filesystem_available_bytes{dir=\"data\"} 5",
            "tacit_filesystem_size_bytes{dir=\"data\"} 9",
            "process_cpu_seconds_total 1.5",
            "process_resident_memory_bytes 4096",
            "process_virtual_memory_bytes 8192",
            "process_open_fds 12",
            "process_max_fds 65536",
            "process_start_time_seconds 1700000000.0",
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
        let without = m.render(None, &Operations::default());
        assert!(!without.contains("tacit_mailbox_envelopes"), "{without}");
        assert!(!without.contains("process_open_fds"), "{without}");
        assert!(!without.contains("tacit_filesystem_"), "{without}");
        assert!(without.contains("tacit_writes_failing 0"), "{without}");
        assert!(without.contains("tacit_ready 0"), "{without}");
        m.tls_expiry.store(0, Ordering::Relaxed);
        let plain = m.render(None, &Operations::default());
        assert!(!plain.contains("tacit_tls_certificate"), "{plain}");
    }

    /// The figures read from this very process and filesystem are plausible.
    #[test]
    fn reads_this_process_and_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let space = FsSpace::of(dir.path()).unwrap();
        assert!(space.size > 0 && space.available <= space.size, "{space:?}");
        // A directory still to be made: its nearest existing ancestor's filesystem.
        let later = FsSpace::of(&dir.path().join("blobs/not/yet")).unwrap();
        assert_eq!(later.size, space.size);
        #[cfg(target_os = "linux")]
        {
            let p = ProcessStats::current().unwrap();
            assert!(
                p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes,
                "{p:?}"
            );
            assert!(p.open_fds > 0, "{p:?}");
            assert!(p.max_fds.is_none_or(|max| max >= p.open_fds), "{p:?}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(p.start_time_seconds <= now + 1.0, "{p:?}");
            assert!(p.start_time_seconds > now - 86_400.0, "{p:?}");
        }
    }
}
