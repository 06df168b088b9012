//! Files end to end: the real `tacit-server` binary and real `tacit` processes (and the SDK
//! for an interrupted upload). A 50 MiB file arrives byte-identical while the server's
//! memory stays flat; blobs altered on the server's disk are refused with nothing left
//! behind; an upload cut off part-way resumes from where the server got to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tacit_tests::ServerProcess;
use tacit_tests::cli::{PASSPHRASE, ok, tacit};

/// The attachment format (SECURITY.md, "Attachments"): header, then sealed 64 KiB chunks.
const HEADER: usize = 17;
const SEALED_CHUNK: usize = 65_536 + 16;

/// The real server on SQLite in `root/server-data`, logging to `root/server.log`.
struct Server {
    process: ServerProcess,
    blobs: PathBuf,
}

impl Server {
    fn start(root: &Path) -> Self {
        let data = root.join("server-data");
        std::fs::create_dir_all(&data).unwrap();
        let database_url = format!("sqlite://{}", data.join("tacit.db").display());
        Self {
            process: ServerProcess::spawn(&data, &database_url, &root.join("server.log")),
            blobs: data.join("blobs"),
        }
    }

    fn url(&self) -> String {
        self.process.url()
    }

    /// A figure from the server's `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    fn memory_kib(&self, field: &str) -> u64 {
        self.process.memory_kib(field).unwrap()
    }

    /// The complete blobs in the blob directory.
    fn complete_blobs(&self) -> HashSet<String> {
        match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| !name.ends_with(".part"))
                .collect(),
            Err(_) => HashSet::new(),
        }
    }
}

fn register(root: &Path, server: &Server, name: &str) -> PathBuf {
    let home = root.join(name);
    ok(&home, &["register", &server.url(), name]);
    home
}

/// `tacit recv --json --out DIR`: the events, and whether it succeeded, and its stderr.
fn recv_files(home: &Path, out: &Path) -> (Vec<serde_json::Value>, bool, String) {
    let output = tacit(
        home,
        &[
            "recv",
            "--json",
            "--wait",
            "10",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let events = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (
        events,
        output.status.success(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    getrandom::fill(&mut data).unwrap();
    data
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_50_mib_file_arrives_intact_while_server_memory_stays_flat() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    let alice = register(root.path(), &server, "alice");
    let bob = register(root.path(), &server, "bob");
    let path = root.path().join("big file.bin");
    let data = random_bytes(50 * 1024 * 1024);
    std::fs::write(&path, &data).unwrap();

    let idle_rss = server.memory_kib("VmRSS");
    let started = Instant::now();
    let sent = ok(&alice, &["send-file", "bob", path.to_str().unwrap()]);
    let upload = started.elapsed();
    assert!(
        sent.contains("sent big file.bin (52428800 bytes) to bob"),
        "{sent}"
    );
    let out = root.path().join("received");
    let started = Instant::now();
    let (events, success, stderr) = recv_files(&bob, &out);
    let download = started.elapsed();
    assert!(success, "{stderr}");
    let file = events
        .iter()
        .find(|e| e["kind"] == "file")
        .unwrap_or_else(|| panic!("no file among {events:?}"));
    assert_eq!(file["name"], "big file.bin");
    assert_eq!(file["size"], 52_428_800);
    assert_eq!(file["peer"], "alice");
    assert!(file["error"].is_null());
    let saved = PathBuf::from(file["path"].as_str().unwrap());
    assert_eq!(saved, out.join("big file.bin"));
    assert!(std::fs::read(&saved).unwrap() == data, "the file differs");
    assert_eq!(entries(&out), ["big file.bin"]);
    // History shows the file on both sides.
    assert!(ok(&bob, &["history", "alice"]).contains("[file] big file.bin (52428800 bytes)"));

    // The same file to a group: uploaded once, announced in one group message, and every
    // member gets it intact.
    let carol = register(root.path(), &server, "carol");
    ok(&alice, &["group", "create", "team", "bob", "carol"]);
    let started = Instant::now();
    let sent = ok(
        &alice,
        &["send-file", "--group", "team", path.to_str().unwrap()],
    );
    let group_upload = started.elapsed();
    assert!(sent.contains("to team"), "{sent}");
    for (member, dir) in [(&bob, "bob-group"), (&carol, "carol-group")] {
        let out = root.path().join(dir);
        let (events, success, stderr) = recv_files(member, &out);
        assert!(success, "{stderr}");
        let file = events
            .iter()
            .find(|e| e["kind"] == "file")
            .unwrap_or_else(|| panic!("no file among {events:?}"));
        assert_eq!(file["peer"], "group team");
        assert!(
            std::fs::read(out.join("big file.bin")).unwrap() == data,
            "the group file differs"
        );
    }
    let peak = server.memory_kib("VmHWM");
    println!(
        "50 MiB file to a group of three: upload {:.1} s",
        group_upload.as_secs_f64()
    );

    let growth = peak.saturating_sub(idle_rss);
    println!(
        "50 MiB file: upload (encrypt + send) {:.1} s, download (receive + decrypt + check) \
         {:.1} s; server VmRSS before {idle_rss} KiB, VmHWM after {peak} KiB, peak growth \
         {growth} KiB ({:.1} MiB)",
        upload.as_secs_f64(),
        download.as_secs_f64(),
        growth as f64 / 1024.0
    );
    assert!(
        growth < 64 * 1024,
        "server memory grew by {growth} KiB during the transfer"
    );
}

/// Ways to alter a blob on the server's disk.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    Truncated,
    ChunksSwapped,
    BitFlipped,
}

impl Tamper {
    fn apply(self, blob: &mut Vec<u8>) {
        match self {
            Self::Truncated => blob.truncate(blob.len() - 1000),
            Self::ChunksSwapped => {
                let (a, b) = (HEADER + SEALED_CHUNK, HEADER + 2 * SEALED_CHUNK);
                let first: Vec<u8> = blob[a..b].to_vec();
                let second: Vec<u8> = blob[b..b + SEALED_CHUNK].to_vec();
                blob[a..b].copy_from_slice(&second);
                blob[b..b + SEALED_CHUNK].copy_from_slice(&first);
            }
            Self::BitFlipped => {
                let middle = blob.len() / 2;
                blob[middle] ^= 0x04;
            }
        }
    }
}

#[test]
fn altered_blobs_are_refused_and_nothing_is_left_behind() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    let alice = register(root.path(), &server, "alice");
    let bob = register(root.path(), &server, "bob");
    for tamper in [Tamper::Truncated, Tamper::ChunksSwapped, Tamper::BitFlipped] {
        let what = format!("{tamper:?}");
        let path = root.path().join(format!("{what}.bin"));
        std::fs::write(&path, random_bytes(5 * 65_536 + 1234)).unwrap();
        let before = server.complete_blobs();
        ok(&alice, &["send-file", "bob", path.to_str().unwrap()]);
        let after = server.complete_blobs();
        let new: Vec<_> = after.difference(&before).collect();
        assert_eq!(new.len(), 1, "{what}: {new:?}");
        let blob_path = server.blobs.join(new[0]);
        let mut blob = std::fs::read(&blob_path).unwrap();
        tamper.apply(&mut blob);
        std::fs::write(&blob_path, &blob).unwrap();

        let out = root.path().join(format!("out-{what}"));
        let (events, success, stderr) = recv_files(&bob, &out);
        assert!(!success, "{what}: recv accepted an altered file");
        assert!(
            stderr.contains("failed its integrity check") && stderr.contains("nothing was saved"),
            "{what}: {stderr}"
        );
        let file = events.iter().find(|e| e["kind"] == "file").unwrap();
        assert!(file["path"].is_null(), "{what}: {file}");
        assert!(
            file["error"].as_str().unwrap().contains("integrity"),
            "{what}: {file}"
        );
        assert!(entries(&out).is_empty(), "{what}: left {:?}", entries(&out));
        println!("{what}: {}", stderr.trim());
    }
}

/// A TCP proxy to the server that cuts the connection carrying the byte after
/// `cut_after` (client to server), once.
struct Proxy {
    addr: SocketAddr,
    upstream_bytes: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
}

async fn proxy(server: SocketAddr, cut_after: u64) -> Proxy {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream_bytes = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let (bytes, done) = (upstream_bytes.clone(), cut.clone());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (bytes, done) = (bytes.clone(), done.clone());
            tokio::spawn(async move {
                let upstream = tokio::net::TcpStream::connect(server).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = upstream.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = client_read.read(&mut buf).await?;
                        if n == 0 {
                            return server_write.shutdown().await;
                        }
                        let before = bytes.fetch_add(n as u64, Ordering::SeqCst);
                        if before + n as u64 > cut_after && !done.swap(true, Ordering::SeqCst) {
                            return Err(std::io::Error::other("cut"));
                        }
                        server_write.write_all(&buf[..n]).await?;
                    }
                };
                let down = tokio::io::copy(&mut server_read, &mut client_write);
                // Whichever side ends first ends the connection (both halves dropped).
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    Proxy {
        addr,
        upstream_bytes,
        cut,
    }
}

#[test]
fn an_interrupted_upload_resumes_where_the_server_got_to() {
    /// Where the proxy cuts the upload (bytes from the client).
    const CUT: u64 = 4 * 1024 * 1024;
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(root.path());
    let alice = register(root.path(), &server, "alice");
    let bob = register(root.path(), &server, "bob");
    let data = random_bytes(12 * 1024 * 1024);
    let path = root.path().join("resumed.bin");
    std::fs::write(&path, &data).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (proxy_bytes, uploads) = runtime.block_on(async {
        // Alice's SDK client, talking to the server through the proxy.
        let proxy = proxy(server.process.addr, CUT).await;
        let url = format!("http://{}", proxy.addr);
        let mut client = tacit_sdk::Client::open(
            &alice.join("store.db"),
            tacit_sdk::KeySource::Passphrase(PASSPHRASE),
            |_| tacit_sdk::Transport::new(&url, &tacit_sdk::Trust::SystemRoots),
        )
        .await
        .unwrap();
        let mut uploads = Vec::new();
        let sent = client
            .send_file("bob", &path, &mut |p| {
                if p.stage == tacit_sdk::Stage::Uploading {
                    uploads.push(p.done);
                }
            })
            .await
            .unwrap();
        assert_eq!(sent.size, data.len() as u64);
        assert!(proxy.cut.load(Ordering::SeqCst), "the proxy never cut");
        (proxy.upstream_bytes.load(Ordering::SeqCst), uploads)
    });
    // The upload went back to an offset the server had reached, not to zero. The bytes
    // that crossed the proxy tell where: the cut came after `CUT` bytes, and the resumed
    // request carried the rest of the blob from its offset, so the offset is at least
    // CUT + blob_len - proxy_bytes (other requests' bytes only make that lower). The SDK's
    // progress is no witness: it counts bytes read into the request body, ahead of what
    // the server got, and under load its last report before the cut may lag behind it.
    let blob_len = data.len() as u64 + 17 + 16 * 192;
    let resumed_at = (CUT + blob_len).saturating_sub(proxy_bytes);
    let went_back = uploads.windows(2).any(|w| w[1] < w[0]);
    println!(
        "resumed at byte {resumed_at} or later of {blob_len} (progress went back: {went_back}); \
         {proxy_bytes} bytes went through the proxy"
    );
    assert!(
        resumed_at > 1024 * 1024,
        "{proxy_bytes} bytes sent for a {blob_len}-byte blob cut after {CUT}: the upload \
         started over (or nearly)"
    );

    let out = root.path().join("received");
    let (events, success, stderr) = recv_files(&bob, &out);
    assert!(success, "{stderr}");
    let file = events.iter().find(|e| e["kind"] == "file").unwrap();
    let saved = PathBuf::from(file["path"].as_str().unwrap());
    assert!(
        std::fs::read(saved).unwrap() == data,
        "the resumed file differs"
    );
}
