//! Cluster-wide lease configuration, replicated through Raft.

use serde::{Deserialize, Serialize};

use crate::limits::{
    DRIFT_PPM_MAX, GRACE_MARGIN_MS_MAX, TTL_MS_CEILING, TTL_MS_FLOOR, VOTE_WINDOW_MS_MAX,
};
use crate::rejection::Rejection;

/// Bounds and margins every node applies identically, and the one timing
/// of Raft that lease safety depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// Shortest TTL a session may ask for.
    pub ttl_ms_min: u64,
    /// Longest TTL a session may ask for; a new leader waits out at most this
    /// (plus margins) before a conflicting grant.
    pub ttl_ms_max: u64,
    /// Bound ρ on clock rate error, in parts per million (10_000 = 1%).
    pub drift_ppm: u32,
    /// Margin g added to every session deadline refreshed at leader takeover.
    pub grace_margin_ms: u64,
    /// `W`, the cluster-wide vote-refusal window: every leader computes its
    /// leader lease from it, and every node must refuse votes for at least
    /// this long after hearing from a leader, so each node's own
    /// `election_timeout_ms_max` must be at least this (a node with less
    /// refuses to vote or lead). 0: not set yet (the first leader sets it
    /// from its own flag). `ttl_ms_min` must be at least `2 W`.
    pub vote_window_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl_ms_min: 2_000,
            ttl_ms_max: 300_000,
            drift_ppm: 10_000,
            grace_margin_ms: 500,
            vote_window_ms: 0,
        }
    }
}

impl LeaseConfig {
    /// Checks internal consistency; the error names the offending field.
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.ttl_ms_min < TTL_MS_FLOOR {
            return Err(Rejection::invalid(
                "ttl_ms_min",
                format!("must be at least {TTL_MS_FLOOR} ms"),
            ));
        }
        if self.ttl_ms_max > TTL_MS_CEILING {
            return Err(Rejection::invalid(
                "ttl_ms_max",
                format!("must be at most {TTL_MS_CEILING} ms"),
            ));
        }
        if self.ttl_ms_min > self.ttl_ms_max {
            return Err(Rejection::invalid(
                "ttl_ms_min",
                format!("must not exceed ttl_ms_max ({} ms)", self.ttl_ms_max),
            ));
        }
        if self.drift_ppm > DRIFT_PPM_MAX {
            return Err(Rejection::invalid(
                "drift_ppm",
                format!("must be at most {DRIFT_PPM_MAX} ppm"),
            ));
        }
        if self.vote_window_ms > VOTE_WINDOW_MS_MAX {
            return Err(Rejection::invalid(
                "vote_window_ms",
                format!("must be at most {VOTE_WINDOW_MS_MAX} ms"),
            ));
        }
        if self.ttl_ms_min < self.vote_window_ms.saturating_mul(2) {
            return Err(Rejection::invalid(
                "ttl_ms_min",
                format!(
                    "{} ms is below 2 × the cluster's vote window ({} ms): sessions would \
                     expire during elections",
                    self.ttl_ms_min,
                    self.vote_window_ms.saturating_mul(2)
                ),
            ));
        }
        if self.grace_margin_ms > GRACE_MARGIN_MS_MAX {
            return Err(Rejection::invalid(
                "grace_margin_ms",
                format!("must be at most {GRACE_MARGIN_MS_MAX} ms"),
            ));
        }
        Ok(())
    }

    /// Checks that `ttl_ms` lies within the configured bounds.
    pub fn check_ttl(&self, ttl_ms: u64) -> Result<(), Rejection> {
        if ttl_ms < self.ttl_ms_min || ttl_ms > self.ttl_ms_max {
            return Err(Rejection::invalid(
                "ttl",
                format!(
                    "{ttl_ms} ms is outside [{}, {}] ms",
                    self.ttl_ms_min, self.ttl_ms_max
                ),
            ));
        }
        Ok(())
    }
}
