//! End to end across real processes: the real `tacit-server` binary and real `tacit` CLI
//! processes, with SQLite in a temporary directory and once against PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tacit_tests::cli::{self, Cli, fails, ok, tacit};
use tacit_tests::{ServerProcess, TestDatabase};

/// The laptop home of the linking test has its own passphrase.
const LAPTOP: Cli = Cli::new("another passphrase");

/// The real server on `data` and `database_url`, logging at debug level to `log`.
fn start(data: &Path, database_url: &str, log: &Path) -> ServerProcess {
    ServerProcess::launch(data, database_url, log)
        .arg("--open-registration")
        .env("TACIT_LOG_LEVEL", "debug")
        .spawn()
}

fn tacit_ok(home: &Path, args: &[&str]) -> String {
    LAPTOP.ok(home, args)
}

fn tacit_recv(home: &Path) -> Vec<serde_json::Value> {
    LAPTOP.recv(home, 5)
}

/// Everything `tacit recv --json` printed, as JSON values.
fn recv(home: &Path) -> Vec<serde_json::Value> {
    cli::CLI.recv(home, 5)
}

/// The texts of the messages among `events` (`<failed>` for a failed one); receipts are
/// left out.
fn texts(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] != "receipt")
        .map(|e| e["text"].as_str().unwrap_or("<failed>").to_owned())
        .collect()
}

/// A server on SQLite in `root/server-data`, logging to `root/server.log`.
fn sqlite_server(root: &Path) -> ServerProcess {
    let data = root.join("server-data");
    std::fs::create_dir_all(&data).unwrap();
    let db = format!("sqlite://{}", data.join("tacit.db").display());
    start(&data, &db, &root.join("server.log"))
}

fn random_marker() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    format!("MARK{}", hex::encode(bytes))
}

fn files_containing(dir: &Path, needle: &[u8], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_containing(&path, needle, out);
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            out.push(path);
        }
    }
}

/// The conversation: registration, messages both ways, Bob offline while Alice sends, a
/// server restart in the middle, safety numbers. Returns the markers sent.
fn conversation(server: ServerProcess, root: &Path) -> (ServerProcess, Vec<String>) {
    let (alice, bob) = (root.join("alice"), root.join("bob"));
    ok(&alice, &["register", &server.url(), "alice"]);
    ok(&bob, &["register", &server.url(), "bob"]);
    let marker = random_marker();
    let mut markers = Vec::new();

    // 100 messages each way, in rounds of ten.
    let mut server = server;
    for round in 0..10 {
        let sent: Vec<String> = (0..10)
            .map(|i| format!("{marker}-a{}", round * 10 + i))
            .collect();
        for text in &sent {
            ok(&alice, &["send", "bob", text]);
        }
        if round == 5 {
            // Bob is offline while Alice sends; the server restarts meanwhile.
            server = server.restart();
        }
        assert_eq!(
            texts(&recv(&bob)),
            sent,
            "round {round}: Bob got everything, in order"
        );
        let replies: Vec<String> = (0..10)
            .map(|i| format!("{marker}-b{}", round * 10 + i))
            .collect();
        for text in &replies {
            ok(&bob, &["send", "alice", text]);
        }
        assert_eq!(
            texts(&recv(&alice)),
            replies,
            "round {round}: Alice got everything"
        );
        markers.extend(sent);
        markers.extend(replies);
    }
    // Nothing is delivered twice (only receipts are left).
    assert!(texts(&recv(&bob)).is_empty());
    assert!(texts(&recv(&alice)).is_empty());

    // History holds all 200, in order, on both sides.
    let history = ok(&alice, &["history", "bob", "--json"]);
    assert_eq!(history.lines().count(), 200);

    // The safety numbers they print for each other are equal.
    let on_alice = ok(&alice, &["safety-number", "bob"]);
    let on_bob = ok(&bob, &["safety-number", "alice"]);
    assert_eq!(on_alice, on_bob);
    assert_eq!(on_alice.trim().replace(' ', "").len(), 60);
    (server, markers)
}

#[test]
fn conversation_over_sqlite_with_no_plaintext_on_the_server() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("server-data");
    let log = root.path().join("server.log");
    let db = format!("sqlite://{}", data.join("tacit.db").display());
    std::fs::create_dir_all(&data).unwrap();
    let server = start(&data, &db, &log);
    let (mut server, markers) = conversation(server, root.path());
    server.stop();

    // No marker anywhere in the server's data directory (database, WAL, certificates) or logs.
    for marker in &markers {
        let mut found = Vec::new();
        files_containing(&data, marker.as_bytes(), &mut found);
        assert!(found.is_empty(), "{marker} found in {found:?}");
        let logs = std::fs::read(&log).unwrap();
        assert!(
            !logs.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{marker} found in the server log"
        );
    }
    // The clients' stores keep their history sealed too.
    let mut found = Vec::new();
    files_containing(
        &root.path().join("alice"),
        markers[0].as_bytes(),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "the client store holds plaintext: {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conversation_over_postgres() {
    let db = TestDatabase::create_or_panic().await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("server-data");
    std::fs::create_dir_all(&data).unwrap();
    let url = db.url.clone();
    let root_path = root.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let server = start(&data, &url, &root_path.join("server.log"));
        let (mut server, _) = conversation(server, &root_path);
        server.stop();
    })
    .await
    .unwrap();
}

#[test]
fn a_tampered_ciphertext_is_reported_and_later_messages_still_open() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("server-data");
    let log = root.path().join("server.log");
    std::fs::create_dir_all(&data).unwrap();
    let db_path = data.join("tacit.db");
    let mut server = start(&data, &format!("sqlite://{}", db_path.display()), &log);
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    ok(&alice, &["register", &server.url(), "alice"]);
    ok(&bob, &["register", &server.url(), "bob"]);
    ok(&alice, &["send", "bob", "hello"]);
    assert_eq!(texts(&recv(&bob)), ["hello"]);
    ok(&bob, &["send", "alice", "hi"]);
    assert_eq!(texts(&recv(&alice)), ["hi"]);
    // Bob takes Alice's delivered receipt, so that his mailbox holds only what follows.
    assert!(texts(&recv(&bob)).is_empty());

    for text in ["one", "two", "three"] {
        ok(&alice, &["send", "bob", text]);
    }
    // Flip one ciphertext byte of "two" in the server's database.
    server.stop();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path.display()))
            .await
            .unwrap();
        let rows = sqlx::query("SELECT id, ciphertext FROM envelopes ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
        let id: i64 = rows[1].get(0);
        let mut ciphertext: Vec<u8> = rows[1].get(1);
        ciphertext[50] ^= 0x01;
        sqlx::query("UPDATE envelopes SET ciphertext = ? WHERE id = ?")
            .bind(ciphertext)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    // The same server again, on the same data and address.
    let _server = server.restart();

    let events = recv(&bob);
    assert_eq!(texts(&events), ["one", "<failed>", "three"]);
    assert_eq!(events[1]["kind"], "failed");
    assert!(
        events[1]["error"]
            .as_str()
            .unwrap()
            .contains("authentication"),
        "{}",
        events[1]
    );
    // The failure is not redelivered, and the session still works both ways.
    assert!(texts(&recv(&bob)).is_empty());
    ok(&bob, &["send", "alice", "after"]);
    assert_eq!(texts(&recv(&alice)), ["after"]);
}

#[test]
fn clear_errors_for_bad_input() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("nobody");
    let out = tacit(&home, &["send", "bob", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("register"));
    let out = tacit(&home, &["register", "http://10.1.2.3:80", "alice"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = tacit(&home, &["register", "http://127.0.0.1:1", "alice"]);
    assert!(!out.status.success());
    // One line: what is wrong and what to do, the cause chain not repeated.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not reach http://127.0.0.1:1: nothing is listening there"),
        "{stderr}"
    );
    assert!(stderr.contains("start the server"), "{stderr}");
    assert!(!stderr.contains("error sending request"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Connection problems and an unknown user are one line each that says what is wrong and
/// what to do (issue 11, "errors a person can act on").
#[test]
fn connection_errors_say_what_to_do() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("tls-data");
    std::fs::create_dir_all(&data).unwrap();
    let db = format!("sqlite://{}", data.join("tacit.db").display());
    let tls = ServerProcess::launch(&data, &db, &root.path().join("tls.log"))
        .arg("--open-registration")
        .tls()
        .spawn();
    let home = root.path().join("alice");
    let one_line = |args: &[&str]| {
        let error = fails(&home, args);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(!error.contains("error sending request"), "{error}");
        error
    };
    let url = format!("https://{}", tls.addr);
    let error = one_line(&["register", &url, "alice"]);
    assert!(error.contains("its certificate is not trusted"), "{error}");
    assert!(
        error.contains("--pin") && error.contains("--ca-file"),
        "{error}"
    );
    let wrong_pin = "00".repeat(32);
    let error = one_line(&["register", &url, "alice", "--pin", &wrong_pin]);
    assert!(
        error.contains("its certificate is not the pinned one"),
        "{error}"
    );
    let error = one_line(&["register", &format!("http://{}", tls.addr), "alice"]);
    assert!(error.contains("does not speak the protocol"), "{error}");
    assert!(error.contains("use https://"), "{error}");

    let plain = sqlite_server(root.path());
    ok(&home, &["register", &plain.url(), "alice"]);
    let error = one_line(&["send", "carol", "hi"]);
    assert!(error.contains("no user carol on this server"), "{error}");
}

/// Bob deletes his account and registers again with a new identity: Alice's sends stop
/// with the identity-change error until she accepts the new key with `tacit trust bob`.
#[test]
fn a_changed_identity_stops_sends_until_trusted() {
    let root = tempfile::tempdir().unwrap();
    let server = sqlite_server(root.path());
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    ok(&alice, &["register", &server.url(), "alice"]);
    ok(&bob, &["register", &server.url(), "bob"]);
    ok(&alice, &["send", "bob", "hello"]);
    assert_eq!(texts(&recv(&bob)), ["hello"]);
    ok(&alice, &["verify", "bob"]);
    let old_number = ok(&alice, &["safety-number", "bob"]);

    assert!(fails(&bob, &["account", "delete"]).contains("--yes"));
    ok(&bob, &["account", "delete", "--yes"]);
    assert!(!bob.join("store.db").exists());
    ok(&bob, &["register", &server.url(), "bob"]);

    let error = fails(&alice, &["send", "bob", "are you still you?"]);
    assert!(error.contains("identity key has changed"), "{error}");
    assert!(error.contains("VERIFIED"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    // It stays stopped until the new key is accepted; nothing reached Bob meanwhile.
    assert!(fails(&alice, &["send", "bob", "again?"]).contains("identity key has changed"));
    assert!(ok(&alice, &["contacts"]).contains("IDENTITY CHANGED"));
    assert!(recv(&bob).is_empty());
    assert_ne!(ok(&alice, &["safety-number", "bob"]), old_number);

    assert!(ok(&alice, &["trust", "bob"]).contains("accepted"));
    ok(&alice, &["send", "bob", "welcome back"]);
    assert_eq!(texts(&recv(&bob)), ["welcome back"]);
    assert_eq!(
        ok(&alice, &["safety-number", "bob"]),
        ok(&bob, &["safety-number", "alice"])
    );
}

/// Alice links a laptop to her phone's account; Bob's message reaches both, and what the
/// laptop sends shows up in the phone's history. Receipts come back to Bob.
#[test]
fn a_linked_device_gets_messages_and_syncs_sent_ones() {
    let root = tempfile::tempdir().unwrap();
    let server = sqlite_server(root.path());
    let (phone, laptop, bob) = (
        root.path().join("phone"),
        root.path().join("laptop"),
        root.path().join("bob"),
    );
    ok(&phone, &["register", &server.url(), "alice"]);
    ok(&bob, &["register", &server.url(), "bob"]);
    ok(&phone, &["send", "bob", "hi from the phone"]);
    assert_eq!(texts(&recv(&bob)), ["hi from the phone"]);
    ok(&phone, &["verify", "bob"]);

    // The new device shows a code; the phone approves it.
    let mut link = LAPTOP
        .command(&laptop)
        .args([
            "device",
            "link",
            &server.url(),
            "--name",
            "laptop",
            "--timeout",
            "60",
            "--yes",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(link.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let code = first.trim().strip_prefix("link code: ").unwrap().to_owned();
    assert_eq!(code.len(), tacit_sdk::LINK_CODE_CHARS);
    // A mangled code is refused without touching the channel.
    let mut wrong = code.clone().into_bytes();
    wrong[40] = if wrong[40] == b'A' { b'B' } else { b'A' };
    let error = fails(
        &phone,
        &["device", "add", std::str::from_utf8(&wrong).unwrap()],
    );
    assert!(error.contains("does not match"), "{error}");
    let approved = ok(&phone, &["device", "add", &code]);
    let status = link.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "device link failed: {rest}");
    assert!(rest.contains("device 2 of alice"), "{rest}");
    // Before joining, it showed the account and the identity fingerprint that the phone
    // showed when it approved.
    let fingerprint = approved
        .split("fingerprint ")
        .nth(1)
        .map(str::trim)
        .unwrap()
        .to_owned();
    assert!(
        rest.contains(&format!(
            "joining account alice (identity fingerprint {fingerprint})"
        )),
        "{rest}"
    );
    // The code is single-use.
    assert!(fails(&phone, &["device", "add", &code]).contains("link code"));

    let devices = ok(&phone, &["device", "list"]);
    assert_eq!(devices.lines().count(), 2, "{devices}");
    assert!(devices.contains("laptop"));
    // The laptop has the account identity and the phone's pins.
    assert_eq!(
        tacit_ok(&laptop, &["safety-number", "bob"]),
        ok(&bob, &["safety-number", "alice"])
    );
    assert!(tacit_ok(&laptop, &["contacts"]).contains("verified"));

    // Bob's message reaches both of Alice's devices.
    ok(&bob, &["send", "alice", "to both"]);
    assert_eq!(texts(&recv(&phone)), ["to both"]);
    assert_eq!(texts(&tacit_recv(&laptop)), ["to both"]);

    // What the laptop sends reaches Bob and shows up in the phone's history.
    tacit_ok(&laptop, &["send", "bob", "from the laptop"]);
    let on_bob = recv(&bob);
    assert_eq!(texts(&on_bob), ["from the laptop"]);
    // Both of Alice's devices told Bob they got "to both".
    assert!(
        on_bob
            .iter()
            .filter(|e| e["receipt"] == "delivered")
            .count()
            >= 1,
        "{on_bob:?}"
    );
    let bob_history = ok(&bob, &["history", "alice", "--json"]);
    assert!(
        bob_history.contains(r#""status":"delivered""#),
        "{bob_history}"
    );
    let synced = recv(&phone);
    assert_eq!(texts(&synced), ["from the laptop"]);
    assert_eq!(synced[0]["peer"], "bob");
    let history = ok(&phone, &["history", "bob"]);
    assert!(history.contains("me: from the laptop"), "{history}");

    // Removing the laptop ends its access; Bob's next message goes to the phone only.
    ok(&phone, &["device", "remove", "2"]);
    let error = String::from_utf8(LAPTOP.run(&laptop, &["recv"]).stderr).unwrap();
    assert!(error.contains("unauthorized"), "{error}");
    ok(&bob, &["send", "alice", "phone only"]);
    assert_eq!(texts(&recv(&phone)), ["phone only"]);
}

/// `tacit listen` prints messages as they arrive over the WebSocket.
#[test]
fn listen_prints_messages_as_they_arrive() {
    let root = tempfile::tempdir().unwrap();
    let server = sqlite_server(root.path());
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    ok(&alice, &["register", &server.url(), "alice"]);
    ok(&bob, &["register", &server.url(), "bob"]);
    ok(&alice, &["send", "bob", "waiting before"]);
    let mut listener = cli::command(&bob)
        .args(["listen", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, receiver) = std::sync::mpsc::channel();
    let stdout = listener.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        let line = receiver.recv_timeout(Duration::from_secs(20)).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(next()["text"], "waiting before");
    for text in ["live one", "live two"] {
        ok(&alice, &["send", "bob", text]);
        let event = next();
        assert_eq!(
            (event["text"].as_str(), event["sender"].as_str()),
            (Some(text), Some("alice"))
        );
    }
    let _ = listener.kill();
    let _ = listener.wait();
    // Everything was acknowledged: nothing is waiting.
    assert!(texts(&recv(&bob)).is_empty());
    // Alice got the delivered receipts.
    let receipts = recv(&alice);
    assert!(
        receipts.iter().all(|e| e["kind"] == "receipt"),
        "{receipts:?}"
    );
    assert!(!receipts.is_empty());
}

/// The SDK rotates the signed and last-resort prekeys on schedule; a message made from a
/// bundle claimed before one rotation still opens, one from before two rotations is
/// reported as failed (that key is deleted).
#[tokio::test(flavor = "multi_thread")]
async fn signed_prekeys_rotate_and_the_previous_one_is_kept() {
    use tacit_sdk::{Client, IncomingKind, KeySource, Transport, Trust};
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_owned();
    let server = tokio::task::spawn_blocking(move || sqlite_server(&root_path))
        .await
        .unwrap();
    let transport = || Transport::new(&server.url(), &Trust::SystemRoots).unwrap();
    let register = |name: &'static str| {
        let path = root.path().join(format!("{name}.db"));
        let transport = transport();
        async move {
            Client::register(&path, KeySource::Passphrase("pw"), transport, name, None)
                .await
                .unwrap()
        }
    };
    let mut alice = register("alice").await;
    let mut bob = register("bob").await;
    let mut carol = register("carol").await;
    let texts = |events: Vec<tacit_sdk::Incoming>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match e.kind {
                IncomingKind::Text { text, .. } => Some(text),
                IncomingKind::Failed { error } => Some(format!("failed: {error}")),
                IncomingKind::Receipt { .. }
                | IncomingKind::GroupText { .. }
                | IncomingKind::GroupUpdate { .. }
                | IncomingKind::File { .. }
                | IncomingKind::Timer { .. }
                | IncomingKind::Expired { .. } => None,
            })
            .collect()
    };

    // Not due yet; forced with a zero age.
    assert!(
        !alice
            .rotate_prekeys_if_older(tacit_sdk::client::SIGNED_PREKEY_ROTATION)
            .await
            .unwrap()
    );
    // Bob's session starts from the first signed prekey; Carol's from the second.
    bob.send("alice", "from bob").await.unwrap();
    assert!(alice.rotate_prekeys_if_older(Duration::ZERO).await.unwrap());
    carol.send("alice", "from carol").await.unwrap();
    // One rotation later, Bob's message (signed prekey 1) still opens.
    assert_eq!(
        texts(alice.receive().await.unwrap()),
        ["from bob", "from carol"]
    );

    // Dave claims a bundle (signed prekey 2); two rotations later that key is gone.
    let mut dave = register("dave").await;
    dave.send("alice", "too late").await.unwrap();
    assert!(alice.rotate_prekeys_if_older(Duration::ZERO).await.unwrap());
    assert!(alice.rotate_prekeys_if_older(Duration::ZERO).await.unwrap());
    let events = texts(alice.receive().await.unwrap());
    assert_eq!(events.len(), 1);
    assert!(
        events[0].contains("prekey this device does not have"),
        "{events:?}"
    );
    // New sessions use the current key, and existing ones go on.
    let mut erin = register("erin").await;
    erin.send("alice", "fresh").await.unwrap();
    bob.send("alice", "bob again").await.unwrap();
    assert_eq!(
        texts(alice.receive().await.unwrap()),
        ["fresh", "bob again"]
    );
    drop(server);
}

/// `tacit chat`: lines typed are sent, messages from the peer are printed as they arrive
/// and answered with a read receipt; end of input ends the chat.
#[test]
fn chat_sends_lines_and_prints_replies() {
    use std::io::Write as _;
    let root = tempfile::tempdir().unwrap();
    let server = sqlite_server(root.path());
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    ok(&alice, &["register", &server.url(), "alice"]);
    ok(&bob, &["register", &server.url(), "bob"]);
    let mut chat = cli::command(&alice)
        .args(["chat", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    writeln!(stdin, "hello from the chat").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(Instant::now() < deadline, "the chat line never reached Bob");
        got = texts(&recv(&bob));
    }
    assert_eq!(got, ["hello from the chat"]);
    ok(&bob, &["send", "alice", "a reply"]);
    // Alice's chat prints the reply and sends a read receipt for it.
    let mut read = false;
    while !read {
        assert!(Instant::now() < deadline, "no read receipt came back");
        read = recv(&bob).iter().any(|e| e["receipt"] == "read");
    }
    drop(stdin);
    let out = chat.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("bob.1: a reply"), "{printed}");
    assert!(ok(&bob, &["history", "alice"]).contains("me: a reply  (read)"));
}

/// The texts of the group messages among `events`.
fn group_texts(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "group_text")
        .map(|e| {
            format!(
                "{}: {}",
                e["sender"].as_str().unwrap(),
                e["text"].as_str().unwrap()
            )
        })
        .collect()
}

/// Groups with four users: create, messages from each member, an added member reads only
/// what follows, a removed member's old state decrypts nothing sent after the removal, a
/// member leaves, and the server stores one body per group message.
#[tokio::test(flavor = "multi_thread")]
async fn group_chat_with_membership_changes() {
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_owned();
    let server = tokio::task::spawn_blocking(move || sqlite_server(&root_path))
        .await
        .unwrap();
    let home = |name: &str| root.path().join(name);
    let (alice, bob, carol, dave) = (home("alice"), home("bob"), home("carol"), home("dave"));
    let url = server.url();
    let run = move |f: Box<dyn FnOnce() + Send>| tokio::task::spawn_blocking(f);
    {
        let (alice, bob, carol, dave) = (alice.clone(), bob.clone(), carol.clone(), dave.clone());
        run(Box::new(move || {
            for (h, name) in [
                (&alice, "alice"),
                (&bob, "bob"),
                (&carol, "carol"),
                (&dave, "dave"),
            ] {
                ok(h, &["register", &url, name]);
            }
            let created = ok(&alice, &["group", "create", "team", "bob", "carol"]);
            assert!(created.contains("team"), "{created}");
            // A non-admin cannot change the group.
            let bob_events = recv(&bob);
            assert!(
                bob_events.iter().any(|e| e["kind"] == "group_update"),
                "{bob_events:?}"
            );
            assert!(fails(&bob, &["group", "add", "team", "dave"]).contains("admin"));
            assert!(recv(&carol).iter().any(|e| e["kind"] == "group_update"));

            // Messages from each member reach the others.
            ok(&alice, &["group", "send", "team", "hello from alice"]);
            assert_eq!(group_texts(&recv(&bob)), ["alice: hello from alice"]);
            ok(&bob, &["group", "send", "team", "bob here"]);
            assert_eq!(
                group_texts(&recv(&carol)),
                ["alice: hello from alice", "bob: bob here"]
            );
            ok(&carol, &["group", "send", "team", "carol too"]);
            assert_eq!(
                group_texts(&recv(&alice)),
                ["bob: bob here", "carol: carol too"]
            );
            assert_eq!(group_texts(&recv(&bob)), ["carol: carol too"]);

            // Dave joins: he reads only what is sent from now on.
            ok(&alice, &["group", "send", "team", "before dave"]);
            ok(&alice, &["group", "add", "team", "dave"]);
            ok(&alice, &["group", "send", "team", "welcome dave"]);
            assert_eq!(
                group_texts(&recv(&bob)),
                ["alice: before dave", "alice: welcome dave"]
            );
            ok(&bob, &["group", "send", "team", "hi dave"]);
            let on_dave = recv(&dave);
            assert_eq!(
                group_texts(&on_dave),
                ["alice: welcome dave", "bob: hi dave"]
            );
            assert!(ok(&dave, &["group", "members", "team"]).contains("alice\tadmin"));
            assert_eq!(
                group_texts(&recv(&carol)),
                ["alice: before dave", "alice: welcome dave", "bob: hi dave"]
            );
        }))
        .await
        .unwrap();
    }

    // Carol is removed; a copy of her store from before keeps her old keys.
    let carol_old = home("carol-old");
    std::fs::create_dir_all(&carol_old).unwrap();
    // The whole home: the store's write-ahead log holds its latest writes.
    for entry in std::fs::read_dir(&carol).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, carol_old.join(path.file_name().unwrap())).unwrap();
        }
    }
    {
        let (alice, bob, carol) = (alice.clone(), bob.clone(), carol.clone());
        run(Box::new(move || {
            ok(&alice, &["group", "remove", "team", "carol"]);
            ok(&alice, &["group", "send", "team", "after carol left"]);
            assert!(recv(&bob).iter().any(|e| e["kind"] == "group_update"));
            ok(&bob, &["group", "send", "team", "bob after carol"]);
            let on_carol = recv(&carol);
            assert!(group_texts(&on_carol).is_empty(), "{on_carol:?}");
            assert!(on_carol.iter().any(|e| e["kind"] == "group_update"));
            assert!(fails(&carol, &["group", "send", "team", "let me in"]).contains("no group"));
            assert_eq!(
                group_texts(&recv(&alice)),
                ["bob: hi dave", "bob: bob after carol"]
            );
        }))
        .await
        .unwrap();
    }
    // Every group ciphertext the server holds now (sent after the removal, waiting for Dave
    // and others) opens nothing with Carol's old state.
    let db = format!(
        "sqlite://{}",
        root.path().join("server-data/tacit.db").display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let rows: Vec<(String, i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT e.sender, e.sender_device, e.server_ts, COALESCE(b.ciphertext, e.ciphertext) \
         FROM envelopes e LEFT JOIN message_bodies b ON b.id = e.body_id ORDER BY e.id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let group_rows: Vec<_> = rows.iter().filter(|r| r.3.get(1) == Some(&3)).collect();
    assert!(
        group_rows.len() >= 2,
        "expected group messages waiting for Dave"
    );
    let bodies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_bodies")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(bodies >= 2, "each group message is one stored body");
    let mut old = tacit_sdk::Client::open(
        &carol_old.join("store.db"),
        tacit_sdk::KeySource::Passphrase("correct horse battery staple"),
        |server| tacit_sdk::Transport::new(server, &tacit_sdk::Trust::SystemRoots),
    )
    .await
    .unwrap();
    for (id, (sender, device, ts, ciphertext)) in group_rows.iter().enumerate() {
        let envelope = tacit_api::Envelope {
            id: u64::try_from(id).unwrap(),
            sender: sender.clone(),
            sender_device: tacit_api::DeviceId(u32::try_from(*device).unwrap()),
            server_timestamp: tacit_api::Timestamp(*ts),
            ciphertext: tacit_api::Ciphertext(ciphertext.clone().into()),
        };
        let event = old.process_envelope(&envelope).await.unwrap().unwrap();
        assert!(
            matches!(event.kind, tacit_sdk::IncomingKind::Failed { .. }),
            "Carol's old state opened a message sent after her removal: {event:?}"
        );
    }

    run(Box::new(move || {
        let on_dave = recv(&dave);
        assert_eq!(
            group_texts(&on_dave),
            ["alice: after carol left", "bob: bob after carol"]
        );
        // Bob leaves; Alice and Dave go on without him.
        ok(&bob, &["group", "leave", "team"]);
        assert!(recv(&alice).iter().any(|e| e["kind"] == "group_update"));
        ok(&alice, &["group", "send", "team", "just us"]);
        assert_eq!(group_texts(&recv(&dave)), ["alice: just us"]);
        assert!(group_texts(&recv(&bob)).is_empty());
        let history = ok(&dave, &["history", "team"]);
        assert!(history.contains("[team] alice: just us"), "{history}");
        // A file to the group: uploaded once, announced in one group message.
        let file = alice.join("notes.txt");
        std::fs::write(&file, b"group file contents\n".repeat(1000)).unwrap();
        ok(
            &alice,
            &["send-file", "--group", "team", file.to_str().unwrap()],
        );
        let out = dave.join("got");
        let events = ok(
            &dave,
            &[
                "recv",
                "--json",
                "--wait",
                "5",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(events.contains(r#""kind":"file""#), "{events}");
        assert_eq!(
            std::fs::read(out.join("notes.txt")).unwrap(),
            std::fs::read(&file).unwrap()
        );
        assert!(ok(&alice, &["group", "list"]).contains("team"));
    }))
    .await
    .unwrap();
    drop(server);
}

/// Two `tacit` processes on one home at once: the second is refused at once with the first
/// one's process id, so two processes never load, encrypt and save the same session (which
/// would put two ciphertexts under one message key). Once the first ends, the home works.
#[test]
fn a_second_process_on_a_home_is_refused_while_the_first_runs() {
    let root = tempfile::tempdir().unwrap();
    let server = sqlite_server(root.path());
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    ok(&alice, &["register", &server.url(), "alice"]);
    ok(&bob, &["register", &server.url(), "bob"]);
    let mut listener = cli::command(&bob)
        .args(["listen", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(listener.stdout.take().unwrap());
    // Once a message comes through, the listener surely holds the store.
    ok(&alice, &["send", "bob", "are you there"]);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("are you there"), "{line}");
    let error = fails(&bob, &["send", "alice", "from a second process"]);
    assert!(
        error.contains(&format!("in use by process {}", listener.id())),
        "{error}"
    );
    let _ = listener.kill();
    let _ = listener.wait();
    ok(&bob, &["send", "alice", "now alone"]);
    assert_eq!(texts(&recv(&alice)), ["now alone"]);
}
