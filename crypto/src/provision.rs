//! Provisioning: sealing a message to a device that has no identity yet (device linking).
//!
//! A new device makes a one-use [`ProvisioningKeyPair`] (an X25519 key and an ML-KEM-768
//! key) and shows [`ProvisioningPublicKey::digest`] to its owner, who gives it to an existing
//! device out of band (the link code). The existing device checks the public key it got from
//! the server against that digest, then [`seal`]s the account identity to it. Only the holder
//! of the new device's secret can open the message, and a server that swaps the public key
//! is caught by the digest.
//!
//! The construction is a hybrid KEM followed by an AEAD, combined as in PQXDH:
//! `okm = HKDF-SHA256(salt = 32 zero bytes, IKM = 0xFF * 32 || DH || SS || EK || CT || D,
//! info = "Tacit_Provisioning_v1")` where `DH` is X25519 of a fresh ephemeral key `EK` and
//! the recipient's X25519 key, `SS` the ML-KEM-768 shared secret of ciphertext `CT`, and `D`
//! the recipient key's digest; `okm` is a 32-byte ChaCha20-Poly1305 key and a 12-byte nonce
//! (the key is used once). The associated data is the caller's context (the channel id).
//!
//! ```
//! use tacit_crypto::provision::{ProvisioningKeyPair, seal};
//! # let mut rng = rand::rng();
//! let new_device = ProvisioningKeyPair::generate(&mut rng);
//! let public = new_device.public().clone();
//! let sealed = seal(&mut rng, &public, b"channel-1", b"the account identity")?;
//! assert_eq!(&new_device.open(b"channel-1", &sealed)?[..], b"the account identity");
//! assert!(new_device.open(b"channel-2", &sealed).is_err());
//! # Ok::<(), tacit_crypto::provision::ProvisionError>(())
//! ```

use std::fmt;

use chacha20poly1305::aead::{AeadInOut, Nonce, Tag};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use ml_kem::{
    Decapsulate, EncapsulationKey768, KeyExport, Seed,
    ml_kem_768::{Ciphertext, DecapsulationKey},
};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::consts::{
    KEM_CIPHERTEXT_LEN, KEM_PUBLIC_LEN, KEM_SEED_LEN, KEY_FORMAT_VERSION, LABEL_PROVISIONING,
    PROVISIONING_VERSION, TAG_LEN, X25519_LEN,
};
use crate::wire::{DecodeError, Reader, decode_versioned, encode_versioned};

/// Why a provisioning message could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The message or key is malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A Diffie-Hellman output was all zeros (a low-order key).
    #[error("non-contributory X25519 key")]
    NonContributory,
    /// The message was not sealed to this key with this context, or was altered.
    #[error("provisioning message does not authenticate")]
    Authentication,
}

/// A new device's provisioning public key.
#[derive(Clone, PartialEq, Eq)]
pub struct ProvisioningPublicKey {
    dh: PublicKey,
    kem: Box<EncapsulationKey768>,
    kem_bytes: Box<[u8; KEM_PUBLIC_LEN]>,
}

impl ProvisioningPublicKey {
    /// Length of the encoding, version byte included.
    pub const ENCODED_LEN: usize = 1 + X25519_LEN + KEM_PUBLIC_LEN;

    /// Version || X25519 key || ML-KEM-768 encapsulation key.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_versioned(Self::ENCODED_LEN, KEY_FORMAT_VERSION, |out| {
            out.extend_from_slice(self.dh.as_bytes());
            out.extend_from_slice(self.kem_bytes.as_slice());
        })
    }

    /// Decodes strictly (canonical X25519 key, FIPS 203 modulus check).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(
            "provisioning public key",
            bytes,
            KEY_FORMAT_VERSION,
            |r: &mut Reader<'_>| {
                let dh = r.x25519("X25519 key")?;
                let kem_bytes: Box<[u8; KEM_PUBLIC_LEN]> = Box::new(r.array()?);
                let kem = EncapsulationKey768::new(&(*kem_bytes).into())
                    .map_err(|_| r.invalid("ML-KEM-768 encapsulation key"))?;
                Ok(Self {
                    dh,
                    kem: Box::new(kem),
                    kem_bytes,
                })
            },
        )
    }

    /// SHA-256 of the encoding: what the link code carries so that the existing device can
    /// check the key it is given.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }
}

impl fmt::Debug for ProvisioningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisioningPublicKey")
            .finish_non_exhaustive()
    }
}

/// A new device's one-use provisioning key pair. Never stored; zeroized on drop.
pub struct ProvisioningKeyPair {
    dh: StaticSecret,
    kem: Box<DecapsulationKey>,
    public: ProvisioningPublicKey,
}

impl ProvisioningKeyPair {
    /// A fresh key pair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut dh_bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(dh_bytes.as_mut());
        let dh = StaticSecret::from(*dh_bytes);
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        rng.fill_bytes(seed.as_mut());
        let mut array = Seed::from(*seed);
        let kem = Box::new(DecapsulationKey::from_seed(array));
        array.zeroize();
        let kem_public = kem.encapsulation_key().clone();
        let kem_bytes: Box<[u8; KEM_PUBLIC_LEN]> = Box::new(kem_public.to_bytes().into());
        let public = ProvisioningPublicKey {
            dh: PublicKey::from(&dh),
            kem: Box::new(kem_public),
            kem_bytes,
        };
        Self { dh, kem, public }
    }

    /// The public half, to publish.
    pub fn public(&self) -> &ProvisioningPublicKey {
        &self.public
    }

    /// Opens a message [`seal`]ed to this key with the same `context`.
    pub fn open(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProvisionError> {
        let mut r = Reader::with_version("provisioning message", sealed, PROVISIONING_VERSION)?;
        let ephemeral = r.x25519("ephemeral key")?;
        let ciphertext: [u8; KEM_CIPHERTEXT_LEN] = r.array()?;
        let body = r.remaining();
        let body_len = body
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(ProvisionError::Decode(DecodeError::Truncated {
                what: "provisioning message",
            }))?;
        let dh = agree(&self.dh, &ephemeral)?;
        let shared = Zeroizing::new(<[u8; 32]>::from(
            self.kem.decapsulate(&Ciphertext::from(ciphertext)),
        ));
        let (cipher, nonce) = derive(&dh, &shared, &ephemeral, &ciphertext, &self.public);
        let (body, tag) = body.split_at(body_len);
        let tag =
            Tag::<ChaCha20Poly1305>::try_from(tag).map_err(|_| ProvisionError::Authentication)?;
        let mut plaintext = Zeroizing::new(body.to_vec());
        cipher
            .decrypt_inout_detached(&nonce, context, plaintext.as_mut_slice().into(), &tag)
            .map_err(|_| ProvisionError::Authentication)?;
        Ok(plaintext)
    }
}

impl fmt::Debug for ProvisioningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisioningKeyPair")
            .finish_non_exhaustive()
    }
}

/// Seals `plaintext` to `recipient`, bound to `context`:
/// version || ephemeral X25519 key || ML-KEM-768 ciphertext || AEAD ciphertext || tag.
pub fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    recipient: &ProvisioningPublicKey,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, ProvisionError> {
    let mut ephemeral_bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(ephemeral_bytes.as_mut());
    let ephemeral = StaticSecret::from(*ephemeral_bytes);
    let ephemeral_public = PublicKey::from(&ephemeral);
    let dh = agree(&ephemeral, &recipient.dh)?;
    let mut kem_message = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(kem_message.as_mut());
    let (ciphertext, shared) = recipient
        .kem
        .encapsulate_deterministic(&(*kem_message).into());
    let shared = Zeroizing::new(<[u8; 32]>::from(shared));
    let ciphertext: [u8; KEM_CIPHERTEXT_LEN] = ciphertext.into();
    let (cipher, nonce) = derive(&dh, &shared, &ephemeral_public, &ciphertext, recipient);

    let mut out = Vec::with_capacity(1 + X25519_LEN + KEM_CIPHERTEXT_LEN + plaintext.len() + 16);
    out.push(PROVISIONING_VERSION);
    out.extend_from_slice(ephemeral_public.as_bytes());
    out.extend_from_slice(&ciphertext);
    let start = out.len();
    out.extend_from_slice(plaintext);
    // ChaCha20-Poly1305 fails only past 256 GiB of plaintext; the message is a few KiB.
    let tag = cipher
        .encrypt_inout_detached(&nonce, context, out[start..].as_mut().into())
        .map_err(|_| ProvisionError::Authentication)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn agree(secret: &StaticSecret, public: &PublicKey) -> Result<Zeroizing<[u8; 32]>, ProvisionError> {
    let shared = secret.diffie_hellman(public);
    if shared.was_contributory() {
        Ok(Zeroizing::new(shared.to_bytes()))
    } else {
        Err(ProvisionError::NonContributory)
    }
}

/// The one-use AEAD key and nonce (see the module documentation).
fn derive(
    dh: &[u8; 32],
    shared: &[u8; 32],
    ephemeral: &PublicKey,
    ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
    recipient: &ProvisioningPublicKey,
) -> (ChaCha20Poly1305, Nonce<ChaCha20Poly1305>) {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 5 + KEM_CIPHERTEXT_LEN));
    ikm.extend_from_slice(&[0xFF; 32]);
    ikm.extend_from_slice(dh);
    ikm.extend_from_slice(shared);
    ikm.extend_from_slice(ephemeral.as_bytes());
    ikm.extend_from_slice(ciphertext);
    ikm.extend_from_slice(&recipient.digest());
    let mut okm = Zeroizing::new([0u8; 44]);
    // 44 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm).expand(LABEL_PROVISIONING, okm.as_mut());
    let mut key = chacha20poly1305::Key::default();
    key.copy_from_slice(&okm[..32]);
    let cipher = ChaCha20Poly1305::new(&key);
    key.zeroize();
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (cipher, Nonce::<ChaCha20Poly1305>::from(nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let mut rng = rand::rng();
        let device = ProvisioningKeyPair::generate(&mut rng);
        let public = ProvisioningPublicKey::from_bytes(&device.public().to_bytes()).unwrap();
        assert_eq!(&public, device.public());
        assert_eq!(public.digest(), device.public().digest());

        let sealed = seal(&mut rng, &public, b"ctx", b"secret identity").unwrap();
        assert_eq!(
            &device.open(b"ctx", &sealed).unwrap()[..],
            b"secret identity"
        );
        // Wrong context, wrong recipient, any flipped byte, truncation: all refused.
        assert_eq!(
            device.open(b"other", &sealed),
            Err(ProvisionError::Authentication)
        );
        let stranger = ProvisioningKeyPair::generate(&mut rng);
        assert!(stranger.open(b"ctx", &sealed).is_err());
        for i in [1, 40, 1 + 32 + 500, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(device.open(b"ctx", &bad).is_err(), "flip at {i}");
        }
        assert!(device.open(b"ctx", &sealed[..sealed.len() - 1]).is_err());
        assert!(device.open(b"ctx", &sealed[..40]).is_err());
        assert!(device.open(b"ctx", &[]).is_err());
        // Two seals of the same message differ.
        assert_ne!(
            sealed,
            seal(&mut rng, &public, b"ctx", b"secret identity").unwrap()
        );
    }

    #[test]
    fn digests_differ_and_keys_decode_strictly() {
        let mut rng = rand::rng();
        let a = ProvisioningKeyPair::generate(&mut rng);
        let b = ProvisioningKeyPair::generate(&mut rng);
        assert_ne!(a.public().digest(), b.public().digest());
        let bytes = a.public().to_bytes();
        assert!(ProvisioningPublicKey::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(ProvisioningPublicKey::from_bytes(&long).is_err());
        let mut version = bytes;
        version[0] = 9;
        assert!(ProvisioningPublicKey::from_bytes(&version).is_err());
        assert!(!format!("{a:?}").contains('['));
    }
}
