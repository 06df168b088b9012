//! Files: sent as encrypted attachments through the server's blob store.
//!
//! Sending ([`Client::send_file`](crate::Client::send_file)): the file is read and encrypted in 64 KiB chunks with a
//! fresh [`AttachmentKey`] ([`tacit_crypto::attachment`], the STREAM construction) into an
//! anonymous temporary file, so memory stays flat whatever the size. The ciphertext is
//! uploaded into a blob reserved at its exact size; an interrupted upload resumes from the
//! offset the server holds. Then an end-to-end encrypted message of kind `"file"` carries
//! the [`FileDescriptor`]: blob id, key, ciphertext digest, plaintext size and file name.
//! The server sees the blob and its size, never the key, the digest or the name.
//!
//! Receiving: the descriptor is stored sealed and announced as
//! [`IncomingKind::File`](crate::IncomingKind::File). [`Client::download_file`](crate::Client::download_file) streams the
//! blob, decrypts it chunk by chunk into a hidden temporary file in the destination
//! directory, and renames it into place (under a sanitized name that overwrites nothing)
//! only once every chunk authenticated, the last chunk came and the digest matched. On any
//! failure the temporary file is removed: nothing half-checked is ever left to open.
//!
//! A group send can carry the same descriptor: [`Client::upload_file`](crate::Client::upload_file) does everything but
//! the message, and the crate-internal `file_payload` builds the message's payload.
//!
//! This module holds the format and the local file handling; the `Client` methods that
//! upload, announce and download are in `client/files.rs`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tacit_crypto::attachment::{AttachmentDigest, AttachmentError, AttachmentKey, Encryptor};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::client::{Payload, rng};
use crate::transport::TransportError;

/// Plaintext read (and encrypted) at a time while sending.
pub(crate) const READ_PIECE: usize = 64 * 1024;
/// Longest file name kept, in bytes (most file systems allow 255).
const MAX_NAME_BYTES: usize = 200;
/// Consecutive failed attempts of a download before giving up.
pub(crate) const DOWNLOAD_ATTEMPTS: u32 = 6;

/// Why a file could not be sent or saved.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FileError {
    /// The path to send is not a readable regular file.
    #[error("cannot send {path}: {reason}")]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading the file to send, or writing the file being saved, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The downloaded blob is not the file the message announced: cut short, reordered,
    /// altered or replaced. Nothing was saved.
    #[error("the received file failed its integrity check ({0}); nothing was saved")]
    Integrity(AttachmentError),
    /// No file with this blob id was received.
    #[error("no received file with blob id {0}")]
    Unknown(String),
    /// A file message is malformed.
    #[error("malformed file message: {0}")]
    BadDescriptor(String),
    /// The blob could not be fetched (after retries).
    #[error("could not download the file: {0}")]
    Download(#[source] TransportError),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FileError {
    let what = what.into();
    move |source| FileError::Io { what, source }
}

/// How far a transfer got, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub stage: Stage,
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// The stages of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Encrypting the file locally (bytes of plaintext).
    Encrypting,
    /// Uploading the encrypted blob (bytes of ciphertext).
    Uploading,
    /// Downloading and decrypting (bytes of ciphertext).
    Downloading,
}

/// What a file message carries, inside the end-to-end encryption: everything needed to
/// fetch, check and open the file. Never sent to the server in clear.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct FileDescriptor {
    /// The blob's id on the server.
    pub(crate) blob_id: String,
    /// The attachment key, standard base64 (32 bytes).
    key: String,
    /// SHA-256 of the whole blob, standard base64 (32 bytes).
    digest: String,
    /// The plaintext size in bytes.
    pub(crate) size: u64,
    /// The file's name as the sender had it (without directories).
    pub(crate) name: String,
}

impl Drop for FileDescriptor {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for FileDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            blob_id,
            key: _,
            digest: _,
            size,
            name: _,
        } = self;
        f.debug_struct("FileDescriptor")
            .field("blob_id", blob_id)
            .field("size", size)
            .finish_non_exhaustive()
    }
}

impl FileDescriptor {
    pub(crate) fn new(
        blob_id: String,
        key: &AttachmentKey,
        digest: AttachmentDigest,
        size: u64,
        name: String,
    ) -> Self {
        Self {
            blob_id,
            key: STANDARD.encode(key.as_bytes()),
            digest: STANDARD.encode(digest.0),
            size,
            name,
        }
    }

    /// Checks a received descriptor: a well-formed blob id, key and digest, a name.
    pub(crate) fn validate(&self) -> Result<(), FileError> {
        let bad = |what: &str| FileError::BadDescriptor(what.to_owned());
        let id_ok = self.blob_id.len() == 22
            && self
                .blob_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(bad("blob id"));
        }
        self.key()?;
        self.digest()?;
        if self.name.is_empty() || self.name.len() > 4096 {
            return Err(bad("file name"));
        }
        tacit_api::blob_size(self.size).ok_or_else(|| bad("size"))?;
        Ok(())
    }

    pub(crate) fn key(&self) -> Result<AttachmentKey, FileError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(&self.key)
                .map_err(|_| FileError::BadDescriptor("key".into()))?,
        );
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| FileError::BadDescriptor("key".into()))?;
        Ok(AttachmentKey::from_bytes(array))
    }

    pub(crate) fn digest(&self) -> Result<AttachmentDigest, FileError> {
        let bytes = STANDARD
            .decode(&self.digest)
            .map_err(|_| FileError::BadDescriptor("digest".into()))?;
        bytes
            .try_into()
            .map(AttachmentDigest)
            .map_err(|_| FileError::BadDescriptor("digest".into()))
    }

    /// The blob's size, from the plaintext size.
    pub(crate) fn blob_len(&self) -> Result<u64, FileError> {
        tacit_api::blob_size(self.size).ok_or_else(|| FileError::BadDescriptor("size".into()))
    }
}

/// A file encrypted and uploaded, ready to be announced in a message (to a user with
/// [`Client::send_file`](crate::Client::send_file), or to a group).
#[derive(Debug)]
pub struct OutgoingFile {
    pub(crate) descriptor: FileDescriptor,
}

impl OutgoingFile {
    /// The blob's id on the server.
    pub fn blob_id(&self) -> &str {
        &self.descriptor.blob_id
    }

    /// The file's name (without directories).
    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// The plaintext size in bytes.
    pub fn size(&self) -> u64 {
        self.descriptor.size
    }
}

/// A file sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFile {
    /// The blob's id on the server.
    pub blob_id: String,
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The message's id (what receipts name).
    pub message_id: String,
}

/// The payload of a file message announcing `file` (for a copy to our own devices, `to`
/// names the conversation's other party). A group send wraps the same descriptor.
pub(crate) fn file_payload(file: &OutgoingFile, to: Option<&str>, uid: &str) -> Payload {
    Payload::file(file.descriptor.clone(), to, uid)
}

/// A file name that is safe to create in a directory: no directories (the last path
/// component only), no `..`, no control or reserved characters, not hidden, not empty, at
/// most 200 bytes (the extension kept).
pub fn sanitize_file_name(name: &str) -> String {
    let last = name
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let mut clean: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    clean = clean.trim().trim_end_matches('.').to_owned();
    if clean.starts_with('.') {
        clean.replace_range(..1, "_");
    }
    if clean.is_empty() || clean.chars().all(|c| c == '.' || c == '_') {
        clean = format!("file{clean}");
    }
    if clean.len() > MAX_NAME_BYTES {
        let (stem, ext) = split_extension(&clean);
        let ext: String = ext.chars().take(16).collect();
        let mut cut = MAX_NAME_BYTES.saturating_sub(ext.len());
        while !stem.is_char_boundary(cut.min(stem.len())) {
            cut -= 1;
        }
        clean = format!("{}{ext}", &stem[..cut.min(stem.len())]);
    }
    clean
}

/// `("report", ".pdf")` from `"report.pdf"`; no extension for `"README"`.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// The `n`th name to try in a directory: the name, then `name (1).ext`, `name (2).ext`, ...
pub(crate) fn candidate(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let (stem, ext) = split_extension(name);
    format!("{stem} ({n}){ext}")
}

/// Drives `work` while reporting what `watch` says, then reports the final value.
pub(crate) async fn with_progress<T>(
    work: impl std::future::Future<Output = T>,
    mut watch: tokio::sync::watch::Receiver<u64>,
    mut report: impl FnMut(u64),
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                report(*watch.borrow());
                return out;
            }
            Ok(()) = watch.changed() => report(*watch.borrow_and_update()),
        }
    }
}

/// Encrypts `path` into an anonymous temporary file; returns it with the key, the digest
/// and the plaintext size. Blocking: run it on a blocking thread.
pub(crate) fn encrypt_file(
    path: &Path,
    progress: &tokio::sync::watch::Sender<u64>,
) -> Result<(std::fs::File, AttachmentKey, AttachmentDigest, u64), FileError> {
    let mut input = std::fs::File::open(path).map_err(|e| FileError::NotAFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut output = std::io::BufWriter::with_capacity(
        READ_PIECE * 2,
        tempfile::tempfile().map_err(io("creating a temporary file"))?,
    );
    let mut rng = rng();
    let key = AttachmentKey::generate(&mut rng);
    let mut encryptor = Encryptor::new(&mut rng, &key);
    let mut plaintext = Zeroizing::new(vec![0u8; READ_PIECE]);
    let mut sealed = Vec::with_capacity(READ_PIECE + 64);
    let mut size = 0u64;
    loop {
        let n = match input.read(&mut plaintext) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        encryptor
            .push(&plaintext[..n], &mut sealed)
            .map_err(FileError::Integrity)?;
        output
            .write_all(&sealed)
            .map_err(io("writing the encrypted copy"))?;
        sealed.clear();
        size += n as u64;
        let _ = progress.send(size);
    }
    let digest = encryptor
        .finish(&mut sealed)
        .map_err(FileError::Integrity)?;
    output
        .write_all(&sealed)
        .map_err(io("writing the encrypted copy"))?;
    let file = output
        .into_inner()
        .map_err(|e| io("writing the encrypted copy")(e.into_error()))?;
    Ok((file, key, digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacit_crypto::attachment::{self, Decryptor};

    #[test]
    fn file_names_are_made_safe() {
        for (given, safe) in [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("/abs/path/x.txt", "x.txt"),
            ("dir\\win.exe", "win.exe"),
            ("..", "file"),
            (".", "file"),
            ("", "file"),
            ("...", "file"),
            ("_", "file_"),
            (".bashrc", "_bashrc"),
            ("a\u{0}b\nc\u{1b}[31m.txt", "a_b_c_[31m.txt"),
            ("what?*<>|:\".txt", "what_______.txt"),
            ("trailing. ", "trailing"),
            ("dir/", "dir"),
            ("naïve résumé.txt", "naïve résumé.txt"),
        ] {
            assert_eq!(sanitize_file_name(given), safe, "{given:?}");
        }
        let long = format!("{}.tar.gz", "é".repeat(300));
        let safe = sanitize_file_name(&long);
        assert!(safe.len() <= MAX_NAME_BYTES, "{}", safe.len());
        assert!(safe.ends_with(".gz"));
        for name in ["x", "../y", "a/b/../..", "..\\..", "\u{0}"] {
            let safe = sanitize_file_name(name);
            assert!(!safe.contains('/') && !safe.contains('\\') && safe != ".." && safe != ".");
            assert!(!safe.chars().any(char::is_control));
        }
    }

    #[test]
    fn candidates_add_a_counter_before_the_extension() {
        assert_eq!(candidate("a.txt", 0), "a.txt");
        assert_eq!(candidate("a.txt", 2), "a (2).txt");
        assert_eq!(candidate("README", 1), "README (1)");
        assert_eq!(candidate("_bashrc", 1), "_bashrc (1)");
    }

    #[test]
    fn descriptors_hide_their_secrets_and_are_checked() {
        let key = AttachmentKey::from_bytes([7; 32]);
        let d = FileDescriptor::new(
            "AAAAAAAAAAAAAAAAAAAAAA".into(),
            &key,
            AttachmentDigest([9; 32]),
            5,
            "secret-name.txt".into(),
        );
        d.validate().unwrap();
        let shown = format!("{d:?}");
        assert!(
            !shown.contains("secret-name") && !shown.contains(&d.key),
            "{shown}"
        );
        assert_eq!(d.key().unwrap().as_bytes(), &[7; 32]);
        let mut bad = d.clone();
        bad.blob_id = "../../x".into();
        assert!(bad.validate().is_err());
        let mut bad = d.clone();
        bad.key = STANDARD.encode([1u8; 31]);
        assert!(bad.validate().is_err());
        let mut bad = d;
        bad.digest = "!!".into();
        assert!(bad.validate().is_err());
    }

    /// The encrypted copy decrypts to the file, through the same code paths as a download.
    #[test]
    fn encrypt_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| u8::try_from(i % 253).unwrap())
            .collect();
        std::fs::write(&path, &data).unwrap();
        let (tx, _rx) = tokio::sync::watch::channel(0);
        let (mut file, key, digest, size) = encrypt_file(&path, &tx).unwrap();
        assert_eq!(size, 200_000);
        assert_eq!(*tx.borrow(), 200_000);
        use std::io::Seek as _;
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut blob = Vec::new();
        file.read_to_end(&mut blob).unwrap();
        assert_eq!(blob.len() as u64, attachment::encrypted_len(size).unwrap());
        assert_eq!(blob.len() as u64, tacit_api::blob_size(size).unwrap());
        let mut decryptor = Decryptor::new(&key, digest);
        let mut out = Vec::new();
        decryptor.push(&blob, &mut out).unwrap();
        decryptor.finish(&mut out).unwrap();
        assert_eq!(out, data);
    }

    /// The blob size the server allows and the client reserves (`tacit_api::blob_size`) is
    /// the length `tacit-crypto`'s attachment encryption produces, at every boundary.
    #[test]
    fn the_shared_blob_size_is_the_attachment_formats() {
        let chunk = attachment::SEALED_CHUNK_LEN as u64 - 16;
        for n in [
            0,
            1,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk,
            3 * chunk + 17,
            1 << 32,
        ] {
            assert_eq!(tacit_api::blob_size(n), attachment::encrypted_len(n), "{n}");
        }
        assert_eq!(tacit_api::blob_size(u64::MAX), None);
        assert_eq!(attachment::encrypted_len(u64::MAX), None);
        // And an actual encryption of a few sizes comes out that long.
        let mut rng = crate::client::rng();
        let key = attachment::AttachmentKey::generate(&mut rng);
        for n in [0usize, 1, 65_535, 65_536, 65_537, 140_000] {
            let mut encryptor = attachment::Encryptor::new(&mut rng, &key);
            let mut blob = Vec::new();
            encryptor.push(&vec![7u8; n], &mut blob).unwrap();
            encryptor.finish(&mut blob).unwrap();
            assert_eq!(
                Some(blob.len() as u64),
                tacit_api::blob_size(n as u64),
                "{n}"
            );
        }
    }
}
