//! X25519 prekeys: signed and one-time prekeys share one shape; the label the identity
//! signs tells them apart.

use std::fmt;

use ed25519_dalek::Signature;
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::identity::{IdentityKey, IdentityKeyPair};
use super::{BadSignature, PreKeyId, random32};
use crate::consts::{
    KEY_FORMAT_VERSION, LABEL_SIGN_ONE_TIME_PREKEY, LABEL_SIGN_SIGNED_PREKEY,
    SECRET_FORMAT_VERSION, SIGNATURE_LEN, X25519_LEN,
};
use crate::wire::{DecodeError, Reader, decode_versioned, encode_versioned};

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

pub(super) struct X25519PreKeyPair {
    secret: StaticSecret,
    public: X25519PreKey,
}

impl X25519PreKeyPair {
    pub(super) fn generate<R: CryptoRng + ?Sized>(
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
                    .field("key", &hex::encode(self.0.key.as_bytes()))
                    .finish_non_exhaustive()
            }
        }

        #[doc = $doc_pair]
        pub struct $pair(pub(super) X25519PreKeyPair);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKeyPair;
    use crate::test_rng;

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
}
