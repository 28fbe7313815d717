//! `leasehold run`: runs a command while holding a lease, and stops it when
//! the lease is lost or recalled.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use leasehold_client::LeaseStatus;
use tokio::process::{Child, Command};

use crate::commands::{acquire_options, open_and_acquire, ConnArgs};
use crate::duration::parse_duration;
use crate::signal::wait_for_shutdown_signal;

/// Flags of `leasehold run`.
#[derive(Args, Debug)]
#[command(after_help = "\
The command gets LEASEHOLD_FENCING_TOKEN, LEASEHOLD_RESOURCE and LEASEHOLD_SESSION \
in its environment; pass the token to whatever the lease protects. When the lease is \
lost (its holder deadline passed unrenewed, or the session is gone) or recalled, the \
command gets SIGTERM, then SIGKILL after --kill-after. When it exits, the lease is \
released and `run` exits with its exit code (128+N if signal N killed it); SIGINT or \
SIGTERM to `run` stops the command the same way.")]
pub struct RunArgs {
    /// The resource to lease.
    pub resource: String,
    /// Session time-to-live.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub ttl: Duration,
    /// Wait at most this long for the resource; without it a held resource
    /// fails at once (exit 3).
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Shared (reader) lease instead of exclusive.
    #[arg(long)]
    pub shared: bool,
    /// After SIGTERM, wait this long for the command before SIGKILL.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub kill_after: Duration,
    /// Client name of the session. Default: leasehold-cli/PID.
    #[arg(long)]
    pub holder: Option<String>,
    /// Text stored with the lease.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Connection and output.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

/// The exit code `run` reports for the command's status: its code, or
/// 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    match status.signal() {
        Some(sig) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        None => 1,
    }
}

/// Sends SIGTERM to `child`, then SIGKILL if it has not exited after
/// `kill_after`; returns its status.
pub async fn stop_child(child: &mut Child, kill_after: Duration) -> anyhow::Result<ExitStatus> {
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            tracing::debug!(error = %e, "SIGTERM failed (already exited?)");
        }
    }
    match tokio::time::timeout(kill_after, child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            eprintln!("leasehold: command still running after {kill_after:?}; sending SIGKILL");
            child.start_kill().context("SIGKILL")?;
            Ok(child.wait().await?)
        }
    }
}

/// `leasehold run`.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let (program, program_args) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let options = acquire_options(args.shared, args.wait, args.metadata.as_deref());
    let (_client, session, lease) = open_and_acquire(
        &args.conn,
        args.holder.as_deref(),
        args.ttl,
        &args.resource,
        options,
    )
    .await?;
    tracing::info!(resource = %args.resource, token = lease.fencing_token(), "lease acquired");
    let spawned = Command::new(program)
        .args(program_args)
        .env("LEASEHOLD_FENCING_TOKEN", lease.fencing_token().to_string())
        .env("LEASEHOLD_RESOURCE", &args.resource)
        .env("LEASEHOLD_SESSION", session.id().to_string())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = session.close().await;
            return Err(e).with_context(|| format!("starting {program:?}"));
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.context("waiting for the command")?,
        lost = lease.lost() => {
            let what = match &lost {
                LeaseStatus::Recalled { reason } => format!("recalled ({reason})"),
                LeaseStatus::Lost { why } => format!("lost: {why}"),
                LeaseStatus::Held => "ended".to_string(),
            };
            eprintln!("leasehold: lease on {} {what}; stopping {program}", args.resource);
            stop_child(&mut child, args.kill_after).await?
        }
        r = wait_for_shutdown_signal() => {
            r?;
            stop_child(&mut child, args.kill_after).await?
        }
    };
    if lease.status().is_held() {
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e, "release failed; the lease expires after its TTL");
        }
    }
    if let Err(e) = session.close().await {
        tracing::debug!(error = %e, "close failed");
    }
    Ok(exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        // Killed by SIGTERM (15) / SIGKILL (9).
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    #[tokio::test]
    async fn stop_child_escalates_to_sigkill() {
        // A child that ignores SIGTERM.
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .spawn()
            .expect("sh runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = stop_child(&mut child, Duration::from_millis(200))
            .await
            .expect("stopped");
        assert_eq!(exit_code(status), 137);
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let status = stop_child(&mut child, Duration::from_secs(5))
            .await
            .expect("stopped");
        assert_eq!(exit_code(status), 143);
    }
}
