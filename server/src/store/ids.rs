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

/// How many bytes a blob's id has.
pub const BLOB_ID_BYTES: usize = 16;

/// A blob's random id (16 bytes; unpadded URL-safe base64 on the wire and in file names).
/// Holding it is what lets a device fetch the blob, so it is made only from random bytes
/// ([`BlobId::from_random`]), a request path ([`BlobId::parse`]) or a stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobId(pub [u8; BLOB_ID_BYTES]);

impl BlobId {
    /// The first [`BLOB_ID_BYTES`] of a random secret.
    #[must_use]
    pub fn from_random(secret: &[u8; 32]) -> Self {
        let mut id = [0u8; BLOB_ID_BYTES];
        id.copy_from_slice(&secret[..BLOB_ID_BYTES]);
        Self(id)
    }

    /// The id a request path names, or `None` for anything that is not unpadded URL-safe
    /// base64 of exactly [`BLOB_ID_BYTES`] bytes.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .map(Self)
    }

    /// The id a stored row holds.
    ///
    /// # Errors
    /// [`super::StoreError::Corrupt`] if the row does not hold [`BLOB_ID_BYTES`] bytes.
    pub fn from_row(bytes: Vec<u8>) -> Result<Self, super::StoreError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| super::StoreError::Corrupt("blob id"))
    }

    /// Its bytes, to store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Its wire form: unpadded URL-safe base64.
impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_blob_id_reads_back_from_its_wire_form_and_nothing_else_parses() {
        let id = BlobId::from_random(&[7u8; 32]);
        assert_eq!(BlobId::parse(&id.to_string()), Some(id));
        assert_eq!(id.to_string().len(), 22);
        for bad in [
            "",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAA=",
            "../../etc/passwd",
        ] {
            assert_eq!(BlobId::parse(bad), None, "{bad}");
        }
        assert!(BlobId::from_row(vec![0; 15]).is_err());
        assert_eq!(BlobId::from_row(vec![7; 16]).unwrap(), BlobId([7; 16]));
    }
}
