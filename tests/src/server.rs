//! The real server in this process: [`spawn_server`] and [`TestServer`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tacit_api::DeviceCredential;
use tacit_server::config::{Config, Redacted};
use tokio::sync::oneshot;

use crate::client::{Client, register_device};
use crate::database::TestDatabase;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the server's temporary data directory.
    Sqlite,
    /// A fresh, randomly named database on the PostgreSQL server of
    /// `TACIT_TEST_DATABASE_URL`, dropped afterwards.
    Postgres,
}

/// Define `name::sqlite` and `name::postgres` tests calling `async fn name(Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await;
            }
        }
    };
}

/// The real server, in this process, on `127.0.0.1:0` with plain HTTP, open registration
/// and a fresh SQLite database in a temporary directory. Stopped when dropped.
pub async fn spawn_server() -> TestServer {
    TestServer::start(Backend::Sqlite).await
}

/// A server running inside the test process (see [`spawn_server`]).
pub struct TestServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// `http://ADDR` (or `https://` when a test turned TLS on).
    pub base: String,
    /// A client for tests that make their own requests.
    pub http: reqwest::Client,
    /// The data directory (the SQLite database is `tacit.db` in it).
    pub data_dir: tempfile::TempDir,
    /// The PostgreSQL database, dropped with the server.
    pub db: Option<TestDatabase>,
    /// The store's URL (SQLite file or PostgreSQL database), for tests that look inside.
    pub database_url: String,
    /// The configuration the server runs with.
    pub config: Arc<Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tacit_server::ServeError>>>,
}

impl TestServer {
    /// Starts a server on `backend` and waits until it is ready.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// [`TestServer::start`] with the configuration changed by `tweak` first.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create_or_panic().await),
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
        let config = Arc::new(config);
        let task = tokio::spawn(tacit_server::run(
            listener,
            config.clone(),
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
            config,
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

    /// The services over a store of their own on the server's database, as
    /// `tacit-server admin ...` on the server host has them: what they change, the running
    /// server learns only from the database.
    pub async fn host(&self) -> tacit_server::service::Services {
        let store = tacit_server::store::open(&self.database_url).await.unwrap();
        tacit_server::service::Services::new(store, self.config.clone())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        wait_ready(&self.base).await;
    }

    /// Graceful shutdown, insisting that `run` returned `Ok` in time.
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

    /// A client of this server, as `credential`'s device or anonymous.
    pub fn client(&self, credential: Option<&DeviceCredential>) -> Client {
        Client {
            base: self.base.clone(),
            http: self.http.clone(),
            credential: credential.cloned(),
        }
    }

    /// `ws://ADDR/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Register `username` with `one_time` one-time keys of each kind (its first device
    /// named `phone`).
    pub async fn register(&self, username: &str, one_time: u32) -> Client {
        register_device(&self.client(None), username, one_time, Some("phone")).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits (up to 10 s) until `{base}/readyz` answers 200.
pub(crate) async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{base} did not become ready");
}
