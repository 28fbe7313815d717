//! [`Client`]: connections to a cluster, unary calls, and the keepalive
//! task shared by every session the client opens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::limits::TTL_MS_CEILING;
use leasehold_core::LeaseConfig;
use leasehold_proto::v1 as pb;
use tokio::sync::watch;

use crate::config::ClientConfig;
use crate::deadline::{HolderClock, SharedClock};
use crate::error::ClientError;
use crate::handle::SessionHandle;
use crate::keepalive;
use crate::session::{Lease, Registry, Session, SessionCore, SessionOwner};
use crate::transport::{normalize_endpoint, Transport};
use crate::types::{
    check_client_name, check_resource, config_from_pb, config_to_pb, duration_ms, mode_to_pb,
    AcquireOptions, ListPage, Member, NodeStatus, ResourceState, SessionInfo, SessionsPage,
};
use crate::watch::WatchStream;

/// Resources asked for per page when [`Client::list`] follows pages.
const LIST_PAGE_SIZE: u32 = 500;
/// Sessions asked for per page when [`Client::list_sessions`] follows pages.
const SESSIONS_PAGE_SIZE: u32 = 500;
/// The service's catch-up bound of a membership change that names none.
const MEMBERSHIP_CATCH_UP_DEFAULT: Duration = Duration::from_secs(30);
/// Time a membership change may spend committing its entries, on top of
/// the catch-up.
const MEMBERSHIP_COMMIT_SLACK: Duration = Duration::from_secs(30);

/// What every clone of a client shares.
#[derive(Debug)]
struct Inner {
    /// Channels, leader, retries.
    transport: Arc<Transport>,
    /// Sessions kept alive.
    registry: Arc<Registry>,
    /// Holder deadline rules of every session: the configured ones, the
    /// drift bound raised to the cluster's.
    clock: Arc<SharedClock>,
    /// Dropping it stops the keepalive task.
    _stop: watch::Sender<()>,
}

/// A connection to a Leasehold cluster.
///
/// Cheap to clone; every clone shares the connections and one keepalive
/// task, which renews all sessions opened through the client every period
/// on one stream to the leader, in one request per 10,000 sessions. Unary calls go to the
/// known leader (any node works: followers forward) and are retried across
/// nodes on `UNAVAILABLE` or connection failures, with capped backoff,
/// within a per-call deadline.
///
/// ```
/// use std::time::Duration;
/// use leasehold_client::{AcquireOptions, Client, LeaseStatus};
///
/// # #[tokio::main]
/// # async fn main() -> anyhow::Result<()> {
/// # let cluster = leasehold_tests::TestCluster::start(Default::default()).await?;
/// # let endpoints = cluster.api_endpoints();
/// let client = Client::connect(endpoints).await?;
/// let session = client.open_session("worker-1", Duration::from_secs(10)).await?;
/// let lease = session.acquire("jobs/nightly", AcquireOptions::exclusive()).await?;
/// println!("holding {} with token {}", lease.resource(), lease.fencing_token());
/// tokio::select! {
///     status = lease.lost() => println!("stop: {status:?}"),
///     _ = tokio::time::sleep(Duration::from_millis(100)) => println!("work done"),
/// }
/// assert_eq!(client.get("jobs/nightly").await?.holders[0].session_id, session.id());
/// session.close().await?;
/// # cluster.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    /// Shared state.
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the cluster at `endpoints` (`host:port`, `http://`
    /// optional) with default settings; see
    /// [`ClientBuilder`](crate::ClientBuilder) for others. Fails with
    /// [`ClientError::Unavailable`] if no node answers within the call
    /// timeout.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        crate::ClientBuilder::new(endpoints).connect().await
    }

    /// Builds the client and finds the leader.
    pub(crate) async fn from_config(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client::from_config_lazy(config)?;
        let status = client.status().await?;
        if let Some(leader) = &status.leader_api_addr {
            if let Ok(l) = normalize_endpoint(leader) {
                client.transport().set_leader(Some(l));
            }
        }
        tracing::debug!(leader = ?client.leader(), "connected");
        Ok(client)
    }

    /// Builds the client without contacting any node.
    pub(crate) fn from_config_lazy(config: ClientConfig) -> Result<Client, ClientError> {
        check_client_name(&config.client_name)?;
        let transport = Arc::new(Transport::new(config)?);
        let registry = Arc::new(Registry::default());
        let clock = Arc::new(SharedClock::new(transport.config.clock));
        let (stop, stopped) = watch::channel(());
        tokio::spawn(keepalive::run(
            Arc::clone(&transport),
            Arc::clone(&registry),
            Arc::clone(&clock),
            stopped,
        ));
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                registry,
                clock,
                _stop: stop,
            }),
        })
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn config(&self) -> &ClientConfig {
        &self.inner.transport.config
    }

    /// The configured endpoints, normalized (`http://host:port`).
    pub fn endpoints(&self) -> Vec<String> {
        self.transport().endpoints().to_vec()
    }

    /// The leader's client address, when known.
    pub fn leader(&self) -> Option<String> {
        self.transport().leader()
    }

    /// The drift and margin rules of holder deadlines in force now: the
    /// configured margin, and the larger of the configured drift bound and
    /// the largest the cluster reported in any answer so far.
    pub fn holder_clock(&self) -> HolderClock {
        self.inner.clock.current()
    }

    /// The shared holder clock, for new sessions.
    fn shared_clock(&self) -> Arc<SharedClock> {
        Arc::clone(&self.inner.clock)
    }

    /// Adopts the drift bound an answer of the cluster reported.
    fn observe_drift(&self, drift_ppm: u32) {
        self.inner.clock.observe(drift_ppm);
    }

    /// Runs a unary call with the default budget.
    async fn unary<T, F, Fut>(&self, what: &str, call: F) -> Result<T, ClientError>
    where
        F: FnMut(crate::transport::Stub, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let c = self.config();
        self.transport()
            .call(what, c.call_timeout, c.attempt_timeout, call)
            .await
    }

    /// Opens a session named `name` with time-to-live `ttl` (the service
    /// may refuse TTLs outside its configured bounds). The client keeps it
    /// alive from now on.
    pub async fn open_session(&self, name: &str, ttl: Duration) -> Result<Session, ClientError> {
        check_client_name(name)?;
        let ttl_ms = check_ttl(ttl)?;
        // Retries (after an unknown outcome) carry the same request id, so
        // they find the session a first attempt opened.
        let request = pb::OpenSessionRequest {
            client_name: name.to_string(),
            ttl_ms,
            request_id: new_request_id(),
        };
        // The holder counts from before the FIRST attempt: a retry with the
        // same request id may be answered with the session that attempt
        // opened, whose TTL runs from when that attempt applied.
        let t_send = Instant::now();
        let reply = self
            .unary("open_session", |mut stub, _| {
                let request = request.clone();
                async move { stub.open_session(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.observe_drift(reply.drift_ppm);
        let ttl_ms = if reply.ttl_ms > 0 {
            reply.ttl_ms
        } else {
            ttl_ms
        };
        let handle = SessionHandle::from_wire(reply.session_id, &reply.session_secret)?;
        let core = SessionCore::new(
            handle,
            name.to_string(),
            ttl_ms,
            false,
            self.shared_clock(),
            t_send,
        );
        tracing::debug!(session = reply.session_id, ttl_ms, "session opened");
        Ok(Session::from_owner(SessionOwner::start(core, self.clone())))
    }

    /// Adopts a session opened elsewhere (e.g. by another process that
    /// printed its [`SessionHandle`]): renews it once, right away, and keeps
    /// it alive from then on like a session opened here. The holder
    /// deadline rests on that renewal (counted from before it was sent), and
    /// the TTL is the one the service renewed it for.
    ///
    /// Fails with [`ClientError::NotFound`] if the session is closed or
    /// expired, [`ClientError::PermissionDenied`] if the handle's secret is
    /// wrong, and [`ClientError::InvalidArgument`] if this client already
    /// keeps the session. The returned [`Session`] has an empty
    /// [`name`](Session::name) (the name is not the holder's to know), and
    /// holds no [`Lease`] handles for leases the session already has. Like
    /// any session of this client, dropping its last handle closes it:
    /// [`Session::detach`] it to stop renewing and leave it open.
    pub async fn adopt_session(&self, handle: SessionHandle) -> Result<Session, ClientError> {
        if self.registry().get(handle.id).is_some() {
            return Err(ClientError::InvalidArgument(format!(
                "session {}: already kept alive by this client",
                handle.id
            )));
        }
        let request = pb::KeepAliveRequest {
            session_ids: vec![handle.id],
            session_secrets: vec![handle.secret_bytes().into()],
        };
        let (t_send, reply) = self
            .unary("adopt_session", |mut stub, _| {
                let request = request.clone();
                async move {
                    // Read before sending: the holder counts from here.
                    let t_send = Instant::now();
                    let mut replies = stub
                        .keep_alive(tokio_stream::once(request))
                        .await?
                        .into_inner();
                    match replies.message().await? {
                        Some(reply) => Ok((t_send, reply)),
                        None => Err(tonic::Status::unavailable(
                            "keepalive stream ended without a reply",
                        )),
                    }
                }
            })
            .await?;
        self.observe_drift(reply.drift_ppm);
        let status = reply
            .sessions
            .into_iter()
            .find(|s| s.session_id == handle.id)
            .ok_or_else(|| {
                ClientError::Protocol(format!("keepalive reply without session {}", handle.id))
            })?;
        if !status.alive || status.ttl_ms == 0 {
            return Err(ClientError::NotFound(format!(
                "session {} not found (closed or expired)",
                handle.id
            )));
        }
        let core = SessionCore::new(
            handle,
            String::new(),
            status.ttl_ms,
            false,
            self.shared_clock(),
            t_send,
        );
        tracing::debug!(
            session = handle.id,
            ttl_ms = status.ttl_ms,
            "session adopted"
        );
        Ok(Session::from_owner(SessionOwner::start(core, self.clone())))
    }

    /// A one-call lease: acquires `resource` in a new private session of
    /// time-to-live `ttl` that lives and dies with this one lease. The
    /// client keeps the session alive like any other; releasing (or
    /// dropping) the lease ends it.
    pub async fn acquire_once(
        &self,
        resource: &str,
        ttl: Duration,
        options: AcquireOptions,
    ) -> Result<Lease, ClientError> {
        check_resource(resource)?;
        options.validate()?;
        let ttl_ms = check_ttl(ttl)?;
        let request = pb::AcquireRequest {
            session_id: 0,
            resource: resource.to_string(),
            mode: mode_to_pb(options.mode),
            wait_timeout_ms: options.wait_timeout_ms(),
            metadata: options.metadata.clone().into(),
            ttl_ms,
            client_name: self.config().client_name.clone(),
            session_secret: Default::default(),
            request_id: new_request_id(),
        };
        // Counted from before the FIRST attempt (not the one answered): a
        // retry with the same request id may get the private session the
        // first attempt made, whose TTL runs from that attempt's apply.
        let t_send = Instant::now();
        let (_, reply) = self
            .acquire_raw(request, options.wait.unwrap_or_default())
            .await?;
        let lease = reply
            .lease
            .ok_or_else(|| ClientError::Protocol("acquire reply without a lease".into()))?;
        let session_id = if reply.session_id != 0 {
            reply.session_id
        } else {
            lease.session_id
        };
        let ttl_ms = if reply.ttl_ms > 0 {
            reply.ttl_ms
        } else {
            ttl_ms
        };
        let handle = SessionHandle::from_wire(session_id, &reply.session_secret)?;
        let core = SessionCore::new(
            handle,
            self.config().client_name.clone(),
            ttl_ms,
            true,
            self.shared_clock(),
            t_send,
        );
        let owner = SessionOwner::start(core, self.clone());
        Ok(Lease::new(owner, lease))
    }

    /// Sends an acquire, retried within the call timeout plus the wait, and
    /// adopts the drift bound its answer reports. Returns the instant read
    /// before the attempt that succeeded.
    pub(crate) async fn acquire_raw(
        &self,
        request: pb::AcquireRequest,
        wait: Duration,
    ) -> Result<(Instant, pb::AcquireResponse), ClientError> {
        let c = self.config();
        let answer = self
            .transport()
            .call(
                "acquire",
                c.call_timeout.saturating_add(wait),
                c.attempt_timeout.saturating_add(wait),
                |mut stub, _| {
                    let request = request.clone();
                    async move {
                        let t_send = Instant::now();
                        stub.acquire(request)
                            .await
                            .map(|r| (t_send, r.into_inner()))
                    }
                },
            )
            .await?;
        self.observe_drift(answer.1.drift_ppm);
        Ok(answer)
    }

    /// Releases the lease of `session` on `resource` (any session whose
    /// handle the caller has, e.g. one printed by the CLI); returns its
    /// fencing token. Prefer [`Session::release`] or [`Lease::release`] for
    /// sessions of this client: they also update the local status.
    pub async fn release(
        &self,
        session: &SessionHandle,
        resource: &str,
    ) -> Result<u64, ClientError> {
        check_resource(resource)?;
        let request = pb::ReleaseRequest {
            session_id: session.id,
            resource: resource.to_string(),
            session_secret: session.secret_bytes().into(),
        };
        self.unary("release", |mut stub, _| {
            let request = request.clone();
            async move {
                stub.release(request)
                    .await
                    .map(|r| r.into_inner().fencing_token)
            }
        })
        .await
    }

    /// Closes `session` (any session whose handle the caller has); returns
    /// the resources it released. Prefer [`Session::close`] for sessions of
    /// this client.
    pub async fn close_session(&self, session: &SessionHandle) -> Result<Vec<String>, ClientError> {
        let request = pb::CloseSessionRequest {
            session_id: session.id,
            session_secret: session.secret_bytes().into(),
        };
        self.unary("close_session", |mut stub, _| {
            let request = request.clone();
            async move {
                stub.close_session(request)
                    .await
                    .map(|r| r.into_inner().released)
            }
        })
        .await
    }

    /// Current holders and waiters of `resource` (no holders when free).
    pub async fn get(&self, resource: &str) -> Result<ResourceState, ClientError> {
        check_resource(resource)?;
        let request = pb::GetRequest {
            resource: resource.to_string(),
        };
        let reply = self
            .unary("get", |mut stub, _| {
                let request = request.clone();
                async move { stub.get(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        let state = reply.state.unwrap_or_else(|| pb::ResourceState {
            resource: resource.to_string(),
            holders: Vec::new(),
            waiters: 0,
        });
        Ok(ResourceState::from_pb(state, reply.revision))
    }

    /// One page of resources whose names start with `prefix`
    /// (`page_size` 0: the service's default; `page_token` from the previous
    /// page, `None` for the first).
    pub async fn list_page(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<ListPage, ClientError> {
        let request = pb::ListRequest {
            prefix: prefix.to_string(),
            page_size,
            page_token: page_token.unwrap_or_default().to_string(),
        };
        let reply = self
            .unary("list", |mut stub, _| {
                let request = request.clone();
                async move { stub.list(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        let revision = reply.revision;
        Ok(ListPage {
            resources: reply
                .resources
                .into_iter()
                .map(|s| ResourceState::from_pb(s, revision))
                .collect(),
            next_page_token: (!reply.next_page_token.is_empty()).then_some(reply.next_page_token),
            revision,
        })
    }

    /// Every resource whose name starts with `prefix`, following pages.
    /// Pages may be answered at different revisions.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ResourceState>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_page(prefix, LIST_PAGE_SIZE, token.as_deref())
                .await?;
            all.extend(page.resources);
            match page.next_page_token {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(all),
            }
        }
    }

    /// One page of the open sessions, in id order (`page_size` 0: the
    /// service's default; `page_token` from the previous page, `None` for
    /// the first). Secrets are never listed.
    pub async fn list_sessions_page(
        &self,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<SessionsPage, ClientError> {
        let request = pb::ListSessionsRequest {
            page_size,
            page_token: page_token.unwrap_or_default().to_string(),
        };
        let reply = self
            .unary("list_sessions", |mut stub, _| {
                let request = request.clone();
                async move {
                    stub.list_sessions(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        Ok(SessionsPage {
            sessions: reply.sessions.into_iter().map(SessionInfo::from).collect(),
            next_page_token: (!reply.next_page_token.is_empty()).then_some(reply.next_page_token),
            revision: reply.revision,
        })
    }

    /// Every open session, following pages. Pages may be answered at
    /// different revisions.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_sessions_page(SESSIONS_PAGE_SIZE, token.as_deref())
                .await?;
            all.extend(page.sessions);
            match page.next_page_token {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(all),
            }
        }
    }

    /// The replicated lease configuration, as the leader (when known) or
    /// some node applied it.
    pub async fn lease_config(&self) -> Result<LeaseConfig, ClientError> {
        self.status()
            .await?
            .config
            .ok_or_else(|| ClientError::Protocol("status without a lease configuration".into()))
    }

    /// Replaces the replicated lease configuration (every field; a
    /// `vote_window_ms` of 0 keeps the cluster's). Returns the configuration
    /// now in force. To change some fields only, read it with
    /// [`Client::lease_config`] first.
    pub async fn set_config(&self, config: &LeaseConfig) -> Result<LeaseConfig, ClientError> {
        let request = pb::SetConfigRequest {
            config: Some(config_to_pb(config)),
        };
        let reply = self
            .unary("set_config", |mut stub, _| async move {
                stub.set_config(request)
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        let config = reply
            .config
            .ok_or_else(|| ClientError::Protocol("set_config reply without a config".into()))?;
        self.observe_drift(config.drift_ppm);
        Ok(config_from_pb(config))
    }

    /// Lease events on resources starting with `prefix`, from
    /// `from_revision` (0: only new events). The stream reconnects on its
    /// own after a node fails, resuming after the last event it delivered.
    pub async fn watch(
        &self,
        prefix: &str,
        from_revision: u64,
    ) -> Result<WatchStream, ClientError> {
        WatchStream::open(self.clone(), prefix.to_string(), from_revision).await
    }

    /// Opens the raw watch stream at some node.
    pub(crate) async fn watch_raw(
        &self,
        request: pb::WatchRequest,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, ClientError> {
        self.unary("watch", |mut stub, _| {
            let request = request.clone();
            async move { stub.watch(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Asks the current holders of `resource` to give it up early (they see
    /// [`LeaseStatus::Recalled`](crate::LeaseStatus::Recalled)); returns the
    /// holders' session ids.
    pub async fn recall(&self, resource: &str, reason: &str) -> Result<Vec<u64>, ClientError> {
        check_resource(resource)?;
        let request = pb::RecallRequest {
            resource: resource.to_string(),
            reason: reason.to_string(),
        };
        self.unary("recall", |mut stub, _| {
            let request = request.clone();
            async move { stub.recall(request).await.map(|r| r.into_inner().holders) }
        })
        .await
    }

    /// Replaces the set of voters: new members are added as learners and
    /// caught up first, members left out are removed. Returns the new voters.
    pub async fn change_membership(&self, voters: &[Member]) -> Result<Vec<Member>, ClientError> {
        self.change_membership_with(voters, None).await
    }

    /// [`Client::change_membership`], with how long new members may take to
    /// catch up (`None`: the service's default, 30 s; at most 10 min). A
    /// member that does not catch up in time is removed again and the call
    /// fails with `DEADLINE_EXCEEDED` ([`ClientError::WaitTimedOut`]); the
    /// membership is then as it was.
    pub async fn change_membership_with(
        &self,
        voters: &[Member],
        catch_up: Option<Duration>,
    ) -> Result<Vec<Member>, ClientError> {
        let catch_up_timeout_ms = catch_up.map_or(0, |d| duration_ms(d).max(1));
        let request = pb::ChangeMembershipRequest {
            voters: voters
                .iter()
                .map(|m| pb::Member {
                    node_id: m.node_id,
                    raft_addr: m.raft_addr.clone(),
                    api_addr: m.api_addr.clone(),
                    learner: false,
                })
                .collect(),
            catch_up_timeout_ms,
        };
        // The server may spend the whole catch-up (and a few commits) on
        // one attempt: an attempt cut off earlier would be retried into the
        // change still running.
        let c = self.config();
        let slack = catch_up.unwrap_or(MEMBERSHIP_CATCH_UP_DEFAULT) + MEMBERSHIP_COMMIT_SLACK;
        self.transport()
            .call(
                "change_membership",
                c.call_timeout.saturating_add(slack),
                c.attempt_timeout.saturating_add(slack),
                |mut stub, _| {
                    let request = request.clone();
                    async move {
                        stub.change_membership(request).await.map(|r| {
                            r.into_inner()
                                .voters
                                .into_iter()
                                .map(|m| Member {
                                    node_id: m.node_id,
                                    raft_addr: m.raft_addr,
                                    api_addr: m.api_addr,
                                    learner: false,
                                })
                                .collect()
                        })
                    }
                },
            )
            .await
    }

    /// The status of some node, the leader when known; records the leader
    /// it names and adopts the cluster's drift bound it reports.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        let (status, drift_ppm) = self
            .unary("status", |mut stub, addr| async move {
                stub.status(pb::StatusRequest {}).await.map(|r| {
                    let r = r.into_inner();
                    let drift_ppm = r.config.as_ref().map_or(0, |c| c.drift_ppm);
                    (NodeStatus::from_pb(addr, r), drift_ppm)
                })
            })
            .await?;
        self.observe_drift(drift_ppm);
        if status.is_leader() {
            self.transport().set_leader(Some(status.endpoint.clone()));
        } else if let Some(l) = status
            .leader_api_addr
            .as_deref()
            .and_then(|l| normalize_endpoint(l).ok())
        {
            self.transport().set_leader(Some(l));
        }
        Ok(status)
    }

    /// The status of the node at `endpoint`, in one attempt (no retry, no
    /// forwarding): that node's own view. Adopts the drift bound it reports.
    pub async fn status_of(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        let addr = normalize_endpoint(endpoint)?;
        let mut stub = self.transport().stub(&addr)?;
        let timeout = self.config().attempt_timeout;
        match tokio::time::timeout(timeout, stub.status(pb::StatusRequest {})).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                self.observe_drift(r.config.as_ref().map_or(0, |c| c.drift_ppm));
                Ok(NodeStatus::from_pb(addr, r))
            }
            Ok(Err(status)) => {
                let tls = self.config().tls.is_some();
                match crate::error::diagnose(&status, &addr, tls).await {
                    Some(message) => Err(ClientError::Config(message)),
                    None => Err(status.into()),
                }
            }
            Err(_) => Err(ClientError::Unavailable {
                message: format!("{addr}: no answer within {timeout:?}"),
                after: timeout,
            }),
        }
    }

    /// Every configured endpoint's own view, queried concurrently, in
    /// endpoint order.
    pub async fn status_all(&self) -> Vec<(String, Result<NodeStatus, ClientError>)> {
        let endpoints = self.endpoints();
        let views = futures::future::join_all(endpoints.iter().map(|e| self.status_of(e))).await;
        endpoints.into_iter().zip(views).collect()
    }
}

/// A TTL in whole milliseconds, checked against the service's ceiling.
fn check_ttl(ttl: Duration) -> Result<u64, ClientError> {
    let ms = duration_ms(ttl);
    if ms == 0 || ms > TTL_MS_CEILING {
        return Err(ClientError::InvalidArgument(format!(
            "ttl: must be 1 ms to {TTL_MS_CEILING} ms, got {ms} ms"
        )));
    }
    Ok(ms)
}

/// A random id for a request a retry must not repeat the effect of.
fn new_request_id() -> u64 {
    // 0 means "none" on the wire.
    rand::random::<u64>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert!(check_ttl(Duration::ZERO).is_err());
        assert!(check_ttl(Duration::from_secs(2 * 24 * 3600)).is_err());
        assert_eq!(check_ttl(Duration::from_secs(10)).ok(), Some(10_000));
    }

    #[tokio::test]
    async fn connect_fails_unavailable_when_nothing_answers() {
        let r = crate::ClientBuilder::new(["127.0.0.1:1"])
            .call_timeout(Duration::from_millis(200))
            .backoff(Duration::from_millis(5), Duration::from_millis(20))
            .connect()
            .await;
        let e = r.expect_err("nothing listens on port 1");
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn bad_endpoints_are_config_errors() {
        let e = crate::ClientBuilder::new(Vec::<String>::new())
            .connect_lazy()
            .expect_err("no endpoints");
        assert_eq!(e.kind(), "config");
        let e = crate::ClientBuilder::new(["host:1/x"])
            .connect_lazy()
            .expect_err("bad endpoint");
        assert_eq!(e.kind(), "config");
    }
}
