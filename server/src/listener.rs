//! The accept loop: every connection the server keeps is bounded in number and in time.
//!
//! - At most `http.max_connections` connections at once (open WebSockets included: an
//!   upgraded socket keeps its connection's slot). Beyond that, a connection is answered
//!   `503` with `Retry-After` and closed at once. The last tenth of the slots serve only
//!   WebSocket upgrades, which need a device credential, so that devices can still reach
//!   their mailboxes while anonymous or idle clients fill the rest.
//! - A TLS handshake must finish within `http.handshake_timeout_secs`.
//! - A request's headers must arrive within `http.header_read_timeout_secs`, counted from
//!   when the connection is ready for a request: so an idle keep-alive connection is
//!   closed after the same time.
//! - Request bodies and uploads are bounded by the handlers (see `http::edge` and the blob
//!   upload's per-chunk timeout).
//!
//! Shutdown stops accepting, lets requests under way finish, and waits at most the grace
//! period for connections to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::config::Http;
use crate::metrics::Metrics;

/// What the handlers learn about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's address (for per-source limits; never logged with user data).
    pub peer: SocketAddr,
    /// Whether the connection was admitted into the slots kept for devices' sockets:
    /// then only an authenticated WebSocket upgrade is served on it.
    pub reserved: bool,
    /// The connection's slot, kept by an upgraded WebSocket until it closes.
    pub slot: Option<Arc<Slot>>,
}

/// One of the `max_connections` slots, freed when the last holder drops it.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The answer to a connection beyond the cap.
const BUSY_BODY: &str = r#"{"code":"unavailable","message":"the server has all the connections it takes; retry later"}"#;
/// Seconds a refused client is told to wait.
const RETRY_AFTER_SECS: &str = "5";

/// Serve `app` on `listener` until `shutdown` turns `true`; then drain for at most `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Http,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let max = limits.max_connections as usize;
    let slots = Arc::new(Semaphore::new(max));
    // Below this many free slots, new connections are for devices' sockets only.
    let reserve = (max / 10).max(1);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::shutting_down(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a moment rather than spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let free = slots.available_permits();
        let permit = Arc::clone(&slots).try_acquire_owned().ok();
        let slot = permit.map(|permit| {
            metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            Arc::new(Slot {
                _permit: permit,
                metrics: metrics.clone(),
            })
        });
        if slot.is_none() {
            metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
        }
        let info = Connection {
            peer,
            reserved: free <= reserve,
            slot,
        };
        let app = app.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let down = shutdown.clone();
        tasks.spawn(async move {
            connection(stream, tls, app, info, &limits, down).await;
        });
    }
    drop(listener);
    tasks.close();
    // Each connection finishes its request under way and closes; upgraded sockets close on
    // the same signal (see `http::ws`).
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!("shutdown grace period over with connections still open");
    }
}

async fn connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    info: Connection,
    limits: &Http,
    down: watch::Receiver<bool>,
) {
    let handshake = Duration::from_secs(limits.handshake_timeout_secs);
    match tls {
        Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => http(TokioIo::new(stream), app, info, limits, down).await,
            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
            Err(_) => debug!("TLS handshake timed out"),
        },
        None => http(TokioIo::new(stream), app, info, limits, down).await,
    }
}

async fn http<I>(
    io: I,
    app: Router,
    info: Connection,
    limits: &Http,
    mut down: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs))
        // Headers beyond this are refused by hyper itself (431 without a body); the
        // edge checks a lower limit first and answers it with the JSON error body.
        .max_buf_size(64 * 1024);
    if info.slot.is_none() {
        let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(busy())
        });
        builder.keep_alive(false);
        let _ = builder.serve_connection(io, service).await;
        return;
    }
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut conn = std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = crate::shutting_down(&mut down) => {
            // Finish the request under way, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        debug!(error = %e, "connection ended with an error");
    }
}

/// `503` with `Retry-After` and the JSON error body; the connection closes after it.
fn busy() -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::from(BUSY_BODY));
    *response.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    headers.insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Raise the soft limit on open files to the hard limit, so that the connection cap and
/// not the process's file limit decides who is served; returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
