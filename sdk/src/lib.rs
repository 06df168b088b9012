//! The Tacit client library: an account on one device, its encrypted local store, its
//! sessions with other devices, and the transport to the server.
//!
//! - [`Client`]: register, keep prekeys stocked, send to every device of a user (and our
//!   other devices), receive and acknowledge only once stored, trust on first use with
//!   identity-change detection, safety numbers.
//! - [`store`]: the local store, encrypted at rest.
//! - [`transport`]: HTTP(S) to the server with system roots, a CA file or a pinned
//!   certificate.
//!
//! Not here yet (see the issue tracker): device linking, the WebSocket push stream,
//! receipts, and scheduled signed-prekey rotation.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod store;
pub mod transport;

pub use client::{Client, ClientError, Incoming, IncomingKind};
pub use store::{
    Contact, KeySource, PrekeyKind, Store, StoreError, StoreKey, StoredMessage, StoredSession,
};
pub use transport::{Transport, TransportError, Trust};
