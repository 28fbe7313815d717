//! Plain values the client returns, converted from the wire messages.

use std::time::Duration;

use leasehold_core::limits::{CLIENT_NAME_BYTES_MAX, METADATA_BYTES_MAX, RESOURCE_NAME_BYTES_MAX};
use leasehold_core::{LeaseConfig, Mode};
use leasehold_proto::v1 as pb;

use crate::error::ClientError;

/// How to acquire a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquireOptions {
    /// Exclusive (default) or shared.
    pub mode: Mode,
    /// `None`: fail at once with [`ClientError::Conflict`] if the resource
    /// is held in a conflicting mode. `Some(d)`: queue (FIFO) for at most
    /// `d`, then fail with [`ClientError::WaitTimedOut`].
    pub wait: Option<Duration>,
    /// Opaque bytes stored with the lease and shown to everyone who looks
    /// (at most 1 KiB).
    pub metadata: Vec<u8>,
}

impl Default for AcquireOptions {
    fn default() -> Self {
        AcquireOptions {
            mode: Mode::Exclusive,
            wait: None,
            metadata: Vec::new(),
        }
    }
}

impl AcquireOptions {
    /// Exclusive, no wait, no metadata.
    pub fn exclusive() -> Self {
        AcquireOptions::default()
    }

    /// Shared, no wait, no metadata.
    pub fn shared() -> Self {
        AcquireOptions {
            mode: Mode::Shared,
            ..AcquireOptions::default()
        }
    }

    /// Waits up to `wait` for the resource.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Attaches `metadata` to the lease.
    pub fn metadata(mut self, metadata: impl Into<Vec<u8>>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Checks the limits the service enforces, so mistakes fail locally.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        if self.metadata.len() > METADATA_BYTES_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "metadata: {} bytes, at most {METADATA_BYTES_MAX}",
                self.metadata.len()
            )));
        }
        Ok(())
    }

    /// The wait in milliseconds for the wire (0: no wait; at least 1 ms
    /// when a wait was asked for).
    pub(crate) fn wait_timeout_ms(&self) -> u64 {
        match self.wait {
            None => 0,
            Some(d) => duration_ms(d).max(1),
        }
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks a resource name against the service's limits.
pub(crate) fn check_resource(resource: &str) -> Result<(), ClientError> {
    if resource.is_empty() || resource.len() > RESOURCE_NAME_BYTES_MAX {
        return Err(ClientError::InvalidArgument(format!(
            "resource: name must be 1 to {RESOURCE_NAME_BYTES_MAX} bytes, got {}",
            resource.len()
        )));
    }
    Ok(())
}

/// Checks a client name against the service's limits.
pub(crate) fn check_client_name(name: &str) -> Result<(), ClientError> {
    if name.len() > CLIENT_NAME_BYTES_MAX {
        return Err(ClientError::InvalidArgument(format!(
            "client_name: {} bytes, at most {CLIENT_NAME_BYTES_MAX}",
            name.len()
        )));
    }
    Ok(())
}

/// The wire value of a mode.
pub(crate) fn mode_to_pb(mode: Mode) -> i32 {
    match mode {
        Mode::Exclusive => pb::Mode::Exclusive as i32,
        Mode::Shared => pb::Mode::Shared as i32,
    }
}

/// A mode from the wire (unspecified counts as exclusive).
pub(crate) fn mode_from_pb(mode: i32) -> Mode {
    if mode == pb::Mode::Shared as i32 {
        Mode::Shared
    } else {
        Mode::Exclusive
    }
}

/// One holder of a resource as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The resource.
    pub resource: String,
    /// The holding session.
    pub session_id: u64,
    /// Exclusive or shared.
    pub mode: Mode,
    /// The fencing token of the lease.
    pub fencing_token: u64,
    /// The holder's metadata.
    pub metadata: Vec<u8>,
    /// Client name of the holding session.
    pub client_name: String,
    /// Remaining TTL of the holder's session on the leader (`None` when the
    /// answering node does not know, e.g. a follower).
    pub remaining_ttl: Option<Duration>,
    /// Whether someone asked the holder to give the lease up.
    pub recalled: bool,
    /// Why, when recalled.
    pub recall_reason: Option<String>,
}

impl From<pb::Lease> for LeaseInfo {
    fn from(l: pb::Lease) -> Self {
        LeaseInfo {
            resource: l.resource,
            session_id: l.session_id,
            mode: mode_from_pb(l.mode),
            fencing_token: l.fencing_token,
            metadata: l.metadata.to_vec(),
            client_name: l.client_name,
            remaining_ttl: (l.remaining_ttl_ms > 0)
                .then(|| Duration::from_millis(l.remaining_ttl_ms)),
            recalled: l.recalled,
            recall_reason: (l.recalled || !l.recall_reason.is_empty())
                .then_some(l.recall_reason)
                .filter(|r| !r.is_empty()),
        }
    }
}

/// Holders and waiters of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    /// The resource.
    pub resource: String,
    /// Its holders: one exclusive, or any number shared; empty when free.
    pub holders: Vec<LeaseInfo>,
    /// How many requests wait for it.
    pub waiters: u32,
    /// Revision (log index) of the state answered.
    pub revision: u64,
}

impl ResourceState {
    /// Converts a wire state answered at `revision`.
    pub(crate) fn from_pb(s: pb::ResourceState, revision: u64) -> Self {
        ResourceState {
            resource: s.resource,
            holders: s.holders.into_iter().map(LeaseInfo::from).collect(),
            waiters: s.waiters,
            revision,
        }
    }
}

/// One page of [`Client::list_page`](crate::Client::list_page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Resources of this page, in name order.
    pub resources: Vec<ResourceState>,
    /// Token for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
    /// Revision the page was answered at.
    pub revision: u64,
}

/// An open session as [`Client::list_sessions`](crate::Client::list_sessions)
/// reports it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    pub session_id: u64,
    /// The client name it was opened with.
    pub client_name: String,
    /// The TTL it was opened with.
    pub ttl: Duration,
    /// Remaining TTL on the leader (`None` when unknown).
    pub remaining_ttl: Option<Duration>,
    /// Resources it holds, in name order.
    pub held: Vec<String>,
    /// Resources it waits for, in name order.
    pub waiting: Vec<String>,
    /// A one-call lease's private session.
    pub private: bool,
}

impl From<pb::SessionInfo> for SessionInfo {
    fn from(s: pb::SessionInfo) -> Self {
        SessionInfo {
            session_id: s.session_id,
            client_name: s.client_name,
            ttl: Duration::from_millis(s.ttl_ms),
            remaining_ttl: (s.remaining_ttl_ms > 0)
                .then(|| Duration::from_millis(s.remaining_ttl_ms)),
            held: s.held,
            waiting: s.waiting,
            private: s.private,
        }
    }
}

/// One page of [`Client::list_sessions_page`](crate::Client::list_sessions_page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionsPage {
    /// Sessions of this page, in id order.
    pub sessions: Vec<SessionInfo>,
    /// Token for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
    /// Revision the page was answered at.
    pub revision: u64,
}

/// The replicated lease configuration from the wire.
pub(crate) fn config_from_pb(c: pb::LeaseConfig) -> LeaseConfig {
    LeaseConfig {
        ttl_ms_min: c.ttl_ms_min,
        ttl_ms_max: c.ttl_ms_max,
        drift_ppm: c.drift_ppm,
        grace_margin_ms: c.grace_margin_ms,
        vote_window_ms: c.vote_window_ms,
    }
}

/// The replicated lease configuration for the wire.
pub(crate) fn config_to_pb(c: &LeaseConfig) -> pb::LeaseConfig {
    pb::LeaseConfig {
        ttl_ms_min: c.ttl_ms_min,
        ttl_ms_max: c.ttl_ms_max,
        drift_ppm: c.drift_ppm,
        grace_margin_ms: c.grace_margin_ms,
        vote_window_ms: c.vote_window_ms,
    }
}

/// What happened to a lease, in a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Granted (at once or to a waiter).
    Acquired,
    /// Released by its holder (or its session closed).
    Released,
    /// Its session expired.
    Expired,
    /// Someone asked the holder to give it up.
    Recalled,
    /// A kind this client does not know (a newer server).
    Unknown(i32),
}

impl EventKind {
    /// Lower-case name (`"acquired"`, …; `"unknown"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Released => "released",
            EventKind::Expired => "expired",
            EventKind::Recalled => "recalled",
            EventKind::Unknown(_) => "unknown",
        }
    }

    fn from_pb(kind: i32) -> Self {
        match pb::EventKind::try_from(kind) {
            Ok(pb::EventKind::Acquired) => EventKind::Acquired,
            Ok(pb::EventKind::Released) => EventKind::Released,
            Ok(pb::EventKind::Expired) => EventKind::Expired,
            Ok(pb::EventKind::Recalled) => EventKind::Recalled,
            _ => EventKind::Unknown(kind),
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lease event from [`Client::watch`](crate::Client::watch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Revision (log index) of the entry that caused it.
    pub revision: u64,
    /// What happened.
    pub kind: EventKind,
    /// The resource.
    pub resource: String,
    /// The session concerned.
    pub session_id: u64,
    /// The lease's mode.
    pub mode: Mode,
    /// The lease's fencing token.
    pub fencing_token: u64,
}

impl From<pb::WatchEvent> for WatchEvent {
    fn from(e: pb::WatchEvent) -> Self {
        WatchEvent {
            revision: e.revision,
            kind: EventKind::from_pb(e.kind),
            resource: e.resource,
            session_id: e.session_id,
            mode: mode_from_pb(e.mode),
            fencing_token: e.fencing_token,
        }
    }
}

/// What a node serves, in a [`NodeStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Serving {
    /// Leader with a valid leader lease: grants and renews.
    Serving,
    /// Leader without a recent quorum acknowledgement: serves nothing.
    WaitingForQuorum,
    /// Leader in failover grace: conflicting grants wait for old sessions.
    FailoverGrace,
    /// Follower or candidate: forwards to the leader.
    Follower,
    /// Not reported.
    Unspecified,
}

impl Serving {
    /// Lower-case name (`"serving"`, `"waiting_for_quorum"`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Serving::Serving => "serving",
            Serving::WaitingForQuorum => "waiting_for_quorum",
            Serving::FailoverGrace => "failover_grace",
            Serving::Follower => "follower",
            Serving::Unspecified => "unspecified",
        }
    }

    fn from_pb(s: i32) -> Self {
        match pb::Serving::try_from(s) {
            Ok(pb::Serving::Serving) => Serving::Serving,
            Ok(pb::Serving::WaitingForQuorum) => Serving::WaitingForQuorum,
            Ok(pb::Serving::FailoverGrace) => Serving::FailoverGrace,
            Ok(pb::Serving::Follower) => Serving::Follower,
            _ => Serving::Unspecified,
        }
    }
}

impl std::fmt::Display for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster member as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub node_id: u64,
    /// Raft peer address.
    pub raft_addr: String,
    /// Client API address.
    pub api_addr: String,
    /// In a status: a learner (replicated to, no vote) rather than a voter.
    /// Ignored by [`Client::change_membership`](crate::Client::change_membership).
    pub learner: bool,
}

/// One node's view of the cluster, from [`Client::status`](crate::Client::status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The endpoint that answered (normalized, `http://host:port`).
    pub endpoint: String,
    /// The answering node's id.
    pub node_id: u64,
    /// `"leader"`, `"follower"`, `"candidate"`, `"learner"` or `"shutdown"`.
    pub role: String,
    /// The leader's id, when known.
    pub leader_id: Option<u64>,
    /// The leader's client address, when known.
    pub leader_api_addr: Option<String>,
    /// Current Raft term.
    pub term: u64,
    /// Highest committed log index.
    pub commit_index: u64,
    /// Highest applied log index.
    pub applied_index: u64,
    /// Members of the cluster.
    pub members: Vec<Member>,
    /// What the node serves.
    pub serving: Serving,
    /// Time left in failover grace (zero when not in grace).
    pub grace_remaining: Duration,
    /// Sessions alive.
    pub sessions: u64,
    /// Resources with holders or waiters.
    pub resources: u64,
    /// The replicated lease configuration as this node applied it.
    pub config: Option<LeaseConfig>,
    /// Why this node refuses to vote and to lead (its own vote window is
    /// shorter than the cluster's), if it does.
    pub config_error: Option<String>,
}

impl NodeStatus {
    /// Converts the answer of the node at `endpoint`.
    pub(crate) fn from_pb(endpoint: String, s: pb::StatusResponse) -> Self {
        NodeStatus {
            endpoint,
            node_id: s.node_id,
            role: s.role,
            leader_id: (s.leader_id != 0).then_some(s.leader_id),
            leader_api_addr: (!s.leader_api_addr.is_empty()).then_some(s.leader_api_addr),
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            members: s
                .members
                .into_iter()
                .map(|m| Member {
                    node_id: m.node_id,
                    raft_addr: m.raft_addr,
                    api_addr: m.api_addr,
                    learner: m.learner,
                })
                .collect(),
            serving: Serving::from_pb(s.serving),
            grace_remaining: Duration::from_millis(s.grace_remaining_ms),
            sessions: s.sessions,
            resources: s.resources,
            config: s.config.map(config_from_pb),
            config_error: (!s.config_error.is_empty()).then_some(s.config_error),
        }
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == "leader" || (self.leader_id.is_some() && self.leader_id == Some(self.node_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_unspecified_is_exclusive() {
        for m in [Mode::Exclusive, Mode::Shared] {
            assert_eq!(mode_from_pb(mode_to_pb(m)), m);
        }
        assert_eq!(mode_from_pb(0), Mode::Exclusive);
    }

    #[test]
    fn acquire_options_check_limits() {
        assert!(AcquireOptions::default().validate().is_ok());
        let big = AcquireOptions::shared().metadata(vec![0u8; METADATA_BYTES_MAX + 1]);
        assert_eq!(
            big.validate().map_err(|e| e.code()),
            Err(tonic::Code::InvalidArgument)
        );
        assert_eq!(AcquireOptions::default().wait_timeout_ms(), 0);
        assert_eq!(
            AcquireOptions::default()
                .wait(Duration::from_micros(10))
                .wait_timeout_ms(),
            1
        );
        assert!(check_resource("").is_err());
        assert!(check_resource(&"x".repeat(RESOURCE_NAME_BYTES_MAX + 1)).is_err());
        assert!(check_resource("jobs/nightly").is_ok());
    }

    #[test]
    fn lease_info_converts() {
        let l = LeaseInfo::from(pb::Lease {
            resource: "r".into(),
            session_id: 3,
            mode: pb::Mode::Shared as i32,
            fencing_token: 9,
            metadata: b"m".to_vec().into(),
            client_name: "c".into(),
            remaining_ttl_ms: 0,
            recalled: true,
            recall_reason: "maintenance".into(),
        });
        assert_eq!(l.mode, Mode::Shared);
        assert_eq!(l.remaining_ttl, None);
        assert_eq!(l.recall_reason.as_deref(), Some("maintenance"));
        assert_eq!(EventKind::from_pb(42), EventKind::Unknown(42));
    }
}
