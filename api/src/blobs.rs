//! Blobs (encrypted attachments).
//!
//! A blob is an opaque byte string (an attachment encrypted by the client; its key and digest
//! travel inside an end-to-end encrypted message). Its id is 16 random bytes: holding it is
//! what lets any authenticated device fetch the blob, so ids are never listed or guessable.
//!
//! 1. `POST /v1/blobs` with the blob's exact size reserves it against the account's quota.
//! 2. `PATCH /v1/blobs/{blob_id}` with `Upload-Offset: N` appends raw bytes at offset N
//!    (resumable, in the manner of the tus protocol). A wrong offset answers `409` with the
//!    current offset in `Upload-Offset`; `HEAD` tells the offset too. When the last byte
//!    arrives, the blob is complete.
//! 3. `GET /v1/blobs/{blob_id}` streams a complete blob, from `Range: bytes=N-` if given.
//!
//! Blobs expire (whole or partial) after the server's blob TTL.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Timestamp, whole};

/// Header of `PATCH` and `HEAD /v1/blobs/{blob_id}`: the byte offset an upload is at.
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// Header of `HEAD /v1/blobs/{blob_id}`: the blob's declared size.
pub const UPLOAD_LENGTH: &str = "upload-length";
/// Content type of a `PATCH /v1/blobs/{blob_id}` body.
pub const BLOB_UPLOAD_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// The attachment format's overhead (SECURITY.md, "Attachments"): a 17-byte header, and a
/// 16-byte tag per chunk of 64 KiB (at least one chunk).
const BLOB_HEADER_BYTES: u64 = 17;
const BLOB_TAG_BYTES: u64 = 16;
const BLOB_CHUNK_BYTES: u64 = 64 * 1024;

/// The size of the blob that carries an encrypted file of `file_bytes` bytes (`None` past
/// `u64::MAX`): what a client reserves and what the server allows for its largest file.
/// The one definition for both; a test in the SDK ties it to `tacit-crypto`'s attachment
/// encryption.
#[must_use]
pub fn blob_size(file_bytes: u64) -> Option<u64> {
    let chunks = file_bytes.div_ceil(BLOB_CHUNK_BYTES).max(1);
    chunks
        .checked_mul(BLOB_TAG_BYTES)?
        .checked_add(file_bytes)?
        .checked_add(BLOB_HEADER_BYTES)
}

/// `POST /v1/blobs`: reserve room for a blob of exactly `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBlobRequest {
    /// The blob's exact size in bytes (at least 1).
    #[serde(deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1)]
    pub size: u64,
}

/// The answer to `POST /v1/blobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateBlobResponse {
    /// The blob's id: 16 random bytes, unpadded base64url.
    pub blob_id: String,
    /// When the blob (complete or not) is deleted.
    pub expires_at: Timestamp,
}
