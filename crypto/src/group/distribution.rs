//! A sender's chain as handed to a member, over the pairwise sessions.

use std::fmt;

use ed25519_dalek::VerifyingKey;
use zeroize::Zeroizing;

use super::{ChainId, GroupId, read_verifying_key};
use crate::consts::{
    CHAIN_ID_LEN, ED25519_LEN, GROUP_ID_LEN, MESSAGE_TYPE_SENDER_KEY_DISTRIBUTION, MESSAGE_VERSION,
};
use crate::ratchet::chain::ChainKey;
use crate::wire::{DecodeError, decode_versioned};

/// A sender's chain as handed to a member: enough to read the chain's messages from
/// `iteration` on and to verify their signatures. It holds the chain key: send it only
/// inside pairwise end-to-end encrypted messages.
pub struct SenderKeyDistribution {
    pub(super) group_id: GroupId,
    pub(super) chain_id: ChainId,
    pub(super) chain: ChainKey,
    pub(super) signing: VerifyingKey,
}

impl SenderKeyDistribution {
    /// Length of the encoding, version byte included.
    pub const ENCODED_LEN: usize = 1 + 1 + GROUP_ID_LEN + CHAIN_ID_LEN + 4 + 32 + ED25519_LEN;

    /// The group the chain sends to.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// The chain's id.
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// The first iteration this distribution opens.
    pub fn iteration(&self) -> u32 {
        self.chain.index()
    }

    /// The chain's public signing key.
    pub fn signing_key(&self) -> &VerifyingKey {
        &self.signing
    }

    /// Encodes the distribution (secret: the chain key is inside).
    ///
    /// ```text
    /// version (1) || 0x04 || group id (16) || chain id (16) || iteration (u32)
    /// || chain key (32) || Ed25519 public key (32)
    /// ```
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(Self::ENCODED_LEN));
        out.push(MESSAGE_VERSION);
        out.push(MESSAGE_TYPE_SENDER_KEY_DISTRIBUTION);
        out.extend_from_slice(&self.group_id.0);
        out.extend_from_slice(&self.chain_id.0);
        out.extend_from_slice(&self.chain.index().to_be_bytes());
        out.extend_from_slice(self.chain.as_bytes());
        out.extend_from_slice(self.signing.as_bytes());
        out
    }

    /// Decodes strictly: version, type, and a valid Ed25519 key that is not of small order.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned("sender key distribution", bytes, MESSAGE_VERSION, |r| {
            if r.u8()? != MESSAGE_TYPE_SENDER_KEY_DISTRIBUTION {
                return Err(r.invalid("message type"));
            }
            let group_id = GroupId(r.array()?);
            let chain_id = ChainId(r.array()?);
            let iteration = r.u32()?;
            let chain = ChainKey::new(r.array()?, iteration);
            let signing = read_verifying_key(r)?;
            Ok(Self {
                group_id,
                chain_id,
                chain,
                signing,
            })
        })
    }
}

impl fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            group_id,
            chain_id,
            chain,
            signing,
        } = self;
        f.debug_struct("SenderKeyDistribution")
            .field("group_id", group_id)
            .field("chain_id", chain_id)
            .field("iteration", &chain.index())
            .field("signing_key", &hex::encode(signing.as_bytes()))
            .finish_non_exhaustive()
    }
}
