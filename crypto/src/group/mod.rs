//! Sender keys for groups: the design of libsignal's `SenderKey` (`group_cipher.rs`,
//! `sender_keys.rs`), with Tacit's primitives and encodings.
//!
//! Each member sends on its own chain per group ([`SenderKeyState`]): a random chain id, a
//! chain key stepped like the Double Ratchet's (`KDF_CK`: message key = HMAC-SHA256(ck,
//! 0x01), next chain key = HMAC-SHA256(ck, 0x02)) and an Ed25519 key pair of the chain.
//! A message key expands by HKDF-SHA256 (info = `Tacit_SenderKey_MessageKeys_v1`) into a
//! ChaCha20-Poly1305 key and nonce; the associated data is the message header (version,
//! type, group id, chain id, iteration), and the chain's Ed25519 key signs the whole
//! serialized message. One encryption serves every member: O(1) per group message.
//!
//! The sender hands its chain to each member in a [`SenderKeyDistribution`], sent over the
//! pairwise (Double Ratchet) sessions. A member keeps, per sender and group, a
//! [`SenderKeyRecord`] of at most [`MAX_SENDER_KEY_CHAINS`](crate::consts::MAX_SENDER_KEY_CHAINS) chains. Decryption verifies the
//! signature (`verify_strict`) before anything else, then derives forward at most
//! [`MAX_CHAIN_JUMP`] keys, keeps at most [`MAX_SKIPPED_KEYS`](crate::consts::MAX_SKIPPED_KEYS) skipped keys per record
//! (oldest evicted first), refuses replays with [`GroupDecryptError::Duplicate`], and changes
//! the record only when the message opens.
//!
//! The signature shows which chain a message came from, not which member: a malicious
//! member could hand out a copy of another member's chain as its own. Clients put the
//! sender's address inside the group plaintext and check it against the sender whose
//! record opened the message (libsignal's sealed-sender certificate plays this part).
//!
//! Sender keys have forward secrecy (chain keys move through a one-way function) but no
//! post-compromise security: whoever learns a chain key reads the rest of that chain. Removing
//! a member therefore means every remaining member starts a new chain
//! ([`SenderKeyState::generate`]) and distributes it to the remaining members only.
//!
//! ```
//! use tacit_crypto::{GroupDecryptError, GroupId, SenderKeyDistribution, SenderKeyMessage,
//!     SenderKeyRecord, SenderKeyState};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand::rng();
//! let group = GroupId::generate(&mut rng);
//!
//! // Alice starts her chain for the group and sends its distribution to Bob over their
//! // pairwise session (not shown); Bob keeps a record of Alice's chains in this group.
//! let mut alice = SenderKeyState::generate(&mut rng, group);
//! let wire = alice.distribution().to_bytes();
//! let mut bob = SenderKeyRecord::new(group);
//! bob.process(&SenderKeyDistribution::from_bytes(&wire)?)?;
//!
//! // One ciphertext for the whole group; each member opens it.
//! let sent = alice.encrypt(b"hello group")?;
//! let message = SenderKeyMessage::from_bytes(&sent)?;
//! assert_eq!(bob.decrypt(&message)?, b"hello group");
//! assert_eq!(bob.decrypt(&message), Err(GroupDecryptError::Duplicate));
//!
//! // Carol leaves: Alice rotates, and Bob (still a member) gets the new chain. Carol's copy
//! // of the old chain opens nothing sent on the new one.
//! let mut alice = SenderKeyState::generate(&mut rng, group);
//! bob.process(&alice.distribution())?;
//! let sent = alice.encrypt(b"after rotation")?;
//! assert_eq!(bob.decrypt(&SenderKeyMessage::from_bytes(&sent)?)?, b"after rotation");
//!
//! // Both sides persist their state.
//! let restored = SenderKeyRecord::from_bytes(&bob.to_bytes())?;
//! assert_eq!(restored.to_bytes(), bob.to_bytes());
//! # Ok(())
//! # }
//! ```
//!
//! One file per part: `state.rs` (our sending chain), `distribution.rs` (a chain as handed
//! to a member), `message.rs` (the group message) and `record.rs` (what a member keeps of a
//! sender's chains); their types are re-exported here. The tests below run both sides.

use std::fmt;

use ed25519_dalek::VerifyingKey;
use rand_core::CryptoRng;
use thiserror::Error;

use crate::consts::{CHAIN_ID_LEN, GROUP_ID_LEN, MAX_CHAIN_JUMP};
use crate::ratchet::chain::ChainKey;
use crate::wire::{DecodeError, Reader};

mod distribution;
mod message;
mod record;
mod state;

pub use distribution::SenderKeyDistribution;
pub use message::SenderKeyMessage;
pub use record::SenderKeyRecord;
pub use state::SenderKeyState;

/// Length of a sender-key message header: version, type, group id, chain id, iteration.
const HEADER_LEN: usize = 1 + 1 + GROUP_ID_LEN + CHAIN_ID_LEN + 4;

/// Why a group message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupEncryptError {
    /// The chain has given out 2^32 - 1 message keys; start a new chain
    /// ([`SenderKeyState::generate`]) and distribute it.
    #[error("sender-key chain exhausted; start a new chain")]
    ChainExhausted,
}

/// Why a group message could not be decrypted. The record is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupDecryptError {
    /// The message belongs to another group than this record.
    #[error("message is for another group")]
    WrongGroup,
    /// The record holds no chain with the message's chain id: its distribution has not
    /// arrived yet, or the chain was evicted by [`MAX_SENDER_KEY_CHAINS`](crate::consts::MAX_SENDER_KEY_CHAINS) newer ones.
    #[error("no sender-key chain with this id; ask the sender for its distribution")]
    UnknownChain,
    /// The signature does not verify with the chain's key: the message was altered, or was
    /// not sent by the holder of this chain.
    #[error("sender-key message signature does not verify")]
    BadSignature,
    /// The message was sent before the iteration at which we received the chain: a member
    /// cannot read what was sent before the sender shared its key with them.
    #[error("message iteration {iteration} precedes the chain's distribution (iteration {first})")]
    BeforeDistribution {
        /// The message's iteration.
        iteration: u32,
        /// The first iteration this record can open on the chain.
        first: u32,
    },
    /// The message's key was already used: a replay or duplicate delivery. (A skipped key
    /// evicted past [`MAX_SKIPPED_KEYS`](crate::consts::MAX_SKIPPED_KEYS) also reports this.)
    #[error("duplicate message: its key was already used")]
    Duplicate,
    /// The message claims to be further ahead in its chain than [`MAX_CHAIN_JUMP`] allows.
    #[error("message is {jump} messages ahead of its chain; at most {MAX_CHAIN_JUMP} are allowed")]
    TooFarAhead {
        /// How far ahead it claimed to be.
        jump: u64,
    },
    /// The ciphertext does not open under the chain's key although the signature verified:
    /// the chain's holder sent something that does not match the distributed chain key.
    #[error("message failed authentication")]
    Authentication,
}

/// Why a distribution could not be added to a record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DistributionError {
    /// The distribution is for another group than this record.
    #[error("distribution is for another group")]
    WrongGroup,
}

/// A group's id: 16 bytes chosen at random by the group's creator (see
/// [`GroupId::generate`]), the same for every member.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub [u8; GROUP_ID_LEN]);

impl GroupId {
    /// Draws a new random group id.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; GROUP_ID_LEN];
        rng.fill_bytes(&mut id);
        Self(id)
    }
}

impl GroupId {
    /// The id its one spelling names: exactly 32 lowercase hex digits (so that one group
    /// can never be kept under two names); `None` for anything else.
    #[must_use]
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 2 * GROUP_ID_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut id = [0u8; GROUP_ID_LEN];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(Self(id))
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({})", hex::encode(self.0))
    }
}

/// Its one spelling: 32 lowercase hex digits.
impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// As its [`Display`](fmt::Display) spelling, a JSON string.
impl serde::Serialize for GroupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Only from its one spelling ([`GroupId::from_hex`]).
impl<'de> serde::Deserialize<'de> for GroupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a group id is 32 lowercase hex digits"))
    }
}

/// The id of one sender-key chain: 16 random bytes, new for every chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainId(pub [u8; CHAIN_ID_LEN]);

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", hex::encode(self.0))
    }
}

fn put_chain(out: &mut Vec<u8>, chain: &ChainKey) {
    out.extend_from_slice(chain.as_bytes());
    out.extend_from_slice(&chain.index().to_be_bytes());
}

fn read_chain(r: &mut Reader<'_>) -> Result<ChainKey, DecodeError> {
    let key = r.array::<32>()?;
    Ok(ChainKey::new(key, r.u32()?))
}

/// Reads an Ed25519 public key, refusing invalid and small-order ones (which
/// `verify_strict` would refuse later anyway).
fn read_verifying_key(r: &mut Reader<'_>) -> Result<VerifyingKey, DecodeError> {
    match VerifyingKey::from_bytes(&r.array()?) {
        Ok(key) if !key.is_weak() => Ok(key),
        _ => Err(r.invalid("Ed25519 signing key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{
        MAX_SENDER_KEY_CHAINS, MAX_SKIPPED_KEYS, MESSAGE_TYPE_SENDER_KEY, MESSAGE_VERSION,
        SIGNATURE_LEN, TAG_LEN,
    };
    use crate::test_rng;
    use rand::rngs::StdRng;
    use zeroize::Zeroizing;

    #[test]
    fn a_group_id_has_one_spelling() {
        const GROUP: &str = "00112233445566778899aabbccddeeff";
        let id = GroupId::from_hex(GROUP).expect("its spelling");
        assert_eq!(id.to_string(), GROUP);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{GROUP}\""));
        assert_eq!(serde_json::from_str::<GroupId>(&json).unwrap(), id);
        for other in [
            GROUP.to_uppercase(),
            "+0+1+2+3+4+5+6+7+8+9+a+b+c+d+e+f".to_owned(),
            format!("{GROUP}00"),
            GROUP[..30].to_owned(),
            format!(" {}", &GROUP[1..]),
            "é".repeat(16),
        ] {
            assert_eq!(GroupId::from_hex(&other), None, "{other:?} was accepted");
            let json = serde_json::to_string(&other).unwrap();
            assert!(serde_json::from_str::<GroupId>(&json).is_err(), "{other:?}");
        }
    }

    fn setup(rng: &mut StdRng) -> (SenderKeyState, SenderKeyRecord) {
        let group = GroupId::generate(rng);
        let alice = SenderKeyState::generate(rng, group);
        let mut bob = SenderKeyRecord::new(group);
        let distribution = SenderKeyDistribution::from_bytes(&alice.distribution().to_bytes())
            .expect("distribution decodes");
        bob.process(&distribution).unwrap();
        (alice, bob)
    }

    fn send(alice: &mut SenderKeyState, n: usize, tag: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let plaintext = format!("{tag}-{i}").into_bytes();
                (alice.encrypt(&plaintext).unwrap(), plaintext)
            })
            .collect()
    }

    fn decrypt(record: &mut SenderKeyRecord, wire: &[u8]) -> Result<Vec<u8>, GroupDecryptError> {
        record.decrypt(&SenderKeyMessage::from_bytes(wire).unwrap())
    }

    #[test]
    fn round_trip_and_wire_layout() {
        let mut rng = test_rng(51);
        let (mut alice, mut bob) = setup(&mut rng);
        let wire = alice.encrypt(b"hello").unwrap();
        assert_eq!(wire.len(), HEADER_LEN + 5 + TAG_LEN + SIGNATURE_LEN);
        assert_eq!(&wire[..2], &[MESSAGE_VERSION, MESSAGE_TYPE_SENDER_KEY]);
        let message = SenderKeyMessage::from_bytes(&wire).unwrap();
        assert_eq!(message.group_id(), alice.group_id());
        assert_eq!(message.chain_id(), alice.chain_id());
        assert_eq!(message.iteration(), 0);
        assert_eq!(message.as_bytes(), wire.as_slice());
        assert_eq!(bob.decrypt(&message).unwrap(), b"hello");
        assert_eq!(alice.iteration(), 1);
        // A group message is not a pairwise message, and the other way round.
        assert!(crate::Message::from_bytes(&wire).is_err());
        assert!(SenderKeyMessage::from_bytes(&alice.distribution().to_bytes()).is_err());
    }

    #[test]
    fn out_of_order_within_the_bound_and_each_once() {
        let mut rng = test_rng(52);
        let (mut alice, mut bob) = setup(&mut rng);
        let messages = send(&mut alice, 6, "m");
        for i in [5, 1, 3, 0, 4, 2] {
            assert_eq!(decrypt(&mut bob, &messages[i].0).unwrap(), messages[i].1);
            assert_eq!(
                decrypt(&mut bob, &messages[i].0),
                Err(GroupDecryptError::Duplicate)
            );
        }
        assert_eq!(bob.skipped_key_count(), 0);
    }

    #[test]
    fn a_jump_over_the_cap_is_refused_and_changes_nothing() {
        let mut rng = test_rng(53);
        let (mut alice, mut bob) = setup(&mut rng);
        let cap = MAX_CHAIN_JUMP as usize;
        let messages = send(&mut alice, cap + 2, "x");
        let before = bob.to_bytes();
        assert_eq!(
            decrypt(&mut bob, &messages[cap + 1].0),
            Err(GroupDecryptError::TooFarAhead {
                jump: u64::from(MAX_CHAIN_JUMP) + 1
            })
        );
        assert_eq!(bob.to_bytes(), before);
        assert_eq!(
            decrypt(&mut bob, &messages[cap].0).unwrap(),
            messages[cap].1
        );
        assert_eq!(bob.skipped_key_count(), cap);
        assert_eq!(decrypt(&mut bob, &messages[7].0).unwrap(), messages[7].1);
    }

    #[test]
    fn skipped_keys_are_capped_oldest_first() {
        let mut rng = test_rng(54);
        let (mut alice, mut bob) = setup(&mut rng);
        let messages = send(&mut alice, 1501, "a");
        assert!(decrypt(&mut bob, &messages[1500].0).is_ok());
        let more = send(&mut alice, 1001, "b");
        assert!(decrypt(&mut bob, &more[1000].0).is_ok());
        assert_eq!(bob.skipped_key_count(), MAX_SKIPPED_KEYS);
        // 2,500 were skipped: the oldest 500 are gone and report a duplicate.
        assert_eq!(
            decrypt(&mut bob, &messages[0].0),
            Err(GroupDecryptError::Duplicate)
        );
        assert_eq!(
            decrypt(&mut bob, &messages[500].0).unwrap(),
            messages[500].1
        );
    }

    #[test]
    fn tampering_anywhere_is_refused_and_changes_nothing() {
        let mut rng = test_rng(55);
        let (mut alice, mut bob) = setup(&mut rng);
        let messages = send(&mut alice, 3, "t");
        assert!(decrypt(&mut bob, &messages[2].0).is_ok()); // keys 0 and 1 skipped
        for (wire, _) in &messages[..2] {
            for i in 0..wire.len() {
                let mut bytes = wire.clone();
                bytes[i] ^= 0x01;
                let before = bob.to_bytes();
                if let Ok(message) = SenderKeyMessage::from_bytes(&bytes) {
                    assert!(bob.decrypt(&message).is_err(), "byte {i} accepted");
                }
                assert_eq!(bob.to_bytes(), before, "byte {i} changed the record");
            }
        }
        // Ciphertext and signature flips are signature failures; a group id flip is
        // caught before that.
        let mut ciphertext = messages[0].0.clone();
        ciphertext[HEADER_LEN] ^= 1;
        assert_eq!(
            decrypt(&mut bob, &ciphertext),
            Err(GroupDecryptError::BadSignature)
        );
        let mut signature = messages[0].0.clone();
        let last = signature.len() - 1;
        signature[last] ^= 1;
        assert_eq!(
            decrypt(&mut bob, &signature),
            Err(GroupDecryptError::BadSignature)
        );
        let mut group = messages[0].0.clone();
        group[2] ^= 1;
        assert_eq!(
            decrypt(&mut bob, &group),
            Err(GroupDecryptError::WrongGroup)
        );
        let mut chain = messages[0].0.clone();
        chain[18] ^= 1;
        assert_eq!(
            decrypt(&mut bob, &chain),
            Err(GroupDecryptError::UnknownChain)
        );
        // Untampered, they still open.
        for (wire, plaintext) in &messages[..2] {
            assert_eq!(&decrypt(&mut bob, wire).unwrap(), plaintext);
        }
    }

    #[test]
    fn another_chain_or_group_is_refused() {
        let mut rng = test_rng(56);
        let (mut alice, mut bob) = setup(&mut rng);
        let group = alice.group_id();

        // Mallory's chain claims Alice's chain id: her signature does not verify.
        let mut mallory = SenderKeyState::generate(&mut rng, group);
        mallory.chain_id = alice.chain_id();
        let forged = mallory.encrypt(b"forged").unwrap();
        assert_eq!(
            decrypt(&mut bob, &forged),
            Err(GroupDecryptError::BadSignature)
        );

        // A chain Bob was never given.
        let mut stranger = SenderKeyState::generate(&mut rng, group);
        let unknown = stranger.encrypt(b"?").unwrap();
        assert_eq!(
            decrypt(&mut bob, &unknown),
            Err(GroupDecryptError::UnknownChain)
        );

        // Alice's chain, distributed for another group.
        let other_group = GroupId::generate(&mut rng);
        let mut elsewhere = SenderKeyState::generate(&mut rng, other_group);
        assert_eq!(
            bob.process(&elsewhere.distribution()),
            Err(DistributionError::WrongGroup)
        );
        let wire = elsewhere.encrypt(b"x").unwrap();
        assert_eq!(decrypt(&mut bob, &wire), Err(GroupDecryptError::WrongGroup));

        // A signature made by the right key over a message that was re-labelled for
        // another group does not verify either (the group id is signed and in the AD).
        let genuine = alice.encrypt(b"genuine").unwrap();
        let mut bob_elsewhere = SenderKeyRecord::new(other_group);
        let mut moved = alice.distribution();
        moved.group_id = other_group;
        bob_elsewhere.process(&moved).unwrap();
        let mut relabelled = genuine.clone();
        relabelled[2..18].copy_from_slice(&other_group.0);
        assert_eq!(
            decrypt(&mut bob_elsewhere, &relabelled),
            Err(GroupDecryptError::BadSignature)
        );
        assert_eq!(decrypt(&mut bob, &genuine).unwrap(), b"genuine");
    }

    #[test]
    fn a_later_distribution_cannot_read_earlier_messages() {
        let mut rng = test_rng(57);
        let group = GroupId::generate(&mut rng);
        let mut alice = SenderKeyState::generate(&mut rng, group);
        let before_join = send(&mut alice, 3, "early");
        let mut carol = SenderKeyRecord::new(group);
        carol.process(&alice.distribution()).unwrap();
        let after_join = send(&mut alice, 1, "late");
        for (wire, _) in &before_join {
            assert!(matches!(
                decrypt(&mut carol, wire),
                Err(GroupDecryptError::BeforeDistribution { first: 3, .. })
            ));
        }
        assert_eq!(
            decrypt(&mut carol, &after_join[0].0).unwrap(),
            after_join[0].1
        );
    }

    #[test]
    fn rotation_keeps_a_removed_member_out() {
        let mut rng = test_rng(58);
        let group = GroupId::generate(&mut rng);
        let alice = SenderKeyState::generate(&mut rng, group);
        let mut bob = SenderKeyRecord::new(group);
        let mut carol = SenderKeyRecord::new(group);
        bob.process(&alice.distribution()).unwrap();
        carol.process(&alice.distribution()).unwrap();

        // Carol is removed: Alice starts a new chain and gives it to Bob only.
        let mut alice = SenderKeyState::generate(&mut rng, group);
        bob.process(&alice.distribution()).unwrap();
        let wire = alice.encrypt(b"without carol").unwrap();
        assert_eq!(decrypt(&mut bob, &wire).unwrap(), b"without carol");
        assert_eq!(
            decrypt(&mut carol, &wire),
            Err(GroupDecryptError::UnknownChain)
        );
    }

    #[test]
    fn a_redistributed_chain_is_not_wound_back() {
        let mut rng = test_rng(59);
        let (mut alice, mut bob) = setup(&mut rng);
        let old = alice.distribution();
        let messages = send(&mut alice, 2, "r");
        for (wire, _) in &messages {
            assert!(decrypt(&mut bob, wire).is_ok());
        }
        bob.process(&old).unwrap();
        assert_eq!(
            decrypt(&mut bob, &messages[0].0),
            Err(GroupDecryptError::Duplicate)
        );
        // The same chain id with another signing key replaces the chain.
        let mut impostor = SenderKeyState::generate(&mut rng, alice.group_id());
        impostor.chain_id = alice.chain_id();
        bob.process(&impostor.distribution()).unwrap();
        assert_eq!(bob.chain_count(), 1);
        let wire = impostor.encrypt(b"replaced").unwrap();
        assert_eq!(decrypt(&mut bob, &wire).unwrap(), b"replaced");
    }

    #[test]
    fn chains_are_capped_least_recently_distributed_first() {
        let mut rng = test_rng(60);
        let group = GroupId::generate(&mut rng);
        let mut bob = SenderKeyRecord::new(group);
        let mut chains: Vec<SenderKeyState> = Vec::new();
        let mut held = Vec::new();
        for _ in 0..MAX_SENDER_KEY_CHAINS + 1 {
            let mut alice = SenderKeyState::generate(&mut rng, group);
            bob.process(&alice.distribution()).unwrap();
            let messages = send(&mut alice, 2, "c");
            assert!(decrypt(&mut bob, &messages[1].0).is_ok()); // one skipped key
            held.push(messages[0].clone());
            chains.push(alice);
        }
        assert_eq!(bob.chain_count(), MAX_SENDER_KEY_CHAINS);
        assert_eq!(bob.skipped_key_count(), MAX_SENDER_KEY_CHAINS);
        assert_eq!(
            decrypt(&mut bob, &held[0].0),
            Err(GroupDecryptError::UnknownChain)
        );
        assert_eq!(decrypt(&mut bob, &held[1].0).unwrap(), held[1].1);
    }

    #[test]
    fn states_survive_serialization_and_refuse_other_versions() {
        let mut rng = test_rng(61);
        let (mut alice, mut bob) = setup(&mut rng);
        let messages = send(&mut alice, 4, "s");
        assert!(decrypt(&mut bob, &messages[3].0).is_ok());

        let stored = alice.to_bytes();
        let mut alice = SenderKeyState::from_bytes(&stored).unwrap();
        assert_eq!(alice.to_bytes(), stored);
        let stored = bob.to_bytes();
        let mut bob = SenderKeyRecord::from_bytes(&stored).unwrap();
        assert_eq!(bob.to_bytes(), stored);
        assert_eq!(bob.skipped_key_count(), 3);
        let later = alice.encrypt(b"after restore").unwrap();
        assert_eq!(decrypt(&mut bob, &later).unwrap(), b"after restore");
        assert_eq!(decrypt(&mut bob, &messages[1].0).unwrap(), messages[1].1);

        let distribution = alice.distribution().to_bytes();
        assert_eq!(distribution.len(), SenderKeyDistribution::ENCODED_LEN);
        let decoded = SenderKeyDistribution::from_bytes(&distribution).unwrap();
        assert_eq!(decoded.to_bytes(), distribution);
        assert_eq!(decoded.iteration(), alice.iteration());

        type Decoder = fn(&[u8]) -> bool;
        let cases: [(Zeroizing<Vec<u8>>, Decoder); 3] = [
            (alice.to_bytes(), |b| SenderKeyState::from_bytes(b).is_ok()),
            (bob.to_bytes(), |b| SenderKeyRecord::from_bytes(b).is_ok()),
            (alice.distribution().to_bytes(), |b| {
                SenderKeyDistribution::from_bytes(b).is_ok()
            }),
        ];
        for (stored, decodes) in cases {
            let mut future = stored.to_vec();
            future[0] += 1;
            let mut padded = stored.to_vec();
            padded.push(0);
            assert!(decodes(&stored));
            assert!(!decodes(&future));
            assert!(!decodes(&padded));
            assert!(!decodes(&stored[..stored.len() - 1]));
        }
    }

    #[test]
    fn records_with_broken_invariants_are_refused() {
        let mut rng = test_rng(62);
        let (mut alice, mut bob) = setup(&mut rng);
        let messages = send(&mut alice, 3, "i");
        assert!(decrypt(&mut bob, &messages[2].0).is_ok()); // skipped: iterations 0 and 1
        let stored = bob.to_bytes().to_vec();
        let chain_at = 1 + 16 + 1;
        let skipped_at = chain_at + 88 + 2;
        // A skipped key at or past the chain's next iteration.
        let mut bad = stored.clone();
        bad[skipped_at + 48..skipped_at + 52].copy_from_slice(&3u32.to_be_bytes());
        assert!(SenderKeyRecord::from_bytes(&bad).is_err());
        // A repeated skipped key.
        let mut bad = stored.clone();
        let first_skipped = stored[skipped_at..skipped_at + 52].to_vec();
        bad[skipped_at + 52..skipped_at + 104].copy_from_slice(&first_skipped);
        assert!(SenderKeyRecord::from_bytes(&bad).is_err());
        // A first iteration past the chain's next one.
        let mut bad = stored.clone();
        bad[chain_at + 48..chain_at + 52].copy_from_slice(&9u32.to_be_bytes());
        assert!(SenderKeyRecord::from_bytes(&bad).is_err());
        // A small-order signing key (the identity point).
        let mut bad = stored.clone();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        bad[chain_at + 16..chain_at + 48].copy_from_slice(&identity);
        assert!(SenderKeyRecord::from_bytes(&bad).is_err());
    }

    #[test]
    fn exhausted_chain_refuses_to_encrypt() {
        let mut rng = test_rng(63);
        let (mut alice, _) = setup(&mut rng);
        alice.chain = ChainKey::new([1; 32], u32::MAX);
        assert_eq!(alice.encrypt(b"x"), Err(GroupEncryptError::ChainExhausted));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let mut rng = test_rng(64);
        let (mut alice, mut bob) = setup(&mut rng);
        let messages = send(&mut alice, 2, "d");
        assert!(decrypt(&mut bob, &messages[1].0).is_ok());
        let distribution = alice.distribution();
        let shown = format!("{alice:?} {bob:?} {distribution:?}");
        assert!(!shown.contains(&hex::encode(alice.chain.as_bytes())));
        assert!(!shown.contains(&hex::encode(alice.signing.as_bytes())));
        assert!(!shown.contains(&hex::encode(distribution.chain.as_bytes())));
        for chain in &bob.chains {
            assert!(!shown.contains(&hex::encode(chain.chain.as_bytes())));
        }
        for skipped in &bob.skipped {
            assert!(!shown.contains(&hex::encode(skipped.key.as_bytes())));
        }
    }
}
