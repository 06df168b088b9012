//! ML-KEM-768 prekeys (one-time and last resort): the post-quantum half of PQXDH.

use std::fmt;

use ed25519_dalek::Signature;
use ml_kem::{
    Decapsulate, EncapsulationKey768, KeyExport, Seed,
    ml_kem_768::{Ciphertext, DecapsulationKey},
};
use zeroize::{Zeroize, Zeroizing};

use super::identity::{IdentityKey, IdentityKeyPair};
use super::{BadSignature, PreKeyId};
use crate::consts::{
    KEM_PUBLIC_LEN, KEM_SEED_LEN, KEY_FORMAT_VERSION, LABEL_SIGN_KEM_PREKEY, SECRET_FORMAT_VERSION,
    SIGNATURE_LEN,
};
use crate::wire::{DecodeError, Reader, decode_versioned, encode_versioned};

/// Whether a KEM prekey is used once or is the last-resort key used when none are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KemPreKeyKind {
    /// Handed out once by the server, deleted by its owner after use.
    OneTime,
    /// Signed fallback, handed out when no one-time KEM prekey is left.
    LastResort,
}

impl KemPreKeyKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::OneTime => 1,
            Self::LastResort => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::OneTime),
            2 => Some(Self::LastResort),
            _ => None,
        }
    }
}

/// An ML-KEM-768 prekey, public half.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPreKey {
    id: PreKeyId,
    kind: KemPreKeyKind,
    key: Box<EncapsulationKey768>,
    key_bytes: Box<[u8; KEM_PUBLIC_LEN]>,
    signature: Signature,
}

impl KemPreKey {
    /// Length of the encoding, version byte included.
    pub const ENCODED_LEN: usize = 1 + 4 + 1 + KEM_PUBLIC_LEN + SIGNATURE_LEN;

    /// The prekey's id.
    pub fn id(&self) -> PreKeyId {
        self.id
    }

    /// One-time or last-resort.
    pub fn kind(&self) -> KemPreKeyKind {
        self.kind
    }

    pub(crate) fn encapsulation_key(&self) -> &EncapsulationKey768 {
        &self.key
    }

    /// The 1184-byte encapsulation key.
    pub fn key_bytes(&self) -> &[u8; KEM_PUBLIC_LEN] {
        &self.key_bytes
    }

    fn signed_payload(kind: KemPreKeyKind, key_bytes: &[u8]) -> Vec<u8> {
        let mut payload = Vec::with_capacity(1 + key_bytes.len());
        payload.push(kind.to_byte());
        payload.extend_from_slice(key_bytes);
        payload
    }

    /// The identity's signature over this prekey.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        self.signature.to_bytes()
    }

    /// Builds the prekey from its parts (as a server API carries them), refusing an
    /// encapsulation key that fails FIPS 203's check. The signature is checked by
    /// [`Self::verify`].
    pub fn from_parts(
        id: PreKeyId,
        kind: KemPreKeyKind,
        key: &[u8],
        signature: &[u8],
    ) -> Result<Self, DecodeError> {
        if key.len() != KEM_PUBLIC_LEN || signature.len() != SIGNATURE_LEN {
            return Err(DecodeError::InvalidField {
                what: "KEM prekey",
                field: "part length",
            });
        }
        let mut encoded = Vec::with_capacity(Self::ENCODED_LEN);
        encoded.push(KEY_FORMAT_VERSION);
        encoded.extend_from_slice(&id.0.to_be_bytes());
        encoded.push(kind.to_byte());
        encoded.extend_from_slice(key);
        encoded.extend_from_slice(signature);
        Self::from_bytes(&encoded)
    }

    /// Checks the signature by `identity` (over label || id || kind || key).
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), BadSignature> {
        identity.verify(
            "KEM prekey",
            LABEL_SIGN_KEM_PREKEY,
            Some(self.id),
            &Self::signed_payload(self.kind, self.key_bytes.as_slice()),
            &self.signature,
        )
    }

    /// Version byte || id || kind || encapsulation key || signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_versioned(Self::ENCODED_LEN, KEY_FORMAT_VERSION, |out| {
            self.encode(out)
        })
    }

    /// Decodes; rejects an encapsulation key that FIPS 203's modulus check refuses.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned("KEM prekey", bytes, KEY_FORMAT_VERSION, Self::decode)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.push(self.kind.to_byte());
        out.extend_from_slice(self.key_bytes.as_slice());
        out.extend_from_slice(&self.signature.to_bytes());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = PreKeyId(r.u32()?);
        let kind = KemPreKeyKind::from_byte(r.u8()?).ok_or_else(|| r.invalid("kind"))?;
        let key_bytes: Box<[u8; KEM_PUBLIC_LEN]> = Box::new(r.array()?);
        let key = EncapsulationKey768::new(&(*key_bytes).into())
            .map_err(|_| r.invalid("ML-KEM-768 encapsulation key"))?;
        let signature = Signature::from_bytes(&r.array()?);
        Ok(Self {
            id,
            kind,
            key: Box::new(key),
            key_bytes,
            signature,
        })
    }
}

impl fmt::Debug for KemPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemPreKey")
            .field("id", &self.id.0)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// An ML-KEM-768 prekey with its secret (kept as the 64-byte FIPS 203 seed).
pub struct KemPreKeyPair {
    seed: Zeroizing<[u8; KEM_SEED_LEN]>,
    secret: Box<DecapsulationKey>,
    public: KemPreKey,
}

impl KemPreKeyPair {
    pub(super) fn from_seed(
        identity: &IdentityKeyPair,
        id: PreKeyId,
        kind: KemPreKeyKind,
        seed: &[u8; KEM_SEED_LEN],
    ) -> Self {
        let (secret, key_bytes) = Self::expand(seed);
        let signature = identity.sign(
            LABEL_SIGN_KEM_PREKEY,
            Some(id),
            &KemPreKey::signed_payload(kind, key_bytes.as_slice()),
        );
        Self::assemble(seed, secret, key_bytes, id, kind, signature)
    }

    fn expand(seed: &[u8; KEM_SEED_LEN]) -> (Box<DecapsulationKey>, Box<[u8; KEM_PUBLIC_LEN]>) {
        let mut array = Seed::from(*seed);
        let secret = Box::new(DecapsulationKey::from_seed(array));
        array.zeroize();
        let key_bytes: Box<[u8; KEM_PUBLIC_LEN]> =
            Box::new(secret.encapsulation_key().to_bytes().into());
        (secret, key_bytes)
    }

    fn assemble(
        seed: &[u8; KEM_SEED_LEN],
        secret: Box<DecapsulationKey>,
        key_bytes: Box<[u8; KEM_PUBLIC_LEN]>,
        id: PreKeyId,
        kind: KemPreKeyKind,
        signature: Signature,
    ) -> Self {
        let key = Box::new(secret.encapsulation_key().clone());
        Self {
            seed: Zeroizing::new(*seed),
            secret,
            public: KemPreKey {
                id,
                kind,
                key,
                key_bytes,
                signature,
            },
        }
    }

    /// The public half to upload.
    pub fn public(&self) -> &KemPreKey {
        &self.public
    }

    /// The prekey's id.
    pub fn id(&self) -> PreKeyId {
        self.public.id
    }

    /// Recovers the shared secret from a ciphertext. ML-KEM rejects implicitly: a wrong
    /// ciphertext yields an unrelated secret, and session setup then fails authentication.
    pub(crate) fn decapsulate(&self, ciphertext: &Ciphertext) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.decapsulate(ciphertext).into())
    }

    /// Serializes the secret: version || id || kind || 64-byte seed || signature.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 4 + 1 + KEM_SEED_LEN + 64));
        out.push(SECRET_FORMAT_VERSION);
        out.extend_from_slice(&self.public.id.0.to_be_bytes());
        out.push(self.public.kind.to_byte());
        out.extend_from_slice(self.seed.as_ref());
        out.extend_from_slice(&self.public.signature.to_bytes());
        out
    }

    /// Restores a key serialized by [`Self::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_version("KEM prekey secret", bytes, SECRET_FORMAT_VERSION)?;
        let id = PreKeyId(r.u32()?);
        let kind = KemPreKeyKind::from_byte(r.u8()?).ok_or_else(|| r.invalid("kind"))?;
        let seed = Zeroizing::new(r.array::<KEM_SEED_LEN>()?);
        let signature = Signature::from_bytes(&r.array()?);
        r.finish()?;
        let (secret, key_bytes) = Self::expand(&seed);
        Ok(Self::assemble(
            &seed, secret, key_bytes, id, kind, signature,
        ))
    }
}

impl fmt::Debug for KemPreKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            seed: _,
            secret: _,
            public,
        } = self;
        f.debug_struct("KemPreKeyPair")
            .field("public", public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    #[test]
    fn kem_kind_is_signed() {
        let mut rng = test_rng(4);
        let id = IdentityKeyPair::generate(&mut rng);
        let kem = id.generate_kem_prekey(&mut rng, PreKeyId(3), KemPreKeyKind::OneTime);
        let mut bytes = kem.public().to_bytes();
        bytes[5] = 2; // claim it is the last-resort key
        let swapped = KemPreKey::from_bytes(&bytes).unwrap();
        assert!(swapped.verify(id.public()).is_err());
    }
}
