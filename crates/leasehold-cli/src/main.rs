//! `leasehold`: the one binary of Leasehold.
//!
//! # Layout
//! - [`auth`]: which token client commands send, the local admin token,
//!   `auth token|hash`.
//! - [`config`]: `server`'s settings from flags, `LEASEHOLD_*` and a TOML
//!   file.
//! - [`server`]: `server` (one node until SIGINT/SIGTERM) and `dev` (a
//!   three-node cluster in this process).
//! - [`certs`]: `certs init`: a throwaway CA, node and client certificates.
//! - [`commands`]: the client commands (acquire, release, get, list, watch,
//!   recall, status, membership) and their shared connection flags.
//! - [`operator`]: `config get|set`, `session list|close|keepalive`.
//! - [`run`]: `run`: a command under a lease, stopped when it is lost.
//! - [`output`]: tables and JSON lines.
//! - [`duration`]: `10s`, `1.5s`, `500ms`, `2m` on the command line.
//! - [`exit`]: exit codes by gRPC code.
//! - [`signal`]: waiting for SIGINT/SIGTERM.

mod auth;
mod certs;
mod commands;
mod config;
mod duration;
mod exit;
mod member;
mod operator;
mod output;
mod run;
mod server;
mod signal;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::ConnArgs;

/// The process allocator: mimalloc returns freed pages to the OS (glibc's
/// malloc kept a flood's buffers resident; see ADR 0009).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use crate::output::Format;

/// Leasehold: a Raft-replicated lease service.
#[derive(Parser, Debug)]
#[command(name = "leasehold", version, about, after_help = exit::HELP)]
struct Cli {
    /// Connection and output flags, accepted before or after the
    /// subcommand (`server` and `dev` ignore them).
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node of a cluster in the foreground.
    Server(Box<server::ServerArgs>),
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
    /// Replace the cluster's whole voter set (see `member` for one at a time)
    Membership(commands::MembershipArgs),
    /// Add, remove, list or replace members one at a time.
    Member(member::MemberArgs),
    /// Show every endpoint's view of the cluster.
    Status(commands::StatusArgs),
    /// Run a command while holding a lease; stop it if the lease is lost.
    Run(run::RunArgs),
    /// Show or change the replicated lease configuration.
    Config(operator::ConfigArgs),
    /// List, close or keep alive sessions.
    Session(operator::SessionArgs),
    /// Generate a throwaway CA and node and client certificates (TLS for
    /// development clusters).
    Certs(certs::CertsArgs),
    /// Make bearer tokens and their token_sha256 for the servers' config.
    Auth(auth::AuthArgs),
    /// Print a shell completion script (e.g. `leasehold completion bash >
    /// ~/.local/share/bash-completion/completions/leasehold`).
    Completion(CompletionArgs),
}

/// Flags of `leasehold completion`.
#[derive(clap::Args, Debug)]
struct CompletionArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::from(exit::OK);
            }
            if wants_json(std::env::args_os()) {
                eprintln!(
                    "{}",
                    exit::json_error(&usage_message(&e.to_string()), "usage", exit::USAGE)
                );
            } else {
                let _ = e.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    let default_filter = match cli.command {
        Cmd::Server(_) | Cmd::Dev(_) => "info,openraft=warn",
        Cmd::Certs(_) => "warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person watching: not into files or pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let format = cli.conn.output;
    // A server's configuration is checked before anything starts: every
    // problem on a line of its own, exit 2.
    let command = match cli.command {
        Cmd::Server(args) => {
            let args = *args;
            match config::load(args.settings, args.config, &config::process_env()) {
                Ok(c) => Command::Server(Box::new(c)),
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
    match run_command(command, cli.conn) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::for_error(&e);
            match format {
                Format::Table => eprintln!("leasehold: {}", one_line(&e)),
                Format::Json => eprintln!(
                    "{}",
                    exit::json_error(&one_line(&e), exit::code_name(&e), code)
                ),
            }
            ExitCode::from(code)
        }
    }
}

/// Whether the command line asks for JSON output (looked up by hand: used
/// when clap could not parse it).
fn wants_json<I: IntoIterator<Item = OsString>>(args: I) -> bool {
    let mut previous_was_output = false;
    for arg in args {
        let Some(arg) = arg.to_str() else {
            previous_was_output = false;
            continue;
        };
        if arg == "--" {
            return false;
        }
        if arg == "--output=json" || (previous_was_output && arg == "json") {
            return true;
        }
        previous_was_output = arg == "--output";
    }
    false
}

/// The first line of a clap error, without its `error: ` prefix.
fn usage_message(rendered: &str) -> String {
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("usage error");
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    // Messages may quote what a server sent: no control character reaches
    // the terminal (a newline becomes a space first, to keep one line).
    output::printable(&format!("{e:#}").replace('\n', " ")).into_owned()
}

/// A command ready to run: a server with its checked configuration, or
/// any other command as parsed.
enum Command {
    Server(Box<config::ServerConfig>),
    Other(Cmd),
}

fn run_command(command: Command, conn: ConnArgs) -> anyhow::Result<u8> {
    if let Command::Other(Cmd::Completion(args)) = &command {
        let mut out = std::io::stdout().lock();
        clap_complete::generate(args.shell, &mut Cli::command(), "leasehold", &mut out);
        std::io::Write::flush(&mut out)?;
        return Ok(exit::OK);
    }
    let command = match command {
        Command::Other(Cmd::Certs(args)) => return certs::run(args),
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let command = match command {
        Command::Server(config) => {
            return runtime
                .block_on(server::run_server(*config))
                .map(|()| exit::OK)
        }
        Command::Other(command) => command,
    };
    runtime.block_on(async move {
        match command {
            Cmd::Server(_) => anyhow::bail!("the server's configuration was not loaded"),
            Cmd::Dev(args) => server::run_dev(args).await.map(|()| exit::OK),
            Cmd::Acquire(args) => commands::acquire(args, &conn).await,
            Cmd::Release(args) => commands::release(args, &conn).await,
            Cmd::Get(args) => commands::get(args, &conn).await,
            Cmd::List(args) => commands::list(args, &conn).await,
            Cmd::Watch(args) => commands::watch(args, &conn).await,
            Cmd::Recall(args) => commands::recall(args, &conn).await,
            Cmd::Membership(args) => commands::membership(args, &conn).await,
            Cmd::Member(args) => member::member_command(args, &conn).await,
            Cmd::Status(args) => commands::status(args, &conn).await,
            Cmd::Run(args) => run::run(args, &conn).await,
            Cmd::Config(args) => operator::config(args, &conn).await,
            Cmd::Session(args) => operator::session(args, &conn).await,
            Cmd::Auth(args) => auth::auth(args, conn.output),
            Cmd::Completion(_) | Cmd::Certs(_) => Ok(exit::OK),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(cli.command, Cmd::Get(_)));
        assert_eq!(cli.conn.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.conn.output, output::Format::Json);
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        for args in [
            &[
                "leasehold",
                "--endpoints",
                "a:1",
                "--output",
                "json",
                "--timeout",
                "1.5s",
                "session",
                "list",
            ][..],
            &[
                "leasehold",
                "session",
                "list",
                "--endpoints",
                "a:1",
                "--output",
                "json",
                "--timeout",
                "1.5s",
            ],
            &[
                "leasehold",
                "session",
                "--output",
                "json",
                "list",
                "--endpoints=a:1",
                "--timeout=1500ms",
            ],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            assert_eq!(cli.conn.endpoints, ["a:1"], "{args:?}");
            assert_eq!(cli.conn.output, output::Format::Json, "{args:?}");
            assert_eq!(
                cli.conn.timeout,
                std::time::Duration::from_millis(1_500),
                "{args:?}"
            );
        }
    }

    #[test]
    fn json_is_found_before_parsing() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(os(&["leasehold", "get", "--output", "json"])));
        assert!(wants_json(os(&["leasehold", "--output=json", "get"])));
        assert!(!wants_json(os(&["leasehold", "get", "json"])));
        assert!(!wants_json(os(&[
            "leasehold",
            "run",
            "r",
            "--",
            "--output",
            "json"
        ])));
        assert_eq!(
            usage_message("error: unexpected argument '--x' found\n\nUsage: ..."),
            "unexpected argument '--x' found"
        );
    }

    #[test]
    fn acquire_in_a_session_excludes_ttl_and_holder() {
        let handle = format!("12.{}", "ab".repeat(16));
        let cli = Cli::try_parse_from(["leasehold", "acquire", "r", "--session", &handle])
            .expect("parses");
        let Cmd::Acquire(args) = cli.command else {
            panic!("not acquire");
        };
        assert_eq!(args.session.map(|h| h.id), Some(12));
        for extra in [["--ttl", "5s"], ["--holder", "x"]] {
            let mut argv = vec!["leasehold", "acquire", "r", "--session", &handle];
            argv.extend(extra);
            let e = Cli::try_parse_from(argv).expect_err("conflict");
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        }
    }

    #[test]
    fn config_set_needs_a_field() {
        let e = Cli::try_parse_from(["leasehold", "config", "set"]).expect_err("no field");
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
        let cli = Cli::try_parse_from([
            "leasehold",
            "config",
            "set",
            "--ttl-min",
            "2.5s",
            "--drift-ppm",
            "20000",
        ])
        .expect("parses");
        let Cmd::Config(args) = cli.command else {
            panic!("not config");
        };
        let operator::ConfigCmd::Set(set) = args.command else {
            panic!("not set");
        };
        assert_eq!(set.ttl_min, Some(std::time::Duration::from_millis(2_500)));
        assert_eq!(set.drift_ppm, Some(20_000));
        assert_eq!(set.ttl_max, None);
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
