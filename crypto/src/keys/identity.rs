//! A device's identity: an Ed25519 signing key and the X25519 key it signs, and the pair
//! that holds their secrets.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kem::{KemPreKeyKind, KemPreKeyPair};
use super::prekeys::{OneTimePreKeyPair, SignedPreKeyPair, X25519PreKeyPair};
use super::{BadSignature, PreKeyId, random32, signed_message};
use crate::consts::{
    ED25519_LEN, KEM_SEED_LEN, KEY_FORMAT_VERSION, LABEL_SIGN_IDENTITY_DH,
    LABEL_SIGN_ONE_TIME_PREKEY, LABEL_SIGN_SIGNED_PREKEY, SECRET_FORMAT_VERSION, SIGNATURE_LEN,
    X25519_LEN,
};
use crate::wire::{DecodeError, Reader, decode_versioned, encode_versioned};

/// A device's public identity: an Ed25519 verifying key and an X25519 key that it signed.
///
/// A value of this type always carries a valid self-signature: decoding checks it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityKey {
    signing: VerifyingKey,
    dh: PublicKey,
    signature: Signature,
}

impl IdentityKey {
    /// Length of the encoding, version byte included.
    pub const ENCODED_LEN: usize = 1 + ED25519_LEN + X25519_LEN + SIGNATURE_LEN;

    /// The Ed25519 key that signs prekeys (and group messages).
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }

    /// The X25519 key used in PQXDH.
    pub fn dh_key(&self) -> &PublicKey {
        &self.dh
    }

    /// The 64 bytes that identify this identity: Ed25519 key || X25519 key.
    pub fn key_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.signing.as_bytes());
        out[32..].copy_from_slice(self.dh.as_bytes());
        out
    }

    /// Version byte || Ed25519 key || X25519 key || signature of the X25519 key.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_versioned(Self::ENCODED_LEN, KEY_FORMAT_VERSION, |out| {
            self.encode(out)
        })
    }

    /// Decodes and checks the self-signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned("identity key", bytes, KEY_FORMAT_VERSION, Self::decode)
    }

    /// Verifies `signature` over `label || id || key` with this identity's signing key.
    pub(crate) fn verify(
        &self,
        what: &'static str,
        label: &[u8],
        id: Option<PreKeyId>,
        key: &[u8],
        signature: &Signature,
    ) -> Result<(), BadSignature> {
        self.signing
            .verify_strict(&signed_message(label, id, key), signature)
            .map_err(|_| BadSignature(what))
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.dh.as_bytes());
        out.extend_from_slice(&self.signature.to_bytes());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let signing =
            VerifyingKey::from_bytes(&r.array()?).map_err(|_| r.invalid("Ed25519 identity key"))?;
        let dh = r.x25519("X25519 identity key")?;
        let signature = Signature::from_bytes(&r.array()?);
        let key = Self {
            signing,
            dh,
            signature,
        };
        key.verify(
            "identity",
            LABEL_SIGN_IDENTITY_DH,
            None,
            key.dh.as_bytes(),
            &key.signature,
        )
        .map_err(|_| DecodeError::BadSignature {
            what: "identity key",
        })?;
        Ok(key)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("signing", &hex::encode(self.signing.as_bytes()))
            .field("dh", &hex::encode(self.dh.as_bytes()))
            .finish_non_exhaustive()
    }
}

/// A device's identity key pair. Keep it in the device's encrypted store.
pub struct IdentityKeyPair {
    signing: SigningKey,
    dh: StaticSecret,
    public: IdentityKey,
}

impl IdentityKeyPair {
    /// Generates a new identity from `rng` (32 bytes for Ed25519, then 32 for X25519).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let signing = random32(rng);
        let dh = random32(rng);
        Self::from_parts(&signing, &dh)
    }

    fn from_parts(signing_seed: &[u8; 32], dh_secret: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(signing_seed);
        let dh = StaticSecret::from(*dh_secret);
        let dh_public = PublicKey::from(&dh);
        let signature = signing.sign(&signed_message(
            LABEL_SIGN_IDENTITY_DH,
            None,
            dh_public.as_bytes(),
        ));
        let public = IdentityKey {
            signing: signing.verifying_key(),
            dh: dh_public,
            signature,
        };
        Self {
            signing,
            dh,
            public,
        }
    }

    /// The public identity to publish.
    pub fn public(&self) -> &IdentityKey {
        &self.public
    }

    pub(crate) fn dh_secret(&self) -> &StaticSecret {
        &self.dh
    }

    /// Signs `label || id || key` (always with a label from [`crate::consts`]).
    pub(crate) fn sign(&self, label: &[u8], id: Option<PreKeyId>, key: &[u8]) -> Signature {
        self.signing.sign(&signed_message(label, id, key))
    }

    /// Makes a signed X25519 prekey with the given id.
    pub fn generate_signed_prekey<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        id: PreKeyId,
    ) -> SignedPreKeyPair {
        SignedPreKeyPair(X25519PreKeyPair::generate(
            self,
            rng,
            id,
            LABEL_SIGN_SIGNED_PREKEY,
        ))
    }

    /// Makes `count` one-time X25519 prekeys with ids `first`, `first + 1`, ... (wrapping).
    pub fn generate_one_time_prekeys<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        first: PreKeyId,
        count: u32,
    ) -> Vec<OneTimePreKeyPair> {
        (0..count)
            .map(|i| {
                let id = PreKeyId(first.0.wrapping_add(i));
                OneTimePreKeyPair(X25519PreKeyPair::generate(
                    self,
                    rng,
                    id,
                    LABEL_SIGN_ONE_TIME_PREKEY,
                ))
            })
            .collect()
    }

    /// Makes an ML-KEM-768 prekey (64 random bytes: the FIPS 203 seed d || z).
    pub fn generate_kem_prekey<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        id: PreKeyId,
        kind: KemPreKeyKind,
    ) -> KemPreKeyPair {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        rng.fill_bytes(seed.as_mut());
        KemPreKeyPair::from_seed(self, id, kind, &seed)
    }

    /// Serializes the secret key: version || Ed25519 seed || X25519 secret.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(65));
        out.push(SECRET_FORMAT_VERSION);
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.dh.as_bytes());
        out
    }

    /// Restores a key serialized by [`Self::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_version("identity secret", bytes, SECRET_FORMAT_VERSION)?;
        let signing = Zeroizing::new(r.array::<32>()?);
        let dh = Zeroizing::new(r.array::<32>()?);
        r.finish()?;
        Ok(Self::from_parts(&signing, &dh))
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            signing: _,
            dh: _,
            public,
        } = self;
        f.debug_struct("IdentityKeyPair")
            .field("public", public)
            .finish_non_exhaustive()
    }
}

/// Constant-time equality of two identities (for pinning checks).
pub fn identities_equal(a: &IdentityKey, b: &IdentityKey) -> bool {
    a.key_bytes().ct_eq(&b.key_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    #[test]
    fn identity_round_trips_and_checks_its_signature() {
        let mut rng = test_rng(1);
        let id = IdentityKeyPair::generate(&mut rng);
        let bytes = id.public().to_bytes();
        assert_eq!(bytes.len(), IdentityKey::ENCODED_LEN);
        assert_eq!(&IdentityKey::from_bytes(&bytes).unwrap(), id.public());

        let mut forged = bytes.clone();
        forged[40] ^= 1; // the X25519 key
        assert!(matches!(
            IdentityKey::from_bytes(&forged),
            Err(DecodeError::BadSignature { .. })
        ));

        let restored = IdentityKeyPair::from_secret_bytes(&id.to_secret_bytes()).unwrap();
        assert_eq!(restored.public(), id.public());
    }
}
