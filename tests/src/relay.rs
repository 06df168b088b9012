//! The hostile relay: an HTTP proxy double that sits between a real client (the SDK or the
//! `tacit` CLI) and the real server, forwards everything, and lies on command. It is what
//! a malicious or compromised server can do to a client (SECURITY.md, "What a malicious
//! server can try"), so that every client rule can be tested against the real thing:
//!
//! - inject missing or stale devices into device-mismatch answers ([`Lies::multicast_mismatch`],
//!   [`Lies::send_mismatch`]),
//! - substitute one user's device list or prekey bundles with another's, relabelled
//!   ([`Lies::device_lists`], [`Lies::bundles`]),
//! - duplicate, reorder, replay and corrupt envelopes ([`Lies::duplicate_envelopes`],
//!   [`Lies::reverse_envelopes`], [`Lies::replay`], [`Lies::corrupt_envelopes`]),
//! - answer a blob creation with another sender's blob id and substitute that id's bytes
//!   ([`Lies::steal_blob_id`]),
//! - see every provisioning channel opened through it ([`HostileRelay::channels`]), which is
//!   what a server stores and all it needs to answer a link channel itself.
//!
//! - deliver every envelope pushed over the WebSocket twice ([`Lies::duplicate_pushes`]),
//! - publish a policy of its own ([`Lies::policy`]).
//!
//! Everything that went through is kept ([`HostileRelay::exchanges`]), so a test can check
//! what a client sent to whom. The WebSocket (`GET /v1/ws`) is relayed frame by frame.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tacit_api as api;
use tokio::sync::oneshot;

use crate::server::wait_ready;

/// The lies the relay tells, set with [`HostileRelay::lie`]. The default tells none.
#[derive(Debug, Default)]
pub struct Lies {
    /// Answer the next `n` multicasts (`POST /v1/multicast`) with `409 device_mismatch`
    /// naming these devices, without forwarding them.
    pub multicast_mismatch: Option<(api::DeviceMismatch, usize)>,
    /// The same for one-to-one sends (`POST /v1/messages`).
    pub send_mismatch: Option<(api::DeviceMismatch, usize)>,
    /// `user -> other`: a request for `user`'s device list is answered with `other`'s,
    /// relabelled as `user`'s.
    pub device_lists: BTreeMap<String, String>,
    /// `user -> other`: a claim of `user`'s prekey bundles is answered with bundles claimed
    /// from `other`, relabelled as `user`'s.
    pub bundles: BTreeMap<String, String>,
    /// Every fetched envelope is delivered twice.
    pub duplicate_envelopes: bool,
    /// Every fetched batch is delivered in reverse order.
    pub reverse_envelopes: bool,
    /// The last byte of every fetched ciphertext is flipped.
    pub corrupt_envelopes: bool,
    /// Envelopes added to the next fetched batch (replays of envelopes already delivered,
    /// as [`HostileRelay::fetched`] shows them).
    pub replay: Vec<api::Envelope>,
    /// The next blob created (`POST /v1/blobs`) is answered with the id of the last blob
    /// created before it, and from then on every request for that id (uploads, offsets,
    /// downloads, by anyone) goes to the new blob instead: the uploader's file announced
    /// under another sender's blob id, and that id's bytes substituted.
    pub steal_blob_id: bool,
    /// Every envelope pushed over the WebSocket is pushed twice.
    pub duplicate_pushes: bool,
    /// Every fetched or pushed envelope claims this server time (milliseconds since the
    /// Unix epoch) instead of the real one.
    pub envelope_time: Option<i64>,
    /// `GET /v1/policy` is answered with this policy, without asking the server.
    pub policy: Option<api::Policy>,
}

/// One request through the relay and what its client got back.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The method.
    pub method: Method,
    /// The path (without the query).
    pub path: String,
    /// The request body as the client sent it.
    pub request: Bytes,
    /// The status the client got.
    pub status: StatusCode,
    /// The body the client got (after any lie).
    pub response: Bytes,
    /// Whether the relay answered by itself, without forwarding the request.
    pub forged: bool,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    lies: Mutex<Lies>,
    log: Mutex<Vec<Exchange>>,
    /// Blob ids the relay redirects (stolen id -> the blob that really holds the bytes).
    blob_redirects: Mutex<BTreeMap<String, String>>,
}

/// The relay: clients use [`HostileRelay::url`] as their server.
pub struct HostileRelay {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl HostileRelay {
    /// Starts a relay in front of `upstream` (the real server's URL). It tells no lie until
    /// told to.
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            lies: Mutex::new(Lies::default()),
            log: Mutex::new(Vec::new()),
            blob_redirects: Mutex::new(BTreeMap::new()),
        });
        let app = axum::Router::new()
            .route("/v1/ws", axum::routing::get(websocket))
            .fallback(relay)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        wait_ready(&url).await;
        Self {
            url,
            shared,
            stop: Some(stop),
        }
    }

    /// Changes what the relay lies about.
    pub fn lie(&self, change: impl FnOnce(&mut Lies)) {
        change(&mut self.shared.lies.lock().unwrap());
    }

    /// Stops lying.
    pub fn honest(&self) {
        *self.shared.lies.lock().unwrap() = Lies::default();
    }

    /// Everything that went through so far, oldest first.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Every user that a one-to-one send or a multicast forwarded to the server was
    /// addressed to (successful or not).
    pub fn recipients(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for exchange in self.exchanges() {
            if exchange.forged || exchange.method != Method::POST {
                continue;
            }
            match exchange.path.as_str() {
                "/v1/messages" => {
                    let send: api::SendMessageRequest =
                        serde_json::from_slice(&exchange.request).unwrap();
                    out.insert(send.recipient);
                }
                "/v1/multicast" => {
                    let multicast: api::MulticastRequest =
                        serde_json::from_slice(&exchange.request).unwrap();
                    out.extend(multicast.recipients.into_iter().map(|r| r.username));
                }
                _ => {}
            }
        }
        out
    }

    /// The multicasts the server accepted, oldest first.
    pub fn multicasts(&self) -> Vec<api::MulticastRequest> {
        self.exchanges()
            .into_iter()
            .filter(|e| !e.forged && e.path == "/v1/multicast" && e.status.is_success())
            .map(|e| serde_json::from_slice(&e.request).unwrap())
            .collect()
    }

    /// Every envelope fetched through the relay (as delivered, lies included).
    pub fn fetched(&self) -> Vec<api::Envelope> {
        self.exchanges()
            .into_iter()
            .filter(|e| {
                e.method == Method::GET && e.path == "/v1/messages" && e.status.is_success()
            })
            .flat_map(|e| {
                serde_json::from_slice::<api::EnvelopeBatch>(&e.response)
                    .unwrap()
                    .envelopes
            })
            .collect()
    }

    /// The provisioning channels opened through the relay: channel id and the new device's
    /// public key, exactly what the server stores.
    pub fn channels(&self) -> Vec<(String, Vec<u8>)> {
        self.exchanges()
            .into_iter()
            .filter(|e| e.method == Method::POST && e.path == "/v1/provisioning")
            .filter(|e| e.status.is_success())
            .map(|e| {
                let request: api::OpenChannelRequest = serde_json::from_slice(&e.request).unwrap();
                let response: api::OpenChannelResponse =
                    serde_json::from_slice(&e.response).unwrap();
                (response.channel, request.public_key.0)
            })
            .collect()
    }
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn relay(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 256 * 1024 * 1024).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path().to_owned();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    // Lies told without asking the server.
    let forged = {
        let mut lies = shared.lies.lock().unwrap();
        let slot = match (&parts.method, path.as_str()) {
            (&Method::POST, "/v1/multicast") => Some(&mut lies.multicast_mismatch),
            (&Method::POST, "/v1/messages") => Some(&mut lies.send_mismatch),
            _ => None,
        };
        slot.and_then(|slot| {
            let (mismatch, left) = slot.as_mut()?;
            let mismatch = mismatch.clone();
            *left -= 1;
            if *left == 0 {
                *slot = None;
            }
            Some(mismatch)
        })
    };
    let policy = shared.lies.lock().unwrap().policy.clone();
    if let Some(policy) = policy
        && parts.method == Method::GET
        && path == "/v1/policy"
    {
        let answer = Bytes::from(serde_json::to_vec(&policy).unwrap());
        shared.record(&parts.method, &path, &body, StatusCode::OK, &answer, true);
        return json_response(StatusCode::OK, answer);
    }
    if let Some(mismatch) = forged {
        let answer = Bytes::from(
            serde_json::to_vec(&api::ErrorBody {
                code: api::ErrorCode::DeviceMismatch,
                message: "device set changed".into(),
                mismatch: Some(mismatch),
            })
            .unwrap(),
        );
        shared.record(
            &parts.method,
            &path,
            &body,
            StatusCode::CONFLICT,
            &answer,
            true,
        );
        return json_response(StatusCode::CONFLICT, answer);
    }

    // Lies that change where a request goes: another user's device list or bundles.
    let mut target = format!("{path}{query}");
    let mut relabel = None;
    if let ["v1", "users", user, kind @ ("devices" | "bundles")] = segments.as_slice() {
        let lies = shared.lies.lock().unwrap();
        let swaps = if *kind == "devices" {
            &lies.device_lists
        } else {
            &lies.bundles
        };
        if let Some(other) = swaps.get(*user) {
            target = format!("/v1/users/{other}/{kind}{query}");
            relabel = Some((*user).to_owned());
        }
    }

    if let ["v1", "blobs", id] = segments.as_slice()
        && let Some(real) = shared.blob_redirects.lock().unwrap().get(*id)
    {
        target = format!("/v1/blobs/{real}{query}");
    }

    let mut forward = shared
        .http
        .request(parts.method.clone(), format!("{}{target}", shared.upstream))
        .body(body.clone());
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    let answer = match forward.send().await {
        Ok(answer) => answer,
        Err(error) => return (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(mut bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };

    if status.is_success() {
        if let Some(user) = relabel {
            let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            value["username"] = serde_json::Value::String(user);
            bytes = Bytes::from(serde_json::to_vec(&value).unwrap());
        }
        if parts.method == Method::GET && path == "/v1/messages" {
            bytes = shared.tamper_with_batch(bytes);
        }
        if parts.method == Method::POST && path == "/v1/blobs" {
            bytes = shared.maybe_steal_blob_id(bytes);
        }
    }
    shared.record(&parts.method, &path, &body, status, &bytes, false);
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(bytes)).unwrap()
}

/// `GET /v1/ws`: accepts the client's WebSocket, opens one to the server with the same
/// credential, and relays text frames both ways (lying on the server's side).
async fn websocket(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let auth = headers.get(header::AUTHORIZATION).cloned();
    upgrade.on_upgrade(move |client| pump(shared, client, auth))
}

async fn pump(
    shared: Arc<Shared>,
    client: axum::extract::ws::WebSocket,
    auth: Option<axum::http::HeaderValue>,
) {
    use axum::extract::ws::Message as ClientMessage;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message as ServerMessage;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let url = format!("{}/v1/ws", shared.upstream.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    if let Some(auth) = auth {
        request.headers_mut().insert(header::AUTHORIZATION, auth);
    }
    let Ok((server, _)) = tokio_tungstenite::connect_async(request).await else {
        return;
    };
    let (mut to_server, mut from_server) = server.split();
    let (mut to_client, mut from_client) = client.split();
    loop {
        tokio::select! {
            message = from_client.next() => match message {
                Some(Ok(ClientMessage::Text(text))) => {
                    if to_server.send(ServerMessage::Text(text.as_str().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(ClientMessage::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            message = from_server.next() => match message {
                Some(Ok(ServerMessage::Text(text))) => {
                    let mut text = text.as_str().to_owned();
                    let frame = serde_json::from_str::<api::ServerFrame>(&text);
                    let is_envelope = matches!(frame, Ok(api::ServerFrame::Envelope(_)));
                    let time = shared.lies.lock().unwrap().envelope_time;
                    if let (Ok(api::ServerFrame::Envelope(mut envelope)), Some(time)) = (frame, time) {
                        envelope.server_timestamp.0 = time;
                        text = serde_json::to_string(&api::ServerFrame::Envelope(envelope)).unwrap();
                    }
                    let copies = if is_envelope && shared.lies.lock().unwrap().duplicate_pushes {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        if to_client.send(ClientMessage::Text(text.clone().into())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(ServerMessage::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = to_client.close().await;
    let _ = to_server.close().await;
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

impl Shared {
    fn record(
        &self,
        method: &Method,
        path: &str,
        request: &Bytes,
        status: StatusCode,
        response: &Bytes,
        forged: bool,
    ) {
        self.log.lock().unwrap().push(Exchange {
            method: method.clone(),
            path: path.to_owned(),
            request: request.clone(),
            status,
            response: response.clone(),
            forged,
        });
    }

    /// With [`Lies::steal_blob_id`]: answers a blob creation with the previous blob's id
    /// and redirects that id to the new blob.
    fn maybe_steal_blob_id(&self, bytes: Bytes) -> Bytes {
        let mut lies = self.lies.lock().unwrap();
        let created: api::CreateBlobResponse = serde_json::from_slice(&bytes).unwrap();
        let earlier = self
            .log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .filter(|e| e.method == Method::POST && e.path == "/v1/blobs" && e.status.is_success())
            .map(|e| serde_json::from_slice::<api::CreateBlobResponse>(&e.response).unwrap())
            .next();
        let (true, Some(earlier)) = (lies.steal_blob_id, earlier) else {
            return bytes;
        };
        lies.steal_blob_id = false;
        self.blob_redirects
            .lock()
            .unwrap()
            .insert(earlier.blob_id.clone(), created.blob_id);
        let answer = api::CreateBlobResponse {
            blob_id: earlier.blob_id,
            expires_at: created.expires_at,
        };
        Bytes::from(serde_json::to_vec(&answer).unwrap())
    }

    /// Applies the envelope lies to a fetched batch.
    fn tamper_with_batch(&self, bytes: Bytes) -> Bytes {
        let mut lies = self.lies.lock().unwrap();
        if !lies.duplicate_envelopes
            && !lies.reverse_envelopes
            && !lies.corrupt_envelopes
            && lies.replay.is_empty()
            && lies.envelope_time.is_none()
        {
            return bytes;
        }
        let mut batch: api::EnvelopeBatch = serde_json::from_slice(&bytes).unwrap();
        if let Some(time) = lies.envelope_time {
            for envelope in &mut batch.envelopes {
                envelope.server_timestamp.0 = time;
            }
        }
        if lies.corrupt_envelopes {
            for envelope in &mut batch.envelopes {
                if let Some(last) = envelope.ciphertext.0.0.last_mut() {
                    *last ^= 1;
                }
            }
        }
        if lies.duplicate_envelopes {
            batch.envelopes = batch
                .envelopes
                .into_iter()
                .flat_map(|e| [e.clone(), e])
                .collect();
        }
        if lies.reverse_envelopes {
            batch.envelopes.reverse();
        }
        batch.envelopes.append(&mut lies.replay);
        Bytes::from(serde_json::to_vec(&batch).unwrap())
    }
}
