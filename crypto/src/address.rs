//! The address of a device: a user id and a device id, as the server names them.

use std::fmt;

use thiserror::Error;

/// Longest user id, in bytes, that an address may carry.
pub const MAX_USER_ID_LEN: usize = 255;

/// An address could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The user id is empty.
    #[error("user id is empty")]
    EmptyUser,
    /// The user id is longer than [`MAX_USER_ID_LEN`] bytes.
    #[error("user id is {0} bytes; at most {MAX_USER_ID_LEN} are allowed")]
    UserTooLong(usize),
}

/// A device's address: the associated data of every session binds both parties' addresses,
/// so a message meant for one device cannot be passed off to another (unknown key-share).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    user: String,
    device: u32,
}

impl Address {
    /// Builds an address; the user id must be 1 to 255 bytes.
    pub fn new(user: impl Into<String>, device: u32) -> Result<Self, AddressError> {
        let user = user.into();
        if user.is_empty() {
            return Err(AddressError::EmptyUser);
        }
        if user.len() > MAX_USER_ID_LEN {
            return Err(AddressError::UserTooLong(user.len()));
        }
        Ok(Self { user, device })
    }

    /// The user id.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The device id.
    pub fn device(&self) -> u32 {
        self.device
    }

    /// Length byte || user id (UTF-8) || device id (big-endian u32).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        // The constructor keeps the length under 256.
        out.push(u8::try_from(self.user.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.user.as_bytes());
        out.extend_from_slice(&self.device.to_be_bytes());
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.user, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_length_is_bounded() {
        assert_eq!(Address::new("", 1), Err(AddressError::EmptyUser));
        assert_eq!(
            Address::new("a".repeat(256), 1),
            Err(AddressError::UserTooLong(256))
        );
        let address = Address::new("a".repeat(255), 7).unwrap();
        let mut out = Vec::new();
        address.encode(&mut out);
        assert_eq!(out.len(), 1 + 255 + 4);
        assert_eq!(out[0], 255);
    }
}
