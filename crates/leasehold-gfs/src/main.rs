//! `leasehold-gfs`: run a GFS master or chunkserver on Leasehold, drive
//! writers, ask for status, recall a primary, and check a run.
//!
//! ```text
//! leasehold-gfs master --id m1 --listen 127.0.0.1:7401 --leasehold 127.0.0.1:7001,…
//! leasehold-gfs chunkserver --id cs1 --listen 127.0.0.1:7501 --data-dir D --masters … --leasehold …
//! leasehold-gfs workload --masters … --writers 4 --seconds 60 --history H
//! leasehold-gfs status --masters …
//! leasehold-gfs recall --masters … --chunk C [--prefer cs2]
//! leasehold-gfs check --history H… --data cs1=D1 …
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use leasehold_gfs::chunkserver::{ChunkserverConfig, ChunkserverHandle};
use leasehold_gfs::history::History;
use leasehold_gfs::master::{MasterConfig, MasterHandle};
use leasehold_gfs::workload::{self, WorkloadConfig};
use leasehold_gfs::{checker, history, GfsClient};

/// GFS-style chunk primaries on Leasehold.
#[derive(Parser, Debug)]
#[command(name = "leasehold-gfs", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// A Leasehold bearer token, for a cluster that requires one.
#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// Bearer token sent to Leasehold.
    #[arg(
        long,
        env = "LEASEHOLD_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// File holding the bearer token (its first line).
    #[arg(long, env = "LEASEHOLD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token given, if any.
    fn resolve(&self) -> anyhow::Result<Option<leasehold_client::Token>> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.trim().to_string(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?
                .trim()
                .to_string(),
            (None, None) => return Ok(None),
        };
        anyhow::ensure!(
            !token.is_empty() && token.len() <= leasehold_client::TOKEN_BYTES_MAX,
            "the token must be 1 to {} bytes",
            leasehold_client::TOKEN_BYTES_MAX
        );
        Ok(Some(leasehold_client::Token::new(token)))
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a master (stands for election through `gfs/master`).
    Master {
        /// Master id.
        #[arg(long)]
        id: String,
        /// gRPC listen address.
        #[arg(long)]
        listen: String,
        /// Leasehold endpoints, comma separated.
        #[arg(long, value_delimiter = ',')]
        leasehold: Vec<String>,
        /// TLS towards Leasehold.
        #[command(flatten)]
        tls: LeaseholdTls,
        /// Leasehold credentials (masters recall chunk leases: an admin
        /// principal's token).
        #[command(flatten)]
        token: TokenArgs,
        /// Session TTL in ms.
        #[arg(long, default_value_t = 2_000)]
        ttl_ms: u64,
        /// Append events (JSONL) to this file.
        #[arg(long)]
        history: Option<PathBuf>,
    },
    /// Run a chunkserver.
    Chunkserver {
        /// Chunkserver id (stable across restarts).
        #[arg(long)]
        id: String,
        /// gRPC listen address.
        #[arg(long)]
        listen: String,
        /// Replica directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Leasehold endpoints, comma separated.
        #[arg(long, value_delimiter = ',')]
        leasehold: Vec<String>,
        /// TLS towards Leasehold.
        #[command(flatten)]
        tls: LeaseholdTls,
        /// Master addresses, comma separated.
        #[arg(long, value_delimiter = ',')]
        masters: Vec<String>,
        /// Leasehold credentials (a client principal limited to `chunk/`).
        #[command(flatten)]
        token: TokenArgs,
        /// Session TTL in ms.
        #[arg(long, default_value_t = 2_000)]
        ttl_ms: u64,
        /// Chunk size in bytes.
        #[arg(long, default_value_t = leasehold_gfs::names::CHUNK_BYTES_DEFAULT)]
        chunk_bytes: u64,
        /// Append events (JSONL) to this file.
        #[arg(long)]
        history: Option<PathBuf>,
        /// UNSAFE, tests only: keep accepting writes as primary after the
        /// holder deadline, a lost lease or a recall.
        #[arg(long)]
        unsafe_ignore_deadline: bool,
    },
    /// Run writers (appends and writes); prints a JSON summary.
    Workload {
        /// Master addresses, comma separated.
        #[arg(long, value_delimiter = ',')]
        masters: Vec<String>,
        /// Concurrent writers.
        #[arg(long, default_value_t = 4)]
        writers: u32,
        /// First writer id.
        #[arg(long, default_value_t = 0)]
        first_writer: u32,
        /// Seconds to run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Bytes per record and write.
        #[arg(long, default_value_t = 1_024)]
        record_bytes: u64,
        /// Chunk size the chunkservers use.
        #[arg(long, default_value_t = leasehold_gfs::names::CHUNK_BYTES_DEFAULT)]
        chunk_bytes: u64,
        /// Chunk name prefix.
        #[arg(long, default_value = "demo")]
        prefix: String,
        /// Append acknowledgements (JSONL) to this file.
        #[arg(long)]
        history: Option<PathBuf>,
    },
    /// The elected master's status (JSON lines: counters, then chunks).
    Status {
        /// Master addresses, comma separated.
        #[arg(long, value_delimiter = ',')]
        masters: Vec<String>,
    },
    /// Recall a chunk's primary.
    Recall {
        /// Master addresses, comma separated.
        #[arg(long, value_delimiter = ',')]
        masters: Vec<String>,
        /// The chunk.
        #[arg(long)]
        chunk: String,
        /// Reason.
        #[arg(long, default_value = "snapshot")]
        reason: String,
        /// Chunkserver id to make primary next.
        #[arg(long, default_value = "")]
        prefer: String,
    },
    /// Check a run: histories plus the chunkservers' data directories.
    /// Prints the summary as JSON; exits 1 on any violation.
    Check {
        /// History files.
        #[arg(long, num_args = 1.., required = true)]
        history: Vec<PathBuf>,
        /// Chunkserver data directories as ID=DIR.
        #[arg(long, num_args = 1..)]
        data: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn,hyper=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse().cmd).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leasehold-gfs: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// How masters and chunkservers reach Leasehold: the flags of the
/// `leasehold` client commands.
#[derive(clap::Args, Debug)]
struct LeaseholdTls {
    /// Leasehold's CA certificate (PEM): connect over TLS. Default:
    /// $LEASEHOLD_DATA_DIR/tls/ca.pem (data dir default ./.leasehold-data)
    /// if it exists, with client.pem and client-key.pem beside it.
    #[arg(long, env = "LEASEHOLD_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) presented to Leasehold (with --client-key).
    #[arg(long, env = "LEASEHOLD_CLIENT_CERT", value_name = "PEM")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "LEASEHOLD_CLIENT_KEY", value_name = "PEM")]
    client_key: Option<PathBuf>,
    /// Connect to Leasehold without TLS (skips the default CA lookup).
    #[arg(long)]
    plaintext: bool,
}

impl LeaseholdTls {
    /// The client TLS these flags ask for; `None`: plaintext.
    fn resolve(&self) -> anyhow::Result<Option<leasehold_client::ClientTls>> {
        let data_dir = std::env::var_os("LEASEHOLD_DATA_DIR")
            .map_or_else(|| PathBuf::from(".leasehold-data"), PathBuf::from);
        Ok(leasehold_client::ClientTls::resolve(
            self.ca_cert.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
            self.plaintext,
            &data_dir,
        )?)
    }
}

/// A history sink for an optional path.
fn sink(path: Option<&PathBuf>) -> anyhow::Result<History> {
    Ok(match path {
        Some(p) => History::file(p).with_context(|| format!("opening {}", p.display()))?,
        None => History::none(),
    })
}

/// Waits for Ctrl-C or SIGTERM.
async fn until_stopped() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Master {
            id,
            listen,
            leasehold,
            tls,
            token,
            ttl_ms,
            history,
        } => {
            let mut config = MasterConfig::new(&id, leasehold);
            config.leasehold_tls = tls.resolve()?;
            config.token = token.resolve()?;
            config.session_ttl = Duration::from_millis(ttl_ms);
            config.history = sink(history.as_ref())?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let _master = MasterHandle::start(config, listener).await?;
            until_stopped().await?;
        }
        Cmd::Chunkserver {
            id,
            listen,
            data_dir,
            leasehold,
            tls,
            masters,
            token,
            ttl_ms,
            chunk_bytes,
            history,
            unsafe_ignore_deadline,
        } => {
            anyhow::ensure!(
                (4..=leasehold_gfs::names::CHUNK_BYTES_MAX).contains(&chunk_bytes),
                "--chunk-bytes: 4 to {}",
                leasehold_gfs::names::CHUNK_BYTES_MAX
            );
            let mut config = ChunkserverConfig::new(&id, data_dir, leasehold, masters);
            config.leasehold_tls = tls.resolve()?;
            config.token = token.resolve()?;
            config.session_ttl = Duration::from_millis(ttl_ms);
            config.chunk_bytes = chunk_bytes;
            config.history = sink(history.as_ref())?;
            config.unsafe_ignore_deadline = unsafe_ignore_deadline;
            if unsafe_ignore_deadline {
                tracing::warn!(
                    "UNSAFE: this chunkserver ignores its primary deadlines (tests only)"
                );
            }
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let _cs = ChunkserverHandle::start(config, listener).await?;
            until_stopped().await?;
        }
        Cmd::Workload {
            masters,
            writers,
            first_writer,
            seconds,
            record_bytes,
            chunk_bytes,
            prefix,
            history,
        } => {
            let client = GfsClient::new(masters);
            let config = WorkloadConfig {
                writers,
                duration: Duration::from_secs(seconds),
                record_bytes,
                chunk_bytes,
                prefix,
                first_writer,
            };
            let stop = Arc::new(AtomicBool::new(false));
            let stopper = Arc::clone(&stop);
            tokio::spawn(async move {
                if until_stopped().await.is_ok() {
                    stopper.store(true, Ordering::SeqCst);
                }
            });
            let started = Instant::now();
            let stats = workload::run(client, config, sink(history.as_ref())?, stop).await;
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let appends = stats.acked_appends.load(Ordering::Relaxed);
            println!(
                "{}",
                serde_json::json!({
                    "seconds": secs,
                    "acknowledged_writes": stats.acked_writes.load(Ordering::Relaxed),
                    "appends": appends,
                    "appends_per_second": appends as f64 / secs,
                    "failed": stats.failed.load(Ordering::Relaxed),
                    "chunks_created": stats.chunks.load(Ordering::Relaxed),
                })
            );
        }
        Cmd::Status { masters } => {
            let client = GfsClient::new(masters);
            let s = client.status().await?;
            println!(
                "{}",
                serde_json::json!({
                    "master": s.master_id, "is_master": s.is_master,
                    "chunks_known": s.chunks_known, "reassignments": s.reassignments,
                    "recalls": s.recalls, "re_replications": s.re_replications,
                })
            );
            for c in s.chunks {
                let replicas: Vec<_> = c.replicas.iter().map(|r| r.server_id.clone()).collect();
                let primary_id = c
                    .replicas
                    .iter()
                    .find(|r| r.address == c.primary)
                    .map(|r| r.server_id.clone())
                    .unwrap_or_default();
                println!(
                    "{}",
                    serde_json::json!({
                        "chunk": c.chunk, "version": c.version, "primary": c.primary,
                        "primary_id": primary_id, "replicas": replicas,
                    })
                );
            }
        }
        Cmd::Recall {
            masters,
            chunk,
            reason,
            prefer,
        } => {
            let v = GfsClient::new(masters)
                .recall(&chunk, &reason, &prefer)
                .await?;
            println!(
                "{}",
                serde_json::json!({"chunk": chunk, "recalled_version": v})
            );
        }
        Cmd::Check { history, data } => {
            let (events, skipped) = history::read_files(&history)?;
            let mut dirs = Vec::new();
            for d in data {
                let (id, dir) = d
                    .split_once('=')
                    .with_context(|| format!("--data wants ID=DIR, got {d}"))?;
                dirs.push((id.to_string(), PathBuf::from(dir)));
            }
            let replicas = checker::read_replicas(&dirs)?;
            let summary = checker::check(&events, &replicas);
            let mut v = serde_json::to_value(&summary)?;
            v["events"] = events.len().into();
            v["unparsable_lines"] = skipped.into();
            println!("{v}");
            if !summary.violations.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
