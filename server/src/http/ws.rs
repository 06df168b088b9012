//! `GET /v1/ws`: one authenticated socket per device.
//!
//! On connect the mailbox backlog is pushed, then `queue_empty`, then new envelopes as the
//! writer hands them over (or, if the socket's queue overflowed, as read from the mailbox).
//! Each envelope is pushed once per connection (a cursor remembers the last id pushed) and
//! deleted only when acknowledged; frames from the client are handled in order, so an ack
//! is committed before the next frame is read.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::SinkExt as _;
use tacit_api::{ClientFrame, ErrorCode, ServerFrame};

use tokio::time::Instant;
use tracing::{debug, error};

use super::{AppState, Authed};
use crate::error::ApiError;
use crate::push::{CloseReason, Registration};
use crate::service::AuthedDevice;

/// Envelopes read from the store per round.
const PUSH_BATCH: u32 = 256;
/// Initial read and write buffer of a socket.
const SOCKET_BUFFER: usize = 4096;
/// Largest frame a client may send (an ack of the maximum number of ids fits).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "socket",
    summary = "WebSocket upgrade. Server frames: ServerFrame; client frames: ClientFrame. Backlog first, then queue_empty, then live envelopes. Close codes: 4000 replaced by a newer socket, 4001 device removed, 1001 shutdown or heartbeat timeout, 1002 protocol error, 1007 a frame that is not valid JSON text, 1009 a frame over 64 KiB.",
    responses(
        (status = 101, description = "switching protocols"),
        (status = 400, description = "bad_request: not a WebSocket upgrade", body = tacit_api::ErrorBody),
        (status = "default", description = "an error; `code` names it", body = tacit_api::ErrorBody),
    ),
)]
pub(super) async fn upgrade(
    State(state): State<AppState>,
    Authed(device): Authed,
    connection: Option<axum::Extension<crate::listener::Connection>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // The socket keeps its connection's slot until it closes: open sockets count toward
    // the connection cap.
    let slot = connection.and_then(|c| c.0.slot);
    let upgrade =
        upgrade.map_err(|_| ApiError::BadRequest("expected a WebSocket upgrade request".into()))?;
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable);
    }
    Ok(upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        // Small buffers: an idle socket should cost little memory (the defaults are
        // 128 KiB each). Larger frames still work; the buffers grow on demand.
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade({
            // Taken now and dropped with the socket task however it ends (a panic too), so
            // shutdown waits for open sockets and never for a task that is gone.
            let tracked = state.sockets.token();
            move |socket| async move {
                session(socket, state, device).await;
                drop(slot);
                drop(tracked);
            }
        }))
}

/// Why a session ended without a close frame of ours.
enum End {
    /// The client went away or the socket failed.
    Gone,
    /// The store failed; logged.
    Store,
}

async fn session(mut socket: WebSocket, state: AppState, device: AuthedDevice) {
    let svc = state.svc.clone();
    let registration = svc.hub.register(device.mailbox);
    svc.metrics.sockets.inc();
    debug!(
        account = device.mailbox.account,
        device = device.mailbox.device.0,
        "socket open"
    );
    let id = registration.id;
    // A removal between authentication and registration found no socket to close: check
    // again now that this one is registered (a later removal closes it through the hub).
    let outcome = if svc.is_revoked(device.mailbox) {
        close(&mut socket, tacit_api::CLOSE_CODE_REVOKED, "revoked").await
    } else {
        run(&mut socket, &state, &device, registration).await
    };
    if let Err(End::Store) = outcome {
        let _ = close(&mut socket, 1011, "internal error").await;
    }
    svc.hub.unregister(device.mailbox, id);
    svc.metrics.sockets.dec();
    debug!(
        account = device.mailbox.account,
        device = device.mailbox.device.0,
        "socket closed"
    );
}

async fn run(
    socket: &mut WebSocket,
    state: &AppState,
    device: &AuthedDevice,
    registration: Registration,
) -> Result<(), End> {
    let Registration {
        mut queue,
        mail,
        overflow,
        close: mut closed,
        ..
    } = registration;
    let mut cursor = 0;
    let mut shutdown = state.shutdown.clone();
    push_pending(socket, state, device, &mut cursor).await?;
    send(socket, &ServerFrame::QueueEmpty).await?;

    let ws = &state.svc.config.websocket;
    let interval = Duration::from_secs(ws.heartbeat_interval_secs);
    let timeout = Duration::from_secs(ws.heartbeat_timeout_secs);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last_seen = Instant::now();
    loop {
        tokio::select! {
            Some(first) = queue.recv() => {
                // Push what is queued, skipping what the mailbox read already pushed.
                let mut n = 0u64;
                let mut next = Some(first);
                while let Some(envelope) = next {
                    if envelope.id > cursor {
                        cursor = envelope.id;
                        let text = frame_text(&ServerFrame::Envelope(envelope))?;
                        socket.feed(Message::Text(text.into())).await.map_err(|_| End::Gone)?;
                        n += 1;
                    }
                    next = queue.try_recv().ok();
                }
                socket.flush().await.map_err(|_| End::Gone)?;
                state.svc.metrics.envelopes_pushed.inc_by(n);
            }
            () = mail.notified() => {
                if overflow.swap(false, Ordering::AcqRel) {
                    push_pending(socket, state, device, &mut cursor).await?;
                }
            }
            reason = &mut closed => {
                let (code, why) = match reason {
                    Ok(CloseReason::Replaced) => (tacit_api::CLOSE_CODE_REPLACED, "replaced"),
                    Ok(CloseReason::Revoked) | Err(_) => (tacit_api::CLOSE_CODE_REVOKED, "revoked"),
                };
                return close(socket, code, why).await;
            }
            () = crate::shutting_down(&mut shutdown) => {
                return close(socket, tacit_api::CLOSE_CODE_SHUTDOWN, "server shutting down").await;
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > timeout {
                    return close(socket, 1001, "heartbeat timeout").await;
                }
                socket.send(Message::Ping(Default::default())).await.map_err(|_| End::Gone)?;
            }
            message = socket.recv() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    None => return Err(End::Gone),
                    // A protocol violation (a frame over the limit, text that is not
                    // UTF-8, a bad opcode): say so with a close code where the socket
                    // still takes one.
                    Some(Err(e)) => {
                        let (code, why) = violation(&e);
                        debug!(error = %e, code, "socket protocol violation");
                        let _ = close(socket, code, why).await;
                        return Err(End::Gone);
                    }
                };
                last_seen = Instant::now();
                match message {
                    Message::Text(text) => handle_frame(socket, state, device, text.as_str()).await?,
                    Message::Binary(_) => {
                        send_error(socket, ApiError::BadRequest("frames are JSON text".into())).await?;
                    }
                    Message::Close(_) => return Ok(()),
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
        }
    }
}

async fn handle_frame(
    socket: &mut WebSocket,
    state: &AppState,
    device: &AuthedDevice,
    text: &str,
) -> Result<(), End> {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(ClientFrame::Ack { ids }) => match state.svc.ack(device.mailbox, &ids).await {
            Ok(()) => Ok(()),
            Err(e @ ApiError::Internal(_)) => {
                error!(error = %e, "acknowledgement failed");
                Err(End::Store)
            }
            Err(e) => send_error(socket, e).await,
        },
        Ok(ClientFrame::Ping { nonce }) => send(socket, &ServerFrame::Pong { nonce }).await,
        Err(_) => {
            send_error(
                socket,
                ApiError::BadRequest("unknown or malformed frame".into()),
            )
            .await
        }
    }
}

async fn push_pending(
    socket: &mut WebSocket,
    state: &AppState,
    device: &AuthedDevice,
    cursor: &mut u64,
) -> Result<(), End> {
    loop {
        let batch = match state
            .svc
            .mailbox_after(device.mailbox, *cursor, PUSH_BATCH)
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                if let ApiError::Internal(cause) = &e {
                    error!(error = %cause, "reading a mailbox failed");
                }
                return Err(End::Store);
            }
        };
        let n = batch.len();
        for envelope in batch {
            *cursor = envelope.id;
            let text = frame_text(&ServerFrame::Envelope(envelope))?;
            socket
                .feed(Message::Text(text.into()))
                .await
                .map_err(|_| End::Gone)?;
        }
        socket.flush().await.map_err(|_| End::Gone)?;
        state.svc.metrics.envelopes_pushed.inc_by(n as u64);
        if n < PUSH_BATCH as usize {
            return Ok(());
        }
    }
}

fn frame_text(frame: &ServerFrame) -> Result<String, End> {
    serde_json::to_string(frame).map_err(|e| {
        error!(error = %e, "serializing a frame failed");
        End::Store
    })
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), End> {
    let text = frame_text(frame)?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|_| End::Gone)
}

async fn send_error(socket: &mut WebSocket, error: ApiError) -> Result<(), End> {
    let mut body = error.body();
    if body.code == ErrorCode::Internal {
        body.message = "internal error".into();
    }
    send(socket, &ServerFrame::Error(body)).await
}

/// The close code and reason for a socket error: 1009 for a message over the limit, 1007
/// for text that is not UTF-8, 1002 for any other protocol error.
fn violation(e: &axum::Error) -> (u16, &'static str) {
    use std::error::Error as _;
    use tungstenite::error::{CapacityError, Error as WsError};
    let inner = e.source().and_then(|s| s.downcast_ref::<WsError>());
    match inner {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => (1009, "message too big"),
        Some(WsError::Utf8(_)) => (1007, "text frame is not UTF-8"),
        _ => (1002, "protocol error"),
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) -> Result<(), End> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
        .map_err(|_| End::Gone)
}
