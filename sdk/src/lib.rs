//! The Tacit client library.
//!
//! Today this crate holds the encrypted local store ([`store`]); the client (registration,
//! prekey upkeep, sessions per remote device, send and receive) is being built on top of it
//! and on `tacit-crypto`, and is not here yet.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod store;

pub use store::{
    Contact, KeySource, PrekeyKind, Store, StoreError, StoreKey, StoredMessage, StoredSession,
};
