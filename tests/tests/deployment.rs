//! The deployment kit against the real server: `tacit-server healthcheck`, the example
//! Prometheus alerting rules and Grafana dashboard on a real Prometheus scraping a real
//! server, and the example nginx and HAProxy configurations passing WebSockets and large
//! uploads (`deploy/`, docs/DEPLOYMENT.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tacit_tests::prometheus::{Prometheus, deploy_dir, free_port};
use tacit_tests::proxy::{ProxyKind, ReverseProxy};
use tacit_tests::{Client, ServerProcess, binary, register_via};

/// `tacit-server healthcheck ARGS`: (exit code, stdout, stderr).
fn healthcheck(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary("tacit-server").unwrap())
        .arg("healthcheck")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The health check finds the server from the same configuration (TLS with the
/// self-signed certificate, or plain HTTP), answers 0 only while it is ready, and says why
/// not otherwise.
#[test]
fn healthcheck_answers() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    // Listening on every address (the container's default): asked on loopback.
    let everywhere = format!("0.0.0.0:{port}");
    let server = ServerProcess::launch(dir.path(), "", &log)
        .tls()
        .listen(everywhere.clone())
        .spawn();
    let (code, out, err) = healthcheck(dir.path(), &["--listen", &everywhere]);
    assert_eq!((code, out.trim()), (Some(0), "ready"), "{err}");
    server.kill9();
    let (code, out, _) = healthcheck(dir.path(), &["--listen", &everywhere]);
    assert_eq!(code, Some(1));
    assert!(out.starts_with("not ready: https://127.0.0.1:"), "{out}");

    let listen = format!("127.0.0.1:{port}");
    let plain = ServerProcess::launch(dir.path(), "", &log)
        .listen(listen.clone())
        .spawn();
    let (code, out, err) = healthcheck(dir.path(), &["--listen", &listen, "--plain-http"]);
    assert_eq!((code, out.trim()), (Some(0), "ready"), "{err}");
    let url = format!("http://{}/readyz", plain.addr);
    let (code, out, _) = healthcheck(dir.path(), &["--url", &url]);
    assert_eq!((code, out.trim()), (Some(0), "ready"));
    // A URL that answers something else than 2xx is not ready.
    let missing = format!("http://{}/no-such-page", plain.addr);
    let (code, out, _) = healthcheck(dir.path(), &["--url", &missing]);
    assert_eq!(code, Some(1));
    assert!(out.contains("404"), "{out}");
    // Port 0 cannot be asked: the error says what to do.
    let (code, _, err) = healthcheck(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--url"), "{err}");
    // A configuration error is "unhealthy" (1), not Docker's reserved 2.
    let (code, _, err) = healthcheck(dir.path(), &["--database-url", "mysql://x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("database_url"), "{err}");
}

/// Metric names in a PromQL expression: identifiers that are not functions, keywords,
/// label names or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const WORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "time",
        "rate",
        "irate",
        "increase",
        "deriv",
        "histogram_quantile",
        "abs",
        "clamp_min",
        "clamp_max",
        "vector",
        "scalar",
        "absent",
        "delta",
        "topk",
        "bottomk",
        "label_replace",
        "predict_linear",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
        "changes",
        "resets",
        "sort",
        "sort_desc",
        "round",
        "ceil",
        "floor",
        "timestamp",
        "inf",
        "nan",
    ];
    let mut names = BTreeSet::new();
    let mut in_braces = 0usize;
    let mut in_quotes = false;
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            _ if in_quotes => {}
            '{' => in_braces += 1,
            '}' => in_braces = in_braces.saturating_sub(1),
            '[' => {
                // A range: skip to its end.
                for (_, c) in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
            }
            c if in_braces == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &expr[i..end];
                if expr[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|p| p.is_ascii_digit() || p == '.')
                {
                    continue; // a number's exponent or a duration's unit
                }
                let before = expr[..i].trim_end();
                let after = expr[end..].trim_start();
                let grouping = before.ends_with("by (")
                    || before.ends_with("by(")
                    || before.ends_with("without (")
                    || before.ends_with("on (")
                    || before.ends_with("ignoring (")
                    || (before.ends_with(',')
                        && !after.starts_with('{')
                        && !after.starts_with('['));
                if !WORDS.contains(&word) && !after.starts_with('(') && !grouping {
                    names.insert(word.to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

#[test]
fn metric_names_of_expressions() {
    assert_eq!(
        metric_names(
            r#"sum by (kind) (rate(tacit_a_total{job=~"$job"}[5m])) / on (kind) tacit_b > 0.5"#
        ),
        ["tacit_a_total", "tacit_b"].map(String::from).into()
    );
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{a="b c"}[1m])))"#
        ),
        ["x_bucket"].map(String::from).into()
    );
}

/// A certificate for loopback that expires in `days` days, written as PEM files.
fn expiring_certificate(dir: &Path, days: i64) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// An HTTPS client of a server with an untrusted certificate.
fn https_client(server: &ServerProcess) -> Client {
    Client {
        base: format!("https://{}", server.addr),
        http: reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap(),
        credential: None,
    }
}

/// The example alerting rules and the dashboard read what a real server exports: every
/// metric a rule or a panel names is in the server's scrape; on a healthy server whose
/// certificate expires in five days (every `for:` shortened to 0s), exactly the
/// certificate alert fires (and the disk alerts exactly when the disk is that full); every
/// dashboard query answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_read_real_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = expiring_certificate(dir.path(), 5);
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = ServerProcess::launch(dir.path(), "", &dir.path().join("server.log"))
        .tls()
        .env("TACIT_TLS_CERT_FILE", &cert)
        .env("TACIT_TLS_KEY_FILE", &key)
        .env("TACIT_METRICS_LISTEN", metrics_addr.to_string())
        .arg("--open-registration")
        .spawn();
    let anonymous = https_client(&server);
    let alice = register_via(&anonymous, "alice", 30).await;
    register_via(&anonymous, "bob", 3).await;
    let (_, count): (_, tacit_api::PrekeyCount) = alice
        .call::<(), _>(reqwest::Method::GET, "/v1/keys/count", None)
        .await
        .unwrap();
    assert_eq!(count.one_time_prekeys, 30);

    // The rules as shipped, with every `for:` at 0s so a true condition fires at once.
    let shipped =
        std::fs::read_to_string(deploy_dir().join("prometheus/tacit-alerts.yml")).unwrap();
    let immediate: String = shipped
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 0s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rules_file = dir.path().join("tacit-alerts.yml");
    std::fs::write(&rules_file, immediate).unwrap();
    let prometheus = Prometheus::start(metrics_addr, &[&rules_file]).await;
    prometheus
        .wait_for("tacit_ready == 1", Duration::from_secs(30))
        .await;

    // Every metric the rules name is exported (a misspelt name would never fire). Rules
    // not evaluated yet have no health: wait for their first evaluation.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let groups = loop {
        let groups = prometheus.rules().await;
        let evaluated = groups.as_array().unwrap().iter().all(|g| {
            g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["health"] != "unknown")
        });
        if evaluated {
            break groups;
        }
        assert!(std::time::Instant::now() < deadline, "{groups}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let rules: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(rules.len() >= 12, "{groups}");
    let mut alert_names = BTreeSet::new();
    for rule in &rules {
        assert_eq!(rule["type"], "alerting", "{rule}");
        assert_eq!(rule["health"], "ok", "{rule}");
        alert_names.insert(rule["name"].as_str().unwrap().to_owned());
        let query = rule["query"].as_str().unwrap();
        let names = metric_names(query);
        assert!(!names.is_empty(), "{query}");
        for name in names {
            prometheus
                .wait_for(&format!("count({name})"), Duration::from_secs(20))
                .await;
        }
    }

    // Exactly the certificate alert fires (the disk ones only if the disk is that full).
    let disk_free: f64 = prometheus
        .wait_for(
            "min(tacit_filesystem_available_bytes / tacit_filesystem_size_bytes)",
            Duration::from_secs(10),
        )
        .await[0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut expected: BTreeSet<String> = ["TacitCertificateExpiresSoon".to_owned()].into();
    if disk_free < 0.15 {
        expected.insert("TacitDiskSpaceLow".to_owned());
    }
    if disk_free < 0.05 {
        expected.insert("TacitDiskSpaceCritical".to_owned());
    }
    assert!(
        expected.iter().all(|a| alert_names.contains(a)),
        "{alert_names:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = prometheus.alerts().await;
        let firing: BTreeSet<String> = alerts
            .iter()
            .filter(|(_, state)| state == "firing")
            .map(|(name, _)| name.clone())
            .collect();
        let all: BTreeSet<String> = alerts.iter().map(|(name, _)| name.clone()).collect();
        if firing == expected && all == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && all.is_subset(&expected),
            "alerts {alerts:?}, expected {expected:?} firing"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every dashboard query answers, with the dashboard's variables set as Grafana would.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/tacit-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            queries.push((
                panel["title"].as_str().unwrap_or("").to_owned(),
                expr.to_owned(),
            ));
        }
    }
    assert!(queries.len() >= 16, "{queries:?}");
    for (title, expr) in queries {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "15s")
            .replace("$__range", "5m")
            .replace("$job", "tacit")
            .replace("$instance", ".+");
        assert!(
            !expr.contains('$'),
            "{title}: an unknown variable in {expr}"
        );
        for name in metric_names(&expr) {
            prometheus
                .wait_for(&format!("count({name})"), Duration::from_secs(20))
                .await;
        }
        let result = prometheus.wait_for(&expr, Duration::from_secs(20)).await;
        assert!(!result.is_empty(), "{title}: {expr}");
    }
    drop(server);
}

/// Through the example proxy: registration and sends over HTTPS, a WebSocket that gets its
/// envelope pushed, an upload of the largest blob the server takes (far over nginx's
/// default 1 MiB body limit) streamed through and downloaded byte-identical, `/metrics`
/// hidden, and plain HTTP redirected to HTTPS.
async fn through_proxy(kind: ProxyKind) {
    use sha2::{Digest as _, Sha256};
    use tacit_api::{ClientFrame, ServerFrame};

    let dir = tempfile::tempdir().unwrap();
    let token = "a-metrics-token-for-the-scraper";
    let server = ServerProcess::launch(dir.path(), "", &dir.path().join("server.log"))
        .env("TACIT_METRICS_TOKEN", token)
        .arg("--open-registration")
        .spawn();
    let proxy = ReverseProxy::start(kind, server.addr).await;
    let anonymous = proxy.client();
    let alice = register_via(&anonymous, "alice", 3).await;
    let bob = register_via(&anonymous, "bob", 3).await;

    let mut socket = proxy.socket(&bob).await;
    assert!(
        matches!(socket.frame().await, ServerFrame::QueueEmpty),
        "an empty mailbox first"
    );
    alice
        .send("m1", "bob", &[(1, b"through the proxy")], &[])
        .await
        .unwrap();
    let envelope = socket.envelope().await;
    assert_eq!(envelope.sender, "alice");
    assert_eq!(envelope.ciphertext.0.0.as_slice(), b"through the proxy");
    socket
        .send(&ClientFrame::Ack {
            ids: vec![envelope.id],
        })
        .await;

    // The largest blob: the example's body limit is above the server's.
    let max_file = tacit_server::config::Config::default().blobs.max_file_bytes;
    let size = tacit_server::service::max_blob_bytes(max_file);
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let digest = Sha256::digest(&body);
    let blob_id = alice.reserve_blob(size).await;
    let started = std::time::Instant::now();
    let response = alice
        .patch_blob(&blob_id, 0)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        reqwest::StatusCode::NO_CONTENT,
        "{:?}: {}; the proxy's log:\n{}",
        kind,
        response.text().await.unwrap_or_default(),
        proxy.log()
    );
    let download = bob
        .request(reqwest::Method::GET, &format!("/v1/blobs/{blob_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), reqwest::StatusCode::OK);
    let got = download.bytes().await.unwrap();
    assert_eq!(got.len() as u64, size);
    assert_eq!(Sha256::digest(&got), digest, "the blob came back changed");
    eprintln!(
        "{kind:?}: {} MiB up and down in {:?}",
        size >> 20,
        started.elapsed()
    );

    // The socket still works after the upload (the proxy kept it open).
    alice
        .send("m2", "bob", &[(1, b"after the upload")], &[])
        .await
        .unwrap();
    assert_eq!(
        socket.envelope().await.ciphertext.0.0.as_slice(),
        b"after the upload"
    );

    // /metrics is not served through the proxy, even with the token the server takes.
    let metrics = anonymous
        .request(reqwest::Method::GET, "/metrics")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), reqwest::StatusCode::NOT_FOUND);
    let direct = reqwest::Client::new()
        .get(format!("{}/metrics", server.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.status(),
        reqwest::StatusCode::OK,
        "the server itself serves it"
    );
    // Plain HTTP is redirected to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/v1/users/alice/devices", proxy.plain_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), reqwest::StatusCode::MOVED_PERMANENTLY);
    let location = plain.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://tacit.example.com")
            && location.ends_with("/v1/users/alice/devices"),
        "{location}"
    );
    drop(proxy);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_example_passes_sockets_and_uploads() {
    through_proxy(ProxyKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_example_passes_sockets_and_uploads() {
    through_proxy(ProxyKind::Haproxy).await;
}
