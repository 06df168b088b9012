//! Group commit: sends and acknowledgements from all requests and sockets are queued to one
//! writer task, which stores whatever has accumulated in one transaction with one commit
//! (one fsync), then answers each caller. Under load, batches grow by themselves; when idle,
//! a lone write is committed at once, so this adds no delay.
//!
//! Every caller still gets its answer only after the commit: an accepted send is durable
//! when the client hears so. The new envelopes are handed to the connected sockets right
//! after the commit, by this task, so that each socket receives them in id order.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::health::WriteHealth;
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
    pub(crate) fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        health: Arc<WriteHealth>,
    ) -> Self {
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
                    Ok(rt) => rt.block_on(writer(store, hub, metrics, health, rx)),
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
    health: Arc<WriteHealth>,
    mut rx: mpsc::Receiver<Op>,
) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        metrics.write_batches.inc();
        metrics.write_batch_ops.inc_by(ops.len() as u64);
        let batch = Batch::from_ops(ops.drain(..));
        match batch.commit(store.as_ref(), &hub).await {
            Ok(()) => health.succeeded(),
            Err((e, batch)) if batch.len() > 1 && isolates(&e) => {
                // One operation's failure must not fail its batch-mates: commit each on
                // its own, so that only the bad one is refused.
                warn!(
                    error = %e,
                    operations = batch.len(),
                    "write batch failed; committing its operations one by one"
                );
                for single in batch.split() {
                    match single.commit(store.as_ref(), &hub).await {
                        Ok(()) => health.succeeded(),
                        Err((e, single)) => {
                            if !e.is_outage() || !health.is_failing() {
                                error!(error = %e, "a write failed");
                            }
                            health.failed(&e);
                            single.refuse(&e);
                        }
                    }
                }
            }
            Err((e, batch)) => {
                // Logged once per incident by the health tracker; other failures here.
                if !e.is_outage() {
                    error!(error = %e, operations = batch.len(), "write batch failed");
                }
                health.failed(&e);
                batch.refuse(&e);
            }
        }
    }
}

type SendReply = oneshot::Sender<Result<SendOutcome, StoreError>>;
type AckReply = oneshot::Sender<Result<u64, StoreError>>;

/// Operations to commit together, with the callers waiting for their answers.
struct Batch {
    messages: Vec<NewMessage>,
    send_replies: Vec<SendReply>,
    acks: Vec<(Mailbox, Vec<u64>)>,
    ack_replies: Vec<AckReply>,
}

impl Batch {
    fn from_ops(ops: impl Iterator<Item = Op>) -> Self {
        let mut batch = Self {
            messages: Vec::new(),
            send_replies: Vec::new(),
            acks: Vec::new(),
            ack_replies: Vec::new(),
        };
        for op in ops {
            match op {
                Op::Send(m, reply) => {
                    batch.messages.push(m);
                    batch.send_replies.push(reply);
                }
                Op::Ack(mailbox, ids, reply) => {
                    batch.acks.push((mailbox, ids));
                    batch.ack_replies.push(reply);
                }
            }
        }
        batch
    }

    fn len(&self) -> usize {
        self.messages.len() + self.acks.len()
    }

    /// One batch per operation.
    fn split(self) -> Vec<Self> {
        let sends = self
            .messages
            .into_iter()
            .zip(self.send_replies)
            .map(|(m, reply)| Op::Send(m, reply));
        let acks = self
            .acks
            .into_iter()
            .zip(self.ack_replies)
            .map(|((mailbox, ids), reply)| Op::Ack(mailbox, ids, reply));
        sends
            .chain(acks)
            .map(|op| Self::from_ops(std::iter::once(op)))
            .collect()
    }

    /// Commit in one transaction and answer each caller; on failure nothing of it was
    /// stored and the batch comes back unanswered.
    async fn commit(self, store: &dyn Store, hub: &Hub) -> Result<(), (StoreError, Self)> {
        let mut outcome = match store
            .write_batch(&self.messages, &self.acks, &super::Rules)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => return Err((e, self)),
        };
        // Push before answering, in id order: batches are committed one after the other,
        // so each socket sees its envelopes in order.
        outcome.stored.sort_unstable_by_key(|(_, e)| e.id);
        hub.deliver(std::mem::take(&mut outcome.stored));
        for (reply, result) in self.send_replies.into_iter().zip(outcome.sent) {
            let _ = reply.send(result);
        }
        for (reply, n) in self.ack_replies.into_iter().zip(outcome.acked) {
            let _ = reply.send(Ok(n));
        }
        Ok(())
    }

    /// Answer every operation with the failure: `StorageFull` stays itself (the client is
    /// told the disk is full); anything else is a failed batch (answered 503).
    fn refuse(self, e: &StoreError) {
        let error = || match e {
            StoreError::StorageFull(reason) => StoreError::StorageFull(reason.clone()),
            _ => StoreError::BatchFailed,
        };
        for reply in self.send_replies {
            let _ = reply.send(Err(error()));
        }
        for reply in self.ack_replies {
            let _ = reply.send(Err(error()));
        }
    }
}

/// Whether retrying the operations of a failed batch one by one can help: not when the
/// disk is full or the database is gone (each would fail the same way, slowly), but when a
/// statement failed for a reason one operation may have caused.
fn isolates(e: &StoreError) -> bool {
    !e.is_outage()
        && matches!(
            e,
            StoreError::Database(sqlx::Error::Database(_)) | StoreError::Corrupt(_)
        )
}
