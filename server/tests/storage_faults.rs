//! Storage faults: a full disk under SQLite and the blob directory (a small tmpfs that the
//! test mounts, so it runs as root and fails, never skips, otherwise), and PostgreSQL
//! backends terminated in the middle of write batches. In each, nothing the server
//! confirmed is lost, nothing acknowledged comes back, failures are answered with a clear
//! error, `/readyz` tells the truth, and the server recovers by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tacit_api::*;
use tacit_tests::*;

/// A tmpfs of a few MiB mounted for the test, unmounted when dropped.
struct SmallDisk {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(kib: u64) -> Self {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("cannot run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill a disk and must run as root"
        );
        Self {
            _parent: parent,
            path,
        }
    }

    /// Fill the disk with one file until the filesystem says it is full; returns it.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn ready(server: &TestServer) -> StatusCode {
    server
        .http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap()
        .status()
}

/// Every envelope of a mailbox (the tests raise the fetch batch to hold them all), by the
/// message number written at its ciphertext's start.
async fn mailbox(client: &Client) -> BTreeMap<u64, u32> {
    let (_, batch): (_, EnvelopeBatch) = client
        .call::<(), _>(Method::GET, "/v1/messages", None)
        .await
        .unwrap();
    assert!(!batch.more, "more envelopes than one fetch returns");
    batch
        .envelopes
        .iter()
        .map(|e| {
            let n = u32::from_be_bytes(e.ciphertext.0.as_slice()[..4].try_into().unwrap());
            (e.id, n)
        })
        .collect()
}

fn ciphertext(n: u32) -> Vec<u8> {
    let mut ct = n.to_be_bytes().to_vec();
    ct.resize(16 * 1024, 0xab);
    ct
}

/// Ten sends that must be confirmed, numbered from `*n`.
async fn send_ten(alice: &Client, n: &mut u32, confirmed: &mut BTreeSet<u32>) {
    for _ in 0..10 {
        alice
            .send(&format!("m{n}"), "bob", &[(1, &ciphertext(*n))], &[])
            .await
            .unwrap();
        confirmed.insert(*n);
        *n += 1;
    }
}

async fn start_on(dir: &Path) -> TestServer {
    let dir = dir.to_owned();
    TestServer::start_with(Backend::Sqlite, move |c| {
        c.data_dir = dir;
        c.limits.fetch_batch = 1000;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_loses_nothing_confirmed_and_recovers_by_itself() {
    let disk = SmallDisk::mount(6 * 1024);
    let server = start_on(&disk.path).await;
    let alice = server.register("alice", 0).await;
    let bob = server.register("bob", 0).await;
    let bob_credential = bob.credential.clone();

    let mut confirmed = BTreeSet::new();
    let mut n = 0u32;
    send_ten(&alice, &mut n, &mut confirmed).await;
    // A blob half uploaded before the disk fills.
    let (_, blob): (_, CreateBlobResponse) = alice
        .call(
            Method::POST,
            "/v1/blobs",
            Some(&CreateBlobRequest { size: 2 << 20 }),
        )
        .await
        .unwrap();
    let blob_bytes: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    let patch = |offset: usize, bytes: &[u8]| {
        alice
            .request(Method::PATCH, &format!("/v1/blobs/{}", blob.blob_id))
            .header("content-type", BLOB_UPLOAD_CONTENT_TYPE)
            .header(UPLOAD_OFFSET, offset)
            .body(bytes.to_vec())
            .send()
    };
    let r = patch(0, &blob_bytes[..1 << 20]).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let filler = disk.fill();

    // Sends and acks while the disk is full: each is either confirmed (and then must
    // survive) or refused with a clear error; never confirmed and lost.
    let mut refused = BTreeMap::<u16, u32>::new();
    let mut saw_not_ready = false;
    let mut acked = BTreeSet::new();
    let first_ids: Vec<u64> = mailbox(&bob).await.keys().copied().take(5).collect();
    for attempt in 0..120u32 {
        match alice
            .send(&format!("m{n}"), "bob", &[(1, &ciphertext(n))], &[])
            .await
        {
            Ok(_) => {
                confirmed.insert(n);
            }
            Err(f) => {
                assert!(
                    f.body.code == ErrorCode::StorageFull || f.body.code == ErrorCode::Unavailable,
                    "{:?}",
                    f.body
                );
                assert_eq!(f.status.as_u16(), f.body.code.http_status());
                *refused.entry(f.status.as_u16()).or_default() += 1;
                if !saw_not_ready {
                    saw_not_ready = ready(&server).await == StatusCode::SERVICE_UNAVAILABLE;
                }
            }
        }
        n += 1;
        if let Some(id) = first_ids.get(attempt as usize) {
            let r = bob
                .call_empty(
                    Method::POST,
                    "/v1/messages/ack",
                    Some(&AckRequest { ids: vec![*id] }),
                )
                .await;
            match r {
                Ok(()) => {
                    acked.insert(*id);
                }
                Err(f) => assert!(
                    f.body.code == ErrorCode::StorageFull || f.body.code == ErrorCode::Unavailable,
                    "{:?}",
                    f.body
                ),
            }
        }
    }
    assert!(
        refused.get(&507).copied().unwrap_or(0) > 0,
        "no send was refused as storage_full: {refused:?}"
    );
    assert!(saw_not_ready, "/readyz said ready while writes failed");

    // The rest of the blob does not fit: refused, what was written is kept, and no
    // complete blob appears.
    let r = patch(1 << 20, &blob_bytes[1 << 20..]).await.unwrap();
    assert_eq!(r.status().as_u16(), 507);
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::StorageFull);
    let r = alice
        .request(Method::GET, &format!("/v1/blobs/{}", blob.blob_id))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "an incomplete blob was served"
    );

    // Space returns: the server notices by itself, writes succeed again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ready(&server).await != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz did not recover after space returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send_ten(&alice, &mut n, &mut confirmed).await;
    // The upload resumes at the offset the server kept, and completes intact.
    let head = alice
        .request(Method::HEAD, &format!("/v1/blobs/{}", blob.blob_id))
        .send()
        .await
        .unwrap();
    let offset: usize = head.headers()[UPLOAD_OFFSET]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(offset >= 1 << 20);
    let r = patch(offset, &blob_bytes[offset..]).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = alice
        .request(Method::GET, &format!("/v1/blobs/{}", blob.blob_id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.bytes().await.unwrap() == blob_bytes,
        "the blob came back altered"
    );
    server.stop().await;

    // After a restart: every confirmed send is there, no acknowledged one came back.
    let server = start_on(&disk.path).await;
    let bob = server.client(bob_credential.as_ref());
    let present = mailbox(&bob).await;
    for id in &acked {
        assert!(
            !present.contains_key(id),
            "acknowledged envelope {id} came back"
        );
    }
    let present_numbers: BTreeSet<u32> = present.values().copied().collect();
    let acked_numbers = acked.len();
    let missing: Vec<_> = confirmed
        .iter()
        .filter(|m| !present_numbers.contains(m))
        .collect();
    assert_eq!(
        missing.len(),
        acked_numbers,
        "confirmed sends lost: {missing:?} (acked {acked_numbers})"
    );
    println!(
        "full disk: {} sends confirmed, refused by status {refused:?}, {} acks confirmed",
        confirmed.len(),
        acked.len()
    );
    server.stop().await;
}

/// PostgreSQL: every backend of the server's database is terminated, again and again,
/// while clients send; every confirmed send is delivered afterwards, failures are 503, and
/// the pool recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_postgres_backends_lose_nothing_confirmed() {
    use sqlx::Connection as _;
    let server = TestServer::start_with(Backend::Postgres, |c| c.limits.fetch_batch = 1000).await;
    let alice = server.register("alice", 0).await;
    let bob = server.register("bob", 0).await;
    let db = server.db.as_ref().unwrap();
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let admin = tacit_tests::admin_url();

    let killer = tokio::spawn(async move {
        let mut killed = 0i64;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&name)
            .fetch_one(&mut c)
            .await
            .unwrap();
            killed += n;
            c.close().await.unwrap();
        }
        killed
    });
    let mut confirmed = BTreeSet::new();
    let mut refused = BTreeMap::<u16, u32>::new();
    let mut n = 0u32;
    while !killer.is_finished() && n < 800 {
        let sends = (n..n + 20).map(|i| {
            let alice = alice.clone();
            async move {
                (
                    i,
                    alice
                        .send(&format!("m{i}"), "bob", &[(1, &ciphertext(i))], &[])
                        .await,
                )
            }
        });
        for (i, r) in futures_util::future::join_all(sends).await {
            match r {
                Ok(_) => {
                    confirmed.insert(i);
                }
                Err(f) => {
                    assert_eq!(f.body.code, ErrorCode::Unavailable, "{:?}", f.body);
                    *refused.entry(f.status.as_u16()).or_default() += 1;
                }
            }
        }
        n += 20;
    }
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no backend was terminated");
    // The pool recovers: ready, and sends go through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ready(&server).await != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in n..n + 10 {
        alice
            .send(&format!("m{i}"), "bob", &[(1, &ciphertext(i))], &[])
            .await
            .unwrap();
        confirmed.insert(i);
    }
    let present: BTreeSet<u32> = mailbox(&bob).await.values().copied().collect();
    let missing: Vec<_> = confirmed.difference(&present).collect();
    assert!(missing.is_empty(), "confirmed sends lost: {missing:?}");
    println!(
        "terminated {killed} backends: {} sends confirmed, refused by status {refused:?}",
        confirmed.len()
    );
    server.stop().await;
}
