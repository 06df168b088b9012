//! The server's edges: slow and silent clients, the connection cap, request shapes and the
//! JSON error body on every error, oversized declared bodies, failed-authentication limits,
//! `/metrics` access, and file permissions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tacit_api::*;
use tacit_tests::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Send raw bytes on a fresh connection and read the answer until the server closes it or
/// `wait` passes: (status line and headers, body).
async fn raw(server: &TestServer, request: &[u8], wait: Duration) -> (String, String) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => (head.to_owned(), body.to_owned()),
        None => (text, String::new()),
    }
}

fn assert_json_error(head: &str, body: &str, status: u16, code: &str) {
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status}")),
        "expected {status}, got: {head}"
    );
    let body: ErrorBody = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("no JSON error body ({e}): {head}\n{body}"));
    assert_eq!(body.code.as_str(), code);
    assert!(!body.message.is_empty());
}

/// Whether the server closed the connection within `within` (and how long it took).
async fn closed_within(mut stream: TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            within.saturating_sub(start.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {} // an answer (408 or 503) before the close
            Err(_) => return None,
        }
    }
}

/// Hundreds of connections that send nothing, or a header a byte at a time, are closed
/// within the header timeout; while they hold every slot, new connections are refused
/// `503` with `Retry-After`, a device's WebSocket still gets one of the kept slots, and a
/// client already connected keeps its latency. Afterwards everyone is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_the_cap_holds() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.http.max_connections = 100;
        c.http.header_read_timeout_secs = 2;
    })
    .await;
    let alice = server.register("alice", 0).await;
    // A client connected before the flood, on a kept-alive connection.
    let steady = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let healthz = format!("{}/healthz", server.base);
    assert_eq!(steady.get(&healthz).send().await.unwrap().status(), 200);

    // 95 silent connections: 90 ordinary slots and 5 of the 10 kept for sockets.
    let mut silent = Vec::new();
    for _ in 0..95 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A device's socket gets a kept slot; an ordinary request on one is refused.
    let mut socket = alice.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    let (head, body) = raw(
        &server,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_json_error(&head, &body, 503, "unavailable");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");

    // Fill the rest: a new connection now is refused at once.
    for _ in 0..4 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused_at = Instant::now();
    let (head, body) = raw(
        &server,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_json_error(&head, &body, 503, "unavailable");
    assert!(refused_at.elapsed() < Duration::from_secs(2));
    // Then 150 more that drip a header a byte at a time: more than the server answers
    // refusals for at once, so some are closed unanswered, and still at once.
    let dripping: Vec<_> = (0..150)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let start = Instant::now();
                for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n".iter().cycle() {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return start.elapsed();
                    }
                    let mut buf = [0u8; 512];
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf))
                            .await
                    {
                        return start.elapsed();
                    }
                    assert!(start.elapsed() < Duration::from_secs(20), "never cut off");
                }
                start.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused_at = Instant::now();
    let (head, body) = raw(
        &server,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    if !head.is_empty() {
        assert_json_error(&head, &body, 503, "unavailable");
    }
    assert!(refused_at.elapsed() < Duration::from_secs(3));
    // The client that was connected before keeps being served, quickly.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        assert_eq!(steady.get(&healthz).send().await.unwrap().status(), 200);
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < Duration::from_millis(500),
        "steady client slowed to {worst:?}"
    );

    // Every slow connection is closed within the header timeout (2 s) and some slack.
    let closes = futures_util::future::join_all(
        silent
            .into_iter()
            .map(|s| closed_within(s, Duration::from_secs(8))),
    )
    .await;
    let slowest_silent = closes
        .iter()
        .map(|c| c.expect("a silent connection was kept open"))
        .max()
        .unwrap();
    let mut slowest_drip = Duration::ZERO;
    for d in dripping {
        slowest_drip = slowest_drip.max(d.await.unwrap());
    }
    assert!(
        slowest_silent < Duration::from_secs(6),
        "{slowest_silent:?}"
    );
    assert!(slowest_drip < Duration::from_secs(6), "{slowest_drip:?}");
    println!(
        "slowest silent connection closed after {slowest_silent:?}, slowest dripping one after \
         {slowest_drip:?}; steady client's worst latency {worst:?}"
    );
    // And new clients are served again.
    let fresh = reqwest::Client::new();
    assert_eq!(fresh.get(&healthz).send().await.unwrap().status(), 200);
    // The socket outlived the flood (its heartbeat is not a request header).
    socket.sync().await;
    let metrics = server
        .count("SELECT 1") // the server still answers its database too
        .await;
    assert_eq!(metrics, 1);
    server.stop().await;
}

/// A body declared longer than the route takes is refused before any of it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_declared_body_is_refused_at_once() {
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = server.register("alice", 0).await;
    let credential = alice.credential.as_ref().unwrap().to_string();
    let start = Instant::now();
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\n\
         content-type: application/json\r\ncontent-length: 999999999\r\n\r\n{{"
    );
    let (head, body) = raw(&server, request.as_bytes(), Duration::from_secs(3)).await;
    assert_json_error(&head, &body, 413, "payload_too_large");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    server.stop().await;
}

/// Request shapes: an array where the API takes an object is refused; every error the
/// server produces, before routing or in an extractor, carries the JSON error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_json_body() {
    let server = TestServer::start(Backend::Sqlite).await;
    let anon = server.client(None);
    // A positional array for a registration.
    let r = anon
        .request(Method::POST, "/v1/accounts")
        .header("content-type", "application/json")
        .body(r#"["bob", null, null, {}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::BadRequest);
    assert!(body.message.contains("object"), "{}", body.message);

    // A request target over the limit, headers over the limit, a bad path parameter, a
    // bad query, no such route, a wrong method.
    let long = format!(
        "GET /v1/users/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(9000)
    );
    let (head, body) = raw(&server, long.as_bytes(), Duration::from_secs(3)).await;
    assert_json_error(&head, &body, 414, "uri_too_long");
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (head, body) = raw(&server, big.as_bytes(), Duration::from_secs(3)).await;
    assert_json_error(&head, &body, 431, "headers_too_large");
    let alice = server.register("alice", 0).await;
    let credential = alice.credential.as_ref().unwrap().to_string();
    for (request, status, code) in [
        (
            format!(
                "DELETE /v1/devices/abc HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\nconnection: close\r\n\r\n"
            ),
            404,
            "not_found",
        ),
        (
            format!(
                "GET /v1/users/%FF/devices HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\nconnection: close\r\n\r\n"
            ),
            400,
            "bad_request",
        ),
        (
            "GET /v1/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_owned(),
            404,
            "not_found",
        ),
        (
            "PUT /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_owned(),
            405,
            "method_not_allowed",
        ),
        (
            format!(
                "POST /v1/messages/ack HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            ),
            415,
            "unsupported_media_type",
        ),
    ] {
        let (head, body) = raw(&server, request.as_bytes(), Duration::from_secs(3)).await;
        assert_json_error(&head, &body, status, code);
    }
    server.stop().await;
}

/// Failed authentications are limited per source address and counted in `/metrics`,
/// which the public listener serves only to a scraper with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_rate_limited_and_metrics_need_the_token() {
    let token = "a-scrape-token-of-some-length";
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.rate_limits.auth_failures_per_minute_per_source = 5;
        c.metrics.token = Some(tacit_server::config::Redacted(token.into()));
    })
    .await;
    let forged = DeviceCredential {
        account: 1,
        device: DeviceId(1),
        secret: [7; 32],
    };
    let mallory = server.client(Some(&forged));
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = mallory
            .request(Method::GET, "/v1/devices")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");

    let metrics = |auth: Option<&str>| {
        let mut rb = server.http.get(format!("{}/metrics", server.base));
        if let Some(t) = auth {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    assert_eq!(metrics(None).await.unwrap().status(), 404);
    assert_eq!(
        metrics(Some("wrong-token-wrong-token"))
            .await
            .unwrap()
            .status(),
        404
    );
    let text = metrics(Some(token)).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("tacit_auth_failures_total"), 5);
    assert_eq!(value("tacit_auth_rate_limited_total"), 3);
    assert_eq!(value("tacit_writes_failing"), 0);
    server.stop().await;
}

/// The database and blob files are private to the server's user, and so is the data
/// directory of the real binary (even one created world-readable before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private() {
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = server.register("alice", 0).await;
    let (_, blob): (_, CreateBlobResponse) = alice
        .call(
            Method::POST,
            "/v1/blobs",
            Some(&CreateBlobRequest { size: 3 }),
        )
        .await
        .unwrap();
    let r = alice
        .request(Method::PATCH, &format!("/v1/blobs/{}", blob.blob_id))
        .header("content-type", BLOB_UPLOAD_CONTENT_TYPE)
        .header(UPLOAD_OFFSET, 0)
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = server.data_dir.path();
    assert_eq!(mode(&dir.join("tacit.db")), 0o600);
    assert_eq!(mode(&dir.join("blobs")), 0o700);
    for entry in std::fs::read_dir(dir.join("blobs")).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
    server.stop().await;

    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = parent.path().join("server.log");
    let process = ServerProcess::spawn(&data, "", &log);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("tacit.db")), 0o600);
    process.kill9();
}

/// A blob of the largest size the server takes (the largest file plus the attachment
/// format's overhead) uploads in one request: the early size check allows for the overhead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_of_the_largest_size_uploads_in_one_request() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.blobs.max_file_bytes = 300_000;
    })
    .await;
    let alice = server.register("alice", 0).await;
    let size = tacit_server::service::max_blob_bytes(300_000);
    assert!(size > 300_000);
    let blob_id = alice.reserve_blob(size).await;
    let r = alice
        .patch_blob(&blob_id, 0)
        .body(vec![7u8; usize::try_from(size).unwrap()])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    server.stop().await;
}

/// A client that stops reading a download is cut off after the write timeout, so it
/// cannot hold its connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.http.write_timeout_secs = 2;
    })
    .await;
    let alice = server.register("alice", 0).await;
    let size: u64 = 48 << 20;
    let blob_id = alice.reserve_blob(size).await;
    let r = alice
        .patch_blob(&blob_id, 0)
        .body(vec![7u8; usize::try_from(size).unwrap()])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let credential = alice.credential.as_ref().unwrap().to_string();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /v1/blobs/{blob_id} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read nothing while the server's writes stall, then see how much it had sent.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept the stalled connection open");
    assert!(
        (got.len() as u64) < size,
        "the whole blob arrived ({} bytes): the write never stalled",
        got.len()
    );
    server.stop().await;
}
