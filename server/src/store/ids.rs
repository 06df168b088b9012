//! The store's identifiers as types: an account's row id, a provisioning channel's random
//! id, and the hash the server keeps instead of a secret. An account id binds and reads as
//! its integer column; the others bind their bytes (`as_bytes`).

use std::fmt;

/// The id of an account's row (never shown to clients: they name accounts by username).
/// Bound and read as the `INTEGER`/`BIGINT` column it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
#[sqlx(transparent)]
pub struct AccountId(pub i64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many bytes a provisioning channel's id has.
pub const CHANNEL_ID_BYTES: usize = 16;

/// A provisioning channel's random id (16 bytes; URL-safe base64 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelId(pub [u8; CHANNEL_ID_BYTES]);

impl ChannelId {
    /// Its bytes, to store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A SHA-256 digest of a device credential's secret, an invite token or a link token: what
/// the server keeps instead of the secret. It is compared in constant time only
/// ([`SecretHash::ct_eq`]; there is no `==`), and prints as nothing but its type.
#[derive(Clone, Copy)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// The hash with these bytes (as computed by `service::hash_secret`, or as stored).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its bytes, to store.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether two hashes are equal, in time independent of where they differ.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}
