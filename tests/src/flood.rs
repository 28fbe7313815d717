//! A flood of a running node (a `leasehold server` process): idle
//! connections, Watch streams and waiting acquires, with the node's RSS
//! read from `/proc` before, during and after, and another client's calls
//! checked between phases. Shared by `leasehold-bench flood` (which prints
//! the figures) and the memory test of `leasehold-cli` (which asserts that
//! the node gives the memory back).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_proto::v1 as pb;
use pb::leasehold_client::LeaseholdClient;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::grpc::{acquire_req, client, open, release_req, Sess};
use crate::http::{get, sample};

/// Calls per connection for the flood's streams (below the node's
/// `CALLS_PER_CONNECTION_MAX`).
const STREAMS_PER_CONNECTION: usize = 250;
/// How long the flood waits for the node's gauges to settle.
const SETTLE_MAX: Duration = Duration::from_secs(120);
/// Bytes in a MiB.
const MIB: f64 = 1024.0 * 1024.0;

/// What to open.
#[derive(Debug, Clone, Copy)]
pub struct FloodSpec {
    /// Idle TCP connections opened.
    pub connections: usize,
    /// Watch streams opened.
    pub watches: usize,
    /// Acquires left waiting on one held resource.
    pub waiters: usize,
}

/// What the flood saw. RSS figures are the node's, in MiB.
#[derive(Debug, Clone)]
pub struct FloodFigures {
    /// Before anything was opened.
    pub rss_before_mib: f64,
    /// With the idle connections open.
    pub rss_connections_mib: f64,
    /// With everything open.
    pub rss_peak_mib: f64,
    /// Once the node's gauges are back to 0 (streams, waiters) and 2
    /// connections or fewer.
    pub rss_after_mib: f64,
    /// Connections the node counted at the first phase.
    pub connections_open: u64,
    /// Watch streams the node counted.
    pub watch_streams: u64,
    /// Waiters the node counted.
    pub waiters: u64,
    /// Connections left after the flood (the steady client's).
    pub connections_after: u64,
    /// The answer to one more watch over the per-client limit: `None` when
    /// it was accepted.
    pub over_limit: Option<tonic::Status>,
    /// How long the flood took.
    pub elapsed: Duration,
}

/// Resident set size of process `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a number")?
        .parse()?;
    Ok(kb * 1024)
}

/// RSS of process `pid` in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    Ok(rss_bytes(pid)? as f64 / MIB)
}

/// Polls `probe` every 100 ms until it answers `Some` or `timeout` passes.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= until {
            anyhow::bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gauge of the node.
async fn gauge(metrics: SocketAddr, name: &str) -> Option<u64> {
    let answer = get(metrics, "/metrics").await.ok()?;
    sample(&answer.body, name).map(|v| v as u64)
}

/// Waits until `name` satisfies `ok`.
async fn settle(metrics: SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> anyhow::Result<u64> {
    let last = std::sync::Mutex::new(None);
    let settled = poll(name, SETTLE_MAX, || async {
        let v = gauge(metrics, name).await;
        if let Ok(mut l) = last.lock() {
            *l = v;
        }
        v.filter(|v| ok(*v))
    })
    .await;
    settled.with_context(|| {
        format!(
            "last reading of {name}: {:?}",
            last.lock().ok().and_then(|l| *l)
        )
    })
}

/// A fresh connection to the node.
async fn channel(endpoint: &str) -> anyhow::Result<LeaseholdClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect()
        .await?;
    Ok(LeaseholdClient::new(channel))
}

/// How long the steady client retries a call answered `UNAVAILABLE` (a
/// node too loaded to confirm its leader lease says so) before the flood
/// counts it as not served.
const SERVED_WITHIN: Duration = Duration::from_secs(20);

/// `call` until it answers anything but `UNAVAILABLE`, for at most
/// [`SERVED_WITHIN`].
async fn served<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let until = Instant::now() + SERVED_WITHIN;
    loop {
        match call().await {
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

/// One acquire/release round by the client that must stay served.
async fn round(api: &mut LeaseholdClient<Channel>, s: Sess, name: &str) -> anyhow::Result<()> {
    served(|| {
        let mut api = api.clone();
        async move { api.acquire(acquire_req(s, name, false, 0)).await }
    })
    .await?;
    served(|| {
        let mut api = api.clone();
        async move { api.release(release_req(s, name)).await }
    })
    .await?;
    Ok(())
}

/// Floods the plaintext, open-API node at `endpoint` (metrics at
/// `metrics`, process `pid`) as `spec` says, checks that another client is
/// served between phases, closes everything and waits until the node's
/// gauges say so.
pub async fn flood(
    endpoint: &str,
    metrics: SocketAddr,
    pid: u32,
    spec: FloodSpec,
) -> anyhow::Result<FloodFigures> {
    let ep = endpoint;
    let m = metrics;
    let started = Instant::now();
    let steady = open(ep, "flood-steady", 300_000).await?;
    let mut steady_api = client(ep).await?;
    round(&mut steady_api, steady, "flood/steady").await?;
    let rss_before_mib = rss_mib(pid)?;

    let mut idle = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        idle.push(TcpStream::connect(ep).await.context("connecting")?);
    }
    let connections_open = settle(m, "leasehold_api_connections", |v| {
        v >= spec.connections as u64
    })
    .await?;
    round(&mut steady_api, steady, "flood/steady").await?;
    let rss_connections_mib = rss_mib(pid)?;

    let mut streams = Vec::with_capacity(spec.watches);
    let mut api = channel(ep).await?;
    for i in 0..spec.watches {
        if i > 0 && i % STREAMS_PER_CONNECTION == 0 {
            api = channel(ep).await?;
        }
        let s = api
            .watch(pb::WatchRequest {
                prefix: format!("flood/{i}/"),
                start_revision: 0,
            })
            .await?
            .into_inner();
        streams.push(s);
    }
    let watch_streams = settle(m, "leasehold_watch_streams", |v| v >= spec.watches as u64).await?;
    let over_limit = steady_api
        .watch(pb::WatchRequest {
            prefix: "flood/over/".into(),
            start_revision: 0,
        })
        .await
        .err();

    let holder: Sess = open(ep, "flood-holder", 300_000).await?;
    // A name of this run's own: an earlier run's waiters may still queue.
    let lock = format!(
        "flood/lock/{}/{}",
        std::process::id(),
        started.elapsed().as_nanos()
    );
    steady_api
        .acquire(acquire_req(holder, &lock, false, 0))
        .await?;
    let mut waiting = Vec::with_capacity(spec.waiters);
    let mut api = channel(ep).await?;
    for i in 0..spec.waiters {
        if i > 0 && i % STREAMS_PER_CONNECTION == 0 {
            api = channel(ep).await?;
        }
        let a = api.clone();
        let lock = lock.clone();
        waiting.push(tokio::spawn(async move {
            let mut req = acquire_req(0, &lock, false, 120_000);
            req.ttl_ms = 120_000;
            req.client_name = format!("flood-waiter-{i}");
            // As a client would: a node too busy to confirm its leader
            // lease (a loaded machine) answers UNAVAILABLE; ask again.
            served(|| {
                let (mut a, req) = (a.clone(), req.clone());
                async move { a.acquire(req).await }
            })
            .await
        }));
    }
    let waiters = match settle(m, "leasehold_acquire_waiters", |v| v >= spec.waiters as u64).await {
        Ok(n) => n,
        Err(e) => {
            // Say why: a waiting acquire that already ended tells.
            if let Some(w) = waiting.iter_mut().find(|w| w.is_finished()) {
                let answer = w.await;
                return Err(e.context(format!("a waiting acquire ended early: {answer:?}")));
            }
            return Err(e);
        }
    };
    round(&mut steady_api, steady, "flood/steady").await?;
    let rss_peak_mib = rss_mib(pid)?;

    for w in &waiting {
        w.abort();
    }
    drop((idle, streams, waiting, api));
    settle(m, "leasehold_watch_streams", |v| v == 0).await?;
    settle(m, "leasehold_acquire_waiters", |v| v == 0).await?;
    let connections_after = settle(m, "leasehold_api_connections", |v| v <= 2).await?;
    round(&mut steady_api, steady, "flood/steady").await?;
    for s in [holder, steady] {
        steady_api
            .close_session(pb::CloseSessionRequest {
                session_id: s.id,
                session_secret: s.secret(),
            })
            .await?;
    }
    Ok(FloodFigures {
        rss_before_mib,
        rss_connections_mib,
        rss_peak_mib,
        rss_after_mib: rss_mib(pid)?,
        connections_open,
        watch_streams,
        waiters,
        connections_after,
        over_limit,
        elapsed: started.elapsed(),
    })
}

/// Polls the RSS of `pid` for up to `within` until it is at most
/// `bound_mib`; returns the last reading and how long it took (`None`:
/// not within the time).
pub async fn rss_back_to(
    pid: u32,
    bound_mib: f64,
    within: Duration,
) -> anyhow::Result<(f64, Option<Duration>)> {
    let started = Instant::now();
    loop {
        let rss = rss_mib(pid)?;
        if rss <= bound_mib {
            return Ok((rss, Some(started.elapsed())));
        }
        if started.elapsed() >= within {
            return Ok((rss, None));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
