//! The node's one sled database handle, and a way to learn that it closed.
//!
//! sled releases its lock on the data directory only when the last handle
//! to the database drops, and handles travel into tasks that end on their
//! own schedule (flush requests, snapshot builds, openraft's workers). A
//! process that shuts a node down and starts it again on the same directory
//! (tests, embedders) must wait for that moment: [`CloseWatch`] tells it.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::error::StoreError;
use super::fault::{FaultCell, FaultWatch, StoreFault};
use super::guard::{Guard, Mark, GUARD_FILE};

/// A shared handle to the node's sled database. Every part of the store
/// holds one of these, never a bare `sled::Db`, so that the database's
/// closing can be observed.
#[derive(Clone)]
pub(crate) struct Db(Arc<Inner>);

/// What the handles share. Fields drop in declaration order: the database
/// first, then the signal, so the signal means "closed and unlocked".
struct Inner {
    /// The database itself.
    db: sled::Db,
    /// Its snapshot tree ([`super::keys::SNAPSHOT_TREE`]).
    snapshots: sled::Tree,
    /// Sets the watch to `true` when dropped.
    _closed: ClosedSignal,
    /// The data directory, named by every storage failure.
    path: PathBuf,
    /// The first storage failure (the node fail-stops on it).
    faults: FaultCell,
    /// How far the store had durably got (checked at the next open).
    guard: Guard,
}

/// Announces that the database closed, by being dropped after it.
struct ClosedSignal(watch::Sender<bool>);

impl Drop for ClosedSignal {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Db {
    /// Wraps a freshly opened database opened from `path`.
    pub(crate) fn new(
        db: sled::Db,
        snapshots: sled::Tree,
        path: PathBuf,
        guard: Guard,
    ) -> (Db, CloseWatch) {
        let (tx, rx) = watch::channel(false);
        let handle = Db(Arc::new(Inner {
            db,
            snapshots,
            _closed: ClosedSignal(tx),
            path: path.clone(),
            faults: FaultCell::new(),
            guard,
        }));
        (handle, CloseWatch { closed: rx, path })
    }

    /// The values the durability guard records, read now (call before a
    /// flush: once it returns, they are durable).
    pub(crate) fn durable_mark(&self) -> Result<Mark, StoreError> {
        Mark::read(&self.0.db)
    }

    /// Records `mark` in the durability guard (after the flush that made
    /// it durable).
    pub(crate) fn record_durable(&self, mark: &Mark) -> Result<(), StoreError> {
        self.0
            .guard
            .record(mark)
            .map_err(|source| StoreError::Guard {
                path: self.0.path.join(GUARD_FILE),
                source,
            })
    }

    /// The tree that holds the current snapshot, apart from every other
    /// key space.
    pub(crate) fn snapshots(&self) -> &sled::Tree {
        &self.0.snapshots
    }

    /// Learns of the first storage failure of this database.
    pub(crate) fn fault_watch(&self) -> FaultWatch {
        self.0.faults.watch()
    }

    /// Logs a failed storage operation with the data directory and the
    /// operation named, and records it as the store's fault if it is the
    /// first. Every store error openraft sees passes here.
    pub(crate) fn report_failure(&self, operation: String, error: &StoreError) {
        let fault = StoreFault {
            path: self.0.path.clone(),
            operation,
            error: error.to_string(),
        };
        let first = self.0.faults.record(fault.clone());
        tracing::error!(
            path = %fault.path.display(),
            operation = %fault.operation,
            error = %fault.error,
            first,
            "storage operation failed"
        );
    }
}

impl Deref for Db {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.0.db
    }
}

/// Learns when a store's database has closed: every handle dropped and the
/// data directory's lock released. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CloseWatch {
    /// `true` once the database closed.
    closed: watch::Receiver<bool>,
    /// The data directory, for error messages.
    path: PathBuf,
}

impl CloseWatch {
    /// Whether the database has closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Waits until the database has closed, at most `wait_max`.
    pub async fn closed(&self, wait_max: Duration) -> Result<(), StoreError> {
        let mut rx = self.closed.clone();
        let closed = tokio::time::timeout(wait_max, async move {
            // The sender only goes away by sending `true` first.
            let _ = rx.wait_for(|closed| *closed).await;
        })
        .await;
        closed.map_err(|_| StoreError::StillOpen {
            path: self.path.clone(),
            waited: wait_max,
        })
    }
}
