//! Sending and receiving files: the [`Client`] side of [`crate::files`] (the descriptor,
//! the encryption into a temporary file, names made safe). Uploads resume from the offset
//! the server holds; downloads are checked chunk by chunk and by digest before the file is
//! renamed into place.

use std::path::{Path, PathBuf};

use tacit_crypto::attachment::{self, AttachmentError, Decryptor};
use tokio::io::AsyncWriteExt as _;
use zeroize::Zeroize as _;

use super::*;
use crate::files::{
    DOWNLOAD_ATTEMPTS, FileDescriptor, FileError, OutgoingFile, Progress, SentFile, Stage,
    candidate, encrypt_file, file_payload, io, sanitize_file_name, with_progress,
};
use crate::store::NewFile;

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
        let conversation = Conversation::direct(username);
        let timer = self.outgoing_timer(&conversation).await?;
        let to_them = file_payload(&file, None, &uid)
            .at(time)
            .expiring(timer)
            .to_bytes()?;
        let to_us = file_payload(&file, Some(username), &uid)
            .at(time)
            .expiring(timer);
        let to_us = Zeroizing::new(to_us.to_bytes()?);
        let to_them = Zeroizing::new(to_them);
        self.send_payload(username, &to_them, &to_us).await?;
        let device = self.device_id();
        let me = self.username().to_owned();
        let expires_at = self.expiry_of(&conversation, time, timer).await?;
        self.record_file(
            &file.descriptor,
            &me,
            &conversation,
            true,
            device,
            (time, expires_at),
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
        device: DeviceId,
        (time, expires_at): (i64, Option<i64>),
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
                expires_at,
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
            .add_message(
                peer,
                outgoing,
                device,
                time,
                line.as_bytes(),
                uid,
                expires_at,
            )
            .await?;
        Ok(())
    }

    /// Handles a file message from `sender`'s `device` in the conversation `peer`, sent at
    /// `time` under the disappearing-message `timer` it carries: checks the descriptor and
    /// stores it, keyed by the message, until the timer runs out (one already out is not
    /// stored: [`IncomingKind::Expired`]). A blob id that another sender
    /// already announced is reported as a failed message (nothing is stored).
    #[allow(clippy::too_many_arguments)] // each names a part of the message's key
    pub(crate) async fn receive_file(
        &self,
        sender: &str,
        peer: &Conversation,
        outgoing: bool,
        device: DeviceId,
        (time, timer): (i64, Option<u64>),
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
        let Some(expires_at) = self.keep_until(peer, sender, time, timer).await? else {
            return Ok(IncomingKind::Expired {
                peer: peer.to_string(),
            });
        };
        let recorded = self
            .record_file(
                &descriptor,
                sender,
                peer,
                outgoing,
                device,
                (time, expires_at),
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
        // Absolute, so that a disappearing file's copy is found by a purge run from another
        // working directory.
        let dir = &std::fs::canonicalize(dir).map_err(io(format!("locating {}", dir.display())))?;
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
                Ok(_) => {
                    // A file that disappears takes its saved copy with it.
                    if stored.expires_at.is_some() {
                        self.store.set_saved(blob_id, &target).await?;
                    }
                    return Ok(target);
                }
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
    use tacit_crypto::attachment::{AttachmentDigest, AttachmentKey};

    /// A descriptor of `blob_id` with the test key `key`.
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
                DeviceId(1),
                (1, None),
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
                DeviceId(1),
                (2, None),
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
}
