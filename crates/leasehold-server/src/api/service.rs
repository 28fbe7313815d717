//! The `leasehold.v1.Leasehold` service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use leasehold_core::machine::{
    validate_client_name, validate_metadata, validate_reason, validate_resource,
};
use leasehold_core::{
    Acquire, Command, Event, EventKind, Grant, LeaseConfig, LeaseState, Response as CoreResponse,
    SessionId, SessionTarget,
};
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::leasehold_server::Leasehold;
use leasehold_raft::store::StateMachineStore;
use leasehold_raft::{NodeId, Raft};
use openraft::ServerState;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::{mode_from_proto, mode_to_proto, ApiError};
use super::forward::{forwarded, Forwarder, Route};
use super::history::{Feed, History};
use crate::lessor::{Lessor, Serving};
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// Longest wait an acquire may ask for (10 minutes).
pub const WAIT_MS_MAX: u64 = 10 * 60 * 1000;
/// Most sessions one keepalive message may renew.
pub const KEEPALIVE_SESSIONS_MAX: usize = 10_000;
/// Default and largest page of `List`.
pub const LIST_PAGE_DEFAULT: usize = 100;
/// Largest page of `List`.
pub const LIST_PAGE_MAX: usize = 1_000;
/// Most voters a membership may have.
pub const VOTERS_MAX: usize = 7;
/// How long a membership change (catching a learner up included) may take.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a proposal may take to commit before the call answers UNAVAILABLE.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the handlers share.
pub struct LeaseApi {
    /// This node.
    node_id: NodeId,
    /// Proposals and metrics.
    raft: Raft,
    /// Reads of applied state.
    state: StateMachineStore,
    /// Leader lease, deadlines, serving state.
    lessor: Arc<Lessor>,
    /// Recent events for watches.
    history: Arc<History>,
    /// Routing to the leader.
    forwarder: Forwarder,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Ends streams on shutdown.
    shutdown: ShutdownSignal,
    /// Committed index (read from the log store for `Status`).
    log_store: leasehold_raft::store::LogStore,
    /// `W`: sessions must outlive an election, so `ttl_ms_min ≥ 2 W`.
    election_timeout_ms_max: u64,
    /// Dropped with the last handle on this API (the service and every
    /// stream task hold one): the node's shutdown waits for that, so the
    /// data directory is free when shutdown returns.
    _alive: mpsc::Sender<()>,
}

type ApiResult<T> = Result<Response<T>, Status>;

/// Converts a granted lease for the wire.
fn lease_to_proto(state: &LeaseState, lessor: &Lessor, grant: &Grant) -> pb::Lease {
    let l = &grant.lease;
    pb::Lease {
        resource: grant.resource.clone(),
        session_id: l.session,
        mode: mode_to_proto(l.mode),
        fencing_token: l.token,
        metadata: l.metadata.clone().into(),
        client_name: state
            .session(l.session)
            .map(|s| s.client_name.clone())
            .unwrap_or_default(),
        remaining_ttl_ms: lessor
            .remaining(l.session)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        recalled: l.recall.is_some(),
        recall_reason: l
            .recall
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
    }
}

fn config_to_proto(c: &LeaseConfig) -> pb::LeaseConfig {
    pb::LeaseConfig {
        ttl_ms_min: c.ttl_ms_min,
        ttl_ms_max: c.ttl_ms_max,
        drift_ppm: c.drift_ppm,
        grace_margin_ms: c.grace_margin_ms,
    }
}

fn event_kind(kind: EventKind) -> i32 {
    use pb::EventKind as K;
    (match kind {
        EventKind::Acquired => K::Acquired,
        EventKind::Released => K::Released,
        EventKind::Expired => K::Expired,
        EventKind::Recalled => K::Recalled,
    }) as i32
}

fn event_to_proto(e: &Event) -> pb::WatchEvent {
    pb::WatchEvent {
        revision: e.revision,
        kind: event_kind(e.kind),
        resource: e.resource.clone(),
        session_id: e.session,
        mode: mode_to_proto(e.mode),
        fencing_token: e.token,
    }
}

/// Forwards a unary call to the leader, or serves it here.
macro_rules! leader_only {
    ($self:ident, $request:ident, $method:ident, $local:ident) => {{
        match $self.forwarder.route(&$self.lessor, $request.metadata())? {
            Route::Local => $self
                .$local($request.into_inner())
                .await
                .map(Response::new)
                .map_err(Status::from),
            Route::Forward { addr, hops } => {
                $self.metrics.forwarded();
                let mut client = $self.forwarder.client(&addr)?;
                client.$method(forwarded($request.into_inner(), hops)).await
            }
        }
    }};
}

impl LeaseApi {
    /// Builds the service state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        state: StateMachineStore,
        log_store: leasehold_raft::store::LogStore,
        lessor: Arc<Lessor>,
        history: Arc<History>,
        metrics: Arc<Metrics>,
        shutdown: ShutdownSignal,
        alive: mpsc::Sender<()>,
        election_timeout_ms_max: u64,
    ) -> Self {
        LeaseApi {
            election_timeout_ms_max,
            log_store,
            _alive: alive,
            node_id,
            forwarder: Forwarder::new(node_id, raft.clone()),
            raft,
            state,
            lessor,
            history,
            metrics,
            shutdown,
        }
    }

    /// Replicates a command; times out as UNAVAILABLE.
    async fn propose(&self, command: Command) -> Result<(u64, CoreResponse), ApiError> {
        self.metrics.proposed();
        match tokio::time::timeout(COMMIT_TIMEOUT, self.raft.client_write(command)).await {
            Ok(Ok(w)) => Ok((w.log_id.index, w.data)),
            Ok(Err(e)) => {
                use openraft::error::{ClientWriteError, RaftError};
                Err(match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        ApiError::Unavailable {
                            reason: "leadership changed; retry".into(),
                            leader_api_addr: f.leader_node.map(|n| n.api_addr),
                        }
                    }
                    other => ApiError::unavailable(other.to_string()),
                })
            }
            Err(_) => Err(ApiError::unavailable(
                "the command did not commit in time (it may still apply); retry",
            )),
        }
    }

    async fn open_session_local(
        &self,
        req: pb::OpenSessionRequest,
    ) -> Result<pb::OpenSessionResponse, ApiError> {
        validate_client_name(&req.client_name)?;
        self.state.read(|s| s.config().check_ttl(req.ttl_ms))?;
        let (_, resp) = self
            .propose(Command::OpenSession {
                client_name: req.client_name,
                ttl_ms: req.ttl_ms,
            })
            .await?;
        match resp {
            CoreResponse::SessionOpened { session, ttl_ms } => {
                self.lessor.track_new(session, ttl_ms);
                Ok(pb::OpenSessionResponse {
                    session_id: session,
                    ttl_ms,
                    drift_ppm: self.state.read(|s| s.config().drift_ppm),
                })
            }
            other => Err(ApiError::refused(other)),
        }
    }

    async fn close_session_local(
        &self,
        req: pb::CloseSessionRequest,
    ) -> Result<pb::CloseSessionResponse, ApiError> {
        let (_, resp) = self
            .propose(Command::CloseSession {
                session: req.session_id,
            })
            .await?;
        match resp {
            CoreResponse::SessionClosed { released } => {
                self.lessor.forget(req.session_id);
                Ok(pb::CloseSessionResponse { released })
            }
            other => Err(ApiError::refused(other)),
        }
    }

    async fn acquire_local(
        &self,
        req: pb::AcquireRequest,
    ) -> Result<pb::AcquireResponse, ApiError> {
        validate_resource(&req.resource)?;
        validate_metadata(&req.metadata)?;
        let mode = mode_from_proto(req.mode)?;
        if req.wait_timeout_ms > WAIT_MS_MAX {
            return Err(ApiError::invalid(
                "wait_timeout_ms",
                format!(
                    "{} ms exceeds the limit of {WAIT_MS_MAX} ms",
                    req.wait_timeout_ms
                ),
            ));
        }
        let session = if req.session_id == 0 {
            if req.ttl_ms == 0 {
                return Err(ApiError::invalid(
                    "session_id",
                    "0 means a one-call lease, which needs ttl_ms",
                ));
            }
            validate_client_name(&req.client_name)?;
            self.state.read(|s| s.config().check_ttl(req.ttl_ms))?;
            SessionTarget::Private {
                client_name: req.client_name.clone(),
                ttl_ms: req.ttl_ms,
            }
        } else {
            SessionTarget::Existing(req.session_id)
        };
        let wait = req.wait_timeout_ms > 0;
        let started = Instant::now();
        // Subscribe before proposing so a grant cannot slip past unseen.
        let mut events = self.state.subscribe();
        let (_, resp) = self
            .propose(Command::Acquire(Acquire {
                session: session.clone(),
                resource: req.resource.clone(),
                mode,
                wait,
                metadata: req.metadata.to_vec(),
            }))
            .await?;
        let private_ttl = matches!(session, SessionTarget::Private { .. }).then_some(req.ttl_ms);
        match resp {
            CoreResponse::Acquired { session, grant, .. } => {
                if let Some(ttl) = private_ttl {
                    self.lessor.track_new(session, ttl);
                }
                self.metrics.granted();
                Ok(self.acquired(session, &grant))
            }
            CoreResponse::Queued { session, .. } => {
                if let Some(ttl) = private_ttl {
                    self.lessor.track_new(session, ttl);
                }
                let deadline = started + Duration::from_millis(req.wait_timeout_ms);
                self.wait_for_grant(session, &req.resource, deadline, &mut events)
                    .await
            }
            other => Err(ApiError::refused(other)),
        }
    }

    fn acquired(&self, session: SessionId, grant: &Grant) -> pb::AcquireResponse {
        self.state.read(|s| pb::AcquireResponse {
            lease: Some(lease_to_proto(s, &self.lessor, grant)),
            session_id: session,
            ttl_ms: s.session(session).map(|x| x.ttl_ms).unwrap_or(0),
            drift_ppm: s.config().drift_ppm,
        })
    }

    /// The lease `session` holds on `resource`, if any.
    fn held(&self, session: SessionId, resource: &str) -> Option<Grant> {
        self.state.read(|s| {
            s.resource(resource)
                .and_then(|r| r.holders.get(&session))
                .map(|lease| Grant {
                    resource: resource.to_string(),
                    lease: lease.clone(),
                })
        })
    }

    /// Waits for a queued acquire to be granted, then cancels it on timeout.
    async fn wait_for_grant(
        &self,
        session: SessionId,
        resource: &str,
        deadline: Instant,
        events: &mut broadcast::Receiver<Arc<leasehold_raft::store::AppliedEvents>>,
    ) -> Result<pb::AcquireResponse, ApiError> {
        // If the caller goes away mid-wait, withdraw the wait anyway: a
        // waiter nobody waits for would later be granted a lease unknown
        // to its client and block the resource until its session ends.
        let mut guard = CancelWaitOnDrop {
            raft: Some(self.raft.clone()),
            session,
            resource: resource.to_string(),
        };
        loop {
            if let Some(grant) = self.held(session, resource) {
                guard.raft = None;
                self.metrics.granted();
                return Ok(self.acquired(session, &grant));
            }
            if self.state.read(|s| s.session(session).is_none()) {
                guard.raft = None;
                return Err(ApiError::SessionNotFound(session));
            }
            tokio::select! {
                got = events.recv() => match got {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(ApiError::unavailable("node shutting down"));
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Timed out: withdraw the wait. If the grant won the race, keep it.
        guard.raft = None;
        let (_, resp) = self
            .propose(Command::CancelWait {
                session,
                resource: resource.to_string(),
            })
            .await?;
        match resp {
            CoreResponse::Acquired { grant, .. } => {
                self.metrics.granted();
                Ok(self.acquired(session, &grant))
            }
            CoreResponse::WaitCancelled => Err(ApiError::WaitTimedOut {
                resource: resource.to_string(),
                waited_ms: deadline.elapsed().as_millis() as u64,
            }),
            other => Err(ApiError::refused(other)),
        }
    }

    async fn release_local(
        &self,
        req: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, ApiError> {
        validate_resource(&req.resource)?;
        let (_, resp) = self
            .propose(Command::Release {
                session: req.session_id,
                resource: req.resource,
            })
            .await?;
        match resp {
            CoreResponse::Released { grant } => {
                if self.state.read(|s| s.session(req.session_id).is_none()) {
                    self.lessor.forget(req.session_id);
                }
                Ok(pb::ReleaseResponse {
                    fencing_token: grant.lease.token,
                })
            }
            other => Err(ApiError::refused(other)),
        }
    }

    async fn recall_local(&self, req: pb::RecallRequest) -> Result<pb::RecallResponse, ApiError> {
        validate_resource(&req.resource)?;
        validate_reason(&req.reason)?;
        let (_, resp) = self
            .propose(Command::Recall {
                resource: req.resource,
                reason: req.reason,
            })
            .await?;
        match resp {
            CoreResponse::Recalled { holders } => Ok(pb::RecallResponse { holders }),
            other => Err(ApiError::refused(other)),
        }
    }

    async fn set_config_local(
        &self,
        req: pb::SetConfigRequest,
    ) -> Result<pb::SetConfigResponse, ApiError> {
        let c = req
            .config
            .ok_or_else(|| ApiError::invalid("config", "missing"))?;
        let config = LeaseConfig {
            ttl_ms_min: c.ttl_ms_min,
            ttl_ms_max: c.ttl_ms_max,
            drift_ppm: c.drift_ppm,
            grace_margin_ms: c.grace_margin_ms,
        };
        let floor = 2 * self.election_timeout_ms_max;
        if config.ttl_ms_min < floor {
            return Err(ApiError::invalid(
                "ttl_ms_min",
                format!(
                    "{} ms is below 2 × the election timeout ({floor} ms): sessions would expire during elections",
                    config.ttl_ms_min
                ),
            ));
        }
        config.validate()?;
        let (_, resp) = self.propose(Command::SetConfig(config)).await?;
        match resp {
            CoreResponse::ConfigSet(c) => Ok(pb::SetConfigResponse {
                config: Some(config_to_proto(&c)),
            }),
            other => Err(ApiError::refused(other)),
        }
    }

    async fn change_membership_local(
        &self,
        req: pb::ChangeMembershipRequest,
    ) -> Result<pb::ChangeMembershipResponse, ApiError> {
        use leasehold_raft::LeaseNode;
        use openraft::error::{ClientWriteError, RaftError};
        if req.voters.is_empty() || req.voters.len() > VOTERS_MAX {
            return Err(ApiError::invalid(
                "voters",
                format!(
                    "{} voters; between 1 and {VOTERS_MAX} are allowed",
                    req.voters.len()
                ),
            ));
        }
        let mut voters = std::collections::BTreeMap::new();
        for m in &req.voters {
            if m.node_id == 0 || m.raft_addr.is_empty() || m.api_addr.is_empty() {
                return Err(ApiError::invalid(
                    "voters",
                    format!(
                        "member {} needs a non-zero id, raft_addr and api_addr",
                        m.node_id
                    ),
                ));
            }
            let node = LeaseNode {
                raft_addr: m.raft_addr.clone(),
                api_addr: m.api_addr.clone(),
            };
            if voters.insert(m.node_id, node).is_some() {
                return Err(ApiError::invalid(
                    "voters",
                    format!("node {} listed twice", m.node_id),
                ));
            }
        }
        let map_err = |e: RaftError<NodeId, ClientWriteError<NodeId, LeaseNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ApiError::Unavailable {
                reason: "leadership changed; retry".into(),
                leader_api_addr: f.leader_node.map(|n| n.api_addr),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ApiError::FailedPrecondition(format!("membership change refused: {e}"))
            }
            RaftError::Fatal(e) => ApiError::unavailable(format!("node stopping: {e}")),
        };
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        for (id, node) in &voters {
            if known.get_node(id).is_none() {
                // Adds it as a learner and waits until it has caught up.
                tokio::time::timeout(
                    MEMBERSHIP_TIMEOUT,
                    self.raft.add_learner(*id, node.clone(), true),
                )
                .await
                .map_err(|_| ApiError::unavailable("the new member did not catch up in time"))?
                .map_err(map_err)?;
            }
        }
        let ids: std::collections::BTreeSet<NodeId> = voters.keys().copied().collect();
        let written =
            tokio::time::timeout(MEMBERSHIP_TIMEOUT, self.raft.change_membership(ids, false))
                .await
                .map_err(|_| ApiError::unavailable("the membership change did not commit in time"))?
                .map_err(map_err)?;
        tracing::info!(node_id = self.node_id, voters = ?voters.keys().collect::<Vec<_>>(), "membership changed");
        Ok(pb::ChangeMembershipResponse {
            voters: voters
                .iter()
                .map(|(id, n)| pb::Member {
                    node_id: *id,
                    raft_addr: n.raft_addr.clone(),
                    api_addr: n.api_addr.clone(),
                })
                .collect(),
            log_index: written.log_id.index,
        })
    }

    fn resource_state(&self, s: &LeaseState, name: &str) -> pb::ResourceState {
        let res = s.resource(name);
        pb::ResourceState {
            resource: name.to_string(),
            holders: res
                .map(|r| {
                    r.holders
                        .values()
                        .map(|l| {
                            lease_to_proto(
                                s,
                                &self.lessor,
                                &Grant {
                                    resource: name.to_string(),
                                    lease: l.clone(),
                                },
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            waiters: res.map(|r| r.waiters.len() as u32).unwrap_or(0),
        }
    }

    async fn get_local(&self, req: pb::GetRequest) -> Result<pb::GetResponse, ApiError> {
        validate_resource(&req.resource)?;
        Ok(self.state.read(|s| pb::GetResponse {
            state: Some(self.resource_state(s, &req.resource)),
            revision: s.revision(),
        }))
    }

    async fn list_local(&self, req: pb::ListRequest) -> Result<pb::ListResponse, ApiError> {
        if req.prefix.len() > leasehold_core::limits::RESOURCE_NAME_BYTES_MAX {
            return Err(ApiError::invalid(
                "prefix",
                "longer than a resource name may be",
            ));
        }
        let page = match req.page_size as usize {
            0 => LIST_PAGE_DEFAULT,
            n if n > LIST_PAGE_MAX => {
                return Err(ApiError::invalid(
                    "page_size",
                    format!("{n} exceeds the limit of {LIST_PAGE_MAX}"),
                ))
            }
            n => n,
        };
        let after = req.page_token;
        Ok(self.state.read(|s| {
            let start = if after.as_str() > req.prefix.as_str() {
                after.as_str()
            } else {
                req.prefix.as_str()
            };
            let mut names: Vec<&String> = s
                .resources_from(start)
                .map(|(n, _)| n)
                .filter(|n| n.as_str() != after)
                .take_while(|n| n.starts_with(&req.prefix))
                .take(page + 1)
                .collect();
            let next = if names.len() > page {
                names.truncate(page);
                names.last().map(|n| n.to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            pb::ListResponse {
                resources: names.iter().map(|n| self.resource_state(s, n)).collect(),
                next_page_token: next,
                revision: s.revision(),
            }
        }))
    }

    /// Answers one keepalive message, or None when this node may not renew.
    fn keepalive_reply(&self, ids: &[SessionId]) -> Option<pb::KeepAliveResponse> {
        let renewed = self.lessor.renew(ids)?;
        let sessions = self.state.read(|s| {
            ids.iter()
                .zip(renewed)
                .map(|(id, ttl)| {
                    let notices = match (ttl, s.session(*id)) {
                        (Some(_), Some(session)) => session
                            .held
                            .iter()
                            .filter_map(|name| {
                                let lease = s.resource(name)?.holders.get(id)?;
                                let recall = lease.recall.as_ref()?;
                                Some(pb::Notice {
                                    resource: name.clone(),
                                    fencing_token: lease.token,
                                    reason: recall.reason.clone(),
                                    revision: recall.index,
                                })
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    pb::SessionStatus {
                        session_id: *id,
                        alive: ttl.is_some(),
                        ttl_ms: ttl.unwrap_or(0),
                        notices,
                    }
                })
                .collect()
        });
        let drift_ppm = self.state.read(|s| s.config().drift_ppm);
        Some(pb::KeepAliveResponse {
            sessions,
            drift_ppm,
        })
    }

    async fn status_local(&self) -> pb::StatusResponse {
        use openraft::storage::RaftLogStorage;
        let committed = self
            .log_store
            .clone()
            .read_committed()
            .await
            .ok()
            .flatten()
            .map(|l| l.index)
            .unwrap_or(0);
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let (serving, grace) = match self.lessor.serving() {
            Serving::Serving => (pb::Serving::Serving, 0),
            Serving::FailoverGrace { remaining } => {
                (pb::Serving::FailoverGrace, remaining.as_millis() as u64)
            }
            Serving::WaitingForQuorum => (pb::Serving::WaitingForQuorum, 0),
            Serving::Follower => (pb::Serving::Follower, 0),
        };
        let membership = m.membership_config.membership();
        let members = membership
            .nodes()
            .map(|(id, n)| pb::Member {
                node_id: *id,
                raft_addr: n.raft_addr.clone(),
                api_addr: n.api_addr.clone(),
            })
            .collect();
        let leader_api_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.api_addr.clone())
            .unwrap_or_default();
        let (sessions, resources, config) = self.state.read(|s| {
            (
                s.session_count() as u64,
                s.resources().count() as u64,
                config_to_proto(s.config()),
            )
        });
        pb::StatusResponse {
            node_id: self.node_id,
            role: role.into(),
            leader_id: m.current_leader.unwrap_or(0),
            leader_api_addr,
            term: m.current_term,
            commit_index: committed.max(m.last_applied.map(|l| l.index).unwrap_or(0)),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
            serving: serving as i32,
            grace_remaining_ms: grace,
            sessions,
            resources,
            config: Some(config),
        }
    }
}

/// Withdraws a queued wait when dropped while armed (the waiting call was
/// abandoned by its caller).
struct CancelWaitOnDrop {
    /// Set while the wait still needs withdrawing.
    raft: Option<Raft>,
    /// The waiting session.
    session: SessionId,
    /// The resource it waits for.
    resource: String,
}

impl Drop for CancelWaitOnDrop {
    fn drop(&mut self) {
        if let Some(raft) = self.raft.take() {
            let command = Command::CancelWait {
                session: self.session,
                resource: std::mem::take(&mut self.resource),
            };
            tokio::spawn(async move {
                if let Err(error) = raft.client_write(command).await {
                    tracing::warn!(%error, "could not withdraw an abandoned wait");
                }
            });
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The tonic service: a cheap handle on the shared [`LeaseApi`].
#[derive(Clone)]
pub struct LeaseService {
    /// Shared state.
    api: Arc<LeaseApi>,
}

impl LeaseService {
    /// Wraps the API state.
    pub fn new(api: LeaseApi) -> Self {
        LeaseService { api: Arc::new(api) }
    }
}

#[tonic::async_trait]
impl Leasehold for LeaseService {
    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> ApiResult<pb::OpenSessionResponse> {
        let api = &*self.api;
        leader_only!(api, request, open_session, open_session_local)
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> ApiResult<pb::CloseSessionResponse> {
        let api = &*self.api;
        leader_only!(api, request, close_session, close_session_local)
    }

    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> ApiResult<Self::KeepAliveStream> {
        let api = Arc::clone(&self.api);
        match api.lessor.serving() {
            Serving::Serving | Serving::FailoverGrace { .. } => {}
            Serving::WaitingForQuorum => {
                return Err(ApiError::unavailable("leader lease not valid; retry").into())
            }
            Serving::Follower => {
                return Err(ApiError::Unavailable {
                    reason: "keepalives are served by the leader only".into(),
                    leader_api_addr: api.forwarder.leader_api_addr(),
                }
                .into())
            }
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let stop = api.shutdown.clone();
        tokio::spawn(async move {
            let stop = stop.recv();
            tokio::pin!(stop);
            loop {
                let msg = tokio::select! {
                    _ = &mut stop => {
                        let _ = tx.send(Err(Status::unavailable("node shutting down"))).await;
                        return;
                    }
                    m = inbound.message() => m,
                };
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => return,
                };
                if msg.session_ids.len() > KEEPALIVE_SESSIONS_MAX {
                    let e = ApiError::invalid(
                        "session_ids",
                        format!("more than {KEEPALIVE_SESSIONS_MAX} sessions in one keepalive"),
                    );
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                let reply = match api.keepalive_reply(&msg.session_ids) {
                    Some(r) => Ok(r),
                    None => Err(ApiError::Unavailable {
                        reason: "this node no longer holds a valid leader lease".into(),
                        leader_api_addr: api.forwarder.leader_api_addr(),
                    }
                    .into()),
                };
                let end = reply.is_err();
                if tx.send(reply).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> ApiResult<pb::AcquireResponse> {
        let api = &*self.api;
        leader_only!(api, request, acquire, acquire_local)
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> ApiResult<pb::ReleaseResponse> {
        let api = &*self.api;
        leader_only!(api, request, release, release_local)
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> ApiResult<pb::GetResponse> {
        let api = &*self.api;
        leader_only!(api, request, get, get_local)
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> ApiResult<pb::ListResponse> {
        let api = &*self.api;
        leader_only!(api, request, list, list_local)
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> ApiResult<Self::WatchStream> {
        let req = request.into_inner();
        if req.prefix.len() > leasehold_core::limits::RESOURCE_NAME_BYTES_MAX {
            return Err(ApiError::invalid("prefix", "longer than a resource name may be").into());
        }
        let api = Arc::clone(&self.api);
        let (kept, covered_from, mut live) = api.history.replay_and_subscribe(req.start_revision);
        if req.start_revision > 0 && req.start_revision < covered_from {
            return Err(ApiError::OutOfRange {
                asked: req.start_revision,
                oldest: covered_from,
            }
            .into());
        }
        // Revisions up to here are delivered or not wanted: a watch of new
        // events only starts at what this node has applied.
        let floor = match req.start_revision {
            0 => api.state.last_applied().map_or(0, |l| l.index),
            from => from - 1,
        };
        let (tx, rx) = mpsc::channel(256);
        let prefix = req.prefix;
        let stop = api.shutdown.clone();
        tokio::spawn(async move {
            // Live batches may repeat what the replay already sent.
            let replayed_to = kept.last().map(|e| e.revision).unwrap_or(0);
            let mut last = replayed_to.max(floor);
            for e in kept.iter().filter(|e| e.resource.starts_with(&prefix)) {
                if tx.send(Ok(event_to_proto(e))).await.is_err() {
                    return;
                }
            }
            let stop = stop.recv();
            tokio::pin!(stop);
            loop {
                let batch = tokio::select! {
                    _ = &mut stop => return,
                    _ = tx.closed() => return,
                    b = live.recv() => b,
                };
                match batch {
                    Ok(Feed::Gap { complete_from }) if complete_from > last + 1 => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "this node did not see the events of revisions {} to {} (it \
                                 installed a snapshot, or its history fell behind apply); resume \
                                 from revision {} on another node, or re-read the state and \
                                 watch from revision {complete_from}",
                                last + 1,
                                complete_from - 1,
                                last + 1
                            ))))
                            .await;
                        return;
                    }
                    Ok(Feed::Gap { .. }) => {}
                    Ok(Feed::Events(events)) => {
                        for e in events.iter() {
                            if e.revision <= replayed_to {
                                continue;
                            }
                            last = last.max(e.revision);
                            if e.resource.starts_with(&prefix)
                                && tx.send(Ok(event_to_proto(e))).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "watcher fell behind by {n} event batches; resume from revision {}",
                                last + 1
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn recall(&self, request: Request<pb::RecallRequest>) -> ApiResult<pb::RecallResponse> {
        let api = &*self.api;
        leader_only!(api, request, recall, recall_local)
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> ApiResult<pb::StatusResponse> {
        Ok(Response::new(self.api.status_local().await))
    }

    async fn set_config(
        &self,
        request: Request<pb::SetConfigRequest>,
    ) -> ApiResult<pb::SetConfigResponse> {
        let api = &*self.api;
        leader_only!(api, request, set_config, set_config_local)
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> ApiResult<pb::ChangeMembershipResponse> {
        let api = &*self.api;
        leader_only!(api, request, change_membership, change_membership_local)
    }
}
