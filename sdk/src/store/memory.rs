//! An in-memory store with the traits of the SQLite one (as libsignal's
//! `InMemSessionStore`): nothing is written anywhere, everything is gone when it is dropped.
//! It can back an ephemeral client, and the unit tests of the session and group rules run
//! against it.
//!
//! One `std::sync::Mutex` guards the state; no method holds it across an `.await` (none
//! awaits), so each `advance_*` is one step as the traits require.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use tacit_api::DeviceId;
use tacit_crypto::GroupId;
use zeroize::Zeroizing;

use super::traits::Secret;
use super::{
    GroupStore, PreKeyStore, PrekeyKind, SenderKeyStore, SessionStore, SessionWrite, StoreError,
    StoredSession,
};

/// One session as kept in memory.
struct Session {
    base_key: Vec<u8>,
    active: bool,
    /// Higher for a later write (the order [`SessionStore::sessions`] promises).
    seq: u64,
    state: Secret,
}

#[derive(Default)]
struct Inner {
    /// Sessions by (username, device).
    sessions: BTreeMap<(String, u32), Vec<Session>>,
    next_seq: u64,
    /// Prekey secrets by (kind code, id).
    prekeys: BTreeMap<(i64, u32), Secret>,
    groups: BTreeMap<[u8; 16], Secret>,
    own_chains: BTreeMap<[u8; 16], Secret>,
    /// Sender-key records by (group, sender, device).
    sender_keys: BTreeMap<([u8; 16], String, u32), Secret>,
}

impl Inner {
    fn save_session(
        &mut self,
        username: &str,
        device: DeviceId,
        base_key: &[u8],
        state: &[u8],
        active: bool,
    ) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let list = self
            .sessions
            .entry((username.to_owned(), device.0))
            .or_default();
        if active {
            for session in list.iter_mut() {
                session.active = false;
            }
        }
        match list.iter_mut().find(|s| s.base_key == base_key) {
            Some(session) => {
                session.active |= active;
                session.seq = seq;
                session.state = Zeroizing::new(state.to_vec());
            }
            None => list.push(Session {
                base_key: base_key.to_vec(),
                active,
                seq,
                state: Zeroizing::new(state.to_vec()),
            }),
        }
    }

    fn sessions(&self, username: &str, device: DeviceId) -> Vec<StoredSession> {
        let mut list: Vec<&Session> = self
            .sessions
            .get(&(username.to_owned(), device.0))
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        list.sort_by_key(|s| std::cmp::Reverse((s.active, s.seq)));
        list.into_iter()
            .map(|s| StoredSession {
                base_key: s.base_key.clone(),
                active: s.active,
                state: s.state.clone(),
            })
            .collect()
    }
}

/// A store that keeps everything in memory (see the module docs).
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore(..)")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state. A panic while it was held cannot leave it half-written (every change is
    /// made whole before the guard is dropped), so a poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The value in a slot, as the `advance_*` steps see it.
fn current(slot: Option<&Secret>) -> Option<&[u8]> {
    slot.map(|v| v.as_slice())
}

impl SessionStore for MemoryStore {
    async fn sessions(
        &self,
        username: &str,
        device: DeviceId,
    ) -> Result<Vec<StoredSession>, StoreError> {
        Ok(self.lock().sessions(username, device))
    }

    async fn save_session(
        &self,
        username: &str,
        device: DeviceId,
        base_key: &[u8],
        state: &[u8],
        active: bool,
    ) -> Result<(), StoreError> {
        self.lock()
            .save_session(username, device, base_key, state, active);
        Ok(())
    }

    async fn advance_session<T: Send>(
        &self,
        username: &str,
        device: DeviceId,
        step: impl FnOnce(Vec<StoredSession>) -> (Option<SessionWrite>, T) + Send,
    ) -> Result<T, StoreError> {
        let mut inner = self.lock();
        let (write, out) = step(inner.sessions(username, device));
        if let Some(write) = write {
            inner.save_session(username, device, &write.base_key, &write.state, true);
        }
        Ok(out)
    }

    async fn delete_sessions(&self, username: &str) -> Result<(), StoreError> {
        self.lock().sessions.retain(|(user, _), _| user != username);
        Ok(())
    }
}

impl PreKeyStore for MemoryStore {
    async fn put_prekey(&self, kind: PrekeyKind, id: u32, secret: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .prekeys
            .insert((kind.code(), id), Zeroizing::new(secret.to_vec()));
        Ok(())
    }

    async fn prekey(&self, kind: PrekeyKind, id: u32) -> Result<Option<Secret>, StoreError> {
        Ok(self.lock().prekeys.get(&(kind.code(), id)).cloned())
    }

    async fn delete_prekey(&self, kind: PrekeyKind, id: u32) -> Result<(), StoreError> {
        self.lock().prekeys.remove(&(kind.code(), id));
        Ok(())
    }
}

impl GroupStore for MemoryStore {
    async fn group(&self, id: GroupId) -> Result<Option<Secret>, StoreError> {
        Ok(self.lock().groups.get(&id.0).cloned())
    }

    async fn put_group(&self, id: GroupId, state: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .groups
            .insert(id.0, Zeroizing::new(state.to_vec()));
        Ok(())
    }

    async fn groups(&self) -> Result<Vec<(GroupId, Secret)>, StoreError> {
        Ok(self
            .lock()
            .groups
            .iter()
            .map(|(id, state)| (GroupId(*id), state.clone()))
            .collect())
    }

    async fn delete_group(&self, id: GroupId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.groups.remove(&id.0);
        inner.own_chains.remove(&id.0);
        inner.sender_keys.retain(|(group, _, _), _| *group != id.0);
        Ok(())
    }
}

impl SenderKeyStore for MemoryStore {
    async fn own_chain(&self, group: GroupId) -> Result<Option<Secret>, StoreError> {
        Ok(self.lock().own_chains.get(&group.0).cloned())
    }

    async fn put_own_chain(&self, group: GroupId, chain: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .own_chains
            .insert(group.0, Zeroizing::new(chain.to_vec()));
        Ok(())
    }

    async fn advance_own_chain<T: Send>(
        &self,
        group: GroupId,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Secret>, T) + Send,
    ) -> Result<T, StoreError> {
        let mut inner = self.lock();
        let (new, out) = step(current(inner.own_chains.get(&group.0)));
        if let Some(new) = new {
            inner.own_chains.insert(group.0, new);
        }
        Ok(out)
    }

    async fn delete_own_chain(&self, group: GroupId) -> Result<(), StoreError> {
        self.lock().own_chains.remove(&group.0);
        Ok(())
    }

    async fn advance_sender_key<T: Send>(
        &self,
        group: GroupId,
        sender: &str,
        device: DeviceId,
        step: impl FnOnce(Option<&[u8]>) -> (Option<Secret>, T) + Send,
    ) -> Result<T, StoreError> {
        let mut inner = self.lock();
        let key = (group.0, sender.to_owned(), device.0);
        let (new, out) = step(current(inner.sender_keys.get(&key)));
        if let Some(new) = new {
            inner.sender_keys.insert(key, new);
        }
        Ok(out)
    }

    async fn delete_sender_keys(&self, group: GroupId, sender: &str) -> Result<(), StoreError> {
        self.lock()
            .sender_keys
            .retain(|(g, s, _), _| !(*g == group.0 && s == sender));
        Ok(())
    }
}
