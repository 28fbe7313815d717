//! Commands: everything that changes lease state goes through Raft as one of
//! these. Keepalives do not: the leader keeps session deadlines in memory.

use serde::{Deserialize, Serialize};

use crate::config::LeaseConfig;
use crate::types::{LogIndex, Mode, RequestId, SessionId, SessionSecret};

/// A session named by a client: its id and the secret that proves the
/// client owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    /// The session.
    pub id: SessionId,
    /// The secret presented with it (checked by apply).
    pub secret: SessionSecret,
}

/// Which session an acquire is made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionTarget {
    /// An open session.
    Existing(SessionRef),
    /// A private session created by this very entry (the one-call lease). It
    /// is closed when its last lease is released or it expires. If the
    /// acquire is rejected, no session is created.
    Private {
        /// Client name for the new session.
        client_name: String,
        /// TTL of the new session.
        ttl_ms: u64,
        /// Secret of the new session, chosen by the proposing node.
        secret: SessionSecret,
        /// The client's request id (0: none); a retry with the same id
        /// finds the session the first attempt created.
        request_id: RequestId,
    },
}

/// An acquire request as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    /// Session to hold the lease.
    pub session: SessionTarget,
    /// Name of the resource.
    pub resource: String,
    /// Requested mode.
    pub mode: Mode,
    /// Queue behind current holders instead of failing with a conflict.
    pub wait: bool,
    /// Small opaque bytes visible to readers of the resource.
    pub metadata: Vec<u8>,
}

/// A replicated command. Applying one is deterministic: the same command at
/// the same index on the same state gives the same result on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Opens a session; its id is the command's position (the entry's log
    /// index unless the entry is a batch).
    OpenSession {
        /// Who the client says it is (for operators).
        client_name: String,
        /// Session TTL, within the configured bounds.
        ttl_ms: u64,
        /// Its secret, chosen at random by the proposing node.
        secret: SessionSecret,
        /// The client's request id (0: none); a retry with the same id
        /// answers with the session the first attempt opened.
        request_id: RequestId,
    },
    /// Closes a session, releasing its leases and dropping its waits.
    CloseSession {
        /// The session to close, with its secret.
        session: SessionRef,
    },
    /// Acquires (or queues for) a lease.
    Acquire(Acquire),
    /// Withdraws a queued wait (its wait timed out). If the lease was already
    /// granted, nothing changes and the grant is returned. Proposed by the
    /// node that answered the waiting call, never by a client.
    CancelWait {
        /// Waiting session.
        session: SessionId,
        /// Resource it waits for.
        resource: String,
    },
    /// Withdraws a wait whose caller went away. If the wait queued at
    /// `queued_at` was already granted, the lease is released as well: its
    /// client never learned of it, so nobody would believe or release it.
    /// Proposed by the node that answered the abandoned call.
    AbandonWait {
        /// Waiting session.
        session: SessionId,
        /// Resource it waited for.
        resource: String,
        /// Position of the command that queued the abandoned wait.
        queued_at: LogIndex,
    },
    /// Releases a held lease.
    Release {
        /// Holding session, with its secret.
        session: SessionRef,
        /// Resource to release.
        resource: String,
    },
    /// Expires sessions whose deadline passed on the leader's clock. Decided
    /// by the leader only; applied by everyone.
    ExpireSessions {
        /// Sessions to expire (unknown ones are skipped).
        sessions: Vec<SessionId>,
    },
    /// Asks the current holders of a resource to give it up early.
    Recall {
        /// The resource.
        resource: String,
        /// Free text shown to the holders.
        reason: String,
    },
    /// Replaces the lease configuration.
    SetConfig(LeaseConfig),
    /// Several commands in one log entry, applied in order exactly as if
    /// each had its own entry (group commit: one append, one flush and one
    /// replication round for all). Each command that changes state takes
    /// the next position ([`crate::LeaseState::position`]), so session ids
    /// and fencing tokens stay unique and increasing. At most
    /// [`crate::limits::BATCH_COMMANDS_MAX`] commands; never nested.
    Batch(Vec<Command>),
}

impl Command {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::OpenSession { .. } => "open_session",
            Command::CloseSession { .. } => "close_session",
            Command::Acquire(_) => "acquire",
            Command::CancelWait { .. } => "cancel_wait",
            Command::AbandonWait { .. } => "abandon_wait",
            Command::Release { .. } => "release",
            Command::ExpireSessions { .. } => "expire_sessions",
            Command::Recall { .. } => "recall",
            Command::SetConfig(_) => "set_config",
            Command::Batch(_) => "batch",
        }
    }
}
