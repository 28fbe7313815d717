//! A named resource: its holders and its FIFO queue of waiters.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::small::SmallMap;
use crate::types::{FencingToken, LogIndex, Mode, SessionId};

/// A recall notice attached to a lease: the service asked the holder to give
/// the lease up early.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallNotice {
    /// Log index of the recall entry (orders notices).
    pub index: LogIndex,
    /// Free text from whoever asked.
    pub reason: String,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Holding session.
    pub session: SessionId,
    /// Mode it is held in.
    pub mode: Mode,
    /// Fencing token: the position of the granting command.
    pub token: FencingToken,
    /// Holder metadata set at acquire.
    pub metadata: Vec<u8>,
    /// Set once someone recalled the lease.
    pub recall: Option<Box<RecallNotice>>,
    /// Position of the command that queued the wait this lease was granted
    /// to (None: granted at once). Lets an abandoned wait that lost the
    /// race to its grant release exactly that lease.
    pub queued_at: Option<LogIndex>,
}

/// A queued acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// Waiting session.
    pub session: SessionId,
    /// Requested mode.
    pub mode: Mode,
    /// Metadata to attach once granted.
    pub metadata: Vec<u8>,
    /// Position of the command that queued it (FIFO order, diagnostics).
    pub queued_at: LogIndex,
}

/// What is left of a wait whose call went away (see
/// [`crate::LeaseState::abandoned_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbandonedWait {
    /// Still queued.
    Queued,
    /// Granted from that wait: a lease its client never learned of.
    Granted,
}

/// Replicated state of one resource. A resource with no holders and no
/// waiters is not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Current holders by session (almost always one: see [`SmallMap`]).
    pub holders: SmallMap<SessionId, Lease>,
    /// Waiters in arrival order.
    pub waiters: VecDeque<Waiter>,
}

impl Resource {
    /// True when nothing holds or waits for it (it can be dropped).
    pub fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }

    /// Whether a lease in `mode` could be granted right now, ignoring the queue.
    pub fn admits(&self, mode: Mode) -> bool {
        self.holders.values().all(|l| mode.compatible_with(l.mode))
    }

    /// The exclusive holder, if any.
    pub fn exclusive_holder(&self) -> Option<&Lease> {
        self.holders.values().find(|l| l.mode == Mode::Exclusive)
    }

    /// Position (0-based) of `session` in the wait queue.
    pub fn waiter_position(&self, session: SessionId) -> Option<usize> {
        self.waiters.iter().position(|w| w.session == session)
    }
}
