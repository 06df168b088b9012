//! Streaming attachment encryption: the STREAM construction (Hoang, Reyhanitabar, Rogaway
//! and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
//! CRYPTO 2015) with ChaCha20-Poly1305, laid out as age's payload (age-encryption.org/v1).
//!
//! ```text
//! blob         = version (1) || nonce (16) || chunk_0 || ... || chunk_n
//! payload key  = HKDF-SHA256(salt = nonce, IKM = attachment key,
//!                            info = "Tacit_Attachment_Payload_v1", L = 32)
//! chunk_i      = ChaCha20-Poly1305(payload key, nonce_i, aad = empty, plaintext_i)
//!                (ciphertext || tag; every plaintext_i but the last is 64 KiB)
//! nonce_i      = i as 11 bytes big-endian || 0x01 for the last chunk, 0x00 otherwise
//! digest       = SHA-256(blob)
//! ```
//! Each file gets a fresh random [`AttachmentKey`]; the key and the [`AttachmentDigest`]
//! travel inside the end-to-end encrypted message that announces the file, and the blob goes
//! to the blob store. The chunk counter makes reordering and splicing fail, the last-chunk
//! flag makes truncation at a chunk boundary and appended data fail, and the digest commits
//! the sender to one ciphertext (ChaCha20-Poly1305 alone is not key-committing). The last
//! chunk may be empty only when the whole file is.
//!
//! [`Encryptor`] and [`Decryptor`] work incrementally and never hold more than one chunk.
//! A [`Decryptor`] releases each chunk's plaintext once that chunk authenticates; only
//! [`Decryptor::finish`] establishes that the file is complete and is the one the digest
//! names, so treat what it released as unconfirmed until `finish` returns `Ok`.
//!
//! ```
//! use tacit_crypto::attachment::{AttachmentKey, Decryptor, Encryptor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand::rng();
//! let file = vec![7u8; 200_000];
//!
//! // Sender: encrypt in whatever pieces the file is read in.
//! let key = AttachmentKey::generate(&mut rng);
//! let mut encryptor = Encryptor::new(&mut rng, &key);
//! let mut blob = Vec::new();
//! for piece in file.chunks(50_000) {
//!     encryptor.push(piece, &mut blob)?;
//! }
//! let digest = encryptor.finish(&mut blob)?;
//! // (Upload `blob`; send key and digest inside an end-to-end encrypted message.)
//!
//! // Receiver: decrypt in whatever pieces the download arrives in.
//! let mut decryptor = Decryptor::new(&key, digest);
//! let mut plaintext = Vec::new();
//! for piece in blob.chunks(1_000) {
//!     decryptor.push(piece, &mut plaintext)?;
//! }
//! decryptor.finish(&mut plaintext)?;
//! assert_eq!(plaintext, file);
//!
//! // A truncated download fails.
//! let mut decryptor = Decryptor::new(&key, digest);
//! let mut out = Vec::new();
//! decryptor.push(&blob[..blob.len() - 1], &mut out)?;
//! assert!(decryptor.finish(&mut out).is_err());
//! # Ok(())
//! # }
//! ```

use std::fmt;

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit,
    aead::{AeadInOut, Nonce, Tag},
};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::consts::{
    ATTACHMENT_CHUNK_LEN, ATTACHMENT_FORMAT_VERSION, ATTACHMENT_NONCE_LEN,
    LABEL_ATTACHMENT_PAYLOAD, SHA256_LEN, TAG_LEN,
};

/// Length of the blob's header: version byte and nonce.
pub const HEADER_LEN: usize = 1 + ATTACHMENT_NONCE_LEN;
/// Length of a full sealed chunk: 64 KiB of ciphertext and its tag.
pub const SEALED_CHUNK_LEN: usize = ATTACHMENT_CHUNK_LEN + TAG_LEN;

/// Why an attachment could not be encrypted or decrypted. After an error, the encryptor or
/// decryptor reports the same error for every further call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// The blob starts with a version byte this build does not read.
    #[error("attachment: unsupported version {0}")]
    UnknownVersion(u8),
    /// A chunk failed authentication: altered, reordered, from another file or key, or an
    /// empty last chunk after other chunks.
    #[error("attachment chunk {index} failed authentication")]
    BadChunk {
        /// The chunk's position (0 is the first chunk).
        index: u64,
    },
    /// The stream ended before its last chunk (cut off, possibly at a chunk boundary).
    #[error("attachment is truncated: the last chunk is missing")]
    Truncated,
    /// Bytes follow the last chunk.
    #[error("attachment has data after its last chunk")]
    TrailingData,
    /// The blob is complete but is not the one the digest names.
    #[error("attachment digest does not match")]
    DigestMismatch,
    /// More than 2^64 chunks: the counter would repeat.
    #[error("attachment too long")]
    TooLong,
}

/// The key of one attachment: 32 random bytes, fresh for every file. It travels inside
/// an end-to-end encrypted message; zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AttachmentKey(Box<[u8; 32]>);

impl AttachmentKey {
    /// Draws a new key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = Box::new([0u8; 32]);
        rng.fill_bytes(key.as_mut_slice());
        Self(key)
    }

    /// A key received in a message.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut bytes = Zeroizing::new(bytes);
        Self(Box::new(std::mem::take(&mut *bytes)))
    }

    /// The key's bytes, to put in the message that announces the file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The payload key and cipher for the blob with header nonce `nonce`.
    fn cipher(&self, nonce: &[u8; ATTACHMENT_NONCE_LEN]) -> ChaCha20Poly1305 {
        let mut payload_key = Zeroizing::new([0u8; 32]);
        let hkdf = Hkdf::<Sha256>::new(Some(nonce), self.0.as_slice());
        // 32 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let _ = hkdf.expand(LABEL_ATTACHMENT_PAYLOAD, payload_key.as_mut());
        let mut key = chacha20poly1305::Key::from(*payload_key);
        let cipher = ChaCha20Poly1305::new(&key);
        key.zeroize();
        cipher
    }
}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentKey").finish_non_exhaustive()
    }
}

/// SHA-256 of a whole encrypted blob. Public (it names a ciphertext), but it must travel
/// inside the end-to-end encrypted message with the key: it is what commits the sender to
/// one ciphertext.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttachmentDigest(pub [u8; SHA256_LEN]);

impl fmt::Debug for AttachmentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttachmentDigest({})", hex::encode(self.0))
    }
}

/// The length of the blob that encrypts `plaintext_len` bytes (`None` past `u64::MAX`).
pub fn encrypted_len(plaintext_len: u64) -> Option<u64> {
    let chunk = ATTACHMENT_CHUNK_LEN as u64;
    let chunks = plaintext_len.div_ceil(chunk).max(1);
    chunks
        .checked_mul(TAG_LEN as u64)?
        .checked_add(plaintext_len)?
        .checked_add(HEADER_LEN as u64)
}

/// `nonce_i`: the counter as 11 bytes big-endian, then the last-chunk flag.
fn chunk_nonce(counter: u64, last: bool) -> Nonce<ChaCha20Poly1305> {
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    Nonce::<ChaCha20Poly1305>::from(nonce)
}

// ---------------------------------------------------------------------------------------
// Encryption

/// Encrypts one attachment incrementally: [`Encryptor::push`] plaintext in pieces of any
/// size, then [`Encryptor::finish`]. Holds at most one chunk of plaintext (zeroized).
pub struct Encryptor {
    cipher: ChaCha20Poly1305,
    /// The header, until it has been written out.
    header: Option<[u8; HEADER_LEN]>,
    /// Plaintext of the chunk being filled (at most one chunk): held back until we know
    /// whether more follows, since the last chunk is sealed differently.
    buffer: Zeroizing<Vec<u8>>,
    counter: u64,
    digest: Sha256,
}

impl Encryptor {
    /// Starts a blob under `key`, drawing its 16-byte header nonce from `rng` (so even a key
    /// used twice by mistake gives unrelated payload keys).
    pub fn new<R: CryptoRng + ?Sized>(rng: &mut R, key: &AttachmentKey) -> Self {
        let mut nonce = [0u8; ATTACHMENT_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut header = [0u8; HEADER_LEN];
        header[0] = ATTACHMENT_FORMAT_VERSION;
        header[1..].copy_from_slice(&nonce);
        Self {
            cipher: key.cipher(&nonce),
            header: Some(header),
            buffer: Zeroizing::new(Vec::with_capacity(ATTACHMENT_CHUNK_LEN)),
            counter: 0,
            digest: Sha256::new(),
        }
    }

    /// Encrypts the next piece of plaintext, appending the blob bytes that are ready to
    /// `out` (the header first, then every chunk known not to be the last).
    pub fn push(&mut self, mut plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        self.write_header(out);
        loop {
            if self.buffer.len() == ATTACHMENT_CHUNK_LEN && !plaintext.is_empty() {
                let buffer = std::mem::take(&mut *self.buffer);
                let sealed = self.seal(&buffer, false, out);
                *self.buffer = buffer;
                self.buffer.clear();
                sealed?;
            }
            if self.buffer.is_empty() {
                // Whole chunks straight from the input, keeping one back if nothing follows.
                while plaintext.len() > ATTACHMENT_CHUNK_LEN {
                    let (chunk, rest) = plaintext.split_at(ATTACHMENT_CHUNK_LEN);
                    self.seal(chunk, false, out)?;
                    plaintext = rest;
                }
            }
            let take = (ATTACHMENT_CHUNK_LEN - self.buffer.len()).min(plaintext.len());
            let (head, rest) = plaintext.split_at(take);
            self.buffer.extend_from_slice(head);
            plaintext = rest;
            if plaintext.is_empty() {
                return Ok(());
            }
        }
    }

    /// Seals the last chunk, appends it to `out` and returns the digest of the whole blob.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<AttachmentDigest, AttachmentError> {
        self.write_header(out);
        let buffer = std::mem::take(&mut *self.buffer);
        let sealed = self.seal(&buffer, true, out);
        *self.buffer = buffer;
        sealed?;
        Ok(AttachmentDigest(self.digest.finalize().into()))
    }

    fn write_header(&mut self, out: &mut Vec<u8>) {
        if let Some(header) = self.header.take() {
            self.digest.update(header);
            out.extend_from_slice(&header);
        }
    }

    /// Appends chunk `counter` (ciphertext || tag) to `out`.
    fn seal(
        &mut self,
        plaintext: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), AttachmentError> {
        let next = self
            .counter
            .checked_add(1)
            .ok_or(AttachmentError::TooLong)?;
        let start = out.len();
        out.extend_from_slice(plaintext);
        // ChaCha20-Poly1305 fails only past 256 GiB in one call, far above one chunk.
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &chunk_nonce(self.counter, last),
                &[],
                out[start..].as_mut().into(),
            )
            .unwrap_or_default();
        out.extend_from_slice(&tag);
        self.digest.update(&out[start..]);
        self.counter = next;
        Ok(())
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("chunks_sealed", &self.counter)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Decryption

/// Decrypts one attachment incrementally: [`Decryptor::push`] the blob in pieces of any
/// size, then [`Decryptor::finish`]. Holds at most one sealed chunk.
pub struct Decryptor {
    /// The attachment key, until the header nonce arrives.
    key: Option<AttachmentKey>,
    cipher: Option<ChaCha20Poly1305>,
    /// Header bytes, then the sealed chunk being filled (at most one whole chunk): held
    /// back until we know whether more follows.
    buffer: Vec<u8>,
    counter: u64,
    digest: Sha256,
    expected: AttachmentDigest,
    failed: Option<AttachmentError>,
}

impl Decryptor {
    /// Starts decrypting the blob that `key` and `expected` (both from the message that
    /// announced it) name.
    pub fn new(key: &AttachmentKey, expected: AttachmentDigest) -> Self {
        Self {
            key: Some(AttachmentKey(key.0.clone())),
            cipher: None,
            buffer: Vec::with_capacity(SEALED_CHUNK_LEN),
            counter: 0,
            digest: Sha256::new(),
            expected,
            failed: None,
        }
    }

    /// Takes the next piece of the blob and appends the plaintext of every chunk that is
    /// now known not to be the last to `out`. On an error nothing more is appended, and the
    /// error repeats on every later call.
    pub fn push(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.push_inner(ciphertext, out);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    fn push_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        self.digest.update(input);
        if self.cipher.is_none() {
            let take = (HEADER_LEN - self.buffer.len()).min(input.len());
            self.buffer.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buffer.len() < HEADER_LEN {
                return Ok(());
            }
            if self.buffer[0] != ATTACHMENT_FORMAT_VERSION {
                return Err(AttachmentError::UnknownVersion(self.buffer[0]));
            }
            let mut nonce = [0u8; ATTACHMENT_NONCE_LEN];
            nonce.copy_from_slice(&self.buffer[1..HEADER_LEN]);
            let key = self.key.take().ok_or(AttachmentError::Truncated)?;
            self.cipher = Some(key.cipher(&nonce));
            self.buffer.clear();
        }
        loop {
            if self.buffer.is_empty() {
                // Whole chunks straight from the input, keeping one back if nothing follows.
                while input.len() > SEALED_CHUNK_LEN {
                    let (chunk, rest) = input.split_at(SEALED_CHUNK_LEN);
                    self.open_middle(chunk, out)?;
                    input = rest;
                }
            }
            let take = (SEALED_CHUNK_LEN - self.buffer.len()).min(input.len());
            self.buffer.extend_from_slice(&input[..take]);
            input = &input[take..];
            if input.is_empty() {
                return Ok(());
            }
            // A whole chunk with more after it: not the last.
            let buffer = std::mem::take(&mut self.buffer);
            let opened = self.open_middle(&buffer, out);
            self.buffer = buffer;
            self.buffer.clear();
            opened?;
        }
    }

    /// Checks that the blob ended with its last chunk and matches the digest, and appends
    /// the last chunk's plaintext to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.cipher.is_none() || self.buffer.len() < TAG_LEN {
            return Err(AttachmentError::Truncated);
        }
        let buffer = std::mem::take(&mut self.buffer);
        let start = out.len();
        if self.open(&buffer, true, out).is_err() {
            let mut scratch = Zeroizing::new(Vec::new());
            return Err(if self.open(&buffer, false, &mut scratch).is_ok() {
                AttachmentError::Truncated
            } else {
                AttachmentError::BadChunk {
                    index: self.counter,
                }
            });
        }
        let empty_after_others = out.len() == start && self.counter > 0;
        let digest: [u8; SHA256_LEN] = self.digest.finalize().into();
        let matches: bool = digest.ct_eq(&self.expected.0).into();
        if empty_after_others || !matches {
            out.truncate(start);
            return Err(if empty_after_others {
                AttachmentError::BadChunk {
                    index: self.counter,
                }
            } else {
                AttachmentError::DigestMismatch
            });
        }
        Ok(())
    }

    /// Opens a whole chunk that has more data after it. If it fails as a middle chunk but
    /// opens as the last one, the data after it is trailing junk.
    fn open_middle(&mut self, sealed: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        let start = out.len();
        if self.open(sealed, false, out).is_ok() {
            return self.advance();
        }
        let trailing = self.open(sealed, true, out).is_ok();
        zeroize_tail(out, start);
        Err(if trailing {
            AttachmentError::TrailingData
        } else {
            AttachmentError::BadChunk {
                index: self.counter,
            }
        })
    }

    fn advance(&mut self) -> Result<(), AttachmentError> {
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(AttachmentError::TooLong)?;
        Ok(())
    }

    /// Opens chunk `counter` (ciphertext || tag), appending its plaintext to `out`; on
    /// failure `out` is left as it was.
    fn open(&self, sealed: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), ()> {
        let cipher = self.cipher.as_ref().ok_or(())?;
        let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(())?;
        let (body, tag) = sealed.split_at(body_len);
        let tag = Tag::<ChaCha20Poly1305>::try_from(tag).map_err(|_| ())?;
        let start = out.len();
        out.extend_from_slice(body);
        match cipher.decrypt_inout_detached(
            &chunk_nonce(self.counter, last),
            &[],
            out[start..].as_mut().into(),
            &tag,
        ) {
            Ok(()) => Ok(()),
            Err(_) => {
                zeroize_tail(out, start);
                Err(())
            }
        }
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor")
            .field("chunks_opened", &self.counter)
            .field("expected", &self.expected)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Wipes and drops everything in `out` after `start`.
fn zeroize_tail(out: &mut Vec<u8>, start: usize) {
    out[start..].zeroize();
    out.truncate(start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    const CHUNK: usize = ATTACHMENT_CHUNK_LEN;

    fn plaintext(len: usize) -> Vec<u8> {
        (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
    }

    fn encrypt(key: &AttachmentKey, data: &[u8], piece: usize) -> (Vec<u8>, AttachmentDigest) {
        let mut rng = test_rng(data.len() as u64);
        let mut encryptor = Encryptor::new(&mut rng, key);
        let mut blob = Vec::new();
        for part in data.chunks(piece.max(1)) {
            encryptor.push(part, &mut blob).unwrap();
        }
        let digest = encryptor.finish(&mut blob).unwrap();
        (blob, digest)
    }

    fn decrypt(
        key: &AttachmentKey,
        digest: AttachmentDigest,
        blob: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>, AttachmentError> {
        let mut decryptor = Decryptor::new(key, digest);
        let mut out = Vec::new();
        for part in blob.chunks(piece.max(1)) {
            decryptor.push(part, &mut out)?;
        }
        decryptor.finish(&mut out)?;
        Ok(out)
    }

    fn digest_of(blob: &[u8]) -> AttachmentDigest {
        AttachmentDigest(Sha256::digest(blob).into())
    }

    /// Byte ranges of the chunks in a blob.
    fn chunk_ranges(blob: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut at = HEADER_LEN;
        while at < blob.len() {
            let end = (at + SEALED_CHUNK_LEN).min(blob.len());
            ranges.push(at..end);
            at = end;
        }
        ranges
    }

    #[test]
    fn round_trip_at_every_interesting_size() {
        let key = AttachmentKey::generate(&mut test_rng(70));
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            let data = plaintext(len);
            for piece in [1 << 20, CHUNK, 1000, 7] {
                if piece < 1000 && len > CHUNK + 1 {
                    continue; // byte-at-a-time over many chunks adds time, not coverage
                }
                let (blob, digest) = encrypt(&key, &data, piece);
                assert_eq!(blob.len() as u64, encrypted_len(len as u64).unwrap());
                assert_eq!(digest, digest_of(&blob));
                for read in [1 << 20, SEALED_CHUNK_LEN, SEALED_CHUNK_LEN + 1, 999, 13] {
                    if read < 999 && len > CHUNK + 1 {
                        continue;
                    }
                    assert_eq!(
                        decrypt(&key, digest, &blob, read).unwrap(),
                        data,
                        "len {len}, piece {piece}, read {read}"
                    );
                }
            }
        }
    }

    #[test]
    fn chunk_layout_matches_the_specification() {
        let key = AttachmentKey::from_bytes([9u8; 32]);
        let data = plaintext(CHUNK + 5);
        let (blob, _) = encrypt(&key, &data, CHUNK + 5);
        assert_eq!(blob[0], ATTACHMENT_FORMAT_VERSION);
        let nonce: [u8; ATTACHMENT_NONCE_LEN] = blob[1..HEADER_LEN].try_into().unwrap();
        let cipher = key.cipher(&nonce);
        let ranges = chunk_ranges(&blob);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].len(), SEALED_CHUNK_LEN);
        for (i, range) in ranges.into_iter().enumerate() {
            let mut body = blob[range.start..range.end - TAG_LEN].to_vec();
            let tag =
                Tag::<ChaCha20Poly1305>::try_from(&blob[range.end - TAG_LEN..range.end]).unwrap();
            let mut nonce = [0u8; 12];
            nonce[10] = u8::try_from(i).unwrap();
            nonce[11] = u8::from(i == 1);
            cipher
                .decrypt_inout_detached(&nonce.into(), &[], body.as_mut_slice().into(), &tag)
                .unwrap();
            assert_eq!(body, data[i * CHUNK..((i + 1) * CHUNK).min(data.len())]);
        }
    }

    #[test]
    fn truncation_at_every_chunk_boundary_fails() {
        let key = AttachmentKey::generate(&mut test_rng(71));
        for len in [0, CHUNK, 3 * CHUNK + 1] {
            let (blob, digest) = encrypt(&key, &plaintext(len), CHUNK);
            let mut cuts = vec![0, 1, HEADER_LEN, blob.len() - 1];
            cuts.extend(chunk_ranges(&blob).iter().map(|r| r.start));
            for cut in cuts {
                let truncated = &blob[..cut];
                assert!(decrypt(&key, digest, truncated, 4096).is_err(), "cut {cut}");
                // Even with a digest that matches the truncated blob, the structure fails.
                let result = decrypt(&key, digest_of(truncated), truncated, 4096);
                assert!(
                    matches!(
                        result,
                        Err(AttachmentError::Truncated | AttachmentError::BadChunk { .. })
                    ),
                    "cut {cut}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn reordered_and_spliced_chunks_fail() {
        let key = AttachmentKey::generate(&mut test_rng(72));
        let (blob, _) = encrypt(&key, &plaintext(3 * CHUNK + 10), CHUNK);
        let r = chunk_ranges(&blob);
        let swapped = [
            &blob[..HEADER_LEN],
            &blob[r[1].clone()],
            &blob[r[0].clone()],
            &blob[r[2].start..],
        ]
        .concat();
        assert_eq!(
            decrypt(&key, digest_of(&swapped), &swapped, 5000),
            Err(AttachmentError::BadChunk { index: 0 })
        );
        // A chunk dropped from the middle.
        let dropped = [&blob[..r[1].start], &blob[r[2].start..]].concat();
        assert_eq!(
            decrypt(&key, digest_of(&dropped), &dropped, 5000),
            Err(AttachmentError::BadChunk { index: 1 })
        );
        // The first chunk of another file under the same key.
        let (other, _) = encrypt(&key, &plaintext(3 * CHUNK + 11), CHUNK);
        let spliced = [&blob[..r[0].end], &other[r[1].clone()], &blob[r[2].start..]].concat();
        assert_eq!(
            decrypt(&key, digest_of(&spliced), &spliced, 5000),
            Err(AttachmentError::BadChunk { index: 1 })
        );
    }

    #[test]
    fn a_bit_flip_anywhere_fails() {
        let key = AttachmentKey::generate(&mut test_rng(73));
        let (blob, digest) = encrypt(&key, &plaintext(CHUNK + 100), CHUNK);
        // Every byte of the header, the tags, the chunk edges; a stride through the rest.
        let ranges = chunk_ranges(&blob);
        let mut positions: Vec<usize> = (0..HEADER_LEN + 40).collect();
        for r in &ranges {
            positions.extend(r.start..r.start + 8);
            positions.extend(r.end - TAG_LEN - 8..r.end);
        }
        positions.extend((0..blob.len()).step_by(997));
        for i in positions {
            let mut flipped = blob.clone();
            flipped[i] ^= 0x10;
            assert!(decrypt(&key, digest, &flipped, 20_000).is_err(), "byte {i}");
            assert!(
                decrypt(&key, digest_of(&flipped), &flipped, 20_000).is_err(),
                "byte {i} with a matching digest"
            );
        }
        let mut version = blob.clone();
        version[0] = 2;
        assert_eq!(
            decrypt(&key, digest_of(&version), &version, 100),
            Err(AttachmentError::UnknownVersion(2))
        );
    }

    #[test]
    fn trailing_data_fails() {
        let key = AttachmentKey::generate(&mut test_rng(74));
        for len in [0, 10, CHUNK, 2 * CHUNK] {
            let (blob, _) = encrypt(&key, &plaintext(len), CHUNK);
            for junk in [&[0u8][..], &[0u8; TAG_LEN], &vec![1u8; SEALED_CHUNK_LEN]] {
                let padded = [&blob[..], junk].concat();
                let result = decrypt(&key, digest_of(&padded), &padded, 3000);
                assert!(result.is_err(), "len {len}, junk {}", junk.len());
                if len % CHUNK == 0 && len > 0 {
                    // A full last chunk followed by anything is recognised as such.
                    assert_eq!(result, Err(AttachmentError::TrailingData));
                }
            }
            // A whole second blob appended.
            let twice = [&blob[..], &blob[HEADER_LEN..]].concat();
            assert!(decrypt(&key, digest_of(&twice), &twice, 3000).is_err());
        }
    }

    #[test]
    fn wrong_digest_or_key_fails_and_releases_no_last_chunk() {
        let key = AttachmentKey::generate(&mut test_rng(75));
        let (blob, digest) = encrypt(&key, &plaintext(100), 100);
        let mut wrong = digest;
        wrong.0[31] ^= 1;
        let mut decryptor = Decryptor::new(&key, wrong);
        let mut out = Vec::new();
        decryptor.push(&blob, &mut out).unwrap();
        assert_eq!(
            decryptor.finish(&mut out),
            Err(AttachmentError::DigestMismatch)
        );
        assert!(out.is_empty());
        let other = AttachmentKey::generate(&mut test_rng(76));
        assert_eq!(
            decrypt(&other, digest, &blob, 100),
            Err(AttachmentError::BadChunk { index: 0 })
        );
    }

    #[test]
    fn errors_repeat_and_debug_shows_no_key() {
        let key = AttachmentKey::from_bytes([0xAB; 32]);
        let (blob, digest) = encrypt(&key, &plaintext(2 * CHUNK + 1), CHUNK);
        let mut flipped = blob.clone();
        flipped[HEADER_LEN] ^= 1;
        let mut decryptor = Decryptor::new(&key, digest);
        let mut out = Vec::new();
        let error = decryptor.push(&flipped, &mut out).unwrap_err();
        assert_eq!(error, AttachmentError::BadChunk { index: 0 });
        assert!(out.is_empty());
        assert_eq!(decryptor.push(&[], &mut out), Err(error));
        let shown = format!("{key:?} {decryptor:?}");
        assert!(!shown.contains(&hex::encode(key.as_bytes())));
        assert!(!shown.to_lowercase().contains("abab"));
        assert_eq!(decryptor.finish(&mut out), Err(error));
    }

    #[test]
    fn encrypted_len_counts_every_tag() {
        let tag = TAG_LEN as u64;
        let header = HEADER_LEN as u64;
        let chunk = CHUNK as u64;
        assert_eq!(encrypted_len(0), Some(header + tag));
        assert_eq!(encrypted_len(chunk), Some(header + chunk + tag));
        assert_eq!(encrypted_len(chunk + 1), Some(header + chunk + 1 + 2 * tag));
        assert_eq!(encrypted_len(u64::MAX), None);
    }
}
