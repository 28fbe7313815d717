//! Group commit of proposals: many concurrent commands, one Raft entry.
//!
//! openraft 0.9 appends each `client_write` as its own log entry and waits,
//! inside its core task, for that append to be flushed before it does
//! anything else (the leader replicates only afterwards). One fsync per
//! command, in series, capped a node at about one command per flush however
//! many clients wrote at once (measured: leader flushes ≈ entries under 32
//! clients; see `docs/adr/0003-group-commit.md`).
//!
//! The [`Proposer`] queues commands and keeps at most
//! [`PROPOSALS_IN_FLIGHT_MAX`] entries in flight: while they commit, new
//! commands wait in the queue, and the next entry takes every command
//! waiting (up to [`BATCH_COMMANDS_MAX`]) as one [`Command::Batch`]. A
//! lone command goes out at once, as itself: no added latency when the
//! node is idle. Each command's answer is its own; an error of the entry
//! (not the leader, fatal) is every command's error.

use std::sync::Arc;

use leasehold_core::limits::BATCH_COMMANDS_MAX;
use leasehold_core::{Command, LogIndex, Response};
use leasehold_raft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::ProposeError;

/// Entries proposed and not yet answered, at most. Two keep the log busy:
/// one commits while the next collects commands.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

/// Commands waiting for an entry before `propose` callers wait to queue.
const QUEUE_COMMANDS_MAX: usize = 4 * BATCH_COMMANDS_MAX;

/// The answer to one proposed command: the index of its entry and the
/// state machine's response.
type Answer = Result<(LogIndex, Response), ProposeError>;

/// One queued command and where its answer goes.
struct Proposal {
    /// The command (never a batch).
    command: Command,
    /// The caller, if it still waits.
    reply: oneshot::Sender<Answer>,
}

/// Handle on the group-commit task; clones share it.
#[derive(Clone)]
pub struct Proposer {
    /// Queue of the task.
    tx: mpsc::Sender<Proposal>,
    /// Raft, for commands that must not be batched (batches themselves).
    raft: Raft,
}

impl Proposer {
    /// Starts the task on the current tokio runtime. It ends when every
    /// handle is dropped.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_COMMANDS_MAX);
        tokio::spawn(run(raft.clone(), rx));
        Proposer { tx, raft }
    }

    /// Replicates `command` (alone or with others in one entry) and returns
    /// the index of its entry and its response. Only the leader accepts
    /// proposals. A caller that stops waiting does not withdraw the command.
    pub async fn propose(&self, command: Command) -> Answer {
        if matches!(command, Command::Batch(_)) {
            return write_one(&self.raft, command).await;
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Proposal { command, reply })
            .await
            .map_err(|_| ProposeError::Fatal("the proposer stopped".into()))?;
        answer
            .await
            .map_err(|_| ProposeError::Fatal("the proposer dropped a command".into()))?
    }
}

/// The task: one entry per group of waiting commands, at most
/// [`PROPOSALS_IN_FLIGHT_MAX`] entries in flight.
async fn run(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    loop {
        // Take a slot first: while none is free, commands gather in the queue.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut group = vec![first];
        while group.len() < BATCH_COMMANDS_MAX {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            write_group(&raft, group).await;
            drop(slot);
        });
    }
    tracing::debug!("proposer stopped: every handle was dropped");
}

/// Proposes one command as its own entry.
async fn write_one(raft: &Raft, command: Command) -> Answer {
    let written = raft.client_write(command).await?;
    Ok((written.log_id.index, written.data))
}

/// Proposes a group as one entry (a lone command as itself) and answers
/// every caller.
async fn write_group(raft: &Raft, mut group: Vec<Proposal>) {
    let started = std::time::Instant::now();
    let commands = group.len();
    write_entry(raft, &mut group).await;
    tracing::trace!(
        target: leasehold_raft::STAGE_TARGET,
        stage = "propose",
        commands,
        elapsed_us = started.elapsed().as_micros() as u64,
    );
}

/// Writes the group's entry and answers its callers.
async fn write_entry(raft: &Raft, group: &mut Vec<Proposal>) {
    if group.len() == 1 {
        if let Some(one) = group.pop() {
            // The caller may have given up waiting; nothing to do then.
            let _ = one.reply.send(write_one(raft, one.command).await);
        }
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<Answer>>) =
        group.drain(..).map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    match write_one(raft, Command::Batch(commands)).await {
        Ok((index, Response::Batch(responses))) if responses.len() == count => {
            tracing::trace!(index, count, "proposed a batch");
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok((index, response)));
            }
        }
        Ok((index, other)) => {
            // The state machine refused the batch as a whole (it never
            // should: the proposer respects its limits); each caller learns
            // why, and nothing was applied.
            tracing::error!(index, count, response = ?other, "a batch was refused whole");
            for reply in replies {
                let _ = reply.send(Ok((index, other.clone())));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
