//! Who is online: one registered WebSocket per device, and the signals sent to it.
//!
//! After a commit, the writer hands each new envelope to its device's socket task through a
//! small bounded queue, so a push needs no database read. The store stays the only durable
//! queue: an envelope that does not fit in the socket's queue (or arrives while the socket
//! is connecting) is read from the mailbox instead, and one that is pushed but not
//! acknowledged stays in the mailbox, so a dropped socket or a crashed server loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::atomic::AtomicBool;

use tacit_api::Envelope;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::Mailbox;

/// Why the hub closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer connection of the same device took over.
    Replaced,
    /// The device was removed.
    Revoked,
}

/// Envelopes that may wait in one socket's queue.
const QUEUE: usize = 64;

/// What a socket task holds after registering.
#[derive(Debug)]
pub struct Registration {
    /// This connection's number, to unregister only itself.
    pub id: u64,
    /// Newly stored envelopes, in id order.
    pub queue: mpsc::Receiver<Envelope>,
    /// Woken when envelopes were stored that did not fit in the queue; then `overflow` is
    /// set and the task reads the mailbox.
    pub mail: Arc<Notify>,
    /// Set when an envelope was not queued.
    pub overflow: Arc<AtomicBool>,
    /// Fires when the hub closes the socket.
    pub close: oneshot::Receiver<CloseReason>,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    queue: mpsc::Sender<Envelope>,
    mail: Arc<Notify>,
    overflow: Arc<AtomicBool>,
    close: oneshot::Sender<CloseReason>,
}

/// The registry of connected devices.
#[derive(Debug, Default)]
pub struct Hub {
    connections: Mutex<HashMap<Mailbox, Connection>>,
    next_id: AtomicU64,
}

impl Hub {
    /// Register a device's new socket, closing its older one if any.
    pub fn register(&self, mailbox: Mailbox) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mail = Arc::new(Notify::new());
        let overflow = Arc::new(AtomicBool::new(false));
        let (queue_tx, queue) = mpsc::channel(QUEUE);
        let (close_tx, close) = oneshot::channel();
        let old = self.lock().insert(
            mailbox,
            Connection {
                id,
                queue: queue_tx,
                mail: mail.clone(),
                overflow: overflow.clone(),
                close: close_tx,
            },
        );
        if let Some(old) = old {
            // The old task may have ended already; then there is nobody to tell.
            let _ = old.close.send(CloseReason::Replaced);
        }
        Registration {
            id,
            queue,
            mail,
            overflow,
            close,
        }
    }

    /// Remove a socket, unless a newer one replaced it already.
    pub fn unregister(&self, mailbox: Mailbox, id: u64) {
        let mut connections = self.lock();
        if connections.get(&mailbox).is_some_and(|c| c.id == id) {
            connections.remove(&mailbox);
        }
    }

    /// Hand committed envelopes (sorted by id) to the sockets of their devices. An
    /// envelope that does not fit makes the socket read its mailbox instead, and until it
    /// has (it clears `overflow` first), later envelopes are not queued either: a queued
    /// envelope must never overtake one that is only in the mailbox.
    pub fn deliver(&self, envelopes: Vec<(Mailbox, Envelope)>) {
        let connections = self.lock();
        for (mailbox, envelope) in envelopes {
            if let Some(c) = connections.get(&mailbox)
                && (c.overflow.load(Ordering::Acquire) || c.queue.try_send(envelope).is_err())
            {
                c.overflow.store(true, Ordering::Release);
                c.mail.notify_one();
            }
        }
    }

    /// Close a removed device's socket.
    pub fn revoke(&self, mailbox: Mailbox) {
        if let Some(old) = self.lock().remove(&mailbox) {
            let _ = old.close.send(CloseReason::Revoked);
        }
    }

    /// The devices connected now.
    pub fn connected(&self) -> Vec<Mailbox> {
        self.lock().keys().copied().collect()
    }

    /// How many devices are connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no device is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Mailbox, Connection>> {
        // A panic while holding the lock cannot leave the map inconsistent (each operation
        // is one insert or remove), so a poisoned lock is still usable.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use tacit_api::DeviceId;

    use super::*;

    #[tokio::test]
    async fn second_registration_replaces_first() {
        let hub = Hub::default();
        let mb = Mailbox {
            account: crate::store::AccountId(1),
            device: DeviceId(1),
        };
        let first = hub.register(mb);
        let second = hub.register(mb);
        assert_eq!(first.close.await.unwrap(), CloseReason::Replaced);
        hub.unregister(mb, first.id); // must not remove the second
        assert_eq!(hub.len(), 1);
        let envelope = |id| Envelope {
            id,
            sender: "a".into(),
            sender_device: DeviceId(1),
            server_timestamp: tacit_api::Timestamp(0),
            ciphertext: tacit_api::Ciphertext::default(),
        };
        let mut second = second;
        hub.deliver((0..=QUEUE as u64).map(|id| (mb, envelope(id))).collect());
        assert_eq!(second.queue.recv().await.unwrap().id, 0);
        second.mail.notified().await;
        assert!(second.overflow.load(Ordering::Acquire));
        hub.revoke(mb);
        assert_eq!(second.close.await.unwrap(), CloseReason::Revoked);
        assert!(hub.is_empty());
    }
}
