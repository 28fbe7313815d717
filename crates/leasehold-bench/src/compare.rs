//! `compare`: starts a 3-node etcd and a 3-node Leasehold cluster, runs
//! every row on both (etcd, Leasehold, etcd, Leasehold: interleaved, each
//! twice), and writes the results as markdown with an SVG latency plot.

use std::path::PathBuf;
use std::time::Duration;

use crate::procs::{Cluster, Ports, System, WorkDir};
use crate::report::{self, RowResult};
use crate::stats::Run;
use crate::{lh, FailoverSpec, MemorySpec};

/// Flags of `compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The `leasehold` binary (release build).
    #[arg(long, default_value = "target/release/leasehold")]
    pub leasehold_bin: PathBuf,
    /// Directory of the sample node configs (`node1.toml`..).
    #[arg(long, default_value = "cluster/config")]
    pub leasehold_config_dir: PathBuf,
    /// The `etcd` binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Run the Leasehold side only (etcd not installed or not built in).
    #[arg(long)]
    pub no_etcd: bool,
    /// Seconds per row and run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Runs of each row per system.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// Concurrent clients of the "many clients" rows.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Sessions of the large keepalive row.
    #[arg(long, default_value_t = 1000)]
    pub keepalive_sessions: usize,
    /// Sessions renewed in the failover row.
    #[arg(long, default_value_t = 32)]
    pub failover_sessions: usize,
    /// Leases held at once in the memory row (0: skip the row).
    #[arg(long, default_value_t = 100_000)]
    pub memory_leases: u64,
    /// TTL of the memory row's leases, seconds: must outlast creating them.
    #[arg(long, default_value_t = 200)]
    pub memory_ttl_s: u64,
    /// Only these rows (comma-separated ids: open, open-raw, lock,
    /// keepalive, failover, memory).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// First Leasehold client port (Raft +100, metrics +200).
    #[arg(long, default_value_t = 7401)]
    pub leasehold_port: u16,
    /// First etcd client port (peer +10).
    #[arg(long, default_value_t = 23791)]
    pub etcd_port: u16,
    /// Data dirs, logs and the pid file (default: a fresh temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Where the results go.
    #[arg(long, default_value = "docs/bench/RESULTS.md")]
    pub out: PathBuf,
    /// Machine description for the results (the script passes nproc, disk
    /// sync-write figure, load, versions).
    #[arg(long, default_value = "")]
    pub machine: String,
}

/// What a row measures.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// Open session through the library (etcd: LeaseGrant).
    Open(usize),
    /// Open session over raw gRPC (etcd: LeaseGrant).
    OpenRaw(usize),
    /// Acquire + release (etcd: grant + txn + revoke).
    Lock(usize),
    /// Keepalive: streams, sessions per Leasehold message.
    KeepAlive(usize, usize),
    /// Kill -9 the leader under keepalive load.
    Failover,
    /// RSS with many leases held and after expiry (one run each).
    Memory,
}

/// A row: its id for `--only`, its label and what it runs.
struct Row {
    /// `--only` id.
    id: &'static str,
    /// Workload column.
    label: String,
    /// Clients column.
    clients: String,
    /// What runs.
    work: Work,
}

/// The rows in run order, filtered by `--only` (memory skipped with 0 leases).
fn rows(a: &CompareArgs) -> Vec<Row> {
    let n = a.clients;
    let k = a.keepalive_sessions;
    let row = |id, label: &str, clients: String, work| Row {
        id,
        label: label.to_string(),
        clients,
        work,
    };
    let c1 = "1 client".to_string();
    let cn = format!("{n} clients");
    let all = vec![
        row("open", "open session, library (etcd: LeaseGrant)", c1.clone(), Work::Open(1)),
        row("open", "open session, library (etcd: LeaseGrant)", cn.clone(), Work::Open(n)),
        row("open-raw", "open session, raw gRPC (etcd: LeaseGrant)", c1.clone(), Work::OpenRaw(1)),
        row("open-raw", "open session, raw gRPC (etcd: LeaseGrant)", cn.clone(), Work::OpenRaw(n)),
        row("lock", "lock cycle: acquire one of 64 + release (etcd: grant + txn + revoke)", c1.clone(), Work::Lock(1)),
        row("lock", "lock cycle: acquire one of 64 + release (etcd: grant + txn + revoke)", cn.clone(), Work::Lock(n)),
        row("keepalive", "keepalive, one session per stream (renewals/s)", "1 session".into(), Work::KeepAlive(1, 1)),
        row("keepalive", "keepalive, one session per stream (renewals/s)", format!("{n} sessions"), Work::KeepAlive(n, 1)),
        row(
            "keepalive",
            "keepalive, many sessions (etcd: a stream per lease; Leasehold: one stream, all in each message) (renewals/s)",
            format!("{k} sessions"),
            Work::KeepAlive(1, k),
        ),
        row(
            "failover",
            "failover: kill -9 the leader under keepalive load (one stream per session, a renewal every 100 ms)",
            format!("{} sessions", a.failover_sessions),
            Work::Failover,
        ),
        row("memory", "memory: leader RSS holding leases, then after they all expired", format!("{} leases", a.memory_leases), Work::Memory),
    ];
    all.into_iter()
        .filter(|r| a.only.is_empty() || a.only.iter().any(|o| o == r.id))
        .filter(|r| !matches!(r.work, Work::Memory) || a.memory_leases > 0)
        .collect()
}

/// Both clusters, running.
struct Clusters {
    /// Leasehold's.
    lh: Cluster,
    /// etcd's, unless skipped.
    etcd: Option<Cluster>,
}

/// Runs `compare`.
pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let work = WorkDir::new(args.work_dir.as_deref())?;
    let dir = work.path().to_path_buf();
    let use_etcd = !args.no_etcd && cfg!(feature = "etcd");
    if !args.no_etcd && !use_etcd {
        anyhow::bail!(
            "this build has no etcd backend: build with --features etcd, or pass --no-etcd"
        );
    }
    let lp = args.leasehold_port;
    let mut clusters = Clusters {
        lh: Cluster::leasehold(
            &args.leasehold_bin,
            &args.leasehold_config_dir,
            &dir,
            Ports {
                client: lp,
                peer: lp + 100,
                metrics: lp + 200,
            },
        ),
        etcd: use_etcd.then(|| {
            let ep = args.etcd_port;
            Cluster::etcd(
                &args.etcd_bin,
                &dir,
                Ports {
                    client: ep,
                    peer: ep + 10,
                    metrics: 0,
                },
            )
        }),
    };
    println!("work dir {} (logs, data, pids)", dir.display());
    let result = run_rows(&args, &mut clusters).await;
    clusters.lh.stop().await?;
    if let Some(e) = clusters.etcd.as_mut() {
        e.stop().await?;
    }
    result?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Starts the clusters and runs every row, writing the results after each.
async fn run_rows(args: &CompareArgs, c: &mut Clusters) -> anyhow::Result<Vec<RowResult>> {
    c.lh.start_all()?;
    if let Some(e) = c.etcd.as_mut() {
        e.start_all()?;
    }
    leader(c, System::Leasehold).await?;
    if c.etcd.is_some() {
        leader(c, System::Etcd).await?;
    }
    println!("clusters ready");
    let systems: Vec<System> = if c.etcd.is_some() {
        vec![System::Etcd, System::Leasehold]
    } else {
        vec![System::Leasehold]
    };
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for row in rows(args) {
        let mut result = RowResult {
            throughput: !matches!(row.work, Work::Failover | Work::Memory),
            label: row.label.clone(),
            clients: row.clients.clone(),
            etcd: Vec::new(),
            leasehold: Vec::new(),
        };
        let repeats = if matches!(row.work, Work::Memory) {
            1
        } else {
            args.repeats
        };
        for rep in 0..repeats {
            for &system in &systems {
                let run = match one(args, c, system, row.work).await {
                    Ok(run) => run,
                    Err(e) => {
                        // Recorded, and the rows go on; the run fails at the end.
                        failed.push(format!(
                            "{} [{}] on {}: {e:#}",
                            row.label,
                            row.clients,
                            system.name()
                        ));
                        Run {
                            errors: 1,
                            note: format!("run failed: {e:#}"),
                            ..Run::default()
                        }
                    }
                };
                println!(
                    "{:<9} {} [{}] run {}: {:.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  errors {}  {}",
                    system.name(),
                    row.label,
                    row.clients,
                    rep + 1,
                    run.ops_per_s,
                    run.p50_ms,
                    run.p99_ms,
                    run.p999_ms,
                    run.errors,
                    run.note
                );
                match system {
                    System::Etcd => result.etcd.push(run),
                    System::Leasehold => result.leasehold.push(run),
                }
            }
        }
        results.push(result);
        report::write(&args.out, &results, args)?;
    }
    anyhow::ensure!(failed.is_empty(), "runs failed:\n{}", failed.join("\n"));
    Ok(results)
}

/// Index of `system`'s leader, once it serves.
async fn leader(c: &mut Clusters, system: System) -> anyhow::Result<usize> {
    match system {
        System::Leasehold => lh::wait_ready(&mut c.lh).await,
        System::Etcd => {
            #[cfg(feature = "etcd")]
            if let Some(e) = c.etcd.as_mut() {
                return crate::etcd::wait_ready(e).await;
            }
            anyhow::bail!("no etcd cluster")
        }
    }
}

/// One run of one row on one system, the client talking to the leader.
async fn one(
    args: &CompareArgs,
    c: &mut Clusters,
    system: System,
    work: Work,
) -> anyhow::Result<Run> {
    let dur = Duration::from_secs_f64(args.seconds);
    let failover = FailoverSpec {
        sessions: args.failover_sessions,
        ttl: Duration::from_secs(5),
        interval: Duration::from_millis(100),
        call_timeout: Duration::from_secs(1),
        kill_after: Duration::from_secs(2).min(dur),
        duration: Duration::from_secs(2).min(dur) + dur.max(Duration::from_secs(4)),
    };
    let memory = MemorySpec {
        leases: args.memory_leases,
        ttl: Duration::from_secs(args.memory_ttl_s),
        workers: 64,
        expiry_slack: Duration::from_secs(120),
        settle: Duration::from_secs(3),
    };
    let i = leader(c, system).await?;
    match system {
        System::Leasehold => {
            let ep = c.lh.endpoints()[i].clone();
            match work {
                Work::Open(n) => lh::open_session_lib(&ep, n, dur).await,
                Work::OpenRaw(n) => lh::open_session_raw(&ep, n, dur).await,
                Work::Lock(n) => lh::lock_cycle(&ep, n, dur).await,
                Work::KeepAlive(streams, per) => lh::keepalive(&ep, streams, per, dur).await,
                Work::Failover => lh::failover(&mut c.lh, i, failover).await,
                Work::Memory => lh::memory(&c.lh, i, memory).await,
            }
        }
        System::Etcd => etcd_one(c, i, work, dur, failover, memory).await,
    }
}

/// One run of one row on etcd, whose leader is member `i`.
#[cfg(feature = "etcd")]
async fn etcd_one(
    c: &mut Clusters,
    i: usize,
    work: Work,
    dur: Duration,
    failover: FailoverSpec,
    memory: MemorySpec,
) -> anyhow::Result<Run> {
    use crate::etcd;
    let Some(e) = c.etcd.as_mut() else {
        anyhow::bail!("no etcd cluster");
    };
    let ep = e.endpoints()[i].clone();
    match work {
        Work::Open(n) | Work::OpenRaw(n) => etcd::open_session(&ep, n, dur).await,
        Work::Lock(n) => etcd::lock_cycle(&ep, n, dur).await,
        Work::KeepAlive(streams, per) => etcd::keepalive(&ep, streams * per, dur).await,
        Work::Failover => etcd::failover(e, i, failover).await,
        Work::Memory => etcd::memory(e, i, memory).await,
    }
}

/// Without the `etcd` feature there is no etcd side.
#[cfg(not(feature = "etcd"))]
async fn etcd_one(
    _c: &mut Clusters,
    _i: usize,
    _work: Work,
    _dur: Duration,
    _failover: FailoverSpec,
    _memory: MemorySpec,
) -> anyhow::Result<Run> {
    anyhow::bail!("this build has no etcd backend (feature `etcd`)")
}
