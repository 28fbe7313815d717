//! [`GfsClient`]: the client library. Learns a chunk's primary and replicas
//! from the master, caches them until the primary's deadline, writes
//! through the primary, reads from any up-to-date replica, and retries with
//! backoff on "not primary", "stale version" and unavailability.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leasehold_proto::gfs::v1 as pb;

use crate::error::GfsError;
use crate::names::check_chunk;
use crate::rpc::Pool;

/// Most locations a client caches.
pub const CACHE_ENTRIES_MAX: usize = 100_000;

/// An acknowledged mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Where the bytes were written.
    pub offset: u64,
    /// The version (primary term) that applied them.
    pub version: u64,
    /// Serial number under that version.
    pub serial: u64,
    /// How many replicas applied them.
    pub replicas: u32,
}

/// A cached location.
#[derive(Debug, Clone)]
struct Cached {
    /// The location.
    location: pb::Location,
    /// Use it until then.
    until: Instant,
}

/// The GFS client library.
#[derive(Debug, Clone)]
pub struct GfsClient {
    /// Master addresses (any order; the elected one answers).
    masters: Vec<String>,
    /// Channels.
    pool: Pool,
    /// Locations by chunk.
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// The master that answered last (tried first).
    last_master: Arc<Mutex<usize>>,
    /// Give up a call after this long.
    op_timeout: Duration,
    /// First and longest pause between attempts.
    backoff: (Duration, Duration),
}

impl GfsClient {
    /// A client of the masters at `masters`.
    pub fn new(masters: Vec<String>) -> Self {
        GfsClient {
            masters,
            pool: Pool::new(Duration::from_secs(3)),
            cache: Arc::new(Mutex::new(HashMap::new())),
            last_master: Arc::new(Mutex::new(0)),
            op_timeout: Duration::from_secs(30),
            backoff: (Duration::from_millis(20), Duration::from_millis(500)),
        }
    }

    /// Gives up a call (all its retries) after `timeout`.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Calls the elected master: tries every master, starting with the
    /// last that answered.
    async fn master_call<T, F, Fut>(&self, f: F) -> Result<T, GfsError>
    where
        F: Fn(pb::master_client::MasterClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.masters.len();
        if n == 0 {
            return Err(GfsError::InvalidArgument("no master address".into()));
        }
        let first = *self
            .last_master
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut last_err = GfsError::Unavailable("no master answered".into());
        for i in 0..n {
            let k = (first + i) % n;
            let stub = self.pool.master(&self.masters[k])?;
            match f(stub).await {
                Ok(r) => {
                    *self
                        .last_master
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = k;
                    return Ok(r.into_inner());
                }
                Err(s) => {
                    let e = GfsError::from(s);
                    if !matches!(e, GfsError::Unavailable(_)) {
                        return Err(e);
                    }
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the operation
    /// times out; between attempts the cached location is dropped.
    async fn retry<T, F, Fut>(&self, chunk: &str, attempt: F) -> Result<T, GfsError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, GfsError>>,
    {
        let start = Instant::now();
        let mut pause = self.backoff.0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && start.elapsed() < self.op_timeout => {
                    tracing::debug!(chunk, error = %e, "retrying");
                    self.invalidate(chunk);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.backoff.1);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a chunk (replication 0: the master's default, 3).
    pub async fn create(&self, chunk: &str, replication: u32) -> Result<pb::Location, GfsError> {
        check_chunk(chunk)?;
        let req = pb::CreateChunkRequest {
            chunk: chunk.to_string(),
            replication,
        };
        let loc = self
            .retry(chunk, || {
                let req = req.clone();
                self.master_call(move |mut m| {
                    let req = req.clone();
                    async move { m.create_chunk(req).await }
                })
            })
            .await?;
        Ok(loc)
    }

    /// The location of a chunk: cached until the primary's deadline, else
    /// asked of the master.
    pub async fn locate(&self, chunk: &str) -> Result<pb::Location, GfsError> {
        check_chunk(chunk)?;
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(chunk)
            .filter(|c| c.until > Instant::now())
        {
            return Ok(c.location.clone());
        }
        let req = pb::LocateRequest {
            chunk: chunk.to_string(),
        };
        let location = self
            .master_call(move |mut m| {
                let req = req.clone();
                async move { m.locate(req).await }
            })
            .await?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(
            chunk.to_string(),
            Cached {
                until: Instant::now() + Duration::from_millis(location.cache_ms),
                location: location.clone(),
            },
        );
        Ok(location)
    }

    /// Drops the cached location of a chunk.
    pub fn invalidate(&self, chunk: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(chunk);
    }

    /// Writes `data` at `offset` through the primary; answers once every
    /// replica of the primary's set applied it.
    pub async fn write(&self, chunk: &str, offset: u64, data: &[u8]) -> Result<Acked, GfsError> {
        self.retry(chunk, || async {
            let loc = self.locate(chunk).await?;
            let mut stub = self.pool.chunkserver(&loc.primary)?;
            let r = stub
                .write(pb::WriteRequest {
                    chunk: chunk.to_string(),
                    version: loc.version,
                    offset,
                    data: data.to_vec().into(),
                })
                .await?
                .into_inner();
            Ok(acked(&r))
        })
        .await
    }

    /// Record append: the primary picks the offset; the record lands whole
    /// at that offset on every replica of a successful append. A failed
    /// append is retried (at least once semantics: a retry may leave an
    /// earlier partial copy on some replicas). [`GfsError::ChunkFull`]: the
    /// chunk was padded; append to the next chunk.
    pub async fn append(&self, chunk: &str, data: &[u8]) -> Result<Acked, GfsError> {
        self.retry(chunk, || async {
            let loc = self.locate(chunk).await?;
            let mut stub = self.pool.chunkserver(&loc.primary)?;
            let r = stub
                .append(pb::AppendRequest {
                    chunk: chunk.to_string(),
                    version: loc.version,
                    data: data.to_vec().into(),
                })
                .await?
                .into_inner();
            Ok(acked(&r))
        })
        .await
    }

    /// Reads at most `len` bytes at `offset` from an up-to-date replica
    /// (tried in turn; the version must be at least the located one).
    pub async fn read(&self, chunk: &str, offset: u64, len: u64) -> Result<Vec<u8>, GfsError> {
        self.retry(chunk, || async {
            let loc = self.locate(chunk).await?;
            let mut last = GfsError::Unavailable(format!("{chunk}: no replica"));
            for r in &loc.replicas {
                let mut stub = self.pool.chunkserver(&r.address)?;
                match stub
                    .read(pb::ReadRequest {
                        chunk: chunk.to_string(),
                        offset,
                        length: len,
                        min_version: loc.version,
                    })
                    .await
                {
                    Ok(reply) => return Ok(reply.into_inner().data.to_vec()),
                    Err(s) => last = s.into(),
                }
            }
            Err(last)
        })
        .await
    }

    /// Asks the master to recall a chunk's primary (snapshot, rebalance),
    /// optionally naming the next primary; answers the recalled version.
    pub async fn recall(&self, chunk: &str, reason: &str, prefer: &str) -> Result<u64, GfsError> {
        check_chunk(chunk)?;
        let req = pb::RecallPrimaryRequest {
            chunk: chunk.to_string(),
            reason: reason.to_string(),
            prefer: prefer.to_string(),
        };
        let r = self
            .master_call(move |mut m| {
                let req = req.clone();
                async move { m.recall_primary(req).await }
            })
            .await?;
        self.invalidate(chunk);
        Ok(r.version)
    }

    /// The elected master's status (a standby's if none is elected).
    pub async fn status(&self) -> Result<pb::StatusReply, GfsError> {
        let mut standby = None;
        for address in &self.masters {
            let mut stub = self.pool.master(address)?;
            match stub.status(pb::StatusRequest {}).await {
                Ok(r) if r.get_ref().is_master => return Ok(r.into_inner()),
                Ok(r) => standby = standby.or(Some(r.into_inner())),
                Err(_) => {}
            }
        }
        standby.ok_or_else(|| GfsError::Unavailable("no master answered".into()))
    }
}

/// An acknowledgement from the wire.
fn acked(r: &pb::MutationReply) -> Acked {
    Acked {
        offset: r.offset,
        version: r.version,
        serial: r.serial,
        replicas: r.replicas,
    }
}
