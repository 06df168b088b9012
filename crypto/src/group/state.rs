//! Our sending chain in one group.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::distribution::SenderKeyDistribution;
use super::message::encode_header;
use super::{ChainId, GroupEncryptError, GroupId, HEADER_LEN, put_chain, read_chain};
use crate::consts::{
    CHAIN_ID_LEN, ED25519_LEN, GROUP_STATE_FORMAT_VERSION, LABEL_SENDER_KEY_MESSAGE_KEYS,
    SIGNATURE_LEN, TAG_LEN,
};
use crate::ratchet::chain::ChainKey;
use crate::wire::{DecodeError, decode_versioned};

/// Our sending chain in one group: the chain key and the Ed25519 key pair that signs its
/// messages. Persist it with [`SenderKeyState::to_bytes`] after every
/// [`SenderKeyState::encrypt`].
pub struct SenderKeyState {
    group_id: GroupId,
    pub(super) chain_id: ChainId,
    pub(super) chain: ChainKey,
    pub(super) signing: SigningKey,
}

impl SenderKeyState {
    /// Starts a new chain for `group_id` at iteration 0 (also the way to rotate: the new
    /// chain has a new id, chain key and signing key). Draws, in this order, the chain id
    /// (16 bytes), the chain key (32) and the Ed25519 seed (32).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R, group_id: GroupId) -> Self {
        let mut chain_id = [0u8; CHAIN_ID_LEN];
        rng.fill_bytes(&mut chain_id);
        let mut chain_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(chain_key.as_mut());
        let mut seed = Zeroizing::new([0u8; ED25519_LEN]);
        rng.fill_bytes(seed.as_mut());
        Self {
            group_id,
            chain_id: ChainId(chain_id),
            chain: ChainKey::new(*chain_key, 0),
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The group this chain sends to.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// This chain's id.
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// The iteration of the next message.
    pub fn iteration(&self) -> u32 {
        self.chain.index()
    }

    /// The chain as it stands now, to send to members over pairwise sessions. A member who
    /// gets it can read this chain's messages from the current iteration on, not earlier ones.
    pub fn distribution(&self) -> SenderKeyDistribution {
        SenderKeyDistribution {
            group_id: self.group_id,
            chain_id: self.chain_id,
            chain: self.chain.clone(),
            signing: self.signing.verifying_key(),
        }
    }

    /// Encrypts one group message and signs it; the returned bytes go to every member.
    ///
    /// ```text
    /// version (1) || 0x03 || group id (16) || chain id (16) || iteration (u32)
    /// || ciphertext || tag (16) || signature (64)
    /// ```
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, GroupEncryptError> {
        let (key, next) = self.chain.step().ok_or(GroupEncryptError::ChainExhausted)?;
        let header = encode_header(self.group_id, self.chain_id, key.index());
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN + SIGNATURE_LEN);
        out.extend_from_slice(&header);
        key.seal(LABEL_SENDER_KEY_MESSAGE_KEYS, &header, plaintext, &mut out);
        let signature = self.signing.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        self.chain = next;
        Ok(out)
    }

    /// Serializes the state (secrets included): store it encrypted at rest.
    ///
    /// ```text
    /// version (1) || group id (16) || chain id (16) || chain key (32) || iteration (u32)
    /// || Ed25519 seed (32)
    /// ```
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 16 + 16 + 36 + 32));
        out.push(GROUP_STATE_FORMAT_VERSION);
        out.extend_from_slice(&self.group_id.0);
        out.extend_from_slice(&self.chain_id.0);
        put_chain(&mut out, &self.chain);
        out.extend_from_slice(self.signing.as_bytes());
        out
    }

    /// Restores a state serialized by [`SenderKeyState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned("sender key state", bytes, GROUP_STATE_FORMAT_VERSION, |r| {
            let group_id = GroupId(r.array()?);
            let chain_id = ChainId(r.array()?);
            let chain = read_chain(r)?;
            let seed = Zeroizing::new(r.array::<ED25519_LEN>()?);
            Ok(Self {
                group_id,
                chain_id,
                chain,
                signing: SigningKey::from_bytes(&seed),
            })
        })
    }
}

impl fmt::Debug for SenderKeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            group_id,
            chain_id,
            chain,
            signing,
        } = self;
        f.debug_struct("SenderKeyState")
            .field("group_id", group_id)
            .field("chain_id", chain_id)
            .field("iteration", &chain.index())
            .field(
                "signing_key",
                &hex::encode(signing.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}
