//! Chain keys and message keys (Double Ratchet spec, sections 2.2 and 5.2, `KDF_CK`).
//!
//! `KDF_CK(ck)`: message key = HMAC-SHA256(ck, 0x01), next chain key = HMAC-SHA256(ck, 0x02).
//! A message key expands by HKDF-SHA256 (salt = 32 zero bytes, info = the caller's label:
//! `Tacit_Ratchet_MessageKeys_v1` in the Double Ratchet, `Tacit_SenderKey_MessageKeys_v1` in
//! sender keys) into a 32-byte ChaCha20-Poly1305 key and a 12-byte nonce. Each message key
//! seals exactly one message, so the derived nonce never repeats.
//!
//! The same chain serves the Double Ratchet and sender keys ([`crate::group`]), as in
//! libsignal; only the expansion label differs.

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit,
    aead::{AeadInOut, Nonce, Tag},
};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::consts::{CHAIN_MESSAGE_KEY_SEED, CHAIN_NEXT_KEY_SEED, TAG_LEN};

type HmacSha256 = Hmac<Sha256>;

/// A sending or receiving chain key and the index of the next message key it gives.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey {
    key: Box<[u8; 32]>,
    index: u32,
}

impl ChainKey {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self {
            key: Box::new(key),
            index,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// `KDF_CK`: the message key at this index and the chain key after it. `None` when the
    /// index is exhausted (2^32 - 1 messages on one chain).
    pub(crate) fn step(&self) -> Option<(MessageKey, ChainKey)> {
        let next_index = self.index.checked_add(1)?;
        // HMAC keyed once, then cloned: both outputs share the key schedule.
        let keyed = <HmacSha256 as KeyInit>::new_from_slice(self.key.as_slice()).ok()?;
        let mut message = keyed.clone();
        message.update(&[CHAIN_MESSAGE_KEY_SEED]);
        let mut next = keyed;
        next.update(&[CHAIN_NEXT_KEY_SEED]);
        Some((
            MessageKey::new(message.finalize().into_bytes().into(), self.index),
            ChainKey::new(next.finalize().into_bytes().into(), next_index),
        ))
    }
}

/// A key that seals or opens one message.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKey {
    key: Box<[u8; 32]>,
    index: u32,
}

/// Authentication failed: wrong key, tampered ciphertext or associated data.
#[derive(Debug)]
pub(crate) struct OpenError;

impl MessageKey {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self {
            key: Box::new(key),
            index,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// The AEAD key and nonce this message key expands to (HKDF-SHA256, salt = 32 zero
    /// bytes, info = `label`, 44 bytes: key || nonce).
    pub(crate) fn expand(&self, label: &[u8]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
        let mut okm = Zeroizing::new([0u8; 44]);
        let hkdf = Hkdf::<Sha256>::new(Some(&[0u8; 32]), self.key.as_slice());
        // 44 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let _ = hkdf.expand(label, okm.as_mut());
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&okm[..32]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&okm[32..]);
        (key, nonce)
    }

    /// The AEAD cipher and nonce this message key expands to.
    fn cipher(&self, label: &[u8]) -> (ChaCha20Poly1305, Nonce<ChaCha20Poly1305>) {
        let (key, nonce) = self.expand(label);
        let mut key_array = chacha20poly1305::Key::from(*key);
        let cipher = ChaCha20Poly1305::new(&key_array);
        key_array.zeroize();
        (cipher, Nonce::<ChaCha20Poly1305>::from(nonce))
    }

    /// Appends `ciphertext || tag` of `plaintext` to `out`, under the key and nonce that
    /// `label` expands this message key to.
    pub(crate) fn seal(
        &self,
        label: &[u8],
        associated_data: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        let (cipher, nonce) = self.cipher(label);
        let start = out.len();
        out.extend_from_slice(plaintext);
        // ChaCha20-Poly1305 fails only past 256 GiB of plaintext, far over any limit here;
        // should it ever fail, the output stays unauthenticated garbage that no peer accepts.
        let tag = cipher
            .encrypt_inout_detached(&nonce, associated_data, out[start..].as_mut().into())
            .unwrap_or_default();
        out.extend_from_slice(&tag);
    }

    /// Opens `ciphertext || tag` (sealed with the same `label`); the tag is checked before
    /// any plaintext is released.
    pub(crate) fn open(
        &self,
        label: &[u8],
        associated_data: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, OpenError> {
        let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(OpenError)?;
        let (body, tag) = sealed.split_at(body_len);
        let tag = Tag::<ChaCha20Poly1305>::try_from(tag).map_err(|_| OpenError)?;
        let (cipher, nonce) = self.cipher(label);
        let mut plaintext = body.to_vec();
        match cipher.decrypt_inout_detached(
            &nonce,
            associated_data,
            plaintext.as_mut_slice().into(),
            &tag,
        ) {
            Ok(()) => Ok(plaintext),
            Err(_) => {
                plaintext.zeroize();
                Err(OpenError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_step_matches_hmac_definition() {
        let chain = ChainKey::new([7u8; 32], 4);
        let (mk, next) = chain.step().unwrap();
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(&[1]);
        assert_eq!(
            mk.as_bytes().as_slice(),
            mac.finalize().into_bytes().as_slice()
        );
        assert_eq!(mk.index(), 4);
        assert_eq!(next.index(), 5);
        assert!(ChainKey::new([0; 32], u32::MAX).step().is_none());
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let mk = MessageKey::new([9u8; 32], 0);
        let mut sealed = Vec::new();
        mk.seal(b"label", b"ad", b"hello", &mut sealed);
        assert_eq!(mk.open(b"label", b"ad", &sealed).unwrap(), b"hello");
        assert!(mk.open(b"label", b"AD", &sealed).is_err());
        assert!(mk.open(b"other", b"ad", &sealed).is_err());
        assert!(mk.open(b"label", b"ad", &sealed[..10]).is_err());
        sealed[0] ^= 1;
        assert!(mk.open(b"label", b"ad", &sealed).is_err());
    }
}
