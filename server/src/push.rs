//! Who is online: one registered WebSocket per device, and the signals sent to it.
//!
//! A send wakes the destination's socket task through a [`Notify`]; the task then reads its
//! mailbox from the store. The hub holds no envelope: the store is the only queue, so a
//! dropped socket or a crashed server loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, oneshot};

use crate::store::Mailbox;

/// Why the hub closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer connection of the same device took over.
    Replaced,
    /// The device was removed.
    Revoked,
}

/// What a socket task holds after registering.
#[derive(Debug)]
pub struct Registration {
    /// This connection's number, to unregister only itself.
    pub id: u64,
    /// Woken when new envelopes were stored for the device.
    pub mail: Arc<Notify>,
    /// Fires when the hub closes the socket.
    pub close: oneshot::Receiver<CloseReason>,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    mail: Arc<Notify>,
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
        let (close_tx, close) = oneshot::channel();
        let old = self.lock().insert(
            mailbox,
            Connection {
                id,
                mail: mail.clone(),
                close: close_tx,
            },
        );
        if let Some(old) = old {
            // The old task may have ended already; then there is nobody to tell.
            let _ = old.close.send(CloseReason::Replaced);
        }
        Registration { id, mail, close }
    }

    /// Remove a socket, unless a newer one replaced it already.
    pub fn unregister(&self, mailbox: Mailbox, id: u64) {
        let mut connections = self.lock();
        if connections.get(&mailbox).is_some_and(|c| c.id == id) {
            connections.remove(&mailbox);
        }
    }

    /// Wake the socket of each mailbox that got mail.
    pub fn notify(&self, mailboxes: &[Mailbox]) {
        let connections = self.lock();
        for mailbox in mailboxes {
            if let Some(c) = connections.get(mailbox) {
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
            account: 1,
            device: DeviceId(1),
        };
        let first = hub.register(mb);
        let second = hub.register(mb);
        assert_eq!(first.close.await.unwrap(), CloseReason::Replaced);
        hub.unregister(mb, first.id); // must not remove the second
        assert_eq!(hub.len(), 1);
        hub.notify(&[mb]);
        second.mail.notified().await;
        hub.revoke(mb);
        assert_eq!(second.close.await.unwrap(), CloseReason::Revoked);
        assert!(hub.is_empty());
    }
}
