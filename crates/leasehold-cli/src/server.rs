//! `leasehold server` (one node) and `leasehold dev` (a three-node cluster
//! in this process).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use leasehold_server::{Node, NodeConfig, PeerSpec, RaftTiming};

use crate::signal::wait_for_shutdown_signal;

/// Flags of `leasehold server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// This node's id (one of the --peer ids, unless --join).
    #[arg(long)]
    id: u64,
    /// Listen address of the Raft peer service.
    #[arg(long, default_value = "127.0.0.1:7101")]
    raft_listen: SocketAddr,
    /// Listen address of the client API.
    #[arg(long, default_value = "127.0.0.1:7001")]
    api_listen: SocketAddr,
    /// A cluster member, ID=RAFT_ADDR,API_ADDR; repeat for every member,
    /// this node included (a --join node may be absent: the list then only
    /// names whom to ask).
    #[arg(long = "peer", required = true)]
    peers: Vec<PeerSpec>,
    /// Data directory (sled database); created if missing.
    #[arg(long)]
    data_dir: PathBuf,
    /// Raft heartbeat period.
    #[arg(long, default_value_t = RaftTiming::default().heartbeat_ms)]
    heartbeat_ms: u64,
    /// Lower bound of the election timeout.
    #[arg(long, default_value_t = RaftTiming::default().election_timeout_ms_min)]
    election_timeout_ms_min: u64,
    /// Upper bound of the election timeout.
    #[arg(long, default_value_t = RaftTiming::default().election_timeout_ms_max)]
    election_timeout_ms_max: u64,
    /// Never initialize a cluster: with a pristine data directory, wait to
    /// be added to an existing one (`leasehold membership`). Without it a
    /// pristine node founds a cluster only when every --peer member answers
    /// and none has committed anything; if the cluster exists and still
    /// lists this id (its data was wiped), the node refuses all Raft
    /// traffic until the id is removed from the membership. Also read from
    /// LEASEHOLD_JOIN (true/false), so a recreated container can be told.
    #[arg(long, alias = "no-bootstrap", env = "LEASEHOLD_JOIN")]
    join: bool,
    /// UNSAFE, chaos tests only: make this node's lease clock run fast
    /// (positive) or slow (negative) by this many parts per million. Also
    /// read from the environment, so the container chaos backend can set it
    /// per node through compose.
    #[arg(
        long,
        default_value_t = 0,
        allow_hyphen_values = true,
        env = "LEASEHOLD_UNSAFE_TEST_CLOCK_RATE_PPM"
    )]
    unsafe_test_clock_rate_ppm: i64,
    /// UNSAFE, chaos tests only: on every SIGUSR1, jump this node's lease
    /// clock forward by this many milliseconds (0: SIGUSR1 is ignored).
    #[arg(long, default_value_t = 0, env = "LEASEHOLD_UNSAFE_TEST_CLOCK_JUMP_MS")]
    unsafe_test_clock_jump_ms: u64,
}

/// Runs one node until SIGINT or SIGTERM, then stops it gracefully
/// ([`Node::shutdown`]).
pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(
        args.id,
        args.raft_listen,
        args.api_listen,
        args.peers,
        args.data_dir,
    );
    config.timing = RaftTiming {
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_ms_min: args.election_timeout_ms_min,
        election_timeout_ms_max: args.election_timeout_ms_max,
    };
    config.bootstrap = !args.join;
    config.unsafe_test_clock_rate_ppm = args.unsafe_test_clock_rate_ppm;
    config.validate()?;
    let node = std::sync::Arc::new(Node::start(config).await?);
    let jumper = (args.unsafe_test_clock_jump_ms > 0).then(|| {
        let node = std::sync::Arc::clone(&node);
        let jump_ms = args.unsafe_test_clock_jump_ms;
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                return;
            };
            while usr1.recv().await.is_some() {
                node.unsafe_test_clock_jump(jump_ms);
            }
        })
    });
    wait_for_shutdown_signal().await?;
    if let Some(j) = jumper {
        j.abort();
        let _ = j.await;
    }
    let node = std::sync::Arc::try_unwrap(node)
        .map_err(|_| anyhow::anyhow!("node still in use at shutdown"))?;
    // The graceful path (Node::shutdown): step aside (a leader stops
    // serving at once; its vote gate holds until its lease ran out), drain
    // the client API, then stop Raft, so the others take over with the
    // failover grace and holders that keep renewing lose nothing.
    tracing::info!(
        drain_max = ?leasehold_server::DRAIN_MAX,
        "signal received: stepping aside, draining client calls, then stopping"
    );
    node.shutdown().await?;
    Ok(())
}

/// Flags of `leasehold dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Keep the nodes' data in this directory (kept on exit; a restart
    /// resumes from it). Default: a temporary directory removed on exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address every node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Raft peer port of node 1 (nodes 2 and 3 use the next two).
    #[arg(long, default_value_t = 7101)]
    raft_port: u16,
    /// Client API port of node 1 (nodes 2 and 3 use the next two).
    #[arg(long, default_value_t = 7001)]
    api_port: u16,
}

/// Number of nodes `dev` starts.
const DEV_NODES: u16 = 3;

/// The peers of a dev cluster: node i (1-based) at `raft_port + i − 1` and
/// `api_port + i − 1` on `host`.
pub fn dev_peers(host: IpAddr, raft_port: u16, api_port: u16) -> anyhow::Result<Vec<PeerSpec>> {
    (0..DEV_NODES)
        .map(|i| {
            let raft = raft_port
                .checked_add(i)
                .context("--raft-port: port out of range")?;
            let api = api_port
                .checked_add(i)
                .context("--api-port: port out of range")?;
            let spec = format!(
                "{}={},{}",
                i + 1,
                SocketAddr::new(host, raft),
                SocketAddr::new(host, api)
            );
            spec.parse::<PeerSpec>().map_err(anyhow::Error::msg)
        })
        .collect()
}

/// Runs a three-node cluster in this process until SIGINT or SIGTERM, then
/// shuts every node down.
pub async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("leasehold-dev-")
                .tempdir()
                .context("creating a temporary data directory")?,
        ),
    };
    let root: PathBuf = match (&args.data_dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => anyhow::bail!("no data directory"),
    };
    let peers = dev_peers(args.host, args.raft_port, args.api_port)?;
    let mut nodes = Vec::new();
    for p in &peers {
        let config = NodeConfig::new(
            p.id,
            p.node.raft_addr.parse()?,
            p.node.api_addr.parse()?,
            peers.clone(),
            root.join(format!("node-{}", p.id)),
        );
        match Node::start(config).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                for n in nodes {
                    let _ = n.shutdown().await;
                }
                return Err(e).with_context(|| format!("starting node {}", p.id));
            }
        }
    }
    let endpoints: Vec<&str> = peers.iter().map(|p| p.node.api_addr.as_str()).collect();
    println!(
        "leasehold dev: {} nodes, data in {}{}",
        peers.len(),
        root.display(),
        if temp.is_some() {
            " (removed on exit)"
        } else {
            ""
        }
    );
    for p in &peers {
        println!(
            "  node {}: raft {}  api {}",
            p.id, p.node.raft_addr, p.node.api_addr
        );
    }
    println!("export LEASEHOLD_ENDPOINTS={}", endpoints.join(","));
    println!("Ctrl-C stops the cluster.");
    wait_for_shutdown_signal().await?;
    tracing::info!("signal received, shutting down the dev cluster");
    let mut first_error = None;
    for n in nodes {
        let id = n.id();
        if let Err(e) = n.shutdown().await {
            tracing::error!(node = id, error = %e, "shutdown failed");
            first_error.get_or_insert(e);
        }
    }
    drop(temp);
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_peers_use_consecutive_ports() {
        let peers = dev_peers("127.0.0.1".parse().expect("ip"), 7101, 7001).expect("peers");
        let got: Vec<(u64, &str, &str)> = peers
            .iter()
            .map(|p| (p.id, p.node.raft_addr.as_str(), p.node.api_addr.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "127.0.0.1:7101", "127.0.0.1:7001"),
                (2, "127.0.0.1:7102", "127.0.0.1:7002"),
                (3, "127.0.0.1:7103", "127.0.0.1:7003"),
            ]
        );
        assert!(dev_peers("127.0.0.1".parse().expect("ip"), 65535, 7001).is_err());
    }
}
