//! Receiving: what a member keeps of one sender's chains in one group.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use ed25519_dalek::VerifyingKey;
use zeroize::Zeroizing;

use super::distribution::SenderKeyDistribution;
use super::message::SenderKeyMessage;
use super::{
    ChainId, DistributionError, GroupDecryptError, GroupId, put_chain, read_chain,
    read_verifying_key,
};
use crate::consts::{
    GROUP_STATE_FORMAT_VERSION, LABEL_SENDER_KEY_MESSAGE_KEYS, MAX_CHAIN_JUMP,
    MAX_SENDER_KEY_CHAINS, MAX_SKIPPED_KEYS,
};
use crate::ratchet::chain::{ChainKey, MessageKey};
use crate::wire::{DecodeError, decode_versioned};

/// One sender's chain as a member holds it.
pub(super) struct ReceiverChain {
    chain_id: ChainId,
    signing: VerifyingKey,
    /// The iteration of the distribution we got: earlier messages were never ours to read.
    first: u32,
    /// The key of the next iteration not yet reached.
    pub(super) chain: ChainKey,
}

pub(super) struct SkippedKey {
    chain_id: ChainId,
    pub(super) key: MessageKey,
}

/// What a member keeps of one sender's chains in one group (store one per sender and
/// group). Persist it with [`SenderKeyRecord::to_bytes`] after every successful call that
/// takes `&mut self`.
pub struct SenderKeyRecord {
    group_id: GroupId,
    /// Most recently distributed first; at most [`MAX_SENDER_KEY_CHAINS`].
    pub(super) chains: VecDeque<ReceiverChain>,
    /// Keys of messages skipped over, oldest first; at most [`MAX_SKIPPED_KEYS`], each of
    /// a chain in `chains`.
    pub(super) skipped: VecDeque<SkippedKey>,
}

impl SenderKeyRecord {
    /// An empty record for one sender in `group_id`; add chains with
    /// [`SenderKeyRecord::process`].
    pub fn new(group_id: GroupId) -> Self {
        Self {
            group_id,
            chains: VecDeque::new(),
            skipped: VecDeque::new(),
        }
    }

    /// The group of this record.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// Adds the sender's chain from a distribution (libsignal's
    /// `process_sender_key_distribution_message`).
    ///
    /// A distribution of a chain we already hold with the same signing key changes nothing
    /// but the chain's recency: the chain is never wound back, so re-sending an old
    /// distribution cannot make a message open twice. A chain id that we hold with another
    /// signing key is replaced. Beyond [`MAX_SENDER_KEY_CHAINS`] chains, the least recently
    /// distributed is evicted with its skipped keys.
    pub fn process(
        &mut self,
        distribution: &SenderKeyDistribution,
    ) -> Result<(), DistributionError> {
        if distribution.group_id != self.group_id {
            return Err(DistributionError::WrongGroup);
        }
        let existing = self
            .chains
            .iter()
            .position(|c| c.chain_id == distribution.chain_id);
        let chain = match existing.and_then(|position| self.chains.remove(position)) {
            Some(chain) if chain.signing == distribution.signing => chain,
            replaced => {
                if let Some(replaced) = replaced {
                    self.forget_skipped(replaced.chain_id);
                }
                ReceiverChain {
                    chain_id: distribution.chain_id,
                    signing: distribution.signing,
                    first: distribution.chain.index(),
                    chain: distribution.chain.clone(),
                }
            }
        };
        self.chains.push_front(chain);
        while self.chains.len() > MAX_SENDER_KEY_CHAINS {
            if let Some(evicted) = self.chains.pop_back() {
                self.forget_skipped(evicted.chain_id);
            }
        }
        Ok(())
    }

    /// Verifies and decrypts one group message, staging every change and committing it
    /// only when the message opens.
    ///
    /// The signature is checked (strictly) before anything else is done with the message;
    /// only the group id and chain id, needed to find the verifying key, are read first.
    pub fn decrypt(&mut self, message: &SenderKeyMessage) -> Result<Vec<u8>, GroupDecryptError> {
        if message.group_id != self.group_id {
            return Err(GroupDecryptError::WrongGroup);
        }
        let position = self
            .chains
            .iter()
            .position(|c| c.chain_id == message.chain_id)
            .ok_or(GroupDecryptError::UnknownChain)?;
        let receiver = &self.chains[position];
        receiver
            .signing
            .verify_strict(message.signed(), &message.signature)
            .map_err(|_| GroupDecryptError::BadSignature)?;

        let iteration = message.iteration;
        if iteration < receiver.first {
            return Err(GroupDecryptError::BeforeDistribution {
                iteration,
                first: receiver.first,
            });
        }

        // 1. A key skipped earlier.
        if let Some(index) = self
            .skipped
            .iter()
            .position(|s| s.chain_id == message.chain_id && s.key.index() == iteration)
        {
            let plaintext = open(&self.skipped[index].key, message)?;
            self.skipped.remove(index);
            return Ok(plaintext);
        }

        // 2. At or ahead of the chain.
        let current = receiver.chain.index();
        if iteration < current {
            return Err(GroupDecryptError::Duplicate);
        }
        let jump = u64::from(iteration - current);
        if jump > u64::from(MAX_CHAIN_JUMP) {
            return Err(GroupDecryptError::TooFarAhead { jump });
        }
        let mut skipped = Vec::new();
        let mut chain = receiver.chain.clone();
        let key = loop {
            let (key, next) = chain.step().ok_or(GroupDecryptError::Duplicate)?;
            chain = next;
            if key.index() == iteration {
                break key;
            }
            skipped.push(key);
        };
        let plaintext = open(&key, message)?;

        // Authenticated: commit.
        self.chains[position].chain = chain;
        for key in skipped {
            if self.skipped.len() == MAX_SKIPPED_KEYS {
                self.skipped.pop_front();
            }
            self.skipped.push_back(SkippedKey {
                chain_id: message.chain_id,
                key,
            });
        }
        Ok(plaintext)
    }

    /// Number of chains held.
    pub fn chain_count(&self) -> usize {
        self.chains.len()
    }

    /// Number of skipped message keys held (for tests and diagnostics).
    pub fn skipped_key_count(&self) -> usize {
        self.skipped.len()
    }

    fn forget_skipped(&mut self, chain_id: ChainId) {
        self.skipped.retain(|s| s.chain_id != chain_id);
    }

    /// Serializes the record (secrets included): store it encrypted at rest.
    ///
    /// ```text
    /// version (1) || group id (16)
    /// || chain count (1) || { chain id (16) || Ed25519 public key (32) || first iteration (u32)
    ///                         || chain key (32) || next iteration (u32) }*
    /// || skipped count (u16) || { chain id (16) || message key (32) || iteration (u32) }*
    /// ```
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            20 + self.chains.len() * 88 + self.skipped.len() * 52,
        ));
        out.push(GROUP_STATE_FORMAT_VERSION);
        out.extend_from_slice(&self.group_id.0);
        out.push(u8::try_from(self.chains.len()).unwrap_or(u8::MAX));
        for chain in &self.chains {
            out.extend_from_slice(&chain.chain_id.0);
            out.extend_from_slice(chain.signing.as_bytes());
            out.extend_from_slice(&chain.first.to_be_bytes());
            put_chain(&mut out, &chain.chain);
        }
        out.extend_from_slice(
            &u16::try_from(self.skipped.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for skipped in &self.skipped {
            out.extend_from_slice(&skipped.chain_id.0);
            out.extend_from_slice(skipped.key.as_bytes());
            out.extend_from_slice(&skipped.key.index().to_be_bytes());
        }
        out
    }

    /// Restores a record serialized by [`SenderKeyRecord::to_bytes`]; refuses other
    /// versions, truncation, trailing bytes, counts over the limits, repeated chain ids,
    /// and skipped keys that do not belong to a held chain below its next iteration.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(
            "sender key record",
            bytes,
            GROUP_STATE_FORMAT_VERSION,
            |r| {
                let group_id = GroupId(r.array()?);
                let chain_count = usize::from(r.u8()?);
                if chain_count > MAX_SENDER_KEY_CHAINS {
                    return Err(r.invalid("chain count"));
                }
                let mut chains = VecDeque::with_capacity(chain_count);
                for _ in 0..chain_count {
                    let chain_id = ChainId(r.array()?);
                    let signing = read_verifying_key(r)?;
                    let first = r.u32()?;
                    let chain = read_chain(r)?;
                    if first > chain.index() {
                        return Err(r.invalid("first iteration"));
                    }
                    if chains
                        .iter()
                        .any(|c: &ReceiverChain| c.chain_id == chain_id)
                    {
                        return Err(r.invalid("repeated chain id"));
                    }
                    chains.push_back(ReceiverChain {
                        chain_id,
                        signing,
                        first,
                        chain,
                    });
                }
                let skipped_count = usize::from(r.u16()?);
                if skipped_count > MAX_SKIPPED_KEYS {
                    return Err(r.invalid("skipped key count"));
                }
                let mut skipped = VecDeque::with_capacity(skipped_count);
                let mut seen = HashSet::with_capacity(skipped_count);
                for _ in 0..skipped_count {
                    let chain_id = ChainId(r.array()?);
                    let key = r.array::<32>()?;
                    let iteration = r.u32()?;
                    let belongs = chains.iter().any(|c| {
                        c.chain_id == chain_id && (c.first..c.chain.index()).contains(&iteration)
                    });
                    if !belongs || !seen.insert((chain_id, iteration)) {
                        return Err(r.invalid("skipped key"));
                    }
                    skipped.push_back(SkippedKey {
                        chain_id,
                        key: MessageKey::new(key, iteration),
                    });
                }
                Ok(Self {
                    group_id,
                    chains,
                    skipped,
                })
            },
        )
    }
}

impl fmt::Debug for SenderKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            group_id,
            chains,
            skipped,
        } = self;
        let chains: Vec<_> = chains
            .iter()
            .map(|c| (c.chain_id, c.first, c.chain.index()))
            .collect();
        f.debug_struct("SenderKeyRecord")
            .field("group_id", group_id)
            .field("chains (id, first, next)", &chains)
            .field("skipped_keys", &skipped.len())
            .finish_non_exhaustive()
    }
}

fn open(key: &MessageKey, message: &SenderKeyMessage) -> Result<Vec<u8>, GroupDecryptError> {
    key.open(
        LABEL_SENDER_KEY_MESSAGE_KEYS,
        message.header(),
        message.sealed(),
    )
    .map_err(|_| GroupDecryptError::Authentication)
}
