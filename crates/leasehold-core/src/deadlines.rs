//! The leader's in-memory session deadlines, with time injected.
//!
//! Only the leader keeps this table; it is never replicated. Times are
//! milliseconds on the leader's monotonic clock. Leases may end late, never
//! early: a deadline only moves forward, and an expired session is never
//! renewed.

use std::collections::{BTreeSet, HashMap};

use crate::types::SessionId;

/// Why a renewal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenewError {
    /// The session's deadline passed; it is (being) expired.
    #[error("session deadline passed")]
    Expired,
    /// The table does not know the session (not open, or already removed).
    #[error("unknown session")]
    Unknown,
}

/// Session deadlines plus an ordered expiry queue.
#[derive(Debug, Default, Clone)]
pub struct DeadlineTable {
    /// Deadline of each tracked session.
    deadline_ms: HashMap<SessionId, u64>,
    /// The same, ordered by deadline, so due sessions are found in O(log n).
    queue: BTreeSet<(u64, SessionId)>,
}

impl DeadlineTable {
    /// An empty table.
    pub fn new() -> Self {
        DeadlineTable::default()
    }

    /// Number of tracked sessions.
    pub fn len(&self) -> usize {
        self.deadline_ms.len()
    }

    /// True when no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.deadline_ms.is_empty()
    }

    /// The deadline of a session.
    pub fn deadline_ms(&self, id: SessionId) -> Option<u64> {
        self.deadline_ms.get(&id).copied()
    }

    /// Tracks a session with at least `deadline_ms` (never moves one back).
    pub fn extend_to(&mut self, id: SessionId, deadline_ms: u64) {
        match self.deadline_ms.get(&id).copied() {
            Some(old) if old >= deadline_ms => {}
            Some(old) => {
                self.queue.remove(&(old, id));
                self.queue.insert((deadline_ms, id));
                self.deadline_ms.insert(id, deadline_ms);
            }
            None => {
                self.queue.insert((deadline_ms, id));
                self.deadline_ms.insert(id, deadline_ms);
            }
        }
    }

    /// Renews a keepalive received at `now_ms`: the deadline becomes
    /// `now_ms + ttl_ms` unless it already passed (then the session stays
    /// expired). Returns the new deadline.
    pub fn renew(&mut self, id: SessionId, now_ms: u64, ttl_ms: u64) -> Result<u64, RenewError> {
        let current = self
            .deadline_ms
            .get(&id)
            .copied()
            .ok_or(RenewError::Unknown)?;
        if current <= now_ms {
            return Err(RenewError::Expired);
        }
        let next = now_ms.saturating_add(ttl_ms);
        self.extend_to(id, next);
        Ok(next.max(current))
    }

    /// Stops tracking a session (closed or expired by a committed entry).
    pub fn remove(&mut self, id: SessionId) {
        if let Some(d) = self.deadline_ms.remove(&id) {
            self.queue.remove(&(d, id));
        }
    }

    /// Sessions whose deadline passed at `now_ms`, oldest first, at most `max`.
    pub fn due(&self, now_ms: u64, max: usize) -> Vec<SessionId> {
        self.queue
            .iter()
            .take_while(|(d, _)| *d <= now_ms)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Leader takeover at `now_ms`: every session gets
    /// `now_ms + ttl + grace + spread(id)`, where the spread, derived from
    /// the id, lies in `[0, ttl / 4]` so expiries do not all land at once.
    /// Existing later deadlines are kept.
    pub fn takeover(
        &mut self,
        now_ms: u64,
        grace_ms: u64,
        sessions: impl IntoIterator<Item = (SessionId, u64)>,
    ) {
        for (id, ttl_ms) in sessions {
            let deadline = now_ms
                .saturating_add(ttl_ms)
                .saturating_add(grace_ms)
                .saturating_add(spread_ms(id, ttl_ms));
            self.extend_to(id, deadline);
        }
    }

    /// Forgets everything (on losing leadership).
    pub fn clear(&mut self) {
        self.deadline_ms.clear();
        self.queue.clear();
    }
}

/// A deterministic spread in `[0, ttl_ms / 4]` from the session id.
pub fn spread_ms(id: SessionId, ttl_ms: u64) -> u64 {
    let span = ttl_ms / 4;
    if span == 0 {
        return 0;
    }
    // SplitMix64 finalizer: a well-mixed hash of the id.
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % (span + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_moves_forward_and_never_revives() {
        let mut t = DeadlineTable::new();
        t.extend_to(1, 1_000);
        assert_eq!(t.renew(1, 500, 1_000), Ok(1_500));
        // A renewal with a shorter horizon never moves the deadline back.
        assert_eq!(t.renew(1, 501, 10), Ok(1_500));
        assert_eq!(t.renew(1, 1_500, 1_000), Err(RenewError::Expired));
        assert_eq!(t.renew(2, 0, 1_000), Err(RenewError::Unknown));
        assert_eq!(t.due(1_499, 10), Vec::<u64>::new());
        assert_eq!(t.due(1_500, 10), vec![1]);
        t.remove(1);
        assert!(t.is_empty() && t.due(u64::MAX, 10).is_empty());
    }

    #[test]
    fn takeover_covers_ttl_plus_grace_and_spreads() {
        let mut t = DeadlineTable::new();
        let sessions: Vec<(u64, u64)> = (1..=1_000).map(|id| (id, 10_000)).collect();
        t.takeover(100, 500, sessions.clone());
        let mut distinct = BTreeSet::new();
        for (id, ttl) in sessions {
            let d = t.deadline_ms(id).expect("tracked");
            assert!(d >= 100 + ttl + 500, "never earlier than now + ttl + grace");
            assert!(d <= 100 + ttl + 500 + ttl / 4);
            distinct.insert(d);
        }
        assert!(
            distinct.len() > 500,
            "deadlines are spread: {}",
            distinct.len()
        );
        // Due lists come oldest first and respect the batch limit.
        let due = t.due(u64::MAX, 7);
        assert_eq!(due.len(), 7);
        let ds: Vec<_> = due.iter().map(|id| t.deadline_ms(*id)).collect();
        assert!(ds.windows(2).all(|w| w[0] <= w[1]));
    }
}
