//! The one error type that services return and the HTTP layer answers with.
//!
//! Each variant maps to one stable [`ErrorCode`]. Internal errors carry their cause for the
//! log; the client sees only a generic message.

use tacit_api::{DeviceMismatch, ErrorBody, ErrorCode};

use crate::store::StoreError;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed or out-of-range input; the message says which field.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, malformed or invalid credential.
    #[error("missing or invalid device credential")]
    Unauthorized,
    /// Registration without a valid invite.
    #[error("registration needs a valid, unused invite")]
    InviteRequired,
    /// The caller's account lacks the role the endpoint needs (named here).
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    /// The caller's account is disabled by an administrator.
    #[error("this account is disabled by an administrator")]
    AccountDisabled,
    /// An OpenID Connect ID token was refused; the message says why (never the token).
    #[error("ID token refused: {0}")]
    IdTokenRefused(String),
    /// The ID token was already used once.
    #[error("this ID token was already used; sign in again for a fresh one")]
    IdTokenReplayed,
    /// No such user, device or route.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists, not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The username is taken.
    #[error("username taken")]
    UsernameTaken,
    /// The device set of a send is out of date.
    #[error("device list out of date")]
    DeviceMismatch(DeviceMismatch),
    /// The account has its maximum number of devices.
    #[error("too many devices")]
    TooManyDevices,
    /// The resource is not in a state that allows this.
    #[error("{0}")]
    Conflict(&'static str),
    /// An upload would take a device's one-time prekey stock over its cap (a state of the
    /// device, not of the request alone, hence a conflict).
    #[error("{0}")]
    StockFull(String),
    /// The body or a part of it is over its limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is not of the content type the route takes (named here).
    #[error("expected Content-Type: {0}")]
    UnsupportedMediaType(&'static str),
    /// Too many requests of this kind.
    #[error("rate limit exceeded, retry later")]
    RateLimited,
    /// A destination mailbox is full.
    #[error("a destination mailbox is full, retry later")]
    MailboxFull,
    /// The account's blobs would exceed its quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A download range starts at or past the end of the blob.
    #[error("range not satisfiable: the blob has {0} bytes")]
    RangeNotSatisfiable(u64),
    /// A blob upload at the wrong offset: the answer carries the current one.
    #[error("upload offset mismatch: the blob is at offset {0}")]
    OffsetMismatch(u64),
    /// The request target is longer than the server reads (the limit in bytes).
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    /// The request's headers are larger than the server reads (the limit in bytes).
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// The connection was admitted into the slots kept for devices' WebSockets, and this
    /// request is not one.
    #[error("the server has all the connections it takes; retry later")]
    Busy,
    /// The request did not arrive in time.
    #[error("the request did not arrive in time")]
    RequestTimeout,
    /// An error answer produced outside the handlers, by its status (and its text).
    #[error("{message}")]
    Status {
        /// The stable code for the status.
        code: ErrorCode,
        /// What went wrong.
        message: String,
    },
    /// The disk under the database or the blob directory is full; nothing was stored.
    #[error("the server's storage is full: nothing was stored, retry later")]
    StorageFull,
    /// Shutting down, or the database is unreachable or failing.
    #[error("service unavailable")]
    Unavailable,
    /// A bug or an outage; logged once where it is answered.
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    /// The stable code.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::IdTokenRefused(_) => ErrorCode::IdTokenRefused,
            Self::IdTokenReplayed => ErrorCode::IdTokenReplayed,
            Self::InviteRequired => ErrorCode::InviteRequired,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::AccountDisabled => ErrorCode::AccountDisabled,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::UsernameTaken => ErrorCode::UsernameTaken,
            Self::DeviceMismatch(_) => ErrorCode::DeviceMismatch,
            Self::TooManyDevices => ErrorCode::TooManyDevices,
            Self::Conflict(_) | Self::StockFull(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::MailboxFull => ErrorCode::MailboxFull,
            Self::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Self::RangeNotSatisfiable(_) => ErrorCode::RangeNotSatisfiable,
            Self::OffsetMismatch(_) => ErrorCode::Conflict,
            Self::StorageFull => ErrorCode::StorageFull,
            Self::UriTooLong(_) => ErrorCode::UriTooLong,
            Self::HeadersTooLarge(_) => ErrorCode::HeadersTooLarge,
            Self::RequestTimeout => ErrorCode::RequestTimeout,
            Self::Busy => ErrorCode::Unavailable,
            Self::Status { code, .. } => *code,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The error for an answer of `status` that was produced without one (by an
    /// extractor's rejection or a layer), with its text where it had one.
    #[must_use]
    pub fn from_status(status: axum::http::StatusCode, text: Option<String>) -> Self {
        let code = match status.as_u16() {
            401 => ErrorCode::Unauthorized,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            408 => ErrorCode::RequestTimeout,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            414 => ErrorCode::UriTooLong,
            415 => ErrorCode::UnsupportedMediaType,
            416 => ErrorCode::RangeNotSatisfiable,
            429 => ErrorCode::RateLimited,
            431 => ErrorCode::HeadersTooLarge,
            503 => ErrorCode::Unavailable,
            500..=599 => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        };
        let message = text.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_ascii_lowercase()
        });
        Self::Status { code, message }
    }

    /// The body sent to the client.
    #[must_use]
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
            mismatch: match self {
                Self::DeviceMismatch(m) => Some(m.clone()),
                _ => None,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Self::UsernameTaken,
            StoreError::InviteInvalid => Self::InviteRequired,
            StoreError::TooManyDevices => Self::TooManyDevices,
            // The caller's account was deleted while its request was under way.
            StoreError::AccountGone => Self::Unauthorized,
            StoreError::LastDevice => Self::Conflict(
                "this is the account's last device: delete the account instead (tacit account delete)",
            ),
            StoreError::MailboxFull => Self::MailboxFull,
            StoreError::QuotaExceeded => {
                Self::QuotaExceeded("the account's blob quota would be exceeded".into())
            }
            StoreError::StorageFull(reason) => {
                tracing::debug!(reason, "storage full");
                Self::StorageFull
            }
            StoreError::BlobFile(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                Self::StorageFull
            }
            StoreError::BlobFile(e) => Self::Internal(StoreError::BlobFile(e)),
            // The database is gone or failing (a lost connection, a terminated backend, an
            // I/O error): logged once per incident where writes are tracked, answered as a
            // temporary outage.
            e if e.is_outage() => {
                tracing::debug!(error = %e, "store outage");
                Self::Unavailable
            }
            other => Self::Internal(other),
        }
    }
}
