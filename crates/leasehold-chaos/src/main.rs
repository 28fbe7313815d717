//! `leasehold-chaos workload …` writes a history; `leasehold-chaos check
//! FILES…` reads histories and nemesis logs, prints a summary and exits 1
//! on any violation. See the library for the parts.

use leasehold_chaos::{checker, report, workload};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Chaos workload and checker for Leasehold.
#[derive(Parser, Debug)]
#[command(name = "leasehold-chaos", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run contending clients against a cluster and write a JSONL history.
    Workload {
        /// Client API endpoints, comma separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
        )]
        endpoints: Vec<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 6)]
        clients: u32,
        /// Contended resources.
        #[arg(long, default_value_t = 3)]
        resources: u32,
        /// Seconds of contention.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Session TTL in ms.
        #[arg(long, default_value_t = 3_000)]
        ttl_ms: u64,
        /// Drift bound the holders assume, ppm.
        #[arg(long, default_value_t = 10_000)]
        drift_ppm: u32,
        /// Chance a holder goes silent after a grant (a paused holder).
        #[arg(long, default_value_t = 0.05)]
        silent_probability: f64,
        /// Seconds every client has to acquire again at the end.
        #[arg(long, default_value_t = 30)]
        liveness_seconds: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Resource name prefix.
        #[arg(long, default_value = "chaos/")]
        prefix: String,
        /// History file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check histories (and nemesis logs); exit 1 on any violation.
    Check {
        /// JSONL files: workload histories and nemesis logs.
        files: Vec<PathBuf>,
        /// Write an HTML report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Title of the report.
        #[arg(long, default_value = "Leasehold chaos run")]
        title: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leasehold-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Workload {
            endpoints,
            clients,
            resources,
            seconds,
            ttl_ms,
            drift_ppm,
            silent_probability,
            liveness_seconds,
            seed,
            prefix,
            out,
        } => {
            let file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let cfg = workload::WorkloadConfig {
                endpoints,
                clients,
                resources,
                duration: Duration::from_secs(seconds),
                ttl_ms,
                drift_ppm,
                margin_ms: 5,
                silent_probability,
                seed,
                liveness_bound: Duration::from_secs(liveness_seconds),
                prefix,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(workload::run(cfg, std::io::BufWriter::new(file)))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check {
            files,
            report,
            title,
        } => {
            let mut records = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                records.extend(
                    checker::parse(&text).with_context(|| format!("parsing {}", f.display()))?,
                );
            }
            let summary = checker::check(&records);
            println!("{}", serde_json::to_string_pretty(&summary)?);
            if let Some(path) = report {
                std::fs::write(&path, report::render(&title, &records, &summary))
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("report: {}", path.display());
            }
            if summary.violations.is_empty() {
                eprintln!("0 violations");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{} violation(s)", summary.violations.len());
                Ok(ExitCode::from(1))
            }
        }
    }
}
