//! Why a command was refused. A rejected command changes nothing.

use serde::{Deserialize, Serialize};

use crate::types::{FencingToken, Mode, SessionId};

/// One current holder of a resource, named in a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRef {
    /// The holding session.
    pub session: SessionId,
    /// Client name the session was opened with.
    pub client_name: String,
    /// Mode it holds the resource in.
    pub mode: Mode,
    /// Fencing token of its lease.
    pub token: FencingToken,
}

/// A refusal, deterministic on every replica. Rejections are answers, not
/// failures of apply: the entry is still applied (as a no-op).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A field is malformed or out of bounds.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// Name of the offending field.
        field: String,
        /// What is wrong and what the limit is.
        reason: String,
    },
    /// The session does not exist (never did, closed, or expired).
    #[error("session {0} not found (closed or expired)")]
    SessionNotFound(SessionId),
    /// The resource is held in a conflicting mode and the caller did not wait.
    #[error("resource {resource:?} is held by {}", describe(.holders))]
    Conflict {
        /// The contended resource.
        resource: String,
        /// Its current holders (empty when blocked only by queued waiters).
        holders: Vec<HolderRef>,
        /// How many requests wait before this one would.
        waiters: usize,
    },
    /// The session does not hold the resource it tried to release.
    #[error("session {session} does not hold {resource:?}")]
    NotHolder {
        /// The session that asked.
        session: SessionId,
        /// The resource it named.
        resource: String,
    },
    /// The session already holds the resource in the other mode.
    #[error("session {session} already holds {resource:?} as {held}; release it first")]
    ModeMismatch {
        /// The session that asked.
        session: SessionId,
        /// The resource it named.
        resource: String,
        /// The mode it already holds.
        held: Mode,
    },
    /// The call named a session without presenting its secret.
    #[error("session {0}: wrong or missing session secret")]
    PermissionDenied(SessionId),
    /// A count limit of the service would be exceeded.
    #[error("limit reached: {what} (at most {limit})")]
    LimitExceeded {
        /// Which limit.
        what: String,
        /// Its value.
        limit: u64,
    },
}

fn describe(holders: &[HolderRef]) -> String {
    if holders.is_empty() {
        return "queued waiters".to_string();
    }
    holders
        .iter()
        .map(|h| {
            format!(
                "session {} ({:?}, {}, token {})",
                h.session, h.client_name, h.mode, h.token
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Rejection {
    /// Shorthand for [`Rejection::InvalidArgument`].
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Rejection::InvalidArgument {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
