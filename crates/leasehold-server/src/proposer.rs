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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use leasehold_core::limits::BATCH_COMMANDS_MAX;
use leasehold_core::{Command, LogIndex, Response};
use leasehold_raft::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{ProposeError, RaftWriteError};

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
        // Submitted here, in queue order (only the answer is awaited in
        // its own task): entries reach the log in the order their commands
        // were queued, even with two in flight.
        let started = std::time::Instant::now();
        let (replies, submitted) = submit(&raft, group).await;
        tokio::spawn(async move {
            let commands = replies.len();
            answer(replies, submitted).await;
            tracing::trace!(
                target: leasehold_raft::STAGE_TARGET,
                stage = "propose",
                commands,
                elapsed_us = started.elapsed().as_micros() as u64,
            );
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

/// The answer of one submitted entry, to await.
type Submitted = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Hands the group to Raft as one entry (a lone command as itself) without
/// waiting for it to commit; returns the callers in order.
async fn submit(raft: &Raft, group: Vec<Proposal>) -> (Vec<oneshot::Sender<Answer>>, Submitted) {
    let (mut commands, replies): (Vec<Command>, Vec<oneshot::Sender<Answer>>) =
        group.into_iter().map(|p| (p.command, p.reply)).unzip();
    let command = match commands.pop() {
        Some(only) if commands.is_empty() => only,
        Some(last) => {
            commands.push(last);
            Command::Batch(commands)
        }
        None => {
            let empty: Answer = Err(ProposeError::Fatal("an empty group".into()));
            return (replies, Box::pin(std::future::ready(empty)));
        }
    };
    let submitted: Submitted = match raft.client_write_ff(command).await {
        Ok(receiver) => Box::pin(async move {
            match receiver.await {
                Ok(Ok(written)) => Ok((written.log_id.index, written.data)),
                Ok(Err(e)) => Err(ProposeError::from(RaftWriteError::APIError(e))),
                Err(_) => Err(ProposeError::Fatal("raft stopped before answering".into())),
            }
        }),
        Err(fatal) => {
            let failed: Answer = Err(ProposeError::from(RaftWriteError::Fatal(fatal)));
            Box::pin(std::future::ready(failed))
        }
    };
    (replies, submitted)
}

/// Waits for the entry's answer and gives each caller its own.
async fn answer(replies: Vec<oneshot::Sender<Answer>>, submitted: Submitted) {
    let written = submitted.await;
    let count = replies.len();
    match written {
        Ok((index, Response::Batch(responses))) if count > 1 && responses.len() == count => {
            for (reply, response) in replies.into_iter().zip(responses) {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(Ok((index, response)));
            }
        }
        Ok((index, response)) if count == 1 => {
            for reply in replies {
                let _ = reply.send(Ok((index, response.clone())));
            }
        }
        Ok((index, other)) => {
            // The state machine refused the batch as a whole: it checks the
            // batch before applying any of it, so nothing was applied (the
            // proposer keeps to its limits, so this is a bug).
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
