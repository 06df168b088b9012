//! Real SDK clients and the real server with the hostile relay between them: one test per
//! lie, each checking that the client stays safe and says what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;
use tacit_api as api;
use tacit_sdk::{Client, Conversation, IncomingKind, KeySource, StoreKey, Transport, Trust};
use tacit_tests::{HostileRelay, TestServer, now_ms, spawn_server};

struct World {
    relay: HostileRelay,
    dir: tempfile::TempDir,
    _server: TestServer,
}

async fn world() -> World {
    let server = spawn_server().await;
    let relay = HostileRelay::start(&server.base).await;
    World {
        relay,
        dir: tempfile::tempdir().unwrap(),
        _server: server,
    }
}

impl World {
    fn transport(&self) -> Transport {
        Transport::new(&self.relay.url, &Trust::SystemRoots).unwrap()
    }

    fn store(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        home.join("store.db")
    }

    async fn register(&self, name: &str) -> Client {
        Client::register(&self.store(name), key(), self.transport(), name, None)
            .await
            .unwrap()
    }
}

fn key() -> KeySource<'static> {
    KeySource::Key(StoreKey::from_bytes([5; 32]))
}

fn address(username: &str, device: u32) -> api::DeviceAddress {
    api::DeviceAddress {
        username: username.into(),
        device_id: api::DeviceId(device),
    }
}

fn missing(addresses: &[(&str, u32)]) -> api::DeviceMismatch {
    api::DeviceMismatch {
        missing: addresses.iter().map(|(u, d)| address(u, *d)).collect(),
        stale: Vec::new(),
    }
}

fn texts(events: &[tacit_sdk::Incoming]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            IncomingKind::Text { text, .. } | IncomingKind::GroupText { text, .. } => {
                Some(text.clone())
            }
            _ => None,
        })
        .collect()
}

fn failures(events: &[tacit_sdk::Incoming]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            IncomingKind::Failed { error } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

/// Links a new device to `existing`'s account (through the relay) and returns it.
async fn link(world: &World, existing: &Client, name: &str) -> Client {
    let pending = Client::begin_link(world.transport()).await.unwrap();
    existing.approve_link(pending.code()).await.unwrap();
    Client::finish_link(
        pending,
        &world.store(name),
        key(),
        Some(name),
        Duration::from_secs(20),
        |_| true,
    )
    .await
    .unwrap()
}

/// The lie: a multicast's mismatch answer names a device of Mallory, who is not in the
/// group. Alice must not hand Mallory her sender key (nor the message), and must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_mismatch_naming_an_outsider_gives_the_outsider_nothing() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    let mut mallory = w.register("mallory").await;
    alice.create_group("team", &["bob".into()]).await.unwrap();
    bob.receive().await.unwrap();
    alice.send_group("team", "hello").await.unwrap();
    assert_eq!(texts(&bob.receive().await.unwrap()), ["hello"]);

    w.relay.lie(|lies| {
        lies.multicast_mismatch = Some((missing(&[("mallory", 1)]), 1));
    });
    let error = alice
        .send_group("team", "secret")
        .await
        .expect_err("a send that names an outsider must be refused")
        .to_string();
    assert!(
        error.contains("mallory") && error.contains("not a member"),
        "{error}"
    );
    assert!(
        !w.relay.recipients().contains("mallory"),
        "something was sent to Mallory"
    );
    assert!(mallory.receive().await.unwrap().is_empty());

    // The server honest again: the group works, and Mallory still gets nothing.
    alice.send_group("team", "after").await.unwrap();
    assert_eq!(texts(&bob.receive().await.unwrap()), ["after"]);
    assert!(mallory.receive().await.unwrap().is_empty());
    assert!(!w.relay.recipients().contains("mallory"));
    // Mallory holds no sender key: she can decrypt nothing of the group.
    let keys = mallory
        .store()
        .secrets_with_prefix("group-record:")
        .await
        .unwrap();
    assert!(keys.is_empty(), "Mallory holds {} sender keys", keys.len());
}

/// The lie: a one-to-one send's mismatch answer names a device of a third user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_mismatch_naming_a_third_user_is_refused() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    let mut mallory = w.register("mallory").await;
    alice.send("bob", "hi").await.unwrap();
    assert_eq!(texts(&bob.receive().await.unwrap()), ["hi"]);

    w.relay
        .lie(|lies| lies.send_mismatch = Some((missing(&[("mallory", 1)]), 1)));
    let error = alice
        .send("bob", "secret")
        .await
        .expect_err("a send whose mismatch names a third user must be refused")
        .to_string();
    assert!(error.contains("mallory"), "{error}");
    assert!(!w.relay.recipients().contains("mallory"));
    assert!(mallory.receive().await.unwrap().is_empty());
    assert!(bob.receive().await.unwrap().is_empty(), "nothing was sent");
}

/// A member's device is removed after it got Alice's chain; the server reports it stale at
/// Alice's next send. Alice must start a new chain that the removed device never gets, so
/// the removed device's store opens nothing sent afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_device_reported_stale_makes_the_sender_rotate_its_chain() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    let mut laptop = link(&w, &bob, "bob-laptop").await;
    alice.create_group("team", &["bob".into()]).await.unwrap();
    bob.receive().await.unwrap();
    laptop.receive().await.unwrap();
    alice.send_group("team", "one").await.unwrap();
    assert_eq!(texts(&laptop.receive().await.unwrap()), ["one"]);
    assert_eq!(texts(&bob.receive().await.unwrap()), ["one"]);

    bob.remove_device(laptop.device_id()).await.unwrap();
    alice.send_group("team", "two").await.unwrap();
    assert_eq!(texts(&bob.receive().await.unwrap()), ["two"]);
    let last = w.relay.multicasts().pop().unwrap();
    assert!(
        last.recipients
            .iter()
            .all(|r| !r.device_ids.contains(&laptop.device_id())),
        "the removed device is still addressed"
    );
    // The laptop still holds everything it had; it cannot open "two".
    let envelope = api::Envelope {
        id: 1,
        sender: "alice".into(),
        sender_device: alice.device_id(),
        server_timestamp: api::Timestamp(0),
        ciphertext: last.ciphertext.clone(),
    };
    let event = laptop.process_envelope(&envelope).await.unwrap().unwrap();
    assert!(
        matches!(event.kind, IncomingKind::Failed { .. }),
        "the removed device opened a message sent after its removal: {event:?}"
    );
}

/// The lie: Bob's device list is Mallory's, relabelled as Bob's. Alice has Bob pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_device_list_is_refused() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    let mut mallory = w.register("mallory").await;
    alice.send("bob", "hi").await.unwrap();
    bob.receive().await.unwrap();
    let sends_before = w.relay.exchanges().len();

    w.relay
        .lie(|lies| drop(lies.device_lists.insert("bob".into(), "mallory".into())));
    let error = alice.send("bob", "secret").await.unwrap_err().to_string();
    assert!(error.contains("identity key has changed"), "{error}");
    assert!(
        w.relay.exchanges()[sends_before..]
            .iter()
            .all(|e| e.path != "/v1/messages" || e.method != axum::http::Method::POST),
        "something was encrypted and sent"
    );
    assert!(mallory.receive().await.unwrap().is_empty());
    assert!(bob.receive().await.unwrap().is_empty());
}

/// The lie: Bob's prekey bundle is Mallory's, relabelled as Bob's (first contact, the
/// device list is honest and pins Bob's real key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substituted_bundle_is_refused() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    let mut mallory = w.register("mallory").await;
    w.relay
        .lie(|lies| drop(lies.bundles.insert("bob".into(), "mallory".into())));
    let error = alice.send("bob", "secret").await.unwrap_err().to_string();
    assert!(error.contains("identity key has changed"), "{error}");
    assert!(!w.relay.recipients().contains("bob"), "something was sent");
    assert!(mallory.receive().await.unwrap().is_empty());
    assert!(bob.receive().await.unwrap().is_empty());
}

/// The lie: every envelope is delivered twice. Each message opens once; the copy is
/// reported as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_envelopes_open_once() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    w.relay.lie(|lies| lies.duplicate_envelopes = true);
    alice.send("bob", "once").await.unwrap();
    alice.send("bob", "twice?").await.unwrap();
    let events = bob.receive().await.unwrap();
    assert_eq!(texts(&events), ["once", "twice?"]);
    let failed = failures(&events);
    assert_eq!(failed.len(), 2, "{events:?}");
    assert!(failed.iter().all(|f| f.contains("duplicate")), "{failed:?}");
    assert_eq!(
        bob.store()
            .history(&Conversation::direct("alice"))
            .await
            .unwrap()
            .len(),
        2
    );
}

/// The lie: an envelope delivered (and acknowledged) earlier is delivered again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_envelope_is_refused() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    alice.send("bob", "first").await.unwrap();
    bob.receive().await.unwrap();
    bob.send("alice", "reply").await.unwrap();
    alice.receive().await.unwrap();
    alice.send("bob", "second").await.unwrap();
    assert_eq!(texts(&bob.receive().await.unwrap()), ["second"]);
    let old: Vec<api::Envelope> = w
        .relay
        .fetched()
        .into_iter()
        .filter(|e| e.sender == "alice")
        .collect();
    w.relay.lie(|lies| lies.replay = old);
    alice.send("bob", "third").await.unwrap();
    let events = bob.receive().await.unwrap();
    assert_eq!(texts(&events), ["third"]);
    // "first", "second" and a receipt are replayed: each is refused as a duplicate.
    let failed = failures(&events);
    assert!(failed.len() >= 2, "{events:?}");
    assert!(failed.iter().all(|f| f.contains("duplicate")), "{failed:?}");
    let history = bob
        .store()
        .history(&Conversation::direct("alice"))
        .await
        .unwrap();
    assert_eq!(history.iter().filter(|m| !m.outgoing).count(), 3);
}

/// The lie: a batch of envelopes arrives in reverse order. Every message still opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_envelopes_all_open() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    for text in ["a", "b", "c"] {
        alice.send("bob", text).await.unwrap();
    }
    w.relay.lie(|lies| lies.reverse_envelopes = true);
    let events = bob.receive().await.unwrap();
    assert_eq!(texts(&events), ["c", "b", "a"]);
    assert!(failures(&events).is_empty(), "{events:?}");
}

/// The lie: the server (which stores the channel id and the new device's key, so it can
/// compute everything the old link code held) answers a link channel from an account of
/// its own. The new device must refuse, say why, and join nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_answered_without_the_code_joins_nothing() {
    let w = world().await;
    let mallory = w.register("mallory").await;
    let pending = Client::begin_link(w.transport()).await.unwrap();
    let (channel, public_key) = w.relay.channels().pop().unwrap();
    let mut forged = URL_SAFE_NO_PAD.decode(&channel).unwrap();
    forged.extend_from_slice(&sha2::Sha256::digest(&public_key));
    // The secret the server never saw: a guess.
    let code_len = URL_SAFE_NO_PAD.decode(pending.code()).unwrap().len();
    forged.resize(code_len, 0);
    mallory
        .approve_link(&URL_SAFE_NO_PAD.encode(&forged))
        .await
        .unwrap();
    let store = w.store("new-device");
    let mut shown = None;
    let error = Client::finish_link(
        pending,
        &store,
        key(),
        None,
        Duration::from_secs(20),
        |preview| {
            shown = Some(preview.clone());
            true
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("not made by a device that saw the link code"),
        "{error}"
    );
    assert!(shown.is_none(), "the answer got as far as being shown");
    let opened = Client::open(&store, key(), |server| {
        Transport::new(server, &Trust::SystemRoots)
    })
    .await;
    assert!(
        matches!(opened, Err(tacit_sdk::ClientError::NotRegistered)),
        "{opened:?}"
    );
    assert_eq!(mallory.devices().await.unwrap().len(), 1);
}

/// The honest link still works, and the new device shows the account and fingerprint the
/// approving device has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_answered_by_a_device_that_saw_the_code_shows_the_account() {
    let w = world().await;
    let alice = w.register("alice").await;
    let pending = Client::begin_link(w.transport()).await.unwrap();
    assert_eq!(pending.code().len(), tacit_sdk::LINK_CODE_CHARS);
    alice.approve_link(pending.code()).await.unwrap();
    let mut shown = None;
    let laptop = Client::finish_link(
        pending,
        &w.store("laptop"),
        key(),
        Some("laptop"),
        Duration::from_secs(20),
        |preview| {
            shown = Some(preview.clone());
            true
        },
    )
    .await
    .unwrap();
    let shown = shown.unwrap();
    assert_eq!(shown.username, "alice");
    assert_eq!(shown.fingerprint, alice.fingerprint());
    assert_eq!(laptop.fingerprint(), alice.fingerprint());
    assert_eq!(alice.devices().await.unwrap().len(), 2);
}

/// The lie: a first prekey message arrives altered. It fails, and the sender's identity is
/// not pinned on the strength of a message that never authenticated; the real message
/// later sets the pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_contact_is_pinned_only_once_its_message_authenticates() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    alice.send("bob", "hello").await.unwrap();
    w.relay.lie(|lies| lies.corrupt_envelopes = true);
    let events = bob.receive().await.unwrap();
    assert!(texts(&events).is_empty(), "{events:?}");
    assert_eq!(failures(&events).len(), 1, "{events:?}");
    assert!(
        bob.store().contact("alice").await.unwrap().is_none(),
        "a message that did not authenticate pinned its sender"
    );
    w.relay.honest();
    alice.send("bob", "again").await.unwrap();
    assert_eq!(texts(&bob.receive().await.unwrap()), ["again"]);
    assert!(bob.store().contact("alice").await.unwrap().is_some());
}

/// The lie: the server saw Alice reserve a blob; it answers Mallory's next reservation
/// with Alice's blob id (and keeps Mallory's bytes under it), so Mallory's file message
/// names Alice's blob id with Mallory's key, and it is delivered first. Alice's own
/// announcement of her file must not silently lose to it: it is refused as a conflict,
/// and the record of the blob says it came from Mallory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_id_announced_first_by_another_sender_is_not_merged() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    let mut mallory = w.register("mallory").await;
    let (real, fake) = (
        w.dir.path().join("report.txt"),
        w.dir.path().join("fake.txt"),
    );
    std::fs::write(&real, b"alice's real report").unwrap();
    std::fs::write(&fake, b"mallory's forgery").unwrap();
    let sent = alice.send_file("bob", &real, &mut |_| {}).await.unwrap();
    w.relay.lie(|lies| lies.steal_blob_id = true);
    let forged = mallory.send_file("bob", &fake, &mut |_| {}).await.unwrap();
    assert_eq!(forged.blob_id, sent.blob_id, "the lie did not take");
    w.relay.lie(|lies| lies.reverse_envelopes = true);
    let events = bob.receive().await.unwrap();
    let from_alice: Vec<_> = events.iter().filter(|e| e.sender == "alice").collect();
    assert_eq!(from_alice.len(), 1, "{events:?}");
    match &from_alice[0].kind {
        IncomingKind::Failed { error } => {
            assert!(error.contains("already announced by mallory"), "{error}");
        }
        other => panic!("Alice's announcement was accepted under Mallory's record: {other:?}"),
    }
    let stored = bob.store().file(&sent.blob_id).await.unwrap().unwrap();
    assert_eq!(stored.sender.as_deref(), Some("mallory"));
    assert_eq!(stored.peer, Conversation::direct("mallory"));
    assert!(
        bob.store()
            .history(&Conversation::direct("alice"))
            .await
            .unwrap()
            .is_empty(),
        "Alice's conversation shows a file"
    );
    // What Bob can save under that id is Mallory's file, in Mallory's conversation.
    let saved = bob
        .download_file(&sent.blob_id, &w.dir.path().join("bob-files"), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(saved).unwrap(), b"mallory's forgery");
}

/// The lie, over the WebSocket: every pushed envelope arrives twice. The message is shown
/// once; the copy is reported as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_push_over_the_websocket_opens_once() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    w.relay.lie(|lies| lies.duplicate_pushes = true);
    let mut socket = bob.connect().await.unwrap();
    alice.send("bob", "live").await.unwrap();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < 2 {
        let frame = tokio::time::timeout_at(deadline, socket.next_frame())
            .await
            .expect("the pushes did not come")
            .unwrap()
            .unwrap();
        if let tacit_sdk::SocketEvent::Incoming(event) =
            bob.on_frame(&mut socket, frame).await.unwrap()
        {
            events.push(event);
        }
    }
    socket.close().await;
    assert_eq!(texts(&events), ["live"]);
    let failed = failures(&events);
    assert_eq!(failed.len(), 1, "{events:?}");
    assert!(failed[0].contains("duplicate"), "{failed:?}");
    assert_eq!(
        bob.store()
            .history(&Conversation::direct("alice"))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Alice makes a group of Bob, Carol, Dave and Erin and promotes Bob: two admins. Returns
/// Alice, the other four (each has received both updates) and the group.
async fn team_with_two_admins(w: &World) -> (Client, Vec<Client>, tacit_sdk::GroupInfo) {
    let mut alice = w.register("alice").await;
    let mut others = Vec::new();
    for name in ["bob", "carol", "dave", "erin"] {
        others.push(w.register(name).await);
    }
    let names: Vec<String> = ["bob", "carol", "dave", "erin"].map(String::from).to_vec();
    let info = alice.create_group("team", &names).await.unwrap();
    for client in &mut others {
        client.receive().await.unwrap();
    }
    alice
        .promote_members(&info.id.to_string(), &["bob".to_owned()])
        .await
        .unwrap();
    for client in &mut others {
        client.receive().await.unwrap();
    }
    assert_eq!(
        others[0]
            .find_group(&info.id.to_string())
            .await
            .unwrap()
            .admins,
        ["alice", "bob"].map(String::from).into()
    );
    (alice, others, info)
}

fn updates_from(events: &[tacit_sdk::Incoming]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                IncomingKind::GroupUpdate { .. } | IncomingKind::Failed { .. }
            )
        })
        .map(|e| e.sender.clone())
        .collect()
}

fn roster(group: tacit_sdk::GroupInfo) -> (BTreeSet<String>, BTreeSet<String>) {
    (group.members, group.admins)
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The lie: two admins change the group at once (Alice removes Dave while Bob removes
/// Erin), and the relay delivers the two updates to Carol in one order and to everyone else
/// in the other. Without epochs each update carried its author's whole new roster and the
/// last one applied won: Carol would end with Erin, Alice with Dave. With epochs every
/// member applies both changes, in one order: Alice, Bob and Carol, and no one else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_changes_converge_whatever_order_the_relay_delivers() {
    let w = world().await;
    let (mut alice, mut others, info) = team_with_two_admins(&w).await;
    let [bob, carol, dave, erin] = &mut others[..] else {
        unreachable!()
    };
    // At once: neither has seen the other's change.
    alice
        .remove_members(&info.id.to_string(), &["dave".to_owned()])
        .await
        .unwrap();
    bob.remove_members(&info.id.to_string(), &["erin".to_owned()])
        .await
        .unwrap();

    w.relay.lie(|lies| lies.reverse_envelopes = true);
    let carol_events = carol.receive().await.unwrap();
    w.relay.honest();
    assert_eq!(
        updates_from(&carol_events),
        ["bob", "alice"],
        "{carol_events:?}"
    );
    for client in [&mut alice, &mut *bob, &mut *dave, &mut *erin] {
        client.receive().await.unwrap();
    }
    let agreed = (names(&["alice", "bob", "carol"]), names(&["alice", "bob"]));
    for client in [&alice, &*bob, &*carol] {
        let group = client.find_group(&info.id.to_string()).await.unwrap();
        assert_eq!(roster(group), agreed, "{}", client.username());
    }
    for removed in [&*dave, &*erin] {
        assert!(removed.find_group(&info.id.to_string()).await.is_err());
    }
}

/// The lie, with a change that must lose: Alice removes Bob while Bob removes Erin, and
/// Carol gets Bob's update first while Dave gets Alice's first. Whichever comes first in
/// the (epoch, digest) order decides for everyone: if it is Alice's, Bob was no longer an
/// admin at his change's place, and every member reports it as superseded (Dave when it
/// arrives, Carol when Alice's undoes it); if it is Bob's, both apply everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_an_admin_removed_concurrently_is_superseded_everywhere_or_nowhere() {
    let w = world().await;
    let (mut alice, mut others, info) = team_with_two_admins(&w).await;
    let [bob, carol, dave, erin] = &mut others[..] else {
        unreachable!()
    };
    alice
        .remove_members(&info.id.to_string(), &["bob".to_owned()])
        .await
        .unwrap();
    bob.remove_members(&info.id.to_string(), &["erin".to_owned()])
        .await
        .unwrap();

    w.relay.lie(|lies| lies.reverse_envelopes = true);
    let carol_events = carol.receive().await.unwrap();
    w.relay.honest();
    let dave_events = dave.receive().await.unwrap();
    let erin_events = erin.receive().await.unwrap();
    alice.receive().await.unwrap();
    bob.receive().await.unwrap();
    assert_eq!(
        updates_from(&carol_events),
        ["bob", "alice"],
        "{carol_events:?}"
    );
    assert_eq!(
        updates_from(&dave_events),
        ["alice", "bob"],
        "{dave_events:?}"
    );

    let agreed = roster(alice.find_group(&info.id.to_string()).await.unwrap());
    assert_eq!(
        roster(carol.find_group(&info.id.to_string()).await.unwrap()),
        agreed
    );
    assert_eq!(
        roster(dave.find_group(&info.id.to_string()).await.unwrap()),
        agreed
    );
    assert!(
        bob.find_group(&info.id.to_string()).await.is_err(),
        "Bob was removed"
    );
    let (members, admins) = &agreed;
    assert_eq!(admins, &names(&["alice"]));
    let said = |events: &[tacit_sdk::Incoming]| format!("{events:?}").contains("superseded");
    if members.contains("erin") {
        assert_eq!(
            roster(erin.find_group(&info.id.to_string()).await.unwrap()),
            agreed
        );
        assert_eq!(members, &names(&["alice", "carol", "dave", "erin"]));
        assert!(said(&carol_events), "Carol is told Bob's change was undone");
        assert!(!failures(&dave_events).is_empty() && said(&dave_events));
    } else {
        assert!(
            erin.find_group(&info.id.to_string()).await.is_err(),
            "Erin was removed"
        );
        assert_eq!(members, &names(&["alice", "carol", "dave"]));
        assert!(!said(&carol_events) && !said(&dave_events) && !said(&erin_events));
    }
}

/// The lie: every envelope, fetched or pushed over the WebSocket, claims to have been sent
/// in 1970 (a server backdating messages). The time the client shows and stores is the
/// sender's own, from inside the encrypted message, so a message cannot be made to look
/// sent before it was: one-to-one, in a group, and live on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backdated_envelope_shows_the_senders_time() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    let group = alice
        .create_group("team", &["bob".to_owned()])
        .await
        .unwrap();
    bob.receive().await.unwrap();
    let before = now_ms();
    alice.send("bob", "fetched").await.unwrap();
    alice
        .send_group(&group.id.to_string(), "in the group")
        .await
        .unwrap();
    w.relay.lie(|lies| lies.envelope_time = Some(0));
    let mut events = bob.receive().await.unwrap();
    let mut socket = bob.connect().await.unwrap();
    alice.send("bob", "pushed").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while texts(&events).len() < 3 {
        let frame = tokio::time::timeout_at(deadline, socket.next_frame())
            .await
            .expect("the push did not come")
            .unwrap()
            .unwrap();
        if let tacit_sdk::SocketEvent::Incoming(event) =
            bob.on_frame(&mut socket, frame).await.unwrap()
        {
            events.push(event);
        }
    }
    socket.close().await;
    let after = now_ms();
    let backdated = w.relay.fetched();
    assert!(
        backdated
            .iter()
            .filter(|e| e.server_timestamp.0 == 0)
            .count()
            >= 2
    );
    assert_eq!(texts(&events), ["fetched", "in the group", "pushed"]);
    for event in events.iter().filter(|e| {
        matches!(
            e.kind,
            IncomingKind::Text { .. } | IncomingKind::GroupText { .. }
        )
    }) {
        assert!(
            (before..=after).contains(&event.time),
            "{event:?} shows {} (sent between {before} and {after})",
            event.time
        );
    }
    let history = bob
        .store()
        .history(&Conversation::direct("alice"))
        .await
        .unwrap();
    let group_history = bob
        .store()
        .history(&Client::group_history_key(&group))
        .await
        .unwrap();
    for message in history.iter().chain(&group_history) {
        assert!(
            (before..=after).contains(&message.sent_at),
            "{message:?} stored as sent at {}",
            message.sent_at
        );
    }
    assert_eq!(history.len() + group_history.len(), 3);
}

/// Bob's history with Alice: (text, when it disappears).
async fn history(client: &Client) -> Vec<(String, Option<i64>)> {
    client
        .store()
        .history(&Conversation::direct("alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| (String::from_utf8(m.body).unwrap(), m.expires_at))
        .collect()
}

/// The lies about disappearing messages. A server can publish a policy: one below the
/// floor (an hour) would make every client wipe its history within seconds, and is
/// ignored; one above it applies only to what is stored afterwards. A server cannot make
/// a message outlive its timer: it can claim any delivery time and hold a message back,
/// but the client counts from the sender's time inside the message, never later than its
/// arrival, and keeps nothing whose time is up when it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cannot_shorten_history_below_the_floor_nor_stretch_a_timer() {
    let w = world().await;
    let mut alice = w.register("alice").await;
    let mut bob = w.register("bob").await;
    alice.send("bob", "before").await.unwrap();
    bob.receive().await.unwrap();

    w.relay.lie(|lies| {
        lies.policy = Some(api::Policy {
            disappearing_max_secs: Some(1),
        });
    });
    assert_eq!(
        bob.refresh_policy().await.unwrap(),
        None,
        "below the floor: ignored"
    );
    alice.send("bob", "kept").await.unwrap();
    bob.receive().await.unwrap();
    assert_eq!(
        history(&bob).await,
        [("before".to_owned(), None), ("kept".to_owned(), None)]
    );

    w.relay.lie(|lies| {
        lies.policy = Some(api::Policy {
            disappearing_max_secs: Some(3600),
        });
    });
    assert_eq!(bob.refresh_policy().await.unwrap(), Some(3600));
    alice.send("bob", "capped").await.unwrap();
    bob.receive().await.unwrap();
    let kept = history(&bob).await;
    assert_eq!(
        kept[..2],
        [("before".to_owned(), None), ("kept".to_owned(), None)]
    );
    assert!(kept[2].1.is_some(), "{kept:?}");
    w.relay.lie(|lies| lies.policy = None);
    bob.refresh_policy().await.unwrap();

    // A timer of 3 s, and a server that says every envelope comes from ten days ahead.
    alice
        .set_disappearing(&Conversation::direct("bob"), 3)
        .await
        .unwrap();
    bob.receive().await.unwrap();
    let ten_days = 10 * 24 * 3600 * 1000;
    w.relay.lie(|lies| {
        lies.envelope_time = Some(now_ms() + ten_days);
    });
    alice.send("bob", "short-lived").await.unwrap();
    bob.receive().await.unwrap();
    let last = history(&bob).await.pop().unwrap();
    assert_eq!(last.0, "short-lived");
    let left = last.1.unwrap() - now_ms();
    assert!(
        (0..=3_000).contains(&left),
        "{left} ms left: the server's time was used"
    );

    // And a message the server held back until its time was up is not kept at all.
    alice.send("bob", "held back").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let events = bob.receive().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, IncomingKind::Expired { peer } if peer == "alice")),
        "{events:?}"
    );
    assert!(texts(&events).is_empty(), "{events:?}");
    assert!(
        history(&bob)
            .await
            .iter()
            .all(|(text, _)| text != "held back"),
        "a message out of time on arrival is not stored"
    );
}
