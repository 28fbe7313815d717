//! Every metric of the node, defined here and nowhere else.
//!
//! One [`Metrics`] per node holds a Prometheus registry
//! ([`prometheus_client`]) and every metric in it. The hot paths only touch
//! lock-free counters and two histograms; the gauges are read from their
//! sources (applied state, Raft, lessor, snapshot builder) when `/metrics`
//! is scraped ([`Metrics::refresh`]). [`MetricsSnapshot`], what `Status`
//! logs and tests read, copies the same counters: there is one definition.
//!
//! Names are stable, prefixed `leasehold_`, with the unit last
//! (`_seconds`, `_bytes`, counters `_total`):
//!
//! | name | type | what |
//! |---|---|---|
//! | `leasehold_sessions_active` | gauge | sessions in the applied state |
//! | `leasehold_leases_active` | gauge | leases held in the applied state (one per holder) |
//! | `leasehold_grants_total` | counter | leases granted in answer to acquires this node served |
//! | `leasehold_releases_total` | counter | leases released by releases this node served |
//! | `leasehold_sessions_expired_total` | counter | sessions removed by expiry entries this node proposed |
//! | `leasehold_recalls_total` | counter | recalls this node served |
//! | `leasehold_keepalive_renewed_total` | counter | sessions renewed by keepalives |
//! | `leasehold_keepalive_refused_total` | counter | keepalive entries answered "not alive" |
//! | `leasehold_forwarded_total` | counter | requests this node forwarded to the leader |
//! | `leasehold_auth_unauthenticated_total` | counter | client API calls refused here as UNAUTHENTICATED (no or unknown token or certificate name) |
//! | `leasehold_auth_denied_total` | counter | client API calls refused here as PERMISSION_DENIED by role or prefix |
//! | `leasehold_proposals_total` | counter | commands this node proposed to Raft |
//! | `leasehold_takeovers_total` | counter | leader takeovers completed by this node |
//! | `leasehold_prompt_elections_total` | counter | elections this node started as soon as its leader's vote window ran out (`election.rs`) |
//! | `leasehold_acquire_duration_seconds` | histogram | Acquire, from receipt to its entry's answer, on the serving node |
//! | `leasehold_keepalive_duration_seconds` | histogram | one keepalive message, from receipt to its answer |
//! | `leasehold_raft_term` | gauge | current Raft term |
//! | `leasehold_raft_leader_id` | gauge | the leader this node knows (0: none) |
//! | `leasehold_raft_commit_index` | gauge | committed log index |
//! | `leasehold_raft_applied_index` | gauge | applied log index |
//! | `leasehold_serving_state{state}` | gauge | 1 for the current serving state, 0 for the others |
//! | `leasehold_failover_grace_remaining_seconds` | gauge | failover grace left (0 outside grace) |
//! | `leasehold_snapshot_size_bytes` | gauge | size of the latest snapshot built or installed here |
//! | `leasehold_snapshot_build_duration_seconds` | gauge | how long the last snapshot build took |
//! | `leasehold_snapshots_built_total` | counter | snapshots built by this node since it started |
//! | `leasehold_api_connections` | gauge | client API connections open (admitted under `connections_max`) |
//! | `leasehold_keepalive_streams` | gauge | KeepAlive streams open |
//! | `leasehold_watch_streams` | gauge | Watch streams open |
//! | `leasehold_acquire_waiters` | gauge | acquires waiting in a queue |
//! | `leasehold_limit_rejections_total{limit}` | counter | connections and calls refused by a limit (`limit`: its setting or constant name) |
//! | `leasehold_idle_closed_total{what}` | counter | connections and streams this node ended for idleness or a stalled reader |
//! | `leasehold_storage_failures_total` | counter | storage failures that made this node fail-stop (0 or 1 per run: it stops at the first) |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::lessor::Serving;

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "leasehold";

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets (seconds): 100 µs doubling to ~6.5 s, then +Inf.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 17)
}

/// The `state` label of `leasehold_serving_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum ServingLabel {
    /// Leader with a valid leader lease, past failover grace.
    serving,
    /// Leader with a valid lease, in failover grace.
    failover_grace,
    /// Leader not (yet) confirmed by a recent quorum.
    waiting_for_quorum,
    /// Not the leader.
    follower,
    /// Stepped aside for a graceful stop: serves nothing.
    shutting_down,
    /// Its store failed: fail-stopped, serves nothing until restarted.
    storage_failed,
}

impl ServingLabel {
    /// Every state, in a fixed order.
    const ALL: [ServingLabel; 6] = [
        ServingLabel::serving,
        ServingLabel::failover_grace,
        ServingLabel::waiting_for_quorum,
        ServingLabel::follower,
        ServingLabel::shutting_down,
        ServingLabel::storage_failed,
    ];

    /// The label of a serving state.
    fn of(serving: Serving) -> Self {
        match serving {
            Serving::Serving => ServingLabel::serving,
            Serving::FailoverGrace { .. } => ServingLabel::failover_grace,
            Serving::WaitingForQuorum => ServingLabel::waiting_for_quorum,
            Serving::Follower => ServingLabel::follower,
            Serving::ShuttingDown => ServingLabel::shutting_down,
            Serving::StorageFailed => ServingLabel::storage_failed,
        }
    }
}

/// Labels of `leasehold_serving_state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServingLabels {
    /// The serving state.
    state: ServingLabel,
}

/// What a [`crate::limits::Quota`] counts: one gauge each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// KeepAlive streams.
    KeepAlive,
    /// Watch streams.
    Watch,
    /// Acquires waiting in a queue.
    Waiter,
}

/// What was ended for idleness: the `what` label of
/// `leasehold_idle_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum IdleLabel {
    /// A connection with no call open for `connection_idle_timeout_ms`.
    connection,
    /// A KeepAlive stream silent for longer than the longest TTL.
    keepalive_stream,
    /// A Watch stream whose reader stalled for `watch_stall_timeout_ms`.
    watch_stream,
}

/// Labels of `leasehold_idle_closed_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IdleLabels {
    /// What was closed.
    what: IdleLabel,
}

/// Labels of `leasehold_limit_rejections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    /// The limit's setting or constant name.
    limit: &'static str,
}

/// Values read from their sources at scrape time (see [`Metrics::refresh`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observed {
    /// Sessions in the applied state.
    pub sessions: u64,
    /// Leases held in the applied state.
    pub leases: u64,
    /// Current Raft term.
    pub term: u64,
    /// The known leader (0: none).
    pub leader_id: u64,
    /// Committed log index.
    pub commit_index: u64,
    /// Applied log index.
    pub applied_index: u64,
    /// Whether and how this node serves.
    pub serving: Option<Serving>,
    /// Size of the latest snapshot, in bytes.
    pub snapshot_bytes: u64,
    /// Duration of the last snapshot build.
    pub snapshot_build: Duration,
    /// Snapshots built since start.
    pub snapshots_built: u64,
}

/// Every metric of the node, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    /// The registry every metric below is registered in.
    registry: Registry,
    /// `leasehold_keepalive_renewed_total`.
    keepalive_renewed: Counter,
    /// `leasehold_keepalive_refused_total`.
    keepalive_refused: Counter,
    /// `leasehold_sessions_expired_total`.
    sessions_expired: Counter,
    /// `leasehold_takeovers_total`.
    takeovers: Counter,
    /// `leasehold_prompt_elections_total`.
    prompt_elections: Counter,
    /// `leasehold_proposals_total`.
    proposals: Counter,
    /// `leasehold_forwarded_total`.
    forwarded: Counter,
    /// `leasehold_auth_unauthenticated_total`.
    auth_unauthenticated: Counter,
    /// `leasehold_auth_denied_total`.
    auth_denied: Counter,
    /// `leasehold_grants_total`.
    grants: Counter,
    /// `leasehold_releases_total`.
    releases: Counter,
    /// `leasehold_recalls_total`.
    recalls: Counter,
    /// `leasehold_acquire_duration_seconds`.
    acquire_duration: Histogram,
    /// `leasehold_keepalive_duration_seconds`.
    keepalive_duration: Histogram,
    /// `leasehold_sessions_active`.
    sessions_active: Gauge<u64, AtomicU64>,
    /// `leasehold_leases_active`.
    leases_active: Gauge<u64, AtomicU64>,
    /// `leasehold_raft_term`.
    raft_term: Gauge<u64, AtomicU64>,
    /// `leasehold_raft_leader_id`.
    raft_leader_id: Gauge<u64, AtomicU64>,
    /// `leasehold_raft_commit_index`.
    raft_commit_index: Gauge<u64, AtomicU64>,
    /// `leasehold_raft_applied_index`.
    raft_applied_index: Gauge<u64, AtomicU64>,
    /// `leasehold_serving_state{state}`.
    serving_state: Family<ServingLabels, Gauge>,
    /// `leasehold_failover_grace_remaining_seconds`.
    grace_remaining: Gauge<f64, AtomicU64>,
    /// `leasehold_snapshot_size_bytes`.
    snapshot_size: Gauge<u64, AtomicU64>,
    /// `leasehold_snapshot_build_duration_seconds`.
    snapshot_build_duration: Gauge<f64, AtomicU64>,
    /// `leasehold_snapshots_built_total`.
    snapshots_built: Counter,
    /// `leasehold_api_connections`.
    api_connections: Gauge<u64, AtomicU64>,
    /// `leasehold_keepalive_streams`.
    keepalive_streams: Gauge<u64, AtomicU64>,
    /// `leasehold_watch_streams`.
    watch_streams: Gauge<u64, AtomicU64>,
    /// `leasehold_acquire_waiters`.
    acquire_waiters: Gauge<u64, AtomicU64>,
    /// `leasehold_limit_rejections_total{limit}`.
    limit_rejections: Family<LimitLabels, Counter>,
    /// The sum of `limit_rejections` over its labels (for the snapshot).
    limit_rejections_sum: AtomicU64,
    /// `leasehold_idle_closed_total{what}`.
    idle_closed: Family<IdleLabels, Counter>,
    /// The sum of `idle_closed` over its labels (for the snapshot).
    idle_closed_sum: AtomicU64,
    /// `leasehold_storage_failures_total`.
    storage_failures: Counter,
}

/// A point-in-time copy of the counters (the same ones `/metrics` serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// `leasehold_keepalive_renewed_total`: sessions renewed by keepalives.
    pub keepalive_renewed_total: u64,
    /// `leasehold_keepalive_refused_total`: keepalive entries answered "not alive".
    pub keepalive_refused_total: u64,
    /// `leasehold_sessions_expired_total`: sessions removed by expiry
    /// entries this node proposed.
    pub sessions_expired_total: u64,
    /// `leasehold_takeovers_total`: leader takeovers completed by this node.
    pub takeovers_total: u64,
    /// `leasehold_prompt_elections_total`: elections this node started as
    /// soon as its leader's vote window ran out.
    pub prompt_elections_total: u64,
    /// `leasehold_proposals_total`: commands this node proposed to Raft.
    pub proposals_total: u64,
    /// `leasehold_forwarded_total`: requests this node forwarded to the leader.
    pub forwarded_total: u64,
    /// `leasehold_auth_unauthenticated_total`: calls refused here for
    /// missing or unknown credentials (token or certificate name).
    pub auth_unauthenticated_total: u64,
    /// `leasehold_auth_denied_total`: calls refused here because the
    /// principal's role or prefixes do not allow them.
    pub auth_denied_total: u64,
    /// `leasehold_grants_total`: leases granted in answer to this node's acquires.
    pub grants_total: u64,
    /// `leasehold_releases_total`: leases released by this node's releases.
    pub releases_total: u64,
    /// `leasehold_recalls_total`: recalls this node served.
    pub recalls_total: u64,
    /// `leasehold_api_connections`: client API connections open.
    pub api_connections: u64,
    /// `leasehold_keepalive_streams`: KeepAlive streams open.
    pub keepalive_streams: u64,
    /// `leasehold_watch_streams`: Watch streams open.
    pub watch_streams: u64,
    /// `leasehold_acquire_waiters`: acquires waiting in a queue.
    pub acquire_waiters: u64,
    /// `leasehold_limit_rejections_total`, summed over limits.
    pub limit_rejections_total: u64,
    /// `leasehold_idle_closed_total`, summed over what was closed.
    pub idle_closed_total: u64,
    /// `leasehold_storage_failures_total`: storage failures that made this
    /// node fail-stop.
    pub storage_failures_total: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered under the `leasehold_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let gauge = |r: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let g = Gauge::<u64, AtomicU64>::default();
            match unit {
                Some(unit) => r.register_with_unit(name, help, unit, g.clone()),
                None => r.register(name, help, g.clone()),
            }
            g
        };
        let sessions_active = gauge(
            &mut registry,
            "sessions_active",
            "Sessions in the applied state",
            None,
        );
        let leases_active = gauge(
            &mut registry,
            "leases_active",
            "Leases held in the applied state (one per holder)",
            None,
        );
        let raft_term = gauge(&mut registry, "raft_term", "Current Raft term", None);
        let raft_leader_id = gauge(
            &mut registry,
            "raft_leader_id",
            "The leader this node knows (0: none)",
            None,
        );
        let raft_commit_index = gauge(
            &mut registry,
            "raft_commit_index",
            "Committed Raft log index",
            None,
        );
        let raft_applied_index = gauge(
            &mut registry,
            "raft_applied_index",
            "Applied Raft log index",
            None,
        );
        let serving_state = Family::<ServingLabels, Gauge>::default();
        registry.register(
            "serving_state",
            "1 for this node's serving state, 0 for the others",
            serving_state.clone(),
        );
        let grace_remaining = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "failover_grace_remaining",
            "Failover grace left on this leader (0 outside grace)",
            Unit::Seconds,
            grace_remaining.clone(),
        );
        let keepalive_renewed = counter(
            &mut registry,
            "keepalive_renewed",
            "Sessions renewed by keepalives",
        );
        let keepalive_refused = counter(
            &mut registry,
            "keepalive_refused",
            "Keepalive entries answered not alive",
        );
        let sessions_expired = counter(
            &mut registry,
            "sessions_expired",
            "Sessions removed by committed expiry entries this node proposed",
        );
        let takeovers = counter(
            &mut registry,
            "takeovers",
            "Leader takeovers completed by this node",
        );
        let prompt_elections = counter(
            &mut registry,
            "prompt_elections",
            "Elections this node started as soon as its leader's vote window ran out",
        );
        let proposals = counter(
            &mut registry,
            "proposals",
            "Commands this node proposed to Raft",
        );
        let forwarded = counter(
            &mut registry,
            "forwarded",
            "Requests this node forwarded to the leader",
        );
        let auth_unauthenticated = counter(
            &mut registry,
            "auth_unauthenticated",
            "Client API calls refused here as UNAUTHENTICATED (missing or unknown token or certificate name)",
        );
        let auth_denied = counter(
            &mut registry,
            "auth_denied",
            "Client API calls refused here as PERMISSION_DENIED by role or resource prefix",
        );
        let grants = counter(
            &mut registry,
            "grants",
            "Leases granted in answer to acquires this node served",
        );
        let releases = counter(
            &mut registry,
            "releases",
            "Leases released by releases this node served",
        );
        let recalls = counter(&mut registry, "recalls", "Recalls this node served");
        let acquire_duration = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "acquire_duration",
            "Acquire calls served here, from receipt to the answer of their entry (queue waits excluded)",
            Unit::Seconds,
            acquire_duration.clone(),
        );
        let keepalive_duration = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "keepalive_duration",
            "Keepalive messages, from receipt to their answer",
            Unit::Seconds,
            keepalive_duration.clone(),
        );
        let snapshot_size = gauge(
            &mut registry,
            "snapshot_size",
            "Size of the latest snapshot built or installed here",
            Some(Unit::Bytes),
        );
        let snapshot_build_duration = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "snapshot_build_duration",
            "How long the last snapshot build took",
            Unit::Seconds,
            snapshot_build_duration.clone(),
        );
        let snapshots_built = counter(
            &mut registry,
            "snapshots_built",
            "Snapshots built by this node since it started",
        );
        let storage_failures = counter(
            &mut registry,
            "storage_failures",
            "Storage failures that made this node fail-stop (it serves nothing until restarted)",
        );
        let api_connections = gauge(
            &mut registry,
            "api_connections",
            "Client API connections open (admitted under connections_max)",
            None,
        );
        let keepalive_streams = gauge(
            &mut registry,
            "keepalive_streams",
            "KeepAlive streams open",
            None,
        );
        let watch_streams = gauge(&mut registry, "watch_streams", "Watch streams open", None);
        let acquire_waiters = gauge(
            &mut registry,
            "acquire_waiters",
            "Acquires waiting in a queue",
            None,
        );
        let limit_rejections = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_rejections",
            "Connections and calls refused by a limit",
            limit_rejections.clone(),
        );
        let idle_closed = Family::<IdleLabels, Counter>::default();
        registry.register(
            "idle_closed",
            "Connections and streams ended for idleness or a stalled reader",
            idle_closed.clone(),
        );
        Metrics {
            api_connections,
            keepalive_streams,
            watch_streams,
            acquire_waiters,
            limit_rejections,
            limit_rejections_sum: AtomicU64::new(0),
            idle_closed,
            idle_closed_sum: AtomicU64::new(0),
            storage_failures,
            registry,
            keepalive_renewed,
            keepalive_refused,
            sessions_expired,
            takeovers,
            prompt_elections,
            proposals,
            forwarded,
            auth_unauthenticated,
            auth_denied,
            grants,
            releases,
            recalls,
            acquire_duration,
            keepalive_duration,
            sessions_active,
            leases_active,
            raft_term,
            raft_leader_id,
            raft_commit_index,
            raft_applied_index,
            serving_state,
            grace_remaining,
            snapshot_size,
            snapshot_build_duration,
            snapshots_built,
        }
    }

    /// The gauge of a [`StreamKind`].
    fn stream_gauge(&self, kind: StreamKind) -> &Gauge<u64, AtomicU64> {
        match kind {
            StreamKind::KeepAlive => &self.keepalive_streams,
            StreamKind::Watch => &self.watch_streams,
            StreamKind::Waiter => &self.acquire_waiters,
        }
    }

    /// One more stream (or waiter) of `kind` open.
    pub fn stream_opened(&self, kind: StreamKind) {
        self.stream_gauge(kind).inc();
    }

    /// One stream (or waiter) of `kind` fewer.
    pub fn stream_closed(&self, kind: StreamKind) {
        self.stream_gauge(kind).dec();
    }

    /// One more client API connection open.
    pub fn connection_opened(&self) {
        self.api_connections.inc();
    }

    /// One client API connection fewer.
    pub fn connection_closed(&self) {
        self.api_connections.dec();
    }

    /// A connection or call refused by `limit` (its setting name).
    pub fn limit_rejected(&self, limit: &'static str) {
        self.limit_rejections
            .get_or_create(&LimitLabels { limit })
            .inc();
        self.limit_rejections_sum.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection or stream ended for idleness.
    pub fn idle_closed(&self, what: IdleLabel) {
        self.idle_closed.get_or_create(&IdleLabels { what }).inc();
        self.idle_closed_sum.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one keepalive's renewed and refused sessions.
    pub fn keepalive_renewed(&self, renewed: u64, refused: u64) {
        self.keepalive_renewed.inc_by(renewed);
        self.keepalive_refused.inc_by(refused);
    }

    /// Records how long one keepalive message took to answer.
    pub fn keepalive_took(&self, took: Duration) {
        self.keepalive_duration.observe(took.as_secs_f64());
    }

    /// Counts expired sessions.
    pub fn expired(&self, n: u64) {
        self.sessions_expired.inc_by(n);
    }

    /// Counts a takeover.
    pub fn takeover(&self) {
        self.takeovers.inc();
    }

    /// Counts an election started as soon as the vote window ran out.
    pub fn prompt_election(&self) {
        self.prompt_elections.inc();
    }

    /// Counts a proposal.
    pub fn proposed(&self) {
        self.proposals.inc();
    }

    /// Counts a call refused for missing or unknown credentials.
    pub fn auth_unauthenticated(&self) {
        self.auth_unauthenticated.inc();
    }

    /// Counts a call refused by role or prefix.
    pub fn auth_denied(&self) {
        self.auth_denied.inc();
    }

    /// Counts a forwarded request.
    pub fn forwarded(&self) {
        self.forwarded.inc();
    }

    /// Counts a grant.
    pub fn granted(&self) {
        self.grants.inc();
    }

    /// Counts a release.
    pub fn released(&self) {
        self.releases.inc();
    }

    /// Counts a recall.
    pub fn recalled(&self) {
        self.recalls.inc();
    }

    /// Counts a storage failure (the node fail-stops on it).
    pub fn storage_failed(&self) {
        self.storage_failures.inc();
    }

    /// Records how long an Acquire took to get its entry's answer.
    pub fn acquire_took(&self, took: Duration) {
        self.acquire_duration.observe(took.as_secs_f64());
    }

    /// Sets the gauges from values read at scrape time.
    pub fn refresh(&self, o: &Observed) {
        self.sessions_active.set(o.sessions);
        self.leases_active.set(o.leases);
        self.raft_term.set(o.term);
        self.raft_leader_id.set(o.leader_id);
        self.raft_commit_index.set(o.commit_index);
        self.raft_applied_index.set(o.applied_index);
        let current = o.serving.map(ServingLabel::of);
        for state in ServingLabel::ALL {
            self.serving_state
                .get_or_create(&ServingLabels { state })
                .set(i64::from(current == Some(state)));
        }
        let grace = match o.serving {
            Some(Serving::FailoverGrace { remaining }) => remaining.as_secs_f64(),
            _ => 0.0,
        };
        self.grace_remaining.set(grace);
        self.snapshot_size.set(o.snapshot_bytes);
        self.snapshot_build_duration
            .set(o.snapshot_build.as_secs_f64());
        // A counter only grows: add what the builder counted since the
        // last scrape.
        let seen = self.snapshots_built.get();
        if o.snapshots_built > seen {
            self.snapshots_built.inc_by(o.snapshots_built - seen);
        }
    }

    /// Encodes every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            keepalive_renewed_total: self.keepalive_renewed.get(),
            keepalive_refused_total: self.keepalive_refused.get(),
            sessions_expired_total: self.sessions_expired.get(),
            takeovers_total: self.takeovers.get(),
            prompt_elections_total: self.prompt_elections.get(),
            proposals_total: self.proposals.get(),
            forwarded_total: self.forwarded.get(),
            auth_unauthenticated_total: self.auth_unauthenticated.get(),
            auth_denied_total: self.auth_denied.get(),
            grants_total: self.grants.get(),
            releases_total: self.releases.get(),
            recalls_total: self.recalls.get(),
            api_connections: self.api_connections.get(),
            keepalive_streams: self.keepalive_streams.get(),
            watch_streams: self.watch_streams.get(),
            acquire_waiters: self.acquire_waiters.get(),
            limit_rejections_total: self.limit_rejections_sum.load(Ordering::Relaxed),
            idle_closed_total: self.idle_closed_sum.load(Ordering::Relaxed),
            storage_failures_total: self.storage_failures.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_with_units_last() {
        let m = Metrics::new();
        m.granted();
        m.granted();
        m.keepalive_renewed(3, 1);
        m.acquire_took(Duration::from_millis(3));
        m.limit_rejected("watch_streams_max");
        m.idle_closed(IdleLabel::connection);
        m.stream_opened(StreamKind::Waiter);
        m.storage_failed();
        m.refresh(&Observed {
            sessions: 4,
            term: 2,
            serving: Some(Serving::FailoverGrace {
                remaining: Duration::from_millis(1_500),
            }),
            snapshot_bytes: 1234,
            snapshots_built: 1,
            ..Observed::default()
        });
        let text = m.encode().expect("encodes");
        for line in [
            "leasehold_grants_total 2",
            "leasehold_keepalive_renewed_total 3",
            "leasehold_keepalive_refused_total 1",
            "leasehold_sessions_active 4",
            "leasehold_raft_term 2",
            "leasehold_serving_state{state=\"failover_grace\"} 1",
            "leasehold_serving_state{state=\"serving\"} 0",
            "leasehold_failover_grace_remaining_seconds 1.5",
            "leasehold_snapshot_size_bytes 1234",
            "leasehold_snapshots_built_total 1",
            "leasehold_acquire_duration_seconds_count 1",
            "leasehold_keepalive_duration_seconds_count 0",
            "leasehold_limit_rejections_total{limit=\"watch_streams_max\"} 1",
            "leasehold_idle_closed_total{what=\"connection\"} 1",
            "leasehold_acquire_waiters 1",
            "leasehold_storage_failures_total 1",
            "leasehold_serving_state{state=\"storage_failed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        assert_eq!(m.snapshot().grants_total, 2);
        assert_eq!(m.snapshot().storage_failures_total, 1);
    }
}
