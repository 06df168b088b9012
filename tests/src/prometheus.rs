//! A real Prometheus server (Debian's `prometheus` package; `scripts/deploy-tools` installs
//! it) scraping a test server's metrics listener every second and evaluating the alerting
//! rules of `deploy/prometheus/`, for the tests of the deployment kit.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long Prometheus may take to answer ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace's `deploy/` directory (the deployment kit).
#[must_use]
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
}

/// A free loopback port (bound, then released: a small race the tests accept).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A running Prometheus, killed on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Prometheus scraping `target` (job `tacit`, every second) and evaluating the rule
    /// files `rules` every second.
    pub async fn start(target: SocketAddr, rules: &[&Path]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rule_files: Vec<String> = rules
            .iter()
            .map(|r| {
                format!(
                    "  - {}",
                    serde_json::to_string(&r.display().to_string()).unwrap()
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\n\
             scrape_configs:\n  - job_name: tacit\n    static_configs:\n      - targets: ['{target}']\n",
            rule_files.join("\n")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting prometheus failed: {e} (./scripts/deploy-tools installs it)")
            });
        let mut prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return prometheus;
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "prometheus exited ({status}); its log:\n{}",
                    prometheus.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready; its log:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Prometheus's own log.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The `data` of a successful answer of the HTTP API at `path` (panics otherwise,
    /// naming what was asked).
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let body: Value = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The result vector of an instant query (panics on a query error, naming it).
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", expr)]).await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `expr` until it has a result, for at most `timeout`.
    pub async fn wait_for(&self, expr: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(expr).await;
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} has no result after {timeout:?}; the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The alerts pending or firing: `(alertname, state)`.
    pub async fn alerts(&self) -> Vec<(String, String)> {
        self.api("/api/v1/alerts", &[]).await["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// The rule groups Prometheus loaded (`/api/v1/rules`).
    pub async fn rules(&self) -> Value {
        self.api("/api/v1/rules", &[]).await["groups"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
