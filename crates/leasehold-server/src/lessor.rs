//! The leader's side of the time model (docs/adr/0001-time-model.md):
//! its own leader lease, the in-memory session deadlines, takeover with
//! failover grace, and the expiry of sessions whose deadline passed.
//!
//! Clock: `tokio::time::Instant` (monotonic), converted to milliseconds
//! since this lessor was created for the pure [`DeadlineTable`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::deadlines::{DeadlineTable, RenewError};
use leasehold_core::limits::EXPIRE_BATCH_MAX;
use leasehold_core::time::leader_lease_validity_ms;
use leasehold_core::{Command, LeaseState, Response, SessionId};
use leasehold_raft::store::StateMachineStore;
use leasehold_raft::{NodeId, Raft};
use openraft::ServerState;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::RaftTiming;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// Scheduling margin subtracted from the leader lease, in ms.
const LEADER_LEASE_MARGIN_MS: u64 = 10;
/// Period of the sweep that tracks sessions the table does not know yet.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// Most expiry proposals per second (each up to EXPIRE_BATCH_MAX sessions).
const EXPIRE_BATCHES_PER_SECOND_MAX: u32 = 10;
/// An expiry proposal with no answer after this long is made again.
const EXPIRE_RETRY: Duration = Duration::from_secs(5);

/// Whether and how this node serves leases right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Leader with a valid leader lease, past failover grace.
    Serving,
    /// Leader with a valid lease, in failover grace for `remaining`.
    FailoverGrace {
        /// Time until every refreshed takeover deadline has passed.
        remaining: Duration,
    },
    /// Leader not (yet) confirmed by a recent quorum in its term.
    WaitingForQuorum,
    /// Not the leader.
    Follower,
}

impl Serving {
    /// Whether grants and renewals may be answered.
    pub fn may_serve(self) -> bool {
        matches!(self, Serving::Serving | Serving::FailoverGrace { .. })
    }
}

/// Leader-only memory; reset whenever leadership is lost.
#[derive(Debug, Default)]
struct LeaderMemory {
    /// Term in which this node completed takeover (None: not serving).
    term: Option<u64>,
    /// Instant read before the last heartbeat round a quorum acknowledged
    /// in `term` (`A` of the time model, conservatively early).
    acked_at: Option<Instant>,
    /// When every deadline refreshed at takeover has passed.
    grace_until: Option<Instant>,
    /// Session deadlines in ms since `Lessor::origin`.
    deadlines: DeadlineTable,
    /// Sessions with an expiry proposal in flight, and when it was made
    /// (re-proposed after `EXPIRE_RETRY`; expiring twice is harmless).
    /// Never renewed: their deadline passed.
    expiring: HashMap<SessionId, Instant>,
    /// Sessions whose expiry committed; renewals are refused until the
    /// sweep sees them gone from the applied state, so a keepalive racing
    /// the expiry cannot revive one.
    expired: HashSet<SessionId>,
}

/// The leader's lease bookkeeping, shared by the API and background tasks.
pub struct Lessor {
    /// This node.
    node_id: NodeId,
    /// Raft handle: metrics, linearizable checks, proposals.
    raft: Raft,
    /// Applied state: session TTLs and existence.
    state: StateMachineStore,
    /// Follower vote refusal window `W` and heartbeat period.
    timing: RaftTiming,
    /// The clock every lease decision reads (skewable in tests only).
    clock: Arc<Clock>,
    /// Zero of the millisecond clock given to the deadline table.
    origin: Instant,
    /// Leader memory.
    memory: Mutex<LeaderMemory>,
    /// Counters.
    metrics: Arc<Metrics>,
}

impl Lessor {
    /// A lessor for this node; call [`Lessor::run`] to drive it.
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        state: StateMachineStore,
        timing: RaftTiming,
        metrics: Arc<Metrics>,
        clock: Arc<Clock>,
    ) -> Arc<Self> {
        Arc::new(Lessor {
            node_id,
            raft,
            state,
            timing,
            origin: clock.now(),
            clock,
            memory: Mutex::new(LeaderMemory::default()),
            metrics,
        })
    }

    fn memory(&self) -> MutexGuard<'_, LeaderMemory> {
        // A panic while holding the lock cannot leave the table half
        // updated in a way that matters more than stopping would.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds since origin for an instant.
    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// How long after `A` the leader may serve.
    fn lease_validity(&self, drift_ppm: u32) -> Duration {
        Duration::from_millis(leader_lease_validity_ms(
            self.timing.election_timeout_ms_max,
            drift_ppm,
            LEADER_LEASE_MARGIN_MS,
        ))
    }

    /// This node's Raft role as (is leader, current term), read without
    /// copying the whole metrics (this is on every keepalive's path).
    fn role(&self) -> (bool, u64) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (
            m.state == ServerState::Leader && m.current_leader == Some(self.node_id),
            m.current_term,
        )
    }

    /// Whether this node serves now, checked at the moment of asking.
    pub fn serving(&self) -> Serving {
        let (leader, term) = self.role();
        if !leader {
            return Serving::Follower;
        }
        let drift_ppm = self.state.read(|s| s.config().drift_ppm);
        let validity = self.lease_validity(drift_ppm);
        let mem = self.memory();
        let now = self.clock.now();
        match (mem.term, mem.acked_at) {
            (Some(served), Some(acked)) if served == term && now < acked + validity => {
                match mem.grace_until {
                    Some(until) if now < until => Serving::FailoverGrace {
                        remaining: until - now,
                    },
                    _ => Serving::Serving,
                }
            }
            _ => Serving::WaitingForQuorum,
        }
    }

    /// Renews sessions for a keepalive received now. Returns, per session,
    /// the TTL granted (None: not alive). Answers only while serving.
    pub fn renew(&self, sessions: &[SessionId]) -> Option<Vec<Option<u64>>> {
        if !self.serving().may_serve() {
            return None;
        }
        // State first, then leader memory: never hold both (lock order).
        let ttls: Vec<Option<u64>> = self.state.read(|s| {
            sessions
                .iter()
                .map(|id| s.session(*id).map(|x| x.ttl_ms))
                .collect()
        });
        let mut mem = self.memory();
        // Read under the lock, so an expiry decided before it is seen.
        let now_ms = self.ms(self.clock.now());
        let out = sessions
            .iter()
            .zip(ttls)
            .map(|(id, ttl)| {
                let ttl = ttl?;
                if mem.expiring.contains_key(id) || mem.expired.contains(id) {
                    return None;
                }
                match mem.deadlines.renew(*id, now_ms, ttl) {
                    Ok(_) => Some(ttl),
                    Err(RenewError::Expired) => None,
                    // Alive in the state but not tracked yet (opened by a
                    // request whose handler went away): track it from now.
                    Err(RenewError::Unknown) => {
                        mem.deadlines.extend_to(*id, now_ms.saturating_add(ttl));
                        Some(ttl)
                    }
                }
            })
            .collect::<Vec<_>>();
        drop(mem);
        // The lease may have lapsed while we worked: check again before answering.
        if !self.serving().may_serve() {
            return None;
        }
        let renewed = out.iter().filter(|x| x.is_some()).count() as u64;
        self.metrics
            .keepalive_renewed(renewed, out.len() as u64 - renewed);
        Some(out)
    }

    /// Starts tracking a session opened now by this leader.
    pub fn track_new(&self, id: SessionId, ttl_ms: u64) {
        let now_ms = self.ms(self.clock.now());
        self.memory()
            .deadlines
            .extend_to(id, now_ms.saturating_add(ttl_ms));
    }

    /// Stops tracking a session closed by a committed entry.
    pub fn forget(&self, id: SessionId) {
        self.memory().deadlines.remove(id);
    }

    /// Remaining time before a session's deadline on this leader.
    pub fn remaining(&self, id: SessionId) -> Option<Duration> {
        let d = self.memory().deadlines.deadline_ms(id)?;
        let now = self.ms(self.clock.now());
        Some(Duration::from_millis(d.saturating_sub(now)))
    }

    /// Runs the leader-lease watchdog and the expiry loop until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: ShutdownSignal) {
        let tick = Duration::from_millis(self.timing.heartbeat_ms);
        let mut last_sweep = Instant::now();
        let mut expire_budget = Budget::new(EXPIRE_BATCHES_PER_SECOND_MAX);
        let stop = shutdown.clone().recv();
        tokio::pin!(stop);
        loop {
            let round = Instant::now();
            self.confirm_leadership().await;
            if self.serving().may_serve() {
                if round.saturating_duration_since(last_sweep) >= SWEEP_PERIOD {
                    self.sweep();
                    last_sweep = round;
                }
                if expire_budget.take(round) {
                    self.expire_due();
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep_until(round + tick) => {}
            }
        }
    }

    /// One heartbeat round: if leader, asks a quorum to confirm and, on
    /// success, moves `A` forward; the first success in a term is takeover.
    async fn confirm_leadership(&self) {
        let (leader, term) = self.role();
        if !leader {
            let mut mem = self.memory();
            if mem.term.is_some() {
                tracing::info!(
                    node_id = self.node_id,
                    "lost leadership; forgetting deadlines"
                );
                *mem = LeaderMemory::default();
            }
            return;
        }
        let asked_at = self.clock.now();
        let limit = Duration::from_millis(self.timing.election_timeout_ms_max);
        match tokio::time::timeout(limit, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(node_id = self.node_id, %e, "quorum did not confirm leadership");
                return;
            }
            Err(_) => return,
        }
        if self.role() != (true, term) {
            return;
        }
        // Takeover needs the applied sessions: read them before taking the
        // leader memory lock (lock order: state, then memory).
        let takeover = (self.memory().term != Some(term)).then(|| {
            self.state.read(|s: &LeaseState| {
                (
                    s.config().grace_margin_ms,
                    s.sessions().map(|x| (x.id, x.ttl_ms)).collect::<Vec<_>>(),
                )
            })
        });
        let mut mem = self.memory();
        if mem.term != Some(term) {
            // Takeover: every entry of earlier terms is applied (the
            // confirmation waited for this term's first entry), and no
            // entry applies between that read and now except this term's.
            let Some((grace_ms, sessions)) = takeover else {
                return;
            };
            let now = self.clock.now();
            let now_ms = self.ms(now);
            let mut fresh = LeaderMemory {
                term: Some(term),
                ..LeaderMemory::default()
            };
            fresh
                .deadlines
                .takeover(now_ms, grace_ms, sessions.iter().copied());
            let last_ms = sessions
                .iter()
                .filter_map(|(id, _)| fresh.deadlines.deadline_ms(*id))
                .max()
                .unwrap_or(now_ms);
            fresh.grace_until = Some(now + Duration::from_millis(last_ms - now_ms));
            *mem = fresh;
            self.metrics.takeover();
            tracing::info!(
                node_id = self.node_id,
                term,
                sessions = sessions.len(),
                grace_ms = last_ms - now_ms,
                "took over as leader"
            );
        }
        if mem.acked_at.is_none_or(|a| a < asked_at) {
            mem.acked_at = Some(asked_at);
        }
    }

    /// Tracks sessions present in the state but not in the table, drops
    /// tracked ones the state no longer has, and forgets tombstones of
    /// expired sessions once the state shows them gone.
    fn sweep(&self) {
        let alive: Vec<(SessionId, u64)> = self
            .state
            .read(|s| s.sessions().map(|x| (x.id, x.ttl_ms)).collect());
        let mut mem = self.memory();
        let now_ms = self.ms(self.clock.now());
        let known: HashSet<SessionId> = alive.iter().map(|(id, _)| *id).collect();
        for (id, ttl) in &alive {
            let settled = mem.expiring.contains_key(id) || mem.expired.contains(id);
            if !settled && mem.deadlines.deadline_ms(*id).is_none() {
                mem.deadlines.extend_to(*id, now_ms.saturating_add(*ttl));
            }
        }
        if mem.deadlines.len() > known.len() {
            let stale: Vec<SessionId> = mem
                .deadlines
                .due(u64::MAX, usize::MAX)
                .into_iter()
                .filter(|id| !known.contains(id))
                .collect();
            for id in stale {
                mem.deadlines.remove(id);
            }
        }
        mem.expired.retain(|id| known.contains(id));
    }

    /// Proposes one batch of expiries for sessions whose deadline passed.
    /// The proposal runs in its own task so a slow commit never holds up
    /// the heartbeat rounds that keep the leader lease.
    fn expire_due(self: &Arc<Self>) {
        let batch: Vec<SessionId> = {
            let mut mem = self.memory();
            let now = self.clock.now();
            let now_ms = self.ms(now);
            let retry_before = now.checked_sub(EXPIRE_RETRY);
            let due: Vec<SessionId> = mem
                .deadlines
                .due(now_ms, EXPIRE_BATCH_MAX * 2)
                .into_iter()
                .filter(|id| match mem.expiring.get(id) {
                    None => true,
                    Some(at) => retry_before.is_some_and(|r| *at < r),
                })
                .take(EXPIRE_BATCH_MAX)
                .collect();
            for id in &due {
                mem.expiring.insert(*id, now);
            }
            due
        };
        if batch.is_empty() {
            return;
        }
        let lessor = Arc::clone(self);
        tokio::spawn(async move {
            let known: Vec<SessionId> = lessor.state.read(|s| {
                batch
                    .iter()
                    .copied()
                    .filter(|id| s.session(*id).is_some())
                    .collect()
            });
            if !known.is_empty() {
                tracing::info!(
                    node_id = lessor.node_id,
                    count = known.len(),
                    "expiring sessions"
                );
                let write = lessor
                    .raft
                    .client_write(Command::ExpireSessions { sessions: known });
                match write.await {
                    Ok(r) => {
                        if let Response::Expired { sessions } = &r.data {
                            lessor.metrics.expired(sessions.len() as u64);
                        }
                    }
                    Err(e) => {
                        // It may still commit: the sessions stay marked (never
                        // renewed) and are proposed again after EXPIRE_RETRY.
                        tracing::warn!(node_id = lessor.node_id, %e, "expiry proposal failed");
                        return;
                    }
                }
            }
            let mut mem = lessor.memory();
            for id in batch {
                mem.expiring.remove(&id);
                mem.deadlines.remove(id);
                mem.expired.insert(id);
            }
        });
    }
}

/// A per-second budget of actions.
struct Budget {
    /// Actions allowed per window.
    per_second: u32,
    /// Start of the current window.
    window_start: Option<Instant>,
    /// Actions taken in it.
    used: u32,
}

impl Budget {
    fn new(per_second: u32) -> Self {
        Budget {
            per_second,
            window_start: None,
            used: 0,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        if self.used < self.per_second {
            self.used += 1;
            true
        } else {
            false
        }
    }
}
