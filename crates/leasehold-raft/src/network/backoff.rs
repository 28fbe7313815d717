//! Capped exponential backoff for unreachable peers.

use std::time::Duration;

/// First pause after a peer turned out unreachable.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Longest pause between two attempts to reach a peer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Smallest initial delay accepted: a zero start would never grow.
const BACKOFF_INITIAL_FLOOR: Duration = Duration::from_millis(1);

/// An infinite iterator of pauses: `initial`, `2·initial`, `4·initial`, …,
/// capped at `max` and repeating `max` from then on.
///
/// openraft asks [`RaftNetwork::backoff`](openraft::RaftNetwork::backoff) for
/// a fresh one when a peer first reports `Unreachable` and drops it after the
/// next success, so each outage starts again from `initial`: a short blip
/// costs little, a dead peer costs at most one attempt every `max`.
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    /// The pause the next call to `next()` returns.
    next: Duration,
    /// The cap; growth stops here.
    max: Duration,
}

impl ExponentialBackoff {
    /// A backoff starting at `initial` (at least 1 ms, at most `max`) and
    /// doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let next = initial.max(BACKOFF_INITIAL_FLOOR).min(max);
        ExponentialBackoff { next, max }
    }
}

impl Default for ExponentialBackoff {
    /// [`BACKOFF_INITIAL`] doubling up to [`BACKOFF_MAX`].
    fn default() -> Self {
        ExponentialBackoff::new(BACKOFF_INITIAL, BACKOFF_MAX)
    }
}

impl Iterator for ExponentialBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = current.saturating_mul(2).min(self.max);
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_doubles_from_50ms_and_caps_at_2s() {
        let got: Vec<Duration> = ExponentialBackoff::default().take(10).collect();
        let want = [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000, 2000].map(ms);
        assert_eq!(got, want);
    }

    #[test]
    fn never_ends_and_stays_at_cap() {
        let mut backoff = ExponentialBackoff::new(ms(10), ms(35));
        assert_eq!(
            backoff.by_ref().take(3).collect::<Vec<_>>(),
            [10, 20, 35].map(ms)
        );
        for _ in 0..1_000 {
            assert_eq!(backoff.next(), Some(ms(35)));
        }
    }

    #[test]
    fn initial_above_cap_is_clamped() {
        let got: Vec<Duration> = ExponentialBackoff::new(ms(5_000), ms(2_000))
            .take(3)
            .collect();
        assert_eq!(got, [2000, 2000, 2000].map(ms));
    }

    #[test]
    fn zero_initial_still_grows() {
        let got: Vec<Duration> = ExponentialBackoff::new(Duration::ZERO, ms(8))
            .take(5)
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 8].map(ms));
    }

    #[test]
    fn huge_cap_does_not_overflow() {
        let mut backoff = ExponentialBackoff::new(ms(1), Duration::MAX);
        let last = backoff.by_ref().take(200).last();
        assert_eq!(last, Some(Duration::MAX));
        assert_eq!(backoff.next(), Some(Duration::MAX));
    }
}
