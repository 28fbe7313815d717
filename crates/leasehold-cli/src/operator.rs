//! The operator commands: `config get|set` (the replicated lease
//! configuration) and `session list|close|keepalive`.

use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use leasehold_client::{LeaseConfig, SessionHandle};

use crate::commands::{default_holder, ConnArgs};
use crate::duration::{format_duration, parse_duration};
use crate::exit;
use crate::output;
use crate::signal::wait_for_shutdown_signal;

/// Flags of `leasehold config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCmd,
}

/// `leasehold config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the replicated lease configuration.
    Get,
    /// Change some fields of the lease configuration (the others stay).
    Set(ConfigSetArgs),
}

/// Flags of `leasehold config set`: only the fields given change.
#[derive(Args, Debug, Default)]
#[command(group(ArgGroup::new("fields").required(true).multiple(true)))]
#[command(after_help = "\
Reads the current configuration, changes the fields given and writes it back \
(SetConfig). The service checks the result: ttl-min at least twice the vote \
window, ttl-min at most ttl-max, drift and margins within their limits \
(exit 7 naming the field otherwise).")]
pub struct ConfigSetArgs {
    /// Shortest TTL a session may ask for (e.g. 2s, 1.5s).
    #[arg(long, group = "fields", value_parser = parse_duration)]
    pub ttl_min: Option<Duration>,
    /// Longest TTL a session may ask for (e.g. 5m).
    #[arg(long, group = "fields", value_parser = parse_duration)]
    pub ttl_max: Option<Duration>,
    /// Bound on clock rate error, parts per million (10000 = 1%).
    #[arg(long, group = "fields")]
    pub drift_ppm: Option<u32>,
    /// Margin added to session deadlines at leader takeover (e.g. 500ms).
    #[arg(long, group = "fields", value_parser = parse_duration)]
    pub grace_margin: Option<Duration>,
    /// The cluster-wide vote window W (e.g. 600ms): every node's
    /// election_timeout_ms_max must be at least this.
    #[arg(long, group = "fields", value_parser = parse_duration)]
    pub vote_window: Option<Duration>,
}

/// Whole milliseconds of a duration, saturating.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ConfigSetArgs {
    /// `current` with the fields given changed.
    pub fn apply(&self, current: LeaseConfig) -> LeaseConfig {
        LeaseConfig {
            ttl_ms_min: self.ttl_min.map_or(current.ttl_ms_min, ms),
            ttl_ms_max: self.ttl_max.map_or(current.ttl_ms_max, ms),
            drift_ppm: self.drift_ppm.unwrap_or(current.drift_ppm),
            grace_margin_ms: self.grace_margin.map_or(current.grace_margin_ms, ms),
            vote_window_ms: self.vote_window.map_or(current.vote_window_ms, ms),
        }
    }
}

/// `leasehold config get|set`.
pub async fn config(args: ConfigArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    let current = client
        .lease_config()
        .await
        .context("reading the configuration")?;
    let shown = match args.command {
        ConfigCmd::Get => current,
        ConfigCmd::Set(set) => client
            .set_config(&set.apply(current))
            .await
            .context("setting the configuration")?,
    };
    output::print(
        conn.output,
        output::CONFIG_HEADER,
        &[output::config(&shown)],
    )?;
    Ok(exit::OK)
}

/// Flags of `leasehold session`.
#[derive(Args, Debug)]
pub struct SessionArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SessionCmd,
}

/// `leasehold session` subcommands.
#[derive(Subcommand, Debug)]
pub enum SessionCmd {
    /// List the open sessions: id, client, TTL, remaining TTL on the
    /// leader, what each holds and waits for (never their secrets).
    List,
    /// Close a session: its leases are released, its waits dropped.
    Close(SessionCloseArgs),
    /// Keep an existing session alive (e.g. one `acquire` printed) until
    /// Ctrl-C or --for; then stop renewing it (it expires after its TTL).
    Keepalive(SessionKeepaliveArgs),
}

/// Flags of `leasehold session close`.
#[derive(Args, Debug)]
pub struct SessionCloseArgs {
    /// The session's handle, `<id>.<secret>`, as acquire printed it.
    pub handle: SessionHandle,
}

/// Flags of `leasehold session keepalive`.
#[derive(Args, Debug)]
#[command(after_help = "\
Renews the session every third of its TTL, like the holder that opened it \
would. Exits 0 on Ctrl-C or when --for is over (the session then expires \
after its TTL unless someone else renews it), 4 if the session is already \
gone, 8 if the secret is wrong, 9 if it is lost while kept (closed, expired, \
or not renewed in time).")]
pub struct SessionKeepaliveArgs {
    /// The session's handle, `<id>.<secret>`, as acquire printed it.
    pub handle: SessionHandle,
    /// Stop after this long (e.g. 30s, 1.5m); default: until Ctrl-C.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// `leasehold session list|close|keepalive`.
pub async fn session(args: SessionArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    match args.command {
        SessionCmd::List => {
            let sessions = client.list_sessions().await?;
            let records: Vec<_> = sessions.iter().map(output::session).collect();
            output::print(conn.output, output::SESSION_HEADER, &records)?;
            Ok(exit::OK)
        }
        SessionCmd::Close(close) => {
            let released = client.close_session(&close.handle).await?;
            let record = output::Record {
                cells: vec![
                    close.handle.id.to_string(),
                    if released.is_empty() {
                        "-".into()
                    } else {
                        released.join(",")
                    },
                ],
                json: serde_json::json!({
                    "session_id": close.handle.id,
                    "closed": true,
                    "released": released,
                }),
            };
            output::print(conn.output, &["CLOSED", "RELEASED"], &[record])?;
            Ok(exit::OK)
        }
        SessionCmd::Keepalive(keep) => {
            let session = client
                .adopt_session(keep.handle)
                .await
                .with_context(|| format!("session {}", keep.handle.id))?;
            let record = output::Record {
                cells: vec![session.id().to_string(), format_duration(session.ttl())],
                json: serde_json::json!({
                    "session_id": session.id(),
                    "ttl_ms": ms(session.ttl()),
                    "kept": true,
                }),
            };
            output::print(conn.output, &["KEPT", "TTL"], &[record])?;
            let until = match keep.duration {
                Some(d) => format!("for {}", format_duration(d)),
                None => "until Ctrl-C".to_string(),
            };
            eprintln!("leasehold: keeping session {} alive {until}", session.id());
            let time_up = async {
                match keep.duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let code = tokio::select! {
                () = time_up => exit::OK,
                r = wait_for_shutdown_signal() => { r?; exit::OK }
                why = session.lost() => {
                    eprintln!("leasehold: session {} lost: {why}", session.id());
                    exit::LEASE_LOST
                }
            };
            // Not ours to close: it expires after its TTL unless its owner
            // renews it.
            session.detach();
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_set_changes_only_the_fields_given() {
        let current = LeaseConfig {
            ttl_ms_min: 2_000,
            ttl_ms_max: 300_000,
            drift_ppm: 10_000,
            grace_margin_ms: 500,
            vote_window_ms: 600,
        };
        let set = ConfigSetArgs {
            ttl_min: Some(Duration::from_millis(1_500)),
            drift_ppm: Some(20_000),
            ..Default::default()
        };
        assert_eq!(
            set.apply(current),
            LeaseConfig {
                ttl_ms_min: 1_500,
                drift_ppm: 20_000,
                ..current
            }
        );
        assert_eq!(ConfigSetArgs::default().apply(current), current);
    }
}
