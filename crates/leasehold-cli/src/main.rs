//! `leasehold`: the one binary of Leasehold.
//!
//! # Layout
//! - [`config`]: `server`'s settings from flags, `LEASEHOLD_*` and a TOML
//!   file.
//! - [`server`]: `server` (one node until SIGINT/SIGTERM) and `dev` (a
//!   three-node cluster in this process).
//! - [`commands`]: the client commands (acquire, release, get, list, watch,
//!   recall, status) and their shared connection flags.
//! - [`run`]: `run`: a command under a lease, stopped when it is lost.
//! - [`output`]: tables and JSON lines.
//! - [`duration`]: `10s`, `500ms`, `2m` on the command line.
//! - [`exit`]: exit codes by gRPC code.
//! - [`signal`]: waiting for SIGINT/SIGTERM.

mod commands;
mod config;
mod duration;
mod exit;
mod output;
mod run;
mod server;
mod signal;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Leasehold: a Raft-replicated lease service.
#[derive(Parser, Debug)]
#[command(name = "leasehold", version, about, after_help = exit::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node of a cluster in the foreground.
    Server(server::ServerArgs),
    /// Run a local three-node cluster in this process (Ctrl-C stops it).
    Dev(server::DevArgs),
    /// Acquire a lease and print its fencing token.
    Acquire(commands::AcquireArgs),
    /// Release a lease held by a session.
    Release(commands::ReleaseArgs),
    /// Show the holders and waiters of a resource.
    Get(commands::GetArgs),
    /// List resources by prefix.
    List(commands::ListArgs),
    /// Print lease events by prefix until Ctrl-C.
    Watch(commands::WatchArgs),
    /// Ask the holders of a resource to give it up.
    Recall(commands::RecallArgs),
    /// Replace the cluster's voters (add or remove nodes)
    Membership(commands::MembershipArgs),
    /// Show every endpoint's view of the cluster.
    Status(commands::StatusArgs),
    /// Run a command while holding a lease; stop it if the lease is lost.
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let default_filter = match cli.command {
        Cmd::Server(_) | Cmd::Dev(_) => "info,openraft=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    // A server's configuration is checked before anything starts: every
    // problem on a line of its own, exit 2.
    let command = match cli.command {
        Cmd::Server(args) => {
            match config::load(args.settings, args.config, &config::process_env()) {
                Ok(c) => Command::Server(c),
                Err(errors) => {
                    for e in errors {
                        eprintln!("leasehold: config error: {e}");
                    }
                    return ExitCode::from(exit::USAGE);
                }
            }
        }
        other => Command::Other(other),
    };
    match run_command(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("leasehold: {}", one_line(&e));
            ExitCode::from(exit::for_error(&e))
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// A command ready to run: a server with its checked configuration, or
/// any other command as parsed.
enum Command {
    Server(config::ServerConfig),
    Other(Cmd),
}

fn run_command(command: Command) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let command = match command {
        Command::Server(config) => {
            return runtime
                .block_on(server::run_server(config))
                .map(|()| exit::OK)
        }
        Command::Other(command) => command,
    };
    runtime.block_on(async move {
        match command {
            Cmd::Server(_) => anyhow::bail!("the server's configuration was not loaded"),
            Cmd::Dev(args) => server::run_dev(args).await.map(|()| exit::OK),
            Cmd::Acquire(args) => commands::acquire(args).await,
            Cmd::Release(args) => commands::release(args).await,
            Cmd::Get(args) => commands::get(args).await,
            Cmd::List(args) => commands::list(args).await,
            Cmd::Watch(args) => commands::watch(args).await,
            Cmd::Recall(args) => commands::recall(args).await,
            Cmd::Membership(args) => commands::membership(args).await,
            Cmd::Status(args) => commands::status(args).await,
            Cmd::Run(args) => run::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_dashes() {
        let cli = Cli::try_parse_from([
            "leasehold",
            "run",
            "res",
            "--ttl",
            "2s",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .expect("parses");
        let Cmd::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);
        assert_eq!(args.ttl, std::time::Duration::from_secs(2));
        assert!(Cli::try_parse_from(["leasehold", "run", "res"]).is_err());
    }

    #[test]
    fn endpoints_split_on_commas() {
        let cli = Cli::try_parse_from([
            "leasehold",
            "get",
            "r",
            "--endpoints",
            "a:1,b:2",
            "--output",
            "json",
        ])
        .expect("parses");
        let Cmd::Get(args) = cli.command else {
            panic!("not get");
        };
        assert_eq!(args.conn.endpoints, ["a:1", "b:2"]);
        assert_eq!(args.conn.output, output::Format::Json);
    }

    #[test]
    fn server_help_documents_the_precedence_and_every_key() {
        let mut cmd = Cli::command();
        let server = cmd
            .find_subcommand_mut("server")
            .expect("server subcommand");
        let help = server.render_long_help().to_string();
        assert!(
            help.contains("flags > environment (LEASEHOLD_*) > config file"),
            "{help}"
        );
        for (_, key, var, flag) in config::KEYS {
            assert!(help.contains(&format!("file: {key};")), "{key} missing");
            assert!(help.contains(&format!("env: {var}")), "{var} missing");
            assert!(help.contains(flag), "{flag} missing");
        }
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = Cli::try_parse_from(["leasehold", "acquire", "r", "--ttl", "ten"])
            .expect_err("bad duration");
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
    }
}
