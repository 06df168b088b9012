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
        self.metrics.connections_open.dec();
    }
}

/// Below this cap, no slots are kept for sockets.
const MIN_CAP_WITH_RESERVE: usize = 20;
/// Most connections beyond the cap being answered at once.
const MAX_REFUSALS: usize = 64;
/// Seconds a refused connection gets for its handshake and its request.
const REFUSAL_SECS: u64 = 2;

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
    metrics
        .connections_max
        .set(i64::try_from(max).unwrap_or(i64::MAX));
    let slots = Arc::new(Semaphore::new(max));
    // Below this many free slots, new connections are for devices' sockets only (none for a
    // cap too small to share).
    let reserve = if max >= MIN_CAP_WITH_RESERVE {
        max / 10
    } else {
        0
    };
    // Connections beyond the cap are answered by a few tasks at most; past that they are
    // closed unanswered, so a flood of them costs neither descriptors nor handshakes.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
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
            metrics.connections_open.inc();
            Arc::new(Slot {
                _permit: permit,
                metrics: metrics.clone(),
            })
        });
        let mut refusal = None;
        if slot.is_none() {
            metrics.connections_refused.inc();
            match Arc::clone(&refusals).try_acquire_owned() {
                Ok(permit) => refusal = Some(permit),
                Err(_) => {
                    drop(stream);
                    continue;
                }
            }
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
            drop(refusal);
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
    // A refused connection gets a short time for everything: it is only told to go.
    let quick = |secs: u64| {
        if info.slot.is_none() {
            Duration::from_secs(secs.min(REFUSAL_SECS))
        } else {
            Duration::from_secs(secs)
        }
    };
    let handshake = quick(limits.handshake_timeout_secs);
    let stream = StallTimeout::new(stream, Duration::from_secs(limits.write_timeout_secs));
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
    let header_secs = if info.slot.is_none() {
        limits.header_read_timeout_secs.min(REFUSAL_SECS)
    } else {
        limits.header_read_timeout_secs
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(header_secs))
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

/// A stream whose writes fail once one has made no progress for `limit`: a client that
/// stops reading (a download, a pipelined burst, a socket's pushes) is cut off instead of
/// holding its slot for ever. Reads are bounded elsewhere (header and body timeouts, the
/// socket heartbeat).
#[derive(Debug)]
pub(crate) struct StallTimeout<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write is pending.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallTimeout<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            deadline: None,
        }
    }

    /// After a write attempt: disarm on progress, arm (or check) while pending.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future as _;
        if polled.is_ready() {
            self.deadline = None;
            return polled;
        }
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.deadline = None;
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        std::task::Poll::Pending
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallTimeout<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallTimeout<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
