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

mod groups;

pub use groups::{GroupChange, GroupInfo};

use crate::store::{
    KeySource, MessageStatus, PrekeyKind, SessionWrite, Store, StoreError, StoredSession,
};
use crate::transport::{Socket, Transport, TransportError};

/// One-time prekeys of each kind uploaded at registration and kept in stock after.
pub const PREKEY_BATCH: u32 = 50;
/// Below this many one-time prekeys left on the server, the client uploads a new batch.
pub const PREKEY_LOW_WATER: u64 = 20;
/// How many times a send is retried after the server reports a changed device set.
const SEND_ATTEMPTS: usize = 4;

/// Why a client operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store failed (wrong passphrase, damaged file, full disk, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not be reached or refused the request.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The home directory holds no account yet.
    #[error("no account here yet: register first")]
    NotRegistered,
    /// The home directory already holds an account.
    #[error("this home directory already holds the account {0}")]
    AlreadyRegistered(String),
    /// The contact's identity key changed since it was pinned; nothing was sent.
    #[error(
        "{username}'s identity key has changed{}: compare safety numbers, then accept it with `trust`",
        if *.verified { " (they were VERIFIED)" } else { "" }
    )]
    IdentityChanged {
        /// The contact.
        username: String,
        /// Whether the old key had been verified.
        verified: bool,
    },
    /// The user has no devices (or does not exist).
    #[error("{0} has no devices to send to")]
    NoDevices(String),
    /// A prekey bundle or key from the server is malformed or badly signed.
    #[error("bad key material from the server for {username}: {reason}")]
    BadBundle {
        /// Whose bundle.
        username: String,
        /// What was wrong.
        reason: String,
    },
    /// Session setup failed.
    #[error("session setup failed: {0}")]
    Setup(#[from] SetupError),
    /// The device set kept changing while sending.
    #[error("the recipient's devices kept changing; try again")]
    DevicesUnstable,
    /// We have never talked to this user.
    #[error("unknown contact {0}")]
    UnknownContact(String),
    /// The server has no account of this name.
    #[error("no user {0} on this server")]
    UnknownUser(String),
    /// Local state that should be there is missing or unreadable.
    #[error("local state is inconsistent: {0}")]
    Inconsistent(String),
    /// A device of our own account has an identity key that is not the account's: a device
    /// someone else added (or a server that lies). Nothing was sent to it.
    #[error(
        "device {0} of your account has a different identity key; if you did not link it, remove it with `device remove {0}`"
    )]
    ForeignDevice(u32),
    /// Device linking failed.
    #[error("device link failed: {0}")]
    Link(String),
    /// A group operation was refused.
    #[error("{0}")]
    Group(String),
    /// The server claimed something that our own state contradicts (a device of someone
    /// who is not in the conversation, a device list or bundle of another user, ...). The
    /// claim was not acted on; the sentence says what was refused.
    #[error("refused what the server claimed: {0}")]
    ServerClaimRefused(String),
    /// Sending or saving a file failed.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
}

/// What the client persists about its account (sealed in the store).
#[derive(Serialize, Deserialize)]
struct AccountRecord {
    server: String,
    username: String,
    device: u32,
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

/// The plaintext inside every end-to-end encrypted message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    /// Payload format version.
    v: u8,
    /// `"text"` or `"receipt"`.
    kind: String,
    #[serde(default)]
    body: String,
    /// On copies sent to the sender's own other devices: the conversation's other party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// The sender's random id of a text message, named by receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// With `kind = "receipt"`: what happened to which messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receipt: Option<ReceiptBody>,
    /// With `kind = "file"`: the file and how to fetch and open it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<crate::files::FileDescriptor>,
    /// With texts and files: when the sender sent it (its clock, milliseconds since the
    /// Unix epoch). Shown instead of the server's time, which is only the server's claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct ReceiptBody {
    status: ReceiptKind,
    ids: Vec<String>,
}

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
    pub sender_device: u32,
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
        group_id: String,
        /// The text.
        text: String,
        /// The sender's id of the message.
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// A file in the conversation with `peer`: its descriptor is stored; fetch, check and
    /// save it with [`Client::download_file`].
    File {
        /// The conversation's other party.
        peer: String,
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
        group_id: String,
        /// What kind of change.
        change: GroupChange,
        /// A sentence for the user.
        description: String,
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

fn bad_bundle(username: &str, reason: impl std::fmt::Display) -> ClientError {
    ClientError::BadBundle {
        username: username.to_owned(),
        reason: reason.to_string(),
    }
}

impl AccountRecord {
    fn new(server: &str, username: &str) -> Self {
        Self {
            server: server.to_owned(),
            username: username.to_owned(),
            device: 0,
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
    getrandom::fill(&mut bytes).map_err(|e| ClientError::Inconsistent(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Client {
    /// Makes a device's key set for `identity`: the signed prekey, the last-resort KEM
    /// prekey and a first batch of one-time prekeys, with their secrets stored first.
    async fn prepare_device(
        store: &Store,
        identity: &IdentityKeyPair,
        account: &mut AccountRecord,
    ) -> Result<api::DeviceKeys, ClientError> {
        let mut rng = rng();
        let signed = identity.generate_signed_prekey(&mut rng, PreKeyId(account.signed_prekey_id));
        let last_resort = identity.generate_kem_prekey(
            &mut rng,
            PreKeyId(account.kem_last_resort_id),
            KemPreKeyKind::LastResort,
        );
        let (one_time, kems) = Self::fresh_prekeys(identity, account);
        store
            .put_prekey(PrekeyKind::Signed, signed.id().0, &signed.to_secret_bytes())
            .await?;
        store
            .put_prekey(
                PrekeyKind::Kem,
                last_resort.id().0,
                &last_resort.to_secret_bytes(),
            )
            .await?;
        Self::store_prekeys(store, &one_time, &kems).await?;
        Ok(api::DeviceKeys {
            identity_key: identity.public().to_bytes().into(),
            signed_prekey: signed_wire(&signed.public()),
            kem_last_resort_prekey: kem_wire(last_resort.public()),
            one_time_prekeys: one_time
                .iter()
                .map(|k| one_time_wire(&k.public()))
                .collect(),
            one_time_kem_prekeys: kems.iter().map(|k| kem_wire(k.public())).collect(),
        })
    }

    /// Registers a new account on `server` and keeps it in the store at `store_path`.
    pub async fn register(
        store_path: &Path,
        key: KeySource<'_>,
        transport: Transport,
        username: &str,
        invite: Option<&str>,
    ) -> Result<Self, ClientError> {
        let store = Store::open(store_path, key).await?;
        if let Some(record) = store.secret("account").await? {
            let record: AccountRecord = serde_json::from_slice(&record)
                .map_err(|e| ClientError::Inconsistent(e.to_string()))?;
            return Err(ClientError::AlreadyRegistered(record.username));
        }
        let identity = IdentityKeyPair::generate(&mut rng());
        let mut account = AccountRecord::new(transport.base_url(), username);
        let keys = Self::prepare_device(&store, &identity, &mut account).await?;
        let response = transport
            .register(&api::RegisterRequest {
                username: username.to_owned(),
                invite: invite.map(str::to_owned),
                device_name: None,
                keys,
            })
            .await?;
        account.device = response.device_id.0;
        account.credential = response.credential.to_string();
        store
            .put_secret("identity", &identity.to_secret_bytes())
            .await?;
        let client = Self {
            transport: transport.with_credential(&account.credential),
            store,
            identity,
            account,
        };
        client.save_account().await?;
        Ok(client)
    }

    /// Opens the account kept in the store at `store_path`.
    pub async fn open(
        store_path: &Path,
        key: KeySource<'_>,
        transport_for: impl FnOnce(&str) -> Result<Transport, TransportError>,
    ) -> Result<Self, ClientError> {
        let store = Store::open(store_path, key).await?;
        let Some(record) = store.secret("account").await? else {
            return Err(ClientError::NotRegistered);
        };
        let account: AccountRecord = serde_json::from_slice(&record)
            .map_err(|e| ClientError::Inconsistent(e.to_string()))?;
        let identity = store
            .secret("identity")
            .await?
            .ok_or_else(|| ClientError::Inconsistent("identity missing".into()))?;
        let identity = IdentityKeyPair::from_secret_bytes(&identity)
            .map_err(|e| ClientError::Inconsistent(e.to_string()))?;
        let transport = transport_for(&account.server)?.with_credential(&account.credential);
        Ok(Self {
            store,
            transport,
            identity,
            account,
        })
    }

    /// Our username.
    pub fn username(&self) -> &str {
        &self.account.username
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.account.device
    }

    /// The account identity's fingerprint ([`identity_fingerprint`]): what a device being
    /// linked shows before it joins.
    pub fn fingerprint(&self) -> String {
        identity_fingerprint(self.identity.public())
    }

    /// The local store (history, contacts).
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn save_account(&self) -> Result<(), ClientError> {
        let record = Zeroizing::new(
            serde_json::to_vec(&self.account)
                .map_err(|e| ClientError::Inconsistent(e.to_string()))?,
        );
        self.store.put_secret("account", &record).await?;
        Ok(())
    }

    fn fresh_prekeys(
        identity: &IdentityKeyPair,
        account: &mut AccountRecord,
    ) -> (Vec<OneTimePreKeyPair>, Vec<KemPreKeyPair>) {
        let mut rng = rng();
        let one_time = identity.generate_one_time_prekeys(
            &mut rng,
            PreKeyId(account.next_one_time_id),
            PREKEY_BATCH,
        );
        let kems = (0..PREKEY_BATCH)
            .map(|i| {
                identity.generate_kem_prekey(
                    &mut rng,
                    PreKeyId(account.next_kem_id.wrapping_add(i)),
                    KemPreKeyKind::OneTime,
                )
            })
            .collect();
        account.next_one_time_id = account.next_one_time_id.wrapping_add(PREKEY_BATCH);
        account.next_kem_id = account.next_kem_id.wrapping_add(PREKEY_BATCH);
        (one_time, kems)
    }

    async fn store_prekeys(
        store: &Store,
        one_time: &[OneTimePreKeyPair],
        kems: &[KemPreKeyPair],
    ) -> Result<(), ClientError> {
        for key in one_time {
            store
                .put_prekey(PrekeyKind::OneTime, key.id().0, &key.to_secret_bytes())
                .await?;
        }
        for key in kems {
            store
                .put_prekey(PrekeyKind::Kem, key.id().0, &key.to_secret_bytes())
                .await?;
        }
        Ok(())
    }

    /// Uploads a new batch of one-time prekeys when the server's stock runs low.
    /// Returns whether it uploaded.
    pub async fn replenish_prekeys(&mut self) -> Result<bool, ClientError> {
        let count = self.transport.prekey_count().await?;
        if count.one_time_prekeys >= PREKEY_LOW_WATER
            && count.one_time_kem_prekeys >= PREKEY_LOW_WATER
        {
            return Ok(false);
        }
        let (one_time, kems) = Self::fresh_prekeys(&self.identity, &mut self.account);
        // Secrets first, then the counters, then the upload: a crash leaves unused secrets,
        // never published keys without secrets.
        Self::store_prekeys(&self.store, &one_time, &kems).await?;
        self.save_account().await?;
        self.transport
            .upload_keys(&api::UploadKeysRequest {
                one_time_prekeys: one_time
                    .iter()
                    .map(|k| one_time_wire(&k.public()))
                    .collect(),
                one_time_kem_prekeys: kems.iter().map(|k| kem_wire(k.public())).collect(),
                ..Default::default()
            })
            .await?;
        Ok(true)
    }

    fn address(username: &str, device: u32) -> Result<Address, ClientError> {
        Address::new(username, device).map_err(|e| ClientError::Inconsistent(e.to_string()))
    }

    /// Checks `identity` against the pin for `username`, pinning it on first use. A device
    /// of our own account must carry the account identity.
    async fn check_identity(
        &self,
        username: &str,
        device: u32,
        identity: &IdentityKey,
    ) -> Result<(), ClientError> {
        if self.identity_unpinned(username, device, identity).await? {
            self.store
                .pin_contact(username, &identity.to_bytes())
                .await?;
        }
        Ok(())
    }

    /// As [`Self::check_identity`], but pins nothing: returns whether `username` has no pin
    /// yet (the caller pins once what carried the key has authenticated).
    async fn identity_unpinned(
        &self,
        username: &str,
        device: u32,
        identity: &IdentityKey,
    ) -> Result<bool, ClientError> {
        let encoded = identity.to_bytes();
        if username == self.account.username {
            return if encoded == self.identity.public().to_bytes() {
                Ok(false)
            } else {
                Err(ClientError::ForeignDevice(device))
            };
        }
        match self.store.contact(username).await? {
            None => Ok(true),
            Some(contact) if contact.identity_key == encoded => Ok(false),
            Some(contact) => {
                self.store
                    .record_changed_identity(username, &encoded)
                    .await?;
                Err(ClientError::IdentityChanged {
                    username: username.to_owned(),
                    verified: contact.verified,
                })
            }
        }
    }

    /// The devices of `username` the server lists, each checked against the pinned
    /// identity (or, for our own account, the account identity), less this device.
    async fn checked_devices(&self, username: &str) -> Result<BTreeSet<u32>, ClientError> {
        let list = if username == self.account.username {
            self.transport.own_devices().await?
        } else {
            match self.transport.user_devices(username).await {
                Err(TransportError::Api { code, .. }) if code == "not_found" => {
                    return Err(ClientError::UnknownUser(username.to_owned()));
                }
                other => other?,
            }
        };
        if list.username != username {
            return Err(ClientError::ServerClaimRefused(format!(
                "asked for {username}'s devices, the server answered with {}'s",
                list.username
            )));
        }
        let mut devices = BTreeSet::new();
        for device in list.devices {
            let id = device.device_id.0;
            if username == self.account.username && id == self.account.device {
                continue;
            }
            let identity = IdentityKey::from_bytes(device.identity_key.as_slice())
                .map_err(|e| bad_bundle(username, e))?;
            self.check_identity(username, id, &identity).await?;
            devices.insert(id);
        }
        Ok(devices)
    }

    /// The active session with a device, if any.
    async fn active_session(
        &self,
        username: &str,
        device: u32,
    ) -> Result<Option<Session>, ClientError> {
        let sessions = self.store.sessions(username, device).await?;
        match sessions.into_iter().find(|s| s.active) {
            Some(stored) => Session::from_bytes(&stored.state)
                .map(Some)
                .map_err(|e| ClientError::Inconsistent(format!("stored session: {e}"))),
            None => Ok(None),
        }
    }

    /// Sessions for every device in `devices`, claiming bundles for those without one.
    async fn sessions_for(
        &self,
        username: &str,
        devices: &BTreeSet<u32>,
    ) -> Result<Vec<(u32, SessionFor)>, ClientError> {
        let mut sessions = Vec::new();
        let mut missing = Vec::new();
        for &device in devices {
            match self.active_session(username, device).await? {
                Some(session) => {
                    self.check_identity(username, device, session.remote_identity())
                        .await?;
                    sessions.push((device, SessionFor::Stored(*session.base_key())));
                }
                None => missing.push(api::DeviceId(device)),
            }
        }
        if missing.is_empty() {
            return Ok(sessions);
        }
        let bundles = self
            .transport
            .claim_bundles(
                username,
                &api::ClaimBundlesRequest {
                    device_ids: missing.clone(),
                },
            )
            .await?;
        if bundles.username != username {
            return Err(ClientError::ServerClaimRefused(format!(
                "asked for {username}'s bundles, the server answered with {}'s",
                bundles.username
            )));
        }
        let local = Self::address(&self.account.username, self.account.device)?;
        let mut rng = rng();
        let mut claimed = BTreeSet::new();
        for bundle in &bundles.bundles {
            let device = bundle.device_id.0;
            if !missing.contains(&api::DeviceId(device)) || !claimed.insert(device) {
                return Err(ClientError::ServerClaimRefused(format!(
                    "the server answered with a bundle for {username}.{device}, which was not \
                     asked for"
                )));
            }
            let parsed = parse_bundle(username, bundle)?;
            self.check_identity(username, bundle.device_id.0, &parsed.identity)
                .await?;
            let remote = Self::address(username, bundle.device_id.0)?;
            let session = Session::initiate(&mut rng, &self.identity, &local, &remote, &parsed)?;
            sessions.push((bundle.device_id.0, SessionFor::New(Box::new(session))));
        }
        Ok(sessions)
    }

    /// Sends a text message to every device of `username` (and a copy to our other devices).
    /// Returns the message's local id in the history.
    pub async fn send(&mut self, username: &str, text: &str) -> Result<i64, ClientError> {
        let uid = random_id()?;
        let time = now_ms();
        let to_them = Payload::text(text, None, &uid).at(time).to_bytes()?;
        let to_us = Payload::text(text, Some(username), &uid)
            .at(time)
            .to_bytes()?;
        self.send_payload(username, &to_them, &to_us).await?;
        let id = self
            .store
            .add_message(
                username,
                true,
                self.account.device,
                time,
                text.as_bytes(),
                Some(&uid),
            )
            .await?;
        Ok(id)
    }

    /// Sends a receipt for messages from `username` to their devices (and a copy to ours).
    pub async fn send_receipt(
        &mut self,
        username: &str,
        receipt: ReceiptKind,
        message_ids: &[String],
    ) -> Result<(), ClientError> {
        let body = |to: Option<&str>| Payload {
            v: 1,
            kind: "receipt".into(),
            body: String::new(),
            to: to.map(str::to_owned),
            id: None,
            receipt: Some(ReceiptBody {
                status: receipt,
                ids: message_ids.to_vec(),
            }),
            file: None,
            ts: None,
        };
        let to_them = body(None).to_bytes()?;
        let to_us = body(Some(username)).to_bytes()?;
        self.send_payload(username, &to_them, &to_us).await?;
        Ok(())
    }

    /// Marks the unread messages from `username` read and sends them a read receipt.
    /// Returns how many messages it covered.
    pub async fn mark_read(&mut self, username: &str) -> Result<usize, ClientError> {
        let uids = self.store.mark_incoming_read(username).await?;
        if !uids.is_empty() {
            self.send_receipt(username, ReceiptKind::Read, &uids)
                .await?;
        }
        Ok(uids.len())
    }

    /// Encrypts and sends one payload to every device of `username` and a copy to our
    /// other devices, following the server's device-mismatch answers. Returns the server
    /// time of the send.
    pub(crate) async fn send_payload(
        &mut self,
        username: &str,
        to_them: &[u8],
        to_us: &[u8],
    ) -> Result<i64, ClientError> {
        if let Some(contact) = self.store.contact(username).await?
            && contact.changed_identity_key.is_some()
        {
            return Err(ClientError::IdentityChanged {
                username: username.to_owned(),
                verified: contact.verified,
            });
        }
        let client_message_id = random_id()?;
        let me = self.account.username.clone();
        let mut theirs = self.checked_devices(username).await?;
        let mut ours = if username == me {
            BTreeSet::new()
        } else {
            self.checked_devices(&me).await?
        };

        for _ in 0..SEND_ATTEMPTS {
            if theirs.is_empty() {
                return Err(ClientError::NoDevices(username.to_owned()));
            }
            let recipient_devices = self.encrypt_for(username, &theirs, to_them).await?;
            let own_devices = self.encrypt_for(&me, &ours, to_us).await?;
            let request = api::SendMessageRequest {
                client_message_id: client_message_id.clone(),
                recipient: username.to_owned(),
                recipient_devices,
                own_devices,
            };
            match self.transport.send(&request).await {
                Ok(response) => return Ok(response.server_timestamp.0),
                Err(TransportError::DeviceMismatch(mismatch)) => {
                    // Only the recipient's devices and our own may be named; anything else
                    // is refused before any of the answer is used.
                    for address in mismatch.missing.iter().chain(&mismatch.stale) {
                        let named = &address.username;
                        let device = address.device_id.0;
                        if *named != me && named != username {
                            return Err(ClientError::ServerClaimRefused(format!(
                                "the server named {named}.{device} as a device of a message to \
                                 {username}; nothing was sent to {named}"
                            )));
                        }
                        if *named == me && device == self.account.device {
                            return Err(ClientError::ServerClaimRefused(
                                "the server named this device as one to send to; nothing was \
                                 sent"
                                    .into(),
                            ));
                        }
                    }
                    for address in mismatch.stale {
                        let set = if address.username == me {
                            &mut ours
                        } else {
                            &mut theirs
                        };
                        set.remove(&address.device_id.0);
                    }
                    // A new device gets a session from a claimed bundle, whose identity is
                    // checked against the pin (or the account identity) in `sessions_for`.
                    for address in mismatch.missing {
                        let set = if address.username == me {
                            &mut ours
                        } else {
                            &mut theirs
                        };
                        set.insert(address.device_id.0);
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ClientError::DevicesUnstable)
    }

    /// Encrypts `plaintext` for each device, persisting each advanced session before it is
    /// sent (so a key is never used twice, even if the send is retried).
    async fn encrypt_for(
        &self,
        username: &str,
        devices: &BTreeSet<u32>,
        plaintext: &[u8],
    ) -> Result<Vec<api::DeviceCiphertext>, ClientError> {
        let mut out = Vec::with_capacity(devices.len());
        for (device, session) in self.sessions_for(username, devices).await? {
            let ciphertext = match session {
                // A stored session: loaded again, used and saved in one store transaction,
                // so no other writer can encrypt under the state it was loaded in.
                SessionFor::Stored(checked) => {
                    self.store
                        .advance_session(username, device, |stored| {
                            encrypt_active(&stored, &checked, plaintext)
                        })
                        .await??
                }
                // A new session from a bundle: its keys are its own.
                SessionFor::New(mut session) => {
                    let ciphertext = session
                        .encrypt(plaintext)
                        .map_err(|e| ClientError::Inconsistent(e.to_string()))?;
                    self.store
                        .save_session(
                            username,
                            device,
                            session.base_key(),
                            &session.to_bytes(),
                            true,
                        )
                        .await?;
                    ciphertext
                }
            };
            out.push(api::DeviceCiphertext {
                device_id: api::DeviceId(device),
                ciphertext: api::Ciphertext(ciphertext.into()),
            });
        }
        Ok(out)
    }

    /// Fetches what is waiting, decrypts it, stores it, then acknowledges it: nothing is
    /// acknowledged before it is safely in the local store. Then sends delivered receipts
    /// (best effort: a receipt that cannot be sent is dropped, the messages are kept) and
    /// does the prekey upkeep.
    pub async fn receive(&mut self) -> Result<Vec<Incoming>, ClientError> {
        let mut events = Vec::new();
        loop {
            let batch = self.transport.fetch().await?;
            let mut acks = Vec::with_capacity(batch.envelopes.len());
            for envelope in &batch.envelopes {
                match self.handle(envelope).await {
                    Ok(event) => {
                        events.extend(event);
                        acks.push(envelope.id);
                    }
                    Err(error) => {
                        // Acknowledge what is already stored, then stop: the rest waits on
                        // the server until the local problem is fixed.
                        if !acks.is_empty() {
                            self.transport.ack(&api::AckRequest { ids: acks }).await?;
                        }
                        return Err(error);
                    }
                }
            }
            if !acks.is_empty() {
                self.transport.ack(&api::AckRequest { ids: acks }).await?;
            }
            if !batch.more || batch.envelopes.is_empty() {
                break;
            }
        }
        self.send_delivered(&events).await;
        self.maintain().await?;
        Ok(events)
    }

    /// Opens the WebSocket; envelopes then arrive as frames for [`Self::on_frame`].
    pub async fn connect(&mut self) -> Result<Socket, ClientError> {
        Ok(self.transport.connect_socket().await?)
    }

    /// Handles one frame from [`Socket::next_frame`]: an envelope is decrypted, stored,
    /// acknowledged on the socket and answered with a delivered receipt; the end of the
    /// backlog triggers the prekey upkeep.
    pub async fn on_frame(
        &mut self,
        socket: &mut Socket,
        frame: api::ServerFrame,
    ) -> Result<SocketEvent, ClientError> {
        match frame {
            api::ServerFrame::Envelope(envelope) => {
                let event = self.handle(&envelope).await?;
                socket
                    .send(&api::ClientFrame::Ack {
                        ids: vec![envelope.id],
                    })
                    .await?;
                match event {
                    Some(event) => {
                        self.send_delivered(std::slice::from_ref(&event)).await;
                        Ok(SocketEvent::Incoming(event))
                    }
                    None => Ok(SocketEvent::Nothing),
                }
            }
            api::ServerFrame::QueueEmpty => {
                self.maintain().await?;
                Ok(SocketEvent::CaughtUp)
            }
            api::ServerFrame::Pong { .. } | api::ServerFrame::Error(_) => Ok(SocketEvent::Nothing),
        }
    }

    /// Delivered receipts for the text messages among `events`, one per sender.
    async fn send_delivered(&mut self, events: &[Incoming]) {
        let mut by_sender: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for event in events {
            if let IncomingKind::Text {
                message_id: Some(id),
                ..
            } = &event.kind
                && event.sender != self.account.username
            {
                by_sender
                    .entry(event.sender.as_str())
                    .or_default()
                    .push(id.clone());
            }
        }
        for (sender, ids) in by_sender {
            // Best effort: the messages are stored whatever happens to the receipt.
            let _ = self
                .send_receipt(sender, ReceiptKind::Delivered, &ids)
                .await;
        }
    }

    /// Prekey upkeep: replenishes one-time prekeys when the server runs low and rotates the
    /// signed and last-resort prekeys when they are due.
    pub async fn maintain(&mut self) -> Result<(), ClientError> {
        self.replenish_prekeys().await?;
        self.rotate_prekeys_if_older(SIGNED_PREKEY_ROTATION).await?;
        Ok(())
    }

    /// Replaces the signed prekey and the last-resort KEM prekey if they are older than
    /// `max_age` (the previous ones are kept one more period; older ones are deleted).
    /// Returns whether it rotated.
    pub async fn rotate_prekeys_if_older(
        &mut self,
        max_age: std::time::Duration,
    ) -> Result<bool, ClientError> {
        let age_ms = now_ms().saturating_sub(self.account.signed_prekey_at);
        if u128::try_from(age_ms).unwrap_or(0) < max_age.as_millis() {
            return Ok(false);
        }
        let mut rng = rng();
        let (old_signed, old_kem) = (
            self.account.signed_prekey_id,
            self.account.kem_last_resort_id,
        );
        let signed_id = old_signed.wrapping_add(1);
        let kem_id = self.account.next_kem_id;
        let signed = self
            .identity
            .generate_signed_prekey(&mut rng, PreKeyId(signed_id));
        let kem = self.identity.generate_kem_prekey(
            &mut rng,
            PreKeyId(kem_id),
            KemPreKeyKind::LastResort,
        );
        // Secrets first, then the record, then the upload (as in `replenish_prekeys`).
        self.store
            .put_prekey(PrekeyKind::Signed, signed_id, &signed.to_secret_bytes())
            .await?;
        self.store
            .put_prekey(PrekeyKind::Kem, kem_id, &kem.to_secret_bytes())
            .await?;
        self.account.next_kem_id = kem_id.wrapping_add(1);
        self.account.signed_prekey_id = signed_id;
        self.account.kem_last_resort_id = kem_id;
        self.account.signed_prekey_at = now_ms();
        self.save_account().await?;
        self.transport
            .upload_keys(&api::UploadKeysRequest {
                signed_prekey: Some(signed_wire(&signed.public())),
                kem_last_resort_prekey: Some(kem_wire(kem.public())),
                ..Default::default()
            })
            .await?;
        // Keep the ones just replaced; drop every older signed and last-resort prekey.
        self.store
            .delete_prekeys_before(PrekeyKind::Signed, old_signed)
            .await?;
        if let Some(previous) = self.account.previous_kem_last_resort_id.replace(old_kem) {
            self.store.delete_prekey(PrekeyKind::Kem, previous).await?;
        }
        self.save_account().await?;
        Ok(true)
    }

    /// Decrypts, stores and reports an envelope obtained some other way than [`Self::receive`]
    /// or the socket (it is not acknowledged); `None` for an internal message.
    pub async fn process_envelope(
        &mut self,
        envelope: &api::Envelope,
    ) -> Result<Option<Incoming>, ClientError> {
        self.handle(envelope).await
    }

    /// Decrypts, stores and reports one envelope; `None` for an internal message (a sender
    /// key) that the app need not see.
    async fn handle(&mut self, envelope: &api::Envelope) -> Result<Option<Incoming>, ClientError> {
        let sender = envelope.sender.clone();
        let device = envelope.sender_device.0;
        let incoming = |kind| Incoming {
            sender: sender.clone(),
            sender_device: device,
            time: envelope.server_timestamp.0,
            kind,
        };
        let bytes = envelope.ciphertext.0.as_slice();
        if bytes.get(1) == Some(&tacit_crypto::consts::MESSAGE_TYPE_SENDER_KEY) {
            let opened = self
                .open_group_message(&sender, device, bytes, envelope.server_timestamp.0)
                .await?;
            return Ok(Some(match opened {
                Ok((kind, time)) => Incoming {
                    time,
                    ..incoming(kind)
                },
                Err(error) => incoming(IncomingKind::Failed { error }),
            }));
        }
        self.handle_pairwise(envelope).await
    }

    async fn handle_pairwise(
        &mut self,
        envelope: &api::Envelope,
    ) -> Result<Option<Incoming>, ClientError> {
        let sender = envelope.sender.clone();
        let device = envelope.sender_device.0;
        let incoming = |kind| Incoming {
            sender: sender.clone(),
            sender_device: device,
            time: envelope.server_timestamp.0,
            kind,
        };
        let plaintext = match self
            .decrypt(&sender, device, envelope.ciphertext.0.as_slice())
            .await
        {
            Ok(plaintext) => Zeroizing::new(plaintext),
            Err(Failure::Local(error)) => return Err(error),
            Err(Failure::Message(error)) => {
                return Ok(Some(incoming(IncomingKind::Failed { error })));
            }
        };
        let Ok(payload) = serde_json::from_slice::<Payload>(&plaintext) else {
            return Ok(Some(incoming(IncomingKind::Failed {
                error: "unreadable message payload".into(),
            })));
        };
        let outgoing = sender == self.account.username;
        let peer = match (&payload.to, outgoing) {
            (Some(to), true) => to.clone(),
            _ => sender.clone(),
        };
        // The sender's own time, from inside the message; the server's only for a message
        // without one.
        let time = payload.ts.unwrap_or(envelope.server_timestamp.0);
        let incoming = |kind| Incoming {
            sender: sender.clone(),
            sender_device: device,
            time,
            kind,
        };
        match (payload.kind.as_str(), payload.receipt) {
            ("text", _) => {
                self.store
                    .add_message(
                        &peer,
                        outgoing,
                        device,
                        time,
                        payload.body.as_bytes(),
                        payload.id.as_deref(),
                    )
                    .await?;
                Ok(Some(incoming(IncomingKind::Text {
                    peer,
                    text: payload.body,
                    message_id: payload.id,
                })))
            }
            ("file", _) => {
                let kind = self
                    .receive_file(
                        &sender,
                        &peer,
                        outgoing,
                        device,
                        time,
                        payload.id,
                        payload.file,
                    )
                    .await?;
                Ok(Some(incoming(kind)))
            }
            ("receipt", Some(receipt)) => {
                if !outgoing {
                    let status = match receipt.status {
                        ReceiptKind::Delivered => MessageStatus::Delivered,
                        ReceiptKind::Read => MessageStatus::Read,
                    };
                    self.store
                        .mark_outgoing(&peer, &receipt.ids, status)
                        .await?;
                }
                Ok(Some(incoming(IncomingKind::Receipt {
                    peer,
                    receipt: receipt.status,
                    message_ids: receipt.ids,
                })))
            }
            ("group_update", _) => self.on_group_update(&sender, &payload.body, incoming).await,
            ("sender_key", _) => {
                let refused = self.on_sender_key(&sender, device, &payload.body).await?;
                Ok(refused.map(|error| incoming(IncomingKind::Failed { error })))
            }
            (kind, _) => Ok(Some(incoming(IncomingKind::Failed {
                error: format!("unsupported message kind {kind:?} (a newer client?)"),
            }))),
        }
    }

    async fn decrypt(
        &mut self,
        sender: &str,
        device: u32,
        bytes: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let message = Message::from_bytes(bytes)
            .map_err(|e| Failure::Message(format!("malformed message: {e}")))?;
        let mut rng = rng();
        // Each stored session is tried, and the one that opens the message saved, in one
        // store transaction (a decryption advances the state that the next encryption uses).
        let (opened, stored, last_error) = self
            .store
            .advance_session(sender, device, |stored| {
                let mut last_error = None;
                for record in &stored {
                    let mut session = match Session::from_bytes(&record.state) {
                        Ok(session) => session,
                        Err(e) => {
                            let error = ClientError::Inconsistent(format!("stored session: {e}"));
                            return (None, (Some(Err(error)), stored, None));
                        }
                    };
                    match session.decrypt(&mut rng, &message) {
                        Ok(plaintext) => {
                            let write = SessionWrite {
                                base_key: session.base_key().to_vec(),
                                state: session.to_bytes(),
                            };
                            return (Some(write), (Some(Ok(plaintext)), stored, None));
                        }
                        Err(DecryptError::OtherSession) => {}
                        Err(error) => last_error = Some(error),
                    }
                }
                (None, (None, stored, last_error))
            })
            .await
            .map_err(|e| Failure::Local(e.into()))?;
        match opened {
            Some(Ok(plaintext)) => return Ok(plaintext),
            Some(Err(error)) => return Err(Failure::Local(error)),
            None => {}
        }
        let Message::PreKey(first) = &message else {
            return Err(Failure::Message(match last_error {
                Some(error) => format!("could not decrypt: {error}"),
                None => "no session with the sender".into(),
            }));
        };
        if stored.iter().any(|s| s.base_key == first.base_key()) {
            return Err(Failure::Message(format!(
                "could not decrypt: {}",
                last_error.map_or_else(|| "duplicate".into(), |e| e.to_string())
            )));
        }
        // A first contact is pinned only once the message has authenticated (below), so a
        // forged prekey message under some identity pins nothing.
        let unpinned = match self
            .identity_unpinned(sender, device, first.identity())
            .await
        {
            Ok(unpinned) => unpinned,
            Err(error @ (ClientError::IdentityChanged { .. } | ClientError::ForeignDevice(_))) => {
                return Err(Failure::Message(error.to_string()));
            }
            Err(other) => return Err(Failure::Local(other)),
        };
        let load = |e: StoreError| Failure::Local(e.into());
        let signed = self
            .store
            .prekey(PrekeyKind::Signed, first.signed_prekey_id().0)
            .await
            .map_err(load)?;
        let kem = self
            .store
            .prekey(PrekeyKind::Kem, first.kem_prekey_id().0)
            .await
            .map_err(load)?;
        let (Some(signed), Some(kem)) = (signed, kem) else {
            return Err(Failure::Message(
                "message names a prekey this device does not have".into(),
            ));
        };
        let one_time = match first.one_time_prekey_id() {
            Some(id) => match self
                .store
                .prekey(PrekeyKind::OneTime, id.0)
                .await
                .map_err(load)?
            {
                Some(secret) => Some(secret),
                None => {
                    return Err(Failure::Message(
                        "message names a one-time prekey already used".into(),
                    ));
                }
            },
            None => None,
        };
        let inconsistent =
            |e: tacit_crypto::DecodeError| Failure::Local(ClientError::Inconsistent(e.to_string()));
        let signed = SignedPreKeyPair::from_secret_bytes(&signed).map_err(inconsistent)?;
        let kem = KemPreKeyPair::from_secret_bytes(&kem).map_err(inconsistent)?;
        let one_time = one_time
            .map(|secret| OneTimePreKeyPair::from_secret_bytes(&secret))
            .transpose()
            .map_err(inconsistent)?;
        let keys = ResponderKeys {
            identity: &self.identity,
            signed_prekey: &signed,
            one_time_prekey: one_time.as_ref(),
            kem_prekey: &kem,
        };
        let local =
            Self::address(&self.account.username, self.account.device).map_err(Failure::Local)?;
        let remote = Self::address(sender, device).map_err(Failure::Local)?;
        let (session, plaintext) = Session::accept(&mut rng, keys, &local, &remote, first)
            .map_err(|e| Failure::Message(format!("could not set up the session: {e}")))?;
        if unpinned {
            self.store
                .pin_contact(sender, &first.identity().to_bytes())
                .await
                .map_err(load)?;
        }
        self.store
            .save_session(
                sender,
                device,
                session.base_key(),
                &session.to_bytes(),
                true,
            )
            .await
            .map_err(load)?;
        if let Some(one_time) = &one_time {
            self.store
                .delete_prekey(PrekeyKind::OneTime, one_time.id().0)
                .await
                .map_err(load)?;
        }
        if kem.public().kind() == KemPreKeyKind::OneTime {
            self.store
                .delete_prekey(PrekeyKind::Kem, kem.id().0)
                .await
                .map_err(load)?;
        }
        Ok(plaintext)
    }

    /// The safety number with `username`, from the pinned identity.
    pub async fn safety_number(&self, username: &str) -> Result<SafetyNumber, ClientError> {
        let contact = self
            .store
            .contact(username)
            .await?
            .ok_or_else(|| ClientError::UnknownContact(username.to_owned()))?;
        let key = contact
            .changed_identity_key
            .as_deref()
            .unwrap_or(&contact.identity_key);
        let theirs =
            IdentityKey::from_bytes(key).map_err(|e| ClientError::Inconsistent(e.to_string()))?;
        Ok(SafetyNumber::new(
            self.account.username.as_bytes(),
            self.identity.public(),
            username.as_bytes(),
            &theirs,
        ))
    }

    /// Marks a contact verified after comparing safety numbers: the key verified is the one
    /// [`Self::safety_number`] shows. If the contact's identity changed and the change is not
    /// accepted yet, the safety number shown is the new key's, so verifying accepts the new
    /// key (dropping the old sessions, as [`Self::trust`]) and marks it verified. Returns
    /// whether it accepted a changed key.
    pub async fn verify(&self, username: &str) -> Result<bool, ClientError> {
        let contact = self
            .store
            .contact(username)
            .await?
            .ok_or_else(|| ClientError::UnknownContact(username.to_owned()))?;
        let accepted = contact.changed_identity_key.is_some() && self.trust(username).await?;
        if self.store.mark_verified(username).await? {
            Ok(accepted)
        } else {
            Err(ClientError::UnknownContact(username.to_owned()))
        }
    }

    /// Accepts a contact's changed identity key; sessions with their old key are dropped.
    /// Returns whether there was a change to accept.
    pub async fn trust(&self, username: &str) -> Result<bool, ClientError> {
        let accepted = self.store.accept_changed_identity(username).await?;
        if accepted {
            self.store.delete_sessions(username).await?;
        }
        Ok(accepted)
    }

    /// Our account's devices as the server lists them (with their names).
    pub async fn devices(&self) -> Result<Vec<api::DeviceInfo>, ClientError> {
        Ok(self.transport.own_devices().await?.devices)
    }

    /// Removes another device of our account: its credential stops working at once.
    pub async fn remove_device(&self, device: u32) -> Result<(), ClientError> {
        if device == self.account.device {
            return Err(ClientError::Link(
                "this is the device you are using; remove it from another device".into(),
            ));
        }
        self.transport.remove_device(device).await?;
        Ok(())
    }

    /// Deletes the whole account on the server (every device, key and waiting message; the
    /// username becomes free). The local store is left for the caller to delete.
    pub async fn delete_account(self) -> Result<(), ClientError> {
        self.transport.delete_account().await?;
        self.store.close().await;
        Ok(())
    }

    /// Starts linking this (new) device: opens a provisioning channel and returns the link
    /// code to type into an existing device of the account (`approve_link`).
    pub async fn begin_link(transport: Transport) -> Result<PendingLink, ClientError> {
        let keys = ProvisioningKeyPair::generate(&mut rng());
        let opened = transport
            .open_channel(&api::OpenChannelRequest {
                public_key: keys.public().to_bytes().into(),
            })
            .await?;
        let channel = URL_SAFE_NO_PAD
            .decode(&opened.channel)
            .ok()
            .filter(|c| c.len() == LINK_CHANNEL_LEN)
            .ok_or_else(|| ClientError::Link("the server sent a malformed channel id".into()))?;
        // channel id || digest of our key || the link secret, which only the code carries.
        let secret = LinkSecret::generate(&mut rng());
        let mut code_bytes = Zeroizing::new(channel);
        code_bytes.extend_from_slice(&keys.public().digest());
        code_bytes.extend_from_slice(secret.as_bytes());
        Ok(PendingLink {
            code: Zeroizing::new(URL_SAFE_NO_PAD.encode(code_bytes.as_slice())),
            channel: opened.channel,
            expires_at: opened.expires_at.0,
            transport,
            keys,
            secret,
        })
    }

    /// Finishes linking this device: waits (up to `timeout`) for an existing device to
    /// answer, checks that the answer was made under the link code's secret (so only a
    /// device that was shown the code can answer), opens the sealed account identity,
    /// shows `confirm` the account it names (username and identity fingerprint) and, if
    /// `confirm` says yes, adds this device to the account and keeps it in a new store at
    /// `store_path`. Any failure before that leaves the store without an account.
    pub async fn finish_link(
        pending: PendingLink,
        store_path: &Path,
        key: KeySource<'_>,
        device_name: Option<&str>,
        timeout: std::time::Duration,
        confirm: impl FnOnce(&LinkPreview) -> bool,
    ) -> Result<Self, ClientError> {
        let store = Store::open(store_path, key).await?;
        if let Some(record) = store.secret("account").await? {
            let record: AccountRecord = serde_json::from_slice(&record)
                .map_err(|e| ClientError::Inconsistent(e.to_string()))?;
            return Err(ClientError::AlreadyRegistered(record.username));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let sealed = loop {
            let state = match pending.transport.channel_state(&pending.channel).await {
                Ok(state) => state,
                Err(TransportError::Api { code, .. }) if code == "not_found" => {
                    return Err(ClientError::Link(
                        "the link code expired; start again with a new one".into(),
                    ));
                }
                Err(other) => return Err(other.into()),
            };
            if let Some(message) = state.message {
                break message;
            }
            if tokio::time::Instant::now() >= deadline || now_ms() >= pending.expires_at {
                return Err(ClientError::Link(
                    "no device approved the link in time; start again with a new code".into(),
                ));
            }
            tokio::time::sleep(LINK_POLL_INTERVAL).await;
        };
        let plaintext = pending
            .keys
            .open_answer(
                &pending.secret,
                &link_context(&pending.channel),
                sealed.as_slice(),
            )
            .map_err(|e| match e {
                ProvisionError::NotFromLinkCode => ClientError::Link(
                    "the answer was not made by a device that saw the link code (the server \
                     or another account answered it); nothing was linked: start again with a \
                     new code"
                        .into(),
                ),
                other => ClientError::Link(format!("the answer does not open: {other}")),
            })?;
        let payload: LinkPayload = serde_json::from_slice(&plaintext)
            .map_err(|_| ClientError::Link("the answer is not a link payload".into()))?;
        let identity = IdentityKeyPair::from_secret_bytes(&payload.identity)
            .map_err(|e| ClientError::Link(format!("the account identity is malformed: {e}")))?;
        let preview = LinkPreview {
            username: payload.username.clone(),
            fingerprint: identity_fingerprint(identity.public()),
        };
        if !confirm(&preview) {
            return Err(ClientError::Link(format!(
                "declined to join {}; nothing was linked",
                preview.username
            )));
        }
        let mut account = AccountRecord::new(pending.transport.base_url(), &payload.username);
        let keys = Self::prepare_device(&store, &identity, &mut account).await?;
        let added = pending
            .transport
            .link_device(&api::LinkDeviceRequest {
                channel: pending.channel.clone(),
                link_token: payload.link_token.clone(),
                device_name: device_name.map(str::to_owned),
                keys,
            })
            .await?;
        account.device = added.device_id.0;
        account.credential = added.credential.to_string();
        store
            .put_secret("identity", &identity.to_secret_bytes())
            .await?;
        for contact in &payload.contacts {
            store
                .pin_contact(&contact.username, &contact.identity_key)
                .await?;
            if contact.verified {
                store.mark_verified(&contact.username).await?;
            }
        }
        let client = Self {
            transport: pending.transport.with_credential(&account.credential),
            store,
            identity,
            account,
        };
        client.save_account().await?;
        Ok(client)
    }

    /// Approves linking a new device: checks the key on the server against the link code,
    /// then seals the account identity, the pinned contacts and a one-time link token to
    /// it. The server relays the sealed message and never sees what it holds.
    pub async fn approve_link(&self, code: &str) -> Result<(), ClientError> {
        let raw = URL_SAFE_NO_PAD
            .decode(code.trim())
            .ok()
            .map(Zeroizing::new)
            .filter(|raw| raw.len() == LINK_CODE_LEN)
            .ok_or_else(|| {
                ClientError::Link(format!(
                    "malformed link code (copy all {LINK_CODE_CHARS} characters)"
                ))
            })?;
        let (channel, rest) = raw.split_at(LINK_CHANNEL_LEN);
        let (digest, secret) = rest.split_at(32);
        let secret = LinkSecret::from_bytes(
            secret
                .try_into()
                .map_err(|_| ClientError::Link("malformed link code".into()))?,
        );
        let channel = URL_SAFE_NO_PAD.encode(channel);
        let state = match self.transport.channel_state(&channel).await {
            Ok(state) => state,
            Err(TransportError::Api { code, .. }) if code == "not_found" => {
                return Err(ClientError::Link("unknown or expired link code".into()));
            }
            Err(other) => return Err(other.into()),
        };
        if state.message.is_some() {
            return Err(ClientError::Link("this link code was already used".into()));
        }
        let public = ProvisioningPublicKey::from_bytes(state.public_key.as_slice())
            .map_err(|e| ClientError::Link(format!("the new device's key is malformed: {e}")))?;
        if !bool::from(public.digest().as_slice().ct_eq(digest)) {
            return Err(ClientError::Link(
                "the key on the server does not match the link code: someone may be \
                 interfering; nothing was sent"
                    .into(),
            ));
        }
        let mut token = Zeroizing::new([0u8; 32]);
        getrandom::fill(token.as_mut()).map_err(|e| ClientError::Inconsistent(e.to_string()))?;
        let link_token = URL_SAFE_NO_PAD.encode(token.as_ref());
        let contacts = self
            .store
            .contacts()
            .await?
            .into_iter()
            .map(|c| LinkContact {
                username: c.username,
                identity_key: c.identity_key,
                verified: c.verified,
            })
            .collect();
        let payload = LinkPayload {
            v: 1,
            username: self.account.username.clone(),
            identity: self.identity.to_secret_bytes().to_vec(),
            link_token: link_token.clone(),
            contacts,
        };
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&payload).map_err(|e| ClientError::Inconsistent(e.to_string()))?,
        );
        let sealed = provision::seal_answer(
            &mut rng(),
            &public,
            &secret,
            &link_context(&channel),
            &plaintext,
        )
        .map_err(|e| ClientError::Link(e.to_string()))?;
        self.transport
            .answer_channel(
                &channel,
                &api::AnswerChannelRequest {
                    message: sealed.into(),
                    link_token,
                },
            )
            .await?;
        Ok(())
    }
}

/// Length of a provisioning channel id in bytes.
const LINK_CHANNEL_LEN: usize = 16;
/// Length of a link code in bytes: channel id, SHA-256 of the new device's key, secret.
const LINK_CODE_LEN: usize = LINK_CHANNEL_LEN + 32 + LinkSecret::LEN;
/// Length of a link code as shown (unpadded base64url).
pub const LINK_CODE_CHARS: usize = (LINK_CODE_LEN * 8).div_ceil(6);

/// What a new device is about to join, shown to its user before the link completes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkPreview {
    /// The account's username.
    pub username: String,
    /// The account identity's fingerprint ([`identity_fingerprint`]), to compare with the
    /// one `tacit device add` shows on the approving device.
    pub fingerprint: String,
}

/// A short fingerprint of an identity key, for a person to compare: the first 16 bytes of
/// SHA-256 over the identity key bytes (Ed25519 key || X25519 key), in groups of four hex
/// digits.
pub fn identity_fingerprint(key: &IdentityKey) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.key_bytes());
    digest
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|pair| pair.concat())
        .collect::<Vec<_>>()
        .join(" ")
}
/// How often a new device asks whether its link was approved.
const LINK_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// The associated data of a sealed link answer: binds it to its channel.
fn link_context(channel: &str) -> Vec<u8> {
    let mut context = b"Tacit link ".to_vec();
    context.extend_from_slice(channel.as_bytes());
    context
}

/// A new device waiting for an existing one to approve the link.
pub struct PendingLink {
    transport: Transport,
    keys: ProvisioningKeyPair,
    /// The secret of the code: an answer must be authenticated under it.
    secret: LinkSecret,
    channel: String,
    code: Zeroizing<String>,
    expires_at: i64,
}

impl PendingLink {
    /// The link code to type into the existing device ([`LINK_CODE_CHARS`] characters). It
    /// holds a secret: show it only to the user.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// When the code expires (ms since the epoch).
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLink")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// A receive-side failure: either of this one message (reported, acknowledged) or local
/// (the store is broken: stop, acknowledge nothing).
enum Failure {
    Message(String),
    Local(ClientError),
}

impl Payload {
    /// A control payload (group update, sender key) carried in `body`.
    fn control(kind: &str, body: &str, to: Option<&str>) -> Self {
        Self {
            v: 1,
            kind: kind.to_owned(),
            body: body.to_owned(),
            to: to.map(str::to_owned),
            id: None,
            receipt: None,
            file: None,
            ts: None,
        }
    }

    fn text(text: &str, to: Option<&str>, uid: &str) -> Self {
        Self {
            v: 1,
            kind: "text".into(),
            body: text.to_owned(),
            to: to.map(str::to_owned),
            id: Some(uid.to_owned()),
            receipt: None,
            file: None,
            ts: None,
        }
    }

    /// A file message: `file` says what to fetch and how to open it.
    pub(crate) fn file(file: crate::files::FileDescriptor, to: Option<&str>, uid: &str) -> Self {
        Self {
            v: 1,
            kind: "file".into(),
            body: String::new(),
            to: to.map(str::to_owned),
            id: Some(uid.to_owned()),
            receipt: None,
            file: Some(file),
            ts: None,
        }
    }

    /// The payload, saying that the sender sent it at `time` (milliseconds since the Unix
    /// epoch, the sender's clock).
    pub(crate) fn at(self, time: i64) -> Self {
        Self {
            ts: Some(time),
            ..self
        }
    }

    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(self).map_err(|e| ClientError::Inconsistent(e.to_string()))
    }
}

fn signed_wire(key: &SignedPreKey) -> api::SignedPrekey {
    api::SignedPrekey {
        id: key.id().0,
        public_key: key.key().as_bytes().to_vec().into(),
        signature: key.signature().to_vec().into(),
    }
}

fn one_time_wire(key: &OneTimePreKey) -> api::OneTimePrekey {
    api::OneTimePrekey {
        id: key.id().0,
        public_key: key.key().as_bytes().to_vec().into(),
        signature: key.signature().to_vec().into(),
    }
}

fn kem_wire(key: &KemPreKey) -> api::SignedPrekey {
    api::SignedPrekey {
        id: key.id().0,
        public_key: key.key_bytes().to_vec().into(),
        signature: key.signature().to_vec().into(),
    }
}

fn parse_bundle(username: &str, bundle: &api::PrekeyBundle) -> Result<PreKeyBundle, ClientError> {
    let err = |e: tacit_crypto::DecodeError| bad_bundle(username, e);
    let parsed = PreKeyBundle {
        identity: IdentityKey::from_bytes(bundle.identity_key.as_slice()).map_err(err)?,
        signed_prekey: SignedPreKey::from_parts(
            PreKeyId(bundle.signed_prekey.id),
            bundle.signed_prekey.public_key.as_slice(),
            bundle.signed_prekey.signature.as_slice(),
        )
        .map_err(err)?,
        one_time_prekey: bundle
            .one_time_prekey
            .as_ref()
            .map(|k| {
                OneTimePreKey::from_parts(
                    PreKeyId(k.id),
                    k.public_key.as_slice(),
                    k.signature.as_slice(),
                )
            })
            .transpose()
            .map_err(err)?,
        kem_prekey: KemPreKey::from_parts(
            PreKeyId(bundle.kem_prekey.id),
            if bundle.kem_prekey_is_last_resort {
                KemPreKeyKind::LastResort
            } else {
                KemPreKeyKind::OneTime
            },
            bundle.kem_prekey.public_key.as_slice(),
            bundle.kem_prekey.signature.as_slice(),
        )
        .map_err(err)?,
    };
    parsed.verify().map_err(|e| bad_bundle(username, e))?;
    Ok(parsed)
}

/// A session to encrypt with: one in the store (named by its base key, checked against
/// the pinned identity), or one just set up from a bundle.
enum SessionFor {
    Stored([u8; 32]),
    New(Box<Session>),
}

/// Encrypts under the active session among `stored`, which must be the one checked before
/// (`checked`, its base key); returns the advanced state to save and the ciphertext.
fn encrypt_active(
    stored: &[StoredSession],
    checked: &[u8; 32],
    plaintext: &[u8],
) -> (Option<SessionWrite>, Result<Vec<u8>, ClientError>) {
    let Some(record) = stored.iter().find(|s| s.active) else {
        return (
            None,
            Err(ClientError::Inconsistent(
                "the session went away while sending; send again".into(),
            )),
        );
    };
    if record.base_key.as_slice() != checked.as_slice() {
        return (
            None,
            Err(ClientError::Inconsistent(
                "the active session changed while sending; send again".into(),
            )),
        );
    }
    let mut session = match Session::from_bytes(&record.state) {
        Ok(session) => session,
        Err(e) => {
            let error = ClientError::Inconsistent(format!("stored session: {e}"));
            return (None, Err(error));
        }
    };
    match session.encrypt(plaintext) {
        Ok(ciphertext) => (
            Some(SessionWrite {
                base_key: session.base_key().to_vec(),
                state: session.to_bytes(),
            }),
            Ok(ciphertext),
        ),
        Err(e) => (None, Err(ClientError::Inconsistent(e.to_string()))),
    }
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
    account.device = 1;
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
            let local = Client::address("alice", 1).unwrap();
            let remote = Client::address("bob", 1).unwrap();
            let session =
                Session::initiate(&mut rng, &alice.identity, &local, &remote, &bundle).unwrap();
            alice
                .store
                .pin_contact("bob", &identity.public().to_bytes())
                .await
                .unwrap();
            alice
                .store
                .save_session("bob", 1, session.base_key(), &session.to_bytes(), true)
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
            let local = Client::address("bob", 1).unwrap();
            let remote = Client::address(alice.username(), 1).unwrap();
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
        let devices = BTreeSet::from([1]);
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

    /// A session row put back to an older sealed copy of itself would make the next send
    /// reuse a message key: the client refuses the row as rolled back and sends nothing.
    #[tokio::test]
    async fn a_rolled_back_session_is_refused_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let alice = offline_client(dir.path(), "alice").await;
        let mut bob = Bob::with_session_from(&alice).await;
        let devices = BTreeSet::from([1]);
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
