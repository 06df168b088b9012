//! The client: registration, prekey upkeep, sessions per remote device, send and receive.
//!
//! Sessions follow Sesame: one active session per remote device, created from a claimed
//! bundle on first send; a prekey message that starts a new session makes that session the
//! active one. A send goes to every device of the recipient and to the sender's other
//! devices in one request; when the server answers that the device set is out of date, the
//! client drops stale devices, sets up sessions with missing ones and retries with the same
//! client message id, so a retried send is never delivered twice.
//!
//! Contacts are pinned on first use. When a contact's identity key changes, sends to them
//! fail with [`ClientError::IdentityChanged`] until [`Client::trust`] accepts the new key.

use std::collections::BTreeSet;
use std::path::Path;

use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tacit_api as api;
use tacit_crypto::{
    Address, DecryptError, IdentityKey, IdentityKeyPair, KemPreKey, KemPreKeyKind, KemPreKeyPair,
    Message, OneTimePreKey, OneTimePreKeyPair, PreKeyBundle, PreKeyId, ResponderKeys, SafetyNumber,
    Session, SetupError, SignedPreKey, SignedPreKeyPair,
};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::store::{KeySource, PrekeyKind, Store, StoreError};
use crate::transport::{Transport, TransportError};

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
    /// Local state that should be there is missing or unreadable.
    #[error("local state is inconsistent: {0}")]
    Inconsistent(String),
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
}

/// The plaintext inside every end-to-end encrypted message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Payload {
    /// Payload format version.
    v: u8,
    /// `"text"`.
    kind: String,
    body: String,
    /// On copies sent to the sender's own other devices: the conversation's other party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
}

/// Something that arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incoming {
    /// The sending user.
    pub sender: String,
    /// The sending device.
    pub sender_device: u32,
    /// Server time, milliseconds since the Unix epoch.
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
    },
    /// A message that could not be decrypted; it is acknowledged and dropped.
    Failed {
        /// Why.
        error: String,
    },
}

/// A Tacit account on one device.
pub struct Client {
    store: Store,
    transport: Transport,
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

fn rng() -> StdRng {
    rand::make_rng()
}

fn bad_bundle(username: &str, reason: impl std::fmt::Display) -> ClientError {
    ClientError::BadBundle {
        username: username.to_owned(),
        reason: reason.to_string(),
    }
}

impl Client {
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
        let mut rng = rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let mut account = AccountRecord {
            server: transport.base_url().to_owned(),
            username: username.to_owned(),
            device: 0,
            credential: String::new(),
            next_one_time_id: 1,
            next_kem_id: 2,
        };
        let signed = identity.generate_signed_prekey(&mut rng, PreKeyId(1));
        let last_resort =
            identity.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
        let (one_time, kems) = Self::fresh_prekeys(&identity, &mut account);
        store
            .put_prekey(PrekeyKind::Signed, 1, &signed.to_secret_bytes())
            .await?;
        store
            .put_prekey(PrekeyKind::Kem, 1, &last_resort.to_secret_bytes())
            .await?;
        Self::store_prekeys(&store, &one_time, &kems).await?;

        let keys = api::DeviceKeys {
            identity_key: identity.public().to_bytes().into(),
            signed_prekey: signed_wire(&signed.public()),
            kem_last_resort_prekey: kem_wire(last_resort.public()),
            one_time_prekeys: one_time
                .iter()
                .map(|k| one_time_wire(&k.public()))
                .collect(),
            one_time_kem_prekeys: kems.iter().map(|k| kem_wire(k.public())).collect(),
        };
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

    /// Checks `identity` against the pin for `username`, pinning it on first use.
    async fn check_identity(
        &self,
        username: &str,
        identity: &IdentityKey,
    ) -> Result<(), ClientError> {
        let encoded = identity.to_bytes();
        match self.store.contact(username).await? {
            None => {
                self.store.pin_contact(username, &encoded).await?;
                Ok(())
            }
            Some(contact) if contact.identity_key == encoded => Ok(()),
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
    ) -> Result<Vec<(u32, Session)>, ClientError> {
        let mut sessions = Vec::new();
        let mut missing = Vec::new();
        for &device in devices {
            match self.active_session(username, device).await? {
                Some(session) => {
                    self.check_identity(username, session.remote_identity())
                        .await?;
                    sessions.push((device, session));
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
                    device_ids: missing,
                },
            )
            .await?;
        let local = Self::address(&self.account.username, self.account.device)?;
        let mut rng = rng();
        for bundle in &bundles.bundles {
            let parsed = parse_bundle(username, bundle)?;
            self.check_identity(username, &parsed.identity).await?;
            let remote = Self::address(username, bundle.device_id.0)?;
            let session = Session::initiate(&mut rng, &self.identity, &local, &remote, &parsed)?;
            sessions.push((bundle.device_id.0, session));
        }
        Ok(sessions)
    }

    /// Sends a text message to every device of `username` (and a copy to our other devices).
    pub async fn send(&mut self, username: &str, text: &str) -> Result<i64, ClientError> {
        if let Some(contact) = self.store.contact(username).await?
            && contact.changed_identity_key.is_some()
        {
            return Err(ClientError::IdentityChanged {
                username: username.to_owned(),
                verified: contact.verified,
            });
        }
        let mut id_bytes = [0u8; 16];
        getrandom::fill(&mut id_bytes).map_err(|e| ClientError::Inconsistent(e.to_string()))?;
        let client_message_id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut theirs: BTreeSet<u32> = self
            .transport
            .user_devices(username)
            .await?
            .devices
            .iter()
            .map(|d| d.device_id.0)
            .collect();
        if username == self.account.username {
            theirs.remove(&self.account.device);
        }
        let mut ours: BTreeSet<u32> = if username == self.account.username {
            BTreeSet::new()
        } else {
            self.transport
                .own_devices()
                .await?
                .devices
                .iter()
                .map(|d| d.device_id.0)
                .filter(|d| *d != self.account.device)
                .collect()
        };
        let to_them = payload_bytes(text, None)?;
        let to_us = payload_bytes(text, Some(username))?;
        let me = self.account.username.clone();

        for _ in 0..SEND_ATTEMPTS {
            if theirs.is_empty() {
                return Err(ClientError::NoDevices(username.to_owned()));
            }
            let recipient_devices = self.encrypt_for(username, &theirs, &to_them).await?;
            let own_devices = self.encrypt_for(&me, &ours, &to_us).await?;
            let request = api::SendMessageRequest {
                client_message_id: client_message_id.clone(),
                recipient: username.to_owned(),
                recipient_devices,
                own_devices,
            };
            match self.transport.send(&request).await {
                Ok(response) => {
                    let id = self
                        .store
                        .add_message(
                            username,
                            true,
                            self.account.device,
                            response.server_timestamp.0,
                            text.as_bytes(),
                        )
                        .await?;
                    return Ok(id);
                }
                Err(TransportError::DeviceMismatch(mismatch)) => {
                    for address in mismatch.stale {
                        let set = if address.username == me {
                            &mut ours
                        } else {
                            &mut theirs
                        };
                        set.remove(&address.device_id.0);
                    }
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
        for (device, mut session) in self.sessions_for(username, devices).await? {
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
            out.push(api::DeviceCiphertext {
                device_id: api::DeviceId(device),
                ciphertext: api::Ciphertext(ciphertext.into()),
            });
        }
        Ok(out)
    }

    /// Fetches what is waiting, decrypts it, stores it, then acknowledges it: nothing is
    /// acknowledged before it is safely in the local store.
    pub async fn receive(&mut self) -> Result<Vec<Incoming>, ClientError> {
        let mut events = Vec::new();
        loop {
            let batch = self.transport.fetch().await?;
            let mut acks = Vec::with_capacity(batch.envelopes.len());
            for envelope in &batch.envelopes {
                match self.handle(envelope).await {
                    Ok(event) => {
                        events.push(event);
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
        if !events.is_empty() {
            self.replenish_prekeys().await?;
        }
        Ok(events)
    }

    async fn handle(&mut self, envelope: &api::Envelope) -> Result<Incoming, ClientError> {
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
            Ok(plaintext) => plaintext,
            Err(Failure::Local(error)) => return Err(error),
            Err(Failure::Message(error)) => {
                return Ok(incoming(IncomingKind::Failed { error }));
            }
        };
        let Ok(payload) = serde_json::from_slice::<Payload>(&plaintext) else {
            return Ok(incoming(IncomingKind::Failed {
                error: "unreadable message payload".into(),
            }));
        };
        let peer = match (&payload.to, sender == self.account.username) {
            (Some(to), true) => to.clone(),
            _ => sender.clone(),
        };
        let outgoing = sender == self.account.username;
        self.store
            .add_message(
                &peer,
                outgoing,
                device,
                envelope.server_timestamp.0,
                payload.body.as_bytes(),
            )
            .await?;
        Ok(incoming(IncomingKind::Text {
            peer,
            text: payload.body,
        }))
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
        let stored = self
            .store
            .sessions(sender, device)
            .await
            .map_err(|e| Failure::Local(e.into()))?;
        let mut last_error = None;
        for record in &stored {
            let mut session = Session::from_bytes(&record.state).map_err(|e| {
                Failure::Local(ClientError::Inconsistent(format!("stored session: {e}")))
            })?;
            match session.decrypt(&mut rng, &message) {
                Ok(plaintext) => {
                    self.store
                        .save_session(
                            sender,
                            device,
                            session.base_key(),
                            &session.to_bytes(),
                            true,
                        )
                        .await
                        .map_err(|e| Failure::Local(e.into()))?;
                    return Ok(plaintext);
                }
                Err(DecryptError::OtherSession) => {}
                Err(error) => last_error = Some(error),
            }
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
        if let Err(error) = self.check_identity(sender, first.identity()).await {
            return Err(match error {
                ClientError::IdentityChanged { .. } => Failure::Message(error.to_string()),
                other => Failure::Local(other),
            });
        }
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

    /// Marks a contact verified after comparing safety numbers.
    pub async fn verify(&self, username: &str) -> Result<(), ClientError> {
        if self.store.mark_verified(username).await? {
            Ok(())
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
}

/// A receive-side failure: either of this one message (reported, acknowledged) or local
/// (the store is broken: stop, acknowledge nothing).
enum Failure {
    Message(String),
    Local(ClientError),
}

fn payload_bytes(text: &str, to: Option<&str>) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(&Payload {
        v: 1,
        kind: "text".into(),
        body: text.to_owned(),
        to: to.map(str::to_owned),
    })
    .map_err(|e| ClientError::Inconsistent(e.to_string()))
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
