//! Protocol messages on the wire.
//!
//! ```text
//! ratchet message = version (1) || 0x01 || ratchet key (32) || previous chain length (u32)
//!                   || message index (u32) || ciphertext || tag (16)
//! prekey message  = version (1) || 0x02 || identity key (128, without version byte)
//!                   || base key (32) || signed prekey id (u32)
//!                   || one-time flag (1) [|| one-time prekey id (u32)] || KEM prekey id (u32)
//!                   || KEM ciphertext (1088) || ratchet message (the rest, as above)
//! ```
//! The first 42 bytes of a ratchet message are its header; the AEAD authenticates them.

use x25519_dalek::PublicKey;

use crate::consts::{
    KEM_CIPHERTEXT_LEN, MESSAGE_TYPE_PREKEY, MESSAGE_TYPE_RATCHET, MESSAGE_VERSION, TAG_LEN,
    X25519_LEN,
};
use crate::keys::{IdentityKey, PreKeyId};
use crate::wire::{DecodeError, Reader};

/// Length of a ratchet message header.
pub(crate) const HEADER_LEN: usize = 1 + 1 + X25519_LEN + 4 + 4;

/// The parsed header of a ratchet message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) ratchet_key: PublicKey,
    pub(crate) previous_chain_length: u32,
    pub(crate) index: u32,
}

impl Header {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(MESSAGE_VERSION);
        out.push(MESSAGE_TYPE_RATCHET);
        out.extend_from_slice(self.ratchet_key.as_bytes());
        out.extend_from_slice(&self.previous_chain_length.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
    }
}

/// A Double Ratchet message: a header and the sealed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatchetMessage {
    pub(crate) header: Header,
    bytes: Vec<u8>,
}

impl RatchetMessage {
    pub(crate) fn from_parts(header: Header, bytes: Vec<u8>) -> Self {
        Self { header, bytes }
    }

    /// The header bytes (authenticated as associated data).
    pub(crate) fn header_bytes(&self) -> &[u8] {
        &self.bytes[..HEADER_LEN]
    }

    /// Ciphertext || tag.
    pub(crate) fn sealed(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The index of this message in its sending chain.
    pub fn index(&self) -> u32 {
        self.header.index
    }

    /// The encoded message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes strictly: version, type, and at least a tag's worth of ciphertext.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_version("ratchet message", bytes, MESSAGE_VERSION)?;
        if r.u8()? != MESSAGE_TYPE_RATCHET {
            return Err(r.invalid("message type"));
        }
        let header = Header {
            ratchet_key: r.x25519("ratchet key")?,
            previous_chain_length: r.u32()?,
            index: r.u32()?,
        };
        if r.remaining().len() < TAG_LEN {
            return Err(DecodeError::Truncated {
                what: "ratchet message",
            });
        }
        Ok(Self {
            header,
            bytes: bytes.to_vec(),
        })
    }
}

/// The first messages of a session, sent until the responder answers: they carry what the
/// responder needs to run PQXDH, and the first ratchet message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyMessage {
    pub(crate) identity: IdentityKey,
    pub(crate) base_key: PublicKey,
    pub(crate) signed_prekey_id: PreKeyId,
    pub(crate) one_time_prekey_id: Option<PreKeyId>,
    pub(crate) kem_prekey_id: PreKeyId,
    pub(crate) kem_ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    pub(crate) message: RatchetMessage,
}

impl PreKeyMessage {
    /// The initiator's identity (check it against the pinned one before accepting).
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }

    /// The initiator's ephemeral key: identifies the session this message belongs to.
    pub fn base_key(&self) -> &[u8; 32] {
        self.base_key.as_bytes()
    }

    /// Which signed prekey the initiator used.
    pub fn signed_prekey_id(&self) -> PreKeyId {
        self.signed_prekey_id
    }

    /// Which one-time prekey the initiator used, if any.
    pub fn one_time_prekey_id(&self) -> Option<PreKeyId> {
        self.one_time_prekey_id
    }

    /// Which KEM prekey the initiator encapsulated to.
    pub fn kem_prekey_id(&self) -> PreKeyId {
        self.kem_prekey_id
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(MESSAGE_VERSION);
        out.push(MESSAGE_TYPE_PREKEY);
        self.identity.encode(out);
        out.extend_from_slice(self.base_key.as_bytes());
        out.extend_from_slice(&self.signed_prekey_id.0.to_be_bytes());
        match self.one_time_prekey_id {
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.0.to_be_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&self.kem_prekey_id.0.to_be_bytes());
        out.extend_from_slice(self.kem_ciphertext.as_slice());
        out.extend_from_slice(self.message.as_bytes());
    }

    fn decode(mut r: Reader<'_>) -> Result<Self, DecodeError> {
        let identity = IdentityKey::decode(&mut r)?;
        let base_key = r.x25519("base key")?;
        let signed_prekey_id = PreKeyId(r.u32()?);
        let one_time_prekey_id = if r.flag("one-time prekey flag")? {
            Some(PreKeyId(r.u32()?))
        } else {
            None
        };
        let kem_prekey_id = PreKeyId(r.u32()?);
        let kem_ciphertext = Box::new(r.array::<KEM_CIPHERTEXT_LEN>()?);
        let message = RatchetMessage::from_bytes(r.remaining())?;
        Ok(Self {
            identity,
            base_key,
            signed_prekey_id,
            one_time_prekey_id,
            kem_prekey_id,
            kem_ciphertext,
            message,
        })
    }
}

/// Any protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A session's first messages (PQXDH setup + ratchet message).
    PreKey(Box<PreKeyMessage>),
    /// A Double Ratchet message on an established session.
    Ratchet(RatchetMessage),
}

impl Message {
    /// Decodes either kind, strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_version("message", bytes, MESSAGE_VERSION)?;
        match r.u8()? {
            MESSAGE_TYPE_RATCHET => RatchetMessage::from_bytes(bytes).map(Self::Ratchet),
            MESSAGE_TYPE_PREKEY => PreKeyMessage::decode(r).map(|m| Self::PreKey(Box::new(m))),
            _ => Err(r.invalid("message type")),
        }
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Ratchet(message) => message.as_bytes().to_vec(),
            Self::PreKey(message) => {
                let mut out = Vec::with_capacity(1300 + message.message.as_bytes().len());
                message.encode(&mut out);
                out
            }
        }
    }
}
