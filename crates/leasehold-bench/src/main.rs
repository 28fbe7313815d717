//! `leasehold-bench`: Leasehold against etcd, side by side, on 3-node
//! loopback clusters of real processes (`compare`, what `cluster/bench.sh`
//! runs), and the older in-process figures (`in-process`).
//!
//! # Layout
//! - [`compare`]: the rows, interleaved etcd / Leasehold, each twice; the
//!   flags; writes the results.
//! - [`procs`]: the clusters as child processes: start, SIGKILL, restart,
//!   RSS of a pid, the pid file the script's trap reads.
//! - [`lh`]: Leasehold's side of each row (client library and raw gRPC).
//! - `etcd` (feature `etcd`): etcd's side of each row (`etcd-client`).
//! - [`stats`]: closed-loop and fixed-count load, percentiles.
//! - [`report`]: the markdown table and the SVG latency plot.
//! - [`inprocess`], [`api`]: the in-process cluster bench.
//! - [`scale`]: one cluster holding a million leases (memory, snapshot,
//!   restart and catch-up at that size).
//! - [`footprint`]: the domain core's bytes per lease, no cluster.
//! - [`flood`]: a running node under idle connections, watch streams and
//!   waiters (memory, limits, another client still served).
//! - here: what rows share (TTLs, failover and memory parameters, renewal
//!   gaps).

mod api;
mod compare;
#[cfg(feature = "etcd")]
mod etcd;
mod flood;
mod footprint;
mod inprocess;
mod lh;
mod procs;
mod report;
mod scale;
mod stats;

use std::time::{Duration, Instant};

use clap::Parser;

use stats::Run;

/// jemalloc, as the server runs with (`footprint` reads its statistics).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// TTL of sessions (etcd: leases) opened by the throughput rows; they are
/// closed (revoked) after each row, so it only has to outlast the row.
pub const SESSION_TTL: Duration = Duration::from_secs(60);

/// Resources the lock-cycle row spreads its clients over.
pub const LOCK_RESOURCES: usize = 64;

/// The failover row's parameters.
#[derive(Debug, Clone, Copy)]
pub struct FailoverSpec {
    /// Sessions renewed, each on its own stream.
    pub sessions: usize,
    /// Their TTL.
    pub ttl: Duration,
    /// Time between a session's renewals.
    pub interval: Duration,
    /// A renewal (with reconnecting) not answered within this has failed.
    pub call_timeout: Duration,
    /// When the leader is killed, from the start of the row.
    pub kill_after: Duration,
    /// Length of the row.
    pub duration: Duration,
}

/// The memory row's parameters.
#[derive(Debug, Clone, Copy)]
pub struct MemorySpec {
    /// Leases held at once.
    pub leases: u64,
    /// Their TTL (no renewals): must outlast creating them all.
    pub ttl: Duration,
    /// Concurrent creators.
    pub workers: usize,
    /// Waiting for expiry gives up this long after the TTL.
    pub expiry_slack: Duration,
    /// Pause between the last expiry and the last RSS reading.
    pub settle: Duration,
}

/// Renewal bookkeeping of one session in the failover row.
#[derive(Debug)]
pub struct Gaps {
    /// Index of the endpoint the session's stream goes to.
    pub endpoint: usize,
    /// When the last renewal was answered (or the row began).
    last_ok: Instant,
    /// Longest time between answered renewals.
    max_gap: Duration,
    /// Failed renewals (errors, timeouts, refused connections).
    errors: u64,
    /// The service said the session is gone.
    pub lost: bool,
    /// Latency of every answered renewal.
    lat: Vec<Duration>,
    /// Why the first failed renewal failed.
    first_error: Option<String>,
}

impl Gaps {
    /// Bookkeeping for a session starting at endpoint `endpoint`.
    pub fn new(endpoint: usize) -> Self {
        Gaps {
            endpoint,
            last_ok: Instant::now(),
            max_gap: Duration::ZERO,
            errors: 0,
            lost: false,
            lat: Vec::new(),
            first_error: None,
        }
    }

    /// A renewal sent at `sent` was answered now.
    pub fn ok(&mut self, sent: Instant) {
        let now = Instant::now();
        self.max_gap = self.max_gap.max(now - self.last_ok);
        self.last_ok = now;
        self.lat.push(now - sent);
    }

    /// A renewal failed (`why`): count it and move to the next of `n`
    /// endpoints.
    pub fn failed(&mut self, n: usize, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
        self.endpoint = (self.endpoint + 1) % n.max(1);
    }

    /// Ends the row: the time since the last answer counts as a gap too.
    pub fn finish(mut self) -> Self {
        self.max_gap = self.max_gap.max(self.last_ok.elapsed());
        self
    }

    /// The row's figures from every session's bookkeeping.
    pub fn summarize(all: Vec<Gaps>, duration: Duration) -> Run {
        let sessions = all.len();
        let lost = all.iter().filter(|g| g.lost).count();
        let gap = all.iter().map(|g| g.max_gap).max().unwrap_or_default();
        let errors = all.iter().map(|g| g.errors).sum();
        let first_error = all.iter().find_map(|g| g.first_error.clone());
        let lat: Vec<Duration> = all.into_iter().flat_map(|g| g.lat).collect();
        let ops = lat.len() as u64;
        let mut run = stats::summarize(lat, ops, errors, duration);
        run.first_error = first_error;
        run.note = format!(
            "longest renewal gap {:.0} ms, {errors} failed renewals, {lost}/{sessions} sessions lost",
            gap.as_secs_f64() * 1e3
        );
        run
    }
}

/// The failover row's load, the same on both systems: one task per
/// session renews it every `spec.interval` on its own stream, opened with
/// `open(endpoint, session)` at the endpoint its [`Gaps`] points to and
/// used with `renew(stream)` (the number renewed, or an error naming a
/// session `gone`); a failed or unanswered renewal drops the stream and
/// moves to the next endpoint. The leader is killed after
/// `spec.kill_after`; the caller restarts it.
pub async fn renew_through_failover<T, S, O, OF, R, RF>(
    cluster: &mut procs::Cluster,
    leader: usize,
    spec: FailoverSpec,
    sessions: Vec<T>,
    open: O,
    renew: R,
) -> anyhow::Result<Run>
where
    T: Clone + Send + Sync + 'static,
    S: Send + 'static,
    O: Fn(String, T) -> OF + Clone + Send + Sync + 'static,
    OF: std::future::Future<Output = anyhow::Result<S>> + Send,
    R: Fn(S) -> RF + Clone + Send + Sync + 'static,
    RF: std::future::Future<Output = (S, anyhow::Result<u64>)> + Send,
{
    let endpoints = cluster.endpoints();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for session in sessions {
        let (endpoints, open, renew) = (endpoints.clone(), open.clone(), renew.clone());
        let stop = std::sync::Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut g = Gaps::new(leader);
            let mut stream: Option<S> = None;
            let mut tick = tokio::time::interval(spec.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let t = Instant::now();
                let r = tokio::time::timeout(spec.call_timeout, async {
                    let s = match stream.take() {
                        Some(s) => s,
                        None => open(endpoints[g.endpoint].clone(), session.clone()).await?,
                    };
                    let (s, r) = renew(s).await;
                    stream = Some(s);
                    r
                })
                .await;
                match r {
                    Ok(Ok(_)) => g.ok(t),
                    Ok(Err(e)) if e.to_string().contains("gone") => {
                        g.lost = true;
                        break;
                    }
                    Ok(Err(e)) => {
                        g.failed(endpoints.len(), format!("{e:#}"));
                        stream = None;
                    }
                    Err(_) => {
                        g.failed(endpoints.len(), "no answer within the call timeout".into());
                        stream = None;
                    }
                }
            }
            g.finish()
        }));
    }
    tokio::time::sleep(spec.kill_after).await;
    cluster.kill(leader).await?;
    tokio::time::sleep(spec.duration.saturating_sub(spec.kill_after)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await?);
    }
    Ok(Gaps::summarize(all, spec.duration))
}

/// The memory row's note: RSS before, held, after expiry, bytes per lease.
pub fn memory_note(leases: u64, held_count: u64, before: u64, held: u64, after: u64) -> String {
    let per = (held as f64 - before as f64) / leases.max(1) as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "{leases} leases ({held_count} alive when measured): leader RSS {:.1} MiB before, {:.1} MiB held \
         (≈ {:.1} KB/lease), {:.1} MiB after all expired",
        mib(before),
        mib(held),
        per / 1000.0,
        mib(after)
    )
}

/// Subcommands.
#[derive(Parser, Debug)]
#[command(about = "Leasehold benchmarks: against etcd on real 3-node clusters, or in-process")]
enum Cli {
    /// Leasehold vs etcd on 3-node loopback clusters (cluster/bench.sh).
    Compare(compare::CompareArgs),
    /// A 3-node Leasehold cluster inside this process.
    InProcess(inprocess::InProcessArgs),
    /// One Leasehold cluster holding many leases: memory, snapshot,
    /// restart and catch-up at that size.
    Scale(scale::ScaleArgs),
    /// Floods a running node with idle connections, watch streams and
    /// waiters; reports its RSS and gauges before, during and after.
    Flood(flood::FloodArgs),
    /// The domain core's bytes per lease (replicated state and the
    /// leader's deadline table), counted by the allocator; no cluster.
    Footprint(footprint::FootprintArgs),
}

/// Runs the subcommand.
#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Compare(args) => compare::run(args).await,
        Cli::InProcess(args) => inprocess::run(args).await,
        Cli::Scale(args) => scale::run(args).await,
        Cli::Flood(args) => flood::run(args).await,
        Cli::Footprint(args) => footprint::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_take_the_longest_silence_and_count_failures() {
        let mut g = Gaps::new(2);
        g.ok(Instant::now());
        g.failed(3, "refused".into());
        assert_eq!(g.endpoint, 0);
        std::thread::sleep(Duration::from_millis(30));
        g.ok(Instant::now());
        let g = g.finish();
        assert!(g.max_gap >= Duration::from_millis(30));
        let run = Gaps::summarize(vec![g, Gaps::new(0)], Duration::from_secs(1));
        assert_eq!(run.errors, 1);
        assert_eq!(run.first_error.as_deref(), Some("refused"));
        assert_eq!(run.ops_per_s, 2.0);
        assert!(run.note.contains("0/2 sessions lost"), "{}", run.note);
    }

    #[test]
    fn memory_note_gives_bytes_per_lease() {
        let note = memory_note(1000, 1000, 10 << 20, (10 << 20) + 3_000_000, 11 << 20);
        assert!(note.contains("≈ 3.0 KB/lease"), "{note}");
    }
}
