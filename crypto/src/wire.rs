//! Strict binary decoding shared by every encoding in the crate.
//!
//! Every encoding starts with a version byte and is read with a `Reader` that rejects an
//! unknown version, truncation and trailing bytes. Integers are big-endian.

use thiserror::Error;
use x25519_dalek::PublicKey;

/// Why some bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The version byte is not one this build understands (for example, state written by a
    /// newer release).
    #[error("{what}: unsupported version {found} (this build reads version {supported})")]
    UnknownVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The input ended before the encoding did.
    #[error("{what}: truncated input")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
    },
    /// Bytes were left over after a complete encoding.
    #[error("{what}: {count} trailing bytes")]
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A field held a value that is not allowed (unknown type byte, bad flag, bad key).
    #[error("{what}: invalid {field}")]
    InvalidField {
        /// What was being decoded.
        what: &'static str,
        /// The field that was invalid.
        field: &'static str,
    },
    /// A signature in the encoding does not verify.
    #[error("{what}: signature does not verify")]
    BadSignature {
        /// What was being decoded.
        what: &'static str,
    },
}

/// Reads fields off a byte slice, failing on truncation.
pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes` as the encoding named `what`, checking its version byte.
    pub(crate) fn with_version(
        what: &'static str,
        bytes: &'a [u8],
        supported: u8,
    ) -> Result<Self, DecodeError> {
        let mut reader = Self { what, rest: bytes };
        let found = reader.u8()?;
        if found != supported {
            return Err(DecodeError::UnknownVersion {
                what,
                found,
                supported,
            });
        }
        Ok(reader)
    }

    /// Reads `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { what: self.what });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Reads a fixed-size array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Reads an X25519 public key, refusing non-canonical encodings (the top bit set, or a
    /// value of at least 2^255 - 19): X25519 would read them as another key's value, which
    /// would let anyone re-encode a key without changing what it computes.
    pub(crate) fn x25519(&mut self, field: &'static str) -> Result<PublicKey, DecodeError> {
        let bytes = self.array::<32>()?;
        if is_canonical_x25519(&bytes) {
            Ok(PublicKey::from(bytes))
        } else {
            Err(self.invalid(field))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a boolean encoded as 0 or 1; any other byte is invalid.
    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.invalid(field)),
        }
    }

    /// Reads a `u16` length and then that many bytes.
    pub(crate) fn vec16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// Takes everything that is left.
    pub(crate) fn remaining(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// An [`DecodeError::InvalidField`] for this encoding.
    pub(crate) fn invalid(&self, field: &'static str) -> DecodeError {
        DecodeError::InvalidField {
            what: self.what,
            field,
        }
    }

    /// Ends reading; fails if bytes are left over.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                what: self.what,
                count: self.rest.len(),
            })
        }
    }
}

/// A version byte followed by what `encode` writes.
pub(crate) fn encode_versioned(
    capacity: usize,
    version: u8,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(version);
    encode(&mut out);
    out
}

/// Decodes a whole versioned encoding with `decode`: checks the version byte first and
/// refuses bytes left over after it.
pub(crate) fn decode_versioned<T>(
    what: &'static str,
    bytes: &[u8],
    version: u8,
    decode: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut r = Reader::with_version(what, bytes, version)?;
    let value = decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// Whether `bytes` is the canonical little-endian encoding of a field element below
/// p = 2^255 - 19 (so the top bit is clear too).
pub(crate) fn is_canonical_x25519(bytes: &[u8; 32]) -> bool {
    let top = bytes[31];
    if top & 0x80 != 0 {
        return false;
    }
    // Values from p to 2^255 - 1: top byte 0x7f, bytes 1..=30 all 0xff, byte 0 >= 0xed.
    !(top == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff) && bytes[0] >= 0xed)
}

/// Writes a `u16` length prefix and the bytes. Callers keep values under 64 KiB (addresses
/// are checked when built).
pub(crate) fn put_vec16(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_version_truncation_and_trailing_bytes() {
        assert!(matches!(
            Reader::with_version("x", &[2, 0], 1),
            Err(DecodeError::UnknownVersion { found: 2, .. })
        ));
        assert!(matches!(
            Reader::with_version("x", &[], 1),
            Err(DecodeError::Truncated { .. })
        ));
        let mut r = Reader::with_version("x", &[1, 0, 5, 9], 1).unwrap();
        assert_eq!(r.u16().unwrap(), 5);
        assert!(matches!(
            r.finish(),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
        let mut r = Reader::with_version("x", &[1, 0, 3, 1], 1).unwrap();
        assert!(matches!(r.vec16(), Err(DecodeError::Truncated { .. })));
        let mut r = Reader::with_version("x", &[1, 2], 1).unwrap();
        assert!(matches!(
            r.flag("f"),
            Err(DecodeError::InvalidField { field: "f", .. })
        ));
    }
}
