//! Drives the leader's rules ([`LeaderState`], pure, in `leasehold-core`):
//! heartbeat rounds that confirm the leader lease, takeover, and expiry
//! proposals. Everything it decides is decided by the core; this module
//! only reads the clock, talks to Raft and spawns.
//!
//! The rules are fed by the state machine itself: [`LeaderCell`] observes
//! every apply under the state machine's write lock, so the tracked
//! sessions are exactly the applied ones (docs/adr/0001-time-model.md §3).
//! Lock order everywhere: state machine lock, then the rules' lock.
//!
//! Clock: `tokio::time::Instant` (monotonic, skewable in tests only),
//! converted to milliseconds since the cell was created.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::leader::{LeaderState, RenewOutcome, Serving as CoreServing};
use leasehold_core::limits::EXPIRE_BATCH_MAX;
use leasehold_core::{Command, LeaseState, Response, SessionChange, SessionId, SessionSecret};
use leasehold_raft::store::{ApplyObserver, StateMachineStore};
use leasehold_raft::{NodeId, Raft};
use openraft::ServerState;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::RaftTiming;
use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, ShutdownSignal};

/// Scheduling margin subtracted from the leader lease, in ms.
const LEADER_LEASE_MARGIN_MS: u64 = 10;
/// Most expiry proposals per second (each up to EXPIRE_BATCH_MAX sessions).
const EXPIRE_BATCHES_PER_SECOND_MAX: u32 = 10;
/// An expiry proposal with no effect after this long is made again.
const EXPIRE_RETRY_MS: u64 = 5_000;

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
    /// Shutting down ([`Lessor::step_aside`]): serves and forwards nothing,
    /// whatever its Raft role, so clients move to another node.
    ShuttingDown,
    /// Its store failed ([`Lessor::fail_stop`]): Raft stopped, and it
    /// serves, forwards and answers nothing from its state until restarted
    /// (docs/adr/0007-disk-faults-fail-stop.md).
    StorageFailed,
}

impl Serving {
    /// Whether grants and renewals may be answered.
    pub fn may_serve(self) -> bool {
        matches!(self, Serving::Serving | Serving::FailoverGrace { .. })
    }
}

/// The answer to one keepalive message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepAlive {
    /// This node may not renew now.
    NotServing,
    /// A live session was named without its secret; nothing was renewed.
    Denied(SessionId),
    /// Per session, the TTL it was renewed for (None: not alive).
    Renewed(Vec<Option<u64>>),
    /// This node is shutting down: nothing was renewed; renew elsewhere.
    ShuttingDown,
}

/// The leader's rules behind their lock, with the clock that feeds them.
/// Observes the state machine; holds no reference to it (no cycle keeps
/// the database open).
pub struct LeaderCell {
    /// The rules. Lock order: the state machine's lock first, then this.
    rules: Mutex<LeaderState>,
    /// The clock every lease decision reads (skewable in tests only).
    clock: Arc<Clock>,
    /// Zero of the millisecond clock given to the rules.
    origin: Instant,
}

impl LeaderCell {
    fn rules(&self) -> MutexGuard<'_, LeaderState> {
        // A panic while holding the lock cannot leave the rules half
        // updated in a way that matters more than stopping would.
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now, in ms since origin.
    fn now_ms(&self) -> u64 {
        let now = self.clock.now();
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }
}

impl ApplyObserver for LeaderCell {
    fn applied(&self, state: &LeaseState, sessions: &[SessionChange], config_changed: bool) {
        let now_ms = self.now_ms();
        let mut rules = self.rules();
        if config_changed {
            rules.set_config(state.config());
            if let Some((local, cluster)) = rules.window_mismatch() {
                tracing::error!(
                    local_window_ms = local,
                    cluster_window_ms = cluster,
                    "this node's election_timeout_ms_max is below the cluster's vote window: \
                     it refuses to vote and to lead until restarted with at least the cluster's"
                );
            }
        }
        for change in sessions {
            rules.apply(*change, now_ms);
        }
    }

    fn replaced(&self, state: &LeaseState) {
        // A leader never installs a snapshot; if it ever did, it takes over
        // again from the new state at its next confirmed round.
        let mut rules = self.rules();
        rules.set_config(state.config());
        rules.step_down();
    }
}

/// The leader's lease bookkeeping, shared by the API and background tasks.
pub struct Lessor {
    /// This node.
    node_id: NodeId,
    /// Raft handle: metrics, linearizable checks, proposals.
    raft: Raft,
    /// Applied state, read once per takeover.
    state: StateMachineStore,
    /// Heartbeat period and the local vote window.
    timing: RaftTiming,
    /// The rules and their clock (also the state machine's observer).
    cell: Arc<LeaderCell>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// When this node last proposed the cluster's vote window, and in
    /// which term (it serves nothing until one is replicated).
    window_proposed: Mutex<Option<(u64, Instant)>>,
    /// Why this node fail-stopped, once its store failed (set once).
    storage_failure: std::sync::OnceLock<String>,
    /// Fires when this node fail-stops: ends its streams.
    failed: Shutdown,
}

impl Lessor {
    /// A lessor for this node, registered as the observer of `state`; call
    /// [`Lessor::run`] to drive it.
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        state: StateMachineStore,
        timing: RaftTiming,
        metrics: Arc<Metrics>,
        clock: Arc<Clock>,
    ) -> Arc<Self> {
        let config = state.read(|s| *s.config());
        let cell = Arc::new(LeaderCell {
            rules: Mutex::new(LeaderState::new(
                timing.election_timeout_ms_max,
                LEADER_LEASE_MARGIN_MS,
                &config,
            )),
            origin: clock.now(),
            clock,
        });
        if !state.observe(Arc::clone(&cell) as Arc<dyn ApplyObserver>) {
            tracing::error!(node_id, "the state machine already has an observer");
        }
        let lessor = Arc::new(Lessor {
            node_id,
            raft,
            state,
            timing,
            cell,
            metrics,
            window_proposed: Mutex::new(None),
            storage_failure: std::sync::OnceLock::new(),
            failed: Shutdown::new(),
        });
        if let Some(error) = lessor.config_error() {
            tracing::error!(node_id, %error, "misconfigured vote window");
        }
        lessor
    }

    /// This node's Raft role as (is leader, vote), read without copying the
    /// whole metrics (this is on every request's path).
    fn role(&self) -> (bool, openraft::Vote<NodeId>) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (
            m.state == ServerState::Leader && m.current_leader == Some(self.node_id),
            m.vote,
        )
    }

    /// Whether this node serves now, checked at the moment of asking. The
    /// decision is the core's; the Raft role only turns "not leading" into
    /// follower or waiting for the report.
    pub fn serving(&self) -> Serving {
        let now_ms = self.cell.now_ms();
        let (core, stepped_aside, rules_term) = {
            let rules = self.cell.rules();
            (rules.serving(now_ms), rules.stepped_aside(), rules.term())
        };
        if self.storage_failure.get().is_some() {
            return Serving::StorageFailed;
        }
        let (leader, vote) = self.role();
        match core {
            _ if stepped_aside => Serving::ShuttingDown,
            _ if !leader => Serving::Follower,
            // Leading again in a later term: the old term's `A` and
            // deadlines do not count until this term's takeover.
            _ if rules_term != Some(vote.leader_id().term) => Serving::WaitingForQuorum,
            CoreServing::Serving => Serving::Serving,
            CoreServing::FailoverGrace { remaining_ms } => Serving::FailoverGrace {
                remaining: Duration::from_millis(remaining_ms),
            },
            CoreServing::WaitingForQuorum | CoreServing::NotLeading => Serving::WaitingForQuorum,
        }
    }

    /// Why this node refuses to vote and lead, if it does: its own vote
    /// window is shorter than the cluster's.
    pub fn config_error(&self) -> Option<String> {
        let (local, cluster) = self.cell.rules().window_mismatch()?;
        Some(format!(
            "this node's election_timeout_ms_max ({local} ms) is below the cluster's vote window \
             ({cluster} ms): it refuses to vote and to lead; restart it with at least {cluster} ms"
        ))
    }

    /// Whether this node must refuse vote requests now: while any leader
    /// lease it held may still run, or always when its own vote window is
    /// shorter than the cluster's. Reads no Raft metrics.
    pub fn refuses_votes(&self) -> bool {
        let now_ms = self.cell.now_ms();
        self.cell.rules().refuses_votes(now_ms)
    }

    /// Why this node refuses vote requests now, if it does (the vote gate).
    pub fn vote_refusal(&self) -> Option<String> {
        if let Some(error) = self.config_error() {
            return Some(error);
        }
        self.refuses_votes()
            .then(|| "this node leads, or led, under a leader lease that may still run".to_string())
    }

    /// Steps aside for good, as the first step of a graceful shutdown: from
    /// now on this node grants, renews, expires and proposes nothing, and
    /// never takes over again, while its Raft keeps running so in-flight
    /// calls can finish. Its vote gate keeps refusing until the leader
    /// lease it held has run out (docs/adr/0001-time-model.md §4). Returns
    /// whether it was leading.
    pub fn step_aside(&self) -> bool {
        let mut rules = self.cell.rules();
        let was_leading = rules.term().is_some();
        rules.step_aside();
        was_leading
    }

    /// Fail-stop after a storage failure: from now on this node grants,
    /// renews, expires, forwards and answers nothing (like
    /// [`Lessor::step_aside`], for good), [`Lessor::serving`] says
    /// [`Serving::StorageFailed`], and its streams end. Its Raft is stopped
    /// by the caller. Returns whether this call was the first.
    pub fn fail_stop(&self, reason: String) -> bool {
        let first = self.storage_failure.set(reason).is_ok();
        if first {
            self.cell.rules().step_aside();
            self.failed.trigger();
        }
        first
    }

    /// Why this node fail-stopped, if it did.
    pub fn storage_failure(&self) -> Option<&str> {
        self.storage_failure.get().map(String::as_str)
    }

    /// Resolves when this node fail-stops (or its lessor is dropped).
    pub fn failed_signal(&self) -> ShutdownSignal {
        self.failed.signal()
    }

    /// Renews sessions (id, presented secret) for a keepalive received now.
    pub fn renew(&self, sessions: &[(SessionId, SessionSecret)]) -> KeepAlive {
        // One lock of the rules per message: stepping aside, the leader
        // lease and the renewals are decided together, at one instant.
        let (outcome, rules_term) = {
            let now_ms = self.cell.now_ms();
            let mut rules = self.cell.rules();
            if rules.stepped_aside() {
                return KeepAlive::ShuttingDown;
            }
            (rules.renew(sessions, now_ms), rules.term())
        };
        let renewed = match outcome {
            RenewOutcome::NotServing => return KeepAlive::NotServing,
            RenewOutcome::Denied(id) => return KeepAlive::Denied(id),
            RenewOutcome::Renewed(r) => r,
        };
        // Raft may have moved on while we renewed: answer only as the
        // leader of the term whose rules renewed (read after renewing).
        let (leader, vote) = self.role();
        if !leader || rules_term != Some(vote.leader_id().term) {
            return KeepAlive::NotServing;
        }
        let out: Vec<Option<u64>> = renewed
            .into_iter()
            .map(|r| match r {
                leasehold_core::Renewal::Alive { ttl_ms } => Some(ttl_ms),
                leasehold_core::Renewal::NotAlive => None,
            })
            .collect();
        let alive = out.iter().filter(|x| x.is_some()).count() as u64;
        self.metrics
            .keepalive_renewed(alive, out.len() as u64 - alive);
        KeepAlive::Renewed(out)
    }

    /// Remaining time before a session's deadline on this leader.
    pub fn remaining(&self, id: SessionId) -> Option<Duration> {
        let now_ms = self.cell.now_ms();
        self.cell
            .rules()
            .remaining_ms(id, now_ms)
            .map(Duration::from_millis)
    }

    /// Runs the leader-lease watchdog and the expiry loop until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: ShutdownSignal) {
        let tick = Duration::from_millis(self.timing.heartbeat_ms);
        let mut expire_budget = Budget::new(EXPIRE_BATCHES_PER_SECOND_MAX);
        let stop = shutdown.clone().recv();
        tokio::pin!(stop);
        // Role changes (rare) start a round at once: a new leader takes
        // over without waiting for the next tick (up to one heartbeat of
        // failover otherwise).
        let mut role = self.raft.server_metrics();
        loop {
            let round = Instant::now();
            self.confirm_leadership().await;
            if expire_budget.take(round) {
                self.expire_due();
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep_until(round + tick) => {}
                changed = role.changed() => {
                    if changed.is_err() {
                        // Raft stopped: no more role changes; tick on.
                        tokio::select! {
                            _ = &mut stop => return,
                            _ = tokio::time::sleep_until(round + tick) => {}
                        }
                    }
                }
            }
        }
    }

    /// One heartbeat round: if leader, asks a quorum to confirm and, on
    /// success, moves `A` forward; the first success in a term is takeover.
    /// A round counts only if the vote (term and leader) was the same
    /// before and after it.
    async fn confirm_leadership(&self) {
        if self.cell.rules().stepped_aside() {
            return;
        }
        let (leader, vote) = self.role();
        if !leader {
            let mut rules = self.cell.rules();
            if rules.term().is_some() {
                tracing::info!(
                    node_id = self.node_id,
                    "lost leadership; forgetting deadlines"
                );
                rules.step_down();
            }
            return;
        }
        let term = vote.leader_id().term;
        let asked_at_ms = self.cell.now_ms();
        let limit = Duration::from_millis(self.timing.election_timeout_ms_max);
        // Only the quorum's answer: a renewal of `A` needs nothing applied,
        // so it never waits behind the state machine under write load.
        let read_log_id = match tokio::time::timeout(limit, self.raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _applied))) => read_log_id,
            Ok(Err(e)) => {
                tracing::debug!(node_id = self.node_id, %e, "quorum did not confirm leadership");
                return;
            }
            Err(_) => return,
        };
        if self.role() != (true, vote) {
            return;
        }
        if self.cell.rules().confirmed(term, asked_at_ms) {
            return;
        }
        // Takeover reads the sessions: every entry of earlier terms must be
        // applied first (the read log id is at least this term's first
        // entry). `A` of this round stays `asked_at_ms`, before the wait.
        if let Some(read) = read_log_id {
            let applied = self
                .raft
                .wait(Some(limit))
                .applied_index_at_least(Some(read.index), "takeover")
                .await;
            if let Err(e) = applied {
                tracing::debug!(node_id = self.node_id, %e, "entries of earlier terms not applied yet");
                return;
            }
            if self.role() != (true, vote) {
                return;
            }
        }
        // Takeover: every entry of earlier terms is applied (the
        // confirmation waited for this term's first entry). The sessions
        // are read under the state lock, so no apply slips between the
        // read and the rules taking them over.
        let (sessions, grace_ms, config) = self.state.read(|s: &LeaseState| {
            let now_ms = self.cell.now_ms();
            let mut rules = self.cell.rules();
            rules.set_config(s.config());
            let grace_ms = rules.takeover(
                term,
                asked_at_ms,
                now_ms,
                s.sessions().map(|x| (x.id, x.ttl_ms, x.secret)),
            );
            (s.session_count(), grace_ms, *s.config())
        });
        let Some(grace_ms) = grace_ms else {
            if config.vote_window_ms == 0 {
                // Serve nothing until the cluster has one W: replicate ours.
                self.set_cluster_vote_window(term, config);
            } else if let Some(error) = self.config_error() {
                tracing::debug!(node_id = self.node_id, term, %error, "refusing to lead");
            }
            return;
        };
        self.metrics.takeover();
        tracing::info!(
            node_id = self.node_id,
            term,
            sessions,
            grace_ms,
            "took over as leader"
        );
    }

    /// The first leader of a cluster (or of one upgraded from a version
    /// without it) replicates its own vote window as the cluster's `W`
    /// before it serves anything; proposed at most once a second per term.
    fn set_cluster_vote_window(&self, term: u64, config: leasehold_core::LeaseConfig) {
        {
            let mut last = self
                .window_proposed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if let Some((t, at)) = *last {
                if t == term && now.saturating_duration_since(at) < Duration::from_secs(1) {
                    return;
                }
            }
            *last = Some((term, now));
        }
        let raft = self.raft.clone();
        let node_id = self.node_id;
        let w = self.timing.election_timeout_ms_max;
        // Sessions must outlive an election: the TTL floor follows W.
        let ttl_ms_min = config.ttl_ms_min.max(w.saturating_mul(2));
        let config = leasehold_core::LeaseConfig {
            vote_window_ms: w,
            ttl_ms_min,
            ttl_ms_max: config.ttl_ms_max.max(ttl_ms_min),
            ..config
        };
        tokio::spawn(async move {
            match raft.client_write(Command::SetConfig(config)).await {
                Ok(r) => tracing::info!(
                    node_id,
                    vote_window_ms = config.vote_window_ms,
                    answer = ?r.data,
                    "set the cluster's vote window"
                ),
                Err(e) => tracing::warn!(node_id, %e, "could not set the cluster's vote window"),
            }
        });
    }

    /// Proposes one batch of expiries for sessions whose deadline passed.
    /// The proposal runs in its own task so a slow commit never holds up
    /// the heartbeat rounds that keep the leader lease.
    fn expire_due(self: &Arc<Self>) {
        let batch = {
            let now_ms = self.cell.now_ms();
            self.cell
                .rules()
                .due(now_ms, EXPIRE_BATCH_MAX, EXPIRE_RETRY_MS)
        };
        if batch.is_empty() {
            return;
        }
        let lessor = Arc::clone(self);
        tokio::spawn(async move {
            tracing::info!(
                node_id = lessor.node_id,
                count = batch.len(),
                "expiring sessions"
            );
            let write = lessor
                .raft
                .client_write(Command::ExpireSessions { sessions: batch });
            match write.await {
                Ok(r) => {
                    if let Response::Expired { sessions } = &r.data {
                        lessor.metrics.expired(sessions.len() as u64);
                    }
                }
                // It may still commit: the sessions stay due (never renewed:
                // their deadline passed) and are proposed again later.
                Err(e) => tracing::warn!(node_id = lessor.node_id, %e, "expiry proposal failed"),
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
