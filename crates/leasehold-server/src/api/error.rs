//! API errors and their one mapping to gRPC statuses.

use leasehold_core::{Mode, Rejection, SessionSecret};
use leasehold_proto::LEADER_METADATA_KEY;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::auth::{Denied, Unauthenticated};
use crate::error::ProposeError;

/// Every way an API call can fail. `From<ApiError> for Status` is the only
/// place codes are chosen.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is malformed or out of bounds (message names field and limit).
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Unknown, closed or expired session.
    #[error("session {0} not found (closed or expired)")]
    SessionNotFound(u64),
    /// The call named a session without presenting its secret.
    #[error("session {0}: wrong or missing session secret")]
    PermissionDenied(u64),
    /// No credentials, or credentials of no known principal: nothing was
    /// done.
    #[error("{0}")]
    Unauthenticated(Unauthenticated),
    /// The principal's role or resource prefixes do not allow the call
    /// (the message names principal, call and what it needs): nothing was
    /// done.
    #[error("{0}")]
    NotAllowed(Denied),
    /// A refusal that names the current state (conflict, not holder, mode).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A count limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The wait for a lease timed out; nothing is held.
    #[error("waited {waited_ms} ms for {resource:?}; still held by others")]
    WaitTimedOut {
        /// The resource.
        resource: String,
        /// How long the request waited.
        waited_ms: u64,
    },
    /// A bounded wait other than a lease wait ran out (a new member did not
    /// catch up); the message says what was undone.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Watch asked for history this node no longer keeps.
    #[error("revision {asked} is no longer in this node's history (oldest kept: {oldest})")]
    OutOfRange {
        /// Revision asked for.
        asked: u64,
        /// Oldest revision kept.
        oldest: u64,
    },
    /// Cannot serve now: no leader, leader lease not valid, shutting down.
    /// Retry, at `leader_api_addr` when given.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// The leader's client address, when known.
        leader_api_addr: Option<String>,
    },
    /// A bug or storage failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A state machine answer other than the one a handler succeeds with:
    /// the rejection it carries, or (a bug) an internal error.
    pub fn refused(answer: leasehold_core::Response) -> Self {
        match answer {
            leasehold_core::Response::Rejected(r) => r.into(),
            other => ApiError::Internal(format!("unexpected answer {other:?}")),
        }
    }

    /// Shorthand for an invalid field.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for unavailable without a leader hint.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        ApiError::Unavailable {
            reason: reason.into(),
            leader_api_addr: None,
        }
    }

    /// Whether the same call may succeed if retried (elsewhere or later).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::Unavailable { .. })
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::InvalidArgument { field, reason } => {
                ApiError::InvalidArgument { field, reason }
            }
            Rejection::SessionNotFound(id) => ApiError::SessionNotFound(id),
            Rejection::PermissionDenied(id) => ApiError::PermissionDenied(id),
            Rejection::LimitExceeded { .. } => ApiError::ResourceExhausted(r.to_string()),
            Rejection::Conflict { .. }
            | Rejection::NotHolder { .. }
            | Rejection::ModeMismatch { .. } => ApiError::FailedPrecondition(r.to_string()),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader, .. } => ApiError::Unavailable {
                reason: "leadership changed; retry".into(),
                leader_api_addr: leader.map(|n| n.api_addr),
            },
            ProposeError::Unavailable(m) => ApiError::unavailable(m),
            ProposeError::Refused(m) => ApiError::FailedPrecondition(m),
            ProposeError::Fatal(m) => ApiError::unavailable(format!("node stopping: {m}")),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::SessionNotFound(_) => Code::NotFound,
            ApiError::PermissionDenied(_) | ApiError::NotAllowed(_) => Code::PermissionDenied,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::WaitTimedOut { .. } | ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::OutOfRange { .. } => Code::OutOfRange,
            ApiError::Unavailable { .. } => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let ApiError::Unavailable {
            leader_api_addr: Some(addr),
            ..
        } = &e
        {
            if let Ok(v) = MetadataValue::try_from(addr.as_str()) {
                status.metadata_mut().insert(LEADER_METADATA_KEY, v);
            }
        }
        status
    }
}

/// Parses a presented session secret (16 bytes).
pub fn secret_from_proto(id: u64, bytes: &[u8]) -> Result<SessionSecret, ApiError> {
    SessionSecret::from_slice(bytes).ok_or(ApiError::PermissionDenied(id))
}

/// Parses a proto mode (unspecified means exclusive).
pub fn mode_from_proto(mode: i32) -> Result<Mode, ApiError> {
    use leasehold_proto::v1::Mode as P;
    match P::try_from(mode) {
        Ok(P::Unspecified | P::Exclusive) => Ok(Mode::Exclusive),
        Ok(P::Shared) => Ok(Mode::Shared),
        Err(_) => Err(ApiError::invalid(
            "mode",
            format!("{mode} is not a mode (1 = exclusive, 2 = shared)"),
        )),
    }
}

/// The proto value of a mode.
pub fn mode_to_proto(mode: Mode) -> i32 {
    use leasehold_proto::v1::Mode as P;
    match mode {
        Mode::Exclusive => P::Exclusive as i32,
        Mode::Shared => P::Shared as i32,
    }
}
