//! `leasehold-bench flood`: floods a running node (a `leasehold server`
//! process) with idle connections, Watch streams and waiting acquires
//! ([`leasehold_tests::flood`]), and reports the node's RSS before, during,
//! right after, and once it settled, whether another client was served
//! throughout, and what an over-limit attempt got.

use std::net::SocketAddr;
use std::time::Duration;

use leasehold_tests::flood::{flood, rss_back_to, FloodSpec};

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
    /// How long to watch the RSS come back down after the flood.
    #[arg(long, default_value_t = 30)]
    pub settle_s: u64,
}

/// Runs the flood and prints what it saw.
pub async fn run(args: FloodArgs) -> anyhow::Result<()> {
    let spec = FloodSpec {
        connections: args.connections,
        watches: args.watches,
        waiters: args.waiters,
    };
    let f = flood(&args.endpoint, args.metrics, args.pid, spec).await?;
    println!("before: RSS {:.1} MiB", f.rss_before_mib);
    println!(
        "{} connections open: RSS {:.1} MiB; another client served",
        f.connections_open, f.rss_connections_mib
    );
    match &f.over_limit {
        None => println!("one more watch: accepted (no limit reached)"),
        Some(s) => println!("one more watch: {:?} {:?}", s.code(), s.message()),
    }
    println!(
        "{} idle connections + {} watch streams + {} waiters: RSS {:.1} MiB; another client served",
        f.connections_open, f.watch_streams, f.waiters, f.rss_peak_mib
    );
    println!(
        "after: {} connections, 0 watch streams, 0 waiters: RSS {:.1} MiB (flood took {:.1} s)",
        f.connections_after,
        f.rss_after_mib,
        f.elapsed.as_secs_f64()
    );
    // Settled: within a tenth of the rise above the start, or the time is up.
    let bound = f.rss_before_mib + (f.rss_peak_mib - f.rss_before_mib) / 10.0;
    let (rss, took) = rss_back_to(args.pid, bound, Duration::from_secs(args.settle_s)).await?;
    match took {
        Some(t) => println!(
            "settled: RSS {rss:.1} MiB after {:.1} s (within 10% of the rise: {bound:.1} MiB)",
            t.as_secs_f64()
        ),
        None => println!(
            "settled: RSS {rss:.1} MiB after {} s, above {bound:.1} MiB (10% of the rise)",
            args.settle_s
        ),
    }
    Ok(())
}
