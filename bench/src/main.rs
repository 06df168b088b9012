//! Load benchmark of the Tacit relay server over loopback.
//!
//! `cargo build --release -p tacit-server && cargo run --release -p tacit-bench [-- OPTIONS]`
//! starts the real `tacit-server` binary found beside the benchmark (a separate process, so
//! that its memory can be measured; started by the test harness's `ServerProcess`) once per
//! backend, drives it with real HTTP and WebSocket clients, prints a table
//! and writes the `## Relay server` section of `docs/PERFORMANCE.md`.
//!
//! Phases, per backend:
//! 1. **Throughput**: `--devices` devices, each with a WebSocket, and `--concurrency` closed-loop
//!    senders posting 1 KiB envelopes to random other devices for `--seconds`. Receivers
//!    acknowledge in batches. Reported: accepted sends/s, and delivered-and-acknowledged
//!    envelopes/s over the whole run until the last envelope was acknowledged.
//! 2. **Latency**: an open-loop sender at `--rate` sends/s for `--seconds`; each envelope
//!    carries its send time and the receiver records send-to-push latency (p50, p99).
//! 3. **Idle sockets**: `--idle-sockets` devices connect and stay idle; the server's resident
//!    memory before and after, divided by the number of sockets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tacit_api::{
    Bytes, Ciphertext, ClientFrame, DeviceCiphertext, DeviceCredential, DeviceId, DeviceKeys,
    RegisterRequest, RegisterResponse, SendMessageRequest, ServerFrame, SignedPrekey,
};
use tacit_tests::ServerProcess;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

mod group;

const ENVELOPE_BYTES: usize = 1024;

#[derive(Debug, Clone)]
struct Options {
    backends: Vec<String>,
    devices: usize,
    concurrency: usize,
    seconds: u64,
    rate: u64,
    idle_sockets: usize,
    output: Option<PathBuf>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut o = Self {
            backends: vec!["sqlite".into(), "postgres".into()],
            devices: 256,
            concurrency: 256,
            seconds: 10,
            rate: 2000,
            idle_sockets: 10_000,
            output: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../docs/PERFORMANCE.md"
            ))),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
            match arg.as_str() {
                "--backend" => {
                    o.backends = match value()?.as_str() {
                        "both" => vec!["sqlite".into(), "postgres".into()],
                        b @ ("sqlite" | "postgres") => vec![b.to_owned()],
                        other => bail!("unknown backend {other}"),
                    }
                }
                "--devices" => o.devices = value()?.parse()?,
                "--concurrency" => o.concurrency = value()?.parse()?,
                "--seconds" => o.seconds = value()?.parse()?,
                "--rate" => o.rate = value()?.parse()?,
                "--idle-sockets" => o.idle_sockets = value()?.parse()?,
                "--output" => o.output = Some(PathBuf::from(value()?)),
                "--no-write" => o.output = None,
                "--help" | "-h" => {
                    println!(
                        "tacit-bench [--backend sqlite|postgres|both] [--devices N] \
                         [--concurrency N] [--seconds S] [--rate SENDS_PER_S] \
                         [--idle-sockets N] [--output FILE | --no-write]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown option {other}"),
            }
        }
        if o.devices < 2 {
            bail!("--devices must be at least 2");
        }
        Ok(o)
    }
}

/// The scrape token of the benchmark's server (a local throw-away process).
const BENCH_METRICS_TOKEN: &str = "tacit-bench-metrics-token";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let result = if args.peek().map(String::as_str) == Some("group") {
        args.next();
        group::GroupOptions::parse(args).and_then(|o| {
            tokio::runtime::Runtime::new()
                .context("runtime")?
                .block_on(group::group_bench(o))
        })
    } else {
        Options::parse(args).and_then(|o| {
            tokio::runtime::Runtime::new()
                .context("runtime")?
                .block_on(bench(o))
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The real `tacit-server` (found beside this binary: build it with the same profile) on
/// `data_dir` and `database_url`, configured for load: limits far above what the benchmark
/// reaches, and the scrape token the load generator reads `/metrics` with. Its warnings go
/// to `server.log` in the data directory.
fn start_server(data_dir: &Path, database_url: &str) -> anyhow::Result<ServerProcess> {
    ServerProcess::launch(data_dir, database_url, &data_dir.join("server.log"))
        .arg("--open-registration")
        .env("TACIT_LOG_LEVEL", "warn")
        .env("TACIT_LIMITS_MAX_MAILBOX_DEPTH", "1000000")
        .env(
            "TACIT_RATE_LIMITS_CLAIMS_PER_MINUTE_PER_REQUESTER",
            "1000000",
        )
        .env("TACIT_RATE_LIMITS_CLAIMS_PER_MINUTE_PER_TARGET", "1000000")
        // The load generator opens many connections.
        .env("TACIT_HTTP_MAX_CONNECTIONS", "100000")
        .env("TACIT_METRICS_TOKEN", BENCH_METRICS_TOKEN)
        .try_spawn()
        .context("starting tacit-server")
}

/// Resident memory of the server process, in bytes.
fn rss(server: &ServerProcess) -> anyhow::Result<u64> {
    Ok(server.memory_kib("VmRSS")? * 1024)
}

/// Graceful shutdown (`SIGTERM`), insisting on a clean exit.
fn stop(server: ServerProcess) -> anyhow::Result<()> {
    let status = server.terminate()?;
    if !status.success() {
        bail!("tacit-server exited with {status}");
    }
    Ok(())
}

#[derive(Debug, Default, Clone)]
struct Figures {
    accepted_per_s: f64,
    delivered_per_s: f64,
    throughput_secs: f64,
    envelopes: u64,
    latency_rate: u64,
    latency_achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    idle_sockets: usize,
    bytes_per_socket: f64,
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut results = BTreeMap::new();
    for backend in &options.backends {
        println!("== {backend}");
        let dir = tempfile::tempdir()?;
        let db = if backend == "postgres" {
            Some(
                tacit_tests::TestDatabase::create()
                    .await
                    .context("PostgreSQL (TACIT_TEST_DATABASE_URL or the local one)")?,
            )
        } else {
            None
        };
        let url = db.as_ref().map_or_else(
            || format!("sqlite://{}", dir.path().join("tacit.db").display()),
            |d| d.url.clone(),
        );
        let server = start_server(dir.path(), &url)?;
        let figures = run_phases(&options, &server).await;
        stop(server)?;
        drop(db);
        let figures = figures?;
        results.insert(backend.clone(), figures);
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut table = render(&options, &results);
    let _ = writeln!(
        table,
        "\nParameters: {} devices, {} concurrent senders, {} s per phase, latency phase at {} sends/s, \
         {} idle sockets; {} CPUs; load average before / after: {} / {}.",
        options.devices,
        options.concurrency,
        options.seconds,
        options.rate,
        options.idle_sockets,
        std::thread::available_parallelism().map_or(0, usize::from),
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!("\n{table}");
    if let Some(path) = &options.output {
        write_relay_section(path, &table)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn run_phases(options: &Options, server: &ServerProcess) -> anyhow::Result<Figures> {
    let base = format!("http://{}", server.addr);
    let ws = format!("ws://{}/v1/ws", server.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let mut figures = Figures::default();

    let devices = register_many(&http, &base, "tp", options.devices).await?;
    throughput(options, &http, &base, &ws, &devices, &mut figures).await?;
    latency(options, &http, &base, &ws, &devices, &mut figures).await?;
    idle(options, &http, &base, &ws, server, &mut figures).await?;
    Ok(figures)
}

fn keys() -> DeviceKeys {
    let signed = |tag: u8| SignedPrekey {
        id: 1,
        public_key: Bytes(vec![tag; 32]),
        signature: Bytes(vec![tag; 64]),
    };
    DeviceKeys {
        identity_key: Bytes(vec![1; 32]),
        signed_prekey: signed(2),
        kem_last_resort_prekey: signed(3),
        one_time_prekeys: Vec::new(),
        one_time_kem_prekeys: Vec::new(),
    }
}

#[derive(Debug, Clone)]
struct Device {
    username: String,
    credential: DeviceCredential,
}

async fn register_many(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<Device>> {
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (http, base, limit) = (http.clone(), base.to_owned(), limit.clone());
        let username = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            let response = http
                .post(format!("{base}/v1/accounts"))
                .json(&RegisterRequest {
                    username: username.clone(),
                    invite: None,
                    id_token: None,
                    device_name: None,
                    keys: keys(),
                })
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("register: {}", response.status());
            }
            let r: RegisterResponse = response.json().await?;
            Ok(Device {
                username,
                credential: r.credential,
            })
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Called with each pushed envelope's payload.
type OnEnvelope = Arc<dyn Fn(&[u8]) + Send + Sync>;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, credential: &DeviceCredential) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {credential}").parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Wait for `queue_empty`, acknowledging any backlog.
async fn drain_backlog(socket: &mut Socket) -> anyhow::Result<()> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str())? {
                ServerFrame::QueueEmpty => return Ok(()),
                ServerFrame::Envelope(e) => {
                    let ack = serde_json::to_string(&ClientFrame::Ack { ids: vec![e.id] })?;
                    socket.send(Message::Text(ack.into())).await?;
                }
                _ => {}
            },
            Some(Ok(_)) => {}
            _ => bail!("socket closed during backlog"),
        }
    }
}

/// A receiving device: acknowledges every envelope (in batches of whatever is ready) and
/// reports each envelope's payload to `on_envelope`. Stops when `stop` is set and a final
/// ping was answered (so every ack it sent is committed).
fn spawn_receiver(
    mut socket: Socket,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    on_envelope: OnEnvelope,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut pinged = false;
        loop {
            let next = tokio::time::timeout(Duration::from_millis(100), socket.next()).await;
            let mut frames = Vec::new();
            match next {
                Ok(Some(Ok(m))) => frames.push(m),
                Ok(_) => bail!("socket closed"),
                Err(_) => {}
            }
            // Take whatever else is ready without waiting.
            while let Some(Some(Ok(m))) = socket.next().now_or_never() {
                frames.push(m);
            }
            for m in frames {
                if let Message::Text(t) = m {
                    match serde_json::from_str(t.as_str())? {
                        ServerFrame::Envelope(e) => {
                            on_envelope(e.ciphertext.0.as_slice());
                            ids.push(e.id);
                        }
                        ServerFrame::Pong { .. } => return Ok(()),
                        _ => {}
                    }
                }
            }
            if !ids.is_empty() {
                let n = ids.len() as u64;
                let ack = serde_json::to_string(&ClientFrame::Ack {
                    ids: std::mem::take(&mut ids),
                })?;
                socket.send(Message::Text(ack.into())).await?;
                acked.fetch_add(n, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) && !pinged {
                let ping = serde_json::to_string(&ClientFrame::Ping { nonce: 1 })?;
                socket.send(Message::Text(ping.into())).await?;
                pinged = true;
            }
        }
    })
}

async fn send_one(
    http: &reqwest::Client,
    base: &str,
    from: &Device,
    to: &Device,
    id: &str,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/v1/messages"))
        .bearer_auth(from.credential.to_string())
        .json(&SendMessageRequest {
            client_message_id: id.to_owned(),
            recipient: to.username.clone(),
            recipient_devices: vec![DeviceCiphertext {
                device_id: DeviceId(1),
                ciphertext: Ciphertext(Bytes(payload)),
            }],
            own_devices: Vec::new(),
        })
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("send: {} {}", response.status(), response.text().await?);
    }
    Ok(())
}

async fn open_receivers(
    ws: &str,
    devices: &[Device],
    acked: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
    on_envelope: OnEnvelope,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut receivers = Vec::new();
    for d in devices {
        let mut socket = connect(ws, &d.credential).await?;
        drain_backlog(&mut socket).await?;
        receivers.push(spawn_receiver(
            socket,
            acked.clone(),
            stop.clone(),
            on_envelope.clone(),
        ));
    }
    Ok(receivers)
}

async fn throughput(
    options: &Options,
    http: &reqwest::Client,
    base: &str,
    ws: &str,
    devices: &[Device],
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receivers = open_receivers(ws, devices, &acked, &stop, Arc::new(|_: &[u8]| {})).await?;
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.seconds);
    let devices = Arc::new(devices.to_vec());
    let mut senders = Vec::new();
    for s in 0..options.concurrency {
        let (http, base, devices, accepted) = (
            http.clone(),
            base.to_owned(),
            devices.clone(),
            accepted.clone(),
        );
        senders.push(tokio::spawn(async move {
            let n = devices.len();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let from = &devices[(s + i) % n];
                let to = &devices[(s + i + 1 + (i * 7) % (n - 1)) % n];
                let to = if to.username == from.username {
                    &devices[(s + i + 1) % n]
                } else {
                    to
                };
                send_one(
                    &http,
                    &base,
                    from,
                    to,
                    &format!("t{s}-{i}"),
                    vec![0x5a; ENVELOPE_BYTES],
                )
                .await?;
                accepted.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let send_secs = start.elapsed().as_secs_f64();
    let total = accepted.load(Ordering::Relaxed);
    // Wait until every accepted envelope was pushed and acknowledged.
    let wait_until = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < total {
        if Instant::now() > wait_until {
            bail!(
                "only {} of {total} envelopes acknowledged",
                acked.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        r.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    figures.accepted_per_s = total as f64 / send_secs;
    figures.delivered_per_s = total as f64 / secs;
    figures.throughput_secs = secs;
    figures.envelopes = total;
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(BENCH_METRICS_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    println!(
        "group commit so far: {:.1} operations per transaction",
        value("tacit_write_batch_operations_total ") / value("tacit_write_batches_total ").max(1.0)
    );
    println!(
        "throughput: {total} envelopes; accepted {:.0}/s; delivered+acked {:.0}/s over {secs:.1} s",
        figures.accepted_per_s, figures.delivered_per_s
    );
    Ok(())
}

async fn latency(
    options: &Options,
    http: &reqwest::Client,
    base: &str,
    ws: &str,
    devices: &[Device],
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let record = {
        let samples = samples.clone();
        Arc::new(move |payload: &[u8]| {
            if let Some(sent) = payload.get(..8).and_then(|b| b.try_into().ok()) {
                let sent = u64::from_le_bytes(sent);
                let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                if let Ok(mut s) = samples.lock() {
                    s.push(now.saturating_sub(sent));
                }
            }
        })
    };
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receivers = open_receivers(ws, devices, &acked, &stop, record).await?;
    let total = options.rate * options.seconds;
    let period = Duration::from_secs_f64(1.0 / options.rate as f64);
    let in_flight = Arc::new(Semaphore::new(512));
    let devices = Arc::new(devices.to_vec());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(total)?);
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (http, base, devices) = (http.clone(), base.to_owned(), devices.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let n = devices.len();
            let i = usize::try_from(i)?;
            let from = &devices[i % n];
            let to = &devices[(i + 1 + (i / n) % (n - 1)) % n];
            let mut payload = vec![0x33; ENVELOPE_BYTES];
            let sent = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            send_one(&http, &base, from, to, &format!("l{i}"), payload).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let wait_until = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < total {
        if Instant::now() > wait_until {
            bail!("latency phase: envelopes missing");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        r.await??;
    }
    let mut s = samples.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    s.sort_unstable();
    #[allow(clippy::cast_possible_truncation)] // a rounded, non-negative index
    let pct = |p: f64| {
        let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
        s.get(idx).copied().unwrap_or(0) as f64 / 1e6
    };
    figures.latency_rate = options.rate;
    figures.latency_achieved = achieved;
    figures.p50_ms = pct(0.50);
    figures.p99_ms = pct(0.99);
    figures.max_ms = pct(1.0);
    println!(
        "latency at {achieved:.0} sends/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        figures.p50_ms,
        figures.p99_ms,
        figures.max_ms,
        s.len()
    );
    Ok(())
}

async fn idle(
    options: &Options,
    http: &reqwest::Client,
    base: &str,
    ws: &str,
    server: &ServerProcess,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let n = options.idle_sockets;
    if n == 0 {
        return Ok(());
    }
    let devices = register_many(http, base, "idle", n).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(server)?;
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for d in devices {
        let (ws, limit) = (ws.to_owned(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            let mut socket = connect(&ws, &d.credential).await?;
            drain_backlog(&mut socket).await?;
            Ok::<_, anyhow::Error>(socket)
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for t in tasks {
        sockets.push(t.await??);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss(server)?;
    figures.idle_sockets = n;
    figures.bytes_per_socket = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "idle sockets: {n} open; server RSS {:.1} MiB -> {:.1} MiB; {:.1} KiB per socket",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        figures.bytes_per_socket / 1024.0
    );
    drop(sockets);
    Ok(())
}

fn render(options: &Options, results: &BTreeMap<String, Figures>) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| backend | accepted sends/s | delivered+acked envelopes/s | send-to-push p50 / p99 at {} sends/s | server memory per idle socket ({} sockets) |",
        options.rate, options.idle_sockets
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    for (backend, f) in results {
        let _ = writeln!(
            t,
            "| {backend} | {:.0} | {:.0} | {:.2} ms / {:.2} ms (achieved {:.0}/s) | {:.1} KiB |",
            f.accepted_per_s,
            f.delivered_per_s,
            f.p50_ms,
            f.p99_ms,
            f.latency_achieved,
            f.bytes_per_socket / 1024.0
        );
    }
    let _ = writeln!(
        t,
        "\n| backend | >= 20,000 delivered/s | p99 < 10 ms at 2,000/s | <= 16 KiB per idle socket |"
    );
    let _ = writeln!(t, "|---|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    for (backend, f) in results {
        let _ = writeln!(
            t,
            "| {backend} | {} | {} | {} |",
            verdict(f.delivered_per_s >= 20_000.0),
            verdict(f.p99_ms < 10.0 && f.latency_achieved >= 0.95 * f.latency_rate as f64),
            verdict(f.idle_sockets >= 10_000 && f.bytes_per_socket <= 16.0 * 1024.0),
        );
    }
    t
}

const TARGETS: &str = "Targets (issue 3): at least 20,000 delivered envelopes/s sustained; \
p99 send-to-push under 10 ms at 2,000 envelopes/s; at most 16 KiB of server memory per idle \
socket with 10,000 sockets open. `docs/SERVER.md` discusses the figures.\n";

/// Replace (or append) the `## Relay server` section of the file, leaving other sections.
fn write_relay_section(path: &Path, table: &str) -> anyhow::Result<()> {
    let section = format!(
        "## Relay server\n\n\
         Measured by `cargo run --release -p tacit-bench` (this section is rewritten by each \
         run; see `bench/src/main.rs` for the method). 1 KiB envelopes, one device per user, \
         real HTTP/1.1 and WebSocket clients over loopback with plain HTTP, client and server \
         on the same machine. SQLite runs with `synchronous = FULL`: every accepted send is on \
         disk before the answer.\n\n{table}\n{TARGETS}\n"
    );
    write_section(
        path,
        "## Relay server",
        &section[("## Relay server\n\n".len())..],
    )
}

/// Replace (or append) the section under `header` of the file, leaving other sections.
pub(crate) fn write_section(path: &Path, header: &str, body: &str) -> anyhow::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Performance\n".into());
    let section = format!("{header}\n\n{}\n\n", body.trim_end());
    let start = existing.find(&format!("{header}\n"));
    let updated = match start {
        Some(s) => {
            let rest = &existing[s + 2..];
            let end = rest.find("\n## ").map_or(existing.len(), |e| s + 2 + e + 1);
            format!("{}{}{}", &existing[..s], section, &existing[end..])
        }
        None => format!("{}\n{}", existing.trim_end(), format_args!("\n{section}")),
    };
    std::fs::write(path, updated)?;
    Ok(())
}
