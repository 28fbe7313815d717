//! The one serialized flush path: a tokio task that group-commits.
//!
//! sled deadlocks under concurrent `flush_async` calls, so nothing else in
//! the store flushes. Requests queue on a channel; the task takes every
//! request waiting, runs one `Db::flush` (which fsyncs the whole database:
//! log, vote and state machine together) on the blocking pool, then
//! completes all of them. While one flush runs, new requests pile up and
//! share the next one.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::LogFlushed;
use tokio::sync::{mpsc, oneshot};

use super::db::Db;
use super::error::StoreError;
use crate::types::TypeConfig;

/// Requests that may wait for the flusher before senders block.
const QUEUE_CAPACITY: usize = 4096;
/// Most requests completed by one flush (bounds the waiter vector).
const BATCH_REQUESTS_MAX: usize = 4096;

/// Who to tell once the flush is done.
pub(crate) enum Waiter {
    /// openraft's append callback: entries are durable.
    Log(LogFlushed<TypeConfig>),
    /// A caller awaiting durability (vote, purge pointer, snapshot, `flush()`).
    Notify(oneshot::Sender<Result<(), StoreError>>),
}

/// One request to the flusher.
struct FlushRequest {
    /// The database to flush. Carried by the request rather than owned by
    /// the task, so that dropping every store handle closes the database
    /// (and releases its file lock) without waiting for the task to notice.
    db: Db,
    /// Completed after the flush.
    waiter: Waiter,
    /// When it was queued (how long it waited for the flush to start).
    queued_at: Instant,
}

/// Why a flush failed, shareable by all its waiters.
#[derive(Clone)]
enum FlushFailure {
    /// sled, or the durability guard, reported an error.
    Store(Arc<StoreError>),
    /// The blocking task panicked or was cancelled.
    Task(String),
}

impl FlushFailure {
    /// As a store error for awaiting callers.
    fn to_store_error(&self) -> StoreError {
        match self {
            FlushFailure::Store(e) => StoreError::Flush(e.clone()),
            FlushFailure::Task(msg) => StoreError::FlusherStopped(msg.clone()),
        }
    }

    /// As an I/O error for openraft's callback.
    fn to_io_error(&self) -> io::Error {
        io::Error::other(self.to_store_error().to_string())
    }
}

impl Waiter {
    /// Reports the flush outcome.
    fn complete(self, outcome: &Result<(), FlushFailure>) {
        match self {
            Waiter::Log(callback) => callback.log_io_completed(
                outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(FlushFailure::to_io_error),
            ),
            Waiter::Notify(tx) => {
                // The caller may have given up waiting; nothing to do then.
                let _ = tx.send(
                    outcome
                        .as_ref()
                        .map(|_| ())
                        .map_err(FlushFailure::to_store_error),
                );
            }
        }
    }
}

/// Handle to the flusher task; clones share the task.
#[derive(Clone)]
pub(crate) struct Flusher {
    /// Queue of the flusher task.
    tx: mpsc::Sender<FlushRequest>,
    /// The database every request flushes.
    db: Db,
}

impl Flusher {
    /// Starts the flusher task on the current tokio runtime.
    pub(crate) fn start(db: Db) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        runtime.spawn(run(rx));
        Ok(Flusher { tx, db })
    }

    /// Queues `waiter` to be completed after the next flush.
    pub(crate) async fn submit(&self, waiter: Waiter) -> Result<(), StoreError> {
        let request = FlushRequest {
            db: self.db.clone(),
            waiter,
            queued_at: Instant::now(),
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| StoreError::FlusherStopped("its queue is closed".to_string()))
    }

    /// Returns once everything written before the call is on disk.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Waiter::Notify(tx)).await?;
        rx.await
            .map_err(|_| StoreError::FlusherStopped("it dropped a request".to_string()))?
    }
}

/// The flusher task: one flush at a time, every waiting request per flush.
async fn run(mut rx: mpsc::Receiver<FlushRequest>) {
    while let Some(first) = rx.recv().await {
        let db = first.db;
        // Named in the report of a failed flush; dropped before the
        // waiters learn the outcome, like `db`.
        let reporter = db.clone();
        let queued_us = first.queued_at.elapsed().as_micros() as u64;
        let mut waiters = vec![first.waiter];
        while waiters.len() < BATCH_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(request) => waiters.push(request.waiter),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        // `db` moves into the closure and is dropped there, before waiters
        // learn the outcome.
        // Read before the flush: all of it is durable once it returns, and
        // only then does the guard record it.
        let flushed = tokio::task::spawn_blocking(move || {
            let mark = db.durable_mark()?;
            let bytes = db.flush()?;
            db.record_durable(&mark)?;
            Ok::<usize, StoreError>(bytes)
        });
        let outcome = match flushed.await {
            Ok(Ok(flush_bytes)) => {
                tracing::trace!(
                    target: crate::STAGE_TARGET,
                    stage = "flush",
                    waiters = waiters.len(),
                    queued_us,
                    elapsed_us = started.elapsed().as_micros() as u64,
                );
                tracing::trace!(
                    waiters = waiters.len(),
                    flush_bytes,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "flushed store"
                );
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(waiters = waiters.len(), error = %e, "store flush failed");
                Err(FlushFailure::Store(Arc::new(e)))
            }
            Err(e) => {
                tracing::error!(waiters = waiters.len(), error = %e, "store flush task failed");
                Err(FlushFailure::Task(e.to_string()))
            }
        };
        // A failed flush reaches openraft through the append callback as a
        // plain I/O error: record it as the store's fault here.
        if let Err(failure) = &outcome {
            reporter.report_failure("flush".to_string(), &failure.to_store_error());
        }
        drop(reporter);
        for waiter in waiters {
            waiter.complete(&outcome);
        }
    }
    tracing::debug!("store flusher stopped: every store handle was dropped");
}
