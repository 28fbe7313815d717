//! The arithmetic of the time model (docs/adr/0001-time-model.md), as pure
//! functions of durations. Nothing here reads a clock: callers pass the
//! instants they read, as milliseconds on their own monotonic clock.

/// Parts per million.
const PPM: u128 = 1_000_000;

/// How long a holder may believe a lease after `t_send` (the instant it read
/// *before* sending the request that granted or renewed it):
/// `TTL × (1 − ρ) / (1 + ρ) − margin`, rounded down, never negative.
pub fn holder_validity_ms(ttl_ms: u64, drift_ppm: u32, margin_ms: u64) -> u64 {
    shrink_ms(ttl_ms, drift_ppm).saturating_sub(margin_ms)
}

/// How long after `A` (the send time, on the leader's clock, of the last
/// heartbeat round a quorum acknowledged) the leader may still serve:
/// `W × (1 − ρ) / (1 + ρ) − margin`, where `W` is how long followers refuse
/// to vote after hearing from the leader.
pub fn leader_lease_validity_ms(vote_refusal_ms: u64, drift_ppm: u32, margin_ms: u64) -> u64 {
    shrink_ms(vote_refusal_ms, drift_ppm).saturating_sub(margin_ms)
}

/// How long a restarted node must refuse votes so that an acknowledgement
/// it gave just before dying still counts: `W × (1 + ρ)`, rounded up.
pub fn restart_vote_refusal_ms(vote_refusal_ms: u64, drift_ppm: u32) -> u64 {
    let w = vote_refusal_ms as u128;
    let v = (w * (PPM + drift_ppm as u128)).div_ceil(PPM);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// When a follower that last accepted a leader's AppendEntries at
/// `heard_ms` (its own clock) starts an election itself: `W × (1 + ρ)`
/// later, when every voter that heard from that leader no later than it
/// did has let its vote window run out on its own clock, plus `jitter_ms`
/// so that the followers of one leader do not all stand at once.
/// openraft 0.9 would wait `W` plus a random election timeout. Starting
/// sooner is safe: safety rests on voters refusing votes within `W`, not
/// on when candidates stand.
pub fn prompt_election_at_ms(
    heard_ms: u64,
    vote_refusal_ms: u64,
    drift_ppm: u32,
    jitter_ms: u64,
) -> u64 {
    heard_ms
        .saturating_add(restart_vote_refusal_ms(vote_refusal_ms, drift_ppm))
        .saturating_add(jitter_ms)
}

/// `d × (1 − ρ) / (1 + ρ)`, rounded down.
fn shrink_ms(d_ms: u64, drift_ppm: u32) -> u64 {
    let rho = (drift_ppm as u128).min(PPM);
    let v = d_ms as u128 * (PPM - rho) / (PPM + rho);
    // v <= d_ms, so it fits.
    u64::try_from(v).unwrap_or(d_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_always_gives_up_before_the_leader() {
        // In real time the holder's span is at most validity / (1 − ρ) and
        // the leader's at least TTL / (1 + ρ): check the inequality exactly.
        for ttl in [100u64, 1_000, 2_000, 10_000, 86_400_000] {
            for ppm in [0u32, 1, 10_000, 50_000, 100_000] {
                let v = holder_validity_ms(ttl, ppm, 0) as u128;
                // v / (1 - ρ) <= ttl / (1 + ρ)  ⇔  v (1 + ρ) <= ttl (1 - ρ)
                assert!(
                    v * (PPM + ppm as u128) <= ttl as u128 * (PPM - ppm as u128),
                    "ttl {ttl} ppm {ppm}"
                );
            }
        }
        assert_eq!(holder_validity_ms(10_000, 0, 5), 9_995);
        assert_eq!(holder_validity_ms(10_000, 10_000, 0), 9_801);
        assert_eq!(holder_validity_ms(3, 0, 10), 0);
    }

    #[test]
    fn restart_refusal_covers_the_drifted_window() {
        assert_eq!(restart_vote_refusal_ms(600, 0), 600);
        assert_eq!(restart_vote_refusal_ms(600, 10_000), 606);
        assert_eq!(restart_vote_refusal_ms(1, 10_000), 2);
        assert_eq!(leader_lease_validity_ms(600, 10_000, 20), 568);
    }

    #[test]
    fn a_prompt_election_waits_out_every_voters_window() {
        // Never before a voter that heard from the leader at the same
        // instant, with a clock up to ρ fast, could vote again.
        for w in [1u64, 300, 600, 5_000] {
            for ppm in [0u32, 10_000, 100_000] {
                let at = prompt_election_at_ms(1_000, w, ppm, 0);
                assert!(at >= 1_000 + w, "w {w} ppm {ppm}");
                assert_eq!(at, 1_000 + restart_vote_refusal_ms(w, ppm));
            }
        }
        assert_eq!(prompt_election_at_ms(1_000, 600, 10_000, 37), 1_643);
        // A corrupt or absurd input saturates rather than wrapping early.
        assert_eq!(prompt_election_at_ms(u64::MAX - 1, 600, 0, 5), u64::MAX);
    }
}
