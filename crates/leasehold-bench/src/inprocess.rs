//! `leasehold-bench in-process`: starts a three-node cluster in this
//! process (real gRPC on 127.0.0.1, real sled with fsync) and prints
//! replicated command latency with one client and throughput with many
//! concurrent clients, by proposal and (in [`crate::api`]) through the
//! client gRPC API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::{Acquire, Command, Mode, Response, SessionRef, SessionSecret, SessionTarget};
use leasehold_tests::{ClusterOptions, TestCluster};

/// Flags of `in-process`.
#[derive(clap::Args, Debug)]
pub struct InProcessArgs {
    /// Sequential acquire+release pairs for the latency run.
    #[arg(long, default_value_t = 1000)]
    latency_ops: usize,
    /// Concurrent clients for the throughput run.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Length of the throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Sessions for the keepalive run.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Session TTL for the failover run.
    #[arg(long, default_value_t = 2000)]
    failover_ttl_ms: u64,
}

/// The `p` quantile of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A duration in milliseconds, for printing.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn open(c: &TestCluster, name: &str) -> anyhow::Result<u64> {
    match c
        .propose(Command::OpenSession {
            client_name: name.into(),
            ttl_ms: 60_000,
            secret: SECRET,
            request_id: 0,
        })
        .await?
    {
        (_, Response::SessionOpened { session, .. }) => Ok(session),
        (_, other) => anyhow::bail!("open: {other:?}"),
    }
}

/// The secret of every session this bench opens by proposal.
const SECRET: SessionSecret = SessionSecret([5; 16]);

fn owned(id: u64) -> SessionRef {
    SessionRef { id, secret: SECRET }
}

fn acquire(session: u64, resource: String) -> Command {
    Command::Acquire(Acquire {
        session: SessionTarget::Existing(owned(session)),
        resource,
        mode: Mode::Exclusive,
        wait: false,
        metadata: Vec::new(),
    })
}

/// Runs the in-process bench and prints its figures.
pub async fn run(args: InProcessArgs) -> anyhow::Result<()> {
    // Production Raft timing (the test default heartbeat is shorter).
    let options = ClusterOptions {
        timing: leasehold_server::RaftTiming::default(),
        ..ClusterOptions::default()
    };
    let cluster = Arc::new(TestCluster::start(options).await?);
    let leader = cluster.leader().await?;
    println!("3-node cluster on 127.0.0.1 up; leader is node {leader}");

    // Latency: one client, one command at a time, measured at the leader.
    let session = open(&cluster, "latency").await?;
    let node = cluster.node(leader)?;
    let mut samples = Vec::with_capacity(args.latency_ops * 2);
    for i in 0..args.latency_ops {
        let resource = format!("lat/{i}");
        let t = Instant::now();
        node.propose(acquire(session, resource.clone())).await?;
        samples.push(t.elapsed());
        let t = Instant::now();
        node.propose(Command::Release {
            session: owned(session),
            resource,
        })
        .await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "latency, 1 client, {} replicated commands (acquire/release): p50 {}  p90 {}  p99 {}  max {}",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0)),
    );

    // Throughput: N clients, each with its own session, acquire+release loops.
    let done = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let session = open(&cluster, &format!("tp-{c}")).await?;
        let cluster = Arc::clone(&cluster);
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let node = cluster.node(leader)?;
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let resource = format!("tp/{c}/{i}");
                let t = Instant::now();
                node.propose(acquire(session, resource.clone())).await?;
                node.propose(Command::Release {
                    session: owned(session),
                    resource,
                })
                .await?;
                lat.push(t.elapsed() / 2);
                done.fetch_add(2, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let n = done.load(Ordering::Relaxed);
    println!(
        "throughput, {} clients, {:.1} s: {} commands, {:.0} commands/s (p50 {}  p99 {})",
        args.clients,
        elapsed,
        n,
        n as f64 / elapsed,
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
    );
    let mut cluster = match Arc::try_unwrap(cluster) {
        Ok(c) => c,
        Err(_) => anyhow::bail!("cluster still shared"),
    };
    crate::api::latency(&cluster, args.latency_ops).await?;
    crate::api::throughput(&cluster, args.clients, args.seconds).await?;
    crate::api::renewals(&cluster, args.sessions, 8, args.seconds).await?;
    crate::api::failover(&mut cluster, args.failover_ttl_ms).await?;
    cluster.shutdown().await
}
