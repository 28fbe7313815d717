//! `leasehold server` (one node) and `leasehold dev` (a three-node cluster
//! in this process).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use leasehold_server::{AuthConfig, Node, NodeConfig, PeerSpec, Principal, Role};

use crate::config::ServerConfig;
use crate::signal::wait_for_shutdown_signal;

/// Flags of `leasehold server`.
#[derive(Args, Debug)]
#[command(after_help = crate::config::HELP)]
pub struct ServerArgs {
    /// TOML configuration file; flags and LEASEHOLD_* variables override
    /// its settings. [env: LEASEHOLD_CONFIG]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The settings given as flags.
    #[command(flatten)]
    pub settings: crate::config::Settings,
}

/// Runs one node until SIGINT or SIGTERM, then stops it gracefully
/// ([`Node::shutdown`]); or until its store fails: then it stops the node
/// and returns the failure (the process exits non-zero).
pub async fn run_server(config: ServerConfig) -> anyhow::Result<()> {
    if let Some(file) = &config.file {
        tracing::info!(file = %file.display(), "configuration read");
    }
    let jump_ms = config.unsafe_test_clock_jump_ms;
    let config = config.node;
    let node = std::sync::Arc::new(Node::start(config).await?);
    let jumper = (jump_ms > 0).then(|| {
        let node = std::sync::Arc::clone(&node);
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
    // A storage failure fail-stops the node (it serves nothing, its Raft
    // stopped; docs/adr/0007-disk-faults-fail-stop.md); the process then
    // exits non-zero so its supervisor and operator see it.
    let failed = tokio::select! {
        signal = wait_for_shutdown_signal() => {
            signal?;
            None
        }
        reason = node.storage_failed() => Some(reason),
    };
    if let Some(j) = jumper {
        j.abort();
        let _ = j.await;
    }
    let node = std::sync::Arc::try_unwrap(node)
        .map_err(|_| anyhow::anyhow!("node still in use at shutdown"))?;
    if let Some(reason) = failed {
        // Stops the API and closes the store; nothing is served meanwhile.
        if let Err(error) = node.shutdown().await {
            tracing::warn!(%error, "stopping the node after its storage failure");
        }
        anyhow::bail!("storage failed, node stopped (fail-stop): {reason}");
    }
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
    /// Metrics and health HTTP port of node 1 (nodes 2 and 3 use the next
    /// two); 0: not served.
    #[arg(long, default_value_t = 7201)]
    metrics_port: u16,
    /// Run the nodes without TLS (warned about). By default the cluster
    /// runs TLS with a throwaway CA generated into DATA_DIR/tls on first
    /// start (reused on restart).
    #[arg(long)]
    plaintext: bool,
    /// Run with an open client API (no tokens) instead of the admin token.
    #[arg(long)]
    auth_open: bool,
}

/// Where `dev` keeps its certificates, in its data directory.
const DEV_TLS_DIR: &str = "tls";

/// The dev cluster's TLS directory under `root`: generated (CA, node
/// certificates for `host` and localhost, a `client` certificate) unless a
/// CA is already there.
fn dev_certs(root: &std::path::Path, host: IpAddr, peers: &[PeerSpec]) -> anyhow::Result<PathBuf> {
    let dir = root.join(DEV_TLS_DIR);
    if dir.join(leasehold_server::certs::CA_CERT_FILE).exists() {
        return Ok(dir);
    }
    let nodes: Vec<leasehold_server::certs::NodeCert> = peers
        .iter()
        .map(|p| leasehold_server::certs::NodeCert {
            id: p.id,
            hosts: vec![host.to_string(), "localhost".into()],
        })
        .collect();
    leasehold_server::certs::init(
        &dir,
        &nodes,
        &[leasehold_server::certs::DEFAULT_CLIENT.into()],
        false,
    )
    .context("generating the dev cluster's certificates")?;
    Ok(dir)
}

/// The auth settings of a local cluster (`leasehold dev`; `cluster/up.sh`
/// does the same in shell): one admin principal whose token lives in
/// `root/admin.token` (made on first start, mode 0600), where client
/// commands find it without flags. Returns the settings and the file.
pub fn local_admin_auth(root: &std::path::Path) -> anyhow::Result<(AuthConfig, PathBuf)> {
    let (token, file) = crate::auth::ensure_admin_token(root)?;
    let admin = Principal::with_token(crate::auth::ADMIN_PRINCIPAL, &token, Role::Admin, &[]);
    let auth = AuthConfig {
        principals: vec![admin],
        open: false,
    };
    Ok((auth, file))
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
    let tls_dir = match args.plaintext {
        true => None,
        false => Some(dev_certs(&root, args.host, &peers)?),
    };
    // The admin token outlives a temporary data directory: it goes to the
    // data directory if given, else to the local cluster's data root, where
    // client commands look for it.
    let (auth, token_file) = if args.auth_open {
        (AuthConfig::open(), None)
    } else {
        let token_root = match &args.data_dir {
            Some(d) => d.clone(),
            None => crate::auth::default_token_file()
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
        };
        let (auth, file) = local_admin_auth(&token_root)?;
        (auth, Some(file))
    };
    let mut nodes = Vec::new();
    for (i, p) in (0u16..).zip(&peers) {
        let mut config = NodeConfig::new(
            p.id,
            p.node.raft_addr.parse()?,
            p.node.api_addr.parse()?,
            peers.clone(),
            root.join(format!("node-{}", p.id)),
        );
        config.auth = auth.clone();
        if args.metrics_port != 0 {
            let port = args
                .metrics_port
                .checked_add(i)
                .context("--metrics-port: port out of range")?;
            config.metrics_listen = Some(SocketAddr::new(args.host, port));
        }
        match &tls_dir {
            Some(dir) => config.tls = Some(leasehold_server::certs::node_files(dir, p.id)),
            None => config.plaintext = true,
        }
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
    for n in &nodes {
        let metrics = n
            .metrics_addr()
            .map(|a| format!("  metrics http://{a}/metrics"))
            .unwrap_or_default();
        println!(
            "  node {}: raft {}  api {}{metrics}",
            n.id(),
            n.raft_addr(),
            n.api_addr()
        );
    }
    println!("export LEASEHOLD_ENDPOINTS={}", endpoints.join(","));
    match &tls_dir {
        Some(dir) => {
            let (cert, key) =
                leasehold_server::certs::client_files(dir, leasehold_server::certs::DEFAULT_CLIENT);
            println!(
                "export LEASEHOLD_CA_CERT={}",
                dir.join(leasehold_server::certs::CA_CERT_FILE).display()
            );
            println!("export LEASEHOLD_CLIENT_CERT={}", cert.display());
            println!("export LEASEHOLD_CLIENT_KEY={}", key.display());
        }
        None => println!("export LEASEHOLD_PLAINTEXT=true"),
    }
    match &token_file {
        Some(file) => {
            let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
            println!("export LEASEHOLD_TOKEN_FILE={}", file.display());
        }
        None => println!("client API OPEN (--auth-open): no tokens needed"),
    }
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

    /// The server and dev flags alone, parsed as the CLI parses them.
    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    #[allow(clippy::large_enum_variant)] // parsed once per test
    enum Sub {
        Server(ServerArgs),
        Dev(DevArgs),
    }

    #[test]
    fn metrics_listen_is_optional_and_dev_has_metrics_ports() {
        use clap::Parser;
        let base = [
            "t",
            "server",
            "--id",
            "1",
            "--peer",
            "1=127.0.0.1:7101,127.0.0.1:7001",
            "--data-dir",
            "/tmp/x",
        ];
        let Sub::Server(args) = Flags::try_parse_from(base).expect("parses").cmd else {
            panic!("not server");
        };
        assert_eq!(args.settings.metrics_listen, None);
        let with = base
            .iter()
            .copied()
            .chain(["--metrics-listen", "127.0.0.1:7201"]);
        let Sub::Server(args) = Flags::try_parse_from(with).expect("parses").cmd else {
            panic!("not server");
        };
        assert_eq!(
            args.settings.metrics_listen,
            Some("127.0.0.1:7201".parse().expect("addr"))
        );
        let Sub::Dev(args) = Flags::try_parse_from(["t", "dev"]).expect("parses").cmd else {
            panic!("not dev");
        };
        assert_eq!(args.metrics_port, 7201);
    }
}
