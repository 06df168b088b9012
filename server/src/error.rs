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
    /// Shutting down, or the database is unreachable.
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
            Self::InviteRequired => ErrorCode::InviteRequired,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::UsernameTaken => ErrorCode::UsernameTaken,
            Self::DeviceMismatch(_) => ErrorCode::DeviceMismatch,
            Self::TooManyDevices => ErrorCode::TooManyDevices,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::RateLimited => ErrorCode::RateLimited,
            Self::MailboxFull => ErrorCode::MailboxFull,
            Self::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Self::RangeNotSatisfiable(_) => ErrorCode::RangeNotSatisfiable,
            Self::OffsetMismatch(_) => ErrorCode::Conflict,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
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
            StoreError::MailboxFull => Self::MailboxFull,
            StoreError::QuotaExceeded => {
                Self::QuotaExceeded("the account's blob quota would be exceeded".into())
            }
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
            | StoreError::BatchFailed => Self::Unavailable,
            other => Self::Internal(other),
        }
    }
}
