//! The Double Ratchet (Signal's Double Ratchet specification, revision 1).
//!
//! - `KDF_RK`: HKDF-SHA256, salt = root key, IKM = X25519 output, info =
//!   `Tacit_Ratchet_Root_v1`, 64 bytes -> root key || chain key (`root.rs`).
//! - `KDF_CK`: HMAC-SHA256(ck, 0x01) = message key, HMAC-SHA256(ck, 0x02) = next chain key
//!   (`chain.rs`).
//! - Each message key expands by HKDF-SHA256 into a ChaCha20-Poly1305 key and nonce; the
//!   associated data is the session AD followed by the message header (version, type,
//!   ratchet key, previous chain length, index).
//! - Limits: a jump of at most [`MAX_CHAIN_JUMP`](crate::consts::MAX_CHAIN_JUMP) in one
//!   chain, at most [`MAX_SKIPPED_KEYS`](crate::consts::MAX_SKIPPED_KEYS) skipped keys per
//!   session and [`MAX_RECEIVER_CHAINS`](crate::consts::MAX_RECEIVER_CHAINS) receiving
//!   chains (oldest evicted first); the ratchet keys of the last
//!   [`MAX_RETIRED_RATCHET_KEYS`](crate::consts::MAX_RETIRED_RATCHET_KEYS) evicted chains are
//!   remembered so that a replay on them reports a duplicate.
//!
//! Out of order, tampered and replayed messages between Alice and Bob:
//!
//! ```
//! # use tacit_crypto::{Address, IdentityKeyPair, KemPreKeyKind, Message, PreKeyBundle,
//! #     PreKeyId, ResponderKeys, Session};
//! use tacit_crypto::DecryptError;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut rng = rand::rng();
//! # let (alice_addr, bob_addr) = (Address::new("alice", 1)?, Address::new("bob", 1)?);
//! # let (alice, bob) = (IdentityKeyPair::generate(&mut rng), IdentityKeyPair::generate(&mut rng));
//! # let spk = bob.generate_signed_prekey(&mut rng, PreKeyId(1));
//! # let kem = bob.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
//! # let bundle = PreKeyBundle { identity: bob.public().clone(), signed_prekey: spk.public(),
//! #     one_time_prekey: None, kem_prekey: kem.public().clone() };
//! # let mut alice_session = Session::initiate(&mut rng, &alice, &alice_addr, &bob_addr, &bundle)?;
//! # let Message::PreKey(first) = Message::from_bytes(&alice_session.encrypt(b"hi")?)? else { unreachable!() };
//! # let keys = ResponderKeys { identity: &bob, signed_prekey: &spk, one_time_prekey: None, kem_prekey: &kem };
//! # let (mut bob_session, _) = Session::accept(&mut rng, keys, &bob_addr, &alice_addr, &first)?;
//! // (Alice and Bob have sessions set up as in the crate docs.)
//! let one = alice_session.encrypt(b"one")?;
//! let two = alice_session.encrypt(b"two")?;
//!
//! // "two" arrives first; "one" still opens later from a stored skipped key.
//! assert_eq!(bob_session.decrypt(&mut rng, &Message::from_bytes(&two)?)?, b"two");
//! assert_eq!(bob_session.decrypt(&mut rng, &Message::from_bytes(&one)?)?, b"one");
//!
//! // A replay is refused; so is a tampered message, and neither changes the session.
//! let replay = bob_session.decrypt(&mut rng, &Message::from_bytes(&one)?);
//! assert_eq!(replay, Err(DecryptError::Duplicate));
//! let mut tampered = alice_session.encrypt(b"three")?;
//! let last = tampered.len() - 1;
//! tampered[last] ^= 1;
//! let before = bob_session.to_bytes();
//! let err = bob_session.decrypt(&mut rng, &Message::from_bytes(&tampered)?);
//! assert_eq!(err, Err(DecryptError::Authentication));
//! assert_eq!(bob_session.to_bytes(), before);
//! # Ok(())
//! # }
//! ```

pub(crate) mod chain;
pub(crate) mod root;
pub(crate) mod session;

pub(crate) use root::RootKey;
pub use session::{DecryptError, EncryptError, Session};
