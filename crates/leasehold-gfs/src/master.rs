//! The master role: masters elect one of themselves through the Leasehold
//! lease `gfs/master` (the others stand by, still taking reports); the
//! elected one assigns chunk primaries, recalls them, and restores the
//! replication factor.
//!
//! It persists nothing: chunk locations and versions come from chunkserver
//! reports, current primaries and versions from the `chunk/` leases. A new
//! master waits a grace period (several report intervals) before it assigns
//! anything, so every live chunkserver has reported.
//!
//! A chunk is reassigned only once Leasehold shows `chunk/C` free: when its
//! primary's session expired (never before its lease ended: the service
//! guarantees it) or when the primary gave the lease up (recall, a failed
//! secondary).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leasehold_client::{AcquireOptions, Client, ClientError, Lease, LeaseStatus, Session};
use leasehold_proto::gfs::v1 as pb;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::error::GfsError;
use crate::history::{mono_ns, Event, History};
use crate::names::{chunk_lease, CHUNK_LEASE_PREFIX, MASTER_LEASE, REPLICATION_DEFAULT};
use crate::rpc::Pool;
use crate::store::Member;

mod assign;
mod service;

/// How a master runs.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Its id.
    pub id: String,
    /// Leasehold client API endpoints.
    pub leasehold: Vec<String>,
    /// TLS towards Leasehold (its CA, optionally a client certificate);
    /// `None`: plaintext.
    pub leasehold_tls: Option<leasehold_client::ClientTls>,
    /// Bearer token for a Leasehold cluster that requires one (None: open
    /// API). Masters recall chunk leases to re-replicate, and Recall
    /// needs an `admin` principal.
    pub token: Option<leasehold_client::Token>,
    /// TTL of its Leasehold session (and so of the `gfs/master` lease).
    pub session_ttl: Duration,
    /// Period of the assignment loop.
    pub tick: Duration,
    /// A chunkserver whose last report is older than this is not chosen.
    pub report_timeout: Duration,
    /// After winning the election, wait this long (reports arrive) before
    /// assigning.
    pub grace: Duration,
    /// Timeout of each call to a chunkserver.
    pub call_timeout: Duration,
    /// Least time between two re-replication recalls of one chunk.
    pub rereplicate_every: Duration,
    /// A replica counts as missing (to re-replicate) only once its
    /// chunkserver has not reported for this long: a short pause or
    /// partition does not move every chunk it stores (GFS waits too).
    pub rereplicate_after: Duration,
    /// Where its events go.
    pub history: History,
}

impl MasterConfig {
    /// Defaults for a master `id`.
    pub fn new(id: &str, leasehold: Vec<String>) -> Self {
        MasterConfig {
            id: id.to_string(),
            leasehold,
            leasehold_tls: None,
            token: None,
            session_ttl: Duration::from_secs(2),
            tick: Duration::from_millis(100),
            report_timeout: Duration::from_millis(1_500),
            grace: Duration::from_millis(1_000),
            call_timeout: Duration::from_secs(3),
            rereplicate_every: Duration::from_secs(2),
            rereplicate_after: Duration::from_secs(5),
            history: History::none(),
        }
    }
}

/// One chunkserver as the master knows it (from its last report).
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    /// Its address.
    pub(crate) address: String,
    /// When its last report arrived.
    pub(crate) last_report: Instant,
    /// Its chunks.
    pub(crate) chunks: HashMap<String, pb::ChunkReport>,
    /// Whether it reported a live Leasehold session.
    pub(crate) session_alive: bool,
}

/// A chunk's current primary as Leasehold shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The chunkserver (from the lease metadata).
    pub(crate) member: Member,
    /// The fencing token: the chunk's version.
    pub(crate) version: u64,
}

/// The master's soft state (rebuilt from reports and Leasehold).
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Chunkservers by id.
    pub(crate) servers: HashMap<String, ServerView>,
    /// Highest version seen per chunk (reports, leases, assignments).
    pub(crate) max_version: HashMap<String, u64>,
    /// Replication factor per chunk created here (others: the default).
    pub(crate) replication: HashMap<String, u32>,
    /// Current primaries (refreshed every tick).
    pub(crate) holders: HashMap<String, Holder>,
    /// The last primary this master saw per chunk (for "old → new").
    pub(crate) last_primary: HashMap<String, String>,
    /// Recall asked for this chunkserver to be primary next.
    pub(crate) prefer: HashMap<String, String>,
    /// Chunks being assigned or created.
    pub(crate) inflight: HashSet<String>,
    /// Last re-replication recall per chunk.
    pub(crate) last_rereplicate: HashMap<String, Instant>,
    /// Chunkservers that failed an assignment, not chosen until then.
    pub(crate) avoid_until: HashMap<String, Instant>,
}

/// Counters shown by `Status`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Assignments that replaced an earlier primary.
    pub(crate) reassignments: AtomicU64,
    /// Recalls asked of Leasehold.
    pub(crate) recalls: AtomicU64,
    /// Recalls made to restore the replication factor.
    pub(crate) re_replications: AtomicU64,
}

/// The election's outcome, while this master is elected.
#[derive(Debug)]
pub(crate) struct Elected {
    /// The `gfs/master` lease.
    pub(crate) lease: Arc<Lease>,
    /// When it was won.
    pub(crate) since: Instant,
}

/// Shared state of a master.
#[derive(Debug)]
pub(crate) struct MasterInner {
    /// Configuration.
    pub(crate) config: MasterConfig,
    /// Its address.
    pub(crate) address: String,
    /// The Leasehold client.
    pub(crate) leasehold: Client,
    /// Channels to chunkservers.
    pub(crate) pool: Pool,
    /// Soft state.
    pub(crate) state: Mutex<State>,
    /// Counters.
    pub(crate) counters: Counters,
    /// Set while elected.
    pub(crate) elected: Mutex<Option<Elected>>,
    /// Set by [`MasterHandle::kill`].
    pub(crate) killed: AtomicBool,
}

impl MasterInner {
    /// Locks the soft state.
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this master may act now: elected, lease valid, not recalled.
    pub(crate) fn is_master(&self) -> bool {
        !self.killed.load(Ordering::SeqCst)
            && self
                .elected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(|e| e.lease.is_valid() && e.lease.status() == LeaseStatus::Held)
    }

    /// Whether the grace after the election passed (every live
    /// chunkserver has reported since).
    pub(crate) fn settled(&self) -> bool {
        self.elected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|e| e.since.elapsed() >= self.config.grace)
    }

    /// Fails unless elected (naming the elected master if Leasehold knows).
    pub(crate) async fn require_master(&self) -> Result<(), GfsError> {
        if self.is_master() {
            return Ok(());
        }
        let hint = match self.leasehold.get(MASTER_LEASE).await {
            Ok(s) => s
                .holders
                .first()
                .map(|h| String::from_utf8_lossy(&h.metadata).to_string())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        Err(GfsError::Unavailable(format!(
            "{} is not the elected master (elected: {})",
            self.config.id,
            if hint.is_empty() { "none known" } else { &hint }
        )))
    }

    /// Records a chunkserver's report.
    pub(crate) fn report(&self, req: pb::ReportRequest) {
        let mut st = self.state();
        for c in &req.chunks {
            let v = st.max_version.entry(c.chunk.clone()).or_default();
            *v = (*v).max(c.version);
        }
        let chunks = req
            .chunks
            .into_iter()
            .map(|c| (c.chunk.clone(), c))
            .collect();
        st.servers.insert(
            req.server_id,
            ServerView {
                address: req.address,
                last_report: Instant::now(),
                chunks,
                session_alive: req.session_alive,
            },
        );
    }

    /// Chunkservers that reported recently with a live session, and did
    /// not just fail an assignment.
    pub(crate) fn live_servers(st: &State, timeout: Duration) -> BTreeSet<String> {
        let now = Instant::now();
        st.servers
            .iter()
            .filter(|(k, v)| {
                v.last_report.elapsed() <= timeout
                    && v.session_alive
                    && st.avoid_until.get(*k).is_none_or(|t| *t <= now)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The current primaries, from the `chunk/` leases.
    pub(crate) async fn read_holders(&self) -> Result<HashMap<String, Holder>, ClientError> {
        let list = self.leasehold.list(CHUNK_LEASE_PREFIX).await?;
        let mut out = HashMap::new();
        for r in list {
            let Some(chunk) = r.resource.strip_prefix(CHUNK_LEASE_PREFIX) else {
                continue;
            };
            if let Some(h) = r.holders.first() {
                if let Ok(member) = serde_json::from_slice::<Member>(&h.metadata) {
                    out.insert(
                        chunk.to_string(),
                        Holder {
                            member,
                            version: h.fencing_token,
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// The location of a chunk with a primary (fresh from Leasehold).
    pub(crate) async fn locate(&self, chunk: &str) -> Result<pb::Location, GfsError> {
        let state = self.leasehold.get(&chunk_lease(chunk)).await?;
        let Some(h) = state.holders.first() else {
            let known = self.state().max_version.contains_key(chunk);
            return Err(if known {
                GfsError::Unavailable(format!("{chunk} has no primary right now"))
            } else {
                GfsError::NotFound(format!("chunk {chunk} is unknown"))
            });
        };
        let member: Member = serde_json::from_slice(&h.metadata)
            .map_err(|e| GfsError::Unavailable(format!("{chunk}: bad holder metadata: {e}")))?;
        Ok(self.location(chunk, &member, h.fencing_token))
    }

    /// A location from the primary's report (its set and deadline) when it
    /// reported this version, else the primary alone and no caching.
    pub(crate) fn location(&self, chunk: &str, primary: &Member, version: u64) -> pb::Location {
        let st = self.state();
        let report = st
            .servers
            .get(&primary.server_id)
            .and_then(|s| s.chunks.get(chunk).map(|c| (s.last_report, c)))
            .filter(|(_, c)| c.version == version && c.primary);
        let (replicas, cache_ms) = match report {
            Some((at, c)) => {
                let age_ms = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
                (
                    c.replicas.clone(),
                    c.lease_remaining_ms.saturating_sub(age_ms),
                )
            }
            None => (
                vec![pb::Replica {
                    server_id: primary.server_id.clone(),
                    address: primary.address.clone(),
                }],
                0,
            ),
        };
        pb::Location {
            chunk: chunk.to_string(),
            version,
            primary: primary.address.clone(),
            replicas,
            cache_ms,
        }
    }

    /// Replication factor of a chunk.
    pub(crate) fn replication(st: &State, chunk: &str) -> u32 {
        st.replication
            .get(chunk)
            .copied()
            .unwrap_or(REPLICATION_DEFAULT)
    }
}

/// A running master.
#[derive(Debug)]
pub struct MasterHandle {
    /// Shared state.
    inner: Arc<MasterInner>,
    /// Its tasks.
    tasks: Vec<JoinHandle<()>>,
    /// Where it listens.
    addr: std::net::SocketAddr,
    /// Its session while running (dropped unclosed by `kill`).
    session: Arc<Mutex<Option<Session>>>,
}

impl MasterHandle {
    /// Starts a master serving on `listener` and standing for election.
    pub async fn start(config: MasterConfig, listener: TcpListener) -> Result<Self, GfsError> {
        let addr = listener.local_addr()?;
        let mut builder = leasehold_client::ClientBuilder::new(config.leasehold.clone())
            .client_name(format!("gfs-master-{}", config.id));
        if let Some(tls) = &config.leasehold_tls {
            builder = builder.tls(tls.clone());
        }
        let leasehold = builder.maybe_token(config.token.as_ref()).connect_lazy()?;
        let inner = Arc::new(MasterInner {
            address: addr.to_string(),
            leasehold,
            pool: Pool::new(config.call_timeout),
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            elected: Mutex::new(None),
            killed: AtomicBool::new(false),
            config,
        });
        let service = service::MasterService::new(Arc::clone(&inner));
        let server = tokio::spawn(async move {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .add_service(pb::master_server::MasterServer::new(service))
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "master gRPC server stopped");
            }
        });
        let session = Arc::new(Mutex::new(None));
        let election = tokio::spawn(elect(Arc::clone(&inner), Arc::clone(&session)));
        tracing::info!(id = %inner.config.id, %addr, "master started");
        Ok(MasterHandle {
            inner,
            tasks: vec![server, election],
            addr,
            session,
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Whether it is the elected master now.
    pub fn is_master(&self) -> bool {
        self.inner.is_master()
    }

    /// Simulates `kill -9`: calls fail, tasks stop, the session is dropped
    /// unclosed (the `gfs/master` lease expires by TTL).
    pub fn kill(mut self) {
        self.inner.killed.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(e) = self
            .inner
            .elected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            if let Ok(lease) = Arc::try_unwrap(e.lease) {
                lease.detach();
            }
        }
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = session {
            s.detach();
        }
    }
}

impl Drop for MasterHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Stands for election forever: a session, a queued acquire of
/// `gfs/master`; once won, runs the assignment loop until the lease is
/// lost or recalled.
async fn elect(inner: Arc<MasterInner>, slot: Arc<Mutex<Option<Session>>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let name = format!("gfs-master-{}", inner.config.id);
        let session = match inner
            .leasehold
            .open_session(&name, inner.config.session_ttl)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(id = %inner.config.id, error = %e, "opening a session failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(session.clone());
        while session.is_alive() {
            let options = AcquireOptions::exclusive()
                .wait(inner.config.session_ttl * 2)
                .metadata(inner.address.clone().into_bytes());
            match session.acquire(MASTER_LEASE, options).await {
                Ok(lease) => serve_term(&inner, lease).await,
                Err(ClientError::WaitTimedOut(_)) => {}
                Err(e) => {
                    tracing::debug!(id = %inner.config.id, error = %e, "election attempt failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// One term as the elected master.
async fn serve_term(inner: &Arc<MasterInner>, lease: Lease) {
    let lease = Arc::new(lease);
    tracing::info!(id = %inner.config.id, token = lease.fencing_token(), "elected master");
    *inner.elected.lock().unwrap_or_else(PoisonError::into_inner) = Some(Elected {
        lease: Arc::clone(&lease),
        since: Instant::now(),
    });
    let mut tick = tokio::time::interval(inner.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            status = lease.lost() => break status,
            _ = tick.tick() => {
                if inner.settled() && inner.is_master() {
                    inner.step().await;
                }
            }
        }
    };
    tracing::warn!(id = %inner.config.id, ?why, "no longer the elected master");
    inner
        .elected
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Ok(lease) = Arc::try_unwrap(lease) {
        if lease.is_valid() {
            let _ = lease.release().await;
        }
    }
}

/// Records a new primary assignment (event, log line, counters).
pub(crate) fn note_assignment(inner: &MasterInner, chunk: &str, new: &str, version: u64) {
    let old = {
        let mut st = inner.state();
        let v = st.max_version.entry(chunk.to_string()).or_default();
        *v = (*v).max(version);
        st.last_primary
            .insert(chunk.to_string(), new.to_string())
            .unwrap_or_default()
    };
    if !old.is_empty() {
        inner.counters.reassignments.fetch_add(1, Ordering::Relaxed);
    }
    inner.config.history.record(Event::Assign {
        t_ns: mono_ns(),
        chunk: chunk.to_string(),
        old: old.clone(),
        new: new.to_string(),
        version,
        master: inner.config.id.clone(),
    });
    tracing::info!(
        target: "gfs::primary",
        chunk,
        old = if old.is_empty() { "-" } else { old.as_str() },
        new,
        version,
        master = %inner.config.id,
        "primary change"
    );
}
