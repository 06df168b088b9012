//! The Double Ratchet (Signal's Double Ratchet specification, revision 1).
//!
//! - `KDF_RK`: HKDF-SHA256, salt = root key, IKM = X25519 output, info =
//!   `Tacit_Ratchet_Root_v1`, 64 bytes -> root key || chain key ([`root`]).
//! - `KDF_CK`: HMAC-SHA256(ck, 0x01) = message key, HMAC-SHA256(ck, 0x02) = next chain key
//!   ([`chain`]).
//! - Each message key expands by HKDF-SHA256 into a ChaCha20-Poly1305 key and nonce; the
//!   associated data is the session AD followed by the message header (version, type,
//!   ratchet key, previous chain length, index).
//! - Limits: a jump of at most [`MAX_CHAIN_JUMP`](crate::consts::MAX_CHAIN_JUMP) in one
//!   chain, at most [`MAX_SKIPPED_KEYS`](crate::consts::MAX_SKIPPED_KEYS) skipped keys per
//!   session and [`MAX_RECEIVER_CHAINS`](crate::consts::MAX_RECEIVER_CHAINS) receiving
//!   chains (oldest evicted first).

pub(crate) mod chain;
pub(crate) mod root;
pub(crate) mod session;

pub(crate) use root::RootKey;
pub use session::{DecryptError, EncryptError, Session};
