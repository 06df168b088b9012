//! Safety numbers: what two people compare to know that no one sits between them
//! (as Signal's numeric fingerprint scheme, libsignal `fingerprint.rs`).
//!
//! For each party, with `key` = its 64-byte identity key (Ed25519 || X25519) and `id` its
//! stable user id:
//! ```text
//! h_0 = SHA-512(0x00 0x00 || key || id || key)
//! h_i = SHA-512(h_(i-1) || key)              for i = 1 .. 5199
//! ```
//! The first 30 bytes of the final hash, read as six 5-byte big-endian numbers each taken
//! mod 100000, give 30 digits. The 60-digit safety number is the two parties' 30-digit
//! strings, the smaller first, so both sides show the same number. The scannable form is
//! `0x01 || first 32 bytes of the local hash || first 32 bytes of the remote hash`.
//!
//! ```
//! use tacit_crypto::{IdentityKeyPair, SafetyNumber};
//! # let mut rng = rand::rng();
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let on_alice = SafetyNumber::new(b"alice", alice.public(), b"bob", bob.public());
//! let on_bob = SafetyNumber::new(b"bob", bob.public(), b"alice", alice.public());
//! assert_eq!(on_alice.displayable(), on_bob.displayable());
//! assert!(on_bob.matches_scanned(&on_alice.scannable()).unwrap());
//! ```

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::consts::{FINGERPRINT_HASH_VERSION, FINGERPRINT_ITERATIONS, FINGERPRINT_SCAN_VERSION};
use crate::keys::IdentityKey;
use crate::wire::{DecodeError, Reader};

/// A scanned safety number could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// The scanned bytes are not a scannable safety number.
    #[error("not a scannable safety number: {0}")]
    Malformed(#[from] DecodeError),
}

/// The safety number of one conversation, as one side computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    local: [u8; 32],
    remote: [u8; 32],
    displayable: String,
}

fn party_hash(id: &[u8], key: &IdentityKey) -> [u8; 64] {
    let key = key.key_bytes();
    let mut hash = Sha512::new()
        .chain_update(FINGERPRINT_HASH_VERSION.to_be_bytes())
        .chain_update(key)
        .chain_update(id)
        .chain_update(key)
        .finalize();
    for _ in 1..FINGERPRINT_ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key)
            .finalize();
    }
    hash.into()
}

fn digits(hash: &[u8; 64]) -> String {
    hash[..30]
        .chunks_exact(5)
        .map(|chunk| {
            let value = chunk
                .iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

impl SafetyNumber {
    /// Computes the safety number between us (`local_id`, `local_key`) and them.
    pub fn new(
        local_id: &[u8],
        local_key: &IdentityKey,
        remote_id: &[u8],
        remote_key: &IdentityKey,
    ) -> Self {
        let local_hash = party_hash(local_id, local_key);
        let remote_hash = party_hash(remote_id, remote_key);
        let (local_digits, remote_digits) = (digits(&local_hash), digits(&remote_hash));
        let displayable = if local_digits <= remote_digits {
            local_digits + &remote_digits
        } else {
            remote_digits + &local_digits
        };
        let mut local = [0u8; 32];
        let mut remote = [0u8; 32];
        local.copy_from_slice(&local_hash[..32]);
        remote.copy_from_slice(&remote_hash[..32]);
        Self {
            local,
            remote,
            displayable,
        }
    }

    /// The 60 digits to read aloud or compare on screen.
    pub fn displayable(&self) -> &str {
        &self.displayable
    }

    /// The 60 digits in twelve groups of five, as shown to people.
    pub fn grouped(&self) -> String {
        let bytes = self.displayable.as_bytes();
        bytes
            .chunks(5)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The compact form to show as a QR code: version || local 32 bytes || remote 32 bytes.
    pub fn scannable(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(65);
        out.push(FINGERPRINT_SCAN_VERSION);
        out.extend_from_slice(&self.local);
        out.extend_from_slice(&self.remote);
        out
    }

    /// Whether a form scanned from the other party's screen matches ours (their local is
    /// our remote and the other way round), compared in constant time.
    pub fn matches_scanned(&self, scanned: &[u8]) -> Result<bool, FingerprintError> {
        let mut r =
            Reader::with_version("scannable safety number", scanned, FINGERPRINT_SCAN_VERSION)?;
        let their_local = r.array::<32>()?;
        let their_remote = r.array::<32>()?;
        r.finish()?;
        Ok(bool::from(
            their_local.ct_eq(&self.remote) & their_remote.ct_eq(&self.local),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKeyPair;
    use crate::test_rng;

    #[test]
    fn both_sides_agree_and_a_changed_key_changes_the_number() {
        let mut rng = test_rng(11);
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let mallory = IdentityKeyPair::generate(&mut rng);
        let a = SafetyNumber::new(b"alice", alice.public(), b"bob", bob.public());
        let b = SafetyNumber::new(b"bob", bob.public(), b"alice", alice.public());
        assert_eq!(a.displayable(), b.displayable());
        assert_eq!(a.displayable().len(), 60);
        assert!(a.displayable().bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(a.grouped().len(), 60 + 11);
        assert!(a.matches_scanned(&b.scannable()).unwrap());
        assert!(!a.matches_scanned(&a.scannable()).unwrap());

        let m = SafetyNumber::new(b"bob", mallory.public(), b"alice", alice.public());
        assert_ne!(a.displayable(), m.displayable());
        assert!(!a.matches_scanned(&m.scannable()).unwrap());
        assert!(a.matches_scanned(&b.scannable()[..64]).is_err());
    }
}
