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
//! change, checked on every read, so an edit of the file is detected. In clear
//! (needed for lookups): contact usernames and their public identity keys, session
//! addresses, message and file peers, directions and times, the blob ids of files and the
//! sender and message id that announced each.

use std::path::Path;
use std::str::FromStr;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use thiserror::Error;
use zeroize::Zeroizing;

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const SALT_LEN: usize = 16;
const AAD_PREFIX: &str = "tacit-store-v1|";
/// The key check of a store made before contact rows were sealed.
const KEY_CHECK: &[u8] = b"tacit store key check";
/// The key check of a store whose contact rows are all sealed. (The upgrade is recorded in
/// a sealed value, so deleting a marker cannot make a tampered row be sealed again.)
const KEY_CHECK_SEALED_CONTACTS: &[u8] = b"tacit store key check v2: contacts sealed";
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
    KeyDerivation(String),
    /// The operating system's random number generator failed.
    #[error("no randomness available: {0}")]
    Random(String),
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
    #[error("could not lock the store: {0}")]
    Lock(String),
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
        let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, Some(32))
            .map_err(|e| StoreError::KeyDerivation(e.to_string()))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
            .map_err(|e| StoreError::KeyDerivation(e.to_string()))?;
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
    fn code(self) -> i64 {
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
    /// The other party.
    pub peer: String,
    /// Whether we sent it.
    pub outgoing: bool,
    /// The device that sent it.
    pub sender_device: u32,
    /// Server time in milliseconds since the Unix epoch.
    pub sent_at: i64,
    /// The decrypted body.
    pub body: Vec<u8>,
    /// The sender's id of the message (named in receipts), if it had one.
    pub uid: Option<String>,
    /// How far the message got.
    pub status: MessageStatus,
    /// In a group conversation: who wrote it.
    pub sender: Option<String>,
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
    fn to_i64(self) -> i64 {
        match self {
            Self::Sent => 0,
            Self::Delivered => 1,
            Self::Read => 2,
        }
    }

    fn from_i64(v: i64) -> Self {
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
    /// The conversation: the other party, or `group:<id>`.
    pub peer: &'a str,
    /// The sender's id of the message.
    pub message_id: &'a str,
    /// Whether we sent it.
    pub outgoing: bool,
    /// The device that sent it.
    pub sender_device: u32,
    /// Server time in milliseconds since the Unix epoch.
    pub sent_at: i64,
    /// The descriptor the message carried (serialized; it is sealed before it is stored).
    pub descriptor: &'a [u8],
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
    /// The other party.
    pub peer: String,
    /// Whether we sent it.
    pub outgoing: bool,
    /// The device that sent it.
    pub sender_device: u32,
    /// Server time in milliseconds since the Unix epoch.
    pub sent_at: i64,
    /// The descriptor the file message carried (it holds the attachment key).
    pub descriptor: Zeroizing<Vec<u8>>,
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

/// The encrypted local store.
#[derive(Debug)]
pub struct Store {
    pool: SqlitePool,
    key: StoreKey,
    /// The open lock file (`<store>.lock`), exclusively locked while the store is open: one
    /// process at a time, so that no two load-encrypt-save cycles can use one key.
    _lock: std::fs::File,
}

/// Takes the store's exclusive lock, or says which process holds it.
fn lock_store(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| StoreError::Lock(format!("{}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(StoreError::InUse {
                pid: holder.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(StoreError::Lock(format!("{}: {e}", lock_path.display())));
        }
    }
    // Ours now: say who holds it, for the next process that tries.
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    written.map_err(|e| StoreError::Lock(format!("{}: {e}", lock_path.display())))?;
    Ok(file)
}

impl Store {
    /// Opens (or creates) the store at `path`. A store created with a passphrase must be
    /// opened with the same one: anything else fails with [`StoreError::WrongPassphrase`].
    ///
    /// The store is exclusive: while it is open, another open of it (by another process, or
    /// in this one) fails at once with [`StoreError::InUse`], naming the process that holds
    /// it. (It does not wait: a `listen` holds its store for as long as it runs.)
    pub async fn open(path: &Path, key: KeySource<'_>) -> Result<Self, StoreError> {
        let lock = lock_store(path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;

        let salt = match meta(&pool, "salt").await? {
            Some(salt) => salt,
            None => {
                let mut salt = vec![0u8; SALT_LEN];
                getrandom::fill(&mut salt).map_err(|e| StoreError::Random(e.to_string()))?;
                salt
            }
        };
        let key = match key {
            KeySource::Passphrase(passphrase) => StoreKey::derive(passphrase, &salt)?,
            KeySource::Key(key) => key,
        };
        let store = Self {
            pool,
            key,
            _lock: lock,
        };
        match meta(&store.pool, "key_check").await? {
            Some(check) => {
                let opened = store
                    .open_sealed("meta:key_check", &check)
                    .map_err(|_| StoreError::WrongPassphrase)?;
                if opened.as_slice() == KEY_CHECK {
                    store.seal_old_contacts().await?;
                } else if opened.as_slice() != KEY_CHECK_SEALED_CONTACTS {
                    return Err(StoreError::WrongPassphrase);
                }
            }
            None => {
                let check = store.seal("meta:key_check", KEY_CHECK_SEALED_CONTACTS)?;
                let mut tx = store.pool.begin().await?;
                for (name, value) in [("salt", salt.as_slice()), ("key_check", &check)] {
                    sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?)")
                        .bind(name)
                        .bind(value)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(store)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.key.0).into())
    }

    fn seal(&self, context: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
        let aad = format!("{AAD_PREFIX}{context}");
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Corrupt(context.to_owned()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open_sealed(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let corrupt = || StoreError::Corrupt(context.to_owned());
        let (&version, rest) = sealed.split_first().ok_or_else(corrupt)?;
        if version != SEAL_VERSION || rest.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| corrupt())?;
        let aad = format!("{AAD_PREFIX}{context}");
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| corrupt())
    }

    /// Stores a named secret (identity, account credential, ...), sealed.
    pub async fn put_secret(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let sealed = self.seal(&format!("meta:secret:{name}"), value)?;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(format!("secret:{name}"))
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a named secret (if there is one).
    pub async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM meta WHERE key = ?")
            .bind(format!("secret:{name}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every secret whose name starts with `prefix`, with its name, in name order.
    pub async fn secrets_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>, StoreError> {
        let key_prefix = format!("secret:{prefix}");
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key")
                .bind(i64::try_from(key_prefix.len()).unwrap_or(i64::MAX))
                .bind(&key_prefix)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(key, sealed)| {
                let name = key["secret:".len()..].to_owned();
                let value = self.open_sealed(&format!("meta:{key}"), &sealed)?;
                Ok((name, value))
            })
            .collect()
    }

    /// Deletes every secret whose name starts with `prefix`.
    pub async fn delete_secrets_with_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let key_prefix = format!("secret:{prefix}");
        sqlx::query("DELETE FROM meta WHERE substr(key, 1, ?) = ?")
            .bind(i64::try_from(key_prefix.len()).unwrap_or(i64::MAX))
            .bind(&key_prefix)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reads a named secret.
    pub async fn secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match meta(&self.pool, &format!("secret:{name}")).await? {
            Some(sealed) => Ok(Some(
                self.open_sealed(&format!("meta:secret:{name}"), &sealed)?,
            )),
            None => Ok(None),
        }
    }

    /// Stores a prekey secret (its `to_secret_bytes` encoding).
    pub async fn put_prekey(
        &self,
        kind: PrekeyKind,
        id: u32,
        secret: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = self.seal(&format!("prekeys:{}:{id}", kind.code()), secret)?;
        sqlx::query("INSERT INTO prekeys (kind, id, secret_sealed) VALUES (?, ?, ?) ON CONFLICT(kind, id) DO UPDATE SET secret_sealed = excluded.secret_sealed")
            .bind(kind.code())
            .bind(i64::from(id))
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reads a prekey secret.
    pub async fn prekey(
        &self,
        kind: PrekeyKind,
        id: u32,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let row = sqlx::query("SELECT secret_sealed FROM prekeys WHERE kind = ? AND id = ?")
            .bind(kind.code())
            .bind(i64::from(id))
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                let sealed: Vec<u8> = row.try_get(0)?;
                Ok(Some(self.open_sealed(
                    &format!("prekeys:{}:{id}", kind.code()),
                    &sealed,
                )?))
            }
            None => Ok(None),
        }
    }

    /// Deletes a prekey secret (a one-time key once a session used it).
    pub async fn delete_prekey(&self, kind: PrekeyKind, id: u32) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM prekeys WHERE kind = ? AND id = ?")
            .bind(kind.code())
            .bind(i64::from(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a session; `active` makes it the one used to send to that device (the others
    /// of the device become inactive).
    pub async fn save_session(
        &self,
        username: &str,
        device: u32,
        base_key: &[u8],
        state: &[u8],
        active: bool,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(&session_context(username, device, base_key), state)?;
        let mut tx = self.pool.begin().await?;
        if active {
            sqlx::query("UPDATE sessions SET active = 0 WHERE username = ? AND device = ?")
                .bind(username)
                .bind(i64::from(device))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO sessions (username, device, base_key, active, updated_seq, state_sealed)
             VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(updated_seq), 0) + 1 FROM sessions), ?)
             ON CONFLICT(username, device, base_key) DO UPDATE SET
               active = MAX(sessions.active, excluded.active),
               updated_seq = excluded.updated_seq, state_sealed = excluded.state_sealed",
        )
        .bind(username)
        .bind(i64::from(device))
        .bind(base_key)
        .bind(i64::from(active))
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every session with one device, the active one first, then newest first.
    pub async fn sessions(
        &self,
        username: &str,
        device: u32,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let rows = sqlx::query(
            "SELECT base_key, active, state_sealed FROM sessions WHERE username = ? AND device = ?
             ORDER BY active DESC, updated_seq DESC",
        )
        .bind(username)
        .bind(i64::from(device))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let base_key: Vec<u8> = row.try_get(0)?;
                let active: i64 = row.try_get(1)?;
                let sealed: Vec<u8> = row.try_get(2)?;
                let state =
                    self.open_sealed(&session_context(username, device, &base_key), &sealed)?;
                Ok(StoredSession {
                    base_key,
                    active: active != 0,
                    state,
                })
            })
            .collect()
    }

    /// Deletes every session with a user (after they re-registered with a new identity).
    pub async fn delete_sessions(&self, username: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE username = ?")
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The contact record for `username`, if any.
    pub async fn contact(&self, username: &str) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query(
            "SELECT username, identity_key, verified, changed_identity_key, check_sealed \
             FROM contacts WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| self.contact_from_row(&row)).transpose()
    }

    /// Every contact, by username.
    pub async fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        let rows = sqlx::query(
            "SELECT username, identity_key, verified, changed_identity_key, check_sealed \
             FROM contacts ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| self.contact_from_row(row)).collect()
    }

    /// Pins an identity for a new contact (trust on first use).
    pub async fn pin_contact(&self, username: &str, identity_key: &[u8]) -> Result<(), StoreError> {
        self.change_contact(username, |contact| match contact {
            Some(_) => None,
            None => Some(Contact {
                username: username.to_owned(),
                identity_key: identity_key.to_vec(),
                verified: false,
                changed_identity_key: None,
            }),
        })
        .await
        .map(drop)
    }

    /// Records a changed identity for a contact; sending stops until it is accepted.
    pub async fn record_changed_identity(
        &self,
        username: &str,
        identity_key: &[u8],
    ) -> Result<(), StoreError> {
        self.change_contact(username, |contact| {
            contact.map(|c| Contact {
                changed_identity_key: Some(identity_key.to_vec()),
                ..c
            })
        })
        .await
        .map(drop)
    }

    /// Accepts a contact's changed identity: it becomes the pinned one, no longer verified.
    /// Returns whether there was a change to accept.
    pub async fn accept_changed_identity(&self, username: &str) -> Result<bool, StoreError> {
        self.change_contact(username, |contact| {
            let contact = contact?;
            let changed = contact.changed_identity_key?;
            Some(Contact {
                identity_key: changed,
                verified: false,
                changed_identity_key: None,
                ..contact
            })
        })
        .await
    }

    /// Marks a contact verified (the user compared safety numbers).
    pub async fn mark_verified(&self, username: &str) -> Result<bool, StoreError> {
        self.change_contact(username, |contact| {
            contact.map(|c| Contact {
                verified: true,
                ..c
            })
        })
        .await
    }

    /// Reads a contact (checking its seal), lets `change` decide its new state (`None`: no
    /// change) and writes it back with a new seal, in one transaction. Returns whether it
    /// wrote. A row whose seal does not match is [`StoreError::Corrupt`] and is not
    /// rewritten, so a tampered row never gets sealed by a later change.
    async fn change_contact(
        &self,
        username: &str,
        change: impl FnOnce(Option<Contact>) -> Option<Contact>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT username, identity_key, verified, changed_identity_key, check_sealed \
             FROM contacts WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?;
        let current = row.map(|row| self.contact_from_row(&row)).transpose()?;
        let Some(new) = change(current) else {
            return Ok(false);
        };
        let seal = self.seal(&contact_context(username), &contact_check(&new))?;
        sqlx::query(
            "INSERT INTO contacts (username, identity_key, verified, changed_identity_key, \
             check_sealed) VALUES (?, ?, ?, ?, ?) ON CONFLICT(username) DO UPDATE SET \
             identity_key = excluded.identity_key, verified = excluded.verified, \
             changed_identity_key = excluded.changed_identity_key, \
             check_sealed = excluded.check_sealed",
        )
        .bind(username)
        .bind(&new.identity_key)
        .bind(i64::from(new.verified))
        .bind(&new.changed_identity_key)
        .bind(seal)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A contact row, checked against its seal.
    fn contact_from_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<Contact, StoreError> {
        let verified: i64 = row.try_get(2)?;
        let contact = Contact {
            username: row.try_get(0)?,
            identity_key: row.try_get(1)?,
            verified: verified != 0,
            changed_identity_key: row.try_get(3)?,
        };
        let sealed: Option<Vec<u8>> = row.try_get(4)?;
        let context = contact_context(&contact.username);
        let corrupt = || StoreError::Corrupt(format!("contact {}", contact.username));
        let opened = self.open_sealed(&context, &sealed.ok_or_else(corrupt)?)?;
        if opened.as_slice() != contact_check(&contact).as_slice() {
            return Err(corrupt());
        }
        Ok(contact)
    }

    /// Seals the contact rows of a store made before contacts were sealed, and records in
    /// the sealed key check that they are (once per store).
    async fn seal_old_contacts(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT username, identity_key, verified, changed_identity_key FROM contacts \
             WHERE check_sealed IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let verified: i64 = row.try_get(2)?;
            let contact = Contact {
                username: row.try_get(0)?,
                identity_key: row.try_get(1)?,
                verified: verified != 0,
                changed_identity_key: row.try_get(3)?,
            };
            let seal = self.seal(
                &contact_context(&contact.username),
                &contact_check(&contact),
            )?;
            sqlx::query("UPDATE contacts SET check_sealed = ? WHERE username = ?")
                .bind(seal)
                .bind(&contact.username)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE meta SET value = ? WHERE key = 'key_check'")
            .bind(self.seal("meta:key_check", KEY_CHECK_SEALED_CONTACTS)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends a message to a group conversation (`peer` is the group's history key),
    /// naming who wrote it.
    #[allow(clippy::too_many_arguments)] // one column each
    pub async fn add_group_message(
        &self,
        peer: &str,
        sender: &str,
        outgoing: bool,
        sender_device: u32,
        sent_at: i64,
        body: &[u8],
        uid: Option<&str>,
    ) -> Result<i64, StoreError> {
        let id = self
            .add_message(peer, outgoing, sender_device, sent_at, body, uid)
            .await?;
        sqlx::query("UPDATE messages SET sender = ? WHERE id = ?")
            .bind(sender)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Deletes the prekeys of `kind` with an id below `id`.
    pub async fn delete_prekeys_before(&self, kind: PrekeyKind, id: u32) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM prekeys WHERE kind = ? AND id < ?")
            .bind(kind.code())
            .bind(i64::from(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends a message to the history.
    pub async fn add_message(
        &self,
        peer: &str,
        outgoing: bool,
        sender_device: u32,
        sent_at: i64,
        body: &[u8],
        uid: Option<&str>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM messages")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let sealed = self.seal(&format!("messages:{id}"), body)?;
        sqlx::query(
            "INSERT INTO messages (id, peer, outgoing, sender_device, sent_at, body_sealed, uid) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(peer)
        .bind(i64::from(outgoing))
        .bind(i64::from(sender_device))
        .bind(sent_at)
        .bind(sealed)
        .bind(uid)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The conversation with `peer`, oldest first.
    pub async fn history(&self, peer: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, peer, outgoing, sender_device, sent_at, body_sealed, uid, status, sender \
             FROM messages WHERE peer = ? ORDER BY id",
        )
        .bind(peer)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.try_get(0)?;
                let sealed: Vec<u8> = row.try_get(5)?;
                let outgoing: i64 = row.try_get(2)?;
                let device: i64 = row.try_get(3)?;
                Ok(StoredMessage {
                    id,
                    peer: row.try_get(1)?,
                    outgoing: outgoing != 0,
                    sender_device: u32::try_from(device).unwrap_or_default(),
                    sent_at: row.try_get(4)?,
                    body: self
                        .open_sealed(&format!("messages:{id}"), &sealed)?
                        .to_vec(),
                    uid: row.try_get(6)?,
                    status: MessageStatus::from_i64(row.try_get(7)?),
                    sender: row.try_get(8)?,
                })
            })
            .collect()
    }

    /// Raises the status of our messages to `peer` named by `uids` (never lowers it).
    /// Returns how many changed.
    pub async fn mark_outgoing(
        &self,
        peer: &str,
        uids: &[String],
        status: MessageStatus,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut changed = 0;
        for uid in uids {
            changed += sqlx::query(
                "UPDATE messages SET status = ? \
                 WHERE peer = ? AND uid = ? AND outgoing = 1 AND status < ?",
            )
            .bind(status.to_i64())
            .bind(peer)
            .bind(uid)
            .bind(status.to_i64())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Marks every unread incoming message from `peer` read; returns the uids of those that
    /// had one (for a read receipt).
    pub async fn mark_incoming_read(&self, peer: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let uids: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT uid FROM messages WHERE peer = ? AND outgoing = 0 AND status < 2 ORDER BY id",
        )
        .bind(peer)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET status = 2 WHERE peer = ? AND outgoing = 0 AND status < 2",
        )
        .bind(peer)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(uids.into_iter().flatten().collect())
    }

    /// Records a file announced by a message (its descriptor sealed), keyed by the message:
    /// sender, conversation and message id. The same message recorded again (a duplicate
    /// delivery) changes nothing and returns `false`. A blob id already announced by another
    /// sender, or by the same sender with another descriptor, is refused with
    /// [`StoreError::BlobConflict`]: the first record is kept and nothing is merged.
    pub async fn put_file(&self, file: &NewFile<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT sender, peer, message_id, descriptor_sealed FROM files WHERE blob_id = ?",
        )
        .bind(file.blob_id)
        .fetch_all(&mut *tx)
        .await?;
        let conflict = |first: Option<String>| StoreError::BlobConflict {
            blob_id: file.blob_id.to_owned(),
            first: first.unwrap_or_else(|| "an earlier message".into()),
            second: file.sender.to_owned(),
        };
        for row in rows {
            let sender: Option<String> = row.try_get(0)?;
            let peer: String = row.try_get(1)?;
            let message_id: Option<String> = row.try_get(2)?;
            let sealed: Vec<u8> = row.try_get(3)?;
            if sender.as_deref() != Some(file.sender) {
                return Err(conflict(sender));
            }
            let context = file_context(
                file.blob_id,
                sender.as_deref(),
                &peer,
                message_id.as_deref(),
            );
            let descriptor = self.open_sealed(&context, &sealed)?;
            if descriptor.as_slice() != file.descriptor {
                return Err(conflict(sender));
            }
            if peer == file.peer && message_id.as_deref() == Some(file.message_id) {
                return Ok(false);
            }
        }
        let context = file_context(
            file.blob_id,
            Some(file.sender),
            file.peer,
            Some(file.message_id),
        );
        let sealed = self.seal(&context, file.descriptor)?;
        sqlx::query(
            "INSERT INTO files (blob_id, sender, peer, message_id, outgoing, sender_device, \
             sent_at, descriptor_sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(file.blob_id)
        .bind(file.sender)
        .bind(file.peer)
        .bind(file.message_id)
        .bind(i64::from(file.outgoing))
        .bind(i64::from(file.sender_device))
        .bind(file.sent_at)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The file record of a blob, if any (every record of one blob id has the same sender
    /// and descriptor: [`Self::put_file`] refuses anything else).
    pub async fn file(&self, blob_id: &str) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(
            "SELECT peer, outgoing, sender_device, sent_at, descriptor_sealed, sender, \
             message_id FROM files WHERE blob_id = ? ORDER BY id LIMIT 1",
        )
        .bind(blob_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let peer: String = row.try_get(0)?;
        let outgoing: i64 = row.try_get(1)?;
        let device: i64 = row.try_get(2)?;
        let sealed: Vec<u8> = row.try_get(4)?;
        let sender: Option<String> = row.try_get(5)?;
        let message_id: Option<String> = row.try_get(6)?;
        let context = file_context(blob_id, sender.as_deref(), &peer, message_id.as_deref());
        Ok(Some(StoredFile {
            blob_id: blob_id.to_owned(),
            descriptor: self.open_sealed(&context, &sealed)?,
            peer,
            sender,
            message_id,
            outgoing: outgoing != 0,
            sender_device: u32::try_from(device).unwrap_or_default(),
            sent_at: row.try_get(3)?,
        }))
    }

    /// Closes the database cleanly.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// The sealing context of a file record: the blob id and the message that announced it
/// (records from before message keys existed used the blob id alone).
fn file_context(
    blob_id: &str,
    sender: Option<&str>,
    peer: &str,
    message_id: Option<&str>,
) -> String {
    match (sender, message_id) {
        (Some(sender), Some(message_id)) => format!(
            "files:{blob_id}|{}:{sender}|{}:{peer}|{message_id}",
            sender.len(),
            peer.len()
        ),
        _ => format!("files:{blob_id}"),
    }
}

fn session_context(username: &str, device: u32, base_key: &[u8]) -> String {
    let hex: String = base_key.iter().map(|b| format!("{b:02x}")).collect();
    format!("sessions:{}:{username}:{device}:{hex}", username.len())
}

async fn meta(pool: &SqlitePool, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

fn contact_context(username: &str) -> String {
    format!("contacts:{}:{username}", username.len())
}

/// What a contact's seal covers: pinned key length (2) || key || verified (1)
/// || changed flag (1) [|| changed key length (2) || changed key].
fn contact_check(contact: &Contact) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = Vec::with_capacity(2 * (2 + 129) + 2);
    put(&mut out, &contact.identity_key);
    out.push(u8::from(contact.verified));
    match &contact.changed_identity_key {
        Some(changed) => {
            out.push(1);
            put(&mut out, changed);
        }
        None => out.push(0),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> KeySource<'static> {
        KeySource::Key(StoreKey::from_bytes([byte; 32]))
    }

    #[tokio::test]
    async fn a_wrong_passphrase_is_refused_and_the_right_one_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, KeySource::Passphrase("correct horse"))
            .await
            .unwrap();
        store
            .put_secret("identity", b"secret identity")
            .await
            .unwrap();
        store.close().await;

        let err = Store::open(&path, KeySource::Passphrase("wrong horse"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase), "{err}");
        let store = Store::open(&path, KeySource::Passphrase("correct horse"))
            .await
            .unwrap();
        assert_eq!(
            store.secret("identity").await.unwrap().unwrap().as_slice(),
            b"secret identity"
        );
    }

    #[tokio::test]
    async fn secrets_never_reach_the_disk_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let marker = b"MARKER-7f3a9c-plaintext";
        let store = Store::open(&path, key(1)).await.unwrap();
        store.put_secret("identity", marker).await.unwrap();
        store
            .put_prekey(PrekeyKind::OneTime, 5, marker)
            .await
            .unwrap();
        store
            .save_session("bob", 1, &[9; 32], marker, true)
            .await
            .unwrap();
        store
            .add_message("bob", false, 1, 1000, marker, None)
            .await
            .unwrap();
        store
            .put_file(&NewFile {
                blob_id: "blob1",
                sender: "bob",
                peer: "bob",
                message_id: "m1",
                outgoing: false,
                sender_device: 1,
                sent_at: 1000,
                descriptor: marker,
            })
            .await
            .unwrap();
        let file = store.file("blob1").await.unwrap().unwrap();
        assert_eq!(file.descriptor.as_slice(), marker);
        assert_eq!((file.peer.as_str(), file.outgoing), ("bob", false));
        assert!(store.file("blob2").await.unwrap().is_none());
        store.close().await;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(marker.len()).any(|w| w == marker));
        }
        let err = Store::open(&path, key(2)).await.unwrap_err();
        assert!(matches!(err, StoreError::WrongPassphrase));
    }

    #[tokio::test]
    async fn a_sealed_value_moved_to_another_row_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), key(3)).await.unwrap();
        store
            .put_prekey(PrekeyKind::OneTime, 1, b"one")
            .await
            .unwrap();
        store
            .put_prekey(PrekeyKind::OneTime, 2, b"two")
            .await
            .unwrap();
        sqlx::query("UPDATE prekeys SET secret_sealed = (SELECT secret_sealed FROM prekeys WHERE id = 1) WHERE id = 2")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(
            store.prekey(PrekeyKind::OneTime, 2).await,
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            store
                .prekey(PrekeyKind::OneTime, 1)
                .await
                .unwrap()
                .unwrap()
                .as_slice(),
            b"one"
        );
        store.delete_prekey(PrekeyKind::OneTime, 1).await.unwrap();
        assert!(
            store
                .prekey(PrekeyKind::OneTime, 1)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn sessions_contacts_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), key(4)).await.unwrap();
        store
            .save_session("bob", 1, &[1; 32], b"old", true)
            .await
            .unwrap();
        store
            .save_session("bob", 1, &[2; 32], b"new", true)
            .await
            .unwrap();
        store
            .save_session("bob", 1, &[1; 32], b"old2", false)
            .await
            .unwrap();
        let sessions = store.sessions("bob", 1).await.unwrap();
        assert_eq!(sessions.len(), 2);
        assert!(sessions[0].active);
        assert_eq!(sessions[0].state.as_slice(), b"new");
        assert_eq!(sessions[1].state.as_slice(), b"old2");
        assert!(!sessions[1].active);

        store.pin_contact("bob", b"key1").await.unwrap();
        store.pin_contact("bob", b"key-ignored").await.unwrap();
        assert!(store.mark_verified("bob").await.unwrap());
        store.record_changed_identity("bob", b"key2").await.unwrap();
        let bob = store.contact("bob").await.unwrap().unwrap();
        assert_eq!(bob.identity_key, b"key1");
        assert!(bob.verified);
        assert_eq!(bob.changed_identity_key.as_deref(), Some(&b"key2"[..]));
        assert!(store.accept_changed_identity("bob").await.unwrap());
        let bob = store.contact("bob").await.unwrap().unwrap();
        assert_eq!(
            (bob.identity_key.as_slice(), bob.verified),
            (&b"key2"[..], false)
        );
        assert!(!store.accept_changed_identity("bob").await.unwrap());

        store
            .add_message("bob", true, 1, 10, b"hi", Some("u1"))
            .await
            .unwrap();
        store
            .add_message("carol", false, 2, 11, b"other", Some("u2"))
            .await
            .unwrap();
        store
            .add_message("bob", false, 3, 12, b"hello", Some("u3"))
            .await
            .unwrap();
        let history = store.history("bob").await.unwrap();
        let bodies: Vec<_> = history.iter().map(|m| m.body.as_slice()).collect();
        assert_eq!(bodies, [&b"hi"[..], &b"hello"[..]]);
        assert!(history[0].outgoing && !history[1].outgoing);
        assert_eq!(history[0].uid.as_deref(), Some("u1"));

        // Receipts raise the status of our own messages only, and never lower it.
        let uids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let read = MessageStatus::Read;
        assert_eq!(
            store
                .mark_outgoing("bob", &uids(&["u1", "u3"]), read)
                .await
                .unwrap(),
            1
        );
        let delivered = MessageStatus::Delivered;
        assert_eq!(
            store
                .mark_outgoing("bob", &uids(&["u1"]), delivered)
                .await
                .unwrap(),
            0
        );
        let history = store.history("bob").await.unwrap();
        assert_eq!(
            (history[0].status, history[1].status),
            (MessageStatus::Read, MessageStatus::Sent)
        );
        // Reading the conversation marks incoming messages once.
        assert_eq!(store.mark_incoming_read("bob").await.unwrap(), ["u3"]);
        assert!(store.mark_incoming_read("bob").await.unwrap().is_empty());
        assert_eq!(store.mark_incoming_read("carol").await.unwrap(), ["u2"]);
    }

    #[tokio::test]
    async fn a_blob_id_from_a_second_sender_is_refused_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db"), key(9))
            .await
            .unwrap();
        let file = |sender, peer, message_id, descriptor| NewFile {
            blob_id: "blob1",
            sender,
            peer,
            message_id,
            outgoing: false,
            sender_device: 1,
            sent_at: 1000,
            descriptor,
        };
        let first = file("mallory", "mallory", "m1", b"mallory's key".as_slice());
        assert!(store.put_file(&first).await.unwrap());
        // The same message again (a duplicate delivery) is no change.
        assert!(!store.put_file(&first).await.unwrap());
        // Alice's message names the same blob id: refused, and the record stays Mallory's.
        let err = store
            .put_file(&file("alice", "alice", "a1", b"alice's key"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::BlobConflict { first, second, .. }
                if first == "mallory" && second == "alice"),
            "{err}"
        );
        // So is the same sender naming it with another descriptor.
        let err = store
            .put_file(&file("mallory", "group:00", "m2", b"another key"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::BlobConflict { .. }), "{err}");
        let stored = store.file("blob1").await.unwrap().unwrap();
        assert_eq!(stored.sender.as_deref(), Some("mallory"));
        assert_eq!(stored.message_id.as_deref(), Some("m1"));
        assert_eq!(stored.descriptor.as_slice(), b"mallory's key");
    }

    #[tokio::test]
    async fn a_store_is_open_in_one_place_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, key(3)).await.unwrap();
        let err = Store::open(&path, key(3)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InUse { pid: Some(pid) } if pid == std::process::id()),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("in use by process {}", std::process::id()))
        );
        store.close().await;
        let again = Store::open(&path, key(3)).await.unwrap();
        again.close().await;
    }

    /// A contact row as SQLite holds it: username, identity key, verified, changed key.
    type ContactRow = (String, Vec<u8>, i64, Option<Vec<u8>>);

    /// Pinned identities and the verified flag are sealed: an edit of the file (another
    /// identity key, a verified flag set, a pending change removed) is detected.
    #[tokio::test]
    async fn a_tampered_contact_row_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, key(4)).await.unwrap();
        store.pin_contact("alice", b"alice's key").await.unwrap();
        store.pin_contact("carol", b"carol's key").await.unwrap();
        store
            .record_changed_identity("carol", b"carol's new key")
            .await
            .unwrap();
        store.close().await;
        let db = format!("sqlite://{}", path.display());
        for edit in [
            "UPDATE contacts SET identity_key = x'6d616c6c6f7279' WHERE username = 'alice'",
            "UPDATE contacts SET verified = 1 WHERE username = 'alice'",
            "UPDATE contacts SET changed_identity_key = NULL WHERE username = 'carol'",
        ] {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
                .await
                .unwrap();
            let before: Vec<ContactRow> = sqlx::query_as(
                "SELECT username, identity_key, verified, changed_identity_key FROM contacts",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            sqlx::query(edit).execute(&mut conn).await.unwrap();
            drop(conn);
            let store = Store::open(&path, key(4)).await.unwrap();
            let user = if edit.contains("carol") {
                "carol"
            } else {
                "alice"
            };
            let read = store.contact(user).await;
            assert!(
                matches!(read, Err(StoreError::Corrupt(_))),
                "{edit}: {read:?}"
            );
            assert!(store.contacts().await.is_err(), "{edit}");
            // A later change does not seal the edit in.
            assert!(store.mark_verified(user).await.is_err(), "{edit}");
            store.close().await;
            // Put the row back for the next edit.
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
                .await
                .unwrap();
            for (username, identity, verified, changed) in before {
                sqlx::query(
                    "UPDATE contacts SET identity_key = ?, verified = ?, changed_identity_key = ? \
                     WHERE username = ?",
                )
                .bind(identity)
                .bind(verified)
                .bind(changed)
                .bind(username)
                .execute(&mut conn)
                .await
                .unwrap();
            }
        }
        let store = Store::open(&path, key(4)).await.unwrap();
        assert_eq!(store.contacts().await.unwrap().len(), 2);
    }

    /// A store made before contacts were sealed: its rows are sealed at the next open, once;
    /// after that, a row without a seal is damage, not an old row.
    #[tokio::test]
    async fn contacts_of_an_older_store_are_sealed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, key(6)).await.unwrap();
        store.pin_contact("alice", b"alice's key").await.unwrap();
        let old_check = store.seal("meta:key_check", KEY_CHECK).unwrap();
        store.close().await;
        let db = format!("sqlite://{}", path.display());
        let unseal = |check: Option<Vec<u8>>| {
            let db = db.clone();
            async move {
                let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
                    .await
                    .unwrap();
                sqlx::query("UPDATE contacts SET check_sealed = NULL")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                if let Some(check) = check {
                    sqlx::query("UPDATE meta SET value = ? WHERE key = 'key_check'")
                        .bind(check)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
            }
        };
        // As an older store left it: no seals, the old key check.
        unseal(Some(old_check)).await;
        let store = Store::open(&path, key(6)).await.unwrap();
        assert_eq!(store.contacts().await.unwrap().len(), 1);
        store.close().await;
        // Seals removed later are damage.
        unseal(None).await;
        let store = Store::open(&path, key(6)).await.unwrap();
        assert!(matches!(
            store.contact("alice").await,
            Err(StoreError::Corrupt(_))
        ));
    }
}
