//! The chunkserver role: stores replicas on disk, holds one Leasehold
//! session (its heartbeat), becomes primary of a chunk when the master says
//! so, and as primary orders the chunk's mutations.
//!
//! The session is the GFS "volume lease": one keepalive renews every chunk
//! lease the chunkserver holds. If the session is lost, every primary role
//! ends with it and a new session is opened.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leasehold_client::{Client, Lease, Session};
use leasehold_proto::gfs::v1 as pb;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::error::GfsError;
use crate::history::History;
use crate::rpc::Pool;
use crate::store::{Member, Meta, Store};

mod primary;
mod service;

/// How a chunkserver runs.
#[derive(Debug, Clone)]
pub struct ChunkserverConfig {
    /// Its id (stable across restarts: it names the replicas it stores).
    pub id: String,
    /// Where replicas live.
    pub data_dir: PathBuf,
    /// Leasehold client API endpoints.
    pub leasehold: Vec<String>,
    /// TLS towards Leasehold (its CA, optionally a client certificate);
    /// `None`: plaintext.
    pub leasehold_tls: Option<leasehold_client::ClientTls>,
    /// Bearer token for a Leasehold cluster that requires one (None: open
    /// API). A `client` principal limited to the prefix `chunk/`
    /// is enough: chunkservers only open sessions and acquire `chunk/…`.
    pub token: Option<leasehold_client::Token>,
    /// Master addresses (reports go to every one).
    pub masters: Vec<String>,
    /// TTL of its Leasehold session.
    pub session_ttl: Duration,
    /// Period of its reports to the masters.
    pub report_interval: Duration,
    /// Chunk size in bytes.
    pub chunk_bytes: u64,
    /// Timeout of each call to another chunkserver.
    pub call_timeout: Duration,
    /// **Unsafe, tests only**: keep accepting writes as primary after the
    /// holder deadline, a lost lease or a recall. Exists to show that the
    /// checker catches a primary that ignores its deadline.
    pub unsafe_ignore_deadline: bool,
    /// Where its events go.
    pub history: History,
}

impl ChunkserverConfig {
    /// Defaults for a chunkserver `id` storing under `data_dir`.
    pub fn new(id: &str, data_dir: PathBuf, leasehold: Vec<String>, masters: Vec<String>) -> Self {
        ChunkserverConfig {
            id: id.to_string(),
            data_dir,
            leasehold,
            leasehold_tls: None,
            masters,
            token: None,
            session_ttl: Duration::from_secs(2),
            report_interval: Duration::from_millis(300),
            chunk_bytes: crate::names::CHUNK_BYTES_DEFAULT,
            call_timeout: Duration::from_secs(2),
            unsafe_ignore_deadline: false,
            history: History::none(),
        }
    }
}

/// The primary role of one chunk: the lease and the term's replica set.
#[derive(Debug)]
pub(crate) struct PrimaryRole {
    /// The lease `chunk/C` in this chunkserver's session.
    pub(crate) lease: Lease,
    /// The term's version (the lease's fencing token).
    pub(crate) version: u64,
    /// The other replicas of the term.
    pub(crate) secondaries: Vec<Member>,
}

/// One chunk's replica state (behind the chunk's lock: a mutation holds it
/// from acceptance to acknowledgement, which orders the chunk's mutations).
#[derive(Debug, Default)]
pub(crate) struct ChunkState {
    /// Version and replica set, as on disk.
    pub(crate) meta: Meta,
    /// Bytes stored.
    pub(crate) length: u64,
    /// Last serial applied under `meta.version`.
    pub(crate) last_serial: u64,
    /// Set while this chunkserver is the chunk's primary.
    pub(crate) primary: Option<PrimaryRole>,
}

/// A chunk's cell.
pub(crate) type Cell = Arc<tokio::sync::Mutex<ChunkState>>;

/// What a report says of one chunk, refreshed at every change (reports do
/// not wait on chunk locks).
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    /// Version.
    version: u64,
    /// Bytes.
    length: u64,
    /// Primary of this version.
    primary: bool,
    /// The replica set.
    replicas: Vec<Member>,
}

/// State shared by the chunkserver's tasks and its service.
#[derive(Debug)]
pub(crate) struct Inner {
    /// Configuration.
    pub(crate) config: ChunkserverConfig,
    /// Its advertised address.
    pub(crate) address: String,
    /// Replicas on disk.
    pub(crate) store: Store,
    /// Channels to other chunkservers and the masters.
    pub(crate) pool: Pool,
    /// The Leasehold client.
    pub(crate) leasehold: Client,
    /// The current session (None while (re)opening).
    pub(crate) session: Mutex<Option<Session>>,
    /// Chunk cells.
    pub(crate) chunks: Mutex<HashMap<String, Cell>>,
    /// Report summaries.
    pub(crate) summaries: Mutex<HashMap<String, Summary>>,
    /// Set by [`ChunkserverHandle::kill`]: every call fails.
    pub(crate) killed: AtomicBool,
    /// Set by [`ChunkserverHandle::stop_heartbeat`]: no new session.
    pub(crate) heartbeat_stopped: AtomicBool,
}

impl Inner {
    /// Fails every call of a killed chunkserver.
    pub(crate) fn check_alive(&self) -> Result<(), GfsError> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(GfsError::Unavailable(format!(
                "chunkserver {} is down",
                self.config.id
            )));
        }
        Ok(())
    }

    /// The cell of a stored chunk.
    pub(crate) fn cell(&self, chunk: &str) -> Result<Cell, GfsError> {
        self.chunks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(chunk)
            .cloned()
            .ok_or_else(|| {
                GfsError::NotFound(format!("chunk {chunk} is not on {}", self.config.id))
            })
    }

    /// The cell of a chunk, created empty (in memory) if absent.
    pub(crate) fn cell_or_new(&self, chunk: &str) -> Cell {
        Arc::clone(
            self.chunks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(chunk.to_string())
                .or_default(),
        )
    }

    /// Refreshes what reports say of `chunk`.
    pub(crate) fn publish(&self, chunk: &str, st: &ChunkState) {
        let summary = Summary {
            version: st.meta.version,
            length: st.length,
            primary: st
                .primary
                .as_ref()
                .is_some_and(|r| r.version == st.meta.version),
            replicas: st.meta.replicas.clone(),
        };
        self.summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(chunk.to_string(), summary);
    }

    /// This chunkserver as a replica-set member.
    pub(crate) fn me(&self) -> Member {
        Member {
            server_id: self.config.id.clone(),
            address: self.address.clone(),
        }
    }

    /// The current session, if alive.
    pub(crate) fn session(&self) -> Option<Session> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(Session::is_alive)
    }

    /// The report sent to the masters.
    fn report(&self) -> pb::ReportRequest {
        let session = self.session();
        let remaining_ms = session.as_ref().map_or(0, |s| {
            u64::try_from(
                s.deadline()
                    .saturating_duration_since(Instant::now())
                    .as_millis(),
            )
            .unwrap_or(u64::MAX)
        });
        let summaries = self
            .summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let chunks = summaries
            .into_iter()
            .map(|(chunk, s)| pb::ChunkReport {
                chunk,
                version: s.version,
                length: s.length,
                primary: s.primary,
                lease_remaining_ms: if s.primary { remaining_ms } else { 0 },
                replicas: s.replicas.iter().map(member_to_pb).collect(),
            })
            .collect();
        pb::ReportRequest {
            server_id: self.config.id.clone(),
            address: self.address.clone(),
            chunks,
            session_alive: session.is_some(),
        }
    }
}

/// A replica-set member on the wire.
pub(crate) fn member_to_pb(m: &Member) -> pb::Replica {
    pb::Replica {
        server_id: m.server_id.clone(),
        address: m.address.clone(),
    }
}

/// A replica-set member from the wire.
pub(crate) fn member_from_pb(r: &pb::Replica) -> Member {
    Member {
        server_id: r.server_id.clone(),
        address: r.address.clone(),
    }
}

/// A running chunkserver.
#[derive(Debug)]
pub struct ChunkserverHandle {
    /// Shared state.
    inner: Arc<Inner>,
    /// Its tasks (server, session keeper, reporter).
    tasks: Vec<JoinHandle<()>>,
    /// Where it listens.
    addr: SocketAddr,
}

impl ChunkserverHandle {
    /// Starts a chunkserver serving on `listener`: loads its replicas from
    /// disk, opens its session, reports to the masters.
    pub async fn start(
        config: ChunkserverConfig,
        listener: TcpListener,
    ) -> Result<ChunkserverHandle, GfsError> {
        let addr = listener.local_addr()?;
        let store = Store::open(&config.data_dir)?;
        let mut builder = leasehold_client::ClientBuilder::new(config.leasehold.clone())
            .client_name(format!("gfs-chunkserver-{}", config.id));
        if let Some(tls) = &config.leasehold_tls {
            builder = builder.tls(tls.clone());
        }
        let leasehold = builder.maybe_token(config.token.as_ref()).connect_lazy()?;
        let inner = Arc::new(Inner {
            address: addr.to_string(),
            store,
            pool: Pool::new(config.call_timeout),
            leasehold,
            session: Mutex::new(None),
            chunks: Mutex::new(HashMap::new()),
            summaries: Mutex::new(HashMap::new()),
            killed: AtomicBool::new(false),
            heartbeat_stopped: AtomicBool::new(false),
            config,
        });
        for (chunk, (meta, length)) in inner.store.scan()? {
            let st = ChunkState {
                meta,
                length,
                last_serial: 0,
                primary: None,
            };
            inner.publish(&chunk, &st);
            inner
                .chunks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(chunk, Arc::new(tokio::sync::Mutex::new(st)));
        }
        let service = service::ChunkService::new(Arc::clone(&inner));
        let server = tokio::spawn(async move {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let result = tonic::transport::Server::builder()
                .add_service(pb::chunkserver_server::ChunkserverServer::new(service))
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "chunkserver gRPC server stopped");
            }
        });
        let keeper = tokio::spawn(keep_session(Arc::clone(&inner)));
        let reporter = tokio::spawn(report_loop(Arc::clone(&inner)));
        tracing::info!(id = %inner.config.id, %addr, "chunkserver started");
        Ok(ChunkserverHandle {
            inner,
            tasks: vec![server, keeper, reporter],
            addr,
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its session's id, once open.
    pub fn session_id(&self) -> Option<u64> {
        self.inner.session().map(|s| s.id())
    }

    /// The chunks it is the accepting primary of, with their versions.
    pub fn primaries(&self) -> Vec<(String, u64)> {
        let summaries = self
            .inner
            .summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = summaries
            .iter()
            .filter(|(_, s)| s.primary)
            .map(|(c, s)| (c.clone(), s.version))
            .collect();
        out.sort();
        out
    }

    /// The version of its replica of `chunk`, if it stores one.
    pub fn version_of(&self, chunk: &str) -> Option<u64> {
        self.inner
            .summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(chunk)
            .map(|s| s.version)
    }

    /// **Tests**: stops renewing the session (it expires on the service
    /// after its TTL) while the chunkserver keeps serving and reporting:
    /// a chunkserver cut off from Leasehold only.
    pub fn stop_heartbeat(&self) {
        self.inner.heartbeat_stopped.store(true, Ordering::SeqCst);
        let session = self
            .inner
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = session {
            s.detach();
        }
    }

    /// Simulates `kill -9`: every call fails from now on, the tasks stop,
    /// and the session is dropped without being closed (its leases expire
    /// by TTL on the service). The data stays on disk.
    pub async fn kill(mut self) {
        self.inner.killed.store(true, Ordering::SeqCst);
        self.inner.heartbeat_stopped.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let session = self
            .inner
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(s) = session {
            s.detach();
        }
        let cells: Vec<Cell> = self
            .inner
            .chunks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for cell in cells {
            if let Some(role) = cell.lock().await.primary.take() {
                role.lease.detach();
            }
        }
    }
}

impl Drop for ChunkserverHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Keeps a session open: opens one, waits until it is lost, opens another.
async fn keep_session(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if inner.heartbeat_stopped.load(Ordering::SeqCst) {
            return;
        }
        let name = format!("gfs-chunkserver-{}", inner.config.id);
        match inner
            .leasehold
            .open_session(&name, inner.config.session_ttl)
            .await
        {
            Ok(session) => {
                backoff = Duration::from_millis(50);
                tracing::info!(id = %inner.config.id, session = session.id(), "session opened");
                *inner.session.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(session.clone());
                let why = session.lost().await;
                tracing::warn!(id = %inner.config.id, session = session.id(), %why, "session lost");
                let mut slot = inner.session.lock().unwrap_or_else(PoisonError::into_inner);
                if slot.as_ref().is_some_and(|s| s.id() == session.id()) {
                    *slot = None;
                }
            }
            Err(e) => {
                tracing::warn!(id = %inner.config.id, error = %e, "opening a session failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Reports the stored chunks to every master, periodically.
async fn report_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if inner.killed.load(Ordering::SeqCst) {
            return;
        }
        let report = inner.report();
        let calls = inner.config.masters.iter().map(|m| {
            let pool = inner.pool.clone();
            let report = report.clone();
            async move {
                if let Ok(mut stub) = pool.master(m) {
                    let _ = stub.report(report).await;
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}
