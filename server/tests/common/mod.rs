//! The one test harness: start a server (in-process on port 0, or the real binary), and
//! small typed clients for HTTP and WebSocket.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tacit_api::*;
use tacit_server::config::{Config, Redacted};
use tacit_server::testing::TestDatabase;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Define `name_sqlite` and `name_postgres` tests calling `name(Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    };
}

/// A server running inside the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    pub db: Option<TestDatabase>,
    /// The store's URL (SQLite file or PostgreSQL database), for tests that look inside.
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tacit_server::ServeError>>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                TestDatabase::create()
                    .await
                    .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable"),
            ),
        };
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_owned(),
            database_url: Redacted(db.as_ref().map(|d| d.url.clone()).unwrap_or_default()),
            open_registration: true,
            plain_http: true,
            shutdown_grace_secs: 5,
            ..Config::default()
        };
        tweak(&mut config);
        config.validate().unwrap();
        let database_url = config.effective_database_url();
        let store = tacit_server::store::open(&database_url).await.unwrap();
        store.migrate().await.unwrap();
        let listener = std::net::TcpListener::bind(config.listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if config.plain_http { "http" } else { "https" };
        let base = format!("{scheme}://{addr}");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tacit_server::run(
            listener,
            Arc::new(config),
            store,
            async move {
                let _ = stopped.await;
            },
        ));
        let server = Self {
            addr,
            base,
            http: reqwest::Client::new(),
            data_dir,
            db,
            database_url,
            stop: Some(stop),
            task: Some(task),
        };
        if scheme == "http" {
            server.wait_ready().await;
        }
        server
    }

    /// One number from the server's database: `sql` must select a single BIGINT.
    pub async fn count(&self, sql: &str) -> i64 {
        use sqlx::Connection as _;
        if self.database_url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            n
        } else {
            let mut c = sqlx::PgConnection::connect(&self.database_url)
                .await
                .unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            n
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not become ready");
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not stop in time")
                .unwrap()
                .unwrap();
        }
    }

    pub fn client(&self, credential: Option<&DeviceCredential>) -> Client {
        Client {
            base: self.base.clone(),
            http: self.http.clone(),
            credential: credential.cloned(),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Register `username` with `one_time` one-time keys of each kind.
    pub async fn register(&self, username: &str, one_time: u32) -> Client {
        let (status, r): (_, RegisterResponse) = self
            .client(None)
            .call(
                reqwest::Method::POST,
                "/v1/accounts",
                Some(&RegisterRequest {
                    username: username.into(),
                    invite: None,
                    device_name: Some("phone".into()),
                    keys: keys(one_time, 0),
                }),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED);
        self.client(Some(&r.credential))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

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

    pub async fn connect(&self, url: &str) -> Socket {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.credential.as_ref().unwrap())
                .parse()
                .unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
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

/// A device's WebSocket.
pub struct Socket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the next message on a socket was.
#[derive(Debug)]
pub enum Next {
    Frame(ServerFrame),
    Closed(Option<u16>),
}

impl Socket {
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

/// The real binary, started as a child process with JSON logs to a file.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_tacit-server");

/// The `/metrics` scrape token the real binary is started with (a secret: it must never
/// reach the logs).
pub const METRICS_TOKEN: &str = "test-scrape-token-2f1c9a";

impl Process {
    pub fn spawn(data_dir: &Path, database_url: &str, log: &Path) -> Self {
        Self::spawn_with(data_dir, database_url, log, &["--open-registration"])
    }

    #[allow(clippy::zombie_processes)] // waited for by kill9() and terminate()
    pub fn spawn_with(data_dir: &Path, database_url: &str, log: &Path, extra: &[&str]) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let already = std::fs::read_to_string(log).unwrap_or_default().len();
        let child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--plain-http"])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(database_url)
            .env("TACIT_LOG_FORMAT", "json")
            .env("TACIT_LOG_LEVEL", "debug")
            .env("TACIT_METRICS_TOKEN", METRICS_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(line) = text[already..].lines().find(|l| l.contains("\"listening")) {
                let start = line.find("\"local\":\"").unwrap() + "\"local\":\"".len();
                let end = start + line[start..].find('"').unwrap();
                let addr = line[start..end].parse().unwrap();
                return Self {
                    child,
                    addr,
                    log: log.to_owned(),
                };
            }
            assert!(Instant::now() < deadline, "server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self, credential: Option<&DeviceCredential>) -> Client {
        Client {
            base: self.base(),
            http: reqwest::Client::new(),
            credential: credential.cloned(),
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// Register through any client.
pub async fn register_via(client: &Client, username: &str, one_time: u32) -> Client {
    let (_, r): (_, RegisterResponse) = client
        .call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(&RegisterRequest {
                username: username.into(),
                invite: None,
                device_name: None,
                keys: keys(one_time, 0),
            }),
        )
        .await
        .unwrap();
    Client {
        credential: Some(r.credential),
        ..client.clone()
    }
}
