//! Security events and periodic checkpoints on the real binary: failed authentications
//! past the limit become one `auth-failure-burst` entry of their source, the server signs
//! checkpoints by itself (and not twice of one head), `/metrics` counts the entries, and a
//! server whose audit key cannot be loaded does not start.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tacit_api::*;
use tacit_server::audit::Entry;
use tacit_server::audit::export::Record;
use tacit_tests::*;

const METRICS_TOKEN: &str = "audit-events-scrape-token-7c2e";

/// Failed authentications a source may make per minute, in these tests.
const AUTH_LIMIT: usize = 3;

/// One number from the database: `sql` selects a single BIGINT.
async fn count(backend: Backend, url: &str, sql: &str) -> i64 {
    use sqlx::Connection as _;
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            n
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            n
        }
    }
}

/// Polls `sql` until it selects at least `want`, for up to 30 s.
async fn wait_for(backend: Backend, url: &str, sql: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(backend, url, sql).await;
        if n >= want {
            return n;
        }
        assert!(Instant::now() < deadline, "{sql}: {n}, waited for {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tacit-server ARGS` on this data directory and database; its stdout (it must succeed).
fn host(data: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(binary("tacit-server").unwrap())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--database-url")
        .arg(url)
        .env("TACIT_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn setup(dir: &Path, db: Option<&TestDatabase>) -> (PathBuf, String) {
    let data = dir.join("data");
    let url = match db {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", data.join("tacit.db").display()),
    };
    (data, url)
}

async fn audit_events(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDatabase::create_or_panic().await),
    };
    let (data, url) = setup(dir.path(), db.as_ref());
    let server = ServerProcess::launch(&data, &url, &dir.path().join("server.log"))
        .arg("--open-registration")
        .env("TACIT_AUDIT_CHECKPOINT_INTERVAL_SECS", "1")
        .env(
            "TACIT_RATE_LIMITS_AUTH_FAILURES_PER_MINUTE_PER_SOURCE",
            AUTH_LIMIT.to_string(),
        )
        .env("TACIT_METRICS_TOKEN", METRICS_TOKEN)
        .spawn();
    let anon = server.client(None);

    // A registration: something to checkpoint.
    let (_, alice): (_, RegisterResponse) = anon
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&RegisterRequest {
                username: "alice".into(),
                invite: None,
                id_token: None,
                device_name: None,
                keys: keys(1, 0),
            }),
        )
        .await
        .unwrap();
    let first = "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_checkpoints WHERE seq >= 1";
    wait_for(backend, &url, first, 1).await;

    // Guesses with a wrong secret, all at once: the first AUTH_LIMIT are refused as
    // unauthorized, the others as rate-limited without a check.
    let mut forged = alice.credential.clone();
    forged.secret = [7; 32];
    let guesses = 12;
    let answers = futures_util::future::join_all((0..guesses).map(|_| {
        server
            .client(Some(&forged))
            .request(Method::GET, "/v1/devices")
            .send()
    }))
    .await;
    let statuses: Vec<StatusCode> = answers.into_iter().map(|r| r.unwrap().status()).collect();
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((unauthorized, refused), (AUTH_LIMIT, guesses - AUTH_LIMIT));

    // One entry for the burst, then a checkpoint signed after it, by the server itself.
    let bursts =
        "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE action = 'auth-failure-burst'";
    assert_eq!(wait_for(backend, &url, bursts, 1).await, 1);
    let after_burst = "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_checkpoints WHERE seq >= \
                       (SELECT MAX(seq) FROM audit_log WHERE action = 'auth-failure-burst')";
    wait_for(backend, &url, after_burst, 1).await;

    // With nothing new, no checkpoint is signed again (the interval is 1 s).
    let all = "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_checkpoints";
    let checkpoints = count(backend, &url, all).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        count(backend, &url, all).await,
        checkpoints,
        "a head signed twice"
    );
    let distinct = "SELECT CAST(COUNT(DISTINCT seq) AS BIGINT) FROM audit_checkpoints";
    assert_eq!(count(backend, &url, distinct).await, checkpoints);
    assert!(checkpoints >= 2, "{checkpoints}");
    // Still one burst entry: the later refusals of the window wait for the next one.
    assert_eq!(count(backend, &url, bursts).await, 1);

    // The counters.
    let text = anon
        .request(Method::GET, "/metrics")
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "tacit_audit_events_total{action=\"account-register\"} 1".to_owned(),
        "tacit_audit_events_total{action=\"auth-failure-burst\"} 1".to_owned(),
        "tacit_audit_events_total{action=\"rate-limit-trip\"} 0".to_owned(),
        "tacit_audit_events_total{action=\"config-reload\"} 0".to_owned(),
        format!("tacit_audit_events_total{{action=\"audit-checkpoint\"}} {checkpoints}"),
        "tacit_audit_append_failures_total 0".to_owned(),
        format!("tacit_auth_rate_limited_total {refused}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }

    // The log verifies against the stored checkpoint, and the export shows the burst.
    let summary = host(&data, &url, &["audit", "verify"]);
    assert!(summary.contains(", 1 checkpoint matched"), "{summary}");
    let export = host(&data, &url, &["audit", "export", "--format", "jsonl"]);
    let entries: Vec<Entry> = export
        .lines()
        .map(|line| Record::from_line(line).unwrap().entry().unwrap())
        .collect();
    let burst: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.action == "auth-failure-burst")
        .collect();
    assert_eq!(burst.len(), 1, "{export}");
    assert_eq!(burst[0].source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(burst[0].outcome, "failure");
    // Every refusal, unless the 5 s flush fell inside the ~10 ms burst: then the entry
    // counts those before it, and the rest wait for the source's next window (a minute).
    let counted: usize = burst[0].details["count"].parse().unwrap();
    assert!(
        (1..=refused).contains(&counted),
        "{counted} of {refused}: {export}"
    );
    let burst_line = export
        .lines()
        .find(|line| line.contains("\"auth-failure-burst\""))
        .unwrap();
    assert!(
        burst_line.contains("\"source\":{\"ip\":\"127.0.0.1\"}"),
        "the ECS field source.ip: {burst_line}"
    );
    let signed: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.action == "audit-checkpoint")
        .collect();
    assert_eq!(
        i64::try_from(signed.len()).unwrap(),
        checkpoints,
        "{export}"
    );
    // Signed by the server itself: not `via: host`, and no source.
    assert!(
        signed
            .iter()
            .all(|e| !e.details.contains_key("via") && e.source_ip.is_none())
    );
    // No credential in the log.
    let secret = hex::encode(forged.secret);
    assert!(!export.contains(&secret));
    assert!(!export.contains(&forged.to_string()));
    drop(server);
}

both!(audit_events);

/// A server whose audit key cannot be used does not start, and says which key is at fault.
#[tokio::test]
async fn a_bad_audit_key_stops_the_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (data, url) = setup(dir.path(), None);
    let key = dir.path().join("audit.key");
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = dir.path().join("server.log");
    let launch = ServerProcess::launch(&data, &url, &log).env("TACIT_AUDIT_KEY_FILE", &key);
    // It may bind before it loads the key; then it exits on its own.
    if let Ok(server) = launch.clone().try_spawn() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap()
            .contains("audit.key_file")
        {
            assert!(Instant::now() < deadline, "the server started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = server.terminate().unwrap();
        assert!(!status.success(), "{status}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("config key `audit.key_file`"), "{text}");
    assert!(text.contains("readable by other users"), "{text}");

    // With periodic checkpoints off, the key is not needed.
    let server = launch
        .env("TACIT_AUDIT_CHECKPOINT_INTERVAL_SECS", "0")
        .spawn();
    let health = server
        .client(None)
        .request(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(server.terminate().unwrap().success());
}
