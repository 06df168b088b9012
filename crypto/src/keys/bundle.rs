//! The prekey bundle: what the server hands out for one device.

use std::fmt;

use super::BadSignature;
use super::identity::IdentityKey;
use super::kem::KemPreKey;
use super::prekeys::{OneTimePreKey, SignedPreKey};
use crate::consts::KEY_FORMAT_VERSION;
use crate::wire::{DecodeError, Reader};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{IdentityKeyPair, KemPreKeyKind, PreKeyId};
    use crate::test_rng;

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
