//! Typed clients of the HTTP and WebSocket API, and fake key material, for tests that
//! speak the protocol by hand.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tacit_api::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A signed prekey with id `id` whose bytes are all `tag`.
pub fn signed(id: u32, tag: u8) -> SignedPrekey {
    SignedPrekey {
        id,
        public_key: vec![tag; 32].into(),
        signature: vec![tag; 64].into(),
    }
}

/// A key set whose one-time key ids start at `first_id`.
pub fn keys(one_time: u32, first_id: u32) -> DeviceKeys {
    DeviceKeys {
        identity_key: vec![1; 32].into(),
        signed_prekey: signed(1, 2),
        kem_last_resort_prekey: signed(1, 3),
        one_time_prekeys: (first_id..first_id + one_time)
            .map(|id| OneTimePrekey {
                id,
                public_key: vec![4; 32].into(),
                signature: vec![9; 64].into(),
            })
            .collect(),
        one_time_kem_prekeys: (first_id..first_id + one_time)
            .map(|id| signed(id, 5))
            .collect(),
    }
}

/// An HTTP client acting as one device (or anonymous).
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub credential: Option<DeviceCredential>,
}

/// A failed call: the status and the error body.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl Client {
    pub fn account(&self) -> i64 {
        self.credential.as_ref().unwrap().account
    }

    pub fn device(&self) -> DeviceId {
        self.credential.as_ref().unwrap().device
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(c) = &self.credential {
            rb = rb.bearer_auth(c.to_string());
        }
        rb
    }

    /// Call and decode the success body, or return the error body.
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, R), Failure> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let response = rb.send().await.unwrap();
        decode(response).await
    }

    /// Call an endpoint that answers 204.
    pub async fn call_empty<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), Failure> {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let response = rb.send().await.unwrap();
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        Err(Failure {
            status,
            body: response.json().await.unwrap(),
        })
    }

    pub async fn send(
        &self,
        id: &str,
        recipient: &str,
        to: &[(u32, &[u8])],
        own: &[(u32, &[u8])],
    ) -> Result<SendMessageResponse, Failure> {
        let list = |l: &[(u32, &[u8])]| {
            l.iter()
                .map(|(d, ct)| DeviceCiphertext {
                    device_id: DeviceId(*d),
                    ciphertext: Ciphertext(ct.to_vec().into()),
                })
                .collect()
        };
        let req = SendMessageRequest {
            client_message_id: id.into(),
            recipient: recipient.into(),
            recipient_devices: list(to),
            own_devices: list(own),
        };
        self.call(reqwest::Method::POST, "/v1/messages", Some(&req))
            .await
            .map(|(_, r)| r)
    }

    /// Reserve a blob of `size` bytes; its id.
    pub async fn reserve_blob(&self, size: u64) -> String {
        let (_, blob): (_, CreateBlobResponse) = self
            .call(Method::POST, "/v1/blobs", Some(&CreateBlobRequest { size }))
            .await
            .unwrap();
        blob.blob_id
    }

    /// A blob `PATCH` at `offset`, its body still to be given.
    pub fn patch_blob(&self, id: &str, offset: u64) -> reqwest::RequestBuilder {
        self.request(Method::PATCH, &format!("/v1/blobs/{id}"))
            .header("content-type", BLOB_UPLOAD_CONTENT_TYPE)
            .header(UPLOAD_OFFSET, offset)
    }

    /// A `PATCH` from offset 0 whose body the caller feeds piece by piece through the
    /// sender (dropping it ends the body, short of `len` if fewer bytes were sent).
    pub fn streamed_patch(
        &self,
        id: &str,
        len: u64,
    ) -> (
        tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
        reqwest::RequestBuilder,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let request = self
            .patch_blob(id, 0)
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream));
        (tx, request)
    }

    /// The WebSocket upgrade request to `url` with this device's credential.
    fn upgrade_request(
        &self,
        url: &str,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.credential.as_ref().unwrap())
                .parse()
                .unwrap(),
        );
        request
    }

    pub async fn connect(&self, url: &str) -> Socket {
        let request = self.upgrade_request(url);
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Socket { ws }
    }

    /// A WebSocket to `url` over an established `stream` (a TLS stream to a reverse
    /// proxy, say), with this device's credential.
    pub async fn connect_over<S>(&self, url: &str, stream: S) -> Socket<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let request = self.upgrade_request(url);
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        Socket { ws }
    }
}

pub async fn decode<R: DeserializeOwned>(
    response: reqwest::Response,
) -> Result<(StatusCode, R), Failure> {
    let status = response.status();
    let text = response.text().await.unwrap();
    if status.is_success() {
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        ))
    } else {
        Err(Failure {
            status,
            body: serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {e}: {text}")),
        })
    }
}

/// A device's WebSocket (over TCP to the server, or any stream: [`Client::connect_over`]).
pub struct Socket<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
}

/// What the next message on a socket was.
#[derive(Debug)]
pub enum Next {
    Frame(ServerFrame),
    Closed(Option<u16>),
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Socket<S> {
    pub async fn next(&mut self) -> Next {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Next::Frame(serde_json::from_str(t.as_str()).unwrap());
                }
                Some(Ok(Message::Close(f))) => return Next::Closed(f.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Closed(None),
            }
        }
    }

    pub async fn frame(&mut self) -> ServerFrame {
        match self.next().await {
            Next::Frame(f) => f,
            Next::Closed(c) => panic!("socket closed ({c:?})"),
        }
    }

    pub async fn envelope(&mut self) -> Envelope {
        match self.frame().await {
            ServerFrame::Envelope(e) => e,
            other => panic!("expected an envelope, got {other:?}"),
        }
    }

    /// Envelopes until `queue_empty`.
    pub async fn backlog(&mut self) -> Vec<Envelope> {
        let mut out = Vec::new();
        loop {
            match self.frame().await {
                ServerFrame::Envelope(e) => out.push(e),
                ServerFrame::QueueEmpty => return out,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.ws
            .send(Message::Text(serde_json::to_string(frame).unwrap().into()))
            .await
            .unwrap();
    }

    /// Ack, then ping and wait for the pong: the server has committed the ack.
    pub async fn ack_sync(&mut self, ids: Vec<u64>) {
        self.send(&ClientFrame::Ack { ids }).await;
        self.sync().await;
    }

    pub async fn sync(&mut self) {
        self.send(&ClientFrame::Ping { nonce: 42 }).await;
        loop {
            match self.frame().await {
                ServerFrame::Pong { nonce: 42 } => return,
                ServerFrame::Envelope(_) => panic!("unexpected envelope"),
                _ => {}
            }
        }
    }
}

/// Register `username` (with `one_time` one-time keys of each kind) through any client;
/// the new device as a client of the same server.
pub async fn register_via(client: &Client, username: &str, one_time: u32) -> Client {
    register_device(client, username, one_time, None).await
}

/// [`register_via`] naming the first device.
pub(crate) async fn register_device(
    client: &Client,
    username: &str,
    one_time: u32,
    device_name: Option<&str>,
) -> Client {
    let (status, r): (_, RegisterResponse) = client
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(&RegisterRequest {
                username: username.into(),
                invite: None,
                id_token: None,
                device_name: device_name.map(Into::into),
                keys: keys(one_time, 0),
            }),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    Client {
        credential: Some(r.credential),
        ..client.clone()
    }
}
