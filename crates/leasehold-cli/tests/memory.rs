//! `leasehold server` gives memory back after a flood (issue 9 item 4,
//! docs/adr/0009-allocator.md): thousands of idle connections, Watch
//! streams and waiting acquires raise its RSS; once they are gone the RSS
//! comes back down close to where it started, and repeated floods do not
//! ratchet it up. The node is a real process (its RSS is what an operator
//! sees), with the binary's own global allocator.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use leasehold_tests::flood::{flood, poll, rss_back_to, FloodSpec};
use leasehold_tests::grpc;
use leasehold_tests::http::get;
use tokio::process::Command;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_leasehold");
/// How long the RSS may take to come back down after a flood. The
/// allocator returns freed pages over about 10 s (jemalloc's decay).
const GIVE_BACK_WITHIN: Duration = Duration::from_secs(60);
/// How long the node gets to start serving.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Floods in a row.
const FLOODS: usize = 3;

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gives_memory_back_after_a_flood_and_repeated_floods_do_not_ratchet(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (raft, api, metrics) = (free_port()?, free_port()?, free_port()?);
    let api_addr = format!("127.0.0.1:{api}");
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics}").parse()?;
    let peer = format!("1=127.0.0.1:{raft},{api_addr}");
    let child = Command::new(BIN)
        .args(["server", "--id", "1", "--peer", &peer])
        .args(["--raft-listen", &format!("127.0.0.1:{raft}")])
        .args(["--api-listen", &api_addr])
        .args(["--metrics-listen", &metrics_addr.to_string()])
        .args(["--plaintext", "--auth-open"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("the server has no pid")?;
    poll("the node serves", READY_WITHIN, || async {
        let ready = get(metrics_addr, "/readyz").await.ok()?.status == 200;
        let open = grpc::open(&api_addr, "memory-probe", 10_000).await.ok();
        (ready && open.is_some()).then_some(())
    })
    .await?;

    let spec = FloodSpec {
        connections: 2_000,
        watches: 1_000,
        waiters: 1_000,
    };
    // The first flood's start is the baseline every later flood is held
    // to: memory given back only partly would ratchet up flood by flood.
    let mut baseline: Option<(f64, f64)> = None;
    for round in 1..=FLOODS {
        let f = flood(&api_addr, metrics_addr, pid, spec).await?;
        eprintln!(
            "flood {round}: RSS before {:.1} MiB, peak {:.1} MiB, right after {:.1} MiB",
            f.rss_before_mib, f.rss_peak_mib, f.rss_after_mib
        );
        assert!(f.connections_open > spec.connections as u64);
        assert_eq!(f.watch_streams, spec.watches as u64);
        assert_eq!(f.waiters, spec.waiters as u64);
        let (start_mib, rise_mib) =
            *baseline.get_or_insert((f.rss_before_mib, f.rss_peak_mib - f.rss_before_mib));
        // The flood must have cost something, or the rest proves nothing.
        assert!(
            rise_mib > 10.0,
            "the first flood raised RSS by only {rise_mib:.1} MiB"
        );
        // Comes back down: at most 60% of the first flood's rise stays
        // resident above where the first flood started.
        let bound_mib = start_mib + rise_mib * 0.6;
        let (rss_mib, took) = rss_back_to(pid, bound_mib, GIVE_BACK_WITHIN).await?;
        eprintln!("flood {round}: RSS {rss_mib:.1} MiB after {took:?} (bound {bound_mib:.1})");
        assert!(
            took.is_some(),
            "flood {round}: RSS still {rss_mib:.1} MiB after {GIVE_BACK_WITHIN:?}, above \
             {bound_mib:.1} MiB (the first flood started at {start_mib:.1} and rose by \
             {rise_mib:.1}; this one peaked at {:.1})",
            f.rss_peak_mib
        );
        // Bounded: no flood peaks much above the first one.
        assert!(
            f.rss_peak_mib <= start_mib + rise_mib * 1.5,
            "flood {round} peaked at {:.1} MiB, the first at {:.1} MiB",
            f.rss_peak_mib,
            start_mib + rise_mib
        );
    }
    drop(child);
    Ok(())
}
