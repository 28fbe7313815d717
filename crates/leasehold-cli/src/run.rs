//! `leasehold run`: runs a command while holding a lease, and stops it when
//! the lease is lost or recalled.
//!
//! The command runs in a process group of its own, and stopping it signals
//! the whole group: what the command started (`sh -c 'a & b'`) stops with it
//! instead of going on without the lease.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use leasehold_client::LeaseStatus;
use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::commands::{acquire_options, open_and_acquire, ConnArgs};
use crate::duration::{format_duration, parse_duration};
use crate::exit;
use crate::signal::wait_for_shutdown_signal;

/// Flags of `leasehold run`.
#[derive(Args, Debug)]
#[command(after_help = "\
The command gets LEASEHOLD_FENCING_TOKEN, LEASEHOLD_RESOURCE and LEASEHOLD_SESSION \
in its environment; pass the token to whatever the lease protects. It runs in a \
process group of its own. When the lease is lost (its holder deadline passed \
unrenewed, or the session is gone) or recalled, the whole group (the command and \
every process it started) gets SIGTERM, then SIGKILL after --kill-after. When the \
command exits, the lease is released and `run` exits with its exit code (128+N if \
signal N killed it), unless the lease was lost (exit 9) or recalled (exit 10) \
before it exited: then with that code, even if the command exited 0. SIGINT or \
SIGTERM to `run` stops the command the same way.")]
pub struct RunArgs {
    /// The resource to lease.
    pub resource: String,
    /// Session time-to-live.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub ttl: Duration,
    /// Wait at most this long for the resource (exit 5 when it stays held);
    /// without it, or with 0s, a held resource fails at once (exit 3).
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Shared (reader) lease instead of exclusive.
    #[arg(long)]
    pub shared: bool,
    /// After SIGTERM, wait this long for the command before SIGKILL (e.g.
    /// 5s, 1.5s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub kill_after: Duration,
    /// Client name of the session. Default: leasehold-cli/PID.
    #[arg(long)]
    pub holder: Option<String>,
    /// Text stored with the lease.
    #[arg(long)]
    pub metadata: Option<String>,
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

/// The command's process group, led by the command itself (its pid is the
/// group's id).
#[derive(Debug, Clone, Copy)]
pub struct Group(Pid);

impl Group {
    /// The group `child` leads (it was spawned with `process_group(0)`);
    /// `None` once it has been reaped.
    pub fn of(child: &Child) -> Option<Group> {
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .map(Group)
    }

    /// Sends `signal` to every process of the group.
    fn signal(self, signal: Signal) {
        if let Err(e) = rustix::process::kill_process_group(self.0, signal) {
            tracing::debug!(error = %e, ?signal, "signalling the group failed (already gone?)");
        }
    }

    /// Whether any process of the group is left (unreaped zombies count).
    fn alive(self) -> bool {
        rustix::process::test_kill_process_group(self.0) != Err(Errno::SRCH)
    }

    /// Waits until the group is empty, or `deadline`; whether it emptied.
    async fn emptied_by(self, deadline: Instant) -> bool {
        while self.alive() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Stops `child` and the rest of its process group `group`: SIGTERM to the
/// group, then SIGKILL to it if the command or anything else in the group
/// is still running after `kill_after`; returns the command's status.
pub async fn stop_child(
    child: &mut Child,
    group: Option<Group>,
    kill_after: Duration,
) -> anyhow::Result<ExitStatus> {
    let Some(group) = group else {
        // Already reaped: nothing to signal (its group, if any process of
        // it is left, is no longer known by id).
        return Ok(child.wait().await?);
    };
    group.signal(Signal::TERM);
    let deadline = Instant::now() + kill_after;
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            eprintln!(
                "leasehold: command still running after {}; sending SIGKILL",
                format_duration(kill_after)
            );
            group.signal(Signal::KILL);
            // Also the command itself, should it have left its group.
            child.start_kill().context("SIGKILL")?;
            return Ok(child.wait().await?);
        }
    };
    if !group.emptied_by(deadline).await {
        eprintln!(
            "leasehold: processes the command started still running after {}; sending SIGKILL",
            format_duration(kill_after)
        );
        group.signal(Signal::KILL);
    }
    Ok(status)
}

/// How the lease ended while the command ran, if it did.
fn ended(status: &LeaseStatus) -> Option<u8> {
    match status {
        LeaseStatus::Held => None,
        LeaseStatus::Recalled { .. } => Some(exit::LEASE_RECALLED),
        LeaseStatus::Lost { .. } => Some(exit::LEASE_LOST),
    }
}

/// `leasehold run`.
pub async fn run(args: RunArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let (program, program_args) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let options = acquire_options(args.shared, args.wait, args.metadata.as_deref());
    let (_client, session, lease) = open_and_acquire(
        conn,
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
        // A group of its own, so that stopping it reaches what it started.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = session.close().await;
            return Err(e).with_context(|| format!("starting {program:?}"));
        }
    };
    let group = Group::of(&child);
    let status = tokio::select! {
        status = child.wait() => status.context("waiting for the command")?,
        lost = lease.lost() => {
            let what = match &lost {
                LeaseStatus::Recalled { reason } => format!("recalled ({reason})"),
                LeaseStatus::Lost { why } => format!("lost: {why}"),
                LeaseStatus::Held => "ended".to_string(),
            };
            eprintln!(
                "leasehold: lease on {} {}; stopping {program}",
                crate::output::printable(&args.resource),
                crate::output::printable(&what)
            );
            stop_child(&mut child, group, args.kill_after).await?
        }
        r = wait_for_shutdown_signal() => {
            r?;
            stop_child(&mut child, group, args.kill_after).await?
        }
    };
    // Read before releasing (a release ends the lease too): lost, or else
    // recalled, before the command was done.
    let lease_status = lease.status();
    if lease_status.is_held() {
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e, "release failed; the lease expires after its TTL");
        }
    }
    if let Err(e) = session.close().await {
        tracing::debug!(error = %e, "close failed");
    }
    let code = exit_code(status);
    match ended(&lease_status) {
        Some(ended) => {
            let how = if ended == exit::LEASE_LOST {
                "lost"
            } else {
                "recalled"
            };
            eprintln!(
                "leasehold: {program} exited with {code}; exiting {ended}: the lease on {} was {how}",
                crate::output::printable(&args.resource)
            );
            Ok(ended)
        }
        None => Ok(code),
    }
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
            .process_group(0)
            .spawn()
            .expect("sh runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let group = Group::of(&child);
        let status = stop_child(&mut child, group, Duration::from_millis(200))
            .await
            .expect("stopped");
        assert_eq!(exit_code(status), 137);
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep runs");
        let group = Group::of(&child);
        let status = stop_child(&mut child, group, Duration::from_secs(5))
            .await
            .expect("stopped");
        assert_eq!(exit_code(status), 143);
        assert!(group.is_some_and(|g| !g.alive()));
    }

    #[test]
    fn a_lost_or_recalled_lease_has_its_own_code() {
        assert_eq!(ended(&LeaseStatus::Held), None);
        let recalled = LeaseStatus::Recalled { reason: "x".into() };
        assert_eq!(ended(&recalled), Some(exit::LEASE_RECALLED));
        let lost = LeaseStatus::Lost {
            why: leasehold_client::LostReason::SessionGone,
        };
        assert_eq!(ended(&lost), Some(exit::LEASE_LOST));
    }
}
