//! The node's monotonic clock, with a **test-only** skew for chaos testing.
//!
//! Production nodes use [`Clock::real`]. The skewed clock makes this node's
//! lease decisions (leader lease, session deadlines, expiry) see time run
//! faster or slower than real time, or jump forward, so chaos tests can
//! show that drift within the configured ρ stays safe and drift beyond it
//! is caught by the checker. It never affects Raft's own timers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A monotonic clock, possibly skewed (tests only).
#[derive(Debug)]
pub struct Clock {
    /// Real instant at which the skew started counting.
    origin: Instant,
    /// Rate error in parts per million: +50_000 runs 5% fast, -50_000 5% slow.
    rate_ppm: i64,
    /// Total forward jumps applied so far, in ms.
    jumped_ms: AtomicU64,
}

impl Clock {
    /// The real monotonic clock.
    pub fn real() -> Self {
        Clock::skewed(0)
    }

    /// A clock running at `1 + rate_ppm / 10⁶` times real speed. Test only.
    pub fn skewed(rate_ppm: i64) -> Self {
        Clock {
            origin: Instant::now(),
            rate_ppm: rate_ppm.clamp(-900_000, 900_000),
            jumped_ms: AtomicU64::new(0),
        }
    }

    /// Whether this clock is skewed at all.
    pub fn is_skewed(&self) -> bool {
        self.rate_ppm != 0 || self.jumped_ms.load(Ordering::Relaxed) != 0
    }

    /// Moves the clock forward by `ms` at once. Test only.
    pub fn jump(&self, ms: u64) {
        self.jumped_ms.fetch_add(ms, Ordering::Relaxed);
        tracing::warn!(jump_ms = ms, "test clock jumped forward");
    }

    /// Now, on this clock.
    pub fn now(&self) -> Instant {
        let real = Instant::now();
        let jumped = Duration::from_millis(self.jumped_ms.load(Ordering::Relaxed));
        if self.rate_ppm == 0 {
            return real + jumped;
        }
        let elapsed_ns = real.saturating_duration_since(self.origin).as_nanos() as i128;
        let scaled_ns = elapsed_ns * (1_000_000 + self.rate_ppm as i128) / 1_000_000;
        let scaled = Duration::from_nanos(u64::try_from(scaled_ns.max(0)).unwrap_or(u64::MAX));
        self.origin + scaled + jumped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn skew_scales_elapsed_time_and_jumps_add() {
        let fast = Clock::skewed(100_000);
        let slow = Clock::skewed(-100_000);
        let real = Clock::real();
        let (f0, s0, r0) = (fast.now(), slow.now(), real.now());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(fast.now() - f0, Duration::from_secs(11));
        assert_eq!(slow.now() - s0, Duration::from_secs(9));
        assert_eq!(real.now() - r0, Duration::from_secs(10));
        assert!(!real.is_skewed());
        real.jump(500);
        assert_eq!(real.now() - r0, Duration::from_millis(10_500));
        assert!(real.is_skewed());
    }
}
