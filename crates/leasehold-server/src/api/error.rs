//! API errors and their one mapping to gRPC statuses.

use leasehold_core::{Mode, Rejection, SessionSecret};
use leasehold_proto::LEADER_METADATA_KEY;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::auth::{Denied, Unauthenticated};
use crate::error::ProposeError;
use crate::limits::LimitReached;

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
    /// A limit of this node's client API was reached (the message names
    /// the setting and its value).
    #[error("{what} (limit {limit} = {max}); retry later or use another node")]
    LimitReached {
        /// What was refused or ended.
        what: String,
        /// The setting or constant (`watch_streams_max`, `request_bytes_max`, …).
        limit: &'static str,
        /// Its value.
        max: u64,
    },
    /// A stream was ended because it sat idle; open a new one when needed.
    #[error("{0}")]
    Idle(String),
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
            ApiError::ResourceExhausted(_) | ApiError::LimitReached { .. } => {
                Code::ResourceExhausted
            }
            ApiError::Idle(_) => Code::Unavailable,
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

impl ApiError {
    /// A limit of `limits` refused `what`.
    pub fn limit(what: impl Into<String>, reached: LimitReached) -> Self {
        ApiError::LimitReached {
            what: what.into(),
            limit: reached.limit,
            max: u64::try_from(reached.max).unwrap_or(u64::MAX),
        }
    }
}

/// Prefix of the status tonic-prost answers (`INTERNAL`) for a request that
/// does not decode (truncated, wrong wire type, invalid UTF-8 in a string).
const TONIC_DECODE_ERROR: &str = "failed to decode Protobuf message";
/// Prefix of the status tonic answers (`OUT_OF_RANGE`) for a message over
/// `max_decoding_message_size`.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// Our answer in place of a status tonic produced by itself before any
/// handler ran: an undecodable request is `INVALID_ARGUMENT`, not
/// `INTERNAL`; an oversize one is `RESOURCE_EXHAUSTED` naming our limit,
/// `request_bytes_max`. `None` for every other status.
pub fn transport_status(status: &Status) -> Option<ApiError> {
    let message = status.message();
    match status.code() {
        Code::Internal if message.starts_with(TONIC_DECODE_ERROR) => Some(ApiError::invalid(
            "request",
            format!("the message does not decode as protobuf: {message}"),
        )),
        Code::OutOfRange if message.starts_with(TONIC_TOO_LARGE) => {
            let found = message[TONIC_TOO_LARGE.len()..]
                .split(' ')
                .next()
                .unwrap_or("?")
                .to_string();
            Some(ApiError::LimitReached {
                what: format!("request message of {found} bytes refused"),
                limit: "request_bytes_max",
                max: u64::try_from(leasehold_proto::REQUEST_BYTES_MAX).unwrap_or(u64::MAX),
            })
        }
        _ => None,
    }
}

/// Rewrites a trailers-only response that tonic answered by itself (see
/// [`transport_status`]); leaves every other response alone.
pub fn rewrite_transport_status(headers: &mut tonic::codegen::http::HeaderMap) {
    let Some(mapped) = Status::from_header_map(headers)
        .as_ref()
        .and_then(transport_status)
    else {
        return;
    };
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if let Err(e) = Status::from(mapped).add_header(headers) {
        tracing::warn!(error = %e, "could not rewrite a transport status");
    }
}

/// The answer to every call on a connection over `connections_max`.
pub fn connection_refused(why: &str) -> Status {
    ApiError::ResourceExhausted(why.to_string()).into()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_statuses_get_our_codes() {
        let decode = Status::internal(
            "failed to decode Protobuf message: AcquireRequest.resource: invalid string value: data is not UTF-8 encoded",
        );
        let s = Status::from(transport_status(&decode).expect("mapped"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().contains("AcquireRequest.resource"),
            "{}",
            s.message()
        );
        let big = Status::out_of_range(
            "Error, decoded message length too large: found 2000000 bytes, the limit is: 1048576 bytes",
        );
        let s = Status::from(transport_status(&big).expect("mapped"));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("2000000 bytes"), "{}", s.message());
        assert!(
            s.message().contains("request_bytes_max = 1048576"),
            "{}",
            s.message()
        );
        assert!(transport_status(&Status::internal("internal error: x")).is_none());
        assert!(transport_status(&Status::unavailable("no leader")).is_none());

        let mut headers = tonic::codegen::http::HeaderMap::new();
        big.add_header(&mut headers).expect("header");
        rewrite_transport_status(&mut headers);
        let s = Status::from_header_map(&headers).expect("status");
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
