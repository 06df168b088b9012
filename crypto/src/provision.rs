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
//! The existing device must also prove that it saw the link code, or the server (which
//! stores the channel and the public key, and so can compute the key's digest) could answer
//! from an account of its choosing. The code therefore carries a [`LinkSecret`] that the
//! server never sees, and the answer is [`seal_answer`]ed: the sealed message followed by
//! an HMAC-SHA256 tag under a key derived from the secret with HKDF (encrypt-then-MAC, with
//! a MAC key the answerer can know only from the code).
//! [`ProvisioningKeyPair::open_answer`] checks the tag, in constant time, before anything
//! else, and fails with [`ProvisionError::NotFromLinkCode`].
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
//!
//! The link answer:
//!
//! ```
//! use tacit_crypto::provision::{LinkSecret, ProvisioningKeyPair, ProvisionError, seal_answer};
//! # let mut rng = rand::rng();
//! let new_device = ProvisioningKeyPair::generate(&mut rng);
//! let secret = LinkSecret::generate(&mut rng); // shown in the link code only
//! let answer = seal_answer(&mut rng, new_device.public(), &secret, b"channel-1", b"identity")?;
//! assert_eq!(&new_device.open_answer(&secret, b"channel-1", &answer)?[..], b"identity");
//! // Anyone without the secret (the server, another account) cannot answer.
//! let guess = LinkSecret::generate(&mut rng);
//! let forged = seal_answer(&mut rng, new_device.public(), &guess, b"channel-1", b"identity")?;
//! assert_eq!(
//!     new_device.open_answer(&secret, b"channel-1", &forged),
//!     Err(ProvisionError::NotFromLinkCode)
//! );
//! # Ok::<(), tacit_crypto::provision::ProvisionError>(())
//! ```

use std::fmt;

use chacha20poly1305::aead::{AeadInOut, Nonce, Tag};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
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
    KEM_CIPHERTEXT_LEN, KEM_PUBLIC_LEN, KEM_SEED_LEN, KEY_FORMAT_VERSION, LABEL_LINK_ANSWER,
    LABEL_PROVISIONING, LINK_ANSWER_TAG_LEN, LINK_ANSWER_VERSION, LINK_SECRET_LEN,
    PROVISIONING_VERSION, TAG_LEN, X25519_LEN,
};

type HmacSha256 = Hmac<Sha256>;
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
    /// A link answer's tag does not verify under the link secret: it was made by someone
    /// who did not see the link code (or it was altered).
    #[error("the answer was not made by a device that saw the link code")]
    NotFromLinkCode,
}

/// The secret half of a link code: random bytes shown to the user only, never sent to the
/// server. Zeroized on drop; never printed.
pub struct LinkSecret(Zeroizing<[u8; LINK_SECRET_LEN]>);

impl LinkSecret {
    /// Length in bytes.
    pub const LEN: usize = LINK_SECRET_LEN;

    /// A fresh secret.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; LINK_SECRET_LEN]);
        rng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// The secret as read back from a link code.
    pub fn from_bytes(bytes: [u8; LINK_SECRET_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes, to put into the link code.
    pub fn as_bytes(&self) -> &[u8; LINK_SECRET_LEN] {
        &self.0
    }

    /// The answer-authentication key:
    /// `HKDF-SHA256(salt = SHA-256(recipient encoding), IKM = secret, info = "Tacit_LinkAnswer_v1")`.
    fn mac(&self, recipient: &ProvisioningPublicKey) -> Result<HmacSha256, ProvisionError> {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(&recipient.digest()), self.0.as_slice())
            .expand(LABEL_LINK_ANSWER, key.as_mut());
        // HMAC takes a key of any length: this never fails.
        <HmacSha256 as KeyInit>::new_from_slice(key.as_slice())
            .map_err(|_| ProvisionError::Authentication)
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

/// The tagged bytes of a link answer: context length (2) || context || sealed message.
fn answer_mac(
    secret: &LinkSecret,
    recipient: &ProvisioningPublicKey,
    context: &[u8],
    sealed: &[u8],
) -> Result<HmacSha256, ProvisionError> {
    let len = u16::try_from(context.len()).map_err(|_| {
        ProvisionError::Decode(DecodeError::Truncated {
            what: "link context (too long)",
        })
    })?;
    let mut mac = secret.mac(recipient)?;
    mac.update(&len.to_be_bytes());
    mac.update(context);
    mac.update(sealed);
    Ok(mac)
}

/// Seals `plaintext` to `recipient` ([`seal`]) and authenticates the result under the link
/// secret: `version (0x01) || HMAC-SHA256 tag (32) || sealed message`.
pub fn seal_answer<R: CryptoRng + ?Sized>(
    rng: &mut R,
    recipient: &ProvisioningPublicKey,
    secret: &LinkSecret,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, ProvisionError> {
    let sealed = seal(rng, recipient, context, plaintext)?;
    let tag = answer_mac(secret, recipient, context, &sealed)?
        .finalize()
        .into_bytes();
    let mut out = Vec::with_capacity(1 + LINK_ANSWER_TAG_LEN + sealed.len());
    out.push(LINK_ANSWER_VERSION);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&sealed);
    Ok(out)
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

impl ProvisioningKeyPair {
    /// Opens a link answer ([`seal_answer`]): checks its version, then its tag under
    /// `secret` (in constant time) before anything else, then opens the sealed message.
    pub fn open_answer(
        &self,
        secret: &LinkSecret,
        context: &[u8],
        answer: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProvisionError> {
        let mut r = Reader::with_version("link answer", answer, LINK_ANSWER_VERSION)?;
        let tag: [u8; LINK_ANSWER_TAG_LEN] = r.array()?;
        let sealed = r.remaining();
        answer_mac(secret, &self.public, context, sealed)?
            .verify_slice(&tag)
            .map_err(|_| ProvisionError::NotFromLinkCode)?;
        self.open(context, sealed)
    }
}

#[cfg(test)]
impl ProvisioningKeyPair {
    /// The ML-KEM shared secret of `ciphertext`, for the known-answer vectors (which give
    /// it to implementations that have no ML-KEM of their own).
    pub(crate) fn kem_shared_secret(&self, ciphertext: &[u8; KEM_CIPHERTEXT_LEN]) -> [u8; 32] {
        self.kem.decapsulate(&Ciphertext::from(*ciphertext)).into()
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
    fn a_link_answer_opens_only_under_the_secret_of_the_code() {
        let mut rng = rand::rng();
        let device = ProvisioningKeyPair::generate(&mut rng);
        let secret = LinkSecret::generate(&mut rng);
        let answer = seal_answer(&mut rng, device.public(), &secret, b"ctx", b"identity").unwrap();
        assert_eq!(
            &device.open_answer(&secret, b"ctx", &answer).unwrap()[..],
            b"identity"
        );
        // Sealed correctly to the device's key, but under another secret (what a server
        // that knows the channel and the key's digest, but not the code, can make).
        let other = LinkSecret::from_bytes([0; LinkSecret::LEN]);
        let forged = seal_answer(&mut rng, device.public(), &other, b"ctx", b"identity").unwrap();
        assert_eq!(
            device.open_answer(&secret, b"ctx", &forged),
            Err(ProvisionError::NotFromLinkCode)
        );
        // A bare sealed message (the old answer) is no answer.
        let bare = seal(&mut rng, device.public(), b"ctx", b"identity").unwrap();
        assert!(device.open_answer(&secret, b"ctx", &bare).is_err());
        // Another context, any flipped byte, truncation, another version: refused.
        assert_eq!(
            device.open_answer(&secret, b"other", &answer),
            Err(ProvisionError::NotFromLinkCode)
        );
        for i in [1, 20, 33, 40, answer.len() - 1] {
            let mut bad = answer.clone();
            bad[i] ^= 1;
            assert_eq!(
                device.open_answer(&secret, b"ctx", &bad),
                Err(ProvisionError::NotFromLinkCode),
                "flip at {i}"
            );
        }
        let mut version = answer.clone();
        version[0] = 2;
        assert!(matches!(
            device.open_answer(&secret, b"ctx", &version),
            Err(ProvisionError::Decode(_))
        ));
        assert!(device.open_answer(&secret, b"ctx", &answer[..20]).is_err());
        assert!(device.open_answer(&secret, b"ctx", &[]).is_err());
        assert_eq!(format!("{secret:?}"), "LinkSecret(..)");
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
