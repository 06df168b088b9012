//! Errors: the body of every error response and its stable codes.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::DeviceMismatch;
#[cfg(doc)]
use crate::UPLOAD_OFFSET;

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation; may change between versions.
    pub message: String,
    /// With `device_mismatch`: which devices to add and to drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<DeviceMismatch>,
}

/// The stable error codes, with the HTTP status each comes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the body or a parameter is malformed or out of range.
    BadRequest,
    /// 401: no credential, a malformed one, or one that is not valid.
    Unauthorized,
    /// 403: registration needs a valid, unused invite.
    InviteRequired,
    /// 403: the caller's account lacks the role the endpoint needs (`admin`, or for the
    /// audit log `auditor`).
    Forbidden,
    /// 403: the caller's account is disabled by an administrator: every request of its
    /// devices is refused until it is enabled again.
    AccountDisabled,
    /// 401: an OpenID Connect ID token was refused (bad signature, unknown key, wrong
    /// issuer or audience, expired, not yet valid, too old, an unusable username claim, or
    /// no account bound to its identity); `message` names the reason.
    IdTokenRefused,
    /// 409: this ID token was already used once; get a fresh one from the provider.
    IdTokenReplayed,
    /// 404: no such user, device or route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the username is taken.
    UsernameTaken,
    /// 409: the device set of the send is out of date; see [`ErrorBody::mismatch`].
    DeviceMismatch,
    /// 409: the account already has the maximum number of devices.
    TooManyDevices,
    /// 409: the resource is not in a state that allows this (a provisioning channel that
    /// was already answered; a blob upload at the wrong offset, whose answer carries the
    /// current offset in [`UPLOAD_OFFSET`], or one that another request is writing).
    Conflict,
    /// 413: the body, an envelope, an upload batch or a blob is over its limit.
    PayloadTooLarge,
    /// 416: a blob download's `Range` starts at or past the blob's end.
    RangeNotSatisfiable,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 429: too many requests of this kind; retry later.
    RateLimited,
    /// 507: a destination mailbox is full; retry later.
    MailboxFull,
    /// 507: the account's blobs (stored and reserved) would exceed its quota; delete some
    /// or wait for them to expire.
    QuotaExceeded,
    /// 507: the server's disk is full: nothing of the request was stored; retry later.
    StorageFull,
    /// 431: the request's headers are too large.
    HeadersTooLarge,
    /// 414: the request's URI is too long.
    UriTooLong,
    /// 408: the request did not arrive in time (its headers or a body that stalled).
    RequestTimeout,
    /// 503: the server is shutting down, its database is unreachable or failing, or it has
    /// all the connections it takes (then with `Retry-After`).
    Unavailable,
    /// 500: a bug or an outage; the server logged it.
    Internal,
    /// A code this version does not know (from a newer server); the HTTP status says how
    /// to treat it. Never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status code that goes with this error.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized | Self::IdTokenRefused => 401,
            Self::InviteRequired | Self::Forbidden | Self::AccountDisabled => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UsernameTaken
            | Self::DeviceMismatch
            | Self::TooManyDevices
            | Self::Conflict
            | Self::IdTokenReplayed => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RangeNotSatisfiable => 416,
            Self::RateLimited => 429,
            Self::MailboxFull | Self::QuotaExceeded | Self::StorageFull => 507,
            Self::HeadersTooLarge => 431,
            Self::UriTooLong => 414,
            Self::RequestTimeout => 408,
            Self::Unavailable => 503,
            Self::Internal | Self::Unknown => 500,
        }
    }

    /// The code as it appears on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::InviteRequired => "invite_required",
            Self::Forbidden => "forbidden",
            Self::AccountDisabled => "account_disabled",
            Self::IdTokenRefused => "id_token_refused",
            Self::IdTokenReplayed => "id_token_replayed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UsernameTaken => "username_taken",
            Self::DeviceMismatch => "device_mismatch",
            Self::TooManyDevices => "too_many_devices",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RangeNotSatisfiable => "range_not_satisfiable",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::MailboxFull => "mailbox_full",
            Self::QuotaExceeded => "quota_exceeded",
            Self::StorageFull => "storage_full",
            Self::HeadersTooLarge => "headers_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::RequestTimeout => "request_timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_error_code_still_parses() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"code":"from_the_future","message":"m"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
    }

    #[test]
    fn error_codes_serialize_as_their_str() {
        for code in [
            ErrorCode::DeviceMismatch,
            ErrorCode::MailboxFull,
            ErrorCode::QuotaExceeded,
            ErrorCode::RangeNotSatisfiable,
            ErrorCode::StorageFull,
            ErrorCode::HeadersTooLarge,
            ErrorCode::UriTooLong,
            ErrorCode::RequestTimeout,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
