//! The small traits that the session and group rules are written against (as libsignal's
//! `SessionStore`, `PreKeyStore` and `SenderKeyStore`), implemented by the SQLite [`Store`]
//! and by the in-memory [`MemoryStore`].
//!
//! Values are the serialized states the crypto crate makes (`to_bytes`, `to_secret_bytes`);
//! a store keeps them as they are given (the SQLite store seals each under its key). Each
//! `advance_*` method loads a state, lets `step` decide the new one and saves it as one
//! step: what `step` computed from the state (an encryption under a message key, say) can
//! never be computed again from the same state by another writer.
//!
//! [`Store`]: super::Store
//! [`MemoryStore`]: super::MemoryStore

use std::future::Future;

use tacit_api::DeviceId;
use tacit_crypto::GroupId;
use zeroize::Zeroizing;

use super::{PrekeyKind, SessionWrite, StoreError, StoredSession};

/// A stored secret value (a state or secret key, serialized), zeroized on drop.
pub type Secret = Zeroizing<Vec<u8>>;

/// Sessions per remote device: any number for each, one of them active (used to send).
pub trait SessionStore {
    /// Every session with one device, the active one first, then newest first.
    fn sessions(
        &self,
        username: &str,
        device: DeviceId,
    ) -> impl Future<Output = Result<Vec<StoredSession>, StoreError>> + Send;

    /// Stores a session; `active` makes it the one used to send to that device (the others
    /// of the device become inactive). Saving an existing session inactive leaves it active
    /// if it was.
    fn save_session(
        &self,
        username: &str,
        device: DeviceId,
        base_key: &[u8],
        state: &[u8],
        active: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Loads the sessions with a device (as [`SessionStore::sessions`] orders them), lets
    /// `step` use one and saves the state it returns as the active session, in one step.
    fn advance_session<T: Send>(
        &self,
        username: &str,
        device: DeviceId,
        step: impl FnOnce(Vec<StoredSession>) -> (Option<SessionWrite>, T) + Send,
    ) -> impl Future<Output = Result<T, StoreError>> + Send;

    /// Deletes every session with a user (after they re-registered with a new identity).
    fn delete_sessions(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Our own prekey secrets, by kind and id.
pub trait PreKeyStore {
    /// Stores a prekey secret (its `to_secret_bytes` encoding).
    fn put_prekey(
        &self,
        kind: PrekeyKind,
        id: u32,
        secret: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads a prekey secret; `None` once it was deleted (a used one-time prekey).
    fn prekey(
        &self,
        kind: PrekeyKind,
        id: u32,
    ) -> impl Future<Output = Result<Option<Secret>, StoreError>> + Send;

    /// Deletes a prekey secret (a one-time key once a session used it).
    fn delete_prekey(
        &self,
        kind: PrekeyKind,
        id: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The state of each group we are a member of (serialized by the client).
pub trait GroupStore {
    /// A group's state.
    fn group(&self, id: GroupId)
    -> impl Future<Output = Result<Option<Secret>, StoreError>> + Send;

    /// Stores a group's state.
    fn put_group(
        &self,
        id: GroupId,
        state: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every group's state, in id order.
    fn groups(&self) -> impl Future<Output = Result<Vec<(GroupId, Secret)>, StoreError>> + Send;

    /// Forgets a group: its state, our chain for it and every member's sender-key record.
    fn delete_group(&self, id: GroupId) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Sender keys: our own chain per group ([`tacit_crypto::SenderKeyState`]) and the record
/// of each member device's chains ([`tacit_crypto::SenderKeyRecord`]).
pub trait SenderKeyStore {
    /// Our chain for a group.
    fn own_chain(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<Option<Secret>, StoreError>> + Send;

    /// Stores our chain for a group.
    fn put_own_chain(
        &self,
        group: GroupId,
        chain: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Loads our chain, lets `step` decide its new value (`None`: unchanged) and stores it,
    /// in one step.
    fn advance_own_chain<T: Send>(
        &self,
        group: GroupId,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Secret>, T) + Send,
    ) -> impl Future<Output = Result<T, StoreError>> + Send;

    /// Deletes our chain for a group (a new one is made at the next send).
    fn delete_own_chain(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Loads the record of a member device's chains, lets `step` decide its new value
    /// (`None`: unchanged) and stores it, in one step.
    fn advance_sender_key<T: Send>(
        &self,
        group: GroupId,
        sender: &str,
        device: DeviceId,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Secret>, T) + Send,
    ) -> impl Future<Output = Result<T, StoreError>> + Send;

    /// Deletes the records of every device of `sender` in a group.
    fn delete_sender_keys(
        &self,
        group: GroupId,
        sender: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
