//! One store test suite, run against SQLite and PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;

use tacit_api::{
    Ciphertext, DeviceId, DeviceKeys, OneTimePrekey, SignedPrekey, Timestamp, UploadKeysRequest,
};

use super::*;
use crate::service::Rules;
use tacit_tests::TestDatabase;

pub(crate) fn keys(one_time: u32) -> DeviceKeys {
    let signed = |id: u32, tag: u8| SignedPrekey {
        id,
        public_key: vec![tag; 32].into(),
        signature: vec![tag ^ 0xff; 64].into(),
    };
    DeviceKeys {
        identity_key: vec![1; 32].into(),
        signed_prekey: signed(1, 2),
        kem_last_resort_prekey: signed(1, 3),
        one_time_prekeys: (0..one_time)
            .map(|id| OneTimePrekey {
                id,
                public_key: vec![4; 32].into(),
                signature: vec![5; 64].into(),
            })
            .collect(),
        one_time_kem_prekeys: (0..one_time).map(|id| signed(id, 5)).collect(),
    }
}

/// An audit event for an audited store call.
fn ev() -> Event {
    Event::new(
        crate::audit::Action::AccountRegister,
        crate::audit::Outcome::Success,
    )
}

fn device(one_time: u32) -> NewDevice {
    NewDevice {
        name: Some("laptop".into()),
        credential_hash: SecretHash::from_bytes([9; 32]),
        keys: keys(one_time),
    }
}

/// A link channel `[tag; 16]` opened and answered for `account` at `now` with the link
/// secret `[tag; 32]`, as an existing device of the account would.
async fn answered_channel(
    store: &dyn Store,
    tag: u8,
    account: AccountId,
    now: Timestamp,
) -> ChannelId {
    let channel = ChannelId([tag; 16]);
    store
        .create_channel(&channel, b"key", now, Timestamp(now.0 + 600_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .answer_channel(
                &channel,
                account,
                SecretHash::from_bytes([tag; 32]),
                b"sealed",
                now
            )
            .await
            .unwrap(),
        ChannelAnswer::Stored
    );
    channel
}

fn mb(account: AccountId, device: u32) -> Mailbox {
    Mailbox {
        account,
        device: DeviceId(device),
    }
}

fn message(sender: Mailbox, id: &str, to: &[Mailbox], now: i64) -> NewMessage {
    NewMessage {
        sender,
        recipients: vec![to[0].account],
        sender_username: "alice".into(),
        client_message_id: id.into(),
        server_ts: Timestamp(now),
        expires_at: Timestamp(now + 1000),
        remember_until: Timestamp(now + 1000),
        max_mailbox_depth: 3,
        envelopes: to
            .iter()
            .map(|m| {
                (
                    *m,
                    Ciphertext(vec![7, u8::try_from(m.device.0).unwrap()].into()),
                )
            })
            .collect(),
        body: None,
    }
}

async fn suite(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    store.ping().await.unwrap();
    store.maintain().await.unwrap();
    let now = Timestamp(1_000);

    // Invites: consumed once, and only when the account is created.
    store
        .create_invite(SecretHash::from_bytes([1; 32]), None, 1, now, &ev())
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_account(
                "alice",
                Some(SecretHash::from_bytes([2; 32])),
                device(4),
                now,
                &ev()
            )
            .await,
        Err(StoreError::InviteInvalid)
    ));
    let alice = store
        .create_account(
            "alice",
            Some(SecretHash::from_bytes([1; 32])),
            device(4),
            now,
            &ev(),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_account(
                "bob",
                Some(SecretHash::from_bytes([1; 32])),
                device(4),
                now,
                &ev()
            )
            .await,
        Err(StoreError::InviteInvalid)
    ));
    let invites = store.invites().await.unwrap();
    assert_eq!(invites.len(), 1);
    assert_eq!((invites[0].uses, invites[0].max_uses), (1, 1));

    // Usernames are unique; a failed creation consumes no invite.
    store
        .create_invite(SecretHash::from_bytes([3; 32]), None, 1, now, &ev())
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_account(
                "alice",
                Some(SecretHash::from_bytes([3; 32])),
                device(0),
                now,
                &ev()
            )
            .await,
        Err(StoreError::UsernameTaken)
    ));
    let bob = store
        .create_account(
            "bob",
            Some(SecretHash::from_bytes([3; 32])),
            device(2),
            now,
            &ev(),
        )
        .await
        .unwrap();
    assert_ne!(alice, bob);
    assert_eq!(store.account_id("alice").await.unwrap(), Some(alice));
    assert_eq!(store.account_id("nobody").await.unwrap(), None);

    // Devices: numbered from 1, never reused, capped.
    let auth = store.device_auth(mb(alice, 1)).await.unwrap().unwrap();
    assert_eq!(auth.username, "alice");
    assert!(auth.credential_hash.ct_eq(&SecretHash::from_bytes([9; 32])));
    assert!(store.device_auth(mb(alice, 2)).await.unwrap().is_none());
    let d2 = store
        .add_device(alice, device(0), 3, now, &ev())
        .await
        .unwrap();
    assert_eq!(d2, DeviceId(2));
    let d3 = store
        .add_device(alice, device(0), 3, now, &ev())
        .await
        .unwrap();
    assert!(matches!(
        store.add_device(alice, device(0), 3, now, &ev()).await,
        Err(StoreError::TooManyDevices)
    ));
    // A link channel answered for the account (by device 3, say) ...
    let channel = answered_channel(&*store, 3, alice, now).await;
    assert!(
        store
            .remove_device(mb(alice, d3.0), now, &ev())
            .await
            .unwrap()
    );
    // ... links nothing once a device of the account was removed.
    assert!(
        store
            .link_device(
                &channel,
                SecretHash::from_bytes([3; 32]),
                device(0),
                3,
                now,
                &ev()
            )
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .remove_device(mb(alice, d3.0), now, &ev())
            .await
            .unwrap()
    );
    // The last device of an account stays: only deleting the account removes it.
    let solo = store
        .create_account("solo", None, device(0), now, &ev())
        .await
        .unwrap();
    assert!(matches!(
        store.remove_device(mb(solo, 1), now, &ev()).await,
        Err(StoreError::LastDevice)
    ));
    assert!(store.device_auth(mb(solo, 1)).await.unwrap().is_some());
    let d4 = store
        .add_device(alice, device(0), 3, now, &ev())
        .await
        .unwrap();
    assert_eq!(d4, DeviceId(4));
    let devices = store.devices(alice).await.unwrap();
    assert_eq!(
        devices.iter().map(|d| d.device_id.0).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    assert_eq!(devices[0].name.as_deref(), Some("laptop"));

    // Keys: count, claim once each, fall back to the last-resort KEM key.
    let count = store.prekey_count(mb(bob, 1)).await.unwrap();
    assert_eq!((count.one_time_prekeys, count.one_time_kem_prekeys), (2, 2));
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let b = store.claim_bundle(mb(bob, 1)).await.unwrap().unwrap();
        assert!(!b.kem_prekey_is_last_resort);
        assert!(seen.insert(b.one_time_prekey.unwrap().id));
    }
    let b = store.claim_bundle(mb(bob, 1)).await.unwrap().unwrap();
    assert!(b.one_time_prekey.is_none());
    assert!(b.kem_prekey_is_last_resort);
    assert_eq!(b.kem_prekey.public_key.as_slice(), &[3; 32]);
    assert!(store.claim_bundle(mb(bob, 9)).await.unwrap().is_none());
    store
        .upload_keys(
            mb(bob, 1),
            &UploadKeysRequest {
                signed_prekey: Some(SignedPrekey {
                    id: 2,
                    public_key: vec![8; 32].into(),
                    signature: vec![8; 64].into(),
                }),
                one_time_prekeys: vec![OneTimePrekey {
                    id: 50,
                    public_key: vec![6; 32].into(),
                    signature: vec![7; 64].into(),
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let b = store.claim_bundle(mb(bob, 1)).await.unwrap().unwrap();
    assert_eq!(b.signed_prekey.id, 2);
    assert_eq!(b.one_time_prekey.unwrap().id, 50);

    // Concurrent claims hand out each one-time key once.
    let many = store
        .add_device(bob, device(10), 10, now, &ev())
        .await
        .unwrap();
    let claims = (0..40).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.claim_bundle(mb(bob, many.0)).await })
    });
    let mut got = Vec::new();
    for c in claims {
        let b = c.await.unwrap().unwrap().unwrap();
        if let Some(k) = b.one_time_prekey {
            got.push(k.id);
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());

    // Messages: device sets checked, idempotent, per-device mailboxes, ack, depth limit,
    // expiry. Alice has devices 1, 2, 4; Bob has 1 and `many`.
    let to = [mb(bob, 1), mb(bob, many.0), mb(alice, 2), mb(alice, 4)];
    let out = store
        .store_message(message(mb(alice, 1), "m0", &to[..3], 900), &Rules)
        .await
        .unwrap();
    assert_eq!(
        out,
        SendOutcome::Mismatch(vec![AccountMismatch {
            account: alice,
            missing: vec![DeviceId(4)],
            stale: vec![],
        }])
    );
    let mut wrong = to.to_vec();
    wrong[1] = mb(bob, 9);
    let out = store
        .store_message(message(mb(alice, 1), "m0", &wrong, 900), &Rules)
        .await
        .unwrap();
    assert_eq!(
        out,
        SendOutcome::Mismatch(vec![AccountMismatch {
            account: bob,
            missing: vec![many],
            stale: vec![DeviceId(9)],
        }])
    );
    let out = store
        .store_message(message(mb(alice, 1), "m1", &to, 1_000), &Rules)
        .await
        .unwrap();
    assert_eq!(out, SendOutcome::Stored(to.to_vec()));
    let again = store
        .store_message(message(mb(alice, 1), "m1", &to, 2_000), &Rules)
        .await
        .unwrap();
    assert_eq!(again, SendOutcome::Duplicate(Timestamp(1_000)));
    let inbox = store
        .mailbox(mb(bob, 1), 0, 10, Timestamp(1_500))
        .await
        .unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].sender, "alice");
    assert_eq!(inbox[0].ciphertext.0.as_slice(), &[7, 1]);
    for (id, ts) in [("m2", 1_100), ("m3", 1_200)] {
        store
            .store_message(message(mb(alice, 1), id, &to, ts), &Rules)
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .store_message(message(mb(alice, 1), "m4", &to, 1_300), &Rules)
            .await,
        Err(StoreError::MailboxFull)
    ));
    let inbox = store.mailbox(mb(bob, 1), 0, 10, now).await.unwrap();
    assert_eq!(inbox.len(), 3);
    let after = store
        .mailbox(mb(bob, 1), inbox[0].id, 10, now)
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    // Acks only touch the device's own mailbox.
    assert_eq!(store.ack(mb(alice, 2), &[inbox[0].id]).await.unwrap(), 0);
    assert_eq!(
        store
            .ack(mb(bob, 1), &[inbox[0].id, inbox[1].id, 999_999])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.mailbox(mb(bob, 1), 0, 10, now).await.unwrap().len(),
        1
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.envelopes, 10);
    assert_eq!(stats.max_mailbox_depth, 3);
    assert_eq!(stats.devices, 6, "alice's, bob's and solo's");
    // Expiry: m1..m3 expire at 2_000..2_200.
    assert!(
        store
            .mailbox(mb(alice, 2), 0, 10, Timestamp(2_000))
            .await
            .unwrap()
            .len()
            == 2
    );
    // In batches: at most `limit` envelopes per call, oldest expiry first.
    assert_eq!(store.purge_expired(Timestamp(3_000), 4).await.unwrap(), 4);
    assert_eq!(store.purge_expired(Timestamp(3_000), 4).await.unwrap(), 4);
    assert_eq!(store.purge_expired(Timestamp(3_000), 4).await.unwrap(), 2);
    assert_eq!(store.purge_expired(Timestamp(3_000), 4).await.unwrap(), 0);
    // The idempotency record expired with them.
    assert!(matches!(
        store
            .store_message(message(mb(alice, 1), "m1", &to, 3_000), &Rules)
            .await
            .unwrap(),
        SendOutcome::Stored(_)
    ));

    // A batch: each send decided on its own, repeats follow their first occurrence.
    let batch = [
        message(mb(alice, 1), "b1", &to, 3_100),
        message(mb(alice, 1), "b1", &to, 3_100),
        message(mb(alice, 1), "b2", &to[..2], 3_100),
        message(mb(alice, 1), "m1", &to, 3_100),
        message(mb(alice, 1), "b3", &to, 3_100),
        message(mb(alice, 1), "b4", &to, 3_100),
    ];
    let inbox = store.mailbox(mb(alice, 2), 0, 10, now).await.unwrap();
    let out = store
        .write_batch(&batch, &[(mb(alice, 2), vec![inbox[0].id])], &Rules)
        .await
        .unwrap();
    assert_eq!(out.acked, vec![1]);
    assert_eq!(
        out.sent[0].as_ref().unwrap(),
        &SendOutcome::Stored(to.to_vec())
    );
    assert_eq!(
        out.sent[1].as_ref().unwrap(),
        &SendOutcome::Duplicate(Timestamp(3_100))
    );
    assert!(matches!(out.sent[2], Ok(SendOutcome::Mismatch(_))));
    assert_eq!(
        out.sent[3].as_ref().unwrap(),
        &SendOutcome::Duplicate(Timestamp(3_000))
    );
    assert!(matches!(out.sent[4], Ok(SendOutcome::Stored(_))));
    // Depth 3: m1, b1 and b3 fill it (the batch's ack applies after its sends).
    assert!(matches!(out.sent[5], Err(StoreError::MailboxFull)));
    assert_eq!(
        store.mailbox(mb(alice, 2), 0, 10, now).await.unwrap().len(),
        2
    );
    assert_eq!(out.sent.len(), 6);

    // Removing a device deletes its mailbox; sends naming it are refused.
    assert!(store.remove_device(mb(bob, 1), now, &ev()).await.unwrap());
    assert!(
        store
            .mailbox(mb(bob, 1), 0, 10, now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .store_message(message(mb(alice, 1), "m5", &to, 3_200), &Rules)
            .await
            .unwrap(),
        SendOutcome::Mismatch(_)
    ));
    assert_eq!(store.stats().await.unwrap().envelopes, 8);

    multicast(store.as_ref(), alice, bob).await;
    linking_and_deletion(store.as_ref(), alice).await;
    store.close().await;
}

/// A multicast stores its ciphertext once; every destination reads it; the body goes
/// when no envelope refers to it any more.
async fn multicast(store: &dyn Store, alice: AccountId, bob: AccountId) {
    let now = Timestamp(4_000);
    let before = store.stats().await.unwrap();
    let carol = store
        .create_account("carol", None, device(0), now, &ev())
        .await
        .unwrap();
    let mut m = message(
        mb(alice, 1),
        "multi-1",
        &[mb(alice, 2), mb(carol, 1)],
        4_000,
    );
    m.recipients = vec![carol];
    // Every other device of the sender gets it too.
    m.envelopes = vec![(mb(carol, 1), Ciphertext::default())];
    for d in store.devices(alice).await.unwrap() {
        if d.device_id != DeviceId(1) {
            m.envelopes
                .push((mb(alice, d.device_id.0), Ciphertext::default()));
        }
    }
    let destinations = m.envelopes.len();
    let destinations_of_alice: Vec<_> = m.envelopes[1..].to_vec();
    m.body = Some(Ciphertext(vec![42; 300].into()));
    m.max_mailbox_depth = 100;
    // Bob is not listed: fine. Listing Bob without his devices is a mismatch.
    let mut wrong = m.clone();
    wrong.client_message_id = "multi-0".into();
    wrong.recipients.push(bob);
    assert!(matches!(
        store.store_message(wrong, &Rules).await.unwrap(),
        SendOutcome::Mismatch(_)
    ));
    let outcome = store.store_message(m.clone(), &Rules).await.unwrap();
    assert!(
        matches!(outcome, SendOutcome::Stored(ref to) if to.len() == destinations),
        "{outcome:?}"
    );
    assert_eq!(
        store.stats().await.unwrap().message_bodies,
        before.message_bodies + 1
    );
    let carol_box = store.mailbox(mb(carol, 1), 0, 10, now).await.unwrap();
    assert_eq!(carol_box.len(), 1);
    assert_eq!(carol_box[0].ciphertext.0.as_slice(), &[42; 300][..]);
    let alice_box = store.mailbox(mb(alice, 2), 0, 100, now).await.unwrap();
    let last = alice_box.last().unwrap();
    assert_eq!(last.ciphertext.0.as_slice(), &[42; 300][..]);
    // The same id again is a duplicate and stores nothing.
    assert!(matches!(
        store.store_message(m, &Rules).await.unwrap(),
        SendOutcome::Duplicate(_)
    ));
    // Acknowledged by one: still there for the other; by both: purged.
    store.ack(mb(carol, 1), &[carol_box[0].id]).await.unwrap();
    store.purge_expired(now, u32::MAX).await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().message_bodies,
        before.message_bodies + 1
    );
    for (mailbox, _) in destinations_of_alice {
        let inbox = store.mailbox(mailbox, 0, 100, now).await.unwrap();
        let ids: Vec<u64> = inbox.iter().map(|e| e.id).collect();
        store.ack(mailbox, &ids).await.unwrap();
    }
    store.purge_expired(now, u32::MAX).await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().message_bodies,
        before.message_bodies
    );
}

/// Provisioning channels (answered once, used once, token checked, expiry) and account
/// deletion (the name is freed, the number never reused).
async fn linking_and_deletion(store: &dyn Store, alice: AccountId) {
    let now = Timestamp(5_000);
    let later = Timestamp(5_000 + 600_000);
    store
        .create_channel(&ChannelId([1; 16]), b"new device key", now, later)
        .await
        .unwrap();
    let state = store
        .channel(&ChannelId([1; 16]), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (state.public_key.as_slice(), state.message),
        (&b"new device key"[..], None)
    );
    assert!(
        store
            .channel(&ChannelId([2; 16]), now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .channel(&ChannelId([1; 16]), later)
            .await
            .unwrap()
            .is_none()
    );
    // Not answered yet: no link.
    let link = store
        .link_device(
            &ChannelId([1; 16]),
            SecretHash::from_bytes([7; 32]),
            device(1),
            10,
            now,
            &ev(),
        )
        .await;
    assert!(link.unwrap().is_none());
    let answer = store.answer_channel(
        &ChannelId([1; 16]),
        alice,
        SecretHash::from_bytes([7; 32]),
        b"sealed",
        now,
    );
    assert_eq!(answer.await.unwrap(), ChannelAnswer::Stored);
    let again = store.answer_channel(
        &ChannelId([1; 16]),
        alice,
        SecretHash::from_bytes([8; 32]),
        b"other",
        now,
    );
    assert_eq!(again.await.unwrap(), ChannelAnswer::AlreadyAnswered);
    let unknown = store.answer_channel(
        &ChannelId([2; 16]),
        alice,
        SecretHash::from_bytes([7; 32]),
        b"x",
        now,
    );
    assert_eq!(unknown.await.unwrap(), ChannelAnswer::NotFound);
    let state = store
        .channel(&ChannelId([1; 16]), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.message.as_deref(), Some(&b"sealed"[..]));
    // A wrong token does not link (and does not use the channel up).
    let wrong = store
        .link_device(
            &ChannelId([1; 16]),
            SecretHash::from_bytes([8; 32]),
            device(1),
            10,
            now,
            &ev(),
        )
        .await;
    assert!(wrong.unwrap().is_none());
    let (account, new_device) = store
        .link_device(
            &ChannelId([1; 16]),
            SecretHash::from_bytes([7; 32]),
            device(1),
            10,
            now,
            &ev(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account, alice);
    assert!(
        store
            .devices(alice)
            .await
            .unwrap()
            .iter()
            .any(|d| d.device_id == new_device)
    );
    assert!(
        store
            .channel(&ChannelId([1; 16]), now)
            .await
            .unwrap()
            .is_none()
    );
    let reuse = store
        .link_device(
            &ChannelId([1; 16]),
            SecretHash::from_bytes([7; 32]),
            device(1),
            10,
            now,
            &ev(),
        )
        .await;
    assert!(reuse.unwrap().is_none());
    // Expired channels are purged.
    store
        .create_channel(&ChannelId([3; 16]), b"k", now, Timestamp(now.0 + 1))
        .await
        .unwrap();
    store.purge_expired(later, u32::MAX).await.unwrap();
    assert!(
        store
            .channel(&ChannelId([3; 16]), now)
            .await
            .unwrap()
            .is_none()
    );

    // Deleting the account frees the name but never its number.
    let devices = store.delete_account(alice, now, &ev()).await.unwrap();
    assert!(devices.contains(&new_device));
    assert!(store.devices(alice).await.unwrap().is_empty());
    assert_eq!(store.account_id("alice").await.unwrap(), None);
    let again = store
        .create_account("alice", None, device(0), now, &ev())
        .await
        .unwrap();
    assert_ne!(again, alice);
    assert_eq!(store.account_id("alice").await.unwrap(), Some(again));
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
    suite(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store() {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
    suite(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
}

/// Acknowledgements in one batch: each counts only for its own mailbox (another account
/// naming the same ids changes nothing), ids beyond the column's range fail nothing, and a
/// batch of many ids for one mailbox stays under the backend's parameter limit.
async fn acks_in_a_batch(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    let now = Timestamp(1_000);
    let bob = store
        .create_account("bob", None, device(0), now, &ev())
        .await
        .unwrap();
    let mallory = store
        .create_account("mallory", None, device(0), now, &ev())
        .await
        .unwrap();
    let alice = store
        .create_account("alice", None, device(0), now, &ev())
        .await
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..40 {
        let mut m = message(mb(alice, 1), &format!("a{i}"), &[mb(bob, 1)], now.0);
        m.max_mailbox_depth = 100_000;
        batch.push(m);
    }
    let out = store.write_batch(&batch, &[], &Rules).await.unwrap();
    assert!(
        out.sent
            .iter()
            .all(|r| matches!(r, Ok(SendOutcome::Stored(_))))
    );
    let inbox = store.mailbox(mb(bob, 1), 0, 100, now).await.unwrap();
    assert_eq!(inbox.len(), 40);
    let ids: Vec<u64> = inbox.iter().map(|e| e.id).collect();

    // Mallory acks Bob's ids first in the batch, then Bob acks the first half: every one of
    // Bob's is deleted and counted for Bob; none for Mallory. A huge id fails nothing, and
    // a send in the same batch is stored.
    let mut fresh = message(mb(alice, 1), "after", &[mb(bob, 1)], now.0);
    fresh.max_mailbox_depth = 100_000;
    let out = store
        .write_batch(
            &[fresh],
            &[
                (mb(mallory, 1), ids.clone()),
                (mb(bob, 1), ids[..20].to_vec()),
                (mb(bob, 1), vec![u64::MAX, (i64::MAX as u64) + 1]),
            ],
            &Rules,
        )
        .await
        .unwrap();
    assert_eq!(out.acked, vec![0, 20, 0]);
    assert!(matches!(out.sent[0], Ok(SendOutcome::Stored(_))));
    let left = store.mailbox(mb(bob, 1), 0, 100, now).await.unwrap();
    assert_eq!(left.len(), 21, "20 unacked plus the new one");
    assert_eq!(store.ack(mb(bob, 1), &[u64::MAX]).await.unwrap(), 0);

    // Many ids for one mailbox in one batch (more than SQLite's 32,766 parameters).
    let many: Vec<(Mailbox, Vec<u64>)> = (0..40)
        .map(|op| (mb(bob, 1), (1..=1000).map(|i| op * 1000 + i).collect()))
        .collect();
    let out = store.write_batch(&[], &many, &Rules).await.unwrap();
    assert_eq!(out.acked.iter().sum::<u64>(), 21);
    assert!(
        store
            .mailbox(mb(bob, 1), 0, 100, now)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_acks_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
    acks_in_a_batch(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_acks_in_a_batch() {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
    acks_in_a_batch(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
}

/// The audit log in the database: audited actions append their entry in their own
/// transaction (and a refused action appends none), entries read back exactly as hashed,
/// the head follows every append, checkpoints are stored, and concurrent appenders never
/// fork the chain.
async fn audit_log(store: Arc<dyn Store>) {
    use crate::audit::{Action, AuditKey, Detail, Head, Outcome, chain};

    store.migrate().await.unwrap();
    let now = Timestamp(1_000);
    assert_eq!(store.audit_head().await.unwrap(), Head::EMPTY);
    assert!(store.audit_entries(0, 10).await.unwrap().is_empty());
    assert!(store.last_checkpoint().await.unwrap().is_none());

    let event = |action| Event::new(action, Outcome::Success);
    store
        .create_invite(
            SecretHash::from_bytes([1; 32]),
            None,
            1,
            now,
            &event(Action::InviteCreate).detail(Detail::Via, "host"),
        )
        .await
        .unwrap();
    let register = event(Action::AccountRegister)
        .actor("alice")
        .target("alice")
        .source("192.0.2.7");
    let alice = store
        .create_account(
            "alice",
            Some(SecretHash::from_bytes([1; 32])),
            device(0),
            now,
            &register,
        )
        .await
        .unwrap();
    // Refused actions roll back with their entries.
    assert!(matches!(
        store
            .create_account(
                "bob",
                Some(SecretHash::from_bytes([1; 32])),
                device(0),
                now,
                &register,
            )
            .await,
        Err(StoreError::InviteInvalid)
    ));
    assert!(matches!(
        store
            .create_account("alice", None, device(0), now, &register)
            .await,
        Err(StoreError::UsernameTaken)
    ));
    assert!(matches!(
        store
            .remove_device(mb(alice, 1), now, &event(Action::DeviceRemove))
            .await,
        Err(StoreError::LastDevice)
    ));
    let added = store
        .add_device(alice, device(0), 5, now, &event(Action::DeviceAdd))
        .await
        .unwrap();
    let remove = event(Action::DeviceRemove).actor("alice").device(added.0);
    assert!(
        store
            .remove_device(mb(alice, added.0), now, &remove)
            .await
            .unwrap()
    );
    // Removing it again removes nothing and records nothing.
    assert!(
        !store
            .remove_device(mb(alice, added.0), now, &remove)
            .await
            .unwrap()
    );
    store
        .delete_account(alice, Timestamp(2_000), &event(Action::AccountDelete))
        .await
        .unwrap();

    let entries = store.audit_entries(0, 100).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "invite-create",
            "account-register",
            "device-add",
            "device-remove",
            "account-delete"
        ]
    );
    assert_eq!(entries[1].source_ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(
        entries[2].target_device,
        Some(added.0),
        "the store fills it in"
    );
    assert_eq!(
        entries[0].details.get("via").map(String::as_str),
        Some("host")
    );
    assert_eq!(entries[4].time_ms, 2_000);
    let head = chain::verify(&entries, vec![]).unwrap();
    assert_eq!(store.audit_head().await.unwrap(), head);
    // Paged.
    let page = store.audit_entries(2, 2).await.unwrap();
    assert_eq!(page, entries[2..4].to_vec());

    // A standalone entry, and a checkpoint stored with its own entry.
    let appended = store
        .append_audit(&event(Action::ConfigReload), now)
        .await
        .unwrap();
    assert_eq!(appended.seq, 6);
    assert_eq!(appended.prev_hash, head.hash);
    let key = AuditKey::from_seed(&[7; 32]);
    let checkpoint = key.checkpoint(Head::of(&appended), 3_000);
    let entry = store
        .put_checkpoint(
            &checkpoint,
            &event(Action::AuditCheckpoint).detail(Detail::ToSeq, 6),
            now,
        )
        .await
        .unwrap();
    assert_eq!(entry.seq, 7);
    let stored = store.last_checkpoint().await.unwrap().unwrap();
    assert_eq!(stored, checkpoint);
    assert_eq!(stored.verify(&key.public()).unwrap(), Head::of(&appended));

    // Concurrent appenders serialize on the head row: no two entries share a number or a
    // predecessor, and the chain stays whole.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let user = format!("user{i}");
                store
                    .create_account(
                        &user,
                        None,
                        device(0),
                        now,
                        &event(Action::AccountRegister).target(&user),
                    )
                    .await
                    .unwrap();
                store
                    .append_audit(&event(Action::RateLimitTrip), now)
                    .await
                    .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.audit_entries(0, 1000).await.unwrap();
    assert_eq!(all.len(), 7 + 32);
    let head = chain::verify(&all, vec![Head::of(&appended)]).unwrap();
    assert_eq!(store.audit_head().await.unwrap(), head);
    store.close().await;
}

#[tokio::test]
async fn sqlite_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
    audit_log(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_audit_log() {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
    audit_log(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
}

/// Administration: invites with use counts, expiry and revocation; roles; disabling
/// (authentication sees it, no device is added, revocations are recorded in order);
/// per-account limits; the administrator's listing, search and last-seen times.
async fn administration(store: Arc<dyn Store>) {
    use crate::store::RevocationKind;
    use tacit_api::{Role, SetQuotaRequest};
    store.migrate().await.unwrap();
    let now = Timestamp(10_000);
    let hash = |b: u8| SecretHash::from_bytes([b; 32]);

    // An invite for two registrations, one that expires, one revoked.
    store
        .create_invite(hash(1), None, 2, now, &ev())
        .await
        .unwrap();
    store
        .create_invite(hash(2), Some(Timestamp(now.0 + 5)), 5, now, &ev())
        .await
        .unwrap();
    store
        .create_invite(hash(3), None, 5, now, &ev())
        .await
        .unwrap();
    assert!(store.revoke_invite(hash(3), now, &ev()).await.unwrap());
    assert!(
        !store.revoke_invite(hash(3), now, &ev()).await.unwrap(),
        "once"
    );
    let alice = store
        .create_account("alice", Some(hash(1)), device(3), now, &ev())
        .await
        .unwrap();
    let bob = store
        .create_account("bob_b", Some(hash(1)), device(3), now, &ev())
        .await
        .unwrap();
    for (name, invite, at) in [
        ("carol", 1, now),
        ("carol", 2, Timestamp(now.0 + 5)),
        ("carol", 3, now),
    ] {
        assert!(
            matches!(
                store
                    .create_account(name, Some(hash(invite)), device(1), at, &ev())
                    .await,
                Err(StoreError::InviteInvalid)
            ),
            "invite {invite}: used up, expired or revoked"
        );
    }
    store
        .create_account(
            "carol",
            Some(hash(2)),
            device(1),
            Timestamp(now.0 + 4),
            &ev(),
        )
        .await
        .unwrap();
    let invites = store.invites().await.unwrap();
    let by_id = |b: u8| {
        invites
            .iter()
            .find(|i| i.id == hex::encode([b; 32]))
            .unwrap()
            .clone()
    };
    assert_eq!((by_id(1).uses, by_id(1).max_uses), (2, 2));
    assert_eq!(by_id(2).expires_at, Some(Timestamp(now.0 + 5)));
    assert_eq!(by_id(3).revoked_at, Some(now));

    // Roles: granted once, revoked once.
    assert!(
        store
            .grant_role(alice, Role::Admin, true, now, &ev())
            .await
            .unwrap()
    );
    assert!(
        !store
            .grant_role(alice, Role::Admin, true, now, &ev())
            .await
            .unwrap()
    );
    assert!(
        store
            .grant_role(alice, Role::Auditor, true, now, &ev())
            .await
            .unwrap()
    );
    assert_eq!(
        store.roles(alice).await.unwrap(),
        vec![Role::Admin, Role::Auditor]
    );
    assert!(
        store
            .grant_role(alice, Role::Auditor, false, now, &ev())
            .await
            .unwrap()
    );
    assert!(
        !store
            .grant_role(alice, Role::Auditor, false, now, &ev())
            .await
            .unwrap()
    );
    assert_eq!(store.roles(alice).await.unwrap(), vec![Role::Admin]);
    assert!(store.roles(bob).await.unwrap().is_empty());

    // Disabling: once; authentication sees it; the account takes no device; enabling
    // undoes it; each records a revocation per device, in order.
    let before = store.last_revocation().await.unwrap();
    store
        .add_device(bob, device(0), 10, now, &ev())
        .await
        .unwrap();
    let devices = store.set_disabled(bob, true, now, &ev()).await.unwrap();
    assert_eq!(devices, Some(vec![DeviceId(1), DeviceId(2)]));
    assert_eq!(
        store.set_disabled(bob, true, now, &ev()).await.unwrap(),
        None
    );
    assert!(
        store
            .device_auth(mb(bob, 1))
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(
        !store
            .device_auth(mb(alice, 1))
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(matches!(
        store.add_device(bob, device(0), 10, now, &ev()).await,
        Err(StoreError::AccountGone)
    ));
    assert!(
        matches!(
            store
                .create_account("bob_b", None, device(0), now, &ev())
                .await,
            Err(StoreError::UsernameTaken)
        ),
        "a disabled user's name stays taken"
    );
    assert_eq!(
        store.set_disabled(bob, false, now, &ev()).await.unwrap(),
        Some(vec![DeviceId(1), DeviceId(2)])
    );
    assert!(
        !store
            .device_auth(mb(bob, 1))
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(store.remove_device(mb(bob, 2), now, &ev()).await.unwrap());
    let kinds: Vec<_> = store
        .revocations_after(before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.mailbox.device.0, r.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, RevocationKind::Disable),
            (2, RevocationKind::Disable),
            (1, RevocationKind::Restore),
            (2, RevocationKind::Restore),
            (2, RevocationKind::Revoke),
        ]
    );
    let page = store.revocations_after(before, 2).await.unwrap();
    assert_eq!(page.len(), 2, "paged");
    assert_eq!(
        store.last_revocation().await.unwrap(),
        store
            .revocations_after(before, 100)
            .await
            .unwrap()
            .last()
            .unwrap()
            .id
    );

    // Per-account limits replace the server's, and can be returned to it.
    let one = SetQuotaRequest {
        max_devices: Some(1),
        blob_quota_bytes: Some(10),
    };
    store.set_quota(alice, &one, now, &ev()).await.unwrap();
    assert!(matches!(
        store.add_device(alice, device(0), 10, now, &ev()).await,
        Err(StoreError::TooManyDevices)
    ));
    let blob = |id: u8, size: u64| crate::store::NewBlob {
        id: crate::store::BlobId::from_random(&[id; 32]),
        owner: mb(alice, 1),
        size,
        created_at: now,
        expires_at: Timestamp(now.0 + 1000),
    };
    assert!(matches!(
        store.create_blob(&blob(1, 11), 1_000_000).await,
        Err(StoreError::QuotaExceeded)
    ));
    store.create_blob(&blob(2, 10), 1_000_000).await.unwrap();
    store
        .set_quota(alice, &SetQuotaRequest::default(), now, &ev())
        .await
        .unwrap();
    store
        .add_device(alice, device(0), 10, now, &ev())
        .await
        .unwrap();

    // The administrator's view: search (a `_` is literal), paging, exact name, counts,
    // last seen.
    store
        .touch_devices(&[(mb(alice, 1), Timestamp(now.0 + 7))])
        .await
        .unwrap();
    let all = store.admin_users(None, None, None, 10).await.unwrap();
    let names: Vec<_> = all.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob_b", "carol"]);
    let found = store.admin_users(Some("b_"), None, None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].username, "bob_b");
    assert_eq!(
        store
            .admin_users(Some("o"), None, None, 10)
            .await
            .unwrap()
            .len(),
        2,
        "alice is not matched by `o`"
    );
    assert!(
        store
            .admin_users(Some("%"), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let page = store
        .admin_users(None, None, Some("alice"), 1)
        .await
        .unwrap();
    assert_eq!(page[0].username, "bob_b");
    let alice_view = store
        .admin_users(None, Some("alice"), None, 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(alice_view.roles, vec![Role::Admin]);
    assert_eq!(alice_view.devices.len(), 2);
    let first = &alice_view.devices[0];
    assert_eq!(first.last_seen_at, Some(Timestamp(now.0 + 7)));
    assert_eq!((first.one_time_prekeys, first.one_time_kem_prekeys), (3, 3));
    assert_eq!(first.mailbox_depth, 0);
    assert_eq!(alice_view.devices[1].last_seen_at, None);

    // Deleting an account drops its roles and records a revocation per device.
    let before = store.last_revocation().await.unwrap();
    store.delete_account(alice, now, &ev()).await.unwrap();
    assert_eq!(store.revocations_after(before, 100).await.unwrap().len(), 2);
    assert!(store.roles(alice).await.unwrap().is_empty());
    assert!(
        store
            .admin_users(Some("alice"), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Revocations older than ten minutes are purged with the expired envelopes.
    store
        .purge_expired(Timestamp(now.0 + 11 * 60 * 1000), u32::MAX)
        .await
        .unwrap();
    assert!(store.revocations_after(0, 100).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn sqlite_administration() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
    administration(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_administration() {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
    administration(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
}

/// Sign-in with the identity provider: a token registers once, an identity binds one
/// account, devices record their session, roles follow the groups, used tokens expire.
async fn oidc(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    let login = |hash: u8, sub: &str, sid: &str, roles: Vec<(tacit_api::Role, bool)>| OidcLogin {
        issuer: "https://idp.example".into(),
        subject: sub.into(),
        sid: Some(sid.into()),
        token_hash: [hash; 32],
        token_expires_at: Timestamp(5_000),
        roles,
    };
    let admin = vec![(tacit_api::Role::Admin, true)];
    let alice = store
        .create_oidc_account(
            "alice",
            device(0),
            &login(1, "sub-a", "s1", admin),
            Timestamp(1),
            &ev(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.roles(alice).await.unwrap(),
        vec![tacit_api::Role::Admin]
    );
    // The same token again: replayed, nothing created.
    assert!(matches!(
        store
            .create_oidc_account(
                "alice2",
                device(0),
                &login(1, "sub-x", "s1", vec![]),
                Timestamp(2),
                &ev()
            )
            .await,
        Err(StoreError::TokenReplayed)
    ));
    assert_eq!(store.account_id("alice2").await.unwrap(), None);
    // Another token of the same identity: bound already, named.
    match store
        .create_oidc_account(
            "alice3",
            device(0),
            &login(2, "sub-a", "s1", vec![]),
            Timestamp(2),
            &ev(),
        )
        .await
    {
        Err(StoreError::IdentityBound(name)) => assert_eq!(name, "alice"),
        other => panic!("{other:?}"),
    }
    // A taken name with a new identity.
    assert!(matches!(
        store
            .create_oidc_account(
                "alice",
                device(0),
                &login(3, "sub-b", "s1", vec![]),
                Timestamp(2),
                &ev()
            )
            .await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(
        store
            .oidc_account("https://idp.example", "sub-a")
            .await
            .unwrap(),
        Some((alice, "alice".to_owned()))
    );
    assert_eq!(
        store
            .oidc_account("https://other.example", "sub-a")
            .await
            .unwrap(),
        None
    );

    // A device in another session replaces the account's devices: refused without
    // consent, and then nothing changed and the token is still unused.
    assert!(matches!(
        store
            .add_oidc_device(
                device(0),
                &login(4, "sub-a", "s2", vec![(tacit_api::Role::Admin, false)]),
                10,
                None,
                Timestamp(3),
                &ev()
            )
            .await,
        Err(StoreError::OtherDevices(1))
    ));
    assert_eq!(store.devices(alice).await.unwrap().len(), 1);
    // A link channel device 1 answered (say, by a thief holding it) ...
    let channel = answered_channel(&*store, 9, alice, Timestamp(3)).await;
    let revoked_before = store.last_revocation().await.unwrap();
    let audit_before = store.audit_head().await.unwrap().seq;
    // With consent (the same token): the groups no longer give admin, device 1 is gone
    // and revoked, and both changes are audited.
    let added = store
        .add_oidc_device(
            device(0),
            &login(4, "sub-a", "s2", vec![(tacit_api::Role::Admin, false)]),
            10,
            Some(&ev()),
            Timestamp(3),
            &ev(),
        )
        .await
        .unwrap();
    assert_eq!(
        (added.account, added.username.as_str(), added.device),
        (alice, "alice", DeviceId(2))
    );
    assert_eq!(added.replaced, vec![DeviceId(1)]);
    assert!(store.roles(alice).await.unwrap().is_empty());
    let left: Vec<DeviceId> = store
        .devices(alice)
        .await
        .unwrap()
        .iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(left, vec![DeviceId(2)]);
    // ... links nothing once the account was recovered.
    assert!(
        store
            .link_device(
                &channel,
                SecretHash::from_bytes([9; 32]),
                device(0),
                10,
                Timestamp(3),
                &ev()
            )
            .await
            .unwrap()
            .is_none()
    );
    let revoked = store.revocations_after(revoked_before, 10).await.unwrap();
    assert_eq!(
        revoked.iter().map(|r| r.mailbox).collect::<Vec<_>>(),
        vec![mb(alice, 1)]
    );
    // One removal and one addition.
    assert_eq!(store.audit_head().await.unwrap().seq, audit_before + 2);
    assert!(matches!(
        store
            .add_oidc_device(
                device(0),
                &login(4, "sub-a", "s2", vec![]),
                10,
                Some(&ev()),
                Timestamp(3),
                &ev()
            )
            .await,
        Err(StoreError::TokenReplayed)
    ));
    assert!(matches!(
        store
            .add_oidc_device(
                device(0),
                &login(5, "sub-nobody", "s2", vec![]),
                10,
                Some(&ev()),
                Timestamp(3),
                &ev()
            )
            .await,
        Err(StoreError::IdentityUnbound)
    ));
    assert_eq!(
        store
            .oidc_session_devices("https://idp.example", "s2")
            .await
            .unwrap(),
        vec![(alice, "alice".to_owned(), DeviceId(2))]
    );
    assert!(
        store
            .oidc_session_devices("https://idp.example", "s1")
            .await
            .unwrap()
            .is_empty()
    );
    // Disabled: no device through the provider either.
    store
        .set_disabled(alice, true, Timestamp(4), &ev())
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_oidc_device(
                device(0),
                &login(7, "sub-a", "s3", vec![]),
                10,
                Some(&ev()),
                Timestamp(4),
                &ev()
            )
            .await,
        Err(StoreError::AccountDisabled)
    ));
    store
        .set_disabled(alice, false, Timestamp(4), &ev())
        .await
        .unwrap();

    // Logout tokens' replay keys.
    assert!(
        store
            .use_oidc_token(&[8; 32], Timestamp(5_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_oidc_token(&[8; 32], Timestamp(5_000))
            .await
            .unwrap()
    );
    // Expired entries go with the housekeeping, and the key is usable again after.
    store
        .purge_expired(Timestamp(5_000), u32::MAX)
        .await
        .unwrap();
    assert!(
        store
            .use_oidc_token(&[8; 32], Timestamp(9_000))
            .await
            .unwrap()
    );

    // Deleting the account frees the identity.
    store
        .delete_account(alice, Timestamp(6), &ev())
        .await
        .unwrap();
    assert_eq!(
        store
            .oidc_account("https://idp.example", "sub-a")
            .await
            .unwrap(),
        None
    );
    store
        .create_oidc_account(
            "alice",
            device(0),
            &login(9, "sub-a", "s9", vec![]),
            Timestamp(7),
            &ev(),
        )
        .await
        .unwrap();
    store.close().await;
}

#[tokio::test]
async fn sqlite_oidc() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
    oidc(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_oidc() {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
    oidc(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
}

async fn scim(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    let user = |id: &str, name: &str, at: i64| ScimUser {
        id: id.into(),
        username: name.into(),
        external_id: Some(format!("ext-{name}")),
        active: true,
        display_name: None,
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
    };
    let alice = user("id-a", "alice", 1);
    store.create_scim_user(&alice, &ev()).await.unwrap();
    store
        .create_scim_user(&user("id-b", "bob", 2), &ev())
        .await
        .unwrap();
    // A second user of one name is refused, and nothing of it is written.
    let audited = store.audit_head().await.unwrap();
    assert!(matches!(
        store
            .create_scim_user(&user("id-c", "alice", 3), &ev())
            .await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(store.audit_head().await.unwrap(), audited);
    assert_eq!(
        store.scim_user(Some("id-a"), None).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store
            .scim_user(None, Some("bob"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "id-b"
    );
    assert_eq!(store.scim_user(Some("id-x"), None).await.unwrap(), None);

    let (total, all) = store.scim_users(None, None, 0, 10).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        all.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    let (total, page) = store.scim_users(None, None, 1, 10).await.unwrap();
    assert_eq!((total, page.len()), (2, 1));
    assert_eq!(page[0].username, "bob");
    let (total, found) = store.scim_users(Some("bob"), None, 0, 10).await.unwrap();
    assert_eq!((total, found[0].id.as_str()), (1, "id-b"));
    let (total, found) = store
        .scim_users(None, Some("ext-alice"), 0, 10)
        .await
        .unwrap();
    assert_eq!((total, found[0].id.as_str()), (1, "id-a"));
    let (total, found) = store.scim_users(Some("carol"), None, 0, 10).await.unwrap();
    assert_eq!((total, found.len()), (0, 0));

    let mut changed = alice.clone();
    changed.active = false;
    changed.display_name = Some("Alice A".into());
    changed.external_id = None;
    changed.updated_at = Timestamp(9);
    assert!(store.update_scim_user(&changed, &ev()).await.unwrap());
    assert_eq!(
        store.scim_user(Some("id-a"), None).await.unwrap(),
        Some(changed.clone())
    );
    let mut missing = changed.clone();
    missing.id = "id-x".into();
    assert!(!store.update_scim_user(&missing, &ev()).await.unwrap());

    let before = store.audit_head().await.unwrap();
    assert!(
        store
            .delete_scim_user("id-a", Timestamp(10), &ev())
            .await
            .unwrap()
    );
    assert_ne!(store.audit_head().await.unwrap(), before);
    assert!(
        !store
            .delete_scim_user("id-a", Timestamp(11), &ev())
            .await
            .unwrap()
    );
    assert_eq!(store.scim_user(Some("id-a"), None).await.unwrap(), None);
    // The name can be provisioned again.
    store
        .create_scim_user(&user("id-d", "alice", 12), &ev())
        .await
        .unwrap();
    store.close().await;
}

#[tokio::test]
async fn sqlite_scim() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
    scim(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_scim() {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
    scim(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
}

/// The devices whose one-time prekey stock is under the low-water mark, per kind: one
/// claim takes a device from the mark to under it; a device with none at all is low.
async fn prekey_stock(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    let now = Timestamp(1_000);
    let water = u32::try_from(tacit_api::PREKEY_LOW_WATER).unwrap();
    let full = store
        .create_account("full", None, device(water), now, &ev())
        .await
        .unwrap();
    store
        .create_account("empty", None, device(0), now, &ev())
        .await
        .unwrap();
    store
        .create_account("plenty", None, device(water + 5), now, &ev())
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.devices, 3);
    assert_eq!(stats.devices_low_one_time_prekeys, 1, "only empty");
    assert_eq!(stats.devices_low_one_time_kem_prekeys, 1, "only empty");
    // One claim takes one key of each kind: full drops under the mark.
    assert!(store.claim_bundle(mb(full, 1)).await.unwrap().is_some());
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.devices_low_one_time_prekeys, 2);
    assert_eq!(stats.devices_low_one_time_kem_prekeys, 2);
    assert_eq!(
        stats.one_time_prekeys,
        u64::from(water - 1 + water + 5),
        "full's and plenty's"
    );
    // After a restore, every unclaimed one-time prekey goes, audited with the count, and
    // every device counts as seen then (no device of an old snapshot is idle).
    assert_eq!(
        store
            .idle_devices(Timestamp(now.0 + 1), 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let restore = Event::new(
        crate::audit::Action::BackupRestore,
        crate::audit::Outcome::Success,
    );
    let both = 2 * u64::from(water - 1 + water + 5);
    assert_eq!(
        store
            .after_restore(&restore, Timestamp(now.0 + 5_000))
            .await
            .unwrap(),
        both
    );
    let bundle = store.claim_bundle(mb(full, 1)).await.unwrap().unwrap();
    assert!(bundle.one_time_prekey.is_none() && bundle.kem_prekey_is_last_resort);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.one_time_prekeys + stats.one_time_kem_prekeys, 0);
    assert_eq!(stats.devices_low_one_time_prekeys, 3);
    assert!(
        store
            .idle_devices(Timestamp(now.0 + 1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let last = store.audit_entries(0, 100).await.unwrap().pop().unwrap();
    assert_eq!(last.action, "backup-restore");
    assert_eq!(last.details["count"], both.to_string());
}

#[tokio::test]
async fn sqlite_prekey_stock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
    prekey_stock(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_prekey_stock() {
    let db = TestDatabase::create()
        .await
        .expect("PostgreSQL from TACIT_TEST_DATABASE_URL must be reachable");
    prekey_stock(Arc::new(PostgresStore::connect(&db.url).await.unwrap())).await;
}
