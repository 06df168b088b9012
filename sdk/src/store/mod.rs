//! The local store: one SQLite file holding a device's identity, prekeys, sessions,
//! contacts and message history, with every secret-bearing column sealed.
//!
//! The store key comes from a passphrase (Argon2id, 64 MiB, 3 passes, a random 16-byte salt
//! kept in the store) or is supplied by the app. Each sealed value is
//! `0x01 || nonce (24) || XChaCha20-Poly1305(key, nonce, value, aad)`, where `aad` names the
//! table, column and row (`"tacit-store-v1|" || context`), so a sealed value cannot be moved
//! to another row. A known value sealed under the key at creation tells a wrong passphrase
//! apart from a damaged store.
//!
//! Sealed: the identity and account secrets, every prekey secret, every session state, every
//! message body, every file descriptor (name, size, attachment key and digest). Each
//! contact row also carries a seal over its pinned identity, verified flag and pending
//! change, checked on every read, so an edit of the file is detected. A sealed manifest
//! records the digest of every sealed row as last written (secrets, prekeys, sessions,
//! contacts), so a row put back to an older sealed copy of itself is detected too (not a
//! whole store restored from a backup). Loading, using and saving a session or chain is one
//! `BEGIN IMMEDIATE` transaction ([`Store::advance_session`], [`Store::advance_secret`]).
//! In clear (needed for lookups): contact usernames and their public identity keys, session
//! addresses, message and file peers, directions and times, the blob ids of files and the
//! sender and message id that announced each, and when a disappearing message or file is
//! deleted (`expires_at`, also bound into the seal of its body or descriptor, so that
//! clearing it makes the row fail to open). Due rows are deleted at every open and by
//! [`Store::purge_expired`], with `secure_delete` on.
//!
//! One file per concern: `sqlite` (the [`Store`] itself: sealing, the manifest's checks, every
//! table), `manifest` (the record of what the store last wrote), `traits` (the small traits the
//! session and group rules use: [`SessionStore`], [`PreKeyStore`], [`GroupStore`],
//! [`SenderKeyStore`]), `memory` (an in-memory store with the same traits, for an ephemeral
//! client and for unit tests of those rules).

use tacit_api::DeviceId;
use tacit_crypto::GroupId;
use thiserror::Error;
use zeroize::Zeroizing;

mod manifest;
mod memory;
mod sqlite;
mod traits;

pub use memory::MemoryStore;
pub use sqlite::Store;
pub use traits::{GroupStore, PreKeyStore, Secret, SenderKeyStore, SessionStore};

/// Argon2id memory cost in KiB (64 MiB), passes and lanes.
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_PASSES: u32 = 3;
const ARGON2_LANES: u32 = 1;

/// Why the store could not do what was asked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The passphrase (or app-supplied key) does not open this store.
    #[error("wrong passphrase for this store")]
    WrongPassphrase,
    /// A sealed value failed authentication: the file was altered or damaged.
    #[error("store is damaged: a sealed value ({0}) does not authenticate")]
    Corrupt(String),
    /// The passphrase could not be stretched (bad parameters).
    #[error("could not derive the store key: {0}")]
    KeyDerivation(argon2::Error),
    /// The operating system's random number generator failed.
    #[error("no randomness available: {0}")]
    Random(getrandom::Error),
    /// SQLite failed (disk full, permissions, locked file, ...).
    #[error("store database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another process (or another open in this one) is using the store.
    #[error(
        "the store is in use by {} (another tacit, such as `listen`?); stop it or use `chat` \
         to send while listening",
        match .pid { Some(pid) => format!("process {pid}"), None => "another process".into() }
    )]
    InUse {
        /// The process that holds the store, as its lock file says.
        pid: Option<u32>,
    },
    /// The store's lock file could not be opened or locked.
    #[error("could not lock the store: {}: {source}", .path.display())]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A message named a blob id that another message (of another sender, or with another
    /// key) already announced; the first record is kept and this one refused.
    #[error(
        "blob {blob_id} was already announced by {first}; the same blob id from {second} is \
         refused (a server may be substituting blob ids)"
    )]
    BlobConflict {
        /// The blob id both named.
        blob_id: String,
        /// Who announced it first.
        first: String,
        /// Who named it again.
        second: String,
    },
    /// A sealed row authenticates but is not the value this store last wrote there (an
    /// older copy of the row was put back, or a row was deleted or brought back): its
    /// digest differs from the one the store's sealed manifest records.
    #[error(
        "store is damaged: {0} is not what this device last wrote there (an older copy put \
         back?); it is not used"
    )]
    RolledBack(String),
    /// The schema could not be brought up to date.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A 32-byte store key. Zeroized on drop; never printed.
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl StoreKey {
    /// Uses a key the app manages itself (for example one kept in the platform keystore).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    fn derive(passphrase: &str, salt: &[u8]) -> Result<Self, StoreError> {
        use argon2::{Algorithm, Argon2, Params, Version};
        let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, Some(32))
            .map_err(StoreError::KeyDerivation)?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
            .map_err(StoreError::KeyDerivation)?;
        Ok(Self(key))
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// Where the store key comes from.
#[derive(Debug)]
pub enum KeySource<'a> {
    /// Stretch a passphrase with Argon2id.
    Passphrase(&'a str),
    /// A key the app supplies.
    Key(StoreKey),
}

/// A conversation: with one user, or in a group.
///
/// The store keeps it in the `peer` column of messages and files as the username, or as
/// `group:<id>` (the group id in 32 lowercase hex digits): the spelling older stores used,
/// kept so that their history still reads. It serializes as that spelling too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// The conversation with one user (their username).
    Direct(String),
    /// A group's conversation.
    Group(GroupId),
}

impl Conversation {
    /// The conversation with `username`.
    pub fn direct(username: &str) -> Self {
        Self::Direct(username.to_owned())
    }

    /// The `peer` column's spelling.
    pub fn key(&self) -> String {
        match self {
            Self::Direct(username) => username.clone(),
            Self::Group(id) => format!("group:{}", hex::encode(id.0)),
        }
    }

    /// Reads the `peer` column's spelling: `group:` and 32 lowercase hex digits is a group,
    /// anything else a user.
    pub fn from_key(key: &str) -> Self {
        let group = key
            .strip_prefix("group:")
            .filter(|id| {
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .and_then(|id| hex::decode(id).ok())
            .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok());
        match group {
            Some(bytes) => Self::Group(GroupId(bytes)),
            None => Self::Direct(key.to_owned()),
        }
    }
}

impl std::fmt::Display for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

impl serde::Serialize for Conversation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.key())
    }
}

/// What kind of prekey a stored secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrekeyKind {
    /// The signed X25519 prekey.
    Signed,
    /// A one-time X25519 prekey.
    OneTime,
    /// An ML-KEM-768 prekey (one-time or last-resort).
    Kem,
}

impl PrekeyKind {
    pub(crate) fn code(self) -> i64 {
        match self {
            Self::Signed => 1,
            Self::OneTime => 2,
            Self::Kem => 3,
        }
    }
}

/// A contact as pinned on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Their username.
    pub username: String,
    /// The identity key pinned for them (encoded [`tacit_crypto::IdentityKey`]).
    pub identity_key: Vec<u8>,
    /// Whether the user compared safety numbers and marked them verified.
    pub verified: bool,
    /// A different identity key seen since, not yet accepted by the user.
    pub changed_identity_key: Option<Vec<u8>>,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Local id, in arrival order.
    pub id: i64,
    /// The conversation.
    pub peer: Conversation,
    /// Whether we sent it.
    pub outgoing: bool,
    /// The device that sent it.
    pub sender_device: DeviceId,
    /// When the sender says it sent it (its own clock, from inside the encrypted message),
    /// in milliseconds since the Unix epoch; for a message from a client before sender
    /// times, the server's time (only the server's claim).
    pub sent_at: i64,
    /// The decrypted body.
    pub body: Vec<u8>,
    /// The sender's id of the message (named in receipts), if it had one.
    pub uid: Option<String>,
    /// How far the message got.
    pub status: MessageStatus,
    /// In a group conversation: who wrote it.
    pub sender: Option<String>,
    /// When it disappears (milliseconds since the Unix epoch), if it does.
    pub expires_at: Option<i64>,
}

/// What [`Store::purge_expired`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Messages (history lines).
    pub messages: u64,
    /// File records (and with them the keys that open the files).
    pub files: u64,
    /// Saved copies of those files deleted from disk.
    pub copies: u64,
}

/// How far a message got: for our own messages, what the recipient's receipts said; for
/// incoming ones, whether we read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Outgoing: accepted by the server. Incoming: not read yet.
    Sent,
    /// Outgoing: a device of the recipient stored it.
    Delivered,
    /// Read (by the recipient, for outgoing messages; by us, for incoming ones).
    Read,
}

impl MessageStatus {
    pub(crate) fn to_i64(self) -> i64 {
        match self {
            Self::Sent => 0,
            Self::Delivered => 1,
            Self::Read => 2,
        }
    }

    pub(crate) fn from_i64(v: i64) -> Self {
        match v {
            1 => Self::Delivered,
            2 => Self::Read,
            _ => Self::Sent,
        }
    }
}

/// A file announced by a message, to record with [`Store::put_file`].
#[derive(Debug, Clone, Copy)]
pub struct NewFile<'a> {
    /// The blob's id on the server (as the message named it).
    pub blob_id: &'a str,
    /// Who sent the message (ourselves for our own files).
    pub sender: &'a str,
    /// The conversation.
    pub peer: &'a Conversation,
    /// The sender's id of the message.
    pub message_id: &'a str,
    /// Whether we sent it.
    pub outgoing: bool,
    /// The device that sent it.
    pub sender_device: DeviceId,
    /// When the message says it was sent (see [`StoredMessage::sent_at`]).
    pub sent_at: i64,
    /// The descriptor the message carried (serialized; it is sealed before it is stored).
    pub descriptor: &'a [u8],
    /// When the record disappears (milliseconds since the Unix epoch), if it does.
    pub expires_at: Option<i64>,
}

/// A file received or sent, as stored.
#[derive(Debug)]
pub struct StoredFile {
    /// The blob's id on the server.
    pub blob_id: String,
    /// Who announced it (`None` for a record made before senders were recorded).
    pub sender: Option<String>,
    /// The sender's id of the message that announced it (`None` as for `sender`).
    pub message_id: Option<String>,
    /// The conversation.
    pub peer: Conversation,
    /// Whether we sent it.
    pub outgoing: bool,
    /// The device that sent it.
    pub sender_device: DeviceId,
    /// When the message says it was sent (see [`StoredMessage::sent_at`]).
    pub sent_at: i64,
    /// The descriptor the file message carried (it holds the attachment key).
    pub descriptor: Zeroizing<Vec<u8>>,
    /// When the record disappears (milliseconds since the Unix epoch), if it does.
    pub expires_at: Option<i64>,
}

/// A stored session record.
#[derive(Debug)]
pub struct StoredSession {
    /// The session's base key (names it).
    pub base_key: Vec<u8>,
    /// Whether it is the session used to send.
    pub active: bool,
    /// The serialized [`tacit_crypto::Session`].
    pub state: Zeroizing<Vec<u8>>,
}

/// What [`Store::advance_session`] saves: the session used, in its advanced state.
pub struct SessionWrite {
    /// The session's base key (names it).
    pub base_key: Vec<u8>,
    /// The serialized [`tacit_crypto::Session`] after the step.
    pub state: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SessionWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { base_key, state: _ } = self;
        f.debug_struct("SessionWrite")
            .field("base_key", base_key)
            .finish_non_exhaustive()
    }
}
