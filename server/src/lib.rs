//! The Tacit relay server: a blind store-and-forward server for opaque ciphertext.
//!
//! It keeps accounts, devices, public prekey bundles and per-device mailboxes of
//! end-to-end-encrypted envelopes, and pushes envelopes over WebSockets. It never holds a
//! private key or a plaintext; ciphertexts and keys are opaque bytes to it.
//!
//! Requests flow one way: [`http`] (extract and answer) -> [`service`] (the rules) ->
//! [`store`] (SQL, SQLite or PostgreSQL). `main` is thin: it loads the [`config`], opens and
//! migrates the store, binds, and calls [`run`].

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

pub mod audit;
pub mod backup;
pub mod config;
pub mod error;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod oidc;
pub mod push;
pub mod service;
pub mod store;
pub mod tls;

use config::Config;
use service::Services;
use store::Store;

/// How often expired envelopes are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the devices on open sockets are recorded as seen (a socket authenticates
/// once, when it opens).
const CONNECTED_SEEN_INTERVAL: Duration = Duration::from_secs(3600);
/// How long after a start the idle-device retention waits (an outage is no one's absence).
const IDLE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How often the security events counted in memory are written to the audit log (each
/// source or rate limit at most once per [`service::WINDOW`]).
const SECURITY_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The audit key, which signs the periodic checkpoints, could not be loaded or made.
    #[error(
        "loading the audit key (config key `audit.key_file`; periodic checkpoints need it, \
         `audit.checkpoint_interval_secs = 0` turns them off): {0}"
    )]
    AuditKey(#[source] audit::CheckpointError),
}

/// Serve on `listener` until `shutdown` completes, then drain: stop accepting, let requests
/// finish, close sockets (each with a close frame), wait at most `shutdown_grace_secs`, and
/// close the store.
///
/// The store must be migrated. The configuration must be validated (plain HTTP on a
/// non-loopback address is refused again here). Unless `audit.checkpoint_interval_secs` is
/// 0, the audit key is loaded (or made) first, and the server does not start without it.
pub async fn run<F>(
    listener: TcpListener,
    config: Arc<Config>,
    store: Arc<dyn Store>,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr()?;
    if config.plain_http && !local.ip().is_loopback() {
        return Err(ServeError::Io(std::io::Error::other(
            "plain HTTP is only allowed on a loopback address",
        )));
    }
    let audit_key = match config.audit.checkpoint_interval_secs {
        0 => None,
        secs => {
            let key = audit::AuditKey::load_or_create(&config.audit_key_file())
                .map_err(ServeError::AuditKey)?;
            Some((key, Duration::from_secs(secs)))
        }
    };
    // Pruning the audit log signs where the chain then starts.
    let prune_key = match config.retention.audit_days {
        0 => None,
        _ => Some(
            audit::AuditKey::load_or_create(&config.audit_key_file())
                .map_err(ServeError::AuditKey)?,
        ),
    };
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut config = config;
    // The connection cap, not the process's open-file limit, must decide who is served.
    match listener::raise_open_file_limit() {
        Ok(files) => {
            // One descriptor per connection, and 256 more for the database, the log and
            // the connections being refused. A blob transfer holds a second one; when
            // descriptors run out, that request fails alone (503), not the server.
            let fits = u32::try_from(files.saturating_sub(256))
                .unwrap_or(u32::MAX)
                .max(1);
            if fits < config.http.max_connections {
                warn!(
                    open_files = files,
                    max_connections = fits,
                    configured = config.http.max_connections,
                    "the open-file limit is below http.max_connections: lowering the cap"
                );
                Arc::make_mut(&mut config).http.max_connections = fits;
            } else {
                info!(
                    open_files = files,
                    max_connections = config.http.max_connections,
                    "connection limits"
                );
            }
        }
        Err(e) => warn!(error = %e, "could not raise the open-file limit"),
    }
    let svc = Arc::new(Services::new(store.clone(), config.clone()));
    // The identity provider is reached in the background: the server serves while it is
    // down, and sign-in with it answers 503 until its keys can be fetched.
    if let Some(oidc) = svc.oidc() {
        tokio::spawn(async move {
            match oidc.warm_up().await {
                Ok(()) => info!(issuer = %oidc.settings().issuer, "identity provider reached"),
                Err(e) => warn!(
                    error = %e,
                    "the identity provider is unreachable; sign-in with it answers 503 until it is"
                ),
            }
        });
    }
    // Note where the revocations end before serving: this node's caches are empty, and
    // every later revocation (from another node or `tacit-server admin`) is applied.
    if let Err(e) = svc.apply_revocations().await {
        warn!(error = %e, "reading the revocations failed; retrying in the background");
    }
    let (down_tx, down_rx) = watch::channel(false);
    let sockets = tokio_util::task::TaskTracker::new();
    let app = http::router(http::AppState {
        svc: svc.clone(),
        shutdown: down_rx.clone(),
        sockets: sockets.clone(),
    });

    let grace = Duration::from_secs(config.shutdown_grace_secs);
    // One deadline for the whole drain (connections, then sockets), from the signal on.
    let deadline = Arc::new(std::sync::OnceLock::new());
    tokio::spawn({
        let deadline = deadline.clone();
        async move {
            shutdown.await;
            info!("shutting down: draining requests and sockets");
            let _ = deadline.set(tokio::time::Instant::now() + grace);
            let _ = down_tx.send(true);
        }
    });
    let housekeeper = tokio::spawn(housekeeping(
        svc.clone(),
        audit_key,
        prune_key,
        down_rx.clone(),
    ));
    tokio::spawn(watch_revocations(svc.clone(), down_rx.clone()));
    if let Some(addr) = config.metrics.listen {
        let metrics = std::net::TcpListener::bind(addr)?;
        metrics.set_nonblocking(true)?;
        let metrics = tokio::net::TcpListener::from_std(metrics)?;
        info!(local = %metrics.local_addr()?, "metrics listening (plain HTTP)");
        // A few connections are enough for scrapers.
        let limits = config::Http {
            max_connections: 16,
            ..config.http.clone()
        };
        tokio::spawn(listener::serve(
            metrics,
            None,
            http::metrics_router(svc.clone()),
            limits,
            Arc::new(metrics::Metrics::default()),
            down_rx.clone(),
            grace,
        ));
    }

    let tls = if config.plain_http {
        info!(%local, backend = config.backend_name(), "listening (plain HTTP, loopback only)");
        None
    } else {
        let tls = tls::load(&config)?;
        if tls.generated {
            info!(path = %tls.cert_path.display(), "generated a self-signed TLS certificate");
        }
        info!(
            %local,
            backend = config.backend_name(),
            sha256_fingerprint = %tls.fingerprint,
            "listening (TLS)"
        );
        if let Some(at) = tls.not_after {
            svc.metrics
                .tls_expiry
                .store(at, std::sync::atomic::Ordering::Relaxed);
        }
        Some(tokio_rustls::TlsAcceptor::from(tls.config))
    };
    listener::serve(
        listener,
        tls,
        app,
        config.http.clone(),
        svc.metrics.clone(),
        down_rx.clone(),
        grace,
    )
    .await;

    // Upgraded sockets outlive their HTTP connection: wait for them too, within what is
    // left of the grace period.
    let deadline = deadline
        .get()
        .copied()
        .unwrap_or_else(|| tokio::time::Instant::now() + grace);
    if !drain(&sockets, deadline).await {
        warn!("shutdown grace period over with sockets still open");
    }
    // Its last flush of security events, before the store closes.
    if tokio::time::timeout_at(deadline, housekeeper)
        .await
        .is_err()
    {
        warn!("shutdown grace period over with the housekeeping task still running");
    }
    store.close().await;
    info!("stopped");
    Ok(())
}

/// Purge expired envelopes and blobs (complete or abandoned part-way), prune old audit
/// entries (`retention.audit_days`, each new anchor signed with `prune_key`) and remove idle
/// devices (`retention.idle_device_days`), every minute, in batches; forget idle
/// rate-limit buckets (every minute), run the store's upkeep (every second), write the
/// security events counted meanwhile to the audit log (every few seconds), and sign a
/// checkpoint of the audit log with `audit_key` (every interval, when entries were
/// appended since the last one), until shutdown. Failures are logged; none ends the task.
async fn housekeeping(
    svc: Arc<Services>,
    audit_key: Option<(audit::AuditKey, Duration)>,
    prune_key: Option<audit::AuditKey>,
    mut down: watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    let mut connected = tokio::time::interval(CONNECTED_SEEN_INTERVAL);
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    let mut upkeep = tokio::time::interval(Duration::from_secs(1));
    let mut security = tokio::time::interval(SECURITY_FLUSH_INTERVAL);
    // The first checkpoint one interval after the start, not at once.
    let mut checkpoints = audit_key.map(|(key, every)| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (key, timer)
    });
    loop {
        tokio::select! {
            () = next_checkpoint(&mut checkpoints) => {
                if let Some((key, _)) = &checkpoints {
                    match svc.periodic_checkpoint(key).await {
                        Ok(Some(checkpoint)) => {
                            info!(seq = checkpoint.seq, "signed an audit checkpoint");
                        }
                        Ok(None) => {}
                        Err(e) => warn!(error = %e, "signing an audit checkpoint failed"),
                    }
                }
            }
            _ = connected.tick() => {
                svc.mark_connected_seen();
            }
            _ = security.tick() => {
                svc.flush_security_events().await;
            }
            _ = upkeep.tick() => {
                if let Err(e) = svc.maintain_store().await {
                    warn!(error = %e, "store upkeep failed");
                }
                // While writes fail, find out by ourselves when they work again.
                if svc.writes_failing() {
                    svc.probe_writes().await;
                }
            }
            _ = tick.tick() => {
                // Not in the first day after a start: after an outage, devices get a day
                // to come back before their absence counts.
                let idle = started.elapsed() >= IDLE_GRACE;
                if let Err(e) = svc.run_retention(prune_key.as_ref(), idle).await {
                    warn!(error = %e, "taking the retention job's lock failed");
                }
                svc.prune();
            }
            () = shutting_down(&mut down) => {
                svc.flush_security_events().await;
                return;
            }
        }
    }
}

/// How often the revocations made elsewhere are read: a device removed or an account
/// disabled on the server host or through another node is refused, and its sockets closed,
/// within about this long.
const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How often the devices' last authentications are written.
const LAST_SEEN_FLUSH: Duration = Duration::from_secs(60);

/// Apply revocations made elsewhere (every [`REVOCATION_POLL`]) and write the devices'
/// last authentications (every [`LAST_SEEN_FLUSH`], and once more at shutdown).
async fn watch_revocations(svc: Arc<Services>, mut down: watch::Receiver<bool>) {
    let mut poll = tokio::time::interval(REVOCATION_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(LAST_SEEN_FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                if let Err(e) = svc.apply_revocations().await {
                    warn!(error = %e, "reading the revocations failed");
                }
            }
            _ = flush.tick() => {
                if let Err(e) = svc.flush_last_seen().await {
                    warn!(error = %e, "recording devices' last authentication failed");
                }
            }
            () = shutting_down(&mut down) => {
                if let Err(e) = svc.flush_last_seen().await {
                    warn!(error = %e, "recording devices' last authentication failed");
                }
                return;
            }
        }
    }
}

/// The next tick of the checkpoint timer; never, without one.
async fn next_checkpoint(timer: &mut Option<(audit::AuditKey, tokio::time::Interval)>) {
    match timer {
        Some((_, timer)) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Create `dir` (and its parents) if needed and make it accessible to its owner only
/// (mode 0700): it holds the database, the blobs and the TLS key.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        info!(dir = %dir.display(), "made the data directory private (mode 0700)");
    }
    Ok(())
}

/// Wait until every tracked task has ended, or until `deadline`; `false` if some were
/// still running then. A task that panicked has ended (its tracker token is dropped as it
/// unwinds), so it never holds the shutdown up.
async fn drain(tasks: &tokio_util::task::TaskTracker, deadline: tokio::time::Instant) -> bool {
    tasks.close();
    tokio::time::timeout_at(deadline, tasks.wait())
        .await
        .is_ok()
}

/// Completes when the shutdown flag becomes `true` (or its sender is gone).
pub(crate) async fn shutting_down(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = flag.wait_for(|down| *down).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tokio::time::Instant;
    use tokio_util::task::TaskTracker;

    use super::drain;

    /// A socket task that panics leaves the tracker: shutdown does not wait for it until
    /// the deadline.
    #[tokio::test]
    async fn a_panicking_socket_task_does_not_stall_shutdown() {
        let tasks = TaskTracker::new();
        let token = tasks.token();
        let task = tokio::spawn(async move {
            let _tracked = token;
            panic!("a socket task failed");
        });
        assert!(task.await.unwrap_err().is_panic());
        let started = Instant::now();
        assert!(drain(&tasks, started + Duration::from_secs(60)).await);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// A socket task that does not end is left at the deadline.
    #[tokio::test]
    async fn a_socket_task_that_stays_open_is_left_at_the_deadline() {
        let tasks = TaskTracker::new();
        let token = tasks.token();
        let open = tokio::spawn(async move {
            let _tracked = token;
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        assert!(!drain(&tasks, started + Duration::from_millis(50)).await);
        assert!(started.elapsed() >= Duration::from_millis(50));
        open.abort();
    }
}
