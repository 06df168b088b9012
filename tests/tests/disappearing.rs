//! Disappearing messages end to end: real `tacit` processes and the real server. A timer
//! set by either participant (or any group member) reaches every device inside the
//! encrypted messages; each device deletes the messages, and received files with their
//! saved copies, when their time is up, also a device that was offline meanwhile (at its
//! next open, or on arrival); the organisation's maximum from the server's policy caps
//! what clients keep.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::path::Path;
use std::time::Duration;

use tacit_tests::cli::{self, Cli, fails, ok};
use tacit_tests::{ServerProcess, now_ms};

/// The laptop's home has its own passphrase.
const LAPTOP: Cli = Cli::new("the laptop's passphrase");

fn server(root: &Path, env: &[(&str, &str)]) -> ServerProcess {
    let data = root.join("server-data");
    std::fs::create_dir_all(&data).unwrap();
    let db = format!("sqlite://{}", data.join("tacit.db").display());
    let mut launch =
        ServerProcess::launch(&data, &db, &root.join("server.log")).arg("--open-registration");
    for (key, value) in env {
        launch = launch.env(key, value);
    }
    launch.spawn()
}

fn recv(home: &Path) -> Vec<serde_json::Value> {
    cli::CLI.recv(home, 3)
}

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] != "receipt")
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// `history --json` of a conversation: (text, expires).
fn history(cli: Cli, home: &Path, with: &str) -> Vec<(String, Option<i64>)> {
    cli.ok(home, &["history", with, "--json"])
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["text"].as_str().unwrap().to_owned(),
                value["expires"].as_i64(),
            )
        })
        .collect()
}

/// The rows of the store's `messages` table, read directly from the file (not through the
/// client, which hides what is due): are the bytes still on the device?
async fn stored_rows(home: &Path) -> i64 {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}?mode=ro", home.join("store.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n
}

/// Sleeps until just after `due` (milliseconds since the Unix epoch).
async fn sleep_past(due: i64) {
    let left = u64::try_from(due - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(left + 300)).await;
}

/// Alice and Bob (with a phone and a laptop): Alice's timer reaches Bob's phone; the
/// messages under it disappear on Alice's device and Bob's phone when their time is up,
/// deleted from the store file at the next open of a device that was not running; Bob's
/// laptop, offline all along, keeps nothing that ran out before it came online, and
/// learns the timer; Bob turns the timer off, and later messages stay.
#[tokio::test(flavor = "multi_thread")]
async fn pairwise_timers_reach_every_device_and_messages_go_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_owned();
    let server = tokio::task::spawn_blocking(move || server(&r, &[]))
        .await
        .unwrap();
    let url = server.url();
    let (alice, bob, laptop) = (
        root.path().join("alice"),
        root.path().join("bob"),
        root.path().join("laptop"),
    );
    let due = {
        let (alice, bob, laptop, url) = (alice.clone(), bob.clone(), laptop.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            ok(&alice, &["register", &url, "alice"]);
            ok(&bob, &["register", &url, "bob"]);
            ok(&alice, &["send", "bob", "before the timer"]);
            assert_eq!(kinds(&recv(&bob)), ["text"]);
            cli::link(&bob, LAPTOP, &laptop, &url, "laptop");
            LAPTOP.recv(&laptop, 1);

            let set = ok(&alice, &["disappearing", "bob", "8s"]);
            assert!(set.contains("disappearing messages with bob: 8s"), "{set}");
            let events = recv(&bob);
            let timer = events.iter().find(|e| e["kind"] == "timer").unwrap();
            assert_eq!(
                (timer["seconds"].as_u64(), timer["peer"].as_str()),
                (Some(8), Some("alice"))
            );
            let shown = ok(&bob, &["disappearing", "alice"]);
            assert!(shown.contains("8s (set by alice)"), "{shown}");

            // Under the timer, from both sides (Bob's reply carries the timer he learned).
            ok(&alice, &["send", "bob", "secret one"]);
            assert_eq!(kinds(&recv(&bob)), ["text"]);
            ok(&bob, &["send", "alice", "secret reply"]);
            assert_eq!(kinds(&recv(&alice)), ["text"]);
            let texts = history(cli::CLI, &bob, "alice");
            assert_eq!(texts.len(), 3, "{texts:?}");
            assert_eq!(texts[0], ("before the timer".into(), None));
            let mut due = 0;
            for (text, expires) in &texts[1..] {
                let left = expires.unwrap() - now_ms();
                assert!((0..=8_000).contains(&left), "{text}: {left} ms left");
                due = due.max(expires.unwrap());
            }
            let text = ok(&alice, &["history", "bob"]);
            assert!(
                text.contains("-- disappearing messages: 8s (set by alice) --"),
                "{text}"
            );
            assert!(
                text.contains("me: secret one") && text.contains("(disappears in"),
                "{text}"
            );
            due
        })
        .await
        .unwrap()
    };
    sleep_past(due).await;
    // Bob's phone did not run meanwhile: the rows are still in its file, until it opens.
    assert_eq!(stored_rows(&bob).await, 3);
    {
        let (alice, bob) = (alice.clone(), bob.clone());
        tokio::task::spawn_blocking(move || {
            assert_eq!(
                history(cli::CLI, &bob, "alice"),
                [("before the timer".into(), None)]
            );
            assert_eq!(
                history(cli::CLI, &alice, "bob"),
                [("before the timer".into(), None)]
            );
        })
        .await
        .unwrap();
    }
    assert_eq!(
        stored_rows(&bob).await,
        1,
        "deleted from the store, not only hidden"
    );
    assert_eq!(stored_rows(&alice).await, 1);

    // The laptop was offline when the timer ran out: the timer arrives, the two messages
    // (Alice's, and Bob's own reply from the phone) arrive already out of time and are
    // not kept.
    {
        let (alice, bob, laptop) = (alice.clone(), bob.clone(), laptop.clone());
        tokio::task::spawn_blocking(move || {
            let events = LAPTOP.recv(&laptop, 3);
            assert_eq!(
                kinds(&events),
                ["timer", "expired", "expired"],
                "{events:?}"
            );
            assert!(history(LAPTOP, &laptop, "alice").is_empty());
            let shown = LAPTOP.ok(&laptop, &["disappearing", "alice"]);
            assert!(shown.contains("8s (set by alice)"), "{shown}");

            // Bob turns it off (either participant may); it reaches Alice and his laptop.
            ok(&bob, &["disappearing", "alice", "off"]);
            let events = recv(&alice);
            let timer = events.iter().find(|e| e["kind"] == "timer").unwrap();
            assert_eq!(timer["seconds"], 0);
            assert!(kinds(&LAPTOP.recv(&laptop, 3)).contains(&"timer".to_owned()));
            ok(&alice, &["send", "bob", "kept again"]);
            recv(&bob);
            assert_eq!(
                history(cli::CLI, &bob, "alice"),
                [
                    ("before the timer".into(), None),
                    ("kept again".into(), None)
                ]
            );
            assert!(ok(&alice, &["disappearing", "bob"]).contains("off"));
            // Bad input is refused clearly.
            let error = fails(&alice, &["disappearing", "bob", "soon"]);
            assert!(error.contains("not a duration"), "{error}");
        })
        .await
        .unwrap();
    }
    drop(server);
}

/// A group's timer set by a member who is not an admin reaches the others; a text and a
/// file under it disappear on each device, and the received file's saved copy with it.
#[tokio::test(flavor = "multi_thread")]
async fn group_timers_take_texts_and_saved_files() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_owned();
    let server = tokio::task::spawn_blocking(move || server(&r, &[]))
        .await
        .unwrap();
    let url = server.url();
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    let file = root.path().join("report.txt");
    std::fs::write(&file, b"quarterly figures, for a few seconds").unwrap();
    let saved = {
        let (alice, bob, file) = (alice.clone(), bob.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            ok(&alice, &["register", &url, "alice"]);
            ok(&bob, &["register", &url, "bob"]);
            ok(&alice, &["group", "create", "team", "bob"]);
            recv(&bob);
            ok(&alice, &["group", "send", "team", "before the timer"]);
            recv(&bob);
            let set = ok(&bob, &["disappearing", "--group", "team", "10s"]);
            assert!(set.contains("group team: 10s"), "{set}");
            let events = recv(&alice);
            let timer = events.iter().find(|e| e["kind"] == "timer").unwrap();
            assert_eq!(
                (timer["seconds"].as_u64(), timer["peer"].as_str()),
                (Some(10), Some("group team"))
            );
            ok(&alice, &["group", "send", "team", "gone soon"]);
            ok(
                &alice,
                &["send-file", "--group", "team", file.to_str().unwrap()],
            );
            let events = recv(&bob);
            assert_eq!(kinds(&events), ["group_text", "file"], "{events:?}");
            let path = events[1]["path"].as_str().unwrap().to_owned();
            assert!(std::fs::read(&path).unwrap().starts_with(b"quarterly"));
            let lines = ok(&bob, &["history", "team"]);
            assert!(
                lines.contains("gone soon") && lines.contains("[file] report.txt"),
                "{lines}"
            );
            let mut due = 0;
            for home in [&alice, &bob] {
                for (text, expires) in history(cli::CLI, home, "team") {
                    if text != "before the timer" {
                        due = due.max(expires.expect("under the timer"));
                    }
                }
            }
            (path, due)
        })
        .await
        .unwrap()
    };
    let (saved, due) = saved;
    sleep_past(due).await;
    {
        let (alice, bob) = (alice.clone(), bob.clone());
        tokio::task::spawn_blocking(move || {
            for home in [&alice, &bob] {
                let lines = ok(home, &["history", "team"]);
                assert!(lines.contains("before the timer"), "{lines}");
                assert!(
                    !lines.contains("gone soon") && !lines.contains("report.txt"),
                    "{lines}"
                );
            }
        })
        .await
        .unwrap();
    }
    assert!(
        !Path::new(&saved).exists(),
        "the saved copy went with the file's record"
    );
    assert!(
        file.exists(),
        "the sender's own original is not the client's to delete"
    );
    drop(server);
}

/// The organisation's maximum (`retention.disappearing_max_secs`): a message without a
/// timer is kept no longer on either side; a longer timer, or none, cannot be set; a
/// shorter one can.
#[tokio::test(flavor = "multi_thread")]
async fn the_organisations_maximum_caps_what_clients_keep() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        server(&r, &[("TACIT_RETENTION_DISAPPEARING_MAX_SECS", "3600")])
    })
    .await
    .unwrap();
    let url = server.url();
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    tokio::task::spawn_blocking(move || {
        ok(&alice, &["register", &url, "alice"]);
        ok(&bob, &["register", &url, "bob"]);
        recv(&alice);
        recv(&bob);
        let before = now_ms();
        ok(&alice, &["send", "bob", "capped"]);
        recv(&bob);
        let after = now_ms();
        for (home, with) in [(&alice, "bob"), (&bob, "alice")] {
            let texts = history(cli::CLI, home, with);
            let expires = texts[0].1.expect("kept at most an hour");
            assert!(
                (before + 3_600_000..=after + 3_600_000).contains(&expires),
                "{texts:?}"
            );
        }
        let error = fails(&alice, &["disappearing", "bob", "2h"]);
        assert!(error.contains("at most 1h"), "{error}");
        let error = fails(&alice, &["disappearing", "bob", "off"]);
        assert!(
            error.contains("at most 1h") && error.contains("off"),
            "{error}"
        );
        ok(&alice, &["disappearing", "bob", "10m"]);
        let shown = ok(&alice, &["disappearing", "bob"]);
        assert!(
            shown.contains("10m (set by alice)") && shown.contains("at most 1h"),
            "{shown}"
        );
    })
    .await
    .unwrap();
    drop(server);
}
