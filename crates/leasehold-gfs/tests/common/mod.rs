//! In-process GFS harness: a real three-node Leasehold cluster
//! (`leasehold_tests::TestCluster`), masters and chunkservers as tokio
//! tasks on loopback with temporary data directories, one in-memory
//! history shared by all of them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use leasehold_gfs::checker::{self, ReplicaFile, Summary};
use leasehold_gfs::chunkserver::{ChunkserverConfig, ChunkserverHandle};
use leasehold_gfs::history::{mono_ns, Event, History};
use leasehold_gfs::master::{MasterConfig, MasterHandle};
use leasehold_gfs::GfsClient;
use leasehold_proto::gfs::v1 as pb;
use leasehold_tests::{wait_until, ClusterOptions, Role, TestCluster};
use tokio::net::TcpListener;

/// Session TTL of every chunkserver and master.
pub const TTL: Duration = Duration::from_secs(2);
/// Longest wait for a condition.
pub const WAIT: Duration = Duration::from_secs(30);

/// Settings of a harness.
#[derive(Debug, Clone)]
pub struct Options {
    /// Masters.
    pub masters: usize,
    /// Chunkservers (ids cs1, cs2, …).
    pub servers: usize,
    /// Chunk size.
    pub chunk_bytes: u64,
    /// Chunkservers started with the unsafe switch.
    pub unsafe_servers: Vec<String>,
    /// Leasehold requires tokens: masters use an admin principal's,
    /// chunkservers a `client` principal's limited to `chunk/`.
    pub auth: bool,
}

/// The masters' (admin) token when [`Options::auth`] is on.
pub const MASTER_TOKEN: &str = "gfs-master-token-0123456789";
/// The chunkservers' (client, `chunk/` only) token when [`Options::auth`] is on.
pub const CHUNKSERVER_TOKEN: &str = "gfs-chunkserver-token-0123456789";

impl Default for Options {
    fn default() -> Self {
        Options {
            masters: 1,
            servers: 3,
            chunk_bytes: 64 * 1024,
            unsafe_servers: Vec::new(),
            auth: false,
        }
    }
}

/// A running GFS on a Leasehold test cluster.
pub struct Gfs {
    /// The Leasehold cluster.
    pub cluster: TestCluster,
    /// Shared history.
    pub history: History,
    /// Masters (None once killed).
    pub masters: Vec<Option<MasterHandle>>,
    /// Master addresses.
    pub master_addrs: Vec<String>,
    /// Running chunkservers by id.
    pub servers: BTreeMap<String, ChunkserverHandle>,
    /// Data directory of every chunkserver ever started.
    pub dirs: BTreeMap<String, PathBuf>,
    /// The client library.
    pub client: GfsClient,
    /// A Leasehold client for looking at leases.
    pub leasehold: leasehold_client::Client,
    /// Settings.
    pub options: Options,
    /// Temporary directories.
    _tmp: tempfile::TempDir,
}

impl Gfs {
    /// Starts Leasehold, the masters and the chunkservers, and waits until
    /// a master is elected and every chunkserver reported to it.
    pub async fn start(options: Options) -> anyhow::Result<Gfs> {
        let cluster = TestCluster::start(if options.auth {
            ClusterOptions::with_principals(&[
                ("gfs-master", MASTER_TOKEN, Role::Admin, &[]),
                ("chunkserver", CHUNKSERVER_TOKEN, Role::Client, &["chunk/"]),
            ])
        } else {
            ClusterOptions::default()
        })
        .await?;
        let master_token = options
            .auth
            .then(|| leasehold_client::Token::new(MASTER_TOKEN));
        let endpoints = cluster.api_endpoints();
        let history = History::memory();
        let tmp = tempfile::tempdir()?;
        let mut listeners = Vec::new();
        for _ in 0..options.masters {
            listeners.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        let master_addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        let mut masters = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let mut c = MasterConfig::new(&format!("m{}", i + 1), endpoints.clone());
            c.session_ttl = TTL;
            c.history = history.clone();
            c.token = master_token.clone();
            masters.push(Some(MasterHandle::start(c, l).await?));
        }
        let leasehold = leasehold_client::ClientBuilder::new(endpoints.clone())
            .maybe_token(master_token.as_ref())
            .connect()
            .await?;
        let mut gfs = Gfs {
            cluster,
            history,
            masters,
            client: GfsClient::new(master_addrs.clone()).op_timeout(WAIT),
            master_addrs,
            servers: BTreeMap::new(),
            dirs: BTreeMap::new(),
            leasehold,
            options: options.clone(),
            _tmp: tmp,
        };
        for i in 1..=options.servers {
            gfs.start_server(&format!("cs{i}")).await?;
        }
        gfs.wait_elected().await?;
        Ok(gfs)
    }

    /// Starts (or restarts, on its old data directory and a new port)
    /// chunkserver `id`, and waits until its session is open.
    pub async fn start_server(&mut self, id: &str) -> anyhow::Result<()> {
        let dir = self
            .dirs
            .entry(id.to_string())
            .or_insert_with(|| self._tmp.path().join(id))
            .clone();
        let mut c = ChunkserverConfig::new(
            id,
            dir,
            self.cluster.api_endpoints(),
            self.master_addrs.clone(),
        );
        c.session_ttl = TTL;
        c.chunk_bytes = self.options.chunk_bytes;
        c.history = self.history.clone();
        c.unsafe_ignore_deadline = self.options.unsafe_servers.iter().any(|s| s == id);
        c.token = self
            .options
            .auth
            .then(|| leasehold_client::Token::new(CHUNKSERVER_TOKEN));
        let cs = ChunkserverHandle::start(c, TcpListener::bind("127.0.0.1:0").await?).await?;
        wait_until("the chunkserver's session", WAIT, || async {
            cs.session_id().map(|_| ())
        })
        .await?;
        self.servers.insert(id.to_string(), cs);
        Ok(())
    }

    /// Kills chunkserver `id` (its session expires by TTL).
    pub async fn kill_server(&mut self, id: &str) -> anyhow::Result<()> {
        let cs = self
            .servers
            .remove(id)
            .ok_or_else(|| anyhow!("no running chunkserver {id}"))?;
        cs.kill().await;
        Ok(())
    }

    /// The running chunkserver `id`.
    pub fn server(&self, id: &str) -> anyhow::Result<&ChunkserverHandle> {
        self.servers
            .get(id)
            .ok_or_else(|| anyhow!("no chunkserver {id}"))
    }

    /// The index of the elected master, once one is elected and settled.
    pub async fn wait_elected(&self) -> anyhow::Result<usize> {
        let i = wait_until("an elected master", WAIT, || async {
            self.masters
                .iter()
                .position(|m| m.as_ref().is_some_and(MasterHandle::is_master))
        })
        .await?;
        Ok(i)
    }

    /// Waits until the master locates `chunk` at a version above `above`
    /// (with the primary's report: a cacheable location).
    pub async fn wait_primary(&self, chunk: &str, above: u64) -> anyhow::Result<pb::Location> {
        wait_until("a newer primary", WAIT, || async {
            self.client.invalidate(chunk);
            self.client
                .locate(chunk)
                .await
                .ok()
                .filter(|l| l.version > above && l.cache_ms > 0)
        })
        .await
        .with_context(|| format!("chunk {chunk} above version {above}"))
    }

    /// The server id of a location's primary.
    pub fn primary_id(location: &pb::Location) -> anyhow::Result<String> {
        location
            .replicas
            .iter()
            .find(|r| r.address == location.primary)
            .map(|r| r.server_id.clone())
            .ok_or_else(|| anyhow!("primary not among the replicas: {location:?}"))
    }

    /// Every replica on disk (of every chunkserver ever started).
    pub fn replicas(&self) -> anyhow::Result<Vec<ReplicaFile>> {
        let dirs: Vec<_> = self
            .dirs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(checker::read_replicas(&dirs)?)
    }

    /// Runs the checker over the history and the replicas on disk.
    pub fn check(&self) -> anyhow::Result<Summary> {
        Ok(checker::check(&self.history.events(), &self.replicas()?))
    }

    /// Primary events of `chunk`, in order.
    pub fn terms(&self, chunk: &str) -> Vec<(u64, u64, String)> {
        self.history
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Primary {
                    t_ns,
                    chunk: c,
                    version,
                    server,
                    ..
                } if c == chunk => Some((t_ns, version, server)),
                _ => None,
            })
            .collect()
    }

    /// Writes `data` and records the acknowledgement for the checker.
    pub async fn write(&self, chunk: &str, offset: u64, data: &[u8]) -> anyhow::Result<u64> {
        let a = self.client.write(chunk, offset, data).await?;
        self.ack("write", chunk, a.offset, data, a.version);
        Ok(a.version)
    }

    /// Appends `data` and records the acknowledgement for the checker.
    pub async fn append(&self, chunk: &str, data: &[u8]) -> anyhow::Result<u64> {
        let a = self.client.append(chunk, data).await?;
        self.ack("append", chunk, a.offset, data, a.version);
        Ok(a.offset)
    }

    /// Records an acknowledgement.
    pub fn ack(&self, kind: &str, chunk: &str, offset: u64, data: &[u8], version: u64) {
        self.history.record(Event::Ack {
            t_ns: mono_ns(),
            client: 0,
            kind: kind.to_string(),
            chunk: chunk.to_string(),
            offset,
            len: data.len() as u64,
            hash: leasehold_gfs::history::fnv64(data),
            version,
        });
    }

    /// Stops everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for (_, cs) in std::mem::take(&mut self.servers) {
            cs.kill().await;
        }
        for m in self.masters.iter_mut().filter_map(Option::take) {
            m.kill();
        }
        self.cluster.shutdown().await
    }
}
