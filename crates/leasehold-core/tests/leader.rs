//! Property tests of the leader's rules ([`LeaderState`]) against a naive
//! model, over random interleavings of applied opens and ends, keepalives
//! (with right and wrong secrets), expiry scans, quorum confirmations,
//! leader changes and clock advances.
//!
//! What must hold at every step:
//! - a session whose deadline passed is never renewed;
//! - an expired or closed session is never reported alive;
//! - deadlines never move backwards while a leader tracks them;
//! - after takeover at `T0` no session's deadline is earlier than
//!   `T0 + TTL + grace`;
//! - nothing is renewed or expired while the leader lease is not valid;
//! - answers equal the naive model's.

use std::collections::{BTreeMap, BTreeSet};

use leasehold_core::leader::spread_ms;
use leasehold_core::{
    LeaderState, LeaseConfig, RenewOutcome, Renewal, SessionChange, SessionSecret,
};
use proptest::prelude::*;

const W_MS: u64 = 600;
const MARGIN_MS: u64 = 10;
const RETRY_MS: u64 = 5_000;
const TTLS: [u64; 3] = [2_000, 3_000, 10_000];

#[derive(Debug, Clone)]
enum Op {
    /// An entry opening a session applies.
    Open { ttl: usize },
    /// An entry closing or expiring the `who`-th session applies.
    End { who: usize },
    /// The clock moves.
    Advance { ms: u64 },
    /// The clock moves to exactly the `who`-th tracked session's deadline
    /// (the boundary where "passed" must already hold).
    ToDeadline { who: usize },
    /// A heartbeat round started `lag` ms ago was confirmed by a quorum.
    Confirm { lag: u64 },
    /// A keepalive for some sessions; `forged` ones present a wrong secret.
    KeepAlive { who: Vec<usize>, forged: bool },
    /// The expiry loop asks what is due.
    Due { limit: usize },
    /// Leadership lost (new term elsewhere).
    StepDown,
    /// This node took over in a new term.
    Takeover,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..TTLS.len()).prop_map(|ttl| Op::Open { ttl }),
        2 => (0..16usize).prop_map(|who| Op::End { who }),
        4 => prop_oneof![0..50u64, 0..700u64, 0..4_000u64].prop_map(|ms| Op::Advance { ms }),
        2 => (0..16usize).prop_map(|who| Op::ToDeadline { who }),
        3 => (0..200u64).prop_map(|lag| Op::Confirm { lag }),
        4 => (prop::collection::vec(0..16usize, 1..5), any::<bool>())
            .prop_map(|(who, forged)| Op::KeepAlive { forged: forged && who.len() == 1, who }),
        2 => (1..4usize).prop_map(|limit| Op::Due { limit }),
        1 => Just(Op::StepDown),
        1 => Just(Op::Takeover),
    ]
}

fn secret_of(id: u64) -> SessionSecret {
    SessionSecret([id as u8 ^ 0x5a; 16])
}

/// The naive model: lists and linear scans, written from the ADR's rules.
#[derive(Default)]
struct Naive {
    /// Open sessions in the applied state: id → ttl.
    applied: BTreeMap<u64, u64>,
    /// Every id ever ended.
    ended: BTreeSet<u64>,
    /// Leading in this term since takeover.
    term: Option<u64>,
    acked: Option<u64>,
    grace_until: u64,
    /// Tracked deadlines and when an expiry was last proposed.
    deadlines: BTreeMap<u64, (u64, Option<u64>)>,
}

impl Naive {
    fn validity(&self, config: &LeaseConfig) -> u64 {
        let rho = config.drift_ppm as u128;
        let v = W_MS as u128 * (1_000_000 - rho) / (1_000_000 + rho);
        (v as u64).saturating_sub(MARGIN_MS)
    }

    fn serves(&self, now: u64, config: &LeaseConfig) -> bool {
        match (self.term, self.acked) {
            (Some(_), Some(a)) => now < a + self.validity(config),
            _ => false,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn leader_rules_match_the_naive_model(ops in prop::collection::vec(op(), 1..200)) {
        let config = LeaseConfig {
            vote_window_ms: W_MS,
            ..LeaseConfig::default()
        };
        let mut real = LeaderState::new(W_MS, MARGIN_MS, &config);
        let mut naive = Naive::default();
        let mut now: u64 = 1_000;
        let mut next_index: u64 = 1;
        let mut term: u64 = 0;
        for op in ops {
            let before: BTreeMap<u64, u64> = naive
                .applied
                .keys()
                .filter_map(|id| real.deadline_ms(*id).map(|d| (*id, d)))
                .collect();
            let term_before = real.term();
            match op {
                Op::Open { ttl } => {
                    let id = next_index;
                    next_index += 1;
                    let ttl_ms = TTLS[ttl];
                    naive.applied.insert(id, ttl_ms);
                    if naive.term.is_some() {
                        naive.deadlines.insert(id, (now + ttl_ms, None));
                    }
                    real.apply(SessionChange::Opened { session: id, ttl_ms, secret: secret_of(id) }, now);
                }
                Op::End { who } => {
                    let Some(&id) = naive.applied.keys().nth(who) else { continue };
                    naive.applied.remove(&id);
                    naive.ended.insert(id);
                    naive.deadlines.remove(&id);
                    real.apply(SessionChange::Ended { session: id }, now);
                }
                Op::Advance { ms } => now += ms,
                Op::ToDeadline { who } => {
                    if let Some((d, _)) = naive.deadlines.values().nth(who) {
                        now = now.max(*d);
                    }
                }
                Op::Confirm { lag } => {
                    let asked = now.saturating_sub(lag);
                    let took = real.confirmed(term, asked);
                    prop_assert_eq!(took, naive.term == Some(term));
                    if took {
                        naive.acked = Some(naive.acked.map_or(asked, |a| a.max(asked)));
                    }
                }
                Op::KeepAlive { who, forged } => {
                    let ids: Vec<u64> = who
                        .iter()
                        .map(|w| naive.applied.keys().nth(*w).copied().unwrap_or(10_000 + *w as u64))
                        .collect();
                    let asked: Vec<_> = ids
                        .iter()
                        .map(|id| (*id, if forged { SessionSecret([0xff; 16]) } else { secret_of(*id) }))
                        .collect();
                    let got = real.renew(&asked, now);
                    if !naive.serves(now, &config) {
                        prop_assert_eq!(got, RenewOutcome::NotServing, "renewed while not serving");
                        continue;
                    }
                    if forged && naive.deadlines.contains_key(&ids[0]) {
                        prop_assert_eq!(got, RenewOutcome::Denied(ids[0]));
                        continue;
                    }
                    let RenewOutcome::Renewed(got) = got else {
                        return Err(TestCaseError::fail(format!("unexpected {got:?}")));
                    };
                    for (id, answer) in ids.iter().zip(got) {
                        let expected = match naive.deadlines.get_mut(id) {
                            None => Renewal::NotAlive,
                            Some((d, _)) if *d <= now => Renewal::NotAlive,
                            Some((d, _)) => {
                                let ttl_ms = naive.applied[id];
                                *d = (*d).max(now + ttl_ms);
                                Renewal::Alive { ttl_ms }
                            }
                        };
                        prop_assert_eq!(answer, expected, "session {}", id);
                        if naive.ended.contains(id) {
                            prop_assert!(!matches!(answer, Renewal::Alive { .. }), "ended session {} renewed", id);
                        }
                    }
                }
                Op::Due { limit } => {
                    let got = real.due(now, limit, RETRY_MS);
                    let mut expected = Vec::new();
                    if naive.serves(now, &config) {
                        let mut by_deadline: Vec<(u64, u64)> = naive
                            .deadlines
                            .iter()
                            .filter(|(_, (d, p))| *d <= now && p.is_none_or(|p| now >= p + RETRY_MS))
                            .map(|(id, (d, _))| (*d, *id))
                            .collect();
                        by_deadline.sort();
                        for (_, id) in by_deadline.into_iter().take(limit) {
                            if let Some(x) = naive.deadlines.get_mut(&id) { x.1 = Some(now); }
                            expected.push(id);
                        }
                    }
                    prop_assert_eq!(&got, &expected);
                    for id in &got {
                        let d = real.deadline_ms(*id).expect("tracked");
                        prop_assert!(d <= now, "session {} proposed for expiry before its deadline", id);
                    }
                }
                Op::StepDown => {
                    real.step_down();
                    naive.term = None;
                    naive.acked = None;
                    naive.deadlines.clear();
                }
                Op::Takeover => {
                    term += 1;
                    let asked = now.saturating_sub(5);
                    let sessions: Vec<_> = naive.applied.iter().map(|(id, ttl)| (*id, *ttl, secret_of(*id))).collect();
                    real.takeover(term, asked, now, sessions).expect("may lead");
                    naive.term = Some(term);
                    naive.acked = Some(asked);
                    naive.deadlines = naive
                        .applied
                        .iter()
                        .map(|(id, ttl)| (*id, (now + ttl + config.grace_margin_ms + spread_ms(*id, *ttl), None)))
                        .collect();
                    naive.grace_until = naive.deadlines.values().map(|x| x.0).max().unwrap_or(now);
                    for (id, ttl) in &naive.applied {
                        let d = real.deadline_ms(*id).expect("tracked after takeover");
                        prop_assert!(d >= now + ttl + config.grace_margin_ms, "takeover deadline of {} too early", id);
                    }
                }
            }
            // Same deadlines as the model, and none moved back within a term.
            for (id, (d, _)) in &naive.deadlines {
                prop_assert_eq!(real.deadline_ms(*id), Some(*d), "deadline of {}", id);
            }
            prop_assert_eq!(real.tracked(), naive.deadlines.len());
            if real.term() == term_before && real.term().is_some() {
                for (id, d) in before {
                    if let Some(after) = real.deadline_ms(id) {
                        prop_assert!(after >= d, "deadline of {} moved back", id);
                    }
                }
            }
            prop_assert_eq!(real.serving(now).may_serve(), naive.serves(now, &config));
            let _ = naive.grace_until;
        }
    }
}
