//! `leasehold-bench flood`: floods a running node (a `leasehold server`
//! process) with idle connections, Watch streams and waiting acquires, and
//! reports the node's RSS before, during and after, its gauges, whether
//! another client was served throughout, and what over-limit attempts got.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_proto::v1 as pb;
use leasehold_tests::grpc::{acquire_req, client, open, Sess};
use leasehold_tests::http::{get, sample};
use pb::leasehold_client::LeaseholdClient;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::procs::{poll, rss_bytes};

/// Calls per connection for the flood's streams (below the node's
/// `CALLS_PER_CONNECTION_MAX`).
const STREAMS_PER_CONNECTION: usize = 250;
/// How long the flood waits for the node's gauges to settle.
const SETTLE_MAX: Duration = Duration::from_secs(120);

/// Flags of `flood`.
#[derive(clap::Args, Debug)]
pub struct FloodArgs {
    /// The node's client API address.
    #[arg(long)]
    pub endpoint: String,
    /// The node's metrics endpoint (its gauges are read from there).
    #[arg(long)]
    pub metrics: SocketAddr,
    /// The node's process id (its RSS is read from /proc).
    #[arg(long)]
    pub pid: u32,
    /// Idle TCP connections opened.
    #[arg(long, default_value_t = 2_000)]
    pub connections: usize,
    /// Watch streams opened.
    #[arg(long, default_value_t = 1_000)]
    pub watches: usize,
    /// Acquires left waiting on one held resource.
    #[arg(long, default_value_t = 1_000)]
    pub waiters: usize,
}

/// A gauge of the node.
async fn gauge(metrics: SocketAddr, name: &str) -> Option<u64> {
    let answer = get(metrics, "/metrics").await.ok()?;
    sample(&answer.body, name).map(|v| v as u64)
}

/// Waits until `name` satisfies `ok`.
async fn settle(metrics: SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> anyhow::Result<u64> {
    poll(name, SETTLE_MAX, || async {
        gauge(metrics, name).await.filter(|v| ok(*v))
    })
    .await
}

/// RSS of the node in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    Ok(rss_bytes(pid)? as f64 / (1024.0 * 1024.0))
}

/// A fresh connection to the node.
async fn channel(endpoint: &str) -> anyhow::Result<LeaseholdClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect()
        .await?;
    Ok(LeaseholdClient::new(channel))
}

/// One acquire/release round by the client that must stay served.
async fn round(api: &mut LeaseholdClient<Channel>, s: Sess, name: &str) -> anyhow::Result<()> {
    api.acquire(acquire_req(s, name, false, 0)).await?;
    api.release(pb::ReleaseRequest {
        session_id: s.id,
        session_secret: s.secret(),
        resource: name.into(),
    })
    .await?;
    Ok(())
}

/// Runs the flood and prints what it saw.
pub async fn run(args: FloodArgs) -> anyhow::Result<()> {
    let ep = args.endpoint.as_str();
    let m = args.metrics;
    let started = Instant::now();
    let steady = open(ep, "flood-steady", 300_000).await?;
    let mut steady_api = client(ep).await?;
    round(&mut steady_api, steady, "flood/steady").await?;
    let rss_before = rss_mib(args.pid)?;
    println!("before: RSS {rss_before:.1} MiB");

    let mut idle = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        idle.push(TcpStream::connect(ep).await.context("connecting")?);
    }
    let open_conns = settle(m, "leasehold_api_connections", |v| {
        v >= args.connections as u64
    })
    .await?;
    round(&mut steady_api, steady, "flood/steady").await?;
    let rss_conns = rss_mib(args.pid)?;
    println!("{open_conns} connections open: RSS {rss_conns:.1} MiB; another client served");

    let mut streams = Vec::with_capacity(args.watches);
    let mut api = channel(ep).await?;
    for i in 0..args.watches {
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
    let watches = settle(m, "leasehold_watch_streams", |v| v >= args.watches as u64).await?;
    match steady_api
        .watch(pb::WatchRequest {
            prefix: "flood/over/".into(),
            start_revision: 0,
        })
        .await
    {
        Ok(_) => println!("one more watch: accepted (no limit reached)"),
        Err(s) => println!("one more watch: {:?} {:?}", s.code(), s.message()),
    }

    let holder: Sess = open(ep, "flood-holder", 300_000).await?;
    // A name of this run's own: an earlier run's waiters may still queue.
    let lock = format!("flood/lock/{}", std::process::id());
    steady_api
        .acquire(acquire_req(holder, &lock, false, 0))
        .await?;
    let mut waiters = Vec::with_capacity(args.waiters);
    let mut api = channel(ep).await?;
    for i in 0..args.waiters {
        if i > 0 && i % STREAMS_PER_CONNECTION == 0 {
            api = channel(ep).await?;
        }
        let mut a = api.clone();
        let lock = lock.clone();
        waiters.push(tokio::spawn(async move {
            let mut req = acquire_req(0, &lock, false, 120_000);
            req.ttl_ms = 120_000;
            req.client_name = format!("flood-waiter-{i}");
            a.acquire(req).await
        }));
    }
    let waiting = settle(m, "leasehold_acquire_waiters", |v| v >= args.waiters as u64).await?;
    round(&mut steady_api, steady, "flood/steady").await?;
    let rss_during = rss_mib(args.pid)?;
    println!(
        "{open_conns} idle connections + {watches} watch streams + {waiting} waiters: \
         RSS {rss_during:.1} MiB; another client served"
    );

    for w in &waiters {
        w.abort();
    }
    drop((idle, streams, waiters, api));
    settle(m, "leasehold_watch_streams", |v| v == 0).await?;
    settle(m, "leasehold_acquire_waiters", |v| v == 0).await?;
    let conns = settle(m, "leasehold_api_connections", |v| v <= 2).await?;
    round(&mut steady_api, steady, "flood/steady").await?;
    for s in [holder, steady] {
        steady_api
            .close_session(pb::CloseSessionRequest {
                session_id: s.id,
                session_secret: s.secret(),
            })
            .await?;
    }
    let rss_after = rss_mib(args.pid)?;
    println!(
        "after: {conns} connections, 0 watch streams, 0 waiters: RSS {rss_after:.1} MiB \
         (flood took {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
