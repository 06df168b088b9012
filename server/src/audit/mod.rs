//! The tamper-evident audit log: what administrators did and what happened to accounts.
//!
//! Every entry holds the hash of its predecessor ([`chain`]), so editing, deleting,
//! inserting or reordering a row breaks the chain at that row. A row rewritten together with
//! every hash after it (by someone who can write the database) is caught by a signed
//! [`checkpoint`]: the server signs `(sequence number, head hash)` with an Ed25519 key kept
//! outside the database, and an outside party that keeps checkpoints detects a rewritten or
//! truncated chain. [`export`] turns entries into ECS-style JSON lines for a SIEM.
//!
//! What an entry may hold is fixed by its types: an [`Action`], an [`Outcome`], the acting
//! account, the target account and device, the source address, and [`Detail`] values under
//! documented keys. There is no field for message content, credentials, tokens or sizes of
//! ciphertext, so none can be logged by mistake. The schema is documented in
//! `docs/AUDIT.md`.

use std::collections::BTreeMap;
use std::fmt;

pub mod chain;
pub mod checkpoint;
pub mod export;

pub use chain::{Broken, Head, Problem, Verifier};
pub use checkpoint::{Anchor, AuditKey, Checkpoint, CheckpointError};

/// A SHA-256 hash in the chain: of an entry, or the genesis value (all zeros) before the
/// first entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The predecessor of the first entry.
    pub const GENESIS: Self = Self([0; 32]);

    /// Parses the lowercase hex form.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({self})")
    }
}

/// What happened. The stable names (`as_str`) are the `event.action` values of the export
/// and are hashed into the chain: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// An account was registered (with its first device).
    AccountRegister,
    /// An account was deleted (by its owner or an administrator).
    AccountDelete,
    /// An account was disabled: every credential revoked, every socket closed.
    UserDisable,
    /// A disabled account was enabled again.
    UserEnable,
    /// A device was added to an account (by linking).
    DeviceAdd,
    /// A device was removed (by the account or an administrator).
    DeviceRemove,
    /// A device link completed.
    LinkComplete,
    /// A role was granted.
    RoleGrant,
    /// A role was revoked.
    RoleRevoke,
    /// An invite was created.
    InviteCreate,
    /// An invite was revoked.
    InviteRevoke,
    /// An account's quota was changed.
    QuotaSet,
    /// Many failed authentications from one source in a short time.
    AuthFailureBurst,
    /// A rate limit refused requests.
    RateLimitTrip,
    /// The configuration was reloaded.
    ConfigReload,
    /// Data was purged under the retention policy.
    RetentionPurge,
    /// The store was restored from a backup (`tacit-server restore`): the unclaimed
    /// one-time prekeys of the snapshot were dropped (`count`).
    BackupRestore,
    /// The audit log was exported.
    AuditExport,
    /// A checkpoint of the audit log was signed.
    AuditCheckpoint,
    /// Retention pruned the audit log's oldest entries (`count`, `from_seq`, `to_seq`, and
    /// the last pruned entry's hash as `anchor`: where verification now starts).
    AuditPrune,
    /// An OpenID Connect ID token or logout token was refused (`reason` says why).
    OidcTokenRefused,
    /// The identity provider logged a user out over the back channel.
    OidcLogout,
    /// The identity provider's SCIM client created (pre-provisioned) a user.
    ScimUserCreate,
    /// The identity provider's SCIM client changed a user.
    ScimUserUpdate,
    /// The identity provider's SCIM client deleted a user.
    ScimUserDelete,
    /// A SCIM request with a missing or wrong bearer token was refused.
    ScimAuthRefused,
}

impl Action {
    /// Every action, in a stable order.
    pub const ALL: [Self; 26] = [
        Self::AccountRegister,
        Self::AccountDelete,
        Self::UserDisable,
        Self::UserEnable,
        Self::DeviceAdd,
        Self::DeviceRemove,
        Self::LinkComplete,
        Self::RoleGrant,
        Self::RoleRevoke,
        Self::InviteCreate,
        Self::InviteRevoke,
        Self::QuotaSet,
        Self::AuthFailureBurst,
        Self::RateLimitTrip,
        Self::ConfigReload,
        Self::RetentionPurge,
        Self::BackupRestore,
        Self::AuditExport,
        Self::AuditCheckpoint,
        Self::AuditPrune,
        Self::OidcTokenRefused,
        Self::OidcLogout,
        Self::ScimUserCreate,
        Self::ScimUserUpdate,
        Self::ScimUserDelete,
        Self::ScimAuthRefused,
    ];

    /// The stable name (`event.action`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountRegister => "account-register",
            Self::AccountDelete => "account-delete",
            Self::UserDisable => "user-disable",
            Self::UserEnable => "user-enable",
            Self::DeviceAdd => "device-add",
            Self::DeviceRemove => "device-remove",
            Self::LinkComplete => "link-complete",
            Self::RoleGrant => "role-grant",
            Self::RoleRevoke => "role-revoke",
            Self::InviteCreate => "invite-create",
            Self::InviteRevoke => "invite-revoke",
            Self::QuotaSet => "quota-set",
            Self::AuthFailureBurst => "auth-failure-burst",
            Self::RateLimitTrip => "rate-limit-trip",
            Self::ConfigReload => "config-reload",
            Self::RetentionPurge => "retention-purge",
            Self::BackupRestore => "backup-restore",
            Self::AuditExport => "audit-export",
            Self::AuditCheckpoint => "audit-checkpoint",
            Self::AuditPrune => "audit-prune",
            Self::OidcTokenRefused => "oidc-token-refused",
            Self::OidcLogout => "oidc-logout",
            Self::ScimUserCreate => "scim-user-create",
            Self::ScimUserUpdate => "scim-user-update",
            Self::ScimUserDelete => "scim-user-delete",
            Self::ScimAuthRefused => "scim-auth-refused",
        }
    }

    /// The ECS `event.category` the action belongs to.
    pub fn category(self) -> &'static str {
        match self {
            Self::AccountRegister
            | Self::AccountDelete
            | Self::UserDisable
            | Self::UserEnable
            | Self::RoleGrant
            | Self::RoleRevoke
            | Self::QuotaSet
            | Self::ScimUserCreate
            | Self::ScimUserUpdate
            | Self::ScimUserDelete => "iam",
            Self::OidcTokenRefused | Self::OidcLogout | Self::ScimAuthRefused => "authentication",
            Self::DeviceAdd | Self::DeviceRemove | Self::LinkComplete => "host",
            Self::AuthFailureBurst => "authentication",
            Self::RateLimitTrip => "network",
            Self::InviteCreate
            | Self::InviteRevoke
            | Self::ConfigReload
            | Self::RetentionPurge
            | Self::BackupRestore
            | Self::AuditExport
            | Self::AuditCheckpoint
            | Self::AuditPrune => "configuration",
        }
    }

    /// The action of a stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }
}

/// Whether the action succeeded (`event.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It was done.
    Success,
    /// It was refused or failed.
    Failure,
}

impl Outcome {
    /// The stable name (`event.outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    /// The outcome of a stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Success, Self::Failure]
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }
}

/// The keys an entry's details may use: each documented in `docs/AUDIT.md`, none able to
/// carry content, a credential or a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Detail {
    /// The role granted or revoked (`admin`, `auditor`, `member`).
    Role,
    /// Why something was refused or done, as a stable code (`unauthorized`, ...).
    Reason,
    /// How many: failed attempts in a burst, rows purged, entries exported.
    Count,
    /// The name of the rate limit that tripped, or of the purged table.
    Scope,
    /// The first sequence number an export or checkpoint covers.
    FromSeq,
    /// The last sequence number an export or checkpoint covers.
    ToSeq,
    /// A quota's new value.
    Limit,
    /// Who did it from the server host (`host` for `tacit-server admin`).
    Via,
    /// The hash (hex) of the last entry an `audit-prune` removed: the chain's new anchor.
    Anchor,
}

impl Detail {
    /// Every key, in a stable order.
    pub const ALL: [Self; 9] = [
        Self::Role,
        Self::Reason,
        Self::Count,
        Self::Scope,
        Self::FromSeq,
        Self::ToSeq,
        Self::Limit,
        Self::Via,
        Self::Anchor,
    ];

    /// The stable name (a key under `tacit.details` in the export).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Role => "role",
            Self::Reason => "reason",
            Self::Count => "count",
            Self::Scope => "scope",
            Self::FromSeq => "from_seq",
            Self::ToSeq => "to_seq",
            Self::Limit => "limit",
            Self::Via => "via",
            Self::Anchor => "anchor",
        }
    }

    /// The key of a stable name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|detail| detail.as_str() == name)
    }
}

/// An event to append: what the caller knows. The chain adds the sequence number, the time
/// and the hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// The account that acted (`None` for the server itself or the server host).
    pub actor: Option<String>,
    /// The account acted on.
    pub target_user: Option<String>,
    /// The device acted on.
    pub target_device: Option<u32>,
    /// The client's address, where a request caused the event.
    pub source_ip: Option<String>,
    /// Further facts, under documented keys.
    pub details: BTreeMap<Detail, String>,
}

impl Event {
    /// An event with no actor, target, source or details.
    pub fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            actor: None,
            target_user: None,
            target_device: None,
            source_ip: None,
            details: BTreeMap::new(),
        }
    }

    /// Sets the acting account.
    pub fn actor(mut self, username: impl Into<String>) -> Self {
        self.actor = Some(username.into());
        self
    }

    /// Sets the account acted on.
    pub fn target(mut self, username: impl Into<String>) -> Self {
        self.target_user = Some(username.into());
        self
    }

    /// Sets the device acted on.
    pub fn device(mut self, device: u32) -> Self {
        self.target_device = Some(device);
        self
    }

    /// Sets the client's address.
    pub fn source(mut self, ip: impl Into<String>) -> Self {
        self.source_ip = Some(ip.into());
        self
    }

    /// Adds a detail.
    pub fn detail(mut self, key: Detail, value: impl ToString) -> Self {
        self.details.insert(key, value.to_string());
        self
    }
}

/// An entry of the chain, as stored. Its fields are kept as the strings that were hashed,
/// so that verification does not depend on this build knowing every action name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// [`Action::as_str`].
    pub action: String,
    /// [`Outcome::as_str`].
    pub outcome: String,
    /// [`Event::actor`].
    pub actor: Option<String>,
    /// [`Event::target_user`].
    pub target_user: Option<String>,
    /// [`Event::target_device`].
    pub target_device: Option<u32>,
    /// [`Event::source_ip`].
    pub source_ip: Option<String>,
    /// [`Event::details`], by [`Detail::as_str`].
    pub details: BTreeMap<String, String>,
    /// The hash of the entry before (or [`EntryHash::GENESIS`]).
    pub prev_hash: EntryHash,
    /// This entry's hash ([`chain::entry_hash`]).
    pub hash: EntryHash,
}
