//! `leasehold-bench scale`: one Leasehold cluster of real processes holding
//! many leases at once (one per session: one-call acquires). Reports the
//! nodes' resident memory per lease, the snapshot size and build time at
//! that size (from the leader's metrics), how long a follower killed
//! with SIGKILL takes to restart and catch up, and how long a wiped
//! follower takes to catch up from a snapshot. (Memory given back after
//! expiry: `footprint`, and the `compare` memory row.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use leasehold_client::Client;
use leasehold_proto::v1 as pb;
use leasehold_tests::http;

use crate::lh::{raw, wait_ready};
use crate::procs::{poll, rss_bytes, Cluster, Ports, WorkDir};
use crate::stats::fixed_count;

/// Flags of `leasehold-bench scale`.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Leases held at once, each in its own session.
    #[arg(long, default_value_t = 1_000_000)]
    pub leases: u64,
    /// Concurrent raw gRPC clients creating them.
    #[arg(long, default_value_t = 128)]
    pub workers: usize,
    /// TTL of the leases: longer than the run.
    #[arg(long, default_value_t = 3_600)]
    pub ttl_s: u64,
    /// The `leasehold` binary.
    #[arg(long, default_value = "target/release/leasehold")]
    pub leasehold_bin: PathBuf,
    /// Sample node configs (`nodeN.toml`).
    #[arg(long, default_value = "cluster/config")]
    pub leasehold_config_dir: PathBuf,
    /// Data dirs and node logs, kept afterwards (default: a fresh temp
    /// dir, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Ports of the scale cluster (apart from the compare clusters and a dev
/// cluster).
const PORTS: Ports = Ports {
    client: 7701,
    peer: 7801,
    metrics: 7901,
};

/// Reads one sample of `series` from node `i`'s metrics.
async fn metric(i: usize, series: &str) -> anyhow::Result<f64> {
    let addr = format!("127.0.0.1:{}", PORTS.metrics + i as u16).parse()?;
    let answer = http::get(addr, "/metrics").await?;
    http::sample(&answer.body, series).with_context(|| format!("no {series} on node {}", i + 1))
}

/// Waits (10 min at most) until node `i` applied log index `target`.
async fn wait_applied(i: usize, target: u64) -> anyhow::Result<()> {
    poll(
        "the follower to catch up",
        Duration::from_secs(600),
        || async {
            let applied = metric(i, "leasehold_raft_applied_index").await.ok()? as u64;
            (applied >= target).then_some(())
        },
    )
    .await
}

/// Runs the scale measurement and prints its figures.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let work = WorkDir::new(args.work_dir.as_deref())?;
    let mut cluster = Cluster::leasehold(
        &args.leasehold_bin,
        &args.leasehold_config_dir,
        work.path(),
        PORTS,
    );
    cluster.start_all()?;
    let result = measure(&mut cluster, work.path(), &args).await;
    cluster.stop().await?;
    result
}

async fn measure(cluster: &mut Cluster, dir: &Path, args: &ScaleArgs) -> anyhow::Result<()> {
    let leader = wait_ready(cluster).await?;
    let endpoints = cluster.endpoints();
    let ep = endpoints[leader].clone();
    let client = Client::connect([ep.as_str()]).await?;
    let ttl_ms = args.ttl_s * 1_000;
    let mut config = client.lease_config().await?;
    if config.ttl_ms_max < ttl_ms {
        config.ttl_ms_max = ttl_ms;
        client.set_config(&config).await?;
    }
    let rss = |c: &Cluster| -> anyhow::Result<Vec<u64>> {
        (0..3)
            .map(|i| rss_bytes(c.pid(i).context("node not running")?))
            .collect()
    };
    let before = rss(cluster)?;

    let states = futures::future::try_join_all((0..args.workers).map(|_| raw(&ep))).await?;
    let started = Instant::now();
    let (run, _) = fixed_count(states, args.leases, move |mut c, i| async move {
        let r = c
            .acquire(pb::AcquireRequest {
                session_id: 0,
                ttl_ms,
                client_name: "scale".into(),
                resource: format!("scale/{i:08}"),
                mode: pb::Mode::Exclusive as i32,
                ..Default::default()
            })
            .await;
        (c, r.map(|_| 1).map_err(Into::into))
    })
    .await;
    let took = started.elapsed();
    let status = client.status_of(&ep).await?;
    println!(
        "created {} leases in {:.1} s ({:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {} failed{}); the leader reports {} sessions",
        args.leases - run.errors,
        took.as_secs_f64(),
        run.ops_per_s,
        run.p50_ms,
        run.p99_ms,
        run.errors,
        run.first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        status.sessions
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = rss(cluster)?;
    for i in 0..3 {
        let grown = held[i].saturating_sub(before[i]);
        println!(
            "node {}{}: RSS {:.0} MiB before, {:.0} MiB holding ({:.0} bytes per lease)",
            i + 1,
            if i == leader { " (leader)" } else { "" },
            before[i] as f64 / 1048576.0,
            held[i] as f64 / 1048576.0,
            grown as f64 / status.sessions.max(1) as f64
        );
    }
    let snapshot_bytes = metric(leader, "leasehold_snapshot_size_bytes").await?;
    let build_s = metric(leader, "leasehold_snapshot_build_duration_seconds").await?;
    let builds = metric(leader, "leasehold_snapshots_built_total").await?;
    println!(
        "snapshot: {:.1} MiB; {} built on the leader, the last in {:.2} s",
        snapshot_bytes / 1048576.0,
        builds,
        build_s
    );

    // A follower killed with SIGKILL: restart, load, catch up.
    let follower = (leader + 1) % 3;
    let target = metric(leader, "leasehold_raft_applied_index").await? as u64;
    cluster.kill(follower).await?;
    let restarted = Instant::now();
    cluster.start(follower)?;
    poll(
        "the follower to answer",
        Duration::from_secs(600),
        || async { metric(follower, "leasehold_raft_applied_index").await.ok() },
    )
    .await?;
    let answered = restarted.elapsed();
    wait_applied(follower, target).await?;
    let caught_up = restarted.elapsed();
    let follower_rss = rss_bytes(cluster.pid(follower).context("follower not running")?)?;
    println!(
        "follower {} after SIGKILL: metrics answer {:.1} s after start, applied index {} reached after {:.1} s; RSS {:.0} MiB",
        follower + 1,
        answered.as_secs_f64(),
        target,
        caught_up.as_secs_f64(),
        follower_rss as f64 / 1048576.0
    );

    // A follower wiped (docs/operations.md): out of the membership, its
    // data deleted, started pristine, added back: it catches up from a
    // snapshot of the whole state.
    let members = client.status_of(&ep).await?.members;
    let id = follower as u64 + 1;
    let others: Vec<_> = members
        .iter()
        .filter(|m| m.node_id != id)
        .cloned()
        .collect();
    client.change_membership(&others).await?;
    cluster.kill(follower).await?;
    std::fs::remove_dir_all(dir.join(format!("leasehold-{id}")))?;
    let restarted = Instant::now();
    cluster.start(follower)?;
    client
        .change_membership_with(&members, Some(Duration::from_secs(600)))
        .await?;
    let target = metric(leader, "leasehold_raft_applied_index").await? as u64;
    wait_applied(follower, target).await?;
    let wiped_s = restarted.elapsed().as_secs_f64();
    let sessions = metric(follower, "leasehold_sessions_active").await?;
    println!(
        "follower {} wiped: a voter again and caught up (applied index {target}, {sessions} sessions) {wiped_s:.1} s after start; RSS {:.0} MiB",
        follower + 1,
        rss_bytes(cluster.pid(follower).context("follower not running")?)? as f64 / 1048576.0
    );

    Ok(())
}
