//! Identity keys and prekeys: what a device publishes and what it keeps secret.
//!
//! A device identity is an Ed25519 signing key plus an X25519 Diffie-Hellman key, the
//! latter signed by the former. Prekeys (a signed X25519 prekey, one-time X25519 prekeys and
//! ML-KEM-768 prekeys) each carry an id and a signature by the identity's Ed25519 key over a
//! label that names the key's kind, so a key of one kind can never be passed off as another.
//!
//! Secret halves ([`IdentityKeyPair`], [`SignedPreKeyPair`], [`OneTimePreKeyPair`],
//! [`KemPreKeyPair`]) zeroize on drop, are not `Clone`, and print nothing secret in `Debug`.
//! Public halves encode to versioned bytes and decode strictly.
//!
//! ```
//! use tacit_crypto::{IdentityKeyPair, KemPreKeyKind, PreKeyId};
//! # let mut rng = rand::rng();
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let spk = alice.generate_signed_prekey(&mut rng, PreKeyId(1));
//! let kem = alice.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
//! assert!(spk.public().verify(alice.public()).is_ok());
//! assert!(kem.public().verify(alice.public()).is_ok());
//! ```
//!
//! One file per kind of key: `identity.rs` (the identity and its pair), `prekeys.rs` (the
//! signed and one-time X25519 prekeys), `kem.rs` (the ML-KEM-768 prekeys) and `bundle.rs`
//! (what the server hands out for one device); their types are re-exported here.

use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

mod bundle;
mod identity;
mod kem;
mod prekeys;

pub use bundle::PreKeyBundle;
pub use identity::{IdentityKey, IdentityKeyPair, identities_equal};
pub use kem::{KemPreKey, KemPreKeyKind, KemPreKeyPair};
pub use prekeys::{OneTimePreKey, OneTimePreKeyPair, SignedPreKey, SignedPreKeyPair};

/// A prekey signature did not verify against the identity that should have made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{0} signature does not verify")]
pub struct BadSignature(pub &'static str);

/// The id of a prekey, chosen by its owner and unique per kind on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PreKeyId(pub u32);

/// Draws 32 random bytes into a zeroizing buffer.
fn random32<R: CryptoRng + ?Sized>(rng: &mut R) -> Zeroizing<[u8; 32]> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    bytes
}

/// The message an identity signs for a key: label || id (big-endian) || key bytes.
fn signed_message(label: &[u8], id: Option<PreKeyId>, key: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(label.len() + 5 + key.len());
    message.extend_from_slice(label);
    if let Some(PreKeyId(id)) = id {
        message.extend_from_slice(&id.to_be_bytes());
    }
    message.extend_from_slice(key);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    #[test]
    fn prekeys_round_trip_and_verify() {
        let mut rng = test_rng(2);
        let id = IdentityKeyPair::generate(&mut rng);
        let other = IdentityKeyPair::generate(&mut rng);

        let spk = id.generate_signed_prekey(&mut rng, PreKeyId(7));
        let spk_pub = SignedPreKey::from_bytes(&spk.public().to_bytes()).unwrap();
        assert_eq!(spk_pub, spk.public());
        assert!(spk_pub.verify(id.public()).is_ok());
        assert!(spk_pub.verify(other.public()).is_err());
        let restored = SignedPreKeyPair::from_secret_bytes(&spk.to_secret_bytes()).unwrap();
        assert_eq!(restored.public(), spk.public());

        let otks = id.generate_one_time_prekeys(&mut rng, PreKeyId(u32::MAX), 2);
        assert_eq!(otks[1].id(), PreKeyId(0));
        let otk = OneTimePreKey::from_bytes(&otks[0].public().to_bytes()).unwrap();
        assert!(otk.verify(id.public()).is_ok());

        let kem = id.generate_kem_prekey(&mut rng, PreKeyId(3), KemPreKeyKind::OneTime);
        let kem_pub = KemPreKey::from_bytes(&kem.public().to_bytes()).unwrap();
        assert_eq!(&kem_pub, kem.public());
        assert!(kem_pub.verify(id.public()).is_ok());
        let restored = KemPreKeyPair::from_secret_bytes(&kem.to_secret_bytes()).unwrap();
        assert_eq!(restored.public(), kem.public());

        // Rebuilt from the parts an API carries.
        let parts =
            SignedPreKey::from_parts(spk_pub.id(), spk_pub.key().as_bytes(), &spk_pub.signature());
        assert_eq!(parts.unwrap(), spk_pub);
        assert!(SignedPreKey::from_parts(PreKeyId(7), &[1; 31], &spk_pub.signature()).is_err());
        let parts = KemPreKey::from_parts(
            kem_pub.id(),
            kem_pub.kind(),
            kem_pub.key_bytes(),
            &kem_pub.signature(),
        );
        assert_eq!(&parts.unwrap(), kem.public());
        assert!(
            KemPreKey::from_parts(PreKeyId(3), KemPreKeyKind::OneTime, &[0; 10], &[0; 64]).is_err()
        );
    }

    #[test]
    fn debug_prints_no_secret() {
        let mut rng = test_rng(5);
        let id = IdentityKeyPair::generate(&mut rng);
        let secret = id.to_secret_bytes();
        let shown = format!("{id:?}");
        assert!(!shown.contains(&hex::encode(&secret[1..33])));
        assert!(!shown.contains(&hex::encode(&secret[33..65])));
        let spk = id.generate_signed_prekey(&mut rng, PreKeyId(1));
        let spk_secret = spk.to_secret_bytes();
        assert!(!format!("{spk:?}").contains(&hex::encode(&spk_secret[5..37])));
        let kem = id.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
        let kem_secret = kem.to_secret_bytes();
        assert!(!format!("{kem:?}").contains(&hex::encode(&kem_secret[6..70])));
    }
}
