//! What applying one command produced: the answer to the proposer, the
//! events for watchers, and the keys persistence must rewrite.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::LeaseConfig;
use crate::event::Event;
use crate::rejection::Rejection;
use crate::resource::Lease;
use crate::types::{LogIndex, SessionId, SessionSecret};

/// A lease as answered to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The resource.
    pub resource: String,
    /// The lease.
    pub lease: Lease,
}

/// The answer to the proposer of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries.
    Noop,
    /// A session was opened (or found: a retry of the request that opened
    /// it).
    SessionOpened {
        /// Its id.
        session: SessionId,
        /// Its TTL.
        ttl_ms: u64,
        /// Its secret, for the client that opened it.
        secret: SessionSecret,
    },
    /// A session was closed; it released these resources.
    SessionClosed {
        /// Resources released.
        released: Vec<String>,
    },
    /// The lease is held (newly, or already held by this session).
    Acquired {
        /// Session holding it (new when the request made a private session).
        session: SessionId,
        /// That session's secret.
        secret: SessionSecret,
        /// The lease.
        grant: Grant,
        /// False when the session already held it (idempotent retry).
        newly_granted: bool,
    },
    /// The request is queued.
    Queued {
        /// Session waiting (new when the request made a private session).
        session: SessionId,
        /// That session's secret.
        secret: SessionSecret,
        /// Position of the command that queued the wait.
        queued_at: LogIndex,
        /// The resource.
        resource: String,
        /// 0-based position in the queue.
        position: usize,
    },
    /// A wait was withdrawn (or was not queued at all).
    WaitCancelled,
    /// A lease was released.
    Released {
        /// The released lease.
        grant: Grant,
    },
    /// Sessions expired (those that still existed).
    Expired {
        /// Sessions removed.
        sessions: Vec<SessionId>,
    },
    /// Holders were asked to give the resource up.
    Recalled {
        /// Sessions notified.
        holders: Vec<SessionId>,
    },
    /// The configuration was replaced.
    ConfigSet(LeaseConfig),
    /// Nothing changed; this is why.
    Rejected(Rejection),
    /// The answers to the commands of a [`crate::Command::Batch`], in order.
    Batch(Vec<Response>),
}

/// Keys of replicated state changed by one apply, so storage can persist
/// exactly those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Sessions created, changed or removed.
    pub sessions: BTreeSet<SessionId>,
    /// Resources created, changed or removed.
    pub resources: BTreeSet<String>,
    /// The configuration changed.
    pub config: bool,
}

impl Touched {
    /// Adds everything `other` touched.
    pub fn merge(&mut self, other: Touched) {
        self.sessions.extend(other.sessions);
        self.resources.extend(other.resources);
        self.config |= other.config;
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.resources.is_empty() && !self.config
    }
}

/// A session that began or ended in one apply: what the leader's
/// in-memory rules ([`crate::leader::LeaderState`]) are fed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    /// A session was opened (also by a one-call acquire).
    Opened {
        /// Its id.
        session: SessionId,
        /// Its TTL.
        ttl_ms: u64,
        /// Its secret (keepalives must present it).
        secret: SessionSecret,
    },
    /// A session was closed, expired, or ended with its last private lease.
    Ended {
        /// Its id.
        session: SessionId,
    },
}

/// Result of applying one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Index the command was applied at.
    pub index: LogIndex,
    /// Answer to the proposer.
    pub response: Response,
    /// Lease events, in order.
    pub events: Vec<Event>,
    /// State keys changed.
    pub touched: Touched,
    /// Sessions opened and ended, in order.
    pub sessions: Vec<SessionChange>,
}

impl Applied {
    /// A command at `index` refused with `rejection`: nothing changed.
    pub fn rejected(index: LogIndex, rejection: Rejection) -> Self {
        Applied {
            index,
            response: Response::Rejected(rejection),
            events: Vec::new(),
            touched: Touched::default(),
            sessions: Vec::new(),
        }
    }
}
