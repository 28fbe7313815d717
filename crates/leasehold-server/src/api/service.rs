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
use super::withdraw::Withdrawer;
use super::{keepalive, watch};
use crate::auth::{AuthConfig, Need, Role};
use crate::conn::ConnInfo;
use crate::lessor::Lessor;
use crate::limits::{ApiLimits, Quotas};
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
    /// Withdraws waits whose call ended unanswered, through the leader.
    pub(super) withdrawer: Withdrawer,
    /// Counters.
    pub(super) metrics: Arc<Metrics>,
    /// Ends streams on shutdown.
    pub(super) shutdown: ShutdownSignal,
    /// Committed index (read from the log store for `Status`).
    pub(super) log_store: LogStore,
    /// `W`: sessions must outlive an election, so `ttl_ms_min ≥ 2 W`.
    pub(super) election_timeout_ms_max: u64,
    /// Where this node stands with the cluster (`Status` reports it; a
    /// leader probing a new member checks it is waiting to be added).
    pub(super) admission: tokio::sync::watch::Receiver<crate::admission::Admission>,
    /// Held for the whole of a membership change: one at a time, so that a
    /// change undoing its learners never undoes another's.
    pub(super) membership_lock: tokio::sync::Mutex<()>,
    /// Who may make which call (checked before anything is routed).
    pub(super) auth: Arc<AuthConfig>,
    /// Open KeepAlive and Watch streams and waiting acquires, capped.
    pub(super) quotas: Quotas,
    /// The limits (stall timeout of watches).
    pub(super) limits: ApiLimits,
    /// Dropped with the last handle on this API (the service and every
    /// stream task hold one): the node's shutdown waits for that, so the
    /// data directory is free when shutdown returns.
    _alive: mpsc::Sender<()>,
}

type ApiResult<T> = Result<Response<T>, Status>;

/// A server stream of the API.
pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Checks the caller ([`LeaseApi::authorize`]), then forwards a unary
/// call to the leader or serves it here. A refused call goes nowhere.
macro_rules! leader_only {
    ($self:ident, $request:ident, $method:ident, $local:ident, $call:literal, $need:expr) => {{
        let caller = $self.authorize(&$request, $call, $need)?;
        match $self.forwarder.route(&$self.lessor, $request.metadata())? {
            Route::Local => $self
                .$local($request.into_inner())
                .await
                .map(Response::new)
                .map_err(Status::from),
            Route::Forward { addr, hops } => {
                $self.metrics.forwarded();
                let mut client = $self.forwarder.client(&addr)?;
                client.$method(forwarded($request, hops, &caller)).await
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
        admission: tokio::sync::watch::Receiver<crate::admission::Admission>,
        auth: Arc<AuthConfig>,
        quotas: Quotas,
        limits: ApiLimits,
    ) -> Self {
        LeaseApi {
            quotas,
            limits,
            election_timeout_ms_max,
            admission,
            membership_lock: tokio::sync::Mutex::new(()),
            auth,
            log_store,
            _alive: alive,
            node_id,
            forwarder: Forwarder::new(node_id, raft.clone()),
            withdrawer: Withdrawer::new(
                node_id,
                raft.clone(),
                proposer.clone(),
                state.clone(),
                None,
            ),
            raft,
            proposer,
            state,
            lessor,
            history,
            metrics,
            shutdown,
        }
    }

    /// Forwards to the leader, and asks it to withdraw waits, over TLS
    /// (`None`: plaintext).
    pub fn with_tls(mut self, tls: Option<leasehold_raft::tls::NodeTls>) -> Self {
        self.withdrawer = Withdrawer::new(
            self.node_id,
            self.raft.clone(),
            self.proposer.clone(),
            self.state.clone(),
            tls.clone(),
        );
        self.forwarder = self.forwarder.with_tls(tls);
        self
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

/// The remote IP of a call: the key of the per-client limits.
fn client_ip<T>(request: &Request<T>) -> Option<std::net::IpAddr> {
    // Bare on a plaintext connection, inside `TlsConnectInfo` on TLS.
    let extensions = request.extensions();
    extensions
        .get::<ConnInfo>()
        .or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
                .map(tonic::transport::server::TlsConnectInfo::get_ref)
        })
        .and_then(ConnInfo::client_ip)
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
        leader_only!(
            api,
            request,
            open_session,
            open_session_local,
            "OpenSession",
            Need::Role(Role::Client)
        )
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> ApiResult<pb::CloseSessionResponse> {
        let api = &*self.api;
        leader_only!(
            api,
            request,
            close_session,
            close_session_local,
            "CloseSession",
            Need::Role(Role::Client)
        )
    }

    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> ApiResult<Self::KeepAliveStream> {
        self.api
            .authorize(&request, "KeepAlive", Need::Role(Role::Client))?;
        let client = client_ip(&request);
        keepalive::serve(Arc::clone(&self.api), client, request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> ApiResult<pb::AcquireResponse> {
        let api = &*self.api;
        leader_only!(
            api,
            request,
            acquire,
            acquire_local,
            "Acquire",
            Need::Resource(Role::Client, &request.get_ref().resource)
        )
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> ApiResult<pb::ReleaseResponse> {
        let api = &*self.api;
        leader_only!(
            api,
            request,
            release,
            release_local,
            "Release",
            Need::Resource(Role::Client, &request.get_ref().resource)
        )
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> ApiResult<pb::GetResponse> {
        let api = &*self.api;
        leader_only!(
            api,
            request,
            get,
            get_local,
            "Get",
            Need::Resource(Role::Reader, &request.get_ref().resource)
        )
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> ApiResult<pb::ListResponse> {
        let api = &*self.api;
        leader_only!(
            api,
            request,
            list,
            list_local,
            "List",
            Need::Prefix(Role::Reader, &request.get_ref().prefix)
        )
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> ApiResult<pb::ListSessionsResponse> {
        let api = &*self.api;
        leader_only!(
            api,
            request,
            list_sessions,
            list_sessions_local,
            "ListSessions",
            Need::Role(Role::Reader)
        )
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> ApiResult<Self::WatchStream> {
        let need = Need::Prefix(Role::Reader, &request.get_ref().prefix);
        self.api.authorize(&request, "Watch", need)?;
        let client = client_ip(&request);
        watch::serve(Arc::clone(&self.api), client, request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn recall(&self, request: Request<pb::RecallRequest>) -> ApiResult<pb::RecallResponse> {
        let api = &*self.api;
        leader_only!(
            api,
            request,
            recall,
            recall_local,
            "Recall",
            Need::Role(Role::Admin)
        )
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> ApiResult<pb::StatusResponse> {
        self.api
            .authorize(&request, "Status", Need::Role(Role::Reader))?;
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
        leader_only!(
            api,
            request,
            set_config,
            set_config_local,
            "SetConfig",
            Need::Role(Role::Admin)
        )
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> ApiResult<pb::ChangeMembershipResponse> {
        let caller = self
            .api
            .authorize(&request, "ChangeMembership", Need::Role(Role::Admin))?;
        match self
            .api
            .forwarder
            .route(&self.api.lessor, request.metadata())?
        {
            Route::Local => {
                // Runs to its end even if the caller goes away: a change
                // cut off between adding learners and changing the voters
                // would leave them behind.
                let api = Arc::clone(&self.api);
                let change =
                    tokio::spawn(
                        async move { api.change_membership_local(request.into_inner()).await },
                    );
                match change.await {
                    Ok(answer) => answer.map(Response::new).map_err(Status::from),
                    Err(e) => Err(Status::from(ApiError::Internal(format!(
                        "the membership change task failed: {e}"
                    )))),
                }
            }
            Route::Forward { addr, hops } => {
                self.api.metrics.forwarded();
                let mut client = self.api.forwarder.client(&addr)?;
                client
                    .change_membership(forwarded(request, hops, &caller))
                    .await
            }
        }
    }
}
