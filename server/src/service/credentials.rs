//! A per-node cache of credential hashes, so that most requests authenticate without a
//! database read.
//!
//! Correctness rests on device numbers never being reused: a removed device is recorded as
//! revoked (for ten minutes, longer than any racing lookup), and that record is checked
//! after every lookup, so a removal on this
//! node takes effect at once even if a lookup raced with it. Entries expire after
//! [`TTL`], which bounds how long a removal made through *another* node could go unnoticed
//! if several nodes share one PostgreSQL database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{DeviceAuth, Mailbox};

/// How long a cached credential hash is trusted.
pub(crate) const TTL: Duration = Duration::from_secs(30);
/// Most cached entries; the cache is emptied when it is full.
const MAX_ENTRIES: usize = 100_000;
/// How long a revocation is remembered: far longer than any lookup that could race with it
/// takes (a lookup gives up after the pool's 10 s acquire timeout), and than [`TTL`], so
/// that no entry cached before the revocation outlives its record. After that, the
/// database (where the device is gone) answers alone.
const REVOKED_KEEP: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub(crate) struct CredentialCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Mailbox, (DeviceAuth, Instant)>,
    /// Revoked devices, with when and why: pruned after [`REVOKED_KEEP`].
    revoked: HashMap<Mailbox, (Instant, Revoked)>,
}

/// Why a device's credential was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revoked {
    /// The device was removed, or its account deleted.
    Removed,
    /// Its account was disabled by an administrator.
    Disabled,
}

impl CredentialCache {
    pub(crate) fn get(&self, mailbox: Mailbox) -> Option<DeviceAuth> {
        let inner = self.lock();
        inner
            .entries
            .get(&mailbox)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(auth, _)| auth.clone())
    }

    pub(crate) fn insert(&self, mailbox: Mailbox, auth: DeviceAuth) {
        let mut inner = self.lock();
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(mailbox, (auth, Instant::now()));
    }

    pub(crate) fn revoke(&self, mailbox: Mailbox, why: Revoked) {
        let mut inner = self.lock();
        inner.entries.remove(&mailbox);
        inner.revoked.insert(mailbox, (Instant::now(), why));
    }

    /// Forget a revocation (the account was enabled again) and the cached entry, so that
    /// the next lookup reads the database.
    pub(crate) fn restore(&self, mailbox: Mailbox) {
        let mut inner = self.lock();
        inner.entries.remove(&mailbox);
        inner.revoked.remove(&mailbox);
    }

    pub(crate) fn revoked(&self, mailbox: Mailbox) -> Option<Revoked> {
        self.lock().revoked.get(&mailbox).map(|(_, why)| *why)
    }

    /// Forget revocations older than [`REVOKED_KEEP`] and expired entries; called
    /// periodically, so the cache's memory stays bounded however many devices go.
    pub(crate) fn prune(&self) {
        let mut inner = self.lock();
        inner
            .revoked
            .retain(|_, (at, _)| at.elapsed() < REVOKED_KEEP);
        inner.entries.retain(|_, (_, at)| at.elapsed() < TTL);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
