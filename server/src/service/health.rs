//! Whether writes succeed: the state behind `/readyz` when the disk fills or the database
//! fails, logged once per incident rather than once per request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{error, info};

use crate::metrics::Metrics;
use crate::store::StoreError;

/// Tracks failing writes. A write that fails with an outage (a full disk, a database that
/// fails or is gone) marks the server not ready; the next write that succeeds, or the
/// housekeeping probe, marks it ready again.
#[derive(Debug)]
pub(crate) struct WriteHealth {
    /// Where the state shows: `writes_failing` and `write_failures`.
    metrics: Arc<Metrics>,
    /// When the current incident began.
    since: Mutex<Option<Instant>>,
}

impl WriteHealth {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            since: Mutex::new(None),
        }
    }

    /// Record a failed write; logs at the start of an incident only.
    pub(crate) fn failed(&self, e: &StoreError) {
        if !e.is_outage() {
            return;
        }
        self.metrics.write_failures.inc();
        if !self.metrics.writes_failing.swap(true, Ordering::AcqRel) {
            *self.lock() = Some(Instant::now());
            error!(
                error = %e,
                "writes are failing: answering them with errors and /readyz not ready until a write succeeds"
            );
        }
    }

    /// Record a write that succeeded; logs the end of an incident.
    pub(crate) fn succeeded(&self) {
        if self.metrics.writes_failing.swap(false, Ordering::AcqRel) {
            let lasted = self.lock().take().map(|t| t.elapsed().as_secs_f64());
            info!(seconds = lasted, "writes succeed again");
        }
    }

    /// Whether the last write failed with an outage.
    pub(crate) fn is_failing(&self) -> bool {
        self.metrics.writes_failing.load(Ordering::Acquire)
    }

    /// Writes that failed with an outage since the start.
    pub(crate) fn failures(&self) -> u64 {
        self.metrics.write_failures.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_marks_failing_until_a_success() {
        let h = WriteHealth::new(Arc::new(Metrics::default()));
        assert!(!h.is_failing());
        h.failed(&StoreError::MailboxFull);
        assert!(!h.is_failing(), "an expected outcome is no outage");
        h.failed(&StoreError::StorageFull("disk full".into()));
        h.failed(&StoreError::BatchFailed);
        assert!(h.is_failing());
        assert_eq!(h.failures(), 2);
        h.succeeded();
        assert!(!h.is_failing());
    }
}
