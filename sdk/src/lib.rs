//! The Tacit client library: an account on one device, its encrypted local store, its
//! sessions with other devices, and the transport to the server.
//!
//! - [`Client`]: register or link a device, keep prekeys stocked and rotated, send to every
//!   device of a user (and our other devices), receive by polling or over the WebSocket and
//!   acknowledge only once stored, delivered and read receipts, trust on first use with
//!   identity-change detection, safety numbers.
//! - [`files`]: files sent as encrypted attachments (streamed, resumable, checked before
//!   they are saved).
//! - [`store`]: the local store, encrypted at rest (SQLite), an in-memory store, and the small
//!   traits both implement that the session and group rules are written against.
//! - [`transport`]: HTTP(S) and WebSocket to the server with system roots, a CA file or a
//!   pinned certificate.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod files;
pub mod store;
pub mod transport;

pub use client::{
    Admin, Client, ClientError, GroupChange, GroupInfo, Incoming, IncomingKind, LINK_CODE_CHARS,
    LinkPreview, MAX_TIMER_SECS, PendingLink, ReceiptKind, SocketEvent, Timer, describe_duration,
    identity_fingerprint, parse_duration,
};
pub use files::{FileError, OutgoingFile, Progress, SentFile, Stage};
pub use store::{
    Contact, Conversation, GroupStore, KeySource, MemoryStore, MessageStatus, NewFile, PreKeyStore,
    PrekeyKind, Purged, SenderKeyStore, SessionStore, SessionWrite, Store, StoreError, StoreKey,
    StoredFile, StoredMessage, StoredSession,
};
pub use transport::{BlobDownload, ConnectProblem, Socket, Transport, TransportError, Trust};

/// The identifiers an app meets in the SDK's types: a device's number within its account
/// (from the wire types) and a group's id (from the protocol core).
pub use tacit_api::DeviceId;
pub use tacit_crypto::GroupId;
