//! The group message: one ciphertext for every member, signed by the sender's chain.

use std::fmt;

use ed25519_dalek::Signature;

use super::{ChainId, GroupId, HEADER_LEN};
use crate::consts::{MESSAGE_TYPE_SENDER_KEY, MESSAGE_VERSION, SIGNATURE_LEN, TAG_LEN};
use crate::wire::{DecodeError, Reader};

/// A group message, parsed but not yet verified: use its group id and chain id to find
/// the record, then [`SenderKeyRecord::decrypt`](super::SenderKeyRecord::decrypt) it.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKeyMessage {
    pub(super) group_id: GroupId,
    pub(super) chain_id: ChainId,
    pub(super) iteration: u32,
    pub(super) signature: Signature,
    bytes: Vec<u8>,
}

impl SenderKeyMessage {
    /// Decodes strictly: version, type, and room for at least a tag and a signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "sender key message";
        let mut r = Reader::with_version(WHAT, bytes, MESSAGE_VERSION)?;
        if r.u8()? != MESSAGE_TYPE_SENDER_KEY {
            return Err(r.invalid("message type"));
        }
        let group_id = GroupId(r.array()?);
        let chain_id = ChainId(r.array()?);
        let iteration = r.u32()?;
        let rest = r.remaining();
        let Some(sealed_len) = rest.len().checked_sub(SIGNATURE_LEN) else {
            return Err(DecodeError::Truncated { what: WHAT });
        };
        if sealed_len < TAG_LEN {
            return Err(DecodeError::Truncated { what: WHAT });
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&rest[sealed_len..]);
        Ok(Self {
            group_id,
            chain_id,
            iteration,
            signature: Signature::from_bytes(&signature),
            bytes: bytes.to_vec(),
        })
    }

    /// The group the message is for.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    /// The sending chain's id.
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// The message's position in its chain.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The encoded message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Everything the signature covers: the message without its signature.
    pub(super) fn signed(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_LEN]
    }

    /// The header (authenticated as associated data).
    pub(super) fn header(&self) -> &[u8] {
        &self.bytes[..HEADER_LEN]
    }

    /// Ciphertext || tag.
    pub(super) fn sealed(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.bytes.len() - SIGNATURE_LEN]
    }
}

impl fmt::Debug for SenderKeyMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyMessage")
            .field("group_id", &self.group_id)
            .field("chain_id", &self.chain_id)
            .field("iteration", &self.iteration)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

pub(super) fn encode_header(
    group_id: GroupId,
    chain_id: ChainId,
    iteration: u32,
) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0] = MESSAGE_VERSION;
    header[1] = MESSAGE_TYPE_SENDER_KEY;
    header[2..18].copy_from_slice(&group_id.0);
    header[18..34].copy_from_slice(&chain_id.0);
    header[34..].copy_from_slice(&iteration.to_be_bytes());
    header
}
