//! The client: registration, prekey upkeep, sessions per remote device, send and receive.
//!
//! Sessions follow Sesame: one active session per remote device, created from a claimed
//! bundle on first send; a prekey message that starts a new session makes that session the
//! active one. A send goes to every device of the recipient and to the sender's other
//! devices in one request; when the server answers that the device set is out of date, the
//! client drops stale devices, sets up sessions with missing ones and retries with the same
//! client message id, so a retried send is never delivered twice. Those answers, device
//! lists and bundles are claims checked against what the client knows: one naming anyone
//! but the recipient or our own account fails with [`ClientError::ServerClaimRefused`].
//!
//! Contacts are pinned on first use. When a contact's identity key changes, sends to them
//! fail with [`ClientError::IdentityChanged`] until [`Client::trust`] accepts the new key.
//!
//! One file per concern: `admin` (the administration API, display data only), `error`, `register` (accounts, prekey upkeep), `sessions` (which session
//! to use, bundles, identity checks), `send`, `receive`, `disappearing` (timers per conversation), `trust` (safety numbers), `link`
//! (device linking), `payload` (the plaintext inside a pairwise message), `groups`.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tacit_api as api;
use tacit_crypto::provision::{
    self, LinkSecret, ProvisionError, ProvisioningKeyPair, ProvisioningPublicKey,
};
use tacit_crypto::{
    Address, DecryptError, IdentityKey, IdentityKeyPair, KemPreKey, KemPreKeyKind, KemPreKeyPair,
    Message, OneTimePreKey, OneTimePreKeyPair, PreKeyBundle, PreKeyId, ResponderKeys, SafetyNumber,
    Session, SetupError, SignedPreKey, SignedPreKeyPair,
};
use thiserror::Error;
use zeroize::Zeroizing;

mod admin;
mod disappearing;
mod error;
mod files;
mod groups;
mod link;
mod payload;
mod receive;
mod register;
mod send;
mod sessions;
mod trust;

pub use admin::Admin;
pub use disappearing::{MAX_TIMER_SECS, Timer, describe as describe_duration, parse_duration};
pub use error::{BadKey, ClientError, GroupError, Inconsistent, LinkError, ServerClaim};
pub use link::{LINK_CODE_CHARS, LinkPreview, PendingLink, identity_fingerprint};
pub(crate) use payload::{Content, Payload};

pub use groups::{GroupChange, GroupInfo};

use crate::store::{
    Conversation, KeySource, MessageStatus, PreKeyStore, PrekeyKind, SessionStore, SessionWrite,
    Store, StoreError, StoredSession,
};
use crate::transport::{Socket, Transport, TransportError};
use tacit_api::DeviceId;
use tacit_crypto::GroupId;

/// One-time prekeys of each kind uploaded at registration and kept in stock after.
pub const PREKEY_BATCH: u32 = 50;
/// Below this many one-time prekeys left on the server, the client uploads a new batch.
pub use tacit_api::PREKEY_LOW_WATER;
/// How many times a send is retried after the server reports a changed device set.
const SEND_ATTEMPTS: usize = 4;

/// What the client persists about its account (sealed in the store).
#[derive(Serialize, Deserialize)]
struct AccountRecord {
    server: String,
    username: String,
    device: DeviceId,
    credential: String,
    next_one_time_id: u32,
    next_kem_id: u32,
    /// The current signed prekey and when it was made (ms since the epoch).
    #[serde(default = "first_id")]
    signed_prekey_id: u32,
    #[serde(default)]
    signed_prekey_at: i64,
    /// The current last-resort ML-KEM prekey.
    #[serde(default = "first_id")]
    kem_last_resort_id: u32,
    /// The one it replaced, kept for one more rotation period.
    #[serde(default)]
    previous_kem_last_resort_id: Option<u32>,
}

fn first_id() -> u32 {
    1
}

/// How often the signed prekey and the last-resort KEM prekey are replaced. The previous
/// ones are kept for one more period, for messages made from bundles claimed before.
pub const SIGNED_PREKEY_ROTATION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 60 * 60);

/// What a receipt says happened.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// A device of the recipient stored the messages.
    Delivered,
    /// The recipient read them.
    Read,
}

/// What the account identity travels in, sealed to a new device (see SECURITY.md,
/// "Linking a device").
#[derive(Serialize, Deserialize)]
struct LinkPayload {
    v: u8,
    username: String,
    /// [`IdentityKeyPair::to_secret_bytes`].
    identity: Vec<u8>,
    link_token: String,
    /// The pinned contacts, so that the new device trusts what this one trusts.
    contacts: Vec<LinkContact>,
}

#[derive(Serialize, Deserialize)]
struct LinkContact {
    username: String,
    identity_key: Vec<u8>,
    verified: bool,
}

impl Drop for LinkPayload {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.identity.zeroize();
        self.link_token.zeroize();
    }
}

/// Something that arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incoming {
    /// The sending user.
    pub sender: String,
    /// The sending device.
    pub sender_device: DeviceId,
    /// When the sender says it sent this (its own clock, from inside the encrypted message),
    /// milliseconds since the Unix epoch. For what carries no such time (a receipt, a group
    /// update, a message that failed, a message from a client before sender times), the
    /// server's time of the envelope: the server's claim, which it can set as it likes.
    pub time: i64,
    /// What it is.
    #[serde(flatten)]
    pub kind: IncomingKind,
}

/// The kinds of [`Incoming`] events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IncomingKind {
    /// A text message in the conversation with `peer` (the sender, or for a copy of our own
    /// message sent from another of our devices, its recipient).
    Text {
        /// The conversation's other party.
        peer: String,
        /// The text.
        text: String,
        /// The sender's id of the message (what receipts name).
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// A receipt for our messages to `peer`.
    Receipt {
        /// The conversation's other party (who sent the receipt).
        peer: String,
        /// Delivered or read.
        receipt: ReceiptKind,
        /// The ids of our messages it names.
        message_ids: Vec<String>,
    },
    /// A text message in a group.
    GroupText {
        /// The group's name.
        group: String,
        /// The group's id.
        group_id: GroupId,
        /// The text.
        text: String,
        /// The sender's id of the message.
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// A file in a conversation: its descriptor is stored; fetch, check and save it with
    /// [`Client::download_file`].
    File {
        /// The conversation's other party, or for a group `group <name>`, as shown.
        peer: String,
        /// The conversation the file is in (not serialized: `peer` says it for the user).
        #[serde(skip)]
        conversation: Conversation,
        /// The file's name as the sender gave it, made safe to save
        /// ([`crate::files::sanitize_file_name`]).
        name: String,
        /// The file's size in bytes.
        size: u64,
        /// The blob's id on the server (what [`Client::download_file`] takes).
        blob_id: String,
        /// The sender's id of the message.
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// A change to a group's membership, accepted after checking who made it.
    GroupUpdate {
        /// The group's name.
        group: String,
        /// The group's id.
        group_id: GroupId,
        /// What kind of change.
        change: GroupChange,
        /// A sentence for the user.
        description: String,
    },
    /// The conversation's disappearing-message timer was changed (by the sender).
    Timer {
        /// The conversation's other party, or for a group `group <name>`, as shown.
        peer: String,
        /// Seconds a message now lives; 0: off.
        seconds: u64,
    },
    /// A disappearing message whose time ran out before it arrived here (this device was
    /// offline): acknowledged and not kept.
    Expired {
        /// The conversation's other party, or for a group `group <name>`, as shown.
        peer: String,
    },
    /// A message that could not be decrypted; it is acknowledged and dropped.
    Failed {
        /// Why.
        error: String,
    },
}

/// What [`Client::on_frame`] made of one WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketEvent {
    /// Something arrived (already stored and acknowledged).
    Incoming(Incoming),
    /// Everything that waited at connect time has been pushed.
    CaughtUp,
    /// A frame with nothing for the app (a pong, a server notice).
    Nothing,
}

/// A Tacit account on one device.
pub struct Client {
    pub(crate) store: Store,
    pub(crate) transport: Transport,
    identity: IdentityKeyPair,
    account: AccountRecord,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("username", &self.account.username)
            .field("device", &self.account.device)
            .finish_non_exhaustive()
    }
}

pub(crate) fn rng() -> StdRng {
    rand::make_rng()
}

fn bad_bundle(username: &str, reason: impl Into<BadKey>) -> ClientError {
    ClientError::BadBundle {
        username: username.to_owned(),
        reason: reason.into(),
    }
}

impl AccountRecord {
    fn new(server: &str, username: &str) -> Self {
        Self {
            server: server.to_owned(),
            username: username.to_owned(),
            device: DeviceId(0),
            credential: String::new(),
            next_one_time_id: 1,
            next_kem_id: 2,
            signed_prekey_id: 1,
            signed_prekey_at: now_ms(),
            kem_last_resort_id: 1,
            previous_kem_last_resort_id: None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A random id: 16 bytes in hex.
pub(crate) fn random_id() -> Result<String, ClientError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(Inconsistent::from)?;
    Ok(hex::encode(bytes))
}

/// A client that never reaches a server, for unit tests of what a client does with what it
/// receives (nothing they call sends anything).
#[cfg(test)]
pub(crate) async fn offline_client(dir: &Path, username: &str) -> Client {
    let store = Store::open(
        &dir.join("store.db"),
        KeySource::Key(crate::store::StoreKey::from_bytes([7; 32])),
    )
    .await
    .unwrap();
    let transport =
        Transport::new("http://127.0.0.1:9", &crate::transport::Trust::SystemRoots).unwrap();
    let mut account = AccountRecord::new(transport.base_url(), username);
    account.device = DeviceId(1);
    Client {
        store,
        transport,
        identity: IdentityKeyPair::generate(&mut rng()),
        account,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bob's device: his keys, and Alice's store holding his pin and a session to him (as
    /// after a first send).
    struct Bob {
        identity: IdentityKeyPair,
        signed: SignedPreKeyPair,
        kem: KemPreKeyPair,
        session: Option<Session>,
    }

    impl Bob {
        async fn with_session_from(alice: &Client) -> Self {
            let mut rng = rng();
            let identity = IdentityKeyPair::generate(&mut rng);
            let signed = identity.generate_signed_prekey(&mut rng, PreKeyId(1));
            let kem =
                identity.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
            let bundle = PreKeyBundle {
                identity: identity.public().clone(),
                signed_prekey: signed.public(),
                one_time_prekey: None,
                kem_prekey: kem.public().clone(),
            };
            let local = Client::address("alice", DeviceId(1)).unwrap();
            let remote = Client::address("bob", DeviceId(1)).unwrap();
            let session =
                Session::initiate(&mut rng, &alice.identity, &local, &remote, &bundle).unwrap();
            alice
                .store
                .pin_contact("bob", &identity.public().to_bytes())
                .await
                .unwrap();
            alice
                .store
                .save_session(
                    "bob",
                    DeviceId(1),
                    session.base_key(),
                    &session.to_bytes(),
                    true,
                )
                .await
                .unwrap();
            Self {
                identity,
                signed,
                kem,
                session: None,
            }
        }

        /// Opens one of Alice's messages.
        fn open(&mut self, alice: &Client, ciphertext: &[u8]) -> Result<Vec<u8>, String> {
            let mut rng = rng();
            let message = Message::from_bytes(ciphertext).map_err(|e| e.to_string())?;
            if let Some(session) = &mut self.session {
                return session
                    .decrypt(&mut rng, &message)
                    .map_err(|e| e.to_string());
            }
            let Message::PreKey(first) = &message else {
                return Err("the first message is not a prekey message".into());
            };
            let keys = ResponderKeys {
                identity: &self.identity,
                signed_prekey: &self.signed,
                one_time_prekey: None,
                kem_prekey: &self.kem,
            };
            let local = Client::address("bob", DeviceId(1)).unwrap();
            let remote = Client::address(alice.username(), DeviceId(1)).unwrap();
            let (session, plaintext) = Session::accept(&mut rng, keys, &local, &remote, first)
                .map_err(|e| e.to_string())?;
            self.session = Some(session);
            Ok(plaintext)
        }
    }

    /// Many encryptions to one device at once, by tasks sharing the store (as two processes
    /// past the lock file would share the file), never put two messages under one message
    /// key: the load, the encryption and the save of the advanced session are one store
    /// transaction. Every ciphertext opens at the peer, and each once.
    #[tokio::test]
    async fn concurrent_sends_never_reuse_a_message_key() {
        const SENDS: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let alice = offline_client(dir.path(), "alice").await;
        let mut bob = Bob::with_session_from(&alice).await;
        let devices = BTreeSet::from([DeviceId(1)]);
        let sends = (0..SENDS).map(|i| {
            let (alice, devices) = (&alice, &devices);
            async move {
                alice
                    .encrypt_for("bob", devices, format!("message {i}").as_bytes())
                    .await
                    .unwrap()
            }
        });
        let ciphertexts: Vec<_> = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(ciphertexts.len(), SENDS);
        let mut opened = BTreeSet::new();
        for ciphertext in &ciphertexts {
            let plaintext = bob
                .open(&alice, ciphertext.ciphertext.0.as_slice())
                .unwrap_or_else(|e| panic!("a message did not open ({e}): a reused key"));
            assert!(opened.insert(plaintext), "one plaintext twice");
        }
        assert_eq!(opened.len(), SENDS, "every message opened, each once");
    }

    /// The server names who sent an envelope. A name no account can have is refused before
    /// anything is decrypted or stored: `group:<id>` would otherwise be kept, and read back,
    /// as that group's conversation.
    #[tokio::test]
    async fn a_sender_that_is_not_a_username_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut alice = offline_client(dir.path(), "alice").await;
        let group = GroupId([0x11; 16]);
        let envelope = api::Envelope {
            id: 1,
            sender: Conversation::Group(group).key(),
            sender_device: DeviceId(1),
            server_timestamp: api::Timestamp(0),
            ciphertext: api::Ciphertext(vec![4, 1, 2, 3].into()),
        };
        let event = alice.process_envelope(&envelope).await.unwrap().unwrap();
        match event.kind {
            IncomingKind::Failed { error } => {
                assert!(error.contains("not a username"), "{error}");
            }
            other => panic!("accepted: {other:?}"),
        }
        let history = alice
            .store
            .history(&Conversation::Group(group))
            .await
            .unwrap();
        assert!(history.is_empty(), "{history:?}");
    }

    /// A session row put back to an older sealed copy of itself would make the next send
    /// reuse a message key: the client refuses the row as rolled back and sends nothing.
    #[tokio::test]
    async fn a_rolled_back_session_is_refused_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let alice = offline_client(dir.path(), "alice").await;
        let mut bob = Bob::with_session_from(&alice).await;
        let devices = BTreeSet::from([DeviceId(1)]);
        let first = alice.encrypt_for("bob", &devices, b"one").await.unwrap();
        let older = alice.store.raw_session_row("bob", 1).await;
        let second = alice.encrypt_for("bob", &devices, b"two").await.unwrap();
        alice.store.put_raw_session_row("bob", 1, &older).await;
        let err = alice
            .encrypt_for("bob", &devices, b"three")
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Store(StoreError::RolledBack(_))),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("is not what this device last wrote"),
            "{err}"
        );
        for (ciphertext, text) in [(&first, b"one"), (&second, b"two")] {
            let opened = bob.open(&alice, ciphertext[0].ciphertext.0.as_slice());
            assert_eq!(opened.unwrap(), text);
        }
    }

    /// `safety-number` shows the changed key when there is one; `verify` must apply to that
    /// key, not mark the old one verified.
    #[tokio::test]
    async fn verify_applies_to_the_key_the_safety_number_shows() {
        let dir = tempfile::tempdir().unwrap();
        let bob = offline_client(dir.path(), "bob").await;
        let old = IdentityKeyPair::generate(&mut rng());
        let new = IdentityKeyPair::generate(&mut rng());
        bob.store
            .pin_contact("alice", &old.public().to_bytes())
            .await
            .unwrap();
        bob.store
            .record_changed_identity("alice", &new.public().to_bytes())
            .await
            .unwrap();
        let shown = bob.safety_number("alice").await.unwrap();
        bob.verify("alice").await.unwrap();
        let contact = bob.store.contact("alice").await.unwrap().unwrap();
        assert_eq!(
            contact.identity_key,
            new.public().to_bytes(),
            "the verified key is the one that was shown"
        );
        assert!(contact.verified);
        assert!(contact.changed_identity_key.is_none());
        assert_eq!(
            bob.safety_number("alice").await.unwrap().displayable(),
            shown.displayable()
        );
    }
}
