//! `tacit-server backup` and `restore` against the real binary (docs/BACKUP.md): a backup
//! taken while sends go on, restored into a fresh data directory, delivers every envelope
//! acknowledged to its sender before the backup started, serves none of the one-time
//! prekeys that existed at backup time, and gives the blobs back byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tacit_api::{AckRequest, ClaimBundlesRequest, EnvelopeBatch, PrekeyBundles, UploadKeysRequest};
use tacit_tests::{Client, ServerProcess, binary, keys, register_via};

/// `tacit-server ARGS`: (exit code, stdout, stderr).
fn server_cli(args: &[&str], data_dir: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(binary("tacit-server").unwrap())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every envelope of `device`'s mailbox, fetched and acknowledged page by page.
async fn drain(device: &Client) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let (_, batch): (_, EnvelopeBatch) = device
            .call::<(), _>(Method::GET, "/v1/messages", None)
            .await
            .unwrap();
        let ids: Vec<u64> = batch.envelopes.iter().map(|e| e.id).collect();
        bodies.extend(
            batch
                .envelopes
                .iter()
                .map(|e| String::from_utf8(e.ciphertext.0.0.clone()).unwrap()),
        );
        if !ids.is_empty() {
            device
                .call_empty(Method::POST, "/v1/messages/ack", Some(&AckRequest { ids }))
                .await
                .unwrap();
        }
        if !batch.more {
            return bodies;
        }
    }
}

/// The one-time X25519 prekey id a claim of bob's bundle hands out, if any.
async fn claim_one_time(claimer: &Client) -> Option<u32> {
    let (_, bundles): (_, PrekeyBundles) = claimer
        .call(
            Method::POST,
            "/v1/users/bob/bundles",
            Some(&ClaimBundlesRequest::default()),
        )
        .await
        .unwrap();
    bundles.bundles[0].one_time_prekey.as_ref().map(|k| k.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::spawn(&data, "", &dir.path().join("server.log"));
    let anonymous = server.client(None);
    let alice = register_via(&anonymous, "alice", 5).await;
    let bob = register_via(&anonymous, "bob", 40).await;

    // A complete blob of a few MiB.
    let size: u64 = 3 << 20;
    let blob: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
    let blob_id = alice.reserve_blob(size).await;
    let response = alice
        .patch_blob(&blob_id, 0)
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // Sends go on, from before the backup until after it; each acknowledged one is noted
    // with when its answer came.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (alice, stop) = (alice.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = format!("m{i}");
                alice
                    .send(&body, "bob", &[(1, body.as_bytes())], &[])
                    .await
                    .unwrap();
                acked.push((body, Instant::now()));
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Two claims before the backup: keys 0 and 1 are gone from the snapshot already.
    assert_eq!(claim_one_time(&alice).await, Some(0));
    assert_eq!(claim_one_time(&alice).await, Some(1));
    let archive = dir.path().join("tacit-backup.tar");
    let backup_started = Instant::now();
    let (code, out, err) = {
        let (archive, data) = (archive.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            server_cli(&["backup", archive.to_str().unwrap()], &data)
        })
        .await
        .unwrap()
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("wrote "), "{out}");
    assert!(err.contains("not in it: the audit key"), "{err}");
    // Claims after the backup: these keys are in the snapshot but already handed out.
    let after_backup = [claim_one_time(&alice).await, claim_one_time(&alice).await];
    assert_eq!(after_backup, [Some(2), Some(3)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    let before: Vec<&String> = acked
        .iter()
        .filter(|(_, at)| *at < backup_started)
        .map(|(body, _)| body)
        .collect();
    let during = acked.len() - before.len();
    assert!(
        before.len() >= 10 && during >= 1,
        "too little load: {} before the backup, {during} during and after",
        before.len()
    );
    server.kill9();

    // A second backup over the first is refused without --force.
    let (code, _, err) = server_cli(&["backup", archive.to_str().unwrap()], &data);
    assert_eq!(code, Some(1));
    assert!(err.contains("--force"), "{err}");

    // Restore into a fresh data directory; not twice without --force.
    let restored = dir.path().join("restored");
    let (code, out, err) = server_cli(&["restore", archive.to_str().unwrap()], &restored);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("dropped 86 unclaimed one-time prekeys"),
        "{out}\n{err}"
    );
    let (code, _, err) = server_cli(&["restore", archive.to_str().unwrap()], &restored);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );

    let server = ServerProcess::spawn(&restored, "", &dir.path().join("restored.log"));
    let at = |c: &Client| Client {
        base: server.url(),
        ..c.clone()
    };
    let (alice, bob) = (at(&alice), at(&bob));
    // Every envelope acknowledged before the backup started is delivered, once.
    let delivered = drain(&bob).await;
    let unique: std::collections::HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "delivered twice");
    for body in &before {
        assert!(
            unique.contains(body),
            "{body} was acknowledged before the backup and is lost"
        );
    }
    // None of the one-time prekeys of the snapshot (bob's 76, alice's 10) is served again
    // (bob's 2 and 3 were handed
    // out after the backup): there are none until bob uploads new ones.
    assert_eq!(claim_one_time(&alice).await, None);
    bob.call_empty(
        Method::PUT,
        "/v1/keys",
        Some(&UploadKeysRequest {
            one_time_prekeys: keys(5, 100).one_time_prekeys,
            one_time_kem_prekeys: keys(5, 100).one_time_kem_prekeys,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(claim_one_time(&alice).await, Some(100));
    // The blob, byte for byte.
    let download = bob
        .request(Method::GET, &format!("/v1/blobs/{blob_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let got = download.bytes().await.unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&blob));
    // The restore is in the audit log, with what it dropped.
    let (code, out, err) = server_cli(&["audit", "export", "--format", "jsonl"], &restored);
    assert_eq!(code, Some(0), "{err}");
    let restore = out
        .lines()
        .find(|l| l.contains("backup-restore"))
        .unwrap_or_else(|| panic!("no backup-restore entry in\n{out}"));
    assert!(
        restore.contains("\"86\"") || restore.contains(":86"),
        "{restore}"
    );
    eprintln!(
        "{} envelopes acknowledged before the backup, {during} during and after; all delivered",
        before.len()
    );
}

/// A damaged archive is refused before anything is put in place, and `--after-pg-restore`
/// is refused for a SQLite store.
#[test]
fn a_damaged_archive_restores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("junk.tar");
    std::fs::write(&archive, vec![0x42; 4096]).unwrap();
    let target = dir.path().join("target");
    let (code, _, err) = server_cli(&["restore", archive.to_str().unwrap()], &target);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a usable Tacit backup"), "{err}");
    assert!(!target.join("tacit.db").exists());
    let (code, _, err) = server_cli(&["restore", "--after-pg-restore"], &target);
    assert_eq!(code, Some(1));
    assert!(err.contains("PostgreSQL"), "{err}");
}
