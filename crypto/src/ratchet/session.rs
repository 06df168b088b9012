//! A Double Ratchet session (Double Ratchet spec, sections 3.2 to 3.5).
//!
//! Decryption stages every change (skipped keys, new chains, the root step, the next
//! ratchet key) and commits them only after the AEAD tag verifies, so a message that fails
//! for any reason leaves the session byte-for-byte as it was.

use std::collections::VecDeque;
use std::fmt;

use rand_core::CryptoRng;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::chain::{ChainKey, MessageKey};
use super::root::RootKey;
use crate::consts::{
    KEM_CIPHERTEXT_LEN, LABEL_MESSAGE_KEYS, MAX_CHAIN_JUMP, MAX_RECEIVER_CHAINS,
    MAX_RETIRED_RATCHET_KEYS, MAX_SKIPPED_KEYS, SESSION_FORMAT_VERSION,
};
use crate::keys::{IdentityKey, PreKeyId};
use crate::message::{HEADER_LEN, Header, Message, PreKeyMessage, RatchetMessage};
use crate::wire::{DecodeError, Reader};

/// Why a message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The sending chain has given out 2^32 - 1 message keys; start a new session.
    #[error("sending chain exhausted; start a new session")]
    ChainExhausted,
}

/// Why a message could not be decrypted. The session is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The message's key was already used: a replay or duplicate delivery. (A key evicted
    /// past [`MAX_SKIPPED_KEYS`], or a message on a receiving chain evicted past
    /// [`MAX_RECEIVER_CHAINS`] whose ratchet key is still remembered, also reports this.)
    #[error("duplicate message: its key was already used")]
    Duplicate,
    /// The message claims to be further ahead in its chain than [`MAX_CHAIN_JUMP`] allows.
    #[error("message is {jump} messages ahead of its chain; at most {MAX_CHAIN_JUMP} are allowed")]
    TooFarAhead {
        /// How far ahead it claimed to be.
        jump: u64,
    },
    /// The ciphertext, its header or its associated data was altered, or it was not meant
    /// for this session.
    #[error("message failed authentication")]
    Authentication,
    /// The sender's ratchet key gives a non-contributory (all-zero) X25519 result.
    #[error("sender's ratchet key is a low-order point")]
    NonContributory,
    /// A prekey message that set up a different session (another base key); accept it as a
    /// new session instead.
    #[error("prekey message belongs to another session")]
    OtherSession,
}

/// Our side of the DH ratchet.
#[derive(Clone)]
pub(crate) struct RatchetKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl RatchetKeyPair {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret(StaticSecret::from(*bytes))
    }

    pub(crate) fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// X25519 with `their` key; `None` for a non-contributory result.
    pub(crate) fn agree(&self, their: &PublicKey) -> Option<Zeroizing<[u8; 32]>> {
        let shared = self.secret.diffie_hellman(their);
        shared
            .was_contributory()
            .then(|| Zeroizing::new(shared.to_bytes()))
    }
}

#[derive(Clone)]
struct ReceiverChain {
    ratchet_key: PublicKey,
    chain: ChainKey,
}

#[derive(Clone)]
struct SkippedKey {
    ratchet_key: PublicKey,
    key: MessageKey,
}

/// What the initiator repeats in every message until the responder answers.
#[derive(Clone)]
pub(crate) struct PendingPreKey {
    pub(crate) signed_prekey_id: PreKeyId,
    pub(crate) one_time_prekey_id: Option<PreKeyId>,
    pub(crate) kem_prekey_id: PreKeyId,
    pub(crate) kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

/// An end-to-end encrypted session with one remote device.
///
/// Built by [`Session::initiate`] (the sender of the first message) or [`Session::accept`]
/// (its receiver); see the [crate docs](crate) for a whole exchange. Persist it with
/// [`Session::to_bytes`] after every successful call that takes `&mut self`.
pub struct Session {
    local_identity: IdentityKey,
    remote_identity: IdentityKey,
    associated_data: Vec<u8>,
    base_key: PublicKey,
    root: RootKey,
    ratchet: RatchetKeyPair,
    sending: Option<ChainKey>,
    previous_sending_length: u32,
    /// Newest first; at most [`MAX_RECEIVER_CHAINS`].
    receivers: VecDeque<ReceiverChain>,
    /// Oldest first; at most [`MAX_SKIPPED_KEYS`].
    skipped: VecDeque<SkippedKey>,
    /// Ratchet keys of evicted receiving chains, oldest first; at most
    /// [`MAX_RETIRED_RATCHET_KEYS`].
    retired: VecDeque<PublicKey>,
    pending_prekey: Option<PendingPreKey>,
}

/// The parts of a new session that session setup decides.
pub(crate) struct SessionInit {
    pub(crate) local_identity: IdentityKey,
    pub(crate) remote_identity: IdentityKey,
    pub(crate) associated_data: Vec<u8>,
    pub(crate) base_key: PublicKey,
    pub(crate) root: RootKey,
    pub(crate) ratchet: RatchetKeyPair,
    pub(crate) sending: Option<ChainKey>,
    pub(crate) pending_prekey: Option<PendingPreKey>,
}

impl Session {
    pub(crate) fn new(init: SessionInit) -> Self {
        let SessionInit {
            local_identity,
            remote_identity,
            associated_data,
            base_key,
            root,
            ratchet,
            sending,
            pending_prekey,
        } = init;
        Self {
            local_identity,
            remote_identity,
            associated_data,
            base_key,
            root,
            ratchet,
            sending,
            previous_sending_length: 0,
            receivers: VecDeque::new(),
            skipped: VecDeque::new(),
            retired: VecDeque::new(),
            pending_prekey,
        }
    }

    /// Our identity in this session.
    pub fn local_identity(&self) -> &IdentityKey {
        &self.local_identity
    }

    /// The remote device's identity in this session.
    pub fn remote_identity(&self) -> &IdentityKey {
        &self.remote_identity
    }

    /// The initiator's ephemeral key from session setup: the same on both sides, so it
    /// names the session (compare with [`PreKeyMessage::base_key`]).
    pub fn base_key(&self) -> &[u8; 32] {
        self.base_key.as_bytes()
    }

    /// Whether the remote side has answered (until then, every message we send is a prekey
    /// message).
    pub fn is_acknowledged(&self) -> bool {
        self.pending_prekey.is_none()
    }

    /// Encrypts one message (ratchet spec `RatchetEncrypt`). The returned bytes are what to
    /// send: a prekey message until the remote side has answered, a ratchet message after.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let chain = self.sending.as_ref().ok_or(EncryptError::ChainExhausted)?;
        let (message_key, next) = chain.step().ok_or(EncryptError::ChainExhausted)?;
        let header = Header {
            ratchet_key: self.ratchet.public,
            previous_chain_length: self.previous_sending_length,
            index: message_key.index(),
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        header.encode(&mut bytes);
        let associated_data = self.associated_data_for(&bytes);
        message_key.seal(LABEL_MESSAGE_KEYS, &associated_data, plaintext, &mut bytes);
        self.sending = Some(next);

        let Some(pending) = &self.pending_prekey else {
            return Ok(bytes);
        };
        let prekey_message = PreKeyMessage {
            identity: self.local_identity.clone(),
            base_key: self.base_key,
            signed_prekey_id: pending.signed_prekey_id,
            one_time_prekey_id: pending.one_time_prekey_id,
            kem_prekey_id: pending.kem_prekey_id,
            kem_ciphertext: pending.kem_ciphertext.clone(),
            message: RatchetMessage::from_parts(header, bytes),
        };
        Ok(Message::PreKey(Box::new(prekey_message)).to_bytes())
    }

    /// Decrypts one message (ratchet spec `RatchetDecrypt`), staging every state change and
    /// committing it only when the message authenticates.
    ///
    /// A prekey message is accepted here if it belongs to this session (same base key);
    /// otherwise this fails with [`DecryptError::OtherSession`] and the caller should run
    /// [`Session::accept`].
    pub fn decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        message: &Message,
    ) -> Result<Vec<u8>, DecryptError> {
        let ratchet_message = match message {
            Message::Ratchet(message) => message,
            Message::PreKey(prekey) if prekey.base_key == self.base_key => &prekey.message,
            Message::PreKey(_) => return Err(DecryptError::OtherSession),
        };
        let plaintext = self.decrypt_ratchet(rng, ratchet_message)?;
        // Only the responder can have produced a message that decrypts on our receiving
        // chains, so it has the session: stop sending prekey messages.
        if matches!(message, Message::Ratchet(_)) {
            self.pending_prekey = None;
        }
        Ok(plaintext)
    }

    fn associated_data_for(&self, header: &[u8]) -> Vec<u8> {
        let mut ad = Vec::with_capacity(self.associated_data.len() + header.len());
        ad.extend_from_slice(&self.associated_data);
        ad.extend_from_slice(header);
        ad
    }

    fn open(&self, key: &MessageKey, message: &RatchetMessage) -> Result<Vec<u8>, DecryptError> {
        key.open(
            LABEL_MESSAGE_KEYS,
            &self.associated_data_for(message.header_bytes()),
            message.sealed(),
        )
        .map_err(|_| DecryptError::Authentication)
    }

    pub(crate) fn decrypt_ratchet<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        message: &RatchetMessage,
    ) -> Result<Vec<u8>, DecryptError> {
        let header = &message.header;

        // 1. A key skipped earlier.
        if let Some(position) = self.skipped.iter().position(|skipped| {
            skipped.key.index() == header.index && skipped.ratchet_key == header.ratchet_key
        }) {
            let plaintext = self.open(&self.skipped[position].key, message)?;
            self.skipped.remove(position);
            return Ok(plaintext);
        }

        // 2. A receiving chain we already have.
        if let Some(position) = self
            .receivers
            .iter()
            .position(|receiver| receiver.ratchet_key == header.ratchet_key)
        {
            let (skipped, key, next) = advance(&self.receivers[position].chain, header.index)?;
            let plaintext = self.open(&key, message)?;
            self.receivers[position].chain = next;
            self.store_skipped(header.ratchet_key, skipped);
            return Ok(plaintext);
        }

        // A chain we evicted: its keys are gone, so this is a replay (or a late message we
        // can no longer open), not a new ratchet step.
        if self.retired.contains(&header.ratchet_key) {
            return Err(DecryptError::Duplicate);
        }

        // 3. A new ratchet key: finish the current receiving chain up to the sender's
        //    previous chain length, step the root twice, and start new chains.
        let finished = match self.receivers.front() {
            Some(current) if header.previous_chain_length > current.chain.index() => {
                Some(skip_to(&current.chain, header.previous_chain_length)?)
            }
            _ => None,
        };
        let received = self
            .ratchet
            .agree(&header.ratchet_key)
            .ok_or(DecryptError::NonContributory)?;
        let (root, receiving) = self.root.step(&received);
        let (skipped, key, next_receiving) = advance(&receiving, header.index)?;
        let plaintext = self.open(&key, message)?;

        // Authenticated: now draw the next ratchet key and commit.
        let ratchet = RatchetKeyPair::generate(rng);
        let sent = ratchet
            .agree(&header.ratchet_key)
            .ok_or(DecryptError::NonContributory)?;
        let (root, sending) = root.step(&sent);

        if let Some((finished_skipped, finished_chain)) = finished
            && let Some(current) = self.receivers.front_mut()
        {
            current.chain = finished_chain;
            let ratchet_key = current.ratchet_key;
            self.store_skipped(ratchet_key, finished_skipped);
        }
        self.receivers.push_front(ReceiverChain {
            ratchet_key: header.ratchet_key,
            chain: next_receiving,
        });
        while self.receivers.len() > MAX_RECEIVER_CHAINS {
            if let Some(evicted) = self.receivers.pop_back() {
                if self.retired.len() == MAX_RETIRED_RATCHET_KEYS {
                    self.retired.pop_front();
                }
                self.retired.push_back(evicted.ratchet_key);
            }
        }
        self.store_skipped(header.ratchet_key, skipped);
        self.previous_sending_length = self.sending.as_ref().map_or(0, ChainKey::index);
        self.sending = Some(sending);
        self.root = root;
        self.ratchet = ratchet;
        Ok(plaintext)
    }

    fn store_skipped(&mut self, ratchet_key: PublicKey, keys: Vec<MessageKey>) {
        for key in keys {
            if self.skipped.len() == MAX_SKIPPED_KEYS {
                self.skipped.pop_front();
            }
            self.skipped.push_back(SkippedKey { ratchet_key, key });
        }
    }

    /// Number of skipped message keys held (for tests and diagnostics).
    pub fn skipped_key_count(&self) -> usize {
        self.skipped.len()
    }

    /// Serializes the whole state (secrets included): store it encrypted at rest.
    ///
    /// ```text
    /// version (1) || local identity (128) || remote identity (128) || AD (u16 len || bytes)
    /// || base key (32) || root key (32) || ratchet secret (32)
    /// || sending flag (1) [|| chain key (32) || index (u32)] || previous sending length (u32)
    /// || receiver count (1) || { ratchet key (32) || chain key (32) || index (u32) }*
    /// || skipped count (u16) || { ratchet key (32) || message key (32) || index (u32) }*
    /// || retired count (1) || { ratchet key (32) }*
    /// || pending flag (1) [|| signed prekey id (u32) || one-time flag (1) [|| id (u32)]
    ///                      || KEM prekey id (u32) || KEM ciphertext (1088)]
    /// ```
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            512 + self.skipped.len() * 68 + self.receivers.len() * 68,
        ));
        out.push(SESSION_FORMAT_VERSION);
        self.local_identity.encode(&mut out);
        self.remote_identity.encode(&mut out);
        crate::wire::put_vec16(&mut out, &self.associated_data);
        out.extend_from_slice(self.base_key.as_bytes());
        out.extend_from_slice(self.root.as_bytes());
        out.extend_from_slice(self.ratchet.secret.as_bytes());
        match &self.sending {
            Some(chain) => {
                out.push(1);
                put_chain(&mut out, chain);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.previous_sending_length.to_be_bytes());
        out.push(u8::try_from(self.receivers.len()).unwrap_or(u8::MAX));
        for receiver in &self.receivers {
            out.extend_from_slice(receiver.ratchet_key.as_bytes());
            put_chain(&mut out, &receiver.chain);
        }
        out.extend_from_slice(
            &u16::try_from(self.skipped.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for skipped in &self.skipped {
            out.extend_from_slice(skipped.ratchet_key.as_bytes());
            out.extend_from_slice(skipped.key.as_bytes());
            out.extend_from_slice(&skipped.key.index().to_be_bytes());
        }
        out.push(u8::try_from(self.retired.len()).unwrap_or(u8::MAX));
        for key in &self.retired {
            out.extend_from_slice(key.as_bytes());
        }
        match &self.pending_prekey {
            Some(pending) => {
                out.push(1);
                out.extend_from_slice(&pending.signed_prekey_id.0.to_be_bytes());
                match pending.one_time_prekey_id {
                    Some(id) => {
                        out.push(1);
                        out.extend_from_slice(&id.0.to_be_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(&pending.kem_prekey_id.0.to_be_bytes());
                out.extend_from_slice(pending.kem_ciphertext.as_slice());
            }
            None => out.push(0),
        }
        out
    }

    /// Restores a session serialized by [`Session::to_bytes`]; rejects other versions,
    /// truncation, trailing bytes and counts over the limits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_version("session", bytes, SESSION_FORMAT_VERSION)?;
        let local_identity = IdentityKey::decode(&mut r)?;
        let remote_identity = IdentityKey::decode(&mut r)?;
        let associated_data = r.vec16()?.to_vec();
        let base_key = r.x25519("base key")?;
        let root = RootKey::new(r.array()?);
        let ratchet = RatchetKeyPair::from_secret(StaticSecret::from(r.array::<32>()?));
        let sending = if r.flag("sending flag")? {
            Some(read_chain(&mut r)?)
        } else {
            None
        };
        let previous_sending_length = r.u32()?;
        let receiver_count = usize::from(r.u8()?);
        if receiver_count > MAX_RECEIVER_CHAINS {
            return Err(r.invalid("receiver chain count"));
        }
        let mut receivers = VecDeque::with_capacity(receiver_count);
        for _ in 0..receiver_count {
            let ratchet_key = r.x25519("ratchet key")?;
            let chain = read_chain(&mut r)?;
            receivers.push_back(ReceiverChain { ratchet_key, chain });
        }
        let skipped_count = usize::from(r.u16()?);
        if skipped_count > MAX_SKIPPED_KEYS {
            return Err(r.invalid("skipped key count"));
        }
        let mut skipped = VecDeque::with_capacity(skipped_count);
        for _ in 0..skipped_count {
            let ratchet_key = r.x25519("ratchet key")?;
            let key = r.array::<32>()?;
            let index = r.u32()?;
            skipped.push_back(SkippedKey {
                ratchet_key,
                key: MessageKey::new(key, index),
            });
        }
        let retired_count = usize::from(r.u8()?);
        if retired_count > MAX_RETIRED_RATCHET_KEYS {
            return Err(r.invalid("retired ratchet key count"));
        }
        let mut retired = VecDeque::with_capacity(retired_count);
        for _ in 0..retired_count {
            retired.push_back(r.x25519("retired ratchet key")?);
        }
        let pending_prekey = if r.flag("pending prekey flag")? {
            let signed_prekey_id = PreKeyId(r.u32()?);
            let one_time_prekey_id = if r.flag("one-time prekey flag")? {
                Some(PreKeyId(r.u32()?))
            } else {
                None
            };
            Some(PendingPreKey {
                signed_prekey_id,
                one_time_prekey_id,
                kem_prekey_id: PreKeyId(r.u32()?),
                kem_ciphertext: Box::new(r.array()?),
            })
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            local_identity,
            remote_identity,
            associated_data,
            base_key,
            root,
            ratchet,
            sending,
            previous_sending_length,
            receivers,
            skipped,
            retired,
            pending_prekey,
        })
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            local_identity,
            remote_identity,
            associated_data: _,
            base_key,
            root: _,
            ratchet,
            sending,
            previous_sending_length,
            receivers,
            skipped,
            retired,
            pending_prekey,
        } = self;
        f.debug_struct("Session")
            .field("local_identity", local_identity)
            .field("remote_identity", remote_identity)
            .field("base_key", &hex::encode(base_key.as_bytes()))
            .field("ratchet_key", &hex::encode(ratchet.public.as_bytes()))
            .field("sending_index", &sending.as_ref().map(ChainKey::index))
            .field("previous_sending_length", previous_sending_length)
            .field("receiver_chains", &receivers.len())
            .field("skipped_keys", &skipped.len())
            .field("retired_ratchet_keys", &retired.len())
            .field("acknowledged", &pending_prekey.is_none())
            .finish_non_exhaustive()
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

/// Checks that `target` is no further than [`MAX_CHAIN_JUMP`] ahead of `chain`.
fn check_jump(chain: &ChainKey, target: u32) -> Result<(), DecryptError> {
    if target < chain.index() {
        return Err(DecryptError::Duplicate);
    }
    let jump = u64::from(target - chain.index());
    if jump > u64::from(MAX_CHAIN_JUMP) {
        return Err(DecryptError::TooFarAhead { jump });
    }
    Ok(())
}

/// The keys of `chain` below `until`, and the chain positioned at `until`.
fn skip_to(chain: &ChainKey, until: u32) -> Result<(Vec<MessageKey>, ChainKey), DecryptError> {
    check_jump(chain, until)?;
    let mut skipped = Vec::new();
    let mut current = chain.clone();
    while current.index() < until {
        let (key, next) = current.step().ok_or(DecryptError::Duplicate)?;
        skipped.push(key);
        current = next;
    }
    Ok((skipped, current))
}

/// The keys skipped on the way to `target`, the key at `target`, and the chain after it.
fn advance(
    chain: &ChainKey,
    target: u32,
) -> Result<(Vec<MessageKey>, MessageKey, ChainKey), DecryptError> {
    let (skipped, at_target) = skip_to(chain, target)?;
    let (key, next) = at_target.step().ok_or(DecryptError::Duplicate)?;
    Ok((skipped, key, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{established, test_rng};
    use rand::rngs::StdRng;

    fn parse(bytes: &[u8]) -> Message {
        Message::from_bytes(bytes).unwrap()
    }

    fn send(from: &mut Session, n: usize, tag: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let plaintext = format!("{tag}-{i}").into_bytes();
                (from.encrypt(&plaintext).unwrap(), plaintext)
            })
            .collect()
    }

    fn decrypt(to: &mut Session, rng: &mut StdRng, wire: &[u8]) -> Result<Vec<u8>, DecryptError> {
        to.decrypt(rng, &parse(wire))
    }

    #[test]
    fn out_of_order_within_a_chain_and_across_ratchet_steps() {
        let mut rng = test_rng(31);
        let (mut a, mut b) = established(&mut rng);
        let first = send(&mut a, 5, "a1");
        // Deliver 4, 2, then Bob replies (new ratchet step), Alice sends a new chain.
        assert_eq!(decrypt(&mut b, &mut rng, &first[4].0).unwrap(), first[4].1);
        assert_eq!(decrypt(&mut b, &mut rng, &first[2].0).unwrap(), first[2].1);
        let reply = send(&mut b, 1, "b1");
        assert_eq!(decrypt(&mut a, &mut rng, &reply[0].0).unwrap(), reply[0].1);
        let second = send(&mut a, 2, "a2");
        assert_eq!(
            decrypt(&mut b, &mut rng, &second[1].0).unwrap(),
            second[1].1
        );
        // The stragglers of the old chain still open, once.
        for i in [0, 1, 3] {
            assert_eq!(decrypt(&mut b, &mut rng, &first[i].0).unwrap(), first[i].1);
            assert_eq!(
                decrypt(&mut b, &mut rng, &first[i].0),
                Err(DecryptError::Duplicate)
            );
        }
        assert_eq!(
            decrypt(&mut b, &mut rng, &second[0].0).unwrap(),
            second[0].1
        );
        assert_eq!(b.skipped_key_count(), 0);
    }

    #[test]
    fn a_jump_over_the_cap_is_refused_and_changes_nothing() {
        let mut rng = test_rng(32);
        let (mut a, mut b) = established(&mut rng);
        let messages = send(&mut a, MAX_CHAIN_JUMP as usize + 2, "x");
        let before = b.to_bytes();
        let last = &messages[MAX_CHAIN_JUMP as usize + 1].0;
        assert_eq!(
            decrypt(&mut b, &mut rng, last),
            Err(DecryptError::TooFarAhead {
                jump: u64::from(MAX_CHAIN_JUMP) + 1
            })
        );
        assert_eq!(b.to_bytes(), before);
        // Exactly at the cap is fine.
        let at_cap = &messages[MAX_CHAIN_JUMP as usize];
        assert!(decrypt(&mut b, &mut rng, &at_cap.0).is_ok());
        assert_eq!(b.skipped_key_count(), MAX_CHAIN_JUMP as usize);
    }

    #[test]
    fn skipped_keys_are_capped_oldest_first() {
        let mut rng = test_rng(33);
        let (mut a, mut b) = established(&mut rng);
        // Two chains' worth of gaps: 1,500 skipped on each of two of Alice's chains.
        let chain1 = send(&mut a, 1501, "c1");
        assert!(decrypt(&mut b, &mut rng, &chain1[1500].0).is_ok());
        let reply = send(&mut b, 1, "r");
        assert!(decrypt(&mut a, &mut rng, &reply[0].0).is_ok());
        let chain2 = send(&mut a, 1501, "c2");
        assert!(decrypt(&mut b, &mut rng, &chain2[1500].0).is_ok());
        assert_eq!(b.skipped_key_count(), MAX_SKIPPED_KEYS);
        // The oldest 1,000 of chain 1 were evicted; the newest of them remain.
        assert_eq!(
            decrypt(&mut b, &mut rng, &chain1[0].0),
            Err(DecryptError::Duplicate)
        );
        assert_eq!(
            decrypt(&mut b, &mut rng, &chain1[1499].0).unwrap(),
            chain1[1499].1
        );
        assert_eq!(
            decrypt(&mut b, &mut rng, &chain2[0].0).unwrap(),
            chain2[0].1
        );
    }

    #[test]
    fn receiver_chains_are_capped() {
        let mut rng = test_rng(34);
        let (mut a, mut b) = established(&mut rng);
        let mut held = Vec::new();
        for round in 0..MAX_RECEIVER_CHAINS + 1 {
            let messages = send(&mut a, 2, &format!("round{round}"));
            assert!(decrypt(&mut b, &mut rng, &messages[1].0).is_ok());
            held.push(messages[0].clone());
            let reply = send(&mut b, 1, "r");
            assert!(decrypt(&mut a, &mut rng, &reply[0].0).is_ok());
        }
        assert!(b.receivers.len() <= MAX_RECEIVER_CHAINS);
        assert_eq!(b.retired.len(), 2); // the established chain and round 0
        // Skipped keys outlive their chain, so even the evicted chain's gap still opens.
        assert_eq!(decrypt(&mut b, &mut rng, &held[0].0).unwrap(), held[0].1);
        // A replay on the evicted chain is a duplicate, and changes nothing.
        let before = b.to_bytes();
        assert_eq!(
            decrypt(&mut b, &mut rng, &held[0].0),
            Err(DecryptError::Duplicate)
        );
        assert_eq!(b.to_bytes(), before);
    }

    #[test]
    fn a_failed_decrypt_leaves_the_session_exactly_as_it_was() {
        let mut rng = test_rng(35);
        let (mut a, mut b) = established(&mut rng);
        let same_chain = send(&mut a, 3, "s");
        assert!(decrypt(&mut b, &mut rng, &same_chain[2].0).is_ok()); // two skipped keys
        let reply = send(&mut b, 1, "r");
        assert!(decrypt(&mut a, &mut rng, &reply[0].0).is_ok());
        let new_chain = send(&mut a, 1, "n"); // would trigger a DH ratchet step on Bob

        for wire in [&same_chain[0].0, &new_chain[0].0] {
            for i in 0..wire.len() {
                let mut bytes = wire.clone();
                bytes[i] ^= 0x01;
                let before = b.to_bytes();
                if let Ok(message) = Message::from_bytes(&bytes) {
                    assert!(b.decrypt(&mut rng, &message).is_err(), "byte {i} accepted");
                }
                assert_eq!(b.to_bytes(), before, "byte {i} changed the session");
            }
        }
        // And the untampered messages still decrypt afterwards.
        assert_eq!(
            decrypt(&mut b, &mut rng, &new_chain[0].0).unwrap(),
            new_chain[0].1
        );
        assert_eq!(
            decrypt(&mut b, &mut rng, &same_chain[0].0).unwrap(),
            same_chain[0].1
        );
    }

    #[test]
    fn duplicates_are_refused_without_changing_the_session() {
        let mut rng = test_rng(36);
        let (mut a, mut b) = established(&mut rng);
        let messages = send(&mut a, 2, "d");
        for (wire, plaintext) in &messages {
            assert_eq!(&decrypt(&mut b, &mut rng, wire).unwrap(), plaintext);
        }
        let before = b.to_bytes();
        for (wire, _) in &messages {
            assert_eq!(
                decrypt(&mut b, &mut rng, wire),
                Err(DecryptError::Duplicate)
            );
        }
        assert_eq!(b.to_bytes(), before);
    }

    #[test]
    fn low_order_ratchet_key_in_a_header_is_refused() {
        let mut rng = test_rng(37);
        let (mut a, mut b) = established(&mut rng);
        let mut wire = a.encrypt(b"x").unwrap();
        let before = b.to_bytes();
        wire[2..34].copy_from_slice(&[0u8; 32]);
        assert_eq!(
            decrypt(&mut b, &mut rng, &wire),
            Err(DecryptError::NonContributory)
        );
        assert_eq!(b.to_bytes(), before);
    }

    #[test]
    fn a_session_survives_serialization_and_refuses_other_versions() {
        let mut rng = test_rng(38);
        let (mut a, b) = established(&mut rng);
        let stored = b.to_bytes();
        let mut b = Session::from_bytes(&stored).unwrap();
        assert_eq!(b.to_bytes(), stored);
        let wire = a.encrypt(b"after restore").unwrap();
        assert_eq!(decrypt(&mut b, &mut rng, &wire).unwrap(), b"after restore");

        let mut future = stored.to_vec();
        future[0] = SESSION_FORMAT_VERSION + 1;
        assert!(matches!(
            Session::from_bytes(&future),
            Err(DecodeError::UnknownVersion { .. })
        ));
        for len in [0, 1, stored.len() / 2, stored.len() - 1] {
            assert!(matches!(
                Session::from_bytes(&stored[..len]),
                Err(DecodeError::Truncated { .. })
            ));
        }
        let mut padded = stored.to_vec();
        padded.push(0);
        assert!(matches!(
            Session::from_bytes(&padded),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn prekey_messages_until_answered_and_for_another_session() {
        let mut rng = test_rng(39);
        let (mut a, mut b) = established(&mut rng);
        assert!(a.is_acknowledged());
        assert!(matches!(
            parse(&a.encrypt(b"x").unwrap()),
            Message::Ratchet(_)
        ));
        // A prekey message with a different base key is not for this session.
        let mut other_rng = test_rng(40);
        let alice = crate::testing::Party::new(&mut other_rng, "alice");
        let bob = crate::testing::Party::new(&mut other_rng, "bob");
        let mut fresh = alice.initiate(&mut other_rng, &bob, false);
        assert!(!fresh.is_acknowledged());
        let other = fresh.encrypt(b"z").unwrap();
        assert_eq!(
            decrypt(&mut b, &mut rng, &other),
            Err(DecryptError::OtherSession)
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let mut rng = test_rng(41);
        let (a, _) = established(&mut rng);
        let shown = format!("{a:?}");
        assert!(!shown.contains(&hex::encode(a.root.as_bytes())));
        assert!(!shown.contains(&hex::encode(a.ratchet.secret.as_bytes())));
        let sending = a.sending.as_ref().unwrap();
        assert!(!shown.contains(&hex::encode(sending.as_bytes())));
        for receiver in &a.receivers {
            assert!(!shown.contains(&hex::encode(receiver.chain.as_bytes())));
        }
    }
}
