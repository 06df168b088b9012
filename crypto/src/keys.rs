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

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use ml_kem::{
    Decapsulate, EncapsulationKey768, KeyExport, Seed,
    ml_kem_768::{Ciphertext, DecapsulationKey},
};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::consts::{
    ED25519_LEN, KEM_PUBLIC_LEN, KEM_SEED_LEN, KEY_FORMAT_VERSION, LABEL_SIGN_IDENTITY_DH,
    LABEL_SIGN_KEM_PREKEY, LABEL_SIGN_ONE_TIME_PREKEY, LABEL_SIGN_SIGNED_PREKEY,
    SECRET_FORMAT_VERSION, SIGNATURE_LEN, X25519_LEN,
};
use crate::wire::{DecodeError, Reader, decode_versioned, encode_versioned};

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

// ---------------------------------------------------------------------------------------
// Identity

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
            .field("signing", &hex(self.signing.as_bytes()))
            .field("dh", &hex(self.dh.as_bytes()))
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

// ---------------------------------------------------------------------------------------
// X25519 prekeys (signed and one-time share one shape; the label tells them apart)

#[derive(Clone, PartialEq, Eq)]
struct X25519PreKey {
    id: PreKeyId,
    key: PublicKey,
    signature: Signature,
}

impl X25519PreKey {
    const ENCODED_LEN: usize = 1 + 4 + X25519_LEN + SIGNATURE_LEN;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.signature.to_bytes());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: PreKeyId(r.u32()?),
            key: r.x25519("X25519 prekey")?,
            signature: Signature::from_bytes(&r.array()?),
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        encode_versioned(Self::ENCODED_LEN, KEY_FORMAT_VERSION, |out| {
            self.encode(out)
        })
    }

    fn from_bytes(what: &'static str, bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(what, bytes, KEY_FORMAT_VERSION, Self::decode)
    }
}

struct X25519PreKeyPair {
    secret: StaticSecret,
    public: X25519PreKey,
}

impl X25519PreKeyPair {
    fn generate<R: CryptoRng + ?Sized>(
        identity: &IdentityKeyPair,
        rng: &mut R,
        id: PreKeyId,
        label: &[u8],
    ) -> Self {
        Self::from_secret(identity, id, label, &random32(rng))
    }

    fn from_secret(
        identity: &IdentityKeyPair,
        id: PreKeyId,
        label: &[u8],
        secret: &[u8; 32],
    ) -> Self {
        let secret = StaticSecret::from(*secret);
        let key = PublicKey::from(&secret);
        let signature = identity.sign(label, Some(id), key.as_bytes());
        Self {
            secret,
            public: X25519PreKey { id, key, signature },
        }
    }

    /// version || id || X25519 secret || signature.
    fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(101));
        out.push(SECRET_FORMAT_VERSION);
        out.extend_from_slice(&self.public.id.0.to_be_bytes());
        out.extend_from_slice(self.secret.as_bytes());
        out.extend_from_slice(&self.public.signature.to_bytes());
        out
    }

    fn from_secret_bytes(what: &'static str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_version(what, bytes, SECRET_FORMAT_VERSION)?;
        let id = PreKeyId(r.u32()?);
        let secret = StaticSecret::from(r.array::<32>()?);
        let signature = Signature::from_bytes(&r.array()?);
        r.finish()?;
        let key = PublicKey::from(&secret);
        Ok(Self {
            secret,
            public: X25519PreKey { id, key, signature },
        })
    }
}

macro_rules! x25519_prekey_types {
    ($public:ident, $pair:ident, $label:expr, $what:literal, $doc_public:literal, $doc_pair:literal) => {
        #[doc = $doc_public]
        #[derive(Clone, PartialEq, Eq)]
        pub struct $public(X25519PreKey);

        impl $public {
            /// Length of the encoding, version byte included.
            pub const ENCODED_LEN: usize = X25519PreKey::ENCODED_LEN;

            /// The prekey's id.
            pub fn id(&self) -> PreKeyId {
                self.0.id
            }

            /// The X25519 public key.
            pub fn key(&self) -> &PublicKey {
                &self.0.key
            }

            /// Checks the signature by `identity`.
            pub fn verify(&self, identity: &IdentityKey) -> Result<(), BadSignature> {
                identity.verify(
                    $what,
                    $label,
                    Some(self.0.id),
                    self.0.key.as_bytes(),
                    &self.0.signature,
                )
            }

            /// The identity's signature over this prekey.
            pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
                self.0.signature.to_bytes()
            }

            /// Builds the prekey from its parts (as a server API carries them), refusing a
            /// non-canonical key. The signature is checked by [`Self::verify`].
            pub fn from_parts(
                id: PreKeyId,
                key: &[u8],
                signature: &[u8],
            ) -> Result<Self, DecodeError> {
                let mut encoded = Vec::with_capacity(X25519PreKey::ENCODED_LEN);
                encoded.push(KEY_FORMAT_VERSION);
                encoded.extend_from_slice(&id.0.to_be_bytes());
                encoded.extend_from_slice(key);
                encoded.extend_from_slice(signature);
                if key.len() != X25519_LEN || signature.len() != SIGNATURE_LEN {
                    return Err(DecodeError::InvalidField {
                        what: $what,
                        field: "part length",
                    });
                }
                Self::from_bytes(&encoded)
            }

            /// Version byte || id || X25519 key || signature.
            pub fn to_bytes(&self) -> Vec<u8> {
                self.0.to_bytes()
            }

            /// Decodes (the signature is checked by [`Self::verify`] or at session setup).
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                X25519PreKey::from_bytes($what, bytes).map(Self)
            }

            pub(crate) fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out)
            }

            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                X25519PreKey::decode(r).map(Self)
            }
        }

        impl fmt::Debug for $public {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($public))
                    .field("id", &self.0.id.0)
                    .field("key", &hex(self.0.key.as_bytes()))
                    .finish_non_exhaustive()
            }
        }

        #[doc = $doc_pair]
        pub struct $pair(X25519PreKeyPair);

        impl $pair {
            /// The public half to upload.
            pub fn public(&self) -> $public {
                $public(self.0.public.clone())
            }

            /// The prekey's id.
            pub fn id(&self) -> PreKeyId {
                self.0.public.id
            }

            pub(crate) fn secret(&self) -> &StaticSecret {
                &self.0.secret
            }

            /// Serializes the secret: version || id || X25519 secret || signature.
            pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
                self.0.to_secret_bytes()
            }

            /// Restores a key serialized by [`Self::to_secret_bytes`].
            pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                X25519PreKeyPair::from_secret_bytes($what, bytes).map(Self)
            }
        }

        impl fmt::Debug for $pair {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($pair))
                    .field("public", &self.public())
                    .finish_non_exhaustive()
            }
        }
    };
}

x25519_prekey_types!(
    SignedPreKey,
    SignedPreKeyPair,
    LABEL_SIGN_SIGNED_PREKEY,
    "signed prekey",
    "A signed X25519 prekey, public half: rotated by its owner on a schedule.",
    "A signed X25519 prekey with its secret. Keep the previous one briefly after rotation."
);
x25519_prekey_types!(
    OneTimePreKey,
    OneTimePreKeyPair,
    LABEL_SIGN_ONE_TIME_PREKEY,
    "one-time prekey",
    "A one-time X25519 prekey, public half: the server hands each out once.",
    "A one-time X25519 prekey with its secret. Delete it once a session used it."
);

// ---------------------------------------------------------------------------------------
// ML-KEM-768 prekeys

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
    fn from_seed(
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

// ---------------------------------------------------------------------------------------
// Bundle

/// What the server hands out for one device: everything needed to start a session with it.
#[derive(Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The device's identity.
    pub identity: IdentityKey,
    /// Its current signed prekey.
    pub signed_prekey: SignedPreKey,
    /// One of its one-time prekeys, if any were left.
    pub one_time_prekey: Option<OneTimePreKey>,
    /// A one-time KEM prekey, or its last-resort KEM prekey.
    pub kem_prekey: KemPreKey,
}

impl PreKeyBundle {
    /// Checks every prekey signature against the bundle's identity.
    pub fn verify(&self) -> Result<(), BadSignature> {
        self.signed_prekey.verify(&self.identity)?;
        if let Some(one_time) = &self.one_time_prekey {
            one_time.verify(&self.identity)?;
        }
        self.kem_prekey.verify(&self.identity)
    }

    /// Version || identity || signed prekey || flag [|| one-time prekey] || KEM prekey.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1600);
        out.push(KEY_FORMAT_VERSION);
        self.identity.encode(&mut out);
        self.signed_prekey.encode(&mut out);
        out.push(u8::from(self.one_time_prekey.is_some()));
        if let Some(one_time) = &self.one_time_prekey {
            one_time.encode(&mut out);
        }
        self.kem_prekey.encode(&mut out);
        out
    }

    /// Decodes strictly. Signatures are checked by [`Self::verify`] (session setup does).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_version("prekey bundle", bytes, KEY_FORMAT_VERSION)?;
        let identity = IdentityKey::decode(&mut r)?;
        let signed_prekey = SignedPreKey::decode(&mut r)?;
        let one_time_prekey = if r.flag("one-time prekey flag")? {
            Some(OneTimePreKey::decode(&mut r)?)
        } else {
            None
        };
        let kem_prekey = KemPreKey::decode(&mut r)?;
        r.finish()?;
        Ok(Self {
            identity,
            signed_prekey,
            one_time_prekey,
            kem_prekey,
        })
    }
}

impl fmt::Debug for PreKeyBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKeyBundle")
            .field("identity", &self.identity)
            .field("signed_prekey", &self.signed_prekey)
            .field("one_time_prekey", &self.one_time_prekey)
            .field("kem_prekey", &self.kem_prekey)
            .finish()
    }
}

/// Constant-time equality of two identities (for pinning checks).
pub fn identities_equal(a: &IdentityKey, b: &IdentityKey) -> bool {
    a.key_bytes().ct_eq(&b.key_bytes()).into()
}

/// Lower-case hex, for `Debug` of public values.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
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
    fn a_key_of_one_kind_does_not_verify_as_another() {
        let mut rng = test_rng(3);
        let id = IdentityKeyPair::generate(&mut rng);
        let otk = &id.generate_one_time_prekeys(&mut rng, PreKeyId(5), 1)[0];
        // Re-read the one-time prekey's bytes as a signed prekey: same shape, other label.
        let as_signed = SignedPreKey::from_bytes(&otk.public().to_bytes()).unwrap();
        assert_eq!(
            as_signed.verify(id.public()),
            Err(BadSignature("signed prekey"))
        );
    }

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

    #[test]
    fn debug_prints_no_secret() {
        let mut rng = test_rng(5);
        let id = IdentityKeyPair::generate(&mut rng);
        let secret = id.to_secret_bytes();
        let shown = format!("{id:?}");
        assert!(!shown.contains(&hex(&secret[1..33])));
        assert!(!shown.contains(&hex(&secret[33..65])));
        let spk = id.generate_signed_prekey(&mut rng, PreKeyId(1));
        let spk_secret = spk.to_secret_bytes();
        assert!(!format!("{spk:?}").contains(&hex(&spk_secret[5..37])));
        let kem = id.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
        let kem_secret = kem.to_secret_bytes();
        assert!(!format!("{kem:?}").contains(&hex(&kem_secret[6..70])));
    }

    #[test]
    fn truncated_and_padded_bundles_are_rejected() {
        let mut rng = test_rng(6);
        let id = IdentityKeyPair::generate(&mut rng);
        let bundle = PreKeyBundle {
            identity: id.public().clone(),
            signed_prekey: id.generate_signed_prekey(&mut rng, PreKeyId(1)).public(),
            one_time_prekey: Some(
                id.generate_one_time_prekeys(&mut rng, PreKeyId(1), 1)[0].public(),
            ),
            kem_prekey: id
                .generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort)
                .public()
                .clone(),
        };
        let bytes = bundle.to_bytes();
        assert_eq!(PreKeyBundle::from_bytes(&bytes).unwrap(), bundle);
        for len in [0, 1, 100, bytes.len() - 1] {
            assert!(matches!(
                PreKeyBundle::from_bytes(&bytes[..len]),
                Err(DecodeError::Truncated { .. })
            ));
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            PreKeyBundle::from_bytes(&padded),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
        let mut future = bytes;
        future[0] = 9;
        assert!(matches!(
            PreKeyBundle::from_bytes(&future),
            Err(DecodeError::UnknownVersion { found: 9, .. })
        ));
    }
}
