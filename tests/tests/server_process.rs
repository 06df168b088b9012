//! Tests of the real `tacit-server` binary: crash safety under `kill -9`, the CLI, and what
//! ends up at rest and in the logs.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Method, StatusCode};
use tacit_api::*;
use tacit_tests::*;

/// The `/metrics` scrape token the real binary is started with (a secret: it must never
/// reach the logs).
const METRICS_TOKEN: &str = "test-scrape-token-2f1c9a";

fn bin() -> PathBuf {
    binary("tacit-server").unwrap()
}

/// The real binary with JSON logs at debug level and a metrics token, and `extra` flags.
fn spawn_with(data_dir: &Path, database_url: &str, log: &Path, extra: &[&str]) -> ServerProcess {
    ServerProcess::launch(data_dir, database_url, log)
        .args(extra)
        .env("TACIT_LOG_FORMAT", "json")
        .env("TACIT_LOG_LEVEL", "debug")
        .env("TACIT_METRICS_TOKEN", METRICS_TOKEN)
        .spawn()
}

/// [`spawn_with`] with open registration.
fn spawn(data_dir: &Path, database_url: &str, log: &Path) -> ServerProcess {
    spawn_with(data_dir, database_url, log, &["--open-registration"])
}

fn database_url(backend: Backend, dir: &Path, db: Option<&TestDatabase>) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("tacit.db").display()),
        Backend::Postgres => db.unwrap().url.clone(),
    }
}

async fn test_db(backend: Backend) -> Option<TestDatabase> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            TestDatabase::create()
                .await
                .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable"),
        ),
    }
}

fn with_base(client: &Client, process: &ServerProcess) -> Client {
    Client {
        base: process.url(),
        ..client.clone()
    }
}

/// Accepted sends survive `kill -9`; acknowledged envelopes are never delivered again and
/// unacknowledged ones are delivered after the restart.
async fn crash(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = test_db(backend).await;
    let url = database_url(backend, dir.path(), db.as_ref());
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");

    let server = spawn(&data, &url, &log);
    let anon = server.client(None);
    let alice = register_via(&anon, "alice", 0).await;
    let bob = register_via(&anon, "bob", 0).await;
    for i in 0..40 {
        let ct = format!("envelope-{i}");
        alice
            .send(&format!("m{i}"), "bob", &[(1, ct.as_bytes())], &[])
            .await
            .unwrap();
    }
    let mut socket = bob.connect(&format!("ws://{}/v1/ws", server.addr)).await;
    let before = socket.backlog().await;
    assert_eq!(before.len(), 40);
    socket
        .ack_sync(before[..20].iter().map(|e| e.id).collect())
        .await;
    server.kill9();

    let server = spawn(&data, &url, &log);
    let (alice, bob) = (with_base(&alice, &server), with_base(&bob, &server));
    let mut socket = bob.connect(&format!("ws://{}/v1/ws", server.addr)).await;
    let after = socket.backlog().await;
    assert_eq!(
        after,
        before[20..].to_vec(),
        "exactly the unacknowledged ones"
    );
    // A retried send from before the crash is still recognised.
    let retry = alice
        .send("m3", "bob", &[(1, b"envelope-3")], &[])
        .await
        .unwrap();
    assert!(retry.duplicate);
    alice
        .send("late", "bob", &[(1, b"late")], &[])
        .await
        .unwrap();
    let late = socket.envelope().await;
    assert_eq!(late.ciphertext.0.as_slice(), b"late");
    let mut ids: Vec<u64> = after.iter().map(|e| e.id).collect();
    ids.push(late.id);
    socket.ack_sync(ids).await;
    server.kill9();

    let server = spawn(&data, &url, &log);
    let bob = with_base(&bob, &server);
    let mut socket = bob.connect(&format!("ws://{}/v1/ws", server.addr)).await;
    assert!(socket.backlog().await.is_empty(), "nothing delivered twice");
    drop(socket);
    assert!(
        server.terminate().unwrap().success(),
        "clean exit on SIGTERM"
    );
}
both!(crash);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file below `dir`, as bytes.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

/// Store envelopes with marker bytes through the API, then look at the database, the data
/// directory and the logs: the marker appears only inside the envelope bytes as sent (and
/// never in the logs), and no credential or invite token appears anywhere in clear.
async fn nothing_in_clear(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = test_db(backend).await;
    let data = dir.path().join("data");
    let url = database_url(backend, &data, db.as_ref());
    let log = dir.path().join("server.log");

    let mut invites = Vec::new();
    for _ in 0..2 {
        let out = Command::new(bin())
            .args(["invite", "create", "--database-url", &url])
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success());
        invites.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    let server = spawn_with(&data, &url, &log, &[]);
    let anon = server.client(None);
    let mut clients = Vec::new();
    for (name, invite) in ["alice", "bob"].iter().zip(&invites) {
        let (_, r): (_, RegisterResponse) = anon
            .call(
                Method::POST,
                "/v1/accounts",
                Some(&RegisterRequest {
                    username: (*name).into(),
                    invite: Some(invite.clone()),
                    id_token: None,
                    device_name: None,
                    keys: keys(2, 0),
                }),
            )
            .await
            .unwrap();
        clients.push(server.client(Some(&r.credential)));
    }
    let (alice, bob) = (&clients[0], &clients[1]);
    let (_, added): (_, AddDeviceResponse) = alice
        .call(
            Method::POST,
            "/v1/devices",
            Some(&AddDeviceRequest {
                device_name: None,
                keys: keys(1, 0),
            }),
        )
        .await
        .unwrap();
    let alice2 = server.client(Some(&added.credential));

    let marker = b"TACIT-MARKER-5b1e0c7d";
    let mut envelope = vec![0x17, 0x03, 0x42];
    envelope.extend_from_slice(marker);
    envelope.extend_from_slice(&[0xa5; 40]);
    let mut own = envelope.clone();
    own[0] = 0x18;
    alice
        .send("marker-1", "bob", &[(1, &envelope)], &[(2, &own)])
        .await
        .unwrap();
    // Deliver over the socket and over HTTP, acknowledge one copy only.
    let mut socket = bob.connect(&format!("ws://{}/v1/ws", server.addr)).await;
    assert_eq!(socket.backlog().await[0].ciphertext.0.as_slice(), envelope);
    drop(socket);
    let (_, batch): (_, EnvelopeBatch) = alice2
        .call::<(), _>(Method::GET, "/v1/messages", None)
        .await
        .unwrap();
    alice2
        .call_empty(
            Method::POST,
            "/v1/messages/ack",
            Some(&AckRequest {
                ids: vec![batch.envelopes[0].id],
            }),
        )
        .await
        .unwrap();
    let _: (_, PrekeyBundles) = bob
        .call(
            Method::POST,
            "/v1/users/alice/bundles",
            Some(&ClaimBundlesRequest::default()),
        )
        .await
        .unwrap();
    // Scrape /metrics too, so that its code path is in the logs.
    let scraped = anon
        .request(Method::GET, "/metrics")
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(server.terminate().unwrap().success());

    // What is at rest: every file in the data directory, and for PostgreSQL every row.
    let mut at_rest = Vec::new();
    files(&data, &mut at_rest);
    if let Some(db) = &db {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        for table in [
            "invites",
            "accounts",
            "devices",
            "one_time_prekeys",
            "envelopes",
            "sent_messages",
        ] {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT CAST(t AS text) FROM {table} t"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            at_rest.push((format!("table {table}"), rows.join("\n").into_bytes()));
        }
        conn.close().await.unwrap();
    }
    let logs = std::fs::read(&log).unwrap();
    assert!(contains(&logs, b"listening"), "the log was captured");

    // Secrets: credentials (raw, as sent, base64url) and invite tokens, raw and as hex.
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for c in [&alice.credential, &bob.credential, &alice2.credential] {
        let c = c.as_ref().unwrap();
        secrets.push(c.secret.to_vec());
        secrets.push(hex::encode(c.secret).into_bytes());
        let text = c.to_string();
        secrets.push(text.rsplit('.').next().unwrap().as_bytes().to_vec());
        secrets.push(text.into_bytes());
    }
    secrets.push(METRICS_TOKEN.as_bytes().to_vec());
    for token in &invites {
        secrets.push(token.as_bytes().to_vec());
        secrets.push(hex::encode(token.as_bytes()).into_bytes());
    }
    for (name, bytes) in at_rest.iter().chain([&("log".to_owned(), logs.clone())]) {
        for s in &secrets {
            assert!(!contains(bytes, s), "a secret is in clear in {name}");
        }
    }

    // The marker: only inside the envelope bytes at rest, never in the logs.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    for form in [
        marker.to_vec(),
        hex::encode(marker).into_bytes(),
        b64.encode(&envelope).into_bytes(),
    ] {
        assert!(!contains(&logs, &form), "envelope content in the logs");
    }
    let mut found = false;
    for (name, bytes) in &at_rest {
        for (m, full) in [
            (marker.to_vec(), [envelope.clone(), own.clone()]),
            (
                hex::encode(marker).into_bytes(),
                [
                    hex::encode(&envelope).into_bytes(),
                    hex::encode(&own).into_bytes(),
                ],
            ),
        ] {
            let marker_count = bytes
                .windows(m.len())
                .filter(|w| *w == m.as_slice())
                .count();
            let full_count: usize = full
                .iter()
                .map(|f| {
                    bytes
                        .windows(f.len())
                        .filter(|w| *w == f.as_slice())
                        .count()
                })
                .sum();
            assert_eq!(
                marker_count, full_count,
                "marker outside an envelope in {name}"
            );
            found |= marker_count > 0;
        }
    }
    assert!(
        found,
        "the unacknowledged envelope is at rest (the scan works)"
    );
}
both!(nothing_in_clear);

#[test]
fn invite_create_prints_only_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["invite", "create"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.strip_suffix('\n').unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let out = Command::new(bin())
        .args(["invite", "list"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let list = String::from_utf8(out.stdout).unwrap();
    assert_eq!(list.lines().count(), 1);
    assert!(list.contains("uses=0/1"), "{list}");
    assert!(!list.contains(token));
    let out = Command::new(bin())
        .args(["migrate"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn invalid_config_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(
        &["config", "check"],
        &[("TACIT_LIMITS_MAX_BODY_BYTES", "lots")],
    );
    assert_eq!(code, Some(2), "a configuration error exits 2");
    assert!(
        err.contains("TACIT_LIMITS_MAX_BODY_BYTES") && err.contains("limits.max_body_bytes"),
        "{err}"
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[websocket]\nheartbeat_interval_secs = -1\n").unwrap();
    let (code, err) = run(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(2), "a configuration error exits 2");
    assert!(err.contains("heartbeat_interval_secs"), "{err}");
    std::fs::write(&file, "[limits]\nmax_mailbox_dept = 5\n").unwrap();
    let (code, err) = run(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(2), "a configuration error exits 2");
    assert!(err.contains("max_mailbox_dept"), "{err}");
    let (code, err) = run(&["serve", "--plain-http", "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, Some(2), "a configuration error exits 2");
    assert!(err.contains("plain_http"), "{err}");
    let (code, err) = run(&["config", "check", "--database-url", "mysql://x"], &[]);
    assert_eq!(code, Some(2), "a configuration error exits 2");
    assert!(err.contains("database_url"), "{err}");
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/tacit-server.example.toml"
    );
    let (code, err) = run(&["config", "check", "--config", example], &[]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _) = run(&["no-such-command"], &[]);
    assert_eq!(code, Some(2));
}
