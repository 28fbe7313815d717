//! Every metric of the node, defined here and nowhere else.
//!
//! Counters are plain atomics read by `Status` and logs; they only grow.

use std::sync::atomic::{AtomicU64, Ordering};

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions renewed by keepalives.
    keepalive_renewed_total: AtomicU64,
    /// Keepalive entries answered "not alive".
    keepalive_refused_total: AtomicU64,
    /// Sessions removed by committed expiry entries this node proposed.
    sessions_expired_total: AtomicU64,
    /// Leader takeovers completed by this node.
    takeovers_total: AtomicU64,
    /// Commands this node proposed to Raft.
    proposals_total: AtomicU64,
    /// Requests this node forwarded to the leader.
    forwarded_total: AtomicU64,
    /// Leases granted in answer to this node's acquires.
    grants_total: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// See [`Metrics`].
    pub keepalive_renewed_total: u64,
    /// See [`Metrics`].
    pub keepalive_refused_total: u64,
    /// See [`Metrics`].
    pub sessions_expired_total: u64,
    /// See [`Metrics`].
    pub takeovers_total: u64,
    /// See [`Metrics`].
    pub proposals_total: u64,
    /// See [`Metrics`].
    pub forwarded_total: u64,
    /// See [`Metrics`].
    pub grants_total: u64,
}

impl Metrics {
    /// Counts one keepalive's renewed and refused sessions.
    pub fn keepalive_renewed(&self, renewed: u64, refused: u64) {
        self.keepalive_renewed_total
            .fetch_add(renewed, Ordering::Relaxed);
        self.keepalive_refused_total
            .fetch_add(refused, Ordering::Relaxed);
    }

    /// Counts expired sessions.
    pub fn expired(&self, n: u64) {
        self.sessions_expired_total.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a takeover.
    pub fn takeover(&self) {
        self.takeovers_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a proposal.
    pub fn proposed(&self) {
        self.proposals_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a forwarded request.
    pub fn forwarded(&self) {
        self.forwarded_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a grant.
    pub fn granted(&self) {
        self.grants_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            keepalive_renewed_total: r(&self.keepalive_renewed_total),
            keepalive_refused_total: r(&self.keepalive_refused_total),
            sessions_expired_total: r(&self.sessions_expired_total),
            takeovers_total: r(&self.takeovers_total),
            proposals_total: r(&self.proposals_total),
            forwarded_total: r(&self.forwarded_total),
            grants_total: r(&self.grants_total),
        }
    }
}
