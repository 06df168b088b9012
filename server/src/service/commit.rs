//! Group commit: sends and acknowledgements from all requests and sockets are queued to one
//! writer task, which stores whatever has accumulated in one transaction with one commit
//! (one fsync), then answers each caller. Under load, batches grow by themselves; when idle,
//! a lone write is committed at once, so this adds no delay.
//!
//! Every caller still gets its answer only after the commit: an accepted send is durable
//! when the client hears so. The new envelopes are handed to the connected sockets right
//! after the commit, by this task, so that each socket receives them in id order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::metrics::Metrics;
use crate::push::Hub;
use crate::store::{Mailbox, NewMessage, SendOutcome, Store, StoreError};

/// Most operations in one transaction.
const MAX_BATCH: usize = 512;
/// Operations that may wait for the writer before callers are slowed down.
const QUEUE: usize = 8192;

#[derive(Debug)]
enum Op {
    Send(NewMessage, oneshot::Sender<Result<SendOutcome, StoreError>>),
    Ack(Mailbox, Vec<u64>, oneshot::Sender<Result<u64, StoreError>>),
}

/// The handle to the writer task. The task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    queue: mpsc::Sender<Op>,
}

impl Committer {
    /// Start the writer task (needs a Tokio runtime).
    pub(crate) fn start(store: Arc<dyn Store>, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        // The writer gets a thread of its own: its many short waits on the database should
        // not queue behind request handling on the shared workers.
        let spawned = std::thread::Builder::new()
            .name("tacit-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(writer(store, hub, metrics, rx)),
                    Err(e) => error!(error = %e, "cannot start the writer runtime"),
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the writer thread");
        }
        Self { queue }
    }

    /// Store a send; answers after the commit.
    pub(crate) async fn send(&self, message: NewMessage) -> Result<SendOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Op::Send(message, tx))
            .await
            .map_err(|_| StoreError::BatchFailed)?;
        rx.await.map_err(|_| StoreError::BatchFailed)?
    }

    /// Apply an acknowledgement; answers after the commit.
    pub(crate) async fn ack(&self, mailbox: Mailbox, ids: Vec<u64>) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Op::Ack(mailbox, ids, tx))
            .await
            .map_err(|_| StoreError::BatchFailed)?;
        rx.await.map_err(|_| StoreError::BatchFailed)?
    }
}

async fn writer(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Op>,
) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        metrics.write_batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .write_batch_ops
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        let mut messages = Vec::new();
        let mut send_replies = Vec::new();
        let mut acks = Vec::new();
        let mut ack_replies = Vec::new();
        for op in ops.drain(..) {
            match op {
                Op::Send(m, reply) => {
                    messages.push(m);
                    send_replies.push(reply);
                }
                Op::Ack(mailbox, ids, reply) => {
                    acks.push((mailbox, ids));
                    ack_replies.push(reply);
                }
            }
        }
        match store.write_batch(&messages, &acks).await {
            Ok(mut outcome) => {
                // Push before answering, in id order: batches are committed one after the
                // other, so each socket sees its envelopes in order.
                outcome.stored.sort_unstable_by_key(|(_, e)| e.id);
                hub.deliver(std::mem::take(&mut outcome.stored));
                for (reply, result) in send_replies.into_iter().zip(outcome.sent) {
                    let _ = reply.send(result);
                }
                for (reply, n) in ack_replies.into_iter().zip(outcome.acked) {
                    let _ = reply.send(Ok(n));
                }
            }
            Err(e) => {
                error!(error = %e, operations = messages.len() + acks.len(), "write batch failed");
                for reply in send_replies {
                    let _ = reply.send(Err(StoreError::BatchFailed));
                }
                for reply in ack_replies {
                    let _ = reply.send(Err(StoreError::BatchFailed));
                }
            }
        }
    }
}
