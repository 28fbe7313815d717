//! The store's first storage failure, recorded where every store error
//! becomes an openraft `StorageError` (so nothing that fails can slip past
//! it), and observable by the node that must stop serving
//! (docs/adr/0007-disk-faults-fail-stop.md).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

/// One failed storage operation: where, doing what, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    /// The data directory of the database that failed (the operator's
    /// first question: which disk).
    pub path: PathBuf,
    /// What was being done to what, in openraft's words (e.g. "Write
    /// Logs", "Write Vote", "Write StateMachine").
    pub operation: String,
    /// The error as reported (sled's, or the flush's, with the OS error).
    pub error: String,
}

impl fmt::Display for StoreFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "storage failed in {} ({}): {}",
            self.path.display(),
            self.operation,
            self.error
        )
    }
}

/// Where the first fault is kept; shared by every handle on the database.
pub(crate) struct FaultCell {
    /// `Some` from the first fault on; later faults are only logged.
    tx: watch::Sender<Option<Arc<StoreFault>>>,
}

impl FaultCell {
    /// A cell with no fault yet.
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(None);
        FaultCell { tx }
    }

    /// Records `fault` unless an earlier one is already recorded; returns
    /// whether it was the first.
    pub(crate) fn record(&self, fault: StoreFault) -> bool {
        self.tx.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(Arc::new(fault));
            true
        })
    }

    /// A watch on the cell.
    pub(crate) fn watch(&self) -> FaultWatch {
        FaultWatch {
            rx: self.tx.subscribe(),
        }
    }
}

/// Learns of the store's first storage failure. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FaultWatch {
    /// `Some` once a storage operation failed.
    rx: watch::Receiver<Option<Arc<StoreFault>>>,
}

impl FaultWatch {
    /// The first fault, if any happened.
    pub fn fault(&self) -> Option<Arc<StoreFault>> {
        self.rx.borrow().clone()
    }

    /// Waits for the first fault. Returns `None` if the database closed
    /// without one.
    pub async fn failed(&self) -> Option<Arc<StoreFault>> {
        let mut rx = self.rx.clone();
        let waited = rx.wait_for(Option::is_some).await.map(|f| f.clone());
        match waited {
            Ok(fault) => fault,
            // The database closed; it may still have failed just before.
            Err(_) => rx.borrow().clone(),
        }
    }
}
