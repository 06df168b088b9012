//! The blob rules: encrypted attachments as opaque files, uploaded resumably and streamed.
//!
//! A blob is reserved with its exact size (checked against the per-file limit and the
//! account's quota), then written by `PATCH` requests at the offset the server holds, in
//! the manner of the tus protocol. The files themselves (partial while uploaded, renamed
//! when complete) are the store's: [`crate::store::BlobFiles`]; this module decides who may
//! do what, checks sizes and offsets, and reads the request body into the file.
//!
//! The server never learns what a blob holds: the client encrypted it, and the key and
//! digest travel inside an end-to-end encrypted message. Holding the id (16 random bytes)
//! is what lets any authenticated device fetch a complete blob; only the uploading account
//! may see an upload's progress, write to it or delete it.

use crate::store::AccountId;
use futures_util::{Stream, StreamExt as _};
use tacit_api::{CreateBlobRequest, CreateBlobResponse, Timestamp};
use tracing::{debug, info, warn};

use super::{AuthedDevice, Services, now, random_secret};
use crate::error::ApiError;
use crate::store::{BlobId, BlobRead, BlobRecord, NewBlob, Opened, StoreError};

/// The largest blob that carries a file of `max_file_bytes` ([`tacit_api::blob_size`]).
#[must_use]
pub fn max_blob_bytes(max_file_bytes: u64) -> u64 {
    tacit_api::blob_size(max_file_bytes).unwrap_or(u64::MAX)
}

/// A blob id from its wire form, or `NotFound` for anything that is not one.
fn blob_id(text: &str) -> Result<BlobId, ApiError> {
    BlobId::parse(text).ok_or(ApiError::NotFound("blob"))
}

/// Out of file descriptors (EMFILE, ENFILE): a temporary condition of the process.
const NO_DESCRIPTORS: [i32; 2] = [24, 23];

fn io_error(e: std::io::Error) -> ApiError {
    match e.kind() {
        // The bytes written so far stay in the partial upload; the client resumes later.
        std::io::ErrorKind::StorageFull => ApiError::StorageFull,
        _ if e
            .raw_os_error()
            .is_some_and(|c| NO_DESCRIPTORS.contains(&c)) =>
        {
            tracing::warn!("out of file descriptors for a blob file");
            ApiError::Unavailable
        }
        _ => ApiError::Internal(StoreError::BlobFile(e)),
    }
}

/// An upload's progress, for `HEAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    /// Bytes the server holds.
    pub offset: u64,
    /// The blob's declared size.
    pub length: u64,
}

impl Services {
    /// The record of an unexpired blob that the caller's account uploaded, or `NotFound`.
    async fn own_blob(&self, caller: &AuthedDevice, id: BlobId) -> Result<BlobRecord, ApiError> {
        self.store
            .blob(id, now())
            .await?
            .filter(|b| b.account == caller.mailbox.account)
            .ok_or(ApiError::NotFound("blob"))
    }

    /// Reserve a blob of `req.size` bytes.
    pub async fn create_blob(
        &self,
        caller: &AuthedDevice,
        req: CreateBlobRequest,
    ) -> Result<CreateBlobResponse, ApiError> {
        let limits = &self.config.blobs;
        let max = max_blob_bytes(limits.max_file_bytes);
        if req.size == 0 {
            return Err(ApiError::BadRequest("size: at least 1 byte".into()));
        }
        if req.size > max {
            return Err(ApiError::PayloadTooLarge(format!(
                "size: a blob may hold at most {max} bytes (files of {} bytes)",
                limits.max_file_bytes
            )));
        }
        let secret = random_secret()?;
        let id = BlobId::from_random(&secret);
        let created_at = now();
        let ttl_ms = i64::try_from(limits.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let expires_at = Timestamp(created_at.0.saturating_add(ttl_ms));
        self.blobs.create_dir().await.map_err(io_error)?;
        let blob = NewBlob {
            id,
            owner: caller.mailbox,
            size: req.size,
            created_at,
            expires_at,
        };
        match self
            .store
            .create_blob(&blob, limits.quota_bytes_per_account)
            .await
        {
            Ok(()) => {}
            Err(StoreError::QuotaExceeded) => {
                return Err(ApiError::QuotaExceeded(format!(
                    "the account's blobs (stored and being uploaded) would exceed its quota of \
                     {} bytes; delete some or wait for them to expire",
                    limits.quota_bytes_per_account
                )));
            }
            Err(other) => return Err(other.into()),
        }
        debug!(account = caller.mailbox.account.0, "blob reserved");
        Ok(CreateBlobResponse {
            blob_id: id.to_string(),
            expires_at,
        })
    }

    /// How far the upload of one of the caller's blobs got.
    pub async fn blob_status(
        &self,
        caller: &AuthedDevice,
        id: &str,
    ) -> Result<UploadStatus, ApiError> {
        let id = blob_id(id)?;
        let record = self.own_blob(caller, id).await?;
        Ok(UploadStatus {
            offset: self.blobs.offset(id, record.size).await.map_err(io_error)?,
            length: record.size,
        })
    }

    /// Append `body` to one of the caller's blobs at `offset`, which must be where the
    /// upload is. `declared_len` (the body's `Content-Length`, if any) is checked against
    /// the blob's size before anything is written; the bytes are checked again as they
    /// arrive. Returns the new offset. What arrived before an interruption is kept, so the
    /// client resumes from there.
    pub async fn upload_blob<S, B, E>(
        &self,
        caller: &AuthedDevice,
        id: &str,
        offset: u64,
        declared_len: Option<u64>,
        mut body: S,
    ) -> Result<u64, ApiError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let id = blob_id(id)?;
        // The guard first, then the record: a `DELETE` (which takes the guard too) cannot
        // slip in between and leave a partial file behind with no record.
        let Some(_writing) = self.blobs.try_write(id) else {
            return Err(ApiError::Conflict(
                "another request is uploading this blob; ask for its offset and retry",
            ));
        };
        let record = self.own_blob(caller, id).await?;
        let current = self.blobs.offset(id, record.size).await.map_err(io_error)?;
        if offset != current {
            return Err(ApiError::OffsetMismatch(current));
        }
        let room = record.size.saturating_sub(current);
        if declared_len.is_some_and(|len| len > room) {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body is longer than the {room} bytes the blob has left"
            )));
        }
        if self.blobs.is_complete(id).await.map_err(io_error)? {
            return Ok(record.size);
        }
        let mut file = self.blobs.append(id).await.map_err(io_error)?;
        let mut written = current;
        let mut outcome = Ok(());
        let stall = std::time::Duration::from_secs(self.config.http.body_read_timeout_secs);
        loop {
            // A client that stops sending is cut off; what arrived stays for a resume.
            let Ok(next) = tokio::time::timeout(stall, body.next()).await else {
                outcome = Err(ApiError::RequestTimeout);
                break;
            };
            let Some(piece) = next else { break };
            let piece = match piece {
                Ok(piece) => piece,
                Err(e) => {
                    outcome = Err(ApiError::BadRequest(format!(
                        "the upload was interrupted ({e}); resume from the offset"
                    )));
                    break;
                }
            };
            let piece = piece.as_ref();
            let len = piece.len() as u64;
            if len > record.size.saturating_sub(written) {
                outcome = Err(ApiError::PayloadTooLarge(format!(
                    "the body is longer than the {room} bytes the blob has left"
                )));
                break;
            }
            file.write(piece).await.map_err(io_error)?;
            written += len;
        }
        let complete = written == record.size;
        if !self
            .blobs
            .finish(id, file, complete)
            .await
            .map_err(io_error)?
        {
            // Purged (expired) while it was being written.
            return Err(ApiError::NotFound("blob"));
        }
        if complete {
            debug!(account = caller.mailbox.account.0, "blob complete");
        }
        // The expiry purge or the account's deletion (which work from the records) may
        // have removed the record while this upload wrote: then its files go too, or
        // nothing would ever delete them.
        if self.store.blob(id, now()).await?.is_none() {
            self.blobs.remove(id).await.map_err(io_error)?;
            return Err(ApiError::NotFound("blob"));
        }
        outcome.map(|()| written)
    }

    /// Open a complete blob for any authenticated device, from byte `start` up to and
    /// including `end` (the blob's last byte if `None` or past it).
    pub async fn open_blob(
        &self,
        id: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<BlobRead, ApiError> {
        let id = blob_id(id)?;
        self.store
            .blob(id, now())
            .await?
            .ok_or(ApiError::NotFound("blob"))?;
        match self.blobs.open(id, start, end).await.map_err(io_error)? {
            Opened::Read(read) => Ok(read),
            Opened::NotFound => Err(ApiError::NotFound("blob")),
            Opened::Unsatisfiable(size) => Err(ApiError::RangeNotSatisfiable(size)),
        }
    }

    /// Delete one of the caller's blobs (complete or not).
    pub async fn delete_blob(&self, caller: &AuthedDevice, id: &str) -> Result<(), ApiError> {
        let id = blob_id(id)?;
        let Some(_writing) = self.blobs.try_write(id) else {
            return Err(ApiError::Conflict(
                "an upload of this blob is under way; delete it once that request ends",
            ));
        };
        // An expired blob is gone for every endpoint; the purge removes it.
        self.own_blob(caller, id).await?;
        if !self.store.delete_blob(id, caller.mailbox.account).await? {
            return Err(ApiError::NotFound("blob"));
        }
        self.blobs.remove(id).await.map_err(io_error)?;
        debug!(account = caller.mailbox.account.0, "blob deleted");
        Ok(())
    }

    /// Delete the blobs expired at `now`, complete or abandoned part-way: files first, then
    /// the records (so a crash in between leaves records that the next purge finishes).
    /// Returns how many went.
    pub async fn purge_expired_blobs(&self, now: Timestamp) -> Result<usize, StoreError> {
        let batch = self.config.retention.purge_batch;
        let mut purged = 0;
        loop {
            match self.purge_blob_batch(now, batch).await {
                Ok(n) => {
                    purged += n;
                    if n < batch as usize {
                        self.audit_purge("blobs", purged as u64).await;
                        return Ok(purged);
                    }
                }
                Err(e) => {
                    // What went before this batch is gone and must be recorded.
                    self.audit_purge("blobs", purged as u64).await;
                    return Err(e);
                }
            }
            tokio::task::yield_now().await;
        }
    }

    /// One batch of [`Self::purge_expired_blobs`]: how many blobs went.
    async fn purge_blob_batch(&self, now: Timestamp, batch: u32) -> Result<usize, StoreError> {
        let ids = self.store.expired_blobs(now, batch).await?;
        for id in &ids {
            self.blobs.remove(*id).await.map_err(StoreError::BlobFile)?;
        }
        self.store.delete_blob_records(&ids).await?;
        self.metrics.purged("blobs", ids.len() as u64);
        Ok(ids.len())
    }

    /// Delete every blob of a deleted account.
    pub(crate) async fn delete_account_blobs(&self, account: AccountId) -> Result<(), ApiError> {
        let ids = self.store.delete_account_blobs(account).await?;
        for id in &ids {
            if let Err(e) = self.blobs.remove(*id).await {
                // The record is gone; the file would linger until someone removes it.
                warn!(error = %e, "could not delete a blob file of a deleted account");
            }
        }
        if !ids.is_empty() {
            info!(
                account = account.0,
                blobs = ids.len(),
                "deleted the account's blobs"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tacit_api::DeviceId;

    use super::*;
    use crate::config::Config;
    use crate::store::{Mailbox, SqliteStore, Store};

    #[test]
    fn the_limit_leaves_room_for_the_encryption_overhead() {
        const CHUNK_BYTES: u64 = 64 * 1024;
        assert_eq!(max_blob_bytes(0), 17 + 16);
        assert_eq!(max_blob_bytes(1), 1 + 17 + 16);
        assert_eq!(max_blob_bytes(CHUNK_BYTES), CHUNK_BYTES + 17 + 16);
        assert_eq!(max_blob_bytes(CHUNK_BYTES + 1), CHUNK_BYTES + 1 + 17 + 32);
        assert_eq!(max_blob_bytes(u64::MAX), u64::MAX);
    }

    #[test]
    fn ids_are_16_bytes_of_base64url() {
        assert!(blob_id("AAAAAAAAAAAAAAAAAAAAAA").is_ok());
        for bad in [
            "",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
            "../../../../etc/passwd",
            "A/AAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(blob_id(bad).is_err(), "{bad}");
        }
    }

    /// Expired blobs lose their files (complete and partial) and their records; others
    /// stay.
    #[tokio::test]
    async fn purge_removes_files_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tacit.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.unwrap());
        store.migrate().await.unwrap();
        let keys = crate::store::tests::keys(0);
        let device = crate::store::NewDevice {
            name: None,
            credential_hash: crate::store::SecretHash::from_bytes([1; 32]),
            keys,
        };
        let account = store
            .create_account(
                "alice",
                None,
                device,
                Timestamp(0),
                &crate::audit::Event::new(
                    crate::audit::Action::AccountRegister,
                    crate::audit::Outcome::Success,
                ),
            )
            .await
            .unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let svc = Services::new(store.clone(), Arc::new(config));
        let caller = AuthedDevice {
            mailbox: Mailbox {
                account,
                device: DeviceId(1),
            },
            username: "alice".into(),
        };
        let mut ids = Vec::new();
        for size in [4, 8, 8] {
            let blob = svc
                .create_blob(&caller, CreateBlobRequest { size })
                .await
                .unwrap();
            ids.push(blob.blob_id);
        }
        let pieces = |n: usize| futures_util::stream::iter(vec![Ok::<_, String>(vec![7u8; n])]);
        assert_eq!(
            svc.upload_blob(&caller, &ids[0], 0, None, pieces(4))
                .await
                .unwrap(),
            4
        );
        assert_eq!(
            svc.upload_blob(&caller, &ids[1], 0, None, pieces(3))
                .await
                .unwrap(),
            3
        );
        let blob_dir = dir.path().join("blobs");
        let files = || std::fs::read_dir(&blob_dir).unwrap().count();
        assert_eq!(files(), 2);
        // Nothing has expired yet.
        assert_eq!(svc.purge_expired_blobs(now()).await.unwrap(), 0);
        assert_eq!(files(), 2);
        let later = Timestamp(now().0 + 31 * 24 * 3600 * 1000);
        assert_eq!(svc.purge_expired_blobs(later).await.unwrap(), 3);
        assert_eq!(files(), 0);
        let text = svc
            .metrics
            .render(None, &crate::metrics::Operations::default());
        assert!(
            text.contains("tacit_retention_purged_total{kind=\"blobs\"} 3"),
            "{text}"
        );
        assert!(store.expired_blobs(later, 10).await.unwrap().is_empty());
    }
}
