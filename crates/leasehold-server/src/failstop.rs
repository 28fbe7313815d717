//! Fail-stop on a storage failure (docs/adr/0007-disk-faults-fail-stop.md).
//!
//! A node that cannot persist must not vote, acknowledge entries or serve
//! leases: its vote and log may be behind what it told its peers, and its
//! in-memory state may hold writes its disk never took. The watchdog
//! learns of the first failure from the store (every store error passes
//! through one mapping that records it, with the data directory and the
//! operation) or from openraft (its core stops on any storage error), and
//! then, once:
//!
//! 1. the lessor fail-stops: [`Serving::StorageFailed`], every client call
//!    answers UNAVAILABLE naming the failure, streams end, nothing is
//!    forwarded, renewed, expired or proposed;
//! 2. `leasehold_storage_failures_total` counts it and one error line is
//!    logged (node id, data directory, error);
//! 3. Raft is shut down, if openraft did not already stop its core: no
//!    vote, no acknowledgement, no heartbeat from here on;
//! 4. [`crate::Node::storage_failed`] resolves: `leasehold server` exits
//!    non-zero so a supervisor sees it and an operator can act.
//!
//! [`Serving::StorageFailed`]: crate::lessor::Serving::StorageFailed

use std::path::PathBuf;
use std::sync::Arc;

use leasehold_raft::store::FaultWatch;
use leasehold_raft::{NodeId, Raft};
use openraft::error::Fatal;
use tokio::sync::watch;

use crate::lessor::Lessor;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// What the watchdog watches and what it stops.
pub struct Watched {
    /// This node (for the log line).
    pub node_id: NodeId,
    /// Its data directory (for the log line and the reason).
    pub data_dir: PathBuf,
    /// Its Raft: watched for a fatal stop, shut down on a failure.
    pub raft: Raft,
    /// The store's first failure.
    pub faults: FaultWatch,
    /// Stops serving on a failure.
    pub lessor: Arc<Lessor>,
    /// Counts the failure.
    pub metrics: Arc<Metrics>,
    /// Set to the reason on a failure (read by [`crate::Node`]).
    pub failure: watch::Sender<Option<String>>,
    /// Ends the watchdog when the node shuts down.
    pub shutdown: ShutdownSignal,
}

/// Why the watchdog woke up.
enum Woke {
    /// The node is shutting down, or what is watched went away.
    Done,
    /// A storage failure, with its reason.
    Failed(String),
}

/// Runs until the node shuts down, or fail-stops it on the first storage
/// failure.
pub async fn watch(w: Watched) {
    let woke = tokio::select! {
        _ = w.shutdown.clone().recv() => Woke::Done,
        fault = w.faults.failed() => match fault {
            Some(fault) => Woke::Failed(fault.to_string()),
            None => Woke::Done,
        },
        fatal = raft_storage_fatal(&w.raft) => match fatal {
            Some(error) => Woke::Failed(format!(
                "Raft stopped on a storage error in {}: {error}",
                w.data_dir.display()
            )),
            None => Woke::Done,
        },
    };
    let Woke::Failed(reason) = woke else {
        return;
    };
    // The store's own record names the operation; prefer it when both fired.
    let reason = w.faults.fault().map_or(reason, |f| f.to_string());
    fail_stop(&w, reason).await;
}

/// Resolves with the error when openraft's core stops on a storage error;
/// `None` if the metrics channel closes first (Raft dropped).
async fn raft_storage_fatal(raft: &Raft) -> Option<String> {
    let mut metrics = raft.metrics();
    loop {
        {
            // Never held across an await (it blocks the core).
            let m = metrics.borrow_and_update();
            if let Err(Fatal::StorageError(error)) = &m.running_state {
                return Some(error.to_string());
            }
        }
        if metrics.changed().await.is_err() {
            return None;
        }
    }
}

/// Stops everything the node does with its state, once.
async fn fail_stop(w: &Watched, reason: String) {
    if !w.lessor.fail_stop(reason.clone()) {
        return;
    }
    w.metrics.storage_failed();
    tracing::error!(
        node_id = w.node_id,
        data_dir = %w.data_dir.display(),
        error = %reason,
        "storage failed: fail-stop (Raft stopped; this node votes, acknowledges and serves \
         nothing until restarted)"
    );
    // openraft stops its core on any storage error it sees; a failure the
    // store recorded first (a flush) may reach it only with the next
    // write. Stop it now either way.
    if let Err(error) = w.raft.shutdown().await {
        tracing::warn!(node_id = w.node_id, %error, "stopping Raft after the storage failure");
    }
    w.failure.send_replace(Some(reason));
}
