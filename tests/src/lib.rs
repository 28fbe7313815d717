//! Test harness: a cluster of real [`Node`]s in one process, talking real
//! gRPC over 127.0.0.1, with helpers that wait on metrics and conditions
//! under deadlines (never fixed sleeps).
//!
//! # Layout
//! - [`TestCluster`]: start, stop ("kill"), restart nodes on their data dirs;
//!   find the leader; propose with retries; wait for applied indexes.
//! - [`disk`]: small filesystems for disk-fault tests (tmpfs with a size
//!   limit, ext4 on a loop device), unmounted by drop guards.
//! - [`flood`]: idle connections, Watch streams and waiters against a
//!   `leasehold server` process, with its RSS read from `/proc`.

pub mod flood;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use leasehold_core::{Command, Response};
use leasehold_raft::NodeId;
use leasehold_server::{Admission, Node, NodeConfig, PeerSpec, ProposeError, RaftTiming};
use openraft::ServerState;
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};

/// The directory of a TLS cluster's certificates, in its temporary directory.
const TLS_DIR: &str = "tls";

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub size: usize,
    /// Raft timing of every node.
    pub timing: RaftTiming,
    /// Snapshot after this many entries.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot.
    pub log_entries_kept: u64,
    /// **Unsafe, tests only**: skew of every node's lease clock, in ppm.
    pub clock_rate_ppm: i64,
    /// Serve every node's metrics and health endpoint on a free loopback
    /// port ([`Node::metrics_addr`] tells which).
    pub metrics: bool,
    /// Run with TLS: a throwaway CA and node certificates are generated
    /// into the cluster's directory ([`TestCluster::tls_dir`]), peers talk
    /// mutual TLS, the client API TLS. Off: every node runs with explicit
    /// plaintext.
    pub tls: bool,
    /// With `tls`: client certificates to issue besides `client`, one per
    /// name (subject CN = the name; files `NAME.pem`, `NAME-key.pem` in
    /// [`TestCluster::tls_dir`]).
    pub tls_clients: Vec<String>,
    /// Who may call the client API. Default: open (tests of everything
    /// but authentication talk to the API without tokens); give principals
    /// to test authentication.
    pub auth: AuthConfig,
    /// Client API limits of every node.
    pub limits: leasehold_server::limits::ApiLimits,
    /// Keep node `i`'s data in `{data_root}/node-{i}` (where a disk-fault
    /// test mounted a small filesystem) instead of a fresh temporary
    /// directory.
    pub data_root: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            size: 3,
            timing: RaftTiming {
                heartbeat_ms: 50,
                election_timeout_ms_min: 300,
                election_timeout_ms_max: 600,
            },
            snapshot_every_entries: 10_000,
            log_entries_kept: 1_000,
            clock_rate_ppm: 0,
            metrics: false,
            tls: false,
            tls_clients: Vec::new(),
            auth: AuthConfig::open(),
            limits: leasehold_server::limits::ApiLimits::default(),
            data_root: None,
        }
    }
}

pub use leasehold_server::{AuthConfig, Principal, Role, TokenDigest};

impl ClusterOptions {
    /// Options whose nodes require bearer tokens of these principals:
    /// `(name, token, role, prefixes)` each (the tokens are stored hashed).
    pub fn with_principals(principals: &[(&str, &str, Role, &[&str])]) -> Self {
        ClusterOptions {
            auth: AuthConfig {
                principals: principals
                    .iter()
                    .map(|(name, token, role, prefixes)| {
                        Principal::with_token(name, token, *role, prefixes)
                    })
                    .collect(),
                open: false,
            },
            ..ClusterOptions::default()
        }
    }
}

/// A cluster of in-process nodes on loopback.
pub struct TestCluster {
    /// Keeps the data directories alive for the cluster's lifetime.
    _dir: tempfile::TempDir,
    /// Where each node's data lives.
    data_dirs: BTreeMap<NodeId, PathBuf>,
    /// Every member's addresses (stable across restarts).
    peers: Vec<PeerSpec>,
    /// Options every node starts with.
    options: ClusterOptions,
    /// Running nodes; a stopped node is absent.
    nodes: BTreeMap<NodeId, Node>,
}

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or fails after `within`.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestCluster {
    /// Starts a fresh cluster and waits for a leader.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<TestCluster> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let mut listeners: BTreeMap<NodeId, (TcpListener, TcpListener)> = BTreeMap::new();
        let mut peers = Vec::new();
        let mut data_dirs = BTreeMap::new();
        for i in 0..options.size {
            let id = i as NodeId + 1;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let raft_addr = listener.local_addr()?;
            let api_listener = TcpListener::bind("127.0.0.1:0").await?;
            let api = api_listener.local_addr()?;
            peers.push(PeerSpec {
                id,
                node: leasehold_raft::LeaseNode {
                    raft_addr: raft_addr.to_string(),
                    api_addr: api.to_string(),
                },
            });
            listeners.insert(id, (listener, api_listener));
            let root = options.data_root.as_deref().unwrap_or(dir.path());
            data_dirs.insert(id, root.join(format!("node-{id}")));
        }
        if options.tls {
            let nodes: Vec<leasehold_server::certs::NodeCert> = peers
                .iter()
                .map(|p| leasehold_server::certs::NodeCert {
                    id: p.id,
                    hosts: vec!["127.0.0.1".into()],
                })
                .collect();
            let mut clients = vec![leasehold_server::certs::DEFAULT_CLIENT.to_string()];
            clients.extend(options.tls_clients.iter().cloned());
            leasehold_server::certs::init(&dir.path().join(TLS_DIR), &nodes, &clients, false)?;
        }
        let mut cluster = TestCluster {
            _dir: dir,
            data_dirs,
            peers,
            options,
            nodes: BTreeMap::new(),
        };
        for (id, (listener, api_listener)) in listeners {
            let node =
                Node::start_with_listeners(cluster.config(id)?, listener, api_listener).await?;
            cluster.nodes.insert(id, node);
        }
        cluster.leader().await?;
        // The first leader replicates the cluster-wide vote window right
        // after it takes over: tests start from a cluster that has it.
        for node in cluster.nodes.values() {
            wait_until("the cluster's vote window to replicate", WAIT, || async {
                node.read(|s| s.config().vote_window_ms != 0).then_some(())
            })
            .await?;
        }
        Ok(cluster)
    }

    fn config(&self, id: NodeId) -> anyhow::Result<NodeConfig> {
        let me = self
            .peers
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let raft_listen: SocketAddr = me.node.raft_addr.parse()?;
        let api_listen: SocketAddr = me.node.api_addr.parse()?;
        let mut c = NodeConfig::new(
            id,
            raft_listen,
            api_listen,
            self.peers.clone(),
            self.data_dirs[&id].clone(),
        );
        c.timing = self.options.timing;
        c.snapshot_every_entries = self.options.snapshot_every_entries;
        c.log_entries_kept = self.options.log_entries_kept;
        c.unsafe_test_clock_rate_ppm = self.options.clock_rate_ppm;
        c.auth = self.options.auth.clone();
        c.limits = self.options.limits;
        if self.options.metrics {
            c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        match self.tls_dir() {
            Some(dir) => c.tls = Some(leasehold_server::certs::node_files(&dir, id)),
            None => c.plaintext = true,
        }
        Ok(c)
    }

    /// Where the CA, node and client certificates are (`ca.pem`,
    /// `node-ID.pem`, `client.pem`, …), when the cluster runs TLS.
    pub fn tls_dir(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self._dir.path().join(TLS_DIR))
    }

    /// Client API addresses (`host:port`) of every member, running or not.
    pub fn api_endpoints(&self) -> Vec<String> {
        self.peers.iter().map(|p| p.node.api_addr.clone()).collect()
    }

    /// Client API address of one member.
    pub fn api_endpoint(&self, id: NodeId) -> anyhow::Result<String> {
        self.peers
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.node.api_addr.clone())
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Waits until `id` is leader *and serving* (leader lease valid).
    pub async fn serving_leader(&self) -> anyhow::Result<NodeId> {
        wait_until("a serving leader", WAIT, || async {
            self.nodes
                .values()
                .find(|n| n.serving().may_serve())
                .map(|n| n.id())
        })
        .await
    }

    /// The metrics and health endpoint of a running node (with
    /// [`ClusterOptions::metrics`]).
    pub fn metrics_addr(&self, id: NodeId) -> anyhow::Result<SocketAddr> {
        self.node(id)?
            .metrics_addr()
            .ok_or_else(|| anyhow!("node {id} serves no metrics endpoint"))
    }

    /// Ids of all members, running or not.
    pub fn ids(&self) -> Vec<NodeId> {
        self.peers.iter().map(|p| p.id).collect()
    }

    /// The first member other than `id` (running or not), e.g. a follower
    /// of leader `id`.
    pub fn other_than(&self, id: NodeId) -> anyhow::Result<NodeId> {
        self.peers
            .iter()
            .map(|p| p.id)
            .find(|other| *other != id)
            .ok_or_else(|| anyhow!("no member other than {id}"))
    }

    /// A running node.
    pub fn node(&self, id: NodeId) -> anyhow::Result<&Node> {
        self.nodes
            .get(&id)
            .ok_or_else(|| anyhow!("node {id} is not running"))
    }

    /// Running nodes.
    pub fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Waits until a running node is leader and every running node that
    /// knows a leader agrees on it (isolated nodes aside); returns its id.
    pub async fn leader(&self) -> anyhow::Result<NodeId> {
        wait_until("a leader", WAIT, || async {
            let mut leader = None;
            for node in self.nodes.values() {
                let m = node.raft().metrics().borrow().clone();
                if m.state == ServerState::Leader && m.current_leader == Some(node.id()) {
                    leader = Some(node.id());
                }
            }
            let l = leader?;
            // A node cut off from its peers campaigns on its own and knows
            // no leader: it has no say until reconnected. A pristine node
            // that no leader has reached yet (waiting to be
            // added, or quarantined after a wipe) knows no membership.
            let agree = self.nodes.values().filter(|n| !n.is_isolated()).all(|n| {
                let m = n.raft().metrics().borrow().clone();
                m.current_leader == Some(l)
                    || m.membership_config.membership().nodes().next().is_none()
            });
            agree.then_some(l)
        })
        .await
    }

    /// Proposes to the current leader, retrying through elections.
    pub async fn propose(&self, command: Command) -> anyhow::Result<(u64, Response)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader().await?;
            let node = self.node(leader)?;
            match timeout(Duration::from_secs(3), node.propose(command.clone())).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e @ (ProposeError::NotLeader { .. } | ProposeError::Unavailable(_)))) => {
                    tracing::info!(%e, "retrying proposal");
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => tracing::info!("proposal timed out; retrying"),
            }
            if Instant::now() >= deadline {
                bail!("proposal did not commit within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops a node the way `leasehold server` stops on SIGTERM
    /// ([`Node::shutdown`]: it steps aside, drains its API, then stops Raft
    /// and its servers); only what it had written survives.
    pub async fn stop(&mut self, id: NodeId) -> anyhow::Result<()> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        node.shutdown().await?;
        Ok(())
    }

    /// Restarts a stopped node on its data directory and address.
    pub async fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        self.restart_with(id, |_| {}).await
    }

    /// Restarts a stopped node on its data with its configuration changed
    /// by `change` (e.g. other Raft timing).
    pub async fn restart_with(
        &mut self,
        id: NodeId,
        change: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<()> {
        let mut config = self.config(id)?;
        change(&mut config);
        let addr = config.raft_listen;
        let api_addr = config.api_listen;
        // The old socket may linger briefly after shutdown; retry the bind.
        let listener = wait_until("the peer port to be free", WAIT, || async {
            TcpListener::bind(addr).await.ok()
        })
        .await?;
        let api_listener = wait_until("the API port to be free", WAIT, || async {
            TcpListener::bind(api_addr).await.ok()
        })
        .await?;
        let node = Node::start_with_listeners(config, listener, api_listener)
            .await
            .with_context(|| format!("restarting node {id}"))?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Waits until the cluster serves again (a serving leader) and running
    /// node `id` applied everything the leader had applied: a restarted
    /// node has caught up. Returns the serving leader.
    pub async fn wait_caught_up(&self, id: NodeId) -> anyhow::Result<NodeId> {
        let leader = self.serving_leader().await?;
        let applied = self
            .node(leader)?
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        self.wait_applied(id, applied).await?;
        Ok(leader)
    }

    /// Makes exactly `voters` the voters through the leader's client API
    /// (`ChangeMembership`: ids the cluster does not know are added as
    /// learners and caught up first), retrying through leader changes.
    pub async fn change_voters(&self, voters: &[NodeId]) -> anyhow::Result<()> {
        use leasehold_proto::v1 as pb;
        let members: Vec<pb::Member> = voters
            .iter()
            .map(|id| {
                let p = self
                    .peers
                    .iter()
                    .find(|p| p.id == *id)
                    .ok_or_else(|| anyhow!("no node {id}"))?;
                Ok(pb::Member {
                    node_id: *id,
                    raft_addr: p.node.raft_addr.clone(),
                    api_addr: p.node.api_addr.clone(),
                    learner: false,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let deadline = Instant::now() + 3 * WAIT;
        loop {
            let leader = self.leader().await?;
            let mut api = grpc::client(&self.api_endpoint(leader)?).await?;
            match api
                .change_membership(pb::ChangeMembershipRequest {
                    voters: members.clone(),
                    catch_up_timeout_ms: 0,
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    tracing::info!(%status, "retrying the membership change");
                }
                Err(status) => bail!("membership change to {voters:?} refused: {status}"),
            }
            if Instant::now() >= deadline {
                bail!("membership change to {voters:?} did not commit");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a fresh node `id` (not a member yet) on new loopback ports
    /// and an empty data directory, with `--join` (it never founds a
    /// cluster) and every member so far as its peers: it waits to be added.
    pub async fn start_new_node(&mut self, id: NodeId) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.peers.iter().any(|p| p.id == id),
            "node {id} exists already"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let api_listener = TcpListener::bind("127.0.0.1:0").await?;
        self.peers.push(PeerSpec {
            id,
            node: leasehold_raft::LeaseNode {
                raft_addr: listener.local_addr()?.to_string(),
                api_addr: api_listener.local_addr()?.to_string(),
            },
        });
        self.data_dirs
            .insert(id, self._dir.path().join(format!("node-{id}")));
        let mut config = self.config(id)?;
        config.bootstrap = false;
        let node = Node::start_with_listeners(config, listener, api_listener)
            .await
            .with_context(|| format!("starting new node {id}"))?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Member `id` as `ChangeMembership` names it (its addresses).
    pub fn member(&self, id: NodeId) -> anyhow::Result<leasehold_proto::v1::Member> {
        let p = self
            .peers
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        Ok(leasehold_proto::v1::Member {
            node_id: id,
            raft_addr: p.node.raft_addr.clone(),
            api_addr: p.node.api_addr.clone(),
            learner: false,
        })
    }

    /// The `Status` of running node `id`, through its client API.
    pub async fn status(&self, id: NodeId) -> anyhow::Result<leasehold_proto::v1::StatusResponse> {
        Ok(grpc::client(&self.api_endpoint(id)?)
            .await?
            .status(leasehold_proto::v1::StatusRequest {})
            .await?
            .into_inner())
    }

    /// One `ChangeMembership` call to the serving leader (no retry): the
    /// service's own answer.
    pub async fn change_membership(
        &self,
        voters: Vec<leasehold_proto::v1::Member>,
        catch_up_timeout_ms: u64,
    ) -> anyhow::Result<Result<leasehold_proto::v1::ChangeMembershipResponse, tonic::Status>> {
        let leader = self.serving_leader().await?;
        let mut api = grpc::client(&self.api_endpoint(leader)?).await?;
        Ok(api
            .change_membership(leasehold_proto::v1::ChangeMembershipRequest {
                voters,
                catch_up_timeout_ms,
            })
            .await
            .map(tonic::Response::into_inner))
    }

    /// Waits until running node `id` reaches the `want` admission state
    /// (the join rule of a pristine store).
    pub async fn wait_admission(&self, id: NodeId, want: Admission) -> anyhow::Result<()> {
        let node = self.node(id)?;
        wait_until(&format!("node {id} to be {want:?}"), WAIT, || async {
            (node.admission() == want).then_some(())
        })
        .await
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: NodeId) -> anyhow::Result<&Path> {
        self.data_dirs
            .get(&id)
            .map(PathBuf::as_path)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Deletes a stopped node's data directory (a disk replaced or wiped).
    pub fn wipe(&self, id: NodeId) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.nodes.contains_key(&id),
            "stop node {id} before wiping it"
        );
        let dir = &self.data_dirs[&id];
        if dir.exists() {
            // Empty it rather than remove it: it may be a mount point.
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Waits until node `id` applied at least `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64) -> anyhow::Result<()> {
        let node = self.node(id)?;
        node.raft()
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), format!("node {id} applied {index}"))
            .await
            .map_err(|e| anyhow!("node {id}: {e}"))?;
        Ok(())
    }

    /// Waits until every running node applied at least `index`.
    pub async fn wait_all_applied(&self, index: u64) -> anyhow::Result<()> {
        for id in self.nodes.keys() {
            self.wait_applied(*id, index).await?;
        }
        Ok(())
    }

    /// The encoded lease state of a running node.
    pub fn state_bytes(&self, id: NodeId) -> anyhow::Result<Vec<u8>> {
        Ok(self.node(id)?.read(|s| s.encode()))
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await?;
        }
        Ok(())
    }
}

/// Raw gRPC helpers for API tests (no client library: the wire contract
/// itself is under test).
pub mod grpc {
    use std::time::Duration;

    use leasehold_proto::v1 as pb;
    use leasehold_proto::v1::leasehold_client::LeaseholdClient;
    use tokio::sync::{mpsc, watch};
    use tokio::time::Instant;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::Channel;

    /// `message` with `authorization: Bearer <token>` (none for `None`).
    pub fn bearer<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = token {
            let value = format!("Bearer {t}").parse().expect("ascii token");
            r.metadata_mut().insert("authorization", value);
        }
        r
    }

    /// Everything a refused call could have changed: the configuration,
    /// the members, the open sessions, and each resource's holders (with
    /// whether each was recalled).
    #[derive(Debug, PartialEq)]
    pub struct Observed {
        /// The lease configuration.
        pub config: Option<pb::LeaseConfig>,
        /// The members.
        pub members: Vec<pb::Member>,
        /// Open session ids.
        pub sessions: Vec<u64>,
        /// Resources and their holders (session id, recalled).
        pub resources: Vec<(String, Vec<(u64, bool)>)>,
    }

    /// Reads [`Observed`] through `api` with the admin token `admin`.
    pub async fn observe(
        api: &mut LeaseholdClient<Channel>,
        admin: &str,
    ) -> anyhow::Result<Observed> {
        let admin = Some(admin);
        let status = api
            .status(bearer(admin, pb::StatusRequest {}))
            .await?
            .into_inner();
        let sessions = api
            .list_sessions(bearer(
                admin,
                pb::ListSessionsRequest {
                    page_size: 1_000,
                    page_token: String::new(),
                },
            ))
            .await?
            .into_inner()
            .sessions
            .iter()
            .map(|s| s.session_id)
            .collect();
        let resources = api
            .list(bearer(
                admin,
                pb::ListRequest {
                    prefix: String::new(),
                    page_size: 1_000,
                    page_token: String::new(),
                },
            ))
            .await?
            .into_inner()
            .resources
            .into_iter()
            .map(|r| {
                let holders = r
                    .holders
                    .iter()
                    .map(|h| (h.session_id, h.recalled))
                    .collect();
                (r.resource, holders)
            })
            .collect();
        Ok(Observed {
            config: status.config,
            members: status.members,
            sessions,
            resources,
        })
    }

    /// Asserts that `result` is a refusal with `code` whose message holds
    /// every one of `words`.
    pub fn assert_refused(
        result: Result<impl std::fmt::Debug, tonic::Status>,
        code: tonic::Code,
        words: &[&str],
    ) {
        let e = result.expect_err("the call should be refused");
        assert_eq!(e.code(), code, "{e:?}");
        for w in words {
            assert!(e.message().contains(w), "{w:?} not in {:?}", e.message());
        }
    }

    /// A client for one node's API.
    pub async fn client(endpoint: &str) -> anyhow::Result<LeaseholdClient<Channel>> {
        Ok(LeaseholdClient::connect(format!("http://{endpoint}")).await?)
    }

    /// A session as the raw API names it: id and owner secret.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Sess {
        /// The session id.
        pub id: u64,
        /// Its secret (all zeros for an id that names no session of ours).
        pub secret: [u8; 16],
    }

    impl Sess {
        /// The secret as wire bytes.
        pub fn secret(&self) -> tonic::codegen::Bytes {
            self.secret.to_vec().into()
        }
    }

    impl From<u64> for Sess {
        /// An id with no (a wrong) secret: unknown sessions, one-call leases.
        fn from(id: u64) -> Self {
            Sess {
                id,
                secret: [0; 16],
            }
        }
    }

    /// Opens a session through `endpoint`.
    pub async fn open(endpoint: &str, name: &str, ttl_ms: u64) -> anyhow::Result<Sess> {
        let r = client(endpoint)
            .await?
            .open_session(pb::OpenSessionRequest {
                client_name: name.into(),
                ttl_ms,
                request_id: 0,
            })
            .await?
            .into_inner();
        Ok(Sess {
            id: r.session_id,
            secret: r
                .session_secret
                .as_ref()
                .try_into()
                .map_err(|_| anyhow::anyhow!("the session secret is not 16 bytes"))?,
        })
    }

    /// A keepalive message for `sessions`.
    pub fn keepalive_req(sessions: &[Sess]) -> pb::KeepAliveRequest {
        pb::KeepAliveRequest {
            session_ids: sessions.iter().map(|s| s.id).collect(),
            session_secrets: sessions.iter().map(|s| s.secret()).collect(),
        }
    }

    /// A release of `resource` by `session` (with its secret).
    pub fn release_req(session: impl Into<Sess>, resource: &str) -> pb::ReleaseRequest {
        let session = session.into();
        pb::ReleaseRequest {
            session_id: session.id,
            session_secret: session.secret(),
            resource: resource.into(),
        }
    }

    /// An acquire request.
    pub fn acquire_req(
        session: impl Into<Sess>,
        resource: &str,
        shared: bool,
        wait_ms: u64,
    ) -> pb::AcquireRequest {
        let session = session.into();
        pb::AcquireRequest {
            session_id: session.id,
            session_secret: session.secret(),
            request_id: 0,
            resource: resource.into(),
            mode: if shared {
                pb::Mode::Shared as i32
            } else {
                pb::Mode::Exclusive as i32
            },
            wait_timeout_ms: wait_ms,
            metadata: Default::default(),
            ttl_ms: 0,
            client_name: String::new(),
        }
    }

    /// What a keepalive loop observed.
    #[derive(Debug, Clone, Default)]
    pub struct KeepAliveView {
        /// Send instant of the last request whose reply said "alive" for
        /// every session (the holder's `t_send`).
        pub last_renewed_sent_at: Option<Instant>,
        /// Receive instant of that reply.
        pub last_renewed_at: Option<Instant>,
        /// Notices received, in order.
        pub notices: Vec<pb::Notice>,
        /// Sessions reported not alive.
        pub dead: Vec<u64>,
        /// Successful replies.
        pub replies: u64,
        /// Longest time between the arrivals of two consecutive replies
        /// that said "alive" for every session.
        pub longest_renewal_gap: Duration,
        /// Longest time from the send of a renewal answered "alive" to the
        /// arrival of the next such reply: the holder's lease would have
        /// lapsed if this ever exceeded its deadline span
        /// (`TTL × (1 − ρ) / (1 + ρ) − m`).
        pub longest_holder_span: Duration,
    }

    /// Renews `sessions` every `period` through whichever of `endpoints`
    /// accepts the stream (the leader), reconnecting on errors, until the
    /// returned sender is dropped. Observations are published on the watch.
    pub fn keep_alive(
        endpoints: Vec<String>,
        sessions: Vec<Sess>,
        period: Duration,
    ) -> (watch::Receiver<KeepAliveView>, mpsc::Sender<()>) {
        let (view_tx, view_rx) = watch::channel(KeepAliveView::default());
        let (stop_tx, mut stop_rx) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                let endpoint = endpoints[i % endpoints.len()].clone();
                i += 1;
                let Ok(mut c) = client(&endpoint).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let (tx, rx) = mpsc::channel(4);
                let first_sent = Instant::now();
                if tx.send(keepalive_req(&sessions)).await.is_err() {
                    continue;
                }
                let mut inbound = match c.keep_alive(ReceiverStream::new(rx)).await {
                    Ok(s) => s.into_inner(),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let mut sent_at = first_sent;
                loop {
                    let reply = tokio::select! {
                        _ = stop_rx.recv() => return,
                        r = inbound.message() => r,
                    };
                    let Ok(Some(reply)) = reply else { break };
                    let now = Instant::now();
                    view_tx.send_modify(|v| {
                        v.replies += 1;
                        if reply.sessions.iter().all(|s| s.alive) {
                            if let Some(prev) = v.last_renewed_at {
                                v.longest_renewal_gap = v.longest_renewal_gap.max(now - prev);
                            }
                            if let Some(prev) = v.last_renewed_sent_at {
                                v.longest_holder_span = v.longest_holder_span.max(now - prev);
                            }
                            v.last_renewed_sent_at = Some(sent_at);
                            v.last_renewed_at = Some(now);
                        }
                        for s in &reply.sessions {
                            if !s.alive && !v.dead.contains(&s.session_id) {
                                v.dead.push(s.session_id);
                            }
                            v.notices.extend(s.notices.iter().cloned());
                        }
                    });
                    tokio::select! {
                        _ = stop_rx.recv() => return,
                        _ = tokio::time::sleep(period) => {}
                    }
                    sent_at = Instant::now();
                    if tx.send(keepalive_req(&sessions)).await.is_err() {
                        break;
                    }
                }
            }
        });
        (view_rx, stop_tx)
    }
}

impl TestCluster {
    /// Cuts a node off from its peers (both ways), or reconnects it.
    pub fn isolate(&self, id: NodeId, isolated: bool) -> anyhow::Result<()> {
        self.node(id)?.isolate(isolated);
        Ok(())
    }
}

/// A minimal HTTP/1.1 client for the metrics and health endpoint: one GET
/// per connection over a plain `TcpStream` (no HTTP library: the wire
/// format is what a scraper sees).
pub mod http {
    use std::net::SocketAddr;

    use anyhow::{anyhow, Context};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// One HTTP answer.
    #[derive(Debug, Clone)]
    pub struct Answer {
        /// The status code.
        pub status: u16,
        /// Header lines, names lower-cased.
        pub headers: Vec<(String, String)>,
        /// The body as text.
        pub body: String,
    }

    impl Answer {
        /// The first value of header `name` (lower case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// `GET path` from `addr`, reading the answer until the server closes.
    pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let raw = String::from_utf8(raw).context("the answer is not UTF-8")?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no end of headers in {raw:?}"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        anyhow::ensure!(
            !headers
                .iter()
                .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
            "chunked answers are not expected from the metrics endpoint"
        );
        Ok(Answer {
            status,
            headers,
            body: body.to_string(),
        })
    }

    /// The value of sample `series` (a metric name, with its labels if it
    /// has any, e.g. `leasehold_serving_state{state="serving"}`) in a
    /// text exposition.
    pub fn sample(exposition: &str, series: &str) -> Option<f64> {
        exposition.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.split(' ').next()?.parse().ok()
        })
    }
}

/// Small filesystems for disk-fault tests, each unmounted by its drop guard
/// (`umount -l`, even when the test fails). Mounting needs root: tests call
/// [`disk::skip_unless_root`] first, which prints why they skip otherwise
/// (CI runs as root, so there they run).
pub mod disk {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use anyhow::{bail, Context};

    /// Size of each write of [`Tmpfs::fill`].
    const FILL_CHUNK_BYTES: usize = 64 * 1024;

    /// Whether this process runs as root (effective uid 0).
    pub fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let uids = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
                // Uid: real effective saved fs
                uids.split_whitespace().nth(2).map(|e| e == "0")
            })
            .unwrap_or(false)
    }

    /// Returns `true` (and prints a line saying so) when `test` must skip
    /// because it cannot mount filesystems here.
    pub fn skip_unless_root(test: &str) -> bool {
        if is_root() {
            return false;
        }
        println!("SKIPPED {test}: needs root to mount a small filesystem (CI runs as root)");
        true
    }

    /// Runs a command, failing with its output when it fails.
    fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Unmounts `path` lazily (also while files are open in it).
    fn unmount(path: &Path) {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }

    /// A tmpfs of a fixed size mounted at a directory.
    pub struct Tmpfs {
        /// The mount point.
        path: PathBuf,
    }

    impl Tmpfs {
        /// Mounts a tmpfs of `size_bytes` at `path` (created if missing).
        pub fn mount(path: impl Into<PathBuf>, size_bytes: u64) -> anyhow::Result<Tmpfs> {
            let path = path.into();
            std::fs::create_dir_all(&path)?;
            let options = format!("size={size_bytes}");
            let target = path.to_string_lossy().to_string();
            run("mount", &["-t", "tmpfs", "-o", &options, "tmpfs", &target])?;
            Ok(Tmpfs { path })
        }

        /// The mount point.
        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Remounts it read-only (fails while a file is open for writing).
        pub fn remount_read_only(&self) -> anyhow::Result<()> {
            let target = self.path.to_string_lossy().to_string();
            run("mount", &["-o", "remount,ro", &target]).map(|_| ())
        }

        /// Remounts it read-write.
        pub fn remount_read_write(&self) -> anyhow::Result<()> {
            let target = self.path.to_string_lossy().to_string();
            run("mount", &["-o", "remount,rw", &target]).map(|_| ())
        }

        /// Fills it: writes `filler` next to the data until the filesystem
        /// is full. Returns the filler's path ([`Tmpfs::free`] removes it).
        pub fn fill(&self) -> anyhow::Result<PathBuf> {
            let filler = self.path.join("filler");
            let mut file = std::fs::File::create(&filler)?;
            let chunk = vec![0xa5u8; FILL_CHUNK_BYTES];
            loop {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => return Err(e).context("filling the tmpfs"),
                }
            }
            // The last partial page may still fit: fill it byte-wise.
            while let Ok(1) = file.write(&[0xa5]) {}
            Ok(filler)
        }

        /// Removes the filler written by [`Tmpfs::fill`].
        pub fn free(&self) -> anyhow::Result<()> {
            std::fs::remove_file(self.path.join("filler")).context("removing the filler")
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            unmount(&self.path);
        }
    }

    /// An ext4 filesystem in an image file on a loop device, mounted with
    /// `errors=remount-ro`: [`Ext4Loop::fail`] makes the kernel remount it
    /// read-only under the running process, as after a disk error (a
    /// tmpfs cannot be remounted read-only while a file is open for
    /// writing).
    pub struct Ext4Loop {
        /// The mount point.
        path: PathBuf,
        /// The loop device (`/dev/loopN`).
        device: String,
    }

    impl Ext4Loop {
        /// Creates an image of `size_bytes` at `image`, makes it ext4 on a
        /// free loop device and mounts it at `path` (created if missing).
        pub fn mount(
            image: &Path,
            path: impl Into<PathBuf>,
            size_bytes: u64,
        ) -> anyhow::Result<Ext4Loop> {
            let path = path.into();
            std::fs::create_dir_all(&path)?;
            std::fs::File::create(image)?.set_len(size_bytes)?;
            let image_arg = image.to_string_lossy().to_string();
            let device = run("losetup", &["-f", "--show", &image_arg])
                .context("attaching a loop device (are /dev/loop* available?)")?;
            let mounted = (|| -> anyhow::Result<()> {
                run("mkfs.ext4", &["-q", "-F", &device]).context("mkfs.ext4")?;
                let target = path.to_string_lossy().to_string();
                run(
                    "mount",
                    &["-t", "ext4", "-o", "errors=remount-ro", &device, &target],
                )?;
                Ok(())
            })();
            if let Err(e) = mounted {
                let _ = Command::new("losetup").arg("-d").arg(&device).status();
                return Err(e);
            }
            Ok(Ext4Loop { path, device })
        }

        /// The mount point.
        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Makes the kernel report a filesystem error on it
        /// (`/sys/fs/ext4/<dev>/trigger_fs_error`): with
        /// `errors=remount-ro` it becomes read-only at once, and every
        /// write after fails with EROFS.
        pub fn fail(&self) -> anyhow::Result<()> {
            let name = Path::new(&self.device)
                .file_name()
                .context("loop device name")?
                .to_string_lossy()
                .to_string();
            std::fs::write(
                format!("/sys/fs/ext4/{name}/trigger_fs_error"),
                "leasehold disk-fault test",
            )
            .context("triggering an ext4 error")
        }
    }

    impl Drop for Ext4Loop {
        fn drop(&mut self) {
            unmount(&self.path);
            let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        }
    }
}
