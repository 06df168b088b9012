//! Files: sent as encrypted attachments through the server's blob store.
//!
//! Sending ([`Client::send_file`]): the file is read and encrypted in 64 KiB chunks with a
//! fresh [`AttachmentKey`] ([`tacit_crypto::attachment`], the STREAM construction) into an
//! anonymous temporary file, so memory stays flat whatever the size. The ciphertext is
//! uploaded into a blob reserved at its exact size; an interrupted upload resumes from the
//! offset the server holds. Then an end-to-end encrypted message of kind `"file"` carries
//! the [`FileDescriptor`]: blob id, key, ciphertext digest, plaintext size and file name.
//! The server sees the blob and its size, never the key, the digest or the name.
//!
//! Receiving: the descriptor is stored sealed and announced as
//! [`IncomingKind::File`]. [`Client::download_file`] streams the
//! blob, decrypts it chunk by chunk into a hidden temporary file in the destination
//! directory, and renames it into place (under a sanitized name that overwrites nothing)
//! only once every chunk authenticated, the last chunk came and the digest matched. On any
//! failure the temporary file is removed: nothing half-checked is ever left to open.
//!
//! A group send can carry the same descriptor: [`Client::upload_file`] does everything but
//! the message, and the crate-internal `file_payload` builds the message's payload.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tacit_crypto::attachment::{
    self, AttachmentDigest, AttachmentError, AttachmentKey, Decryptor, Encryptor,
};
use thiserror::Error;
use tokio::io::AsyncWriteExt as _;
use zeroize::{Zeroize, Zeroizing};

use crate::client::{Client, ClientError, IncomingKind, Inconsistent, Payload, random_id, rng};
use crate::store::{Conversation, NewFile, StoreError};
use crate::transport::TransportError;

/// Plaintext read (and encrypted) at a time while sending.
const READ_PIECE: usize = 64 * 1024;
/// Longest file name kept, in bytes (most file systems allow 255).
const MAX_NAME_BYTES: usize = 200;
/// Consecutive failed attempts of a download before giving up.
const DOWNLOAD_ATTEMPTS: u32 = 6;

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

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FileError {
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
    fn new(
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
    fn validate(&self) -> Result<(), FileError> {
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

    fn key(&self) -> Result<AttachmentKey, FileError> {
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

    fn digest(&self) -> Result<AttachmentDigest, FileError> {
        let bytes = STANDARD
            .decode(&self.digest)
            .map_err(|_| FileError::BadDescriptor("digest".into()))?;
        bytes
            .try_into()
            .map(AttachmentDigest)
            .map_err(|_| FileError::BadDescriptor("digest".into()))
    }

    /// The blob's size, from the plaintext size.
    fn blob_len(&self) -> Result<u64, FileError> {
        tacit_api::blob_size(self.size).ok_or_else(|| FileError::BadDescriptor("size".into()))
    }
}

/// A file encrypted and uploaded, ready to be announced in a message (to a user with
/// [`Client::send_file`], or to a group).
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
fn candidate(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let (stem, ext) = split_extension(name);
    format!("{stem} ({n}){ext}")
}

/// Drives `work` while reporting what `watch` says, then reports the final value.
async fn with_progress<T>(
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
fn encrypt_file(
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

impl Client {
    /// Encrypts the file at `path` and uploads it (resuming after interruptions), without
    /// announcing it: [`Client::send_file`] does both for a user. `progress` hears about
    /// the encryption, then the upload.
    pub async fn upload_file(
        &self,
        path: &Path,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<OutgoingFile, ClientError> {
        let not_a_file = |reason: &str| FileError::NotAFile {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| not_a_file(&e.to_string()))?;
        if !meta.is_file() {
            return Err(not_a_file("not a regular file").into());
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| not_a_file("no file name"))?;
        let total = meta.len();

        let (sent, watch) = tokio::sync::watch::channel(0);
        let owned = path.to_owned();
        let job = tokio::task::spawn_blocking(move || encrypt_file(&owned, &sent));
        let encrypted = with_progress(job, watch, |done| {
            progress(Progress {
                stage: Stage::Encrypting,
                done,
                total,
            });
        })
        .await
        .map_err(|e| io("encrypting")(std::io::Error::other(e)))?;
        let (file, key, digest, size) = encrypted?;
        let blob_len = tacit_api::blob_size(size).ok_or_else(|| not_a_file("too large"))?;

        let blob = self.transport.create_blob(blob_len).await?;
        self.transport
            .upload_blob(&blob.blob_id, &file, blob_len, &mut |done| {
                progress(Progress {
                    stage: Stage::Uploading,
                    done,
                    total: blob_len,
                });
            })
            .await?;
        Ok(OutgoingFile {
            descriptor: FileDescriptor::new(blob.blob_id, &key, digest, size, name),
        })
    }

    /// Sends the file at `path` to every device of `username` (and a copy to our other
    /// devices): encrypts and uploads it, then announces it in an end-to-end encrypted
    /// message carrying its key and digest.
    pub async fn send_file(
        &mut self,
        username: &str,
        path: &Path,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<SentFile, ClientError> {
        let file = self.upload_file(path, progress).await?;
        let uid = random_id()?;
        let time = crate::client::now_ms();
        let to_them = file_payload(&file, None, &uid).at(time).to_bytes()?;
        let to_us = file_payload(&file, Some(username), &uid).at(time);
        let to_us = Zeroizing::new(to_us.to_bytes()?);
        let to_them = Zeroizing::new(to_them);
        self.send_payload(username, &to_them, &to_us).await?;
        let device = self.device_id();
        let me = self.username().to_owned();
        let conversation = Conversation::direct(username);
        self.record_file(
            &file.descriptor,
            &me,
            &conversation,
            true,
            device,
            time,
            &uid,
        )
        .await?;
        Ok(SentFile {
            blob_id: file.descriptor.blob_id.clone(),
            name: file.descriptor.name.clone(),
            size: file.descriptor.size,
            message_id: uid,
        })
    }

    /// Stores a file's descriptor (sealed), keyed by the message that announced it, and a
    /// line in the conversation's history. A blob id that another sender already announced
    /// fails with [`StoreError::BlobConflict`] and nothing is stored.
    #[allow(clippy::too_many_arguments)] // each names a part of the message's key
    async fn record_file(
        &self,
        descriptor: &FileDescriptor,
        sender: &str,
        peer: &Conversation,
        outgoing: bool,
        device: u32,
        time: i64,
        uid: &str,
    ) -> Result<(), ClientError> {
        let sealed = Zeroizing::new(serde_json::to_vec(descriptor).map_err(Inconsistent::from)?);
        let new = self
            .store
            .put_file(&NewFile {
                blob_id: &descriptor.blob_id,
                sender,
                peer,
                message_id: uid,
                outgoing,
                sender_device: device,
                sent_at: time,
                descriptor: &sealed,
            })
            .await?;
        if !new {
            // A duplicate of a message already recorded: its history line is there.
            return Ok(());
        }
        let uid = Some(uid);
        let line = format!(
            "[file] {} ({} bytes)",
            sanitize_file_name(&descriptor.name),
            descriptor.size
        );
        self.store
            .add_message(peer, outgoing, device, time, line.as_bytes(), uid)
            .await?;
        Ok(())
    }

    /// Handles a file message from `sender`'s `device` in the conversation `peer`: checks
    /// the descriptor and stores it, keyed by the message. A blob id that another sender
    /// already announced is reported as a failed message (nothing is stored).
    #[allow(clippy::too_many_arguments)] // each names a part of the message's key
    pub(crate) async fn receive_file(
        &self,
        sender: &str,
        peer: &Conversation,
        outgoing: bool,
        device: u32,
        time: i64,
        uid: Option<String>,
        descriptor: Option<FileDescriptor>,
    ) -> Result<IncomingKind, ClientError> {
        let checked = descriptor
            .ok_or_else(|| FileError::BadDescriptor("no descriptor".into()))
            .and_then(|d| d.validate().map(|()| d))
            .and_then(|d| match &uid {
                Some(uid) => Ok((d, uid.clone())),
                None => Err(FileError::BadDescriptor("no message id".into())),
            });
        let (descriptor, message_id) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                return Ok(IncomingKind::Failed {
                    error: error.to_string(),
                });
            }
        };
        let recorded = self
            .record_file(
                &descriptor,
                sender,
                peer,
                outgoing,
                device,
                time,
                &message_id,
            )
            .await;
        match recorded {
            Ok(()) => {}
            Err(ClientError::Store(error @ StoreError::BlobConflict { .. })) => {
                return Ok(IncomingKind::Failed {
                    error: error.to_string(),
                });
            }
            Err(other) => return Err(other),
        }
        Ok(IncomingKind::File {
            peer: peer.to_string(),
            conversation: peer.clone(),
            name: sanitize_file_name(&descriptor.name),
            size: descriptor.size,
            blob_id: descriptor.blob_id.clone(),
            message_id: uid,
        })
    }

    /// Downloads the file of `blob_id` (from a received file message) into `dir`: streams
    /// and decrypts it into a hidden temporary file there, checks every chunk, the end and
    /// the digest, and only then gives it its name (the sender's, sanitized, with ` (1)`
    /// and so on added rather than overwriting). Returns where it was saved. On any failure
    /// nothing is left in `dir`. A dropped connection is resumed where it stopped.
    pub async fn download_file(
        &self,
        blob_id: &str,
        dir: &Path,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<PathBuf, ClientError> {
        let stored = self
            .store
            .file(blob_id)
            .await?
            .ok_or_else(|| FileError::Unknown(blob_id.to_owned()))?;
        let descriptor: FileDescriptor = serde_json::from_slice(&stored.descriptor)
            .map_err(|e| FileError::BadDescriptor(e.to_string()))?;
        descriptor.validate()?;
        let key = descriptor.key()?;
        let expected_len = descriptor.blob_len()?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io(format!("creating {}", dir.display())))?;
        // Removed when dropped, so every early return cleans up.
        let temp = tempfile::Builder::new()
            .prefix(".tacit-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(io(format!("creating a file in {}", dir.display())))?;
        let mut out = tokio::fs::File::from_std(
            temp.as_file()
                .try_clone()
                .map_err(io("opening the temporary file"))?,
        );
        let mut decryptor = Decryptor::new(&key, descriptor.digest()?);
        let mut plaintext = Zeroizing::new(Vec::with_capacity(attachment::SEALED_CHUNK_LEN * 2));
        let mut received = 0u64;
        let mut failures = 0;
        let report = |done| Progress {
            stage: Stage::Downloading,
            done,
            total: expected_len,
        };
        progress(report(0));
        'attempts: while received < expected_len {
            let mut download = match self.transport.download_blob(blob_id, received).await {
                Ok(download) => download,
                Err(error) if error.is_transient() && failures + 1 < DOWNLOAD_ATTEMPTS => {
                    failures += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200 << failures)).await;
                    continue;
                }
                // A blob the server cut short on disk: what came is checked below.
                Err(TransportError::Api { code, .. })
                    if code == "range_not_satisfiable" && received > 0 =>
                {
                    break;
                }
                Err(error) => return Err(FileError::Download(error).into()),
            };
            loop {
                let piece = match download.chunk().await {
                    Ok(Some(piece)) => piece,
                    Ok(None) => break 'attempts,
                    Err(error) if error.is_transient() && failures + 1 < DOWNLOAD_ATTEMPTS => {
                        failures += 1;
                        continue 'attempts;
                    }
                    Err(error) => return Err(FileError::Download(error).into()),
                };
                let piece = piece.as_ref();
                received += piece.len() as u64;
                if received > expected_len {
                    return Err(FileError::Integrity(AttachmentError::TrailingData).into());
                }
                decryptor
                    .push(piece, &mut plaintext)
                    .map_err(FileError::Integrity)?;
                out.write_all(&plaintext)
                    .await
                    .map_err(io("writing the file"))?;
                plaintext.zeroize();
                failures = 0;
                progress(report(received));
            }
        }
        decryptor
            .finish(&mut plaintext)
            .map_err(FileError::Integrity)?;
        out.write_all(&plaintext)
            .await
            .map_err(io("writing the file"))?;
        plaintext.zeroize();
        out.flush().await.map_err(io("writing the file"))?;
        out.sync_all().await.map_err(io("writing the file"))?;
        drop(out);
        let name = sanitize_file_name(&descriptor.name);
        let mut temp = temp;
        for n in 0.. {
            let target = dir.join(candidate(&name, n));
            match temp.persist_noclobber(&target) {
                Ok(_) => return Ok(target),
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => {
                    temp = e.file;
                }
                Err(e) => {
                    return Err(io(format!("saving {}", target.display()))(e.error).into());
                }
            }
        }
        unreachable!("the loop returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::offline_client;

    fn descriptor(blob_id: &str, key: u8, name: &str) -> FileDescriptor {
        FileDescriptor::new(
            blob_id.into(),
            &AttachmentKey::from_bytes([key; 32]),
            AttachmentDigest([key; 32]),
            5,
            name.into(),
        )
    }

    /// The server sees a blob id when it is reserved; a message from another account
    /// naming that blob id with its own key and digest, delivered first, must not become
    /// the record of the real sender's file.
    #[tokio::test]
    async fn a_blob_id_already_announced_by_another_sender_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bob = offline_client(dir.path(), "bob").await;
        let blob = "AAAAAAAAAAAAAAAAAAAAAA";
        let mallory = bob
            .receive_file(
                "mallory",
                &Conversation::direct("mallory"),
                false,
                1,
                1,
                Some("m1".into()),
                Some(descriptor(blob, 1, "evil.pdf")),
            )
            .await
            .unwrap();
        assert!(matches!(mallory, IncomingKind::File { .. }), "{mallory:?}");
        let alice = bob
            .receive_file(
                "alice",
                &Conversation::direct("alice"),
                false,
                1,
                2,
                Some("a1".into()),
                Some(descriptor(blob, 2, "report.pdf")),
            )
            .await
            .unwrap();
        let IncomingKind::Failed { error } = alice else {
            panic!(
                "Alice's announcement of a blob id Mallory already named was accepted: {alice:?}"
            );
        };
        assert!(error.contains("already announced by mallory"), "{error}");
        // The one record of the blob is Mallory's, and says so.
        let stored = bob.store.file(blob).await.unwrap().unwrap();
        assert_eq!(stored.sender.as_deref(), Some("mallory"));
        assert_eq!(stored.peer, Conversation::direct("mallory"));
        // Alice's conversation shows no file that is really Mallory's.
        assert!(
            bob.store
                .history(&Conversation::direct("alice"))
                .await
                .unwrap()
                .is_empty()
        );
    }

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
