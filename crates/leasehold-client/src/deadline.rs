//! The holder side of the time model (docs/adr/0001-time-model.md §3, §5a):
//! how long a holder may believe a session, counted from before its
//! request, with a drift bound at least the cluster's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use leasehold_core::limits::DRIFT_PPM_MAX;
use leasehold_core::time::holder_validity_ms;
use tokio::sync::watch;

/// Default bound on clock drift: 1% (10,000 ppm), the service's default.
pub const DRIFT_PPM_DEFAULT: u32 = 10_000;

/// Default scheduling margin subtracted from every holder deadline.
pub const MARGIN_DEFAULT: Duration = Duration::from_millis(5);

/// The holder's clock rules: drift bound ρ and scheduling margin `m`.
///
/// A holder reads `t_send = Instant::now()` *before* sending a request that
/// grants or renews, and on a reply "alive for `ttl_ms`" believes the
/// session until `t_send + ttl × (1 − ρ) / (1 + ρ) − m`. Counting from
/// `t_send` means a late or duplicated reply can never extend anything
/// beyond what the leader keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderClock {
    /// Drift bound ρ in parts per million (at most 100,000).
    drift_ppm: u32,
    /// Scheduling margin `m`.
    margin: Duration,
}

impl Default for HolderClock {
    fn default() -> Self {
        HolderClock {
            drift_ppm: DRIFT_PPM_DEFAULT,
            margin: MARGIN_DEFAULT,
        }
    }
}

impl HolderClock {
    /// A clock with drift bound `drift_ppm` (clamped to
    /// [`DRIFT_PPM_MAX`]) and scheduling margin `margin`.
    pub fn new(drift_ppm: u32, margin: Duration) -> Self {
        HolderClock {
            drift_ppm: drift_ppm.min(DRIFT_PPM_MAX),
            margin,
        }
    }

    /// The drift bound, in parts per million.
    pub fn drift_ppm(&self) -> u32 {
        self.drift_ppm
    }

    /// The scheduling margin.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// How long a grant or renewal of `ttl_ms` may be believed, counted from
    /// the instant read before sending the request.
    pub fn validity(&self, ttl_ms: u64) -> Duration {
        let margin_ms = u64::try_from(self.margin.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(holder_validity_ms(ttl_ms, self.drift_ppm, margin_ms))
    }

    /// The holder deadline a reply "alive for `ttl_ms`" to a request sent
    /// after `t_send` supports.
    pub fn deadline(&self, t_send: Instant, ttl_ms: u64) -> Instant {
        t_send + self.validity(ttl_ms)
    }

    /// `current` extended by a reply to the request sent after `t_send`:
    /// `max(current, t_send + validity(ttl_ms))`. Never moves a deadline
    /// back, so replies arriving out of order or twice are harmless.
    pub fn extend(&self, current: Instant, t_send: Instant, ttl_ms: u64) -> Instant {
        current.max(self.deadline(t_send, ttl_ms))
    }
}

/// The holder clock every session of one client computes its deadlines
/// with: the configured [`HolderClock`], its drift bound raised to the
/// largest the cluster reported (`drift_ppm` in the answers to OpenSession,
/// Acquire, KeepAlive and Status). The bound only grows, so deadlines
/// computed with it only move earlier.
#[derive(Debug)]
pub(crate) struct SharedClock {
    /// Drift bound and margin the client was configured with.
    configured: HolderClock,
    /// max(configured ρ, largest ρ the cluster reported), in ppm.
    drift_ppm: AtomicU32,
    /// Tells the watchdogs about every raise (carries the raised ρ), so
    /// that they re-arm at the earlier deadline.
    raised: watch::Sender<u32>,
}

impl SharedClock {
    /// Starts from the configured rules.
    pub(crate) fn new(configured: HolderClock) -> Self {
        let (raised, _) = watch::channel(configured.drift_ppm());
        SharedClock {
            configured,
            drift_ppm: AtomicU32::new(configured.drift_ppm()),
            raised,
        }
    }

    /// The rules in force now: the configured margin and the effective ρ.
    pub(crate) fn current(&self) -> HolderClock {
        HolderClock::new(
            self.drift_ppm.load(Ordering::SeqCst),
            self.configured.margin(),
        )
    }

    /// Adopts the drift bound an answer of the cluster reported (0: a
    /// server that does not report it, which changes nothing). Returns
    /// whether the effective bound was raised.
    pub(crate) fn observe(&self, cluster_drift_ppm: u32) -> bool {
        let ppm = cluster_drift_ppm.min(DRIFT_PPM_MAX);
        let previous = self.drift_ppm.fetch_max(ppm, Ordering::SeqCst);
        if ppm <= previous {
            return false;
        }
        tracing::info!(
            from_ppm = previous,
            to_ppm = ppm,
            "adopting the cluster's larger drift bound: holder deadlines move earlier"
        );
        self.raised.send_modify(|v| *v = (*v).max(ppm));
        true
    }

    /// A receiver that sees every raise of the bound.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u32> {
        self.raised.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_ttl_shrunk_by_drift_minus_margin() {
        let c = HolderClock::default();
        // 10 s × 0.99 / 1.01 = 9801.98 → 9801 ms, minus 5 ms.
        assert_eq!(c.validity(10_000), Duration::from_millis(9_796));
        let exact = HolderClock::new(0, Duration::ZERO);
        assert_eq!(exact.validity(10_000), Duration::from_millis(10_000));
        // Never negative.
        assert_eq!(c.validity(3), Duration::ZERO);
        // Drift above the service's maximum is clamped.
        assert_eq!(
            HolderClock::new(u32::MAX, Duration::ZERO).drift_ppm(),
            100_000
        );
    }

    #[test]
    fn deadline_counts_from_the_send_instant() {
        let c = HolderClock::new(0, Duration::from_millis(5));
        let t = Instant::now();
        assert_eq!(c.deadline(t, 1_000), t + Duration::from_millis(995));
    }

    #[test]
    fn extend_never_moves_back() {
        let c = HolderClock::new(10_000, Duration::from_millis(5));
        let t0 = Instant::now();
        let d1 = c.extend(t0, t0, 10_000);
        assert_eq!(d1, t0 + Duration::from_millis(9_796));
        // A reply to an older request (earlier send) cannot shorten it.
        let d2 = c.extend(d1, t0, 1_000);
        assert_eq!(d2, d1);
        // A reply to a later request moves it forward by the send gap.
        let t1 = t0 + Duration::from_millis(3_000);
        let d3 = c.extend(d2, t1, 10_000);
        assert_eq!(d3, t1 + Duration::from_millis(9_796));
        // A duplicate of the same reply changes nothing.
        assert_eq!(c.extend(d3, t1, 10_000), d3);
    }

    #[test]
    fn holder_deadline_is_before_the_leaders_in_real_time() {
        // Leader keeps t_recv + TTL by a clock at most ρ slow; the holder's
        // clock at most ρ fast. With t_recv ≥ t_send the holder's real span
        // validity/(1−ρ) must not exceed TTL/(1+ρ).
        for ppm in [0u32, 10_000, 100_000] {
            let c = HolderClock::new(ppm, Duration::ZERO);
            for ttl in [100u64, 1_000, 30_000] {
                let v = c.validity(ttl).as_millis();
                let rho = u128::from(ppm);
                assert!(v * (1_000_000 + rho) <= u128::from(ttl) * (1_000_000 - rho));
            }
        }
    }

    #[test]
    fn the_shared_clock_takes_the_larger_bound_and_never_lowers_it() {
        let shared = SharedClock::new(HolderClock::new(10_000, Duration::from_millis(5)));
        let mut raised = shared.subscribe();
        // A cluster bound at or below the configured one changes nothing;
        // 0 is a server that does not report it.
        for ppm in [0, 5_000, 10_000] {
            assert!(!shared.observe(ppm));
        }
        assert!(!raised.has_changed().expect("sender alive"));
        assert_eq!(shared.current().drift_ppm(), 10_000);
        assert!(shared.observe(100_000));
        assert!(raised.has_changed().expect("sender alive"));
        assert_eq!(*raised.borrow_and_update(), 100_000);
        assert_eq!(
            shared.current(),
            HolderClock::new(100_000, Duration::from_millis(5))
        );
        // Never lowered; clamped to the service's maximum.
        assert!(!shared.observe(20_000));
        assert!(!shared.observe(u32::MAX));
        assert_eq!(shared.current().drift_ppm(), DRIFT_PPM_MAX);
        assert!(!raised.has_changed().expect("sender alive"));
    }
}
