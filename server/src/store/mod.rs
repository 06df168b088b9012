//! Persistence: one [`Store`] trait, implemented for SQLite and PostgreSQL.
//!
//! This is the only place that knows SQL. One implementation, [`SqlStore`], serves both
//! databases: its SQL is written once, in ordinary functions generic over a [`Backend`],
//! one module per concern (`accounts`, `keys`, `mailbox`, `blobs`, `provisioning`,
//! `audit`); what differs between SQLite and PostgreSQL (the claim query's lock clause,
//! `?` or `$n` parameters in bulk statements, migrations, upkeep) is the `Backend`
//! implementation in `sqlite.rs` and `postgres.rs`.
//!
//! Everything stored is either public key material or opaque ciphertext, and credentials and
//! invites are stored only as SHA-256 hashes. The audit log (`audit`) holds names, numbers,
//! addresses and short codes only.
//!
//! The audited actions (registration, adding, linking and removing a device, deleting an
//! account, creating an invite) take the audit [`Event`] from the service and append its
//! entry inside the action's own transaction: no action commits without its entry, and no
//! entry without its action.

use async_trait::async_trait;

use crate::audit::{Anchor, AuditKey, Checkpoint, Entry, Event, Head};
use tacit_api::{
    Ciphertext, DeviceId, DeviceKeys, Envelope, OneTimePrekey, PrekeyBundle, PrekeyCount,
    SignedPrekey, Timestamp, UploadKeysRequest,
};

mod accounts;
mod admin;
mod audit;
mod backend;
mod blobs;
mod ids;
mod keys;
mod mailbox;
mod oidc;
mod postgres;
mod provisioning;
mod scim;
mod sql;
mod sqlite;

pub use backend::{Backend, Param, Value};
pub use blobs::{Appender, BlobFiles, BlobRead, Opened, WriteGuard};
pub use ids::{AccountId, BLOB_ID_BYTES, BlobId, CHANNEL_ID_BYTES, ChannelId, SecretHash};
pub use postgres::PostgresStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

/// What can go wrong in the store. The variants other than [`StoreError::Database`] are
/// expected outcomes that the service turns into client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The username is taken.
    #[error("username taken")]
    UsernameTaken,
    /// The invite does not exist or was used already.
    #[error("invite invalid or used")]
    InviteInvalid,
    /// The account already has its maximum number of devices.
    #[error("too many devices")]
    TooManyDevices,
    /// A destination mailbox holds its maximum number of envelopes.
    #[error("mailbox full")]
    MailboxFull,
    /// The account's blobs would exceed its quota.
    #[error("blob quota exceeded")]
    QuotaExceeded,
    /// The device is its account's last: only deleting the account removes it.
    #[error("last device")]
    LastDevice,
    /// The account was deleted (it is a tombstone): it takes no device and no blob.
    #[error("account deleted")]
    AccountGone,
    /// The account is disabled by an administrator.
    #[error("account disabled")]
    AccountDisabled,
    /// The identity-provider token was used before.
    #[error("token already used")]
    TokenReplayed,
    /// The identity (issuer, subject) is already bound to an account, named here.
    #[error("identity already bound to {0}")]
    IdentityBound(String),
    /// No account is bound to the identity.
    #[error("no account bound to the identity")]
    IdentityUnbound,
    /// Signing a device in through the identity provider would remove this many other
    /// devices of the account, and the caller did not consent to that.
    #[error("the account has {0} other devices")]
    OtherDevices(usize),
    /// A value from the database is out of the range the code expects.
    #[error("corrupt value in column {0}")]
    Corrupt(&'static str),
    /// An audit log row cannot be read as an entry: a column holds a value no append
    /// writes (it was edited in the database).
    #[error("audit entry {seq}: {problem} (edited)")]
    AuditUnreadable {
        /// The row's sequence number, as stored.
        seq: i64,
        /// Which column is unreadable.
        problem: AuditProblem,
    },
    /// Retention did not prune the audit log: its start does not verify (the anchor is not
    /// signed by this server's audit key, or an entry to prune does not hash, link or
    /// follow: edited or deleted in the database). Nothing was deleted.
    #[error("audit log not pruned: {0}")]
    AuditPruneRefused(String),
    /// The database failed or is unreachable.
    #[error(transparent)]
    Database(sqlx::Error),
    /// The disk under the database (or the blob directory) is full: nothing of the
    /// operation was stored.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The write batch this operation was part of failed as a whole (logged once).
    #[error("write batch failed")]
    BatchFailed,
    /// Applying the migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database file's permissions could not be made private (mode 0600).
    #[error("setting the database file's permissions: {0}")]
    Permissions(#[source] std::io::Error),
    /// Reading or writing a file of the blob directory failed.
    #[error("blob file: {0}")]
    BlobFile(#[source] std::io::Error),
}

/// Which column of an audit log row is unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditProblem {
    /// The sequence number is negative.
    #[error("its sequence number is negative")]
    Seq,
    /// The device number is out of range.
    #[error("its device number is out of range")]
    TargetDevice,
    /// The details are not a JSON object of strings.
    #[error("its details are not a JSON object of strings")]
    Details,
    /// A hash is not 32 bytes.
    #[error("a hash is not 32 bytes")]
    Hash,
}

impl From<sqlx::Error> for StoreError {
    /// A full disk is told apart from other database failures: SQLite's `SQLITE_FULL`
    /// (primary code 13) and PostgreSQL's `disk_full` (SQLSTATE 53100).
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && let Some(code) = db.code()
        {
            let full = match code.as_ref() {
                "53100" => true,
                // SQLite reports extended codes too; the primary code is the low byte.
                sqlite => sqlite.parse::<u32>().is_ok_and(|c| c & 0xff == 13),
            };
            if full {
                return Self::StorageFull(db.message().to_owned());
            }
        }
        if let sqlx::Error::Io(io) = &e
            && io.kind() == std::io::ErrorKind::StorageFull
        {
            return Self::StorageFull(io.to_string());
        }
        Self::Database(e)
    }
}

impl StoreError {
    /// Whether the failure is an outage of the database or the disk (not an expected
    /// outcome such as a full mailbox, nor one bad statement): `/readyz` reports not ready
    /// while writes fail this way.
    #[must_use]
    pub fn is_outage(&self) -> bool {
        match self {
            Self::StorageFull(_) | Self::BatchFailed | Self::BlobFile(_) => true,
            Self::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // PostgreSQL: connection exception, insufficient resources, operator
                // intervention. SQLite (primary codes): BUSY, IOERR, CORRUPT, CANTOPEN.
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || code
                        .parse::<u32>()
                        .is_ok_and(|c| matches!(c & 0xff, 5 | 10 | 11 | 14))
            }),
            Self::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}

/// A device to create.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Label for its owner.
    pub name: Option<String>,
    /// SHA-256 of the credential secret.
    pub credential_hash: SecretHash,
    /// Its public keys.
    pub keys: DeviceKeys,
}

/// A device signed in through the identity provider ([`Store::add_oidc_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcDeviceAdded {
    /// The account bound to the identity.
    pub account: AccountId,
    /// Its name.
    pub username: String,
    /// The new device.
    pub device: DeviceId,
    /// The devices it replaced (removed), in order.
    pub replaced: Vec<DeviceId>,
}

/// A sign-in with the identity provider: who, which session, and the token's replay key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcLogin {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The provider session (`sid`), recorded on the device.
    pub sid: Option<String>,
    /// SHA-256 of the token (it is used once).
    pub token_hash: [u8; 32],
    /// Until when the replay key is kept (ms since the epoch).
    pub token_expires_at: Timestamp,
    /// Roles to grant (`true`) or revoke (`false`) as the provider's groups say.
    pub roles: Vec<(tacit_api::Role, bool)>,
}

/// A user the identity provider's SCIM client created, linked to the account of the same
/// username (which may not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimUser {
    /// The SCIM `id`: a random UUID, never reused.
    pub id: String,
    /// The username (normalised as the OpenID Connect username claim is).
    pub username: String,
    /// The provider's own id for the user (`externalId`), kept and returned as sent.
    pub external_id: Option<String>,
    /// Whether the user is active; an inactive user's account is disabled and its name
    /// cannot be registered.
    pub active: bool,
    /// The provider's `displayName`, kept and returned as sent.
    pub display_name: Option<String>,
    /// When it was created (ms).
    pub created_at: Timestamp,
    /// When it last changed (ms).
    pub updated_at: Timestamp,
}

/// A device as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Its number.
    pub device_id: DeviceId,
    /// Label for its owner.
    pub name: Option<String>,
    /// When it was added (ms).
    pub created_at: Timestamp,
    /// Its public identity key (opaque).
    pub identity_key: Vec<u8>,
}

/// A device without contact for longer than the retention allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleDevice {
    /// Its mailbox address.
    pub mailbox: Mailbox,
    /// Its account's username.
    pub username: String,
    /// Whether the account has a device that is not idle (if not, the account goes).
    pub others_active: bool,
}

/// The background jobs that run on every node but must not run on two at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// The minutely retention purge (envelopes, blobs, audit entries, idle devices).
    Retention,
}

impl Job {
    /// The advisory-lock key (fixed: every node must agree on it).
    fn key(self) -> i64 {
        match self {
            // The ASCII bytes of "tacitret".
            Self::Retention => 0x7461_6369_7472_6574,
        }
    }
}

/// A held job lock ([`Store::try_job_lock`]). Release it with [`JobLock::release`]; one
/// dropped unreleased closes its connection, which releases the lock (it never goes back
/// to the pool still held).
#[derive(Debug)]
pub struct JobLock {
    held: Option<(sqlx::pool::PoolConnection<sqlx::Postgres>, i64)>,
}

impl JobLock {
    fn single() -> Self {
        Self { held: None }
    }

    fn postgres(conn: sqlx::pool::PoolConnection<sqlx::Postgres>, key: i64) -> Self {
        Self {
            held: Some((conn, key)),
        }
    }

    /// Gives the lock back (and its connection to the pool).
    pub async fn release(mut self) {
        if let Some((mut conn, key)) = self.held.take() {
            let unlocked: Result<(bool,), _> = sqlx::query_as("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .fetch_one(&mut *conn)
                .await;
            if !matches!(unlocked, Ok((true,))) {
                // Not known to be unlocked: close the connection rather than pool it.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some((conn, _)) = self.held.take() {
            drop(conn.detach());
        }
    }
}

/// What one audit prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPruned {
    /// How many entries.
    pub count: u64,
    /// The first one pruned.
    pub from_seq: u64,
    /// The last one pruned (its number and hash): the chain now starts after it.
    pub anchor: Head,
}

/// A provisioning channel as the devices on either end see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// The new device's provisioning public key (opaque).
    pub public_key: Vec<u8>,
    /// The sealed answer of the existing device, once there is one (opaque).
    pub message: Option<Vec<u8>>,
}

/// What answering a provisioning channel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAnswer {
    /// Stored.
    Stored,
    /// No such channel, or it expired.
    NotFound,
    /// The channel already has an answer.
    AlreadyAnswered,
}

/// What authenticating a device needs.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    /// The account's username.
    pub username: String,
    /// SHA-256 of the credential secret.
    pub credential_hash: SecretHash,
    /// Whether an administrator disabled the account.
    pub disabled: bool,
}

/// What a [`Revocation`] tells every node to do with a device's cached credential and
/// sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    /// The device was removed or its account deleted: refuse it, close its sockets.
    Revoke,
    /// Its account was disabled: refuse it as disabled, close its sockets.
    Disable,
    /// Its account was enabled again: forget an earlier revocation.
    Restore,
}

impl RevocationKind {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Disable => "disable",
            Self::Restore => "restore",
        }
    }

    /// The kind of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Revoke, Self::Disable, Self::Restore]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// A change to a device's credential, recorded in the same transaction as the change, so
/// that every node (and the server that did not make it, when `tacit-server admin` did)
/// applies it to its caches and sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// Its position (increasing).
    pub id: i64,
    /// The device.
    pub mailbox: Mailbox,
    /// What to do.
    pub kind: RevocationKind,
}

/// A device of some account, the address of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox {
    /// The account.
    pub account: AccountId,
    /// The device.
    pub device: DeviceId,
}

/// An accepted send, to be stored in one transaction.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The sending device.
    pub sender: Mailbox,
    /// The recipients' accounts; the envelopes must cover exactly their devices and the
    /// sender's other devices (a pairwise send has one recipient, a multicast several).
    pub recipients: Vec<AccountId>,
    /// The sender's username, copied into each envelope.
    pub sender_username: String,
    /// The client's id for idempotency.
    pub client_message_id: String,
    /// Server time of the send (ms).
    pub server_ts: Timestamp,
    /// When undelivered envelopes expire (ms).
    pub expires_at: Timestamp,
    /// When the idempotency record (the client message id) is forgotten (ms): at most
    /// `expires_at`, so the records of one device stay bounded in time.
    pub remember_until: Timestamp,
    /// Most envelopes a destination mailbox may hold.
    pub max_mailbox_depth: u64,
    /// One ciphertext per destination (empty ones when `body` is given).
    pub envelopes: Vec<(Mailbox, Ciphertext)>,
    /// For a multicast: the one ciphertext every destination gets, stored once and
    /// referenced by each envelope row.
    pub body: Option<Ciphertext>,
}

/// What storing a send did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored; these mailboxes got new envelopes.
    Stored(Vec<Mailbox>),
    /// A send with the same client message id was already stored at this time.
    Duplicate(Timestamp),
    /// Nothing stored: the destinations do not match the current devices.
    Mismatch(Vec<AccountMismatch>),
}

/// The devices of one account that a send missed or named wrongly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountMismatch {
    /// The account.
    pub account: AccountId,
    /// Current devices without a ciphertext.
    pub missing: Vec<DeviceId>,
    /// Devices given a ciphertext that are not current.
    pub stale: Vec<DeviceId>,
}

/// The fate of one send of a batch, while the batch is being decided.
#[derive(Debug)]
pub enum Decision {
    /// Not decided yet.
    Open,
    /// The same client message id appears earlier in the batch, at this index.
    RepeatOf(usize),
    /// Decided.
    Done(Result<SendOutcome, StoreError>),
}

/// What the store read, inside the write transaction, of the accounts a batch of sends
/// involves: the facts the [`SendRules`] decide on.
#[derive(Debug, Default)]
pub struct DeviceFacts {
    /// The current devices of each account.
    pub devices: std::collections::HashMap<AccountId, std::collections::BTreeSet<DeviceId>>,
    /// Envelopes in each mailbox, counting those the batch accepted so far.
    pub depth: std::collections::HashMap<Mailbox, u64>,
}

/// The rules a send is decided by. They are the service's (`service::rules`); the store
/// applies them inside its write transaction, to the facts it read there, and persists
/// what they accept.
pub trait SendRules: Send + Sync {
    /// Decide a send not stored before, in batch order: `None` accepts it (and counts its
    /// envelopes in `facts.depth`), else its outcome.
    fn check(
        &self,
        message: &NewMessage,
        facts: &mut DeviceFacts,
    ) -> Option<Result<SendOutcome, StoreError>>;
    /// The final result of each send, from the decisions (repeats within the batch are
    /// still [`Decision::RepeatOf`]).
    fn resolve(
        &self,
        decisions: Vec<Decision>,
        messages: &[NewMessage],
    ) -> Vec<Result<SendOutcome, StoreError>>;
}

/// What a [`Store::write_batch`] did, in the order of its inputs.
#[derive(Debug)]
pub struct BatchOutcome {
    /// One result per send; a refused send does not affect the others.
    pub sent: Vec<Result<SendOutcome, StoreError>>,
    /// Envelopes deleted per acknowledgement.
    pub acked: Vec<u64>,
    /// Every envelope the batch stored, with its mailbox, for pushing without reading it
    /// back.
    pub stored: Vec<(Mailbox, Envelope)>,
}

/// A blob to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBlob {
    /// Its random id.
    pub id: BlobId,
    /// The uploading device.
    pub owner: Mailbox,
    /// The exact size, in bytes.
    pub size: u64,
    /// When it was created (ms).
    pub created_at: Timestamp,
    /// When it is deleted, complete or not (ms).
    pub expires_at: Timestamp,
}

/// A blob as recorded (whether it is complete is told by its file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// The uploading account.
    pub account: AccountId,
    /// The exact size, in bytes.
    pub size: u64,
    /// When it is deleted (ms).
    pub expires_at: Timestamp,
}

/// Totals for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Envelopes waiting in all mailboxes.
    pub envelopes: u64,
    /// The deepest mailbox.
    pub max_mailbox_depth: u64,
    /// Multicast bodies (each shared by many envelopes).
    pub message_bodies: u64,
    /// One-time X25519 prekeys in stock.
    pub one_time_prekeys: u64,
    /// One-time ML-KEM prekeys in stock.
    pub one_time_kem_prekeys: u64,
    /// Devices.
    pub devices: u64,
    /// Devices with fewer than [`tacit_api::PREKEY_LOW_WATER`] one-time X25519 prekeys.
    pub devices_low_one_time_prekeys: u64,
    /// Devices with fewer than [`tacit_api::PREKEY_LOW_WATER`] one-time ML-KEM prekeys.
    pub devices_low_one_time_kem_prekeys: u64,
}

/// Every persistent operation of the server.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Apply the migrations that have not been applied yet.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Check that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Flush and close connections.
    async fn close(&self);

    /// Store a new invite admitting `max_uses` registrations until `expires_at`, with its
    /// audit entry.
    async fn create_invite(
        &self,
        token_hash: SecretHash,
        expires_at: Option<Timestamp>,
        max_uses: u32,
        now: Timestamp,
        audit: &Event,
    ) -> Result<(), StoreError>;
    /// All invites, newest first.
    async fn invites(&self) -> Result<Vec<tacit_api::InviteInfo>, StoreError>;
    /// Revoke an invite that is not yet revoked, with its audit entry; whether it was.
    async fn revoke_invite(
        &self,
        token_hash: SecretHash,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError>;
    /// Grant (`grant`) or revoke a role, with its audit entry; whether anything changed
    /// (no entry when not). [`StoreError::AccountGone`] for a deleted account.
    async fn grant_role(
        &self,
        account: AccountId,
        role: tacit_api::Role,
        grant: bool,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError>;
    /// The roles an account holds.
    async fn roles(&self, account: AccountId) -> Result<Vec<tacit_api::Role>, StoreError>;
    /// Disable (`disabled`) or enable an account, recording a [`Revocation`] of each of its
    /// devices and the audit entry in one transaction. Returns its devices, or `None` when
    /// the account was already in that state (nothing written).
    async fn set_disabled(
        &self,
        account: AccountId,
        disabled: bool,
        now: Timestamp,
        audit: &Event,
    ) -> Result<Option<Vec<DeviceId>>, StoreError>;
    /// Set an account's own limits (absent: the server's), with the audit entry.
    async fn set_quota(
        &self,
        account: AccountId,
        quota: &tacit_api::SetQuotaRequest,
        now: Timestamp,
        audit: &Event,
    ) -> Result<(), StoreError>;
    /// Up to `limit` live accounts in name order after `after`, whose name contains
    /// `search` (or is `exact`), with their devices as an administrator sees them.
    async fn admin_users(
        &self,
        search: Option<&str>,
        exact: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<tacit_api::AdminUser>, StoreError>;
    /// Record when devices last authenticated, in one transaction.
    async fn touch_devices(&self, seen: &[(Mailbox, Timestamp)]) -> Result<(), StoreError>;
    /// Up to `limit` revocations after `after`, in order.
    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError>;
    /// The last revocation's position (0 when there is none).
    async fn last_revocation(&self) -> Result<i64, StoreError>;

    /// Create an account with its first device (number 1), consuming the invite if one is
    /// given, and append its audit entry, all in one transaction. Returns the account id.
    async fn create_account(
        &self,
        username: &str,
        invite: Option<SecretHash>,
        device: NewDevice,
        now: Timestamp,
        audit: &Event,
    ) -> Result<AccountId, StoreError>;
    /// Add a device to an account, unless it already has `max_devices`, and append its
    /// audit entry (`audit` with the new device's number filled in).
    async fn add_device(
        &self,
        account: AccountId,
        device: NewDevice,
        max_devices: u32,
        now: Timestamp,
        audit: &Event,
    ) -> Result<DeviceId, StoreError>;
    /// Remove a device with its keys and its mailbox, and append its audit entry. Returns
    /// whether it existed (no entry when it did not); refuses ([`StoreError::LastDevice`])
    /// to remove an account's last device.
    async fn remove_device(
        &self,
        mailbox: Mailbox,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError>;
    /// Delete an account's devices, keys, mailboxes and idempotency records and free its
    /// username, and append its audit entry; the account number stays taken (a
    /// tombstone), so it is never reused. Returns the devices it had.
    async fn delete_account(
        &self,
        account: AccountId,
        now: Timestamp,
        audit: &Event,
    ) -> Result<Vec<DeviceId>, StoreError>;

    /// Register with the identity provider: in one transaction, record the token as used
    /// ([`StoreError::TokenReplayed`] if it was), create the account with its first
    /// device (carrying the session), bind the identity ([`StoreError::IdentityBound`]),
    /// apply the roles and append the audit entry.
    async fn create_oidc_account(
        &self,
        username: &str,
        device: NewDevice,
        login: &OidcLogin,
        now: Timestamp,
        audit: &Event,
    ) -> Result<AccountId, StoreError>;
    /// Sign a device in to the account bound to the login's identity, in one transaction
    /// with the token's use, the roles and the audit entry (`audit` gets the target
    /// username and the device number). The account's other devices are removed in the
    /// same transaction (revoked, each audited as `replace` with its number), or, without
    /// `replace`, nothing is done: [`StoreError::OtherDevices`].
    async fn add_oidc_device(
        &self,
        device: NewDevice,
        login: &OidcLogin,
        max_devices: u32,
        replace: Option<&Event>,
        now: Timestamp,
        audit: &Event,
    ) -> Result<OidcDeviceAdded, StoreError>;
    /// The live account bound to `(issuer, subject)`, with its name.
    async fn oidc_account(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<(AccountId, String)>, StoreError>;
    /// The accounts and devices signed in with provider session `sid`.
    async fn oidc_session_devices(
        &self,
        issuer: &str,
        sid: &str,
    ) -> Result<Vec<(AccountId, String, DeviceId)>, StoreError>;
    /// Record a token's replay key; `false` when it was recorded before.
    async fn use_oidc_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Up to `limit` SCIM users after the first `offset`, oldest first, whose username
    /// and external id are the ones given (when given), with how many match in all.
    async fn scim_users(
        &self,
        username: Option<&str>,
        external_id: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<(u64, Vec<ScimUser>), StoreError>;
    /// The SCIM user with this `id`, or else with this `username`.
    async fn scim_user(
        &self,
        id: Option<&str>,
        username: Option<&str>,
    ) -> Result<Option<ScimUser>, StoreError>;
    /// Store a new SCIM user with its audit entry ([`StoreError::UsernameTaken`] when its
    /// username has one already).
    async fn create_scim_user(&self, user: &ScimUser, audit: &Event) -> Result<(), StoreError>;
    /// Write a SCIM user's external id, active flag, display name and update time, with
    /// its audit entry; whether it exists.
    async fn update_scim_user(&self, user: &ScimUser, audit: &Event) -> Result<bool, StoreError>;
    /// Delete a SCIM user with its audit entry; whether it existed.
    async fn delete_scim_user(
        &self,
        id: &str,
        now: Timestamp,
        audit: &Event,
    ) -> Result<bool, StoreError>;

    /// Open a provisioning channel.
    async fn create_channel(
        &self,
        id: &ChannelId,
        public_key: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// An unexpired provisioning channel.
    async fn channel(
        &self,
        id: &ChannelId,
        now: Timestamp,
    ) -> Result<Option<ChannelRecord>, StoreError>;
    /// Answer a provisioning channel for `account`, once.
    async fn answer_channel(
        &self,
        id: &ChannelId,
        account: AccountId,
        token_hash: SecretHash,
        message: &[u8],
        now: Timestamp,
    ) -> Result<ChannelAnswer, StoreError>;
    /// Add a device to the account that answered the channel, if `token_hash` matches
    /// (compared in constant time), delete the channel, and append the audit entry
    /// (`audit` with the account's username as actor and target and the new device's
    /// number filled in), in one transaction. Returns the account and the new device, or
    /// `None` when the channel is unknown, expired, unanswered or the token is wrong.
    async fn link_device(
        &self,
        id: &ChannelId,
        token_hash: SecretHash,
        device: NewDevice,
        max_devices: u32,
        now: Timestamp,
        audit: &Event,
    ) -> Result<Option<(AccountId, DeviceId)>, StoreError>;
    /// What is needed to check a device's credential.
    async fn device_auth(&self, mailbox: Mailbox) -> Result<Option<DeviceAuth>, StoreError>;
    /// The account id of a username.
    async fn account_id(&self, username: &str) -> Result<Option<AccountId>, StoreError>;
    /// The current devices of an account, in device order.
    async fn devices(&self, account: AccountId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Replace some keys of a device and add one-time prekeys.
    async fn upload_keys(
        &self,
        mailbox: Mailbox,
        keys: &UploadKeysRequest,
    ) -> Result<(), StoreError>;
    /// One-time prekeys left for a device.
    async fn prekey_count(&self, mailbox: Mailbox) -> Result<PrekeyCount, StoreError>;
    /// Claim a bundle: removes and returns one one-time prekey of each kind if any is left.
    /// Each one-time key is returned by at most one call, even under concurrency.
    async fn claim_bundle(&self, mailbox: Mailbox) -> Result<Option<PrekeyBundle>, StoreError>;

    /// Store a send in one transaction, or report the earlier send with the same id, or
    /// what `rules` refused (decided in the same transaction).
    async fn store_message(
        &self,
        message: NewMessage,
        rules: &dyn SendRules,
    ) -> Result<SendOutcome, StoreError>;
    /// Store several sends (each all-or-nothing, as `rules` decide) and apply several
    /// acknowledgements, in one transaction with one commit: group commit.
    async fn write_batch(
        &self,
        messages: &[NewMessage],
        acks: &[(Mailbox, Vec<u64>)],
        rules: &dyn SendRules,
    ) -> Result<BatchOutcome, StoreError>;
    /// Up to `limit` unexpired envelopes of a mailbox with an id above `after`, oldest first.
    async fn mailbox(
        &self,
        mailbox: Mailbox,
        after: u64,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, StoreError>;
    /// Delete acknowledged envelopes of a mailbox. Returns how many were deleted.
    async fn ack(&self, mailbox: Mailbox, ids: &[u64]) -> Result<u64, StoreError>;
    /// Delete up to `limit` expired envelopes (oldest expiry first) in one transaction,
    /// with the expired idempotency records, provisioning channels, used sign-in tokens,
    /// old revocations and orphaned multicast bodies. Returns how many envelopes went: as
    /// many as `limit` means more may be left for another call.
    async fn purge_expired(&self, now: Timestamp, limit: u32) -> Result<u64, StoreError>;
    /// After a restore, in one transaction: delete every unclaimed one-time prekey (a
    /// snapshot's one-time prekey may have been handed out after the snapshot was taken,
    /// and serving it again would break the protocol's one-use guarantee; clients upload
    /// new ones), count every device as seen `now` (a restored snapshot's contact times are
    /// old: the idle-device retention must not take them for idle), and record `audit`
    /// with the count of prekeys. Returns how many prekeys went.
    async fn after_restore(&self, audit: &Event, now: Timestamp) -> Result<u64, StoreError>;
    /// Up to `limit` devices with no contact since `before` (their last authentication, or
    /// their creation when never seen), in account and device order; not those of disabled
    /// accounts (an administrator's disable is a decision to keep, not idleness).
    async fn idle_devices(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<IdleDevice>, StoreError>;
    /// Reserve a blob for its owner's account, unless the unexpired blobs of the account
    /// (counted at their declared sizes) plus this one would exceed `quota` bytes:
    /// [`StoreError::QuotaExceeded`]. Concurrent reservations of one account are serialized.
    async fn create_blob(&self, blob: &NewBlob, quota: u64) -> Result<(), StoreError>;
    /// An unexpired blob's record.
    async fn blob(&self, id: BlobId, now: Timestamp) -> Result<Option<BlobRecord>, StoreError>;
    /// Delete a blob's record if `account` uploaded it. Returns whether it did.
    async fn delete_blob(&self, id: BlobId, account: AccountId) -> Result<bool, StoreError>;
    /// Ids of up to `limit` blobs expired at `now` (their files go first, then the rows).
    async fn expired_blobs(&self, now: Timestamp, limit: u32) -> Result<Vec<BlobId>, StoreError>;
    /// Delete the records of these blobs (whoever uploaded them).
    async fn delete_blob_records(&self, ids: &[BlobId]) -> Result<(), StoreError>;
    /// Delete every blob record of an account; returns their ids (to delete the files).
    async fn delete_account_blobs(&self, account: AccountId) -> Result<Vec<BlobId>, StoreError>;
    /// Append an audit entry on its own, for an event no other write goes with.
    async fn append_audit(&self, event: &Event, now: Timestamp) -> Result<Entry, StoreError>;
    /// Up to `limit` audit entries with a sequence number above `after`, in ascending
    /// order (read them all with `after` = the last one's number, from 0). A row that
    /// cannot be read as an entry (edited into a value no append writes) ends the page; a
    /// page that would begin with it is [`StoreError::AuditUnreadable`].
    async fn audit_entries(&self, after: u64, limit: u32) -> Result<Vec<Entry>, StoreError>;
    /// The audit log's head as the database records it (updated by every append).
    async fn audit_head(&self) -> Result<Head, StoreError>;
    /// Where the stored chain starts: the last entry retention pruned, as signed then (its
    /// head [`Head::EMPTY`] while none was).
    async fn audit_anchor(&self) -> Result<Anchor, StoreError>;
    /// Prune the oldest audit entries appended before `before_ms` (a prefix of the chain,
    /// at most `limit` entries, never the last), move the anchor to the last one pruned
    /// (signed with `key`) and append `audit` with `count`, `from_seq`, `to_seq` and
    /// `anchor` added, in one transaction. `None` when no entry was old enough.
    async fn prune_audit(
        &self,
        before_ms: i64,
        limit: u32,
        key: &AuditKey,
        audit: &Event,
        now: Timestamp,
    ) -> Result<Option<AuditPruned>, StoreError>;
    /// Store a signed checkpoint and append its `audit-checkpoint` entry, in one
    /// transaction.
    async fn put_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        audit: &Event,
        now: Timestamp,
    ) -> Result<Entry, StoreError>;
    /// The checkpoint stored last.
    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;
    /// Take the cluster-wide lock of a background job, or `None` when another node holds
    /// it (it is doing the job now). Always granted on SQLite (one node).
    async fn try_job_lock(&self, job: Job) -> Result<Option<JobLock>, StoreError>;
    /// Rewrite one small row and commit: succeeds only when writes do (room on the disk,
    /// a database that takes writes).
    async fn probe_write(&self, now: Timestamp) -> Result<(), StoreError>;
    /// Totals for metrics.
    async fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Periodic upkeep off the write path (for SQLite: the WAL checkpoint). Called about
    /// once a second.
    async fn maintain(&self) -> Result<(), StoreError>;
}

/// A store prints as its kind only (never a URL, which may hold a password).
impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Open the store a database URL names: `postgres://` or `postgresql://` for PostgreSQL,
/// `sqlite:` for SQLite.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::connect(url).await?))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    }
}

/// Kinds of one-time prekeys, as stored.
pub(crate) const KIND_X25519: i64 = 0;
pub(crate) const KIND_KEM: i64 = 1;

pub(crate) fn signed(
    id: i64,
    public_key: Vec<u8>,
    signature: Vec<u8>,
) -> Result<SignedPrekey, StoreError> {
    Ok(SignedPrekey {
        id: u32::try_from(id).map_err(|_| StoreError::Corrupt("key_id"))?,
        public_key: public_key.into(),
        signature: signature.into(),
    })
}

pub(crate) fn one_time(
    id: i64,
    public_key: Vec<u8>,
    signature: Vec<u8>,
) -> Result<OneTimePrekey, StoreError> {
    Ok(OneTimePrekey {
        id: u32::try_from(id).map_err(|_| StoreError::Corrupt("key_id"))?,
        public_key: public_key.into(),
        signature: signature.into(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
