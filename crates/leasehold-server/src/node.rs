//! [`Node`]: one running member of the Raft group.

use std::net::SocketAddr;
use std::sync::Arc;

use leasehold_core::{Command, LeaseState, LogIndex, Response};
use leasehold_raft::identity::PeerIdentity;
use leasehold_raft::network::{
    serve_peer_service_tls, Isolation, LeaderContact, PeerNetwork, PeerNetworkConfig, PeerService,
    VoteGate,
};
use leasehold_raft::store::{self, StateMachineStore};
use leasehold_raft::tls::{ClientAuth, NodeTls};
use leasehold_raft::{NodeId, Raft};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admission::{self, Admission};
use crate::api::history::History;
use crate::api::{LeaseApi, LeaseService};
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::election::Prompter;
use crate::error::{ProposeError, ServerError};
use crate::http::Probe;
use crate::lessor::{Lessor, Serving};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::proposer::Proposer;
use crate::shutdown::Shutdown;
use leasehold_proto::v1::leasehold_server::LeaseholdServer;
use std::time::Duration;

use crate::conn::Tracked;
use crate::limits::{CALLS_PER_CONNECTION_MAX, HTTP2_PING_INTERVAL_MS, HTTP2_PING_TIMEOUT_MS};

/// How long shutdown waits for the tasks still holding the database (flush
/// requests, snapshot builds, openraft's workers) to let go of it.
const STORE_CLOSE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for the metrics endpoint to finish its answers.
const METRICS_STOP_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// How long shutdown lets the client API drain: in-flight unary calls
/// finish (a proposal answers within the API's 5 s commit timeout), queued
/// acquires and streams end at once with UNAVAILABLE. Connections still
/// open after this are cut.
pub const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(6);

/// Binds a listener, naming the address on failure.
async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Refuses to start with a certificate that is not node `id`'s: its peers
/// would refuse every Raft message and forwarded call it sends.
fn check_node_certificate(
    tls: &NodeTls,
    id: NodeId,
    path: &std::path::Path,
) -> Result<(), ServerError> {
    let expected = leasehold_raft::identity::node_common_name(id);
    let found = match tls.identity() {
        PeerIdentity::Node(n) if n == id => return Ok(()),
        PeerIdentity::Node(n) => format!("it is node {n}'s"),
        PeerIdentity::Other(cn) => format!("its subject CN is {cn:?}"),
        PeerIdentity::Unreadable(e) => e.to_string(),
        PeerIdentity::None => "it holds no certificate".to_string(),
    };
    Err(ServerError::Config(format!(
        "tls.cert {}: not this node's certificate ({found}); a node certificate has the subject CN {expected:?}, which peers require",
        path.display()
    )))
}

/// The node's TLS material, read and checked, or `None` for explicit
/// plaintext (with a warning: anyone who reaches the ports may talk to it).
fn load_tls(config: &NodeConfig) -> Result<Option<NodeTls>, ServerError> {
    match &config.tls {
        Some(files) => {
            let tls = NodeTls::load(&files.ca_cert, &files.cert, &files.key)
                .map_err(|e| ServerError::Config(format!("tls: {e}")))?;
            check_node_certificate(&tls, config.node_id, &files.cert)?;
            tracing::info!(
                node_id = config.node_id,
                ca_cert = %files.ca_cert.display(),
                cert = %files.cert.display(),
                "TLS on: peers need a certificate of the cluster CA (mutual TLS), clients get TLS"
            );
            Ok(Some(tls))
        }
        None => {
            tracing::warn!(
                node_id = config.node_id,
                raft_listen = %config.raft_listen,
                api_listen = %config.api_listen,
                "plaintext: anyone who reaches these ports can send Raft messages to this node \
                 and call its client API, unauthenticated and unencrypted"
            );
            Ok(None)
        }
    }
}

/// A running node: Raft, its sled store, and the peer gRPC server.
pub struct Node {
    /// What it was started with (kept for restarts and status).
    config: NodeConfig,
    /// The Raft handle (cheap to clone).
    raft: Raft,
    /// Proposals, grouped into entries (shared with the API).
    proposer: Proposer,
    /// Read access to the applied lease state.
    state: StateMachineStore,
    /// Stops the peer server (and later the client API) on drop or trigger.
    shutdown: Shutdown,
    /// The peer server task, awaited on shutdown so the port is free after.
    peer_task: JoinHandle<()>,
    /// The client API server task, awaited on shutdown.
    api_task: JoinHandle<()>,
    /// The metrics and health endpoint's task, if served; awaited on shutdown.
    metrics_task: Option<JoinHandle<()>>,
    /// Address the metrics endpoint actually bound, if served.
    metrics_addr: Option<SocketAddr>,
    /// The lessor's background loop (leader lease, expiry), awaited on shutdown.
    lessor_task: JoinHandle<()>,
    /// Prompt elections (see [`crate::election`]), awaited on shutdown.
    election_task: JoinHandle<()>,
    /// The join rule of a pristine store (see [`crate::admission`]), awaited
    /// on shutdown; `None` after an ordinary restart.
    admission_task: Option<JoinHandle<()>>,
    /// Where the node stands with the cluster.
    admission: tokio::sync::watch::Receiver<Admission>,
    /// Resolves once every handle on the API state is gone (see
    /// `LeaseApi::_alive`).
    api_gone: tokio::sync::mpsc::Receiver<()>,
    /// The leader-side lease bookkeeping (serving state, deadlines).
    lessor: Arc<Lessor>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Address the peer server actually bound (port 0 resolves here).
    raft_addr: SocketAddr,
    /// Address the client API actually bound.
    api_addr: SocketAddr,
    /// Fault injection: cuts the node off from its peers.
    isolation: Isolation,
    /// The clock lease decisions read (skewable for tests).
    clock: Arc<Clock>,
    /// Tells shutdown when the database has closed and unlocked its
    /// directory (tasks holding it end on their own schedule).
    store_closed: store::CloseWatch,
    /// The fail-stop watchdog ([`crate::failstop`]), awaited on shutdown.
    failstop_task: JoinHandle<()>,
    /// Why this node fail-stopped, once it did (`None` until then).
    failure: tokio::sync::watch::Receiver<Option<String>>,
}

impl Node {
    /// Binds the peer and client listeners from the config and starts the node.
    pub async fn start(config: NodeConfig) -> Result<Node, ServerError> {
        let raft_listener = bind(config.raft_listen).await?;
        let api_listener = bind(config.api_listen).await?;
        Node::start_with_listeners(config, raft_listener, api_listener).await
    }

    /// Starts the node on already bound listeners (tests bind port 0 first
    /// to learn every member's addresses).
    pub async fn start_with_listeners(
        config: NodeConfig,
        listener: TcpListener,
        api_listener: TcpListener,
    ) -> Result<Node, ServerError> {
        config.validate()?;
        if config.auth.enabled() {
            tracing::info!(
                node_id = config.node_id,
                principals = config.auth.principals.len(),
                "client API: bearer tokens required"
            );
        } else {
            tracing::warn!(
                node_id = config.node_id,
                api_listen = %config.api_listen,
                "client API is OPEN (auth.open): anyone who reaches it may acquire, recall, set the config and change the membership; configure [[auth.principals]] to require tokens"
            );
        }
        let tls = load_tls(&config)?;
        // Built before anything starts, so that a failure leaves nothing
        // running (`NodeTls::load` already checked the material).
        let mut api_server = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            api_server = api_server
                .tls_config(tls.server_config(ClientAuth::Optional))
                .map_err(|e| {
                    ServerError::Config(format!("tls: {}", leasehold_raft::tls::error_chain(&e)))
                })?;
        }
        let raft_config = Arc::new(config.raft_config()?);
        let raft_addr = listener
            .local_addr()
            .map_err(|e| ServerError::Config(format!("raft_listen: {e}")))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ServerError::Storage(format!("create {}: {e}", config.data_dir.display()))
        })?;
        let api_addr = api_listener
            .local_addr()
            .map_err(|e| ServerError::Config(format!("api_listen: {e}")))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|e| ServerError::Config(format!("metrics_listen: {e}")))?;
        let isolation = Isolation::default();
        let (log_store, state) =
            store::open(&config.data_dir).map_err(|e| ServerError::Storage(e.to_string()))?;
        let store_closed = log_store.close_watch();
        let raft = Raft::new(
            config.node_id,
            raft_config,
            PeerNetwork::new(
                config.node_id,
                PeerNetworkConfig {
                    isolation: isolation.clone(),
                    tls: tls.clone(),
                    ..PeerNetworkConfig::default()
                },
            ),
            log_store.clone(),
            state.clone(),
        )
        .await
        .map_err(|e| ServerError::Raft(e.to_string()))?;

        let restarted = raft
            .is_initialized()
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        // Every start refuses votes for W × (1 + ρ): a restarted node may have
        // acknowledged a leader just before it went down and has forgotten
        // when, and a node whose data was wiped has forgotten its vote too.
        let drift_ppm = state.read(|s| s.config().drift_ppm);
        let refuse_ms = leasehold_core::time::restart_vote_refusal_ms(
            config.timing.election_timeout_ms_max,
            drift_ppm,
        );
        let metrics = Arc::new(Metrics::default());
        let clock = Arc::new(Clock::skewed(config.unsafe_test_clock_rate_ppm));
        if clock.is_skewed() {
            tracing::warn!(
                node_id = config.node_id,
                rate_ppm = config.unsafe_test_clock_rate_ppm,
                "TEST CLOCK SKEW ENABLED: lease safety is not guaranteed beyond the drift bound"
            );
        }
        let lessor = Lessor::new(
            config.node_id,
            raft.clone(),
            state.clone(),
            config.timing,
            Arc::clone(&metrics),
            Arc::clone(&clock),
        );
        let gate_lessor = Arc::clone(&lessor);
        let vote_gate: VoteGate = Arc::new(move || gate_lessor.vote_refusal());
        // A pristine store answers no peer until the join rule admits it
        // (crate::admission): the cluster may still count this id as a
        // member whose log it has seen.
        let quarantine = Isolation::default();
        quarantine.set(!restarted);
        let (admission_tx, admission) = tokio::sync::watch::channel(if restarted {
            Admission::Restarted
        } else {
            Admission::Probing
        });
        let admission_view = admission.clone();
        let contact = LeaderContact::default();
        let service = PeerService::new(raft.clone())
            .with_leader_contact(contact.clone())
            .with_isolation(isolation.clone())
            .with_quarantine(quarantine.clone())
            .with_admission(Arc::new(move || admission_view.borrow().as_str()))
            .refuse_votes_while(vote_gate)
            .refuse_votes_until(
                tokio::time::Instant::now() + std::time::Duration::from_millis(refuse_ms),
            );
        tracing::info!(
            node_id = config.node_id,
            refuse_ms,
            restarted,
            "refusing votes for a while after start"
        );

        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        let node_id = config.node_id;
        let peer_tls = tls.clone();
        let peer_task = tokio::spawn(async move {
            let served =
                serve_peer_service_tls(listener, service, peer_tls.as_ref(), signal.recv()).await;
            if let Err(error) = served {
                tracing::error!(node_id, %error, "peer server stopped");
            }
        });

        let lessor_task = tokio::spawn(Arc::clone(&lessor).run(shutdown.signal()));
        let election_task = tokio::spawn(
            Prompter {
                node_id,
                raft: raft.clone(),
                contact,
                lessor: Arc::clone(&lessor),
                state: state.clone(),
                timing: config.timing,
                metrics: Arc::clone(&metrics),
            }
            .run(shutdown.signal()),
        );
        let history = History::start(&state, shutdown.signal());
        let (alive, api_gone) = tokio::sync::mpsc::channel(1);
        let metrics_task = metrics_listener.map(|listener| {
            let probe = Arc::new(Probe {
                node_id,
                raft: raft.clone(),
                state: state.clone(),
                log_store: log_store.clone(),
                lessor: Arc::clone(&lessor),
                metrics: Arc::clone(&metrics),
            });
            let signal = shutdown.signal();
            tokio::spawn(async move {
                if let Err(error) = crate::http::serve(listener, probe, signal).await {
                    tracing::error!(node_id, %error, "metrics endpoint stopped");
                }
            })
        });
        let (failure_tx, failure) = tokio::sync::watch::channel(None);
        let failstop_task = tokio::spawn(crate::failstop::watch(crate::failstop::Watched {
            node_id,
            data_dir: config.data_dir.clone(),
            raft: raft.clone(),
            faults: log_store.fault_watch(),
            lessor: Arc::clone(&lessor),
            metrics: Arc::clone(&metrics),
            failure: failure_tx,
            shutdown: shutdown.signal(),
        }));
        let proposer = Proposer::start(raft.clone());
        let api = LeaseApi::new(
            node_id,
            raft.clone(),
            proposer.clone(),
            state.clone(),
            log_store,
            Arc::clone(&lessor),
            history,
            Arc::clone(&metrics),
            shutdown.signal(),
            alive,
            config.timing.election_timeout_ms_max,
            admission.clone(),
            Arc::new(config.auth.clone()),
            crate::limits::Quotas::new(&config.limits, &metrics),
            config.limits,
        )
        .with_tls(tls.clone());
        let api_signal = shutdown.signal();
        let limits = config.limits;
        let api_metrics = Arc::clone(&metrics);
        let api_task = tokio::spawn(async move {
            let incoming = crate::conn::incoming(api_listener, limits, api_metrics);
            let service = LeaseholdServer::new(LeaseService::new(api))
                .max_decoding_message_size(leasehold_proto::REQUEST_BYTES_MAX);
            let result = api_server
                .max_concurrent_streams(CALLS_PER_CONNECTION_MAX)
                .http2_keepalive_interval(Some(Duration::from_millis(HTTP2_PING_INTERVAL_MS)))
                .http2_keepalive_timeout(Some(Duration::from_millis(HTTP2_PING_TIMEOUT_MS)))
                .add_service(Tracked::new(service))
                .serve_with_incoming_shutdown(incoming, api_signal.recv())
                .await;
            if let Err(error) = result {
                tracing::error!(node_id, %error, "client API server stopped");
            }
        });

        let admission_task = (!restarted).then(|| {
            tokio::spawn(admission::admit(
                config.clone(),
                tls.clone(),
                raft.clone(),
                quarantine,
                admission_tx,
                shutdown.signal(),
            ))
        });

        let node = Node {
            config,
            proposer,
            raft,
            state,
            shutdown,
            peer_task,
            api_task,
            metrics_task,
            metrics_addr,
            lessor_task,
            election_task,
            admission_task,
            admission,
            api_gone,
            lessor,
            metrics,
            raft_addr,
            api_addr,
            isolation,
            clock,
            store_closed,
            failstop_task,
            failure,
        };
        tracing::info!(node_id, %raft_addr, %api_addr, metrics_addr = ?node.metrics_addr, "node started");
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The bound peer address.
    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_addr
    }

    /// The bound client API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The bound metrics and health endpoint address, if served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where this node stands with the cluster (the join rule of a pristine
    /// store, [`crate::admission`]).
    pub fn admission(&self) -> Admission {
        *self.admission.borrow()
    }

    /// Whether this node serves leases now (leader lease, grace).
    pub fn serving(&self) -> Serving {
        self.lessor.serving()
    }

    /// Why this node fail-stopped (its store failed), if it did: it then
    /// serves nothing and its Raft is stopped
    /// (docs/adr/0007-disk-faults-fail-stop.md).
    pub fn storage_failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Waits until this node fail-stops on a storage failure, and returns
    /// why. Pending forever on a node that never fails (a process selects
    /// it against its shutdown signal).
    pub async fn storage_failed(&self) -> String {
        let mut failure = self.failure.clone();
        let failed = failure
            .wait_for(Option::is_some)
            .await
            .map(|f| f.clone().unwrap_or_default());
        match failed {
            Ok(reason) => reason,
            // The watchdog ended without a failure: shutdown began.
            Err(_) => std::future::pending().await,
        }
    }

    /// Fault injection: cuts this node off from its peers (both ways) or
    /// reconnects it. Clients can still reach its API. For tests and drills.
    pub fn isolate(&self, isolated: bool) {
        tracing::warn!(
            node_id = self.config.node_id,
            isolated,
            "peer isolation changed"
        );
        self.isolation.set(isolated);
    }

    /// Whether [`Node::isolate`] cut this node off.
    pub fn is_isolated(&self) -> bool {
        self.isolation.is_on()
    }

    /// **Test only**: jumps the clock of this node's lease decisions
    /// forward by `ms` (a stalled VM, a clock bug).
    pub fn unsafe_test_clock_jump(&self, ms: u64) {
        self.clock.jump(ms);
    }

    /// The node's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Reads the applied lease state.
    pub fn read<R>(&self, f: impl FnOnce(&LeaseState) -> R) -> R {
        self.state.read(f)
    }

    /// The state machine store (event subscription, disk size).
    pub fn state_machine(&self) -> &StateMachineStore {
        &self.state
    }

    /// Replicates `command` and returns the index it was applied at and the
    /// state machine's answer. Only the leader accepts proposals.
    pub async fn propose(&self, command: Command) -> Result<(LogIndex, Response), ProposeError> {
        self.proposer.propose(command).await
    }

    /// The first step of [`Node::shutdown`], exposed for drills and tests:
    /// this node stops serving for good. It grants, renews, expires and
    /// forwards nothing from now on (every call and keepalive answers
    /// UNAVAILABLE "node shutting down", so clients move to another node)
    /// and never takes over again, while Raft keeps running so in-flight
    /// calls can finish. A leader's vote gate keeps refusing until its
    /// leader lease has run out. Returns whether this node was leading.
    pub fn step_aside(&self) -> bool {
        let was_leading = self.lessor.step_aside();
        tracing::info!(
            node_id = self.config.node_id,
            was_leading,
            "stepping aside: serving nothing from now on"
        );
        was_leading
    }

    /// Stops gracefully, and returns once the data directory and ports can
    /// be reused: steps aside ([`Node::step_aside`]), drains the client API
    /// (in-flight unary calls finish, streams and queued acquires end with
    /// UNAVAILABLE "node shutting down"; at most [`DRAIN_MAX`]), then stops
    /// Raft. The peer server stops answering when the drain begins, so a
    /// stopping node grants no vote; its own Raft still replicates what
    /// in-flight calls propose. A leader proposes nothing new once it
    /// stepped aside (only the withdrawal of acquires still queued on it);
    /// when its Raft stops, the others elect a leader whose takeover
    /// refreshes every session with the failover grace
    /// (docs/adr/0001-time-model.md §4, §5), so holders that keep renewing
    /// lose nothing.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let node_id = self.config.node_id;
        self.step_aside();
        let mut api_gone = self.api_gone;
        self.shutdown.trigger();
        // The tasks only end; their errors were logged inside.
        let mut api_task = self.api_task;
        if tokio::time::timeout(DRAIN_MAX, &mut api_task)
            .await
            .is_err()
        {
            tracing::warn!(
                node_id,
                drain_max = ?DRAIN_MAX,
                "client calls still open after the drain; cutting their connections"
            );
            api_task.abort();
            let _ = api_task.await;
        }
        if let Some(mut task) = self.metrics_task {
            // A scraper holding a request open must not hold up shutdown.
            if tokio::time::timeout(METRICS_STOP_WAIT_MAX, &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        let _ = self.lessor_task.await;
        let _ = self.election_task.await;
        if let Some(task) = self.admission_task {
            let _ = task.await;
        }
        // Stream tasks still holding the API state end on the same signal.
        if tokio::time::timeout(DRAIN_MAX, api_gone.recv())
            .await
            .is_err()
        {
            tracing::warn!(node_id, "API tasks still running after the drain");
        }
        let raft_result = self.raft.shutdown().await;
        let _ = self.peer_task.await;
        let _ = self.failstop_task.await;
        let failed = self.failure.borrow().is_some();
        drop(self.lessor);
        drop(self.state);
        drop(self.raft);
        // Return only once the data directory is free: a node started
        // again on it in this process would otherwise find it locked.
        let closed = self.store_closed.closed(STORE_CLOSE_WAIT_MAX).await;
        tracing::info!(
            node_id,
            store_closed = closed.is_ok(),
            failed,
            "node stopped"
        );
        // After a fail-stop the core already ended on the storage error
        // (logged then); stopping it again is not a new failure.
        if !failed {
            raft_result.map_err(|e| ServerError::Raft(e.to_string()))?;
        }
        closed.map_err(|e| ServerError::Storage(e.to_string()))
    }
}
