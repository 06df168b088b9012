//! The blob directory: one file per blob, `<dir>/<id>.part` while it is uploaded and
//! `<dir>/<id>` once complete.
//!
//! Bytes go straight from the request body to the partial file and never gather in
//! memory; when the last byte arrives the file is fsynced and renamed, which is what makes
//! the blob complete. Whether a blob is complete is told by its file alone, so a crash
//! between the rename and anything else leaves nothing inconsistent. The records (who
//! uploaded a blob, its size, its expiry) are in the database (`store/blobs/mod.rs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use crate::store::BlobId;

/// The blob directory and the uploads under way in this process.
#[derive(Debug)]
pub struct BlobFiles {
    dir: PathBuf,
    /// Blobs a `PATCH` is writing right now: a second writer is refused, not interleaved.
    writing: Mutex<HashSet<BlobId>>,
}

/// Marks a blob as being written until dropped.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    files: &'a BlobFiles,
    id: BlobId,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.files.lock().remove(&self.id);
    }
}

/// A partial upload opened for appending.
#[derive(Debug)]
pub struct Appender {
    file: tokio::fs::File,
}

impl Appender {
    /// Append bytes.
    pub async fn write(&mut self, piece: &[u8]) -> std::io::Result<()> {
        self.file.write_all(piece).await
    }
}

/// A complete blob opened for reading, positioned at the first byte to send.
#[derive(Debug)]
pub struct BlobRead {
    /// The file, seeked to `start`.
    pub file: tokio::fs::File,
    /// The first byte sent.
    pub start: u64,
    /// How many bytes to send from `start`.
    pub len: u64,
    /// The whole blob's size.
    pub size: u64,
}

/// What opening a complete blob for a range found.
#[derive(Debug)]
pub enum Opened {
    /// Ready to send.
    Read(BlobRead),
    /// No complete file.
    NotFound,
    /// The range lies outside the file, which has this size.
    Unsatisfiable(u64),
}

impl BlobFiles {
    /// The blobs under `dir` (created on the first reservation).
    #[must_use]
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            writing: Mutex::new(HashSet::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<BlobId>> {
        self.writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Create the directory (mode 0700) if needed.
    pub async fn create_dir(&self) -> std::io::Result<()> {
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .await
    }

    /// Mark `id` as being written, unless another request writes it already.
    ///
    /// The set's lock is released before a guard can exist: a guard dropped while the lock
    /// is held would take it again on the same thread (a deadlock of the whole server).
    pub fn try_write(&self, id: BlobId) -> Option<WriteGuard<'_>> {
        let inserted = self.lock().insert(id);
        inserted.then(|| WriteGuard { files: self, id })
    }

    /// The complete blob's path.
    fn complete(&self, id: BlobId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The partial upload's path.
    fn partial(&self, id: BlobId) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    /// Whether the blob is complete.
    pub async fn is_complete(&self, id: BlobId) -> std::io::Result<bool> {
        exists(&self.complete(id)).await
    }

    /// How many bytes of the blob the server holds: all of them once complete.
    pub async fn offset(&self, id: BlobId, size: u64) -> std::io::Result<u64> {
        if exists(&self.complete(id)).await? {
            return Ok(size);
        }
        match tokio::fs::metadata(self.partial(id)).await {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Open the partial upload for appending (creating it, mode 0600).
    pub async fn append(&self, id: BlobId) -> std::io::Result<Appender> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.partial(id))
            .await?;
        Ok(Appender { file })
    }

    /// Flush what was appended; once the upload is `complete`, make the partial upload the
    /// complete blob: fsync the file, rename it, fsync the directory. `Ok(false)` when the
    /// partial file was purged (expired) while it was being written.
    pub async fn finish(
        &self,
        id: BlobId,
        appender: Appender,
        complete: bool,
    ) -> std::io::Result<bool> {
        let Appender { mut file } = appender;
        file.flush().await?;
        if !complete {
            return Ok(true);
        }
        file.sync_all().await?;
        drop(file);
        match tokio::fs::rename(self.partial(id), self.complete(id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(std::io::Error::other)??;
        Ok(true)
    }

    /// Open a complete blob from byte `start` up to and including `end` (the blob's last
    /// byte if `None` or past it).
    pub async fn open(&self, id: BlobId, start: u64, end: Option<u64>) -> std::io::Result<Opened> {
        let mut file = match tokio::fs::File::open(self.complete(id)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Opened::NotFound),
            Err(e) => return Err(e),
        };
        // The file's own length: a blob damaged on disk is served as it is, and the client,
        // which checks every chunk and the digest, refuses it with the precise reason.
        let size = file.metadata().await?.len();
        if start >= size || end.is_some_and(|end| end < start) {
            return Ok(Opened::Unsatisfiable(size));
        }
        let last = end.map_or(size - 1, |end| end.min(size - 1));
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start)).await?;
        }
        Ok(Opened::Read(BlobRead {
            file,
            start,
            len: last - start + 1,
            size,
        }))
    }

    /// Deletes both files of a blob (whichever exist).
    pub async fn remove(&self, id: BlobId) -> std::io::Result<()> {
        for path in [self.partial(id), self.complete(id)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

async fn exists(path: &Path) -> std::io::Result<bool> {
    tokio::fs::try_exists(path).await
}
