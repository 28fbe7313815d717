//! Events emitted by apply, for watchers. Each carries the revision (log
//! index) that produced it, so a watch can resume from a revision.

use serde::{Deserialize, Serialize};

use crate::types::{FencingToken, LogIndex, Mode, SessionId};

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A lease was granted (directly or to a waiter).
    Acquired,
    /// The holder released it, or closed its session.
    Released,
    /// Its session expired.
    Expired,
    /// Someone asked the holder to give it up.
    Recalled,
}

/// One change to one lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Log index of the entry that caused it.
    pub revision: LogIndex,
    /// What happened.
    pub kind: EventKind,
    /// The resource.
    pub resource: String,
    /// The session holding (or having held) the lease.
    pub session: SessionId,
    /// Mode of the lease.
    pub mode: Mode,
    /// Fencing token of the lease.
    pub token: FencingToken,
}
