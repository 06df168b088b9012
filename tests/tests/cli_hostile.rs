//! The `tacit` CLI against the real server with the hostile relay between them (see the
//! `tacit-tests` crate): the proofs that a lying server gets nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::io::BufRead as _;
use std::path::Path;
use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;
use tacit_tests::cli::{self, Cli, fails, ok};
use tacit_tests::{HostileRelay, spawn_server};

/// The laptop home of the linking test has its own passphrase.
const LAPTOP: Cli = Cli::new("another passphrase");

fn recv(home: &Path) -> Vec<serde_json::Value> {
    cli::CLI.recv(home, 2)
}

fn group_texts(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "group_text")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Proof (a): a group send while the server names an outsider's device in the mismatch
/// answer sends that outsider nothing: no pairwise message (so no sender key), no group
/// message, nothing in the outsider's mailbox. The sender is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_send_gives_an_outsider_the_server_names_nothing() {
    let server = spawn_server().await;
    let relay = HostileRelay::start(&server.base).await;
    let root = tempfile::tempdir().unwrap();
    let home = |name: &str| root.path().join(name);
    let (alice, bob, carol, mallory) = (home("alice"), home("bob"), home("carol"), home("mallory"));
    let url = relay.url.clone();
    let run = |f: Box<dyn FnOnce() + Send>| tokio::task::spawn_blocking(f);
    {
        let (alice, bob, carol, mallory) =
            (alice.clone(), bob.clone(), carol.clone(), mallory.clone());
        run(Box::new(move || {
            for (h, name) in [
                (&alice, "alice"),
                (&bob, "bob"),
                (&carol, "carol"),
                (&mallory, "mallory"),
            ] {
                ok(h, &["register", &url, name]);
            }
            ok(&alice, &["group", "create", "team", "bob", "carol"]);
            recv(&bob);
            recv(&carol);
        }))
        .await
        .unwrap();
    }
    relay.lie(|lies| {
        lies.multicast_mismatch = Some((
            tacit_api::DeviceMismatch {
                missing: vec![tacit_api::DeviceAddress {
                    username: "mallory".into(),
                    device_id: tacit_api::DeviceId(1),
                }],
                stale: Vec::new(),
            },
            1,
        ));
    });
    let (a, b, m) = (alice.clone(), bob.clone(), mallory.clone());
    run(Box::new(move || {
        let error = fails(&a, &["group", "send", "team", "the secret plan"]);
        assert!(
            error.contains("mallory") && error.contains("not a member"),
            "{error}"
        );
        assert!(recv(&m).is_empty(), "Mallory's mailbox got something");
        // Honest again: the group works and Mallory still gets nothing.
        ok(&a, &["group", "send", "team", "after"]);
        assert_eq!(group_texts(&recv(&b)), ["after"]);
        assert!(recv(&m).is_empty(), "Mallory's mailbox got something");
    }))
    .await
    .unwrap();
    assert!(
        !relay.recipients().contains("mallory"),
        "a message was addressed to Mallory"
    );
    // Mallory's store holds no sender key of anyone: she can decrypt nothing of the group.
    let mallory = tacit_sdk::Client::open(
        &mallory.join("store.db"),
        tacit_sdk::KeySource::Passphrase("correct horse battery staple"),
        |server| tacit_sdk::Transport::new(server, &tacit_sdk::Trust::SystemRoots),
    )
    .await
    .unwrap();
    let keys = mallory
        .store()
        .secrets_with_prefix("group-record:")
        .await
        .unwrap();
    assert!(keys.is_empty(), "Mallory holds {} sender keys", keys.len());
}

/// Proof (b): a link channel answered by anyone but a device that saw the code fails with
/// a clear error, and the new device belongs to no account afterwards. The attacker has
/// what the server has: the channel id and the new device's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_answered_by_the_server_side_fails_and_joins_nothing() {
    let server = spawn_server().await;
    let relay = HostileRelay::start(&server.base).await;
    let root = tempfile::tempdir().unwrap();
    let (laptop, mallory) = (root.path().join("laptop"), root.path().join("mallory"));
    let url = relay.url.clone();
    let m = mallory.clone();
    tokio::task::spawn_blocking(move || ok(&m, &["register", &url, "mallory"]))
        .await
        .unwrap();

    let mut link = LAPTOP
        .command(&laptop)
        .args(["device", "link", &relay.url, "--timeout", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(link.stdout.take().unwrap());
    let code = tokio::task::spawn_blocking(move || {
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        (first, stdout)
    })
    .await
    .unwrap();
    let (first, mut stdout) = code;
    let shown = first.trim().strip_prefix("link code: ").unwrap().to_owned();
    let code_len = URL_SAFE_NO_PAD.decode(&shown).unwrap().len();

    // What the server knows: the channel and the key. The rest of the code is a guess.
    let (channel, public_key) = relay.channels().pop().unwrap();
    let mut forged = URL_SAFE_NO_PAD.decode(&channel).unwrap();
    forged.extend_from_slice(&sha2::Sha256::digest(&public_key));
    forged.resize(code_len, 0);
    let forged = URL_SAFE_NO_PAD.encode(&forged);
    let m = mallory.clone();
    let l = laptop.clone();
    tokio::task::spawn_blocking(move || {
        ok(&m, &["device", "add", &forged]);
        let status = link.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let mut error = String::new();
        std::io::Read::read_to_string(&mut link.stderr.take().unwrap(), &mut error).unwrap();
        assert!(
            !status.success(),
            "the new device joined an account on an answer from someone who never saw the \
             code: {rest}"
        );
        assert!(
            error.contains("not made by a device that saw the link code"),
            "{error}"
        );
        assert!(!rest.contains("linked"), "{rest}");
        // The new device belongs to no account: nothing in its home opens as one.
        let out = LAPTOP.command(&l).args(["contacts"]).output().unwrap();
        assert!(!out.status.success(), "the new device has an account");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no account"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And Mallory's account has no new device.
        assert_eq!(ok(&m, &["device", "list"]).lines().count(), 1);
    })
    .await
    .unwrap();
    // Its store holds no account either.
    let opened = tacit_sdk::Client::open(
        &laptop.join("store.db"),
        tacit_sdk::KeySource::Passphrase("another passphrase"),
        |server| tacit_sdk::Transport::new(server, &tacit_sdk::Trust::SystemRoots),
    )
    .await;
    assert!(
        matches!(opened, Err(tacit_sdk::ClientError::NotRegistered)),
        "{opened:?}"
    );
}
