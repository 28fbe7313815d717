//! The leader's rules, with time injected: its own leader lease, the
//! in-memory session deadlines, renewal refusal, expiry scheduling,
//! takeover with failover grace, and the vote gate.
//!
//! Only a leader keeps deadlines; they are never replicated. Every instant
//! is milliseconds on the leader's monotonic clock, passed in by the
//! caller. The table is fed by the sessions that applied entries open and
//! end ([`SessionChange`]), under the same lock as the apply, so what it
//! tracks is exactly the applied state's sessions while this node leads:
//! a session whose `ExpireSessions` (or close) applied is gone from it, and
//! no renewal can bring it back (docs/adr/0001-time-model.md §3, §4, §5).
//!
//! Leases may end late, never early: a deadline only moves forward while
//! tracked, a session whose deadline passed is never renewed, and at
//! takeover every session gets `T0 + TTL + grace + spread`.

use std::collections::{BTreeSet, HashMap};

use crate::config::LeaseConfig;
use crate::outcome::SessionChange;
use crate::time::leader_lease_validity_ms;
use crate::types::{SessionId, SessionSecret};

/// Whether and how the leader serves at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Leader lease valid, past failover grace.
    Serving,
    /// Leader lease valid; some session refreshed at takeover has not yet
    /// reached its deadline.
    FailoverGrace {
        /// Until the last refreshed takeover deadline passes, in ms.
        remaining_ms: u64,
    },
    /// Took over in this term, but no quorum confirmed it recently enough.
    WaitingForQuorum,
    /// Has not taken over (not the leader, or not confirmed in its term).
    NotLeading,
}

impl Serving {
    /// Whether grants and renewals may be answered.
    pub fn may_serve(self) -> bool {
        matches!(self, Serving::Serving | Serving::FailoverGrace { .. })
    }
}

/// The answer to renewing one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for `ttl_ms` from now.
    Alive {
        /// The session's TTL.
        ttl_ms: u64,
    },
    /// Unknown, closed, expired, or its deadline passed: never renewed.
    NotAlive,
}

/// The answer to one keepalive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    /// This node may not serve now: nothing was renewed.
    NotServing,
    /// This tracked session was named without its secret: nothing was
    /// renewed (the whole keepalive is refused).
    Denied(SessionId),
    /// One answer per session, in order.
    Renewed(Vec<Renewal>),
}

/// One tracked session: 40 bytes, as the leader keeps one per open
/// session (a million of them on a full node).
#[derive(Debug, Clone, Copy)]
struct Tracked {
    /// Renewals extend the deadline to `now + ttl_ms`. A `u32` holds every
    /// TTL the configuration admits (at most `TTL_MS_CEILING`, 24 h).
    ttl_ms: u32,
    /// Never earlier than any promise made to its holder.
    deadline_ms: u64,
    /// What keepalives must present.
    secret: SessionSecret,
    /// When an expiry was last proposed for it (its deadline had passed).
    expiry_proposed: ProposedAt,
}

/// When an expiry was last proposed, in 8 bytes rather than
/// `Option<u64>`'s 16: the time plus one, so that no value means never.
#[derive(Debug, Clone, Copy, Default)]
struct ProposedAt(Option<std::num::NonZeroU64>);

impl ProposedAt {
    /// Proposed at `now_ms`.
    fn at(now_ms: u64) -> Self {
        ProposedAt(std::num::NonZeroU64::new(now_ms.saturating_add(1)))
    }

    /// The time it was proposed, if ever.
    fn get(self) -> Option<u64> {
        self.0.map(|n| n.get() - 1)
    }
}

/// Capacity of the tracked-session table that is kept however few sessions
/// are left (below it, shrinking saves too little to be worth a rehash).
const TRACKED_CAPACITY_KEPT: usize = 4_096;

/// The leader's in-memory rules. Pure: no clock, no I/O.
#[derive(Debug, Clone)]
pub struct LeaderState {
    /// This node's own vote-refusal window (its `election_timeout_ms_max`):
    /// how long its Raft refuses votes after hearing from a leader.
    local_window_ms: u64,
    /// `W`, the cluster-wide window from the replicated configuration (0:
    /// not set yet, then the local one is used).
    cluster_window_ms: u64,
    /// Scheduling margin subtracted from the leader lease.
    margin_ms: u64,
    /// ρ from the replicated configuration.
    drift_ppm: u32,
    /// g from the replicated configuration (added at takeover).
    grace_margin_ms: u64,
    /// Term in which this node took over (None: not leading).
    term: Option<u64>,
    /// `A`: start of the last round a quorum confirmed in `term`.
    acked_at_ms: Option<u64>,
    /// When the last deadline refreshed at takeover passes.
    grace_until_ms: u64,
    /// Votes are refused until then: the end of the longest leader lease
    /// this node ever held. Kept across stepping down, so a node whose Raft
    /// role changed (as the asynchronous metrics may show late or early)
    /// never helps elect another leader while its own lease may still run.
    votes_refused_until_ms: u64,
    /// Set for good by [`LeaderState::step_aside`] (the node is shutting
    /// down): it serves nothing and never takes over again.
    stepped_aside: bool,
    /// The lease validity fixed at takeover: a configuration applied
    /// mid-term may shorten the lease (a smaller `W`, a larger ρ) but never
    /// lengthen it past what the vote gate and the followers were promised
    /// when this term's lease was computed.
    validity_cap_ms: Option<u64>,
    /// Tracked sessions (only while leading).
    sessions: HashMap<SessionId, Tracked>,
    /// The same, ordered by deadline, so due sessions are found in O(log n).
    queue: BTreeSet<(u64, SessionId)>,
}

impl LeaderState {
    /// A node that does not lead yet. `local_window_ms` is this node's own
    /// vote-refusal window, `margin_ms` the scheduling margin of the leader
    /// lease.
    pub fn new(local_window_ms: u64, margin_ms: u64, config: &LeaseConfig) -> Self {
        LeaderState {
            local_window_ms,
            cluster_window_ms: config.vote_window_ms,
            margin_ms,
            drift_ppm: config.drift_ppm,
            grace_margin_ms: config.grace_margin_ms,
            term: None,
            acked_at_ms: None,
            grace_until_ms: 0,
            votes_refused_until_ms: 0,
            stepped_aside: false,
            validity_cap_ms: None,
            sessions: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Adopts a newly applied configuration (ρ, g and the cluster's `W`).
    /// A node whose own window is shorter than the cluster's stops leading
    /// at once (see [`LeaderState::window_mismatch`]).
    pub fn set_config(&mut self, config: &LeaseConfig) {
        self.drift_ppm = config.drift_ppm;
        self.grace_margin_ms = config.grace_margin_ms;
        self.cluster_window_ms = config.vote_window_ms;
        if self.window_mismatch().is_some() {
            self.step_down();
        }
    }

    /// The vote window `W` leases are computed from: the cluster's, or
    /// this node's own while the cluster has none yet.
    pub fn vote_window_ms(&self) -> u64 {
        if self.cluster_window_ms == 0 {
            self.local_window_ms
        } else {
            self.cluster_window_ms
        }
    }

    /// `Some((local, cluster))` when this node refuses votes for less than
    /// the cluster's `W`: it could help elect a leader while another's
    /// lease still runs. Such a node refuses every vote and never leads.
    pub fn window_mismatch(&self) -> Option<(u64, u64)> {
        (self.cluster_window_ms != 0 && self.local_window_ms < self.cluster_window_ms)
            .then_some((self.local_window_ms, self.cluster_window_ms))
    }

    /// How long after `A` the leader may serve: `W (1 − ρ) / (1 + ρ) − m`
    /// with the current `W` and ρ, but never more than at takeover.
    pub fn lease_validity_ms(&self) -> u64 {
        let now = leader_lease_validity_ms(self.vote_window_ms(), self.drift_ppm, self.margin_ms);
        self.validity_cap_ms.map_or(now, |cap| now.min(cap))
    }

    /// The term this node took over in, if it leads.
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Whether this node serves at `now_ms`.
    pub fn serving(&self, now_ms: u64) -> Serving {
        let (Some(_), Some(acked)) = (self.term, self.acked_at_ms) else {
            return Serving::NotLeading;
        };
        if now_ms >= acked.saturating_add(self.lease_validity_ms()) {
            return Serving::WaitingForQuorum;
        }
        if now_ms < self.grace_until_ms {
            Serving::FailoverGrace {
                remaining_ms: self.grace_until_ms - now_ms,
            }
        } else {
            Serving::Serving
        }
    }

    /// Whether this node must refuse a vote request at `now_ms`: while any
    /// leader lease it held may still be running, whatever its Raft role.
    pub fn refuses_votes(&self, now_ms: u64) -> bool {
        now_ms < self.votes_refused_until_ms || self.window_mismatch().is_some()
    }

    /// Takes over in `term` after a quorum confirmed the round started at
    /// `asked_at_ms` and this term's first entry applied. `sessions` are
    /// every open session of the applied state (read under the same lock
    /// that apply takes, so none is missed). Every deadline becomes
    /// `now + TTL + grace + spread(id)`, which covers every promise an
    /// earlier leader made (its renewals all happened before now).
    /// Returns the failover grace in ms, or `None` when this node may not
    /// lead: its window is shorter than the cluster's
    /// ([`LeaderState::window_mismatch`]), the cluster has no `W` yet (a
    /// lease computed from this node's own window could outlast a
    /// follower's shorter one: the leader replicates `W` first), or it
    /// stepped aside.
    pub fn takeover(
        &mut self,
        term: u64,
        asked_at_ms: u64,
        now_ms: u64,
        sessions: impl IntoIterator<Item = (SessionId, u64, SessionSecret)>,
    ) -> Option<u64> {
        if self.window_mismatch().is_some() || self.cluster_window_ms == 0 || self.stepped_aside {
            return None;
        }
        self.sessions.clear();
        self.queue.clear();
        self.term = Some(term);
        self.acked_at_ms = None;
        self.validity_cap_ms = None;
        self.validity_cap_ms = Some(self.lease_validity_ms());
        let mut last = now_ms;
        for (id, ttl_ms, secret) in sessions {
            let deadline_ms = now_ms
                .saturating_add(ttl_ms)
                .saturating_add(self.grace_margin_ms)
                .saturating_add(spread_ms(id, ttl_ms));
            last = last.max(deadline_ms);
            self.insert(id, ttl_ms, deadline_ms, secret);
        }
        self.grace_until_ms = last;
        self.confirmed(term, asked_at_ms);
        Some(last - now_ms)
    }

    /// A quorum confirmed, in `term`, the round started at `asked_at_ms`:
    /// `A` moves forward. Ignored unless this node took over in `term`.
    pub fn confirmed(&mut self, term: u64, asked_at_ms: u64) -> bool {
        if self.term != Some(term) {
            return false;
        }
        if self.acked_at_ms.is_none_or(|a| a < asked_at_ms) {
            self.acked_at_ms = Some(asked_at_ms);
        }
        let until = asked_at_ms.saturating_add(self.lease_validity_ms());
        self.votes_refused_until_ms = self.votes_refused_until_ms.max(until);
        true
    }

    /// Stops leading: forgets every deadline. The vote gate stays shut until
    /// the last lease this node held has run out.
    pub fn step_down(&mut self) {
        self.term = None;
        self.acked_at_ms = None;
        self.validity_cap_ms = None;
        self.grace_until_ms = 0;
        self.sessions = HashMap::new();
        self.queue = BTreeSet::new();
    }

    /// Steps aside for good (the node is shutting down): stops leading as
    /// [`LeaderState::step_down`] does, so nothing is granted, renewed or
    /// expired from now on, and never takes over again. The vote gate is
    /// untouched: it keeps refusing until the last lease this node held has
    /// run out, so stepping aside never lets another leader be elected
    /// sooner than a crash at the same instant would.
    pub fn step_aside(&mut self) {
        self.stepped_aside = true;
        self.step_down();
    }

    /// Whether [`LeaderState::step_aside`] was called.
    pub fn stepped_aside(&self) -> bool {
        self.stepped_aside
    }

    /// Feeds the sessions one applied entry opened or ended, at `now_ms`.
    /// A session opened while leading is tracked until `now + TTL` (the
    /// apply is later than the request's arrival, so this is no earlier
    /// than the promise). Ignored while not leading: takeover reads them.
    pub fn apply(&mut self, change: SessionChange, now_ms: u64) {
        if self.term.is_none() {
            return;
        }
        match change {
            SessionChange::Opened {
                session,
                ttl_ms,
                secret,
            } => {
                let deadline_ms = now_ms.saturating_add(ttl_ms);
                match self.sessions.get(&session) {
                    Some(t) if t.deadline_ms >= deadline_ms => {}
                    _ => self.insert(session, ttl_ms, deadline_ms, secret),
                }
            }
            SessionChange::Ended { session } => self.remove(session),
        }
    }

    /// Renews `sessions` (id and presented secret) for a keepalive received
    /// at `now_ms`: all of them, or none when this node may not serve or a
    /// tracked session's secret is wrong. A session whose deadline passed
    /// is never renewed; an unknown one is not alive (whatever secret came
    /// with it, so the answer tells nothing about other clients' sessions).
    pub fn renew(&mut self, sessions: &[(SessionId, SessionSecret)], now_ms: u64) -> RenewOutcome {
        if !self.serving(now_ms).may_serve() {
            return RenewOutcome::NotServing;
        }
        for (id, secret) in sessions {
            if let Some(t) = self.sessions.get(id) {
                if !t.secret.matches(secret.as_bytes()) {
                    return RenewOutcome::Denied(*id);
                }
            }
        }
        RenewOutcome::Renewed(
            sessions
                .iter()
                .map(|(id, _)| self.renew_one(*id, now_ms))
                .collect(),
        )
    }

    fn renew_one(&mut self, id: SessionId, now_ms: u64) -> Renewal {
        let Some(t) = self.sessions.get_mut(&id) else {
            return Renewal::NotAlive;
        };
        if t.deadline_ms <= now_ms {
            return Renewal::NotAlive;
        }
        let ttl_ms = u64::from(t.ttl_ms);
        let next = now_ms.saturating_add(ttl_ms);
        if next > t.deadline_ms {
            self.queue.remove(&(t.deadline_ms, id));
            t.deadline_ms = next;
            self.queue.insert((next, id));
        }
        Renewal::Alive { ttl_ms }
    }

    /// Sessions whose deadline passed at `now_ms`, oldest first, at most
    /// `limit`, skipping those with an expiry proposed less than `retry_ms`
    /// ago; they are marked as proposed now. Empty unless serving.
    pub fn due(&mut self, now_ms: u64, limit: usize, retry_ms: u64) -> Vec<SessionId> {
        if !self.serving(now_ms).may_serve() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for &(deadline_ms, id) in &self.queue {
            if deadline_ms > now_ms || out.len() >= limit {
                break;
            }
            let Some(t) = self.sessions.get_mut(&id) else {
                continue;
            };
            let waiting = t
                .expiry_proposed
                .get()
                .is_some_and(|at| now_ms < at.saturating_add(retry_ms));
            if !waiting {
                t.expiry_proposed = ProposedAt::at(now_ms);
                out.push(id);
            }
        }
        out
    }

    /// A session's deadline, if tracked.
    pub fn deadline_ms(&self, id: SessionId) -> Option<u64> {
        self.sessions.get(&id).map(|t| t.deadline_ms)
    }

    /// Time left before a session's deadline at `now_ms`, if tracked.
    pub fn remaining_ms(&self, id: SessionId, now_ms: u64) -> Option<u64> {
        self.deadline_ms(id).map(|d| d.saturating_sub(now_ms))
    }

    /// Number of tracked sessions.
    pub fn tracked(&self) -> usize {
        self.sessions.len()
    }

    fn insert(&mut self, id: SessionId, ttl_ms: u64, deadline_ms: u64, secret: SessionSecret) {
        if let Some(old) = self.sessions.get(&id) {
            self.queue.remove(&(old.deadline_ms, id));
        }
        self.sessions.insert(
            id,
            Tracked {
                // Validated TTLs fit (at most TTL_MS_CEILING); a larger one
                // would only make renewals shorter, never a promise longer.
                ttl_ms: u32::try_from(ttl_ms).unwrap_or(u32::MAX),
                deadline_ms,
                secret,
                expiry_proposed: ProposedAt::default(),
            },
        );
        self.queue.insert((deadline_ms, id));
    }

    fn remove(&mut self, id: SessionId) {
        if let Some(t) = self.sessions.remove(&id) {
            self.queue.remove(&(t.deadline_ms, id));
        }
        // A hash table keeps its capacity when emptied: after a million
        // sessions expire it would hold ~120 MB for none. Halve it once it
        // is three-quarters empty (amortised O(1) per removal).
        let capacity = self.sessions.capacity();
        if capacity > TRACKED_CAPACITY_KEPT && self.sessions.len() < capacity / 4 {
            self.sessions.shrink_to(capacity / 2);
        }
    }
}

/// A deterministic spread in `[0, ttl_ms / 4]` from the session id, so a
/// failover does not make every session expire in the same instant.
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

    const S: SessionSecret = SessionSecret([7; 16]);

    /// The configuration of a cluster whose first leader set `W` = 600 ms.
    fn config() -> LeaseConfig {
        LeaseConfig {
            vote_window_ms: 600,
            ..LeaseConfig::default()
        }
    }

    fn leading(now_ms: u64) -> LeaderState {
        let mut l = LeaderState::new(600, 10, &config());
        l.takeover(1, now_ms, now_ms, []).expect("may lead");
        l
    }

    #[test]
    fn an_expiry_proposed_at_time_zero_waits_its_retry() {
        assert_eq!(ProposedAt::default().get(), None);
        assert_eq!(ProposedAt::at(0).get(), Some(0));
        assert_eq!(ProposedAt::at(u64::MAX - 1).get(), Some(u64::MAX - 1));
        assert_eq!(std::mem::size_of::<Tracked>(), 40);
    }

    #[test]
    fn the_table_gives_its_memory_back_once_sessions_end() {
        let mut l = leading(0);
        let opened = |session| SessionChange::Opened {
            session,
            ttl_ms: 1_000,
            secret: S,
        };
        for id in 1..=100_000 {
            l.apply(opened(id), 0);
        }
        let full = l.sessions.capacity();
        assert!(full >= 100_000);
        for id in 1..=99_990 {
            l.apply(SessionChange::Ended { session: id }, 0);
        }
        assert_eq!(l.tracked(), 10);
        assert!(
            l.sessions.capacity() <= 2 * TRACKED_CAPACITY_KEPT,
            "{} slots kept for 10 sessions (were {full})",
            l.sessions.capacity()
        );
        // What is left is still served.
        assert_eq!(l.deadline_ms(100_000), Some(1_000));
        l.confirmed(1, 1_000);
        assert_eq!(l.due(1_000, 100, 5_000).len(), 10);
        l.apply(opened(1), 0);
        assert_eq!(l.tracked(), 11);
    }

    #[test]
    fn renew_moves_forward_and_never_revives() {
        let mut l = leading(0);
        l.apply(
            SessionChange::Opened {
                session: 1,
                ttl_ms: 1_000,
                secret: S,
            },
            0,
        );
        assert_eq!(
            l.renew(&[(1, S)], 400),
            RenewOutcome::Renewed(vec![Renewal::Alive { ttl_ms: 1_000 }])
        );
        assert_eq!(l.deadline_ms(1), Some(1_400));
        l.confirmed(1, 1_000);
        assert_eq!(
            l.renew(&[(2, S), (1, SessionSecret([0; 16]))], 1_000),
            RenewOutcome::Denied(1)
        );
        assert_eq!(
            l.deadline_ms(1),
            Some(1_400),
            "a refused keepalive renews nothing"
        );
        assert_eq!(l.due(1_399, 10, 5_000), Vec::<u64>::new());
        assert_eq!(l.due(1_400, 10, 5_000), vec![1]);
        // Proposed once; not again until the retry interval passed.
        assert_eq!(l.due(1_401, 10, 5_000), Vec::<u64>::new());
        assert_eq!(
            l.renew(&[(1, S)], 1_401),
            RenewOutcome::Renewed(vec![Renewal::NotAlive])
        );
        l.apply(SessionChange::Ended { session: 1 }, 1_402);
        assert_eq!(l.tracked(), 0);
    }

    /// The race a review found in the old lessor: a keepalive read the
    /// session's TTL from the state, the `ExpireSessions` entry applied,
    /// and the keepalive then tracked the session again as unknown and
    /// answered alive. Here the keepalive reads nothing but this table, and
    /// the expiry's apply removes the session from it under the same lock:
    /// whichever order they take, an expired session is never alive again.
    #[test]
    fn a_renewal_racing_an_expiry_never_revives_the_session() {
        let mut l = leading(0);
        let opened = SessionChange::Opened {
            session: 9,
            ttl_ms: 1_000,
            secret: S,
        };
        l.apply(opened, 0);
        l.confirmed(1, 900);
        // The deadline passes; the expiry loop proposes it.
        assert_eq!(l.due(1_000, 10, 5_000), vec![9]);
        // A keepalive arriving before the expiry applied: not renewed.
        assert_eq!(
            l.renew(&[(9, S)], 1_001),
            RenewOutcome::Renewed(vec![Renewal::NotAlive])
        );
        // The expiry applies; a keepalive after it: still not alive, and
        // nothing tracks the session again.
        l.apply(SessionChange::Ended { session: 9 }, 1_002);
        assert_eq!(
            l.renew(&[(9, S)], 1_003),
            RenewOutcome::Renewed(vec![Renewal::NotAlive])
        );
        assert_eq!(l.tracked(), 0);
        assert_eq!(l.deadline_ms(9), None);
        // Even a keepalive racing an expiry applied early (another leader's
        // entry, before the deadline here) finds nothing to renew.
        l.apply(
            SessionChange::Opened {
                session: 10,
                ttl_ms: 1_000,
                secret: S,
            },
            1_004,
        );
        l.apply(SessionChange::Ended { session: 10 }, 1_005);
        assert_eq!(
            l.renew(&[(10, S)], 1_006),
            RenewOutcome::Renewed(vec![Renewal::NotAlive])
        );
    }

    #[test]
    fn takeover_covers_ttl_plus_grace_and_spreads() {
        let mut l = LeaderState::new(600, 10, &config());
        let sessions: Vec<_> = (1..=1_000).map(|id| (id, 10_000, S)).collect();
        let grace = l.takeover(3, 90, 100, sessions.clone()).expect("may lead");
        let mut distinct = BTreeSet::new();
        for (id, ttl, _) in sessions {
            let d = l.deadline_ms(id).expect("tracked");
            assert!(d >= 100 + ttl + 500, "never earlier than now + ttl + grace");
            assert!(d <= 100 + ttl + 500 + ttl / 4);
            distinct.insert(d);
        }
        assert!(
            distinct.len() > 500,
            "deadlines are spread: {}",
            distinct.len()
        );
        assert!((10_500..=13_000).contains(&grace));
        assert!(matches!(l.serving(100), Serving::FailoverGrace { .. }));
        assert_eq!(l.serving(100 + grace), Serving::WaitingForQuorum);
    }

    #[test]
    fn the_vote_gate_outlives_stepping_down() {
        let mut l = leading(1_000);
        let validity = l.lease_validity_ms();
        assert!(l.refuses_votes(1_000 + validity - 1));
        l.step_down();
        assert_eq!(l.serving(1_001), Serving::NotLeading);
        assert!(
            l.refuses_votes(1_000 + validity - 1),
            "still within the lease it held"
        );
        assert!(!l.refuses_votes(1_000 + validity));
    }

    #[test]
    fn stepping_aside_stops_serving_for_good_but_not_the_vote_gate() {
        let mut l = leading(1_000);
        l.apply(
            SessionChange::Opened {
                session: 1,
                ttl_ms: 2_000,
                secret: S,
            },
            1_000,
        );
        let validity = l.lease_validity_ms();
        assert!(l.serving(1_001).may_serve());
        l.step_aside();
        assert!(l.stepped_aside());
        assert_eq!(l.serving(1_001), Serving::NotLeading);
        assert_eq!(l.renew(&[(1, S)], 1_001), RenewOutcome::NotServing);
        assert_eq!(l.due(5_000, 10, 0), Vec::<u64>::new(), "proposes no expiry");
        // A heartbeat round that was under way, or a later one, changes
        // nothing: it never takes over again.
        assert!(!l.confirmed(1, 1_002));
        assert_eq!(l.takeover(2, 1_003, 1_003, [(1, 2_000, S)]), None);
        assert_eq!(l.serving(1_004), Serving::NotLeading);
        assert!(
            l.refuses_votes(1_000 + validity - 1),
            "the vote gate stays shut while the lease it held may run"
        );
        assert!(!l.refuses_votes(1_000 + validity));
    }

    #[test]
    fn a_node_with_a_shorter_window_than_the_cluster_never_votes_or_leads() {
        let mut config = LeaseConfig {
            vote_window_ms: 600,
            ..LeaseConfig::default()
        };
        let mut short = LeaderState::new(300, 10, &config);
        assert_eq!(short.window_mismatch(), Some((300, 600)));
        assert!(short.refuses_votes(0) && short.refuses_votes(u64::MAX - 1));
        assert_eq!(short.takeover(1, 0, 0, []), None);
        assert_eq!(short.serving(0), Serving::NotLeading);
        // A leader whose window the cluster raises past its own steps down.
        let mut l = leading(0);
        assert!(l.serving(1).may_serve());
        config.vote_window_ms = 900;
        l.set_config(&config);
        assert_eq!(l.serving(1), Serving::NotLeading);
        assert!(l.refuses_votes(10_000));
        // Lowered back: the lease is computed from the cluster's window.
        config.vote_window_ms = 400;
        l.set_config(&config);
        assert_eq!(l.window_mismatch(), None);
        assert_eq!(l.vote_window_ms(), 400);
    }

    #[test]
    fn no_lease_before_the_cluster_has_a_vote_window() {
        let mut l = LeaderState::new(600, 10, &LeaseConfig::default());
        assert_eq!(l.takeover(1, 0, 0, []), None, "W not replicated yet");
        assert_eq!(l.serving(0), Serving::NotLeading);
        l.set_config(&config());
        assert!(l.takeover(1, 0, 0, []).is_some());
    }

    #[test]
    fn a_config_applied_mid_term_never_lengthens_the_lease_past_the_gate() {
        // A node whose own window allows the cluster to raise W later.
        let mut l = LeaderState::new(2_000, 10, &config());
        l.takeover(1, 1_000, 1_000, []).expect("may lead");
        let validity = l.lease_validity_ms();
        // W raised to 1 s (and ρ lowered) mid-term.
        l.set_config(&LeaseConfig {
            vote_window_ms: 1_000,
            drift_ppm: 0,
            ..config()
        });
        assert_eq!(l.lease_validity_ms(), validity, "capped at takeover's");
        assert_eq!(l.serving(1_000 + validity), Serving::WaitingForQuorum);
        assert!(l.refuses_votes(1_000 + validity - 1));
        // A shorter W applies at once.
        l.set_config(&LeaseConfig {
            vote_window_ms: 300,
            ..config()
        });
        assert!(l.lease_validity_ms() < validity);
        // The next term computes from the configuration it takes over with.
        l.step_down();
        l.set_config(&LeaseConfig {
            vote_window_ms: 1_000,
            ..config()
        });
        l.takeover(2, 5_000, 5_000, []).expect("may lead");
        assert!(l.lease_validity_ms() > validity);
    }
}
