//! The `leasehold.v1.Leasehold` service: shared handler state, proposals,
//! and the tonic entry points. Each call's handler lives in the module of
//! its job (see `api/mod.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use leasehold_core::{Command, Response as CoreResponse};
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::leasehold_server::Leasehold;
use leasehold_raft::store::{LogStore, StateMachineStore};
use leasehold_raft::{NodeId, Raft};

use crate::proposer::Proposer;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::error::ApiError;
use super::forward::{forwarded, storage_failed, Forwarder, Route, SHUTTING_DOWN};
use super::history::History;
use super::{keepalive, watch};
use crate::lessor::Lessor;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// How long a proposal may take to commit before the call answers UNAVAILABLE.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the handlers share.
pub struct LeaseApi {
    /// This node.
    pub(super) node_id: NodeId,
    /// Membership changes, Raft metrics and forwarding.
    pub(super) raft: Raft,
    /// Proposals, grouped into entries (group commit).
    pub(super) proposer: Proposer,
    /// Reads of applied state.
    pub(super) state: StateMachineStore,
    /// Leader lease, deadlines, serving state.
    pub(super) lessor: Arc<Lessor>,
    /// Recent events for watches.
    pub(super) history: Arc<History>,
    /// Routing to the leader.
    pub(super) forwarder: Forwarder,
    /// Counters.
    pub(super) metrics: Arc<Metrics>,
    /// Ends streams on shutdown.
    pub(super) shutdown: ShutdownSignal,
    /// Committed index (read from the log store for `Status`).
    pub(super) log_store: LogStore,
    /// `W`: sessions must outlive an election, so `ttl_ms_min ≥ 2 W`.
    pub(super) election_timeout_ms_max: u64,
    /// Dropped with the last handle on this API (the service and every
    /// stream task hold one): the node's shutdown waits for that, so the
    /// data directory is free when shutdown returns.
    _alive: mpsc::Sender<()>,
}

type ApiResult<T> = Result<Response<T>, Status>;

/// A server stream of the API.
pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

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
        proposer: Proposer,
        state: StateMachineStore,
        log_store: LogStore,
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
            proposer,
            state,
            lessor,
            history,
            metrics,
            shutdown,
        }
    }

    /// What this node answers once it began shutting down: UNAVAILABLE,
    /// with the leader's address when another node is known to lead. A
    /// node whose store failed says so instead (and names no leader: its
    /// Raft stopped, what it knows is stale).
    pub(super) fn shutting_down(&self) -> ApiError {
        if let Some(reason) = self.lessor.storage_failure() {
            return storage_failed(reason);
        }
        ApiError::Unavailable {
            reason: SHUTTING_DOWN.into(),
            leader_api_addr: self.forwarder.leader_api_addr(),
        }
    }

    /// Replicates a command; times out as UNAVAILABLE.
    pub(super) async fn propose(&self, command: Command) -> Result<(u64, CoreResponse), ApiError> {
        self.metrics.proposed();
        match tokio::time::timeout(COMMIT_TIMEOUT, self.proposer.propose(command)).await {
            Ok(Ok(written)) => Ok(written),
            // A proposal cut short by this node's storage failure says so.
            Ok(Err(_)) if self.lessor.storage_failure().is_some() => Err(self.shutting_down()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ApiError::unavailable(
                "the command did not commit in time (it may still apply); retry",
            )),
        }
    }
}

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
        keepalive::serve(Arc::clone(&self.api), request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
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

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> ApiResult<pb::ListSessionsResponse> {
        let api = &*self.api;
        leader_only!(api, request, list_sessions, list_sessions_local)
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> ApiResult<Self::WatchStream> {
        watch::serve(Arc::clone(&self.api), request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn recall(&self, request: Request<pb::RecallRequest>) -> ApiResult<pb::RecallResponse> {
        let api = &*self.api;
        leader_only!(api, request, recall, recall_local)
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> ApiResult<pb::StatusResponse> {
        // A fail-stopped node reports nothing from a state that may have
        // missed writes.
        if let Some(reason) = self.api.lessor.storage_failure() {
            return Err(storage_failed(reason).into());
        }
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
