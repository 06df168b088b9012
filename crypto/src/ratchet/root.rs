//! The root key and its KDF (Double Ratchet spec, section 5.2, `KDF_RK`).

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::chain::ChainKey;
use crate::consts::LABEL_ROOT;

/// The root key: consumed by each DH ratchet step to give a new root key and chain key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct RootKey(Box<[u8; 32]>);

impl RootKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(Box::new(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `KDF_RK(rk, dh_out)`: HKDF-SHA256 with salt = root key, IKM = DH output,
    /// info = `Tacit_Ratchet_Root_v1`, 64 bytes: new root key || new chain key.
    pub(crate) fn step(&self, dh_out: &[u8; 32]) -> (RootKey, ChainKey) {
        let mut okm = [0u8; 64];
        let hkdf = Hkdf::<Sha256>::new(Some(self.0.as_slice()), dh_out);
        // 64 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hkdf.expand(LABEL_ROOT, &mut okm);
        let mut root = [0u8; 32];
        let mut chain = [0u8; 32];
        root.copy_from_slice(&okm[..32]);
        chain.copy_from_slice(&okm[32..]);
        okm.zeroize();
        (RootKey::new(root), ChainKey::new(chain, 0))
    }
}
