//! The SQLite store: one file, every secret-bearing column sealed under the store key.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use zeroize::Zeroizing;

use tacit_api::DeviceId;
use tacit_crypto::GroupId;

use super::manifest::Manifest;
use super::traits::Secret;
use super::{
    Contact, Conversation, GroupStore, KeySource, MessageStatus, NewFile, PreKeyStore, PrekeyKind,
    Purged, SenderKeyStore, SessionStore, SessionWrite, StoreError, StoreKey, StoredFile,
    StoredMessage, StoredSession,
};

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const SALT_LEN: usize = 16;
const AAD_PREFIX: &str = "tacit-store-v1|";
/// The key check of a store made before contact rows were sealed.
const KEY_CHECK: &[u8] = b"tacit store key check";
/// The key check of a store whose contact rows are all sealed. (The upgrade is recorded in
/// a sealed value, so deleting a marker cannot make a tampered row be sealed again.)
const KEY_CHECK_SEALED_CONTACTS: &[u8] = b"tacit store key check v2: contacts sealed";
/// The key check of a store that keeps a manifest (the digest of every sealed row as last
/// written), so that deleting the manifest is damage, not an old store.
const KEY_CHECK_MANIFEST: &[u8] = b"tacit store key check v3: contacts sealed, manifest kept";
/// The sealing context of the manifest.
const MANIFEST_CONTEXT: &str = "meta:manifest";

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
        .map_err(|source| StoreError::Lock {
            path: lock_path.clone(),
            source,
        })?;
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
            return Err(StoreError::Lock {
                path: lock_path,
                source: e,
            });
        }
    }
    // Ours now: say who holds it, for the next process that tries.
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    written.map_err(|source| StoreError::Lock {
        path: lock_path.clone(),
        source,
    })?;
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
            .foreign_keys(true)
            // Deleted rows (disappearing messages) are overwritten, not left in free pages.
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        move_group_secrets(&pool).await?;

        let salt = match meta(&pool, "salt").await? {
            Some(salt) => salt,
            None => {
                let mut salt = vec![0u8; SALT_LEN];
                getrandom::fill(&mut salt).map_err(StoreError::Random)?;
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
                let opened = opened.as_slice();
                if opened != KEY_CHECK_MANIFEST {
                    if opened != KEY_CHECK && opened != KEY_CHECK_SEALED_CONTACTS {
                        return Err(StoreError::WrongPassphrase);
                    }
                    // An older store: seal its contact rows (if not yet done), record every
                    // sealed row in a new manifest, and say so in the key check, once.
                    let mut tx = store.begin_write().await?;
                    if opened == KEY_CHECK {
                        store.seal_old_contacts(&mut tx).await?;
                    }
                    store.make_manifest(&mut tx).await?;
                    sqlx::query("UPDATE meta SET value = ? WHERE key = 'key_check'")
                        .bind(store.seal("meta:key_check", KEY_CHECK_MANIFEST)?)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
            }
            None => {
                let check = store.seal("meta:key_check", KEY_CHECK_MANIFEST)?;
                let mut tx = store.begin_write().await?;
                for (name, value) in [("salt", salt.as_slice()), ("key_check", &check)] {
                    sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?)")
                        .bind(name)
                        .bind(value)
                        .execute(&mut *tx)
                        .await?;
                }
                store.save_manifest(&mut tx, &Manifest::default()).await?;
                tx.commit().await?;
            }
        }
        // What ran out while no client had the store open goes before anything reads it.
        store.purge_expired(crate::client::now_ms()).await?;
        Ok(store)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.key.0).into())
    }

    fn seal(&self, context: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(StoreError::Random)?;
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

    /// Begins a write: `BEGIN IMMEDIATE` takes SQLite's write lock at once, so two writers
    /// (two tasks here, or two processes that got past the lock file) never both read a row
    /// and then both write it back.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The manifest, opened and checked.
    async fn manifest(&self, conn: &mut SqliteConnection) -> Result<Manifest, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'manifest'")
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::Corrupt("manifest (missing)".into()));
        };
        let sealed: Vec<u8> = row.try_get(0)?;
        let opened = self.open_sealed(MANIFEST_CONTEXT, &sealed)?;
        Manifest::decode(&opened).ok_or_else(|| StoreError::Corrupt("manifest".into()))
    }

    async fn save_manifest(
        &self,
        conn: &mut SqliteConnection,
        manifest: &Manifest,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(MANIFEST_CONTEXT, &manifest.encode())?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('manifest', ?) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(sealed)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Stores a named secret (identity, account credential, ...), sealed.
    pub async fn put_secret(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        self.put_secret_in(&mut tx, &mut manifest, name, value)
            .await?;
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_secret_in(
        &self,
        conn: &mut SqliteConnection,
        manifest: &mut Manifest,
        name: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let context = secret_context(name);
        let sealed = self.seal(&context, value)?;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(format!("secret:{name}"))
            .bind(&sealed)
            .execute(&mut *conn)
            .await?;
        manifest.set(context, &sealed);
        Ok(())
    }

    async fn secret_in(
        &self,
        conn: &mut SqliteConnection,
        manifest: &Manifest,
        name: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let context = secret_context(name);
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(format!("secret:{name}"))
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            manifest.check_absent(&context)?;
            return Ok(None);
        };
        let sealed: Vec<u8> = row.try_get(0)?;
        let value = self.open_sealed(&context, &sealed)?;
        manifest.check(&context, &sealed)?;
        Ok(Some(value))
    }

    /// Loads a named secret, lets `step` decide its new value (`None`: unchanged) and stores
    /// it, in one write transaction: what `step` computed from the value (an encryption
    /// under a chain, say) can never be computed again from the same value by another
    /// writer.
    pub async fn advance_secret<T>(
        &self,
        name: &str,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Zeroizing<Vec<u8>>>, T),
    ) -> Result<T, StoreError> {
        self.advance_sealed(Sealed::Secret(name), step).await
    }

    /// Loads a sealed value, lets `step` decide its new value (`None`: unchanged) and stores
    /// it, in one write transaction ([`Self::advance_secret`], [`Self::advance_group_row`]).
    async fn advance_sealed<T>(
        &self,
        row: Sealed<'_>,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Zeroizing<Vec<u8>>>, T),
    ) -> Result<T, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        let current = match row {
            Sealed::Secret(name) => self.secret_in(&mut tx, &manifest, name).await?,
            Sealed::Group(row) => self.group_row(&mut tx, &manifest, row).await?,
        };
        let (new, out) = step(current.as_ref().map(|v| v.as_slice()));
        if let Some(new) = new {
            match row {
                Sealed::Secret(name) => {
                    self.put_secret_in(&mut tx, &mut manifest, name, &new)
                        .await?;
                }
                Sealed::Group(row) => {
                    self.put_group_row(&mut tx, &mut manifest, row, &new)
                        .await?;
                }
            }
            self.save_manifest(&mut tx, &manifest).await?;
            tx.commit().await?;
        }
        Ok(out)
    }

    /// Deletes a named secret (if there is one).
    pub async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        sqlx::query("DELETE FROM meta WHERE key = ?")
            .bind(format!("secret:{name}"))
            .execute(&mut *tx)
            .await?;
        manifest.remove(&secret_context(name));
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every secret whose name starts with `prefix`, with its name, in name order.
    pub async fn secrets_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        let key_prefix = format!("secret:{prefix}");
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key")
                .bind(i64::try_from(key_prefix.len()).unwrap_or(i64::MAX))
                .bind(&key_prefix)
                .fetch_all(&mut *tx)
                .await?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for (key, sealed) in rows {
            let name = key["secret:".len()..].to_owned();
            let context = secret_context(&name);
            let value = self.open_sealed(&context, &sealed)?;
            manifest.check(&context, &sealed)?;
            seen.insert(context);
            out.push((name, value));
        }
        manifest.check_all_seen(&secret_context(prefix), &seen)?;
        Ok(out)
    }

    /// Deletes every secret whose name starts with `prefix`.
    pub async fn delete_secrets_with_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        let key_prefix = format!("secret:{prefix}");
        sqlx::query("DELETE FROM meta WHERE substr(key, 1, ?) = ?")
            .bind(i64::try_from(key_prefix.len()).unwrap_or(i64::MAX))
            .bind(&key_prefix)
            .execute(&mut *tx)
            .await?;
        manifest.remove_prefix(&secret_context(prefix));
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads a named secret.
    pub async fn secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        self.secret_in(&mut tx, &manifest, name).await
    }

    /// Stores a prekey secret (its `to_secret_bytes` encoding).
    pub async fn put_prekey(
        &self,
        kind: PrekeyKind,
        id: u32,
        secret: &[u8],
    ) -> Result<(), StoreError> {
        let context = prekey_context(kind, id);
        let sealed = self.seal(&context, secret)?;
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        sqlx::query("INSERT INTO prekeys (kind, id, secret_sealed) VALUES (?, ?, ?) ON CONFLICT(kind, id) DO UPDATE SET secret_sealed = excluded.secret_sealed")
            .bind(kind.code())
            .bind(i64::from(id))
            .bind(&sealed)
            .execute(&mut *tx)
            .await?;
        manifest.set(context, &sealed);
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads a prekey secret.
    pub async fn prekey(
        &self,
        kind: PrekeyKind,
        id: u32,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        let context = prekey_context(kind, id);
        let row = sqlx::query("SELECT secret_sealed FROM prekeys WHERE kind = ? AND id = ?")
            .bind(kind.code())
            .bind(i64::from(id))
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            Some(row) => {
                let sealed: Vec<u8> = row.try_get(0)?;
                let secret = self.open_sealed(&context, &sealed)?;
                manifest.check(&context, &sealed)?;
                Ok(Some(secret))
            }
            None => {
                // A used one-time prekey put back would let a first message be replayed.
                manifest.check_absent(&context)?;
                Ok(None)
            }
        }
    }

    /// Deletes a prekey secret (a one-time key once a session used it).
    pub async fn delete_prekey(&self, kind: PrekeyKind, id: u32) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        sqlx::query("DELETE FROM prekeys WHERE kind = ? AND id = ?")
            .bind(kind.code())
            .bind(i64::from(id))
            .execute(&mut *tx)
            .await?;
        manifest.remove(&prekey_context(kind, id));
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a session; `active` makes it the one used to send to that device (the others
    /// of the device become inactive).
    pub async fn save_session(
        &self,
        username: &str,
        device: DeviceId,
        base_key: &[u8],
        state: &[u8],
        active: bool,
    ) -> Result<(), StoreError> {
        let device = device.0;
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        self.save_session_in(
            &mut tx,
            &mut manifest,
            username,
            device,
            base_key,
            state,
            active,
        )
        .await?;
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the row, and where it is recorded
    async fn save_session_in(
        &self,
        conn: &mut SqliteConnection,
        manifest: &mut Manifest,
        username: &str,
        device: u32,
        base_key: &[u8],
        state: &[u8],
        active: bool,
    ) -> Result<(), StoreError> {
        let context = session_context(username, device, base_key);
        let sealed = self.seal(&context, state)?;
        if active {
            sqlx::query("UPDATE sessions SET active = 0 WHERE username = ? AND device = ?")
                .bind(username)
                .bind(i64::from(device))
                .execute(&mut *conn)
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
        .bind(&sealed)
        .execute(&mut *conn)
        .await?;
        manifest.set(context, &sealed);
        Ok(())
    }

    /// Every session with one device, the active one first, then newest first.
    pub async fn sessions(
        &self,
        username: &str,
        device: DeviceId,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let device = device.0;
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        self.sessions_in(&mut tx, &manifest, username, device).await
    }

    async fn sessions_in(
        &self,
        conn: &mut SqliteConnection,
        manifest: &Manifest,
        username: &str,
        device: u32,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let rows = sqlx::query(
            "SELECT base_key, active, state_sealed FROM sessions WHERE username = ? AND device = ?
             ORDER BY active DESC, updated_seq DESC",
        )
        .bind(username)
        .bind(i64::from(device))
        .fetch_all(&mut *conn)
        .await?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let base_key: Vec<u8> = row.try_get(0)?;
            let active: i64 = row.try_get(1)?;
            let sealed: Vec<u8> = row.try_get(2)?;
            let context = session_context(username, device, &base_key);
            let state = self.open_sealed(&context, &sealed)?;
            manifest.check(&context, &sealed)?;
            seen.insert(context);
            out.push(StoredSession {
                base_key,
                active: active != 0,
                state,
            });
        }
        manifest.check_all_seen(&session_context(username, device, &[]), &seen)?;
        Ok(out)
    }

    /// Loads the sessions with a device, lets `step` use one (to encrypt or decrypt) and
    /// saves the state it returns as the active session, all in one write transaction. So
    /// the load, the use of a message key and the save of the advanced state are one step:
    /// two writers (tasks, or processes past the lock file) can never both encrypt under
    /// the state they loaded, which would put two messages under one message key.
    pub async fn advance_session<T>(
        &self,
        username: &str,
        device: DeviceId,
        step: impl FnOnce(Vec<StoredSession>) -> (Option<SessionWrite>, T),
    ) -> Result<T, StoreError> {
        let device = device.0;
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        let stored = self
            .sessions_in(&mut tx, &manifest, username, device)
            .await?;
        let (write, out) = step(stored);
        if let Some(write) = write {
            self.save_session_in(
                &mut tx,
                &mut manifest,
                username,
                device,
                &write.base_key,
                &write.state,
                true,
            )
            .await?;
            self.save_manifest(&mut tx, &manifest).await?;
            tx.commit().await?;
        }
        Ok(out)
    }

    /// Deletes every session with a user (after they re-registered with a new identity).
    pub async fn delete_sessions(&self, username: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        sqlx::query("DELETE FROM sessions WHERE username = ?")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        manifest.remove_prefix(&format!("sessions:{}:{username}:", username.len()));
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The contact record for `username`, if any.
    pub async fn contact(&self, username: &str) -> Result<Option<Contact>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        self.contact_in(&mut tx, &manifest, username).await
    }

    async fn contact_in(
        &self,
        conn: &mut SqliteConnection,
        manifest: &Manifest,
        username: &str,
    ) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query(
            "SELECT username, identity_key, verified, changed_identity_key, check_sealed \
             FROM contacts WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => self.contact_from_row(&row, manifest).map(Some),
            None => {
                manifest.check_absent(&contact_context(username))?;
                Ok(None)
            }
        }
    }

    /// Every contact, by username.
    pub async fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        let rows = sqlx::query(
            "SELECT username, identity_key, verified, changed_identity_key, check_sealed \
             FROM contacts ORDER BY username",
        )
        .fetch_all(&mut *tx)
        .await?;
        let contacts = rows
            .iter()
            .map(|row| self.contact_from_row(row, &manifest))
            .collect::<Result<Vec<_>, _>>()?;
        let seen = contacts
            .iter()
            .map(|c| contact_context(&c.username))
            .collect();
        manifest.check_all_seen("contacts:", &seen)?;
        Ok(contacts)
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
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        let current = self.contact_in(&mut tx, &manifest, username).await?;
        let Some(new) = change(current) else {
            return Ok(false);
        };
        let context = contact_context(username);
        let seal = self.seal(&context, &contact_check(&new))?;
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
        .bind(&seal)
        .execute(&mut *tx)
        .await?;
        manifest.set(context, &seal);
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A contact row, checked against its seal and the manifest.
    fn contact_from_row(
        &self,
        row: &sqlx::sqlite::SqliteRow,
        manifest: &Manifest,
    ) -> Result<Contact, StoreError> {
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
        let sealed = sealed.ok_or_else(corrupt)?;
        let opened = self.open_sealed(&context, &sealed)?;
        if opened.as_slice() != contact_check(&contact).as_slice() {
            return Err(corrupt());
        }
        manifest.check(&context, &sealed)?;
        Ok(contact)
    }

    /// Seals the contact rows of a store made before contacts were sealed (once per store).
    async fn seal_old_contacts(&self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT username, identity_key, verified, changed_identity_key FROM contacts \
             WHERE check_sealed IS NULL",
        )
        .fetch_all(&mut *conn)
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
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Makes the manifest of a store made before there was one, from the rows as they are
    /// (once per store: the key check then records that the store has a manifest).
    async fn make_manifest(&self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        let mut manifest = Manifest::default();
        let secrets: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT key, value FROM meta WHERE substr(key, 1, 7) = 'secret:'")
                .fetch_all(&mut *conn)
                .await?;
        for (key, sealed) in secrets {
            manifest.set(format!("meta:{key}"), &sealed);
        }
        let prekeys: Vec<(i64, i64, Vec<u8>)> =
            sqlx::query_as("SELECT kind, id, secret_sealed FROM prekeys")
                .fetch_all(&mut *conn)
                .await?;
        for (kind, id, sealed) in prekeys {
            manifest.set(format!("prekeys:{kind}:{id}"), &sealed);
        }
        let sessions: Vec<(String, i64, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT username, device, base_key, state_sealed FROM sessions")
                .fetch_all(&mut *conn)
                .await?;
        for (username, device, base_key, sealed) in sessions {
            let device = u32::try_from(device)
                .map_err(|_| StoreError::Corrupt(format!("session of {username}")))?;
            manifest.set(session_context(&username, device, &base_key), &sealed);
        }
        let contacts: Vec<(String, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT username, check_sealed FROM contacts")
                .fetch_all(&mut *conn)
                .await?;
        for (username, sealed) in contacts {
            if let Some(sealed) = sealed {
                manifest.set(contact_context(&username), &sealed);
            }
        }
        self.save_manifest(conn, &manifest).await
    }

    /// Appends a message to a group's conversation, naming who wrote it.
    #[allow(clippy::too_many_arguments)] // one column each
    pub async fn add_group_message(
        &self,
        group: GroupId,
        sender: &str,
        outgoing: bool,
        sender_device: DeviceId,
        sent_at: i64,
        body: &[u8],
        uid: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<i64, StoreError> {
        let conversation = Conversation::Group(group);
        let id = self
            .add_message(
                &conversation,
                outgoing,
                sender_device,
                sent_at,
                body,
                uid,
                expires_at,
            )
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
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM prekeys WHERE kind = ? AND id < ?")
            .bind(kind.code())
            .bind(i64::from(id))
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM prekeys WHERE kind = ? AND id < ?")
            .bind(kind.code())
            .bind(i64::from(id))
            .execute(&mut *tx)
            .await?;
        for old in ids {
            manifest.remove(&format!("prekeys:{}:{old}", kind.code()));
        }
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }
    /// Appends a message to the history, to be deleted at `expires_at` (milliseconds since
    /// the Unix epoch; `None` keeps it).
    #[allow(clippy::too_many_arguments)] // one column each
    pub async fn add_message(
        &self,
        conversation: &Conversation,
        outgoing: bool,
        sender_device: DeviceId,
        sent_at: i64,
        body: &[u8],
        uid: Option<&str>,
        expires_at: Option<i64>,
    ) -> Result<i64, StoreError> {
        let sender_device = sender_device.0;
        let mut tx = self.begin_write().await?;
        // Never an id a purged message had (its seal context, and what `send` returned).
        let id: i64 = sqlx::query(
            "SELECT MAX(COALESCE((SELECT MAX(id) FROM messages), 0), \
             COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)) + 1",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let sealed = self.seal(&message_context(id, expires_at), body)?;
        sqlx::query(
            "INSERT INTO messages (id, peer, outgoing, sender_device, sent_at, body_sealed, uid, \
             expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(conversation.key())
        .bind(i64::from(outgoing))
        .bind(i64::from(sender_device))
        .bind(sent_at)
        .bind(sealed)
        .bind(uid)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Deletes every message and file record whose time is up at `now` (milliseconds since
    /// the Unix epoch), and the saved copies of those files (where [`Self::set_saved`]
    /// recorded one, if it is still the file that was saved there: same size), then
    /// checkpoints the write-ahead log so that the deleted rows leave it too. Run when the
    /// store opens and by the client as it goes.
    pub async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        let mut tx = self.begin_write().await?;
        let files = sqlx::query(
            "SELECT id, blob_id, saved_sealed, descriptor_sealed, sender, peer, message_id, \
             expires_at FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut saved = Vec::new();
        for row in &files {
            // A row that cannot be read is deleted all the same; only its copy stays.
            if let Some(copy) = self.saved_copy(row) {
                saved.push(copy);
            }
        }
        let files_gone =
            sqlx::query("DELETE FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?")
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let messages =
            sqlx::query("DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?")
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        let mut copies = 0;
        for (path, size) in saved {
            let same =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size);
            if same && std::fs::remove_file(&path).is_ok() {
                copies += 1;
            }
        }
        if messages + files_gone > 0 {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(Purged {
            messages,
            files: files_gone,
            copies,
        })
    }

    /// Where a due file row says its copy was saved, and the file's size; `None` when it
    /// has none or any part of the row does not read.
    fn saved_copy(&self, row: &sqlx::sqlite::SqliteRow) -> Option<(std::path::PathBuf, u64)> {
        let id: i64 = row.try_get(0).ok()?;
        let sealed: Vec<u8> = row.try_get::<Option<Vec<u8>>, _>(2).ok()??;
        let path = self
            .open_sealed(&format!("files-saved:{id}"), &sealed)
            .ok()?;
        let blob_id: String = row.try_get(1).ok()?;
        let sender: Option<String> = row.try_get(4).ok()?;
        let peer: String = row.try_get(5).ok()?;
        let message_id: Option<String> = row.try_get(6).ok()?;
        let expires_at: Option<i64> = row.try_get(7).ok()?;
        let descriptor_sealed: Vec<u8> = row.try_get(3).ok()?;
        let context = with_expiry(
            file_context(&blob_id, sender.as_deref(), &peer, message_id.as_deref()),
            expires_at,
        );
        let descriptor = self.open_sealed(&context, &descriptor_sealed).ok()?;
        let size = serde_json::from_slice::<serde_json::Value>(&descriptor)
            .ok()?
            .get("size")?
            .as_u64()?;
        let path = String::from_utf8(path.to_vec()).ok()?;
        Some((std::path::PathBuf::from(path), size))
    }

    /// Records where the file of `blob_id` was saved (sealed), so that its copy is deleted
    /// with its record when its time is up. Only files that disappear need it.
    pub async fn set_saved(&self, blob_id: &str, path: &Path) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM files WHERE blob_id = ? AND expires_at IS NOT NULL")
                .bind(blob_id)
                .fetch_all(&mut *tx)
                .await?;
        for id in ids {
            let sealed = self.seal(
                &format!("files-saved:{id}"),
                path.to_string_lossy().as_bytes(),
            )?;
            sqlx::query("UPDATE files SET saved_sealed = ? WHERE id = ?")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A conversation's history, oldest first, without the messages whose time is up
    /// (whether or not [`Self::purge_expired`] has deleted them yet).
    pub async fn history(
        &self,
        conversation: &Conversation,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let now = crate::client::now_ms();
        let rows = sqlx::query(
            "SELECT id, peer, outgoing, sender_device, sent_at, body_sealed, uid, status, sender, \
             expires_at FROM messages WHERE peer = ? AND (expires_at IS NULL OR expires_at > ?) \
             ORDER BY id",
        )
        .bind(conversation.key())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.try_get(0)?;
                let sealed: Vec<u8> = row.try_get(5)?;
                let outgoing: i64 = row.try_get(2)?;
                let device: i64 = row.try_get(3)?;
                let peer: String = row.try_get(1)?;
                let expires_at: Option<i64> = row.try_get(9)?;
                Ok(StoredMessage {
                    id,
                    peer: Conversation::from_key(&peer),
                    outgoing: outgoing != 0,
                    sender_device: DeviceId(u32::try_from(device).unwrap_or_default()),
                    sent_at: row.try_get(4)?,
                    body: self
                        .open_sealed(&message_context(id, expires_at), &sealed)?
                        .to_vec(),
                    uid: row.try_get(6)?,
                    status: MessageStatus::from_i64(row.try_get(7)?),
                    sender: row.try_get(8)?,
                    expires_at,
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
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
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
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT sender, peer, message_id, descriptor_sealed, expires_at FROM files \
             WHERE blob_id = ?",
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
            let expires_at: Option<i64> = row.try_get(4)?;
            if sender.as_deref() != Some(file.sender) {
                return Err(conflict(sender));
            }
            let context = with_expiry(
                file_context(
                    file.blob_id,
                    sender.as_deref(),
                    &peer,
                    message_id.as_deref(),
                ),
                expires_at,
            );
            let descriptor = self.open_sealed(&context, &sealed)?;
            if descriptor.as_slice() != file.descriptor {
                return Err(conflict(sender));
            }
            if peer == file.peer.key() && message_id.as_deref() == Some(file.message_id) {
                return Ok(false);
            }
        }
        let peer = file.peer.key();
        let context = with_expiry(
            file_context(
                file.blob_id,
                Some(file.sender),
                &peer,
                Some(file.message_id),
            ),
            file.expires_at,
        );
        let sealed = self.seal(&context, file.descriptor)?;
        sqlx::query(
            "INSERT INTO files (blob_id, sender, peer, message_id, outgoing, sender_device, \
             sent_at, descriptor_sealed, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(file.blob_id)
        .bind(file.sender)
        .bind(&peer)
        .bind(file.message_id)
        .bind(i64::from(file.outgoing))
        .bind(i64::from(file.sender_device.0))
        .bind(file.sent_at)
        .bind(sealed)
        .bind(file.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The file record of a blob, if any and if its time is not up (every record of one
    /// blob id has the same sender and descriptor: [`Self::put_file`] refuses anything
    /// else).
    pub async fn file(&self, blob_id: &str) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query(
            "SELECT peer, outgoing, sender_device, sent_at, descriptor_sealed, sender, \
             message_id, expires_at FROM files WHERE blob_id = ? \
             AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT 1",
        )
        .bind(blob_id)
        .bind(crate::client::now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let peer: String = row.try_get(0)?;
        let outgoing: i64 = row.try_get(1)?;
        let device: i64 = row.try_get(2)?;
        let sealed: Vec<u8> = row.try_get(4)?;
        let sender: Option<String> = row.try_get(5)?;
        let message_id: Option<String> = row.try_get(6)?;
        let expires_at: Option<i64> = row.try_get(7)?;
        let context = with_expiry(
            file_context(blob_id, sender.as_deref(), &peer, message_id.as_deref()),
            expires_at,
        );
        Ok(Some(StoredFile {
            blob_id: blob_id.to_owned(),
            descriptor: self.open_sealed(&context, &sealed)?,
            peer: Conversation::from_key(&peer),
            sender,
            message_id,
            outgoing: outgoing != 0,
            sender_device: DeviceId(u32::try_from(device).unwrap_or_default()),
            sent_at: row.try_get(3)?,
            expires_at,
        }))
    }

    /// Closes the database cleanly.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// A sealed value that [`Store::advance_sealed`] loads and stores.
#[derive(Clone, Copy)]
enum Sealed<'a> {
    /// A named secret (`meta`).
    Secret(&'a str),
    /// A row of the group tables.
    Group(GroupRow<'a>),
}

/// A row of the group tables: which table, its key, and its sealing context. The contexts
/// are those the rows had as secrets in `meta` (before migration 0007), so the rows of an
/// older store move unchanged, still open, and still match the manifest.
#[derive(Debug, Clone, Copy)]
enum GroupRow<'a> {
    /// A group's state (`groups`).
    State(&'a str),
    /// Our chain for a group (`own_sender_keys`).
    OwnChain(&'a str),
    /// A member device's sender-key record (`sender_keys`).
    SenderKey(&'a str, &'a str, u32),
}

impl GroupRow<'_> {
    fn context(self) -> String {
        match self {
            Self::State(id) => secret_context(&format!("group:{id}")),
            Self::OwnChain(id) => secret_context(&format!("group-key:{id}")),
            Self::SenderKey(id, sender, device) => {
                secret_context(&format!("group-record:{id}:{sender}:{device}"))
            }
        }
    }
}

/// The prefix of the sealing context of every sender-key record of `sender` in a group (of
/// every member, with `sender` empty and `all`).
fn sender_keys_context(id: &str, sender: Option<&str>) -> String {
    match sender {
        Some(sender) => secret_context(&format!("group-record:{id}:{sender}:")),
        None => secret_context(&format!("group-record:{id}:")),
    }
}

/// Moves the group rows of a store made before migration 0007 from `meta` (where they were
/// secrets named `group:<id>`, `group-key:<id>` and `group-record:<id>:<sender>:<device>`)
/// into their tables, in one transaction. The sealed values move as they are. A name that
/// does not parse (never written by this code) is left where it is.
async fn move_group_secrets(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT key, value FROM meta WHERE substr(key, 1, 12) = 'secret:group' ORDER BY key",
    )
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    for (key, sealed) in rows {
        let Some(row) = old_group_row(&key) else {
            continue;
        };
        let moved =
            match row {
                GroupRow::State(id) => {
                    sqlx::query(
                        "INSERT OR IGNORE INTO groups (group_id, state_sealed) VALUES (?, ?)",
                    )
                    .bind(id)
                    .bind(&sealed)
                    .execute(&mut *tx)
                    .await?
                }
                GroupRow::OwnChain(id) => sqlx::query(
                    "INSERT OR IGNORE INTO own_sender_keys (group_id, chain_sealed) VALUES (?, ?)",
                )
                .bind(id)
                .bind(&sealed)
                .execute(&mut *tx)
                .await?,
                GroupRow::SenderKey(id, sender, device) => sqlx::query(
                    "INSERT OR IGNORE INTO sender_keys (group_id, sender, device, record_sealed) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(id)
                .bind(sender)
                .bind(i64::from(device))
                .bind(&sealed)
                .execute(&mut *tx)
                .await?,
            };
        if moved.rows_affected() == 1 {
            sqlx::query("DELETE FROM meta WHERE key = ?")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The group row an old `meta` key named, if it is one.
fn old_group_row(key: &str) -> Option<GroupRow<'_>> {
    let is_id = |id: &str| {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if let Some(id) = key.strip_prefix("secret:group:") {
        return is_id(id).then_some(GroupRow::State(id));
    }
    if let Some(id) = key.strip_prefix("secret:group-key:") {
        return is_id(id).then_some(GroupRow::OwnChain(id));
    }
    let rest = key.strip_prefix("secret:group-record:")?;
    let (id, rest) = (rest.get(..32)?, rest.get(32..)?);
    let (sender, device) = rest.strip_prefix(':')?.rsplit_once(':')?;
    let device = device.parse().ok()?;
    (is_id(id) && device_spelled(device, rest)).then_some(GroupRow::SenderKey(id, sender, device))
}

/// Whether `name` ends in `device` spelled the one way `format!` spells it.
fn device_spelled(device: u32, name: &str) -> bool {
    name.ends_with(&format!(":{device}"))
}

impl Store {
    async fn group_row(
        &self,
        conn: &mut SqliteConnection,
        manifest: &Manifest,
        row: GroupRow<'_>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let query = match row {
            GroupRow::State(id) => {
                sqlx::query("SELECT state_sealed FROM groups WHERE group_id = ?").bind(id)
            }
            GroupRow::OwnChain(id) => {
                sqlx::query("SELECT chain_sealed FROM own_sender_keys WHERE group_id = ?").bind(id)
            }
            GroupRow::SenderKey(id, sender, device) => sqlx::query(
                "SELECT record_sealed FROM sender_keys \
                 WHERE group_id = ? AND sender = ? AND device = ?",
            )
            .bind(id)
            .bind(sender)
            .bind(i64::from(device)),
        };
        let context = row.context();
        match query.fetch_optional(&mut *conn).await? {
            Some(found) => {
                let sealed: Vec<u8> = found.try_get(0)?;
                let value = self.open_sealed(&context, &sealed)?;
                manifest.check(&context, &sealed)?;
                Ok(Some(value))
            }
            None => {
                manifest.check_absent(&context)?;
                Ok(None)
            }
        }
    }

    async fn put_group_row(
        &self,
        conn: &mut SqliteConnection,
        manifest: &mut Manifest,
        row: GroupRow<'_>,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let context = row.context();
        let sealed = self.seal(&context, value)?;
        let query = match row {
            GroupRow::State(id) => sqlx::query(
                "INSERT INTO groups (group_id, state_sealed) VALUES (?, ?) \
                 ON CONFLICT(group_id) DO UPDATE SET state_sealed = excluded.state_sealed",
            )
            .bind(id),
            GroupRow::OwnChain(id) => sqlx::query(
                "INSERT INTO own_sender_keys (group_id, chain_sealed) VALUES (?, ?) \
                 ON CONFLICT(group_id) DO UPDATE SET chain_sealed = excluded.chain_sealed",
            )
            .bind(id),
            GroupRow::SenderKey(id, sender, device) => sqlx::query(
                "INSERT INTO sender_keys (group_id, sender, device, record_sealed) \
                 VALUES (?, ?, ?, ?) ON CONFLICT(group_id, sender, device) \
                 DO UPDATE SET record_sealed = excluded.record_sealed",
            )
            .bind(id)
            .bind(sender)
            .bind(i64::from(device)),
        };
        query.bind(&sealed).execute(&mut *conn).await?;
        manifest.set(context, &sealed);
        Ok(())
    }

    /// Reads a group row in a read transaction.
    async fn read_group_row(
        &self,
        row: GroupRow<'_>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        self.group_row(&mut tx, &manifest, row).await
    }

    /// Writes a group row in a write transaction.
    async fn write_group_row(&self, row: GroupRow<'_>, value: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        self.put_group_row(&mut tx, &mut manifest, row, value)
            .await?;
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Loads a group row, lets `step` decide its new value and stores it, in one write
    /// transaction.
    async fn advance_group_row<T>(
        &self,
        row: GroupRow<'_>,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Zeroizing<Vec<u8>>>, T),
    ) -> Result<T, StoreError> {
        self.advance_sealed(Sealed::Group(row), step).await
    }

    /// Deletes group rows: `sql` (with the group id bound first, then `sender` if any) and
    /// the manifest entries under `prefixes`, in one write transaction.
    async fn delete_group_rows(
        &self,
        statements: &[&str],
        id: &str,
        sender: Option<&str>,
        contexts: &[String],
        prefixes: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let mut manifest = self.manifest(&mut tx).await?;
        for sql in statements {
            let mut query = sqlx::query(sql).bind(id);
            if let Some(sender) = sender {
                query = query.bind(sender);
            }
            query.execute(&mut *tx).await?;
        }
        for context in contexts {
            manifest.remove(context);
        }
        for prefix in prefixes {
            manifest.remove_prefix(prefix);
        }
        self.save_manifest(&mut tx, &manifest).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl GroupStore for Store {
    async fn group(&self, id: GroupId) -> Result<Option<Secret>, StoreError> {
        self.read_group_row(GroupRow::State(&hex::encode(id.0)))
            .await
    }

    async fn put_group(&self, id: GroupId, state: &[u8]) -> Result<(), StoreError> {
        self.write_group_row(GroupRow::State(&hex::encode(id.0)), state)
            .await
    }

    async fn groups(&self) -> Result<Vec<(GroupId, Secret)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let manifest = self.manifest(&mut tx).await?;
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT group_id, state_sealed FROM groups ORDER BY group_id")
                .fetch_all(&mut *tx)
                .await?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for (id, sealed) in rows {
            let context = GroupRow::State(&id).context();
            let value = self.open_sealed(&context, &sealed)?;
            manifest.check(&context, &sealed)?;
            let bytes = hex::decode(&id)
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| StoreError::Corrupt(context.clone()))?;
            seen.insert(context);
            out.push((GroupId(bytes), value));
        }
        manifest.check_all_seen(&secret_context("group:"), &seen)?;
        Ok(out)
    }

    async fn delete_group(&self, id: GroupId) -> Result<(), StoreError> {
        let id = hex::encode(id.0);
        self.delete_group_rows(
            &[
                "DELETE FROM groups WHERE group_id = ?",
                "DELETE FROM own_sender_keys WHERE group_id = ?",
                "DELETE FROM sender_keys WHERE group_id = ?",
            ],
            &id,
            None,
            &[
                GroupRow::State(&id).context(),
                GroupRow::OwnChain(&id).context(),
            ],
            &[sender_keys_context(&id, None)],
        )
        .await
    }
}

impl SenderKeyStore for Store {
    async fn own_chain(&self, group: GroupId) -> Result<Option<Secret>, StoreError> {
        self.read_group_row(GroupRow::OwnChain(&hex::encode(group.0)))
            .await
    }

    async fn put_own_chain(&self, group: GroupId, chain: &[u8]) -> Result<(), StoreError> {
        self.write_group_row(GroupRow::OwnChain(&hex::encode(group.0)), chain)
            .await
    }

    async fn advance_own_chain<T: Send>(
        &self,
        group: GroupId,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Secret>, T) + Send,
    ) -> Result<T, StoreError> {
        self.advance_group_row(GroupRow::OwnChain(&hex::encode(group.0)), step)
            .await
    }

    async fn delete_own_chain(&self, group: GroupId) -> Result<(), StoreError> {
        let id = hex::encode(group.0);
        self.delete_group_rows(
            &["DELETE FROM own_sender_keys WHERE group_id = ?"],
            &id,
            None,
            &[GroupRow::OwnChain(&id).context()],
            &[],
        )
        .await
    }

    async fn advance_sender_key<T: Send>(
        &self,
        group: GroupId,
        sender: &str,
        device: DeviceId,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Secret>, T) + Send,
    ) -> Result<T, StoreError> {
        let id = hex::encode(group.0);
        self.advance_group_row(GroupRow::SenderKey(&id, sender, device.0), step)
            .await
    }

    async fn delete_sender_keys(&self, group: GroupId, sender: &str) -> Result<(), StoreError> {
        let id = hex::encode(group.0);
        self.delete_group_rows(
            &["DELETE FROM sender_keys WHERE group_id = ? AND sender = ?"],
            &id,
            Some(sender),
            &[],
            &[sender_keys_context(&id, Some(sender))],
        )
        .await
    }
}

impl SessionStore for Store {
    async fn sessions(
        &self,
        username: &str,
        device: DeviceId,
    ) -> Result<Vec<StoredSession>, StoreError> {
        Store::sessions(self, username, device).await
    }

    async fn save_session(
        &self,
        username: &str,
        device: DeviceId,
        base_key: &[u8],
        state: &[u8],
        active: bool,
    ) -> Result<(), StoreError> {
        Store::save_session(self, username, device, base_key, state, active).await
    }

    async fn advance_session<T: Send>(
        &self,
        username: &str,
        device: DeviceId,
        step: impl FnOnce(Vec<StoredSession>) -> (Option<SessionWrite>, T) + Send,
    ) -> Result<T, StoreError> {
        Store::advance_session(self, username, device, step).await
    }

    async fn delete_sessions(&self, username: &str) -> Result<(), StoreError> {
        Store::delete_sessions(self, username).await
    }
}

impl PreKeyStore for Store {
    async fn put_prekey(&self, kind: PrekeyKind, id: u32, secret: &[u8]) -> Result<(), StoreError> {
        Store::put_prekey(self, kind, id, secret).await
    }

    async fn prekey(&self, kind: PrekeyKind, id: u32) -> Result<Option<Secret>, StoreError> {
        Store::prekey(self, kind, id).await
    }

    async fn delete_prekey(&self, kind: PrekeyKind, id: u32) -> Result<(), StoreError> {
        Store::delete_prekey(self, kind, id).await
    }
}

#[cfg(test)]
impl Store {
    /// The sealed value of the one session row with a device, as the file holds it.
    pub(crate) async fn raw_session_row(&self, username: &str, device: u32) -> Vec<u8> {
        sqlx::query_scalar("SELECT state_sealed FROM sessions WHERE username = ? AND device = ?")
            .bind(username)
            .bind(i64::from(device))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Writes a sealed value into the session row with a device, as an attacker with the
    /// file could.
    pub(crate) async fn put_raw_session_row(&self, username: &str, device: u32, sealed: &[u8]) {
        sqlx::query("UPDATE sessions SET state_sealed = ? WHERE username = ? AND device = ?")
            .bind(sealed)
            .bind(username)
            .bind(i64::from(device))
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

/// The sealing context of a file record: the blob id and the message that announced it
/// (records from before message keys existed used the blob id alone).
/// The seal context of a message body: its row, and its time of deletion when it has one
/// (so that the `expires_at` column cannot be cleared or moved without the body failing to
/// open).
fn message_context(id: i64, expires_at: Option<i64>) -> String {
    with_expiry(format!("messages:{id}"), expires_at)
}

/// A seal context with a row's time of deletion put in front, when it has one. In front,
/// because every context without one begins with its table's name (`messages:`, `files:`),
/// and the end of a file's context is a message id in clear: appended, an expiry could be
/// moved into that id and the column cleared without the context changing.
fn with_expiry(context: String, expires_at: Option<i64>) -> String {
    match expires_at {
        Some(at) => format!("expires:{at}|{context}"),
        None => context,
    }
}

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

fn secret_context(name: &str) -> String {
    format!("meta:secret:{name}")
}

fn prekey_context(kind: PrekeyKind, id: u32) -> String {
    format!("prekeys:{}:{id}", kind.code())
}

fn session_context(username: &str, device: u32, base_key: &[u8]) -> String {
    let hex: String = hex::encode(base_key);
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
            .save_session("bob", DeviceId(1), &[9; 32], marker, true)
            .await
            .unwrap();
        store
            .add_message(
                &Conversation::direct("bob"),
                false,
                DeviceId(1),
                1000,
                marker,
                None,
                None,
            )
            .await
            .unwrap();
        store
            .put_file(&NewFile {
                blob_id: "blob1",
                sender: "bob",
                peer: &Conversation::direct("bob"),
                message_id: "m1",
                outgoing: false,
                sender_device: DeviceId(1),
                sent_at: 1000,
                descriptor: marker,
                expires_at: None,
            })
            .await
            .unwrap();
        let file = store.file("blob1").await.unwrap().unwrap();
        assert_eq!(file.descriptor.as_slice(), marker);
        assert_eq!(
            (&file.peer, file.outgoing),
            (&Conversation::direct("bob"), false)
        );
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
            .save_session("bob", DeviceId(1), &[1; 32], b"old", true)
            .await
            .unwrap();
        store
            .save_session("bob", DeviceId(1), &[2; 32], b"new", true)
            .await
            .unwrap();
        store
            .save_session("bob", DeviceId(1), &[1; 32], b"old2", false)
            .await
            .unwrap();
        let sessions = store.sessions("bob", DeviceId(1)).await.unwrap();
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
            .add_message(
                &Conversation::direct("bob"),
                true,
                DeviceId(1),
                10,
                b"hi",
                Some("u1"),
                None,
            )
            .await
            .unwrap();
        store
            .add_message(
                &Conversation::direct("carol"),
                false,
                DeviceId(2),
                11,
                b"other",
                Some("u2"),
                None,
            )
            .await
            .unwrap();
        store
            .add_message(
                &Conversation::direct("bob"),
                false,
                DeviceId(3),
                12,
                b"hello",
                Some("u3"),
                None,
            )
            .await
            .unwrap();
        let history = store.history(&Conversation::direct("bob")).await.unwrap();
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
        let history = store.history(&Conversation::direct("bob")).await.unwrap();
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
        let (mallory, alice) = (
            Conversation::direct("mallory"),
            Conversation::direct("alice"),
        );
        let group = Conversation::Group(GroupId([0; 16]));
        let file = |sender, peer, message_id, descriptor| NewFile {
            blob_id: "blob1",
            sender,
            peer,
            message_id,
            outgoing: false,
            sender_device: DeviceId(1),
            sent_at: 1000,
            descriptor,
            expires_at: None,
        };
        let first = file("mallory", &mallory, "m1", b"mallory's key".as_slice());
        assert!(store.put_file(&first).await.unwrap());
        // The same message again (a duplicate delivery) is no change.
        assert!(!store.put_file(&first).await.unwrap());
        // Alice's message names the same blob id: refused, and the record stays Mallory's.
        let err = store
            .put_file(&file("alice", &alice, "a1", b"alice's key"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::BlobConflict { first, second, .. }
                if first == "mallory" && second == "alice"),
            "{err}"
        );
        // So is the same sender naming it with another descriptor.
        let err = store
            .put_file(&file("mallory", &group, "m2", b"another key"))
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

    /// A sealed row put back to an older sealed copy of itself still authenticates under
    /// the store key; the manifest catches it. Each kind of row: a session, a contact (its
    /// pending identity change undone), a sender-key chain, a used one-time prekey brought
    /// back, a deleted session brought back. Rows that were not rolled back still read.
    #[tokio::test]
    async fn an_older_copy_of_a_sealed_row_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, key(8)).await.unwrap();
        let scalar = |sql: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, Vec<u8>>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        store
            .save_session("bob", DeviceId(1), &[1; 32], b"state 1", true)
            .await
            .unwrap();
        let old_session = scalar("SELECT state_sealed FROM sessions WHERE device = 1").await;
        store
            .save_session("bob", DeviceId(1), &[1; 32], b"state 2", true)
            .await
            .unwrap();

        store.pin_contact("carol", b"carol's key").await.unwrap();
        store.mark_verified("carol").await.unwrap();
        let old_contact = scalar("SELECT check_sealed FROM contacts").await;
        store
            .record_changed_identity("carol", b"carol's new key")
            .await
            .unwrap();

        store
            .put_secret("group-key:g", b"chain at 1")
            .await
            .unwrap();
        let old_chain = scalar("SELECT value FROM meta WHERE key = 'secret:group-key:g'").await;
        store
            .put_secret("group-key:g", b"chain at 2")
            .await
            .unwrap();

        store
            .put_prekey(PrekeyKind::OneTime, 5, b"used once")
            .await
            .unwrap();
        let old_prekey = scalar("SELECT secret_sealed FROM prekeys").await;
        store.delete_prekey(PrekeyKind::OneTime, 5).await.unwrap();

        store
            .save_session("dave", DeviceId(2), &[2; 32], b"dave's", true)
            .await
            .unwrap();
        let old_dave = scalar("SELECT state_sealed FROM sessions WHERE device = 2").await;
        store.delete_sessions("dave").await.unwrap();

        store.pin_contact("erin", b"erin's key").await.unwrap();
        store.close().await;

        // Put the older copies back, as anyone with the file could.
        let db = format!("sqlite://{}", path.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
            .await
            .unwrap();
        for (sql, value) in [
            ("UPDATE sessions SET state_sealed = ?", &old_session),
            (
                "UPDATE contacts SET changed_identity_key = NULL, check_sealed = ? \
                 WHERE username = 'carol'",
                &old_contact,
            ),
            (
                "UPDATE meta SET value = ? WHERE key = 'secret:group-key:g'",
                &old_chain,
            ),
            (
                "INSERT INTO prekeys (kind, id, secret_sealed) VALUES (2, 5, ?)",
                &old_prekey,
            ),
            (
                "INSERT INTO sessions (username, device, base_key, active, updated_seq, \
                 state_sealed) VALUES ('dave', 2, x'0202020202020202020202020202020202020202020202020202020202020202', 1, 9, ?)",
                &old_dave,
            ),
        ] {
            sqlx::query(sql)
                .bind(value)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        drop(conn);

        let store = Store::open(&path, key(8)).await.unwrap();
        let rolled_back = |what: &str, result: Result<(), StoreError>| {
            assert!(
                matches!(result, Err(StoreError::RolledBack(_))),
                "{what}: {result:?}"
            );
        };
        rolled_back(
            "session",
            store.sessions("bob", DeviceId(1)).await.map(drop),
        );
        rolled_back("contact", store.contact("carol").await.map(drop));
        rolled_back("contacts", store.contacts().await.map(drop));
        rolled_back("chain", store.secret("group-key:g").await.map(drop));
        rolled_back(
            "chains",
            store.secrets_with_prefix("group-key:").await.map(drop),
        );
        rolled_back(
            "prekey",
            store.prekey(PrekeyKind::OneTime, 5).await.map(drop),
        );
        rolled_back(
            "deleted session",
            store.sessions("dave", DeviceId(2)).await.map(drop),
        );
        // A change is not sealed over a rolled-back row.
        rolled_back("verify", store.mark_verified("carol").await.map(drop));
        // What was not rolled back still reads.
        assert_eq!(
            store.contact("erin").await.unwrap().unwrap().identity_key,
            b"erin's key"
        );
    }

    /// The manifest is part of the store: deleting it is damage, not an older store.
    #[tokio::test]
    async fn a_deleted_manifest_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, key(8)).await.unwrap();
        store.pin_contact("carol", b"carol's key").await.unwrap();
        sqlx::query("DELETE FROM meta WHERE key = 'manifest'")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let store = Store::open(&path, key(8)).await.unwrap();
        assert!(matches!(
            store.contact("carol").await,
            Err(StoreError::Corrupt(_))
        ));
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

    /// A store of the layout before migration 0007 kept group state and sender keys as
    /// secrets in `meta`, named `group:<id>`, `group-key:<id>` and
    /// `group-record:<id>:<sender>:<device>`. Made here as the old code made it (through
    /// the secret API, which writes those rows and their manifest entries, then the new
    /// tables dropped and migration 0007 unrecorded), it opens with every row moved to the
    /// new tables, readable and still covered by the manifest.
    #[tokio::test]
    async fn group_rows_of_an_older_store_move_to_their_tables() {
        const ID: &str = "00112233445566778899aabbccddeeff";
        let group = GroupId([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, key(5)).await.unwrap();
        for (name, value) in [
            (format!("group:{ID}"), &b"group state"[..]),
            (format!("group-key:{ID}"), b"our chain"),
            (format!("group-record:{ID}:bob:2"), b"bob's chain"),
            (format!("group-record:{ID}:carol:10"), b"carol's chain"),
            ("group-key:not-an-id".to_owned(), b"left alone"),
        ] {
            store.put_secret(&name, value).await.unwrap();
        }
        store.close().await;
        let db = format!("sqlite://{}", path.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
            .await
            .unwrap();
        for sql in [
            "DROP TABLE groups",
            "DROP TABLE own_sender_keys",
            "DROP TABLE sender_keys",
            "DELETE FROM _sqlx_migrations WHERE version = 7",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        drop(conn);

        let store = Store::open(&path, key(5)).await.unwrap();
        let left: Vec<String> =
            sqlx::query_scalar("SELECT key FROM meta WHERE substr(key, 1, 12) = 'secret:group'")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(left, ["secret:group-key:not-an-id"]);
        let groups = store.groups().await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0, group);
        assert_eq!(groups[0].1.as_slice(), b"group state");
        let chain = store.own_chain(group).await.unwrap().unwrap();
        assert_eq!(chain.as_slice(), b"our chain");
        let record = |sender: &'static str, device: u32| {
            let store = &store;
            async move {
                store
                    .advance_sender_key(group, sender, DeviceId(device), |b| {
                        (None, b.map(<[u8]>::to_vec))
                    })
                    .await
                    .unwrap()
            }
        };
        assert_eq!(record("bob", 2).await.as_deref(), Some(&b"bob's chain"[..]));
        assert_eq!(
            record("carol", 10).await.as_deref(),
            Some(&b"carol's chain"[..])
        );
        assert_eq!(record("bob", 1).await, None);

        // The moved rows are still the manifest's: an older copy put back is refused.
        let old_chain: Vec<u8> = sqlx::query_scalar("SELECT chain_sealed FROM own_sender_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        store
            .put_own_chain(group, b"our chain, later")
            .await
            .unwrap();
        sqlx::query("UPDATE own_sender_keys SET chain_sealed = ?")
            .bind(&old_chain)
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(
            store.own_chain(group).await,
            Err(StoreError::RolledBack(_))
        ));
        // Forgetting the group deletes its rows and their manifest entries.
        store.delete_group(group).await.unwrap();
        assert!(store.groups().await.unwrap().is_empty());
        assert!(store.own_chain(group).await.unwrap().is_none());
        assert_eq!(record("bob", 2).await, None);
    }

    /// A deleted group row is damage, not absence: the manifest still names it.
    #[tokio::test]
    async fn a_deleted_group_row_is_detected() {
        let group = GroupId([7; 16]);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), key(6)).await.unwrap();
        store.put_group(group, b"state").await.unwrap();
        store.put_own_chain(group, b"chain").await.unwrap();
        for sql in ["DELETE FROM groups", "DELETE FROM own_sender_keys"] {
            sqlx::query(sql).execute(&store.pool).await.unwrap();
        }
        assert!(matches!(
            store.groups().await,
            Err(StoreError::RolledBack(_))
        ));
        assert!(matches!(
            store.group(group).await,
            Err(StoreError::RolledBack(_))
        ));
        assert!(matches!(
            store.own_chain(group).await,
            Err(StoreError::RolledBack(_))
        ));
    }
}
