//! [`ClientError`]: every way a client call can fail, with its gRPC code.

use std::time::Duration;

use tonic::Status;

/// The gRPC status code, as [`ClientError::code`] returns it.
pub use tonic::Code;

/// Every way a client call can fail.
///
/// Server answers map one to one onto the statuses of the API contract
/// (`proto/leasehold/v1/lease.proto`); [`ClientError::code`] gives the gRPC
/// code back, and [`ClientError::is_retryable`] says whether trying again
/// (possibly elsewhere) may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A field is malformed or out of bounds (checked locally or by the
    /// server; the message names the field). `INVALID_ARGUMENT`.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Unknown, closed or expired session, or unknown resource.
    /// `NOT_FOUND`.
    #[error("not found: {0}")]
    NotFound(String),
    /// A call named a session without its secret (or with a wrong one), or
    /// the caller's principal may not make the call (its role or resource
    /// prefixes; the message names principal, call and what it needs):
    /// nothing changed. Sessions belong to the client that opened them.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The call carried no bearer token, or one no principal of the cluster
    /// has: nothing changed. `UNAUTHENTICATED`.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The resource is held in a conflicting mode and the call did not wait,
    /// or a release named a lease the session does not hold. The message
    /// names the holder and its token. `FAILED_PRECONDITION`.
    #[error("{0}")]
    Conflict(String),
    /// The server's wait for the lease ran out; nothing is held.
    /// `DEADLINE_EXCEEDED`.
    #[error("wait timed out: {0}")]
    WaitTimedOut(String),
    /// A count limit of the service was reached. `RESOURCE_EXHAUSTED`.
    #[error("limit reached: {0}")]
    LimitExceeded(String),
    /// A watch asked for history the node no longer keeps. `OUT_OF_RANGE`.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// No node could serve the call before the per-call deadline: no leader,
    /// leader lease not valid, nodes down or shutting down. `UNAVAILABLE`.
    #[error("unavailable: {message}")]
    Unavailable {
        /// The last reason a node (or the connection) gave.
        message: String,
        /// Time spent trying before giving up (zero for a single attempt).
        after: Duration,
    },
    /// The client was built with a bad setting (e.g. an endpoint that is not
    /// a valid address). `INVALID_ARGUMENT`.
    #[error("configuration: {0}")]
    Config(String),
    /// The server answered something the contract does not allow (e.g. an
    /// acquire reply without a lease). `INTERNAL`.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Any other status the server returned.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
}

impl ClientError {
    /// The gRPC code this error corresponds to.
    pub fn code(&self) -> Code {
        match self {
            ClientError::InvalidArgument(_) | ClientError::Config(_) => Code::InvalidArgument,
            ClientError::NotFound(_) => Code::NotFound,
            ClientError::PermissionDenied(_) => Code::PermissionDenied,
            ClientError::Unauthenticated(_) => Code::Unauthenticated,
            ClientError::Conflict(_) => Code::FailedPrecondition,
            ClientError::WaitTimedOut(_) => Code::DeadlineExceeded,
            ClientError::LimitExceeded(_) => Code::ResourceExhausted,
            ClientError::OutOfRange(_) => Code::OutOfRange,
            ClientError::Unavailable { .. } => Code::Unavailable,
            ClientError::Protocol(_) => Code::Internal,
            ClientError::Rpc { code, .. } => *code,
        }
    }

    /// Whether the same call may succeed if tried again later (the cluster
    /// was unavailable). Conflicts, timeouts of a wait and bad arguments are
    /// answers, not failures: they are not retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }

    /// A short name of the error's kind, stable for scripts (`"conflict"`,
    /// `"not_found"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InvalidArgument(_) => "invalid_argument",
            ClientError::NotFound(_) => "not_found",
            ClientError::PermissionDenied(_) => "permission_denied",
            ClientError::Unauthenticated(_) => "unauthenticated",
            ClientError::Conflict(_) => "conflict",
            ClientError::WaitTimedOut(_) => "wait_timed_out",
            ClientError::LimitExceeded(_) => "limit_exceeded",
            ClientError::OutOfRange(_) => "out_of_range",
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::Config(_) => "config",
            ClientError::Protocol(_) => "protocol",
            ClientError::Rpc { .. } => "rpc",
        }
    }
}

impl From<Status> for ClientError {
    /// Maps a server status onto the contract's errors. Connection failures
    /// (tonic reports them as `UNAVAILABLE`, sometimes `UNKNOWN` with a
    /// transport source) become [`ClientError::Unavailable`].
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => ClientError::InvalidArgument(message),
            Code::NotFound => ClientError::NotFound(message),
            Code::PermissionDenied => ClientError::PermissionDenied(message),
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::FailedPrecondition => ClientError::Conflict(message),
            Code::DeadlineExceeded => ClientError::WaitTimedOut(message),
            Code::ResourceExhausted => ClientError::LimitExceeded(message),
            Code::OutOfRange => ClientError::OutOfRange(message),
            Code::Unavailable => ClientError::Unavailable {
                message,
                after: Duration::ZERO,
            },
            _ if is_connection_failure(&status) => ClientError::Unavailable {
                message,
                after: Duration::ZERO,
            },
            code => ClientError::Rpc { code, message },
        }
    }
}

/// A connection failure that retrying will not cure because the two ends
/// disagree on TLS, explained for a person: TLS against a plaintext node,
/// a node certificate this client does not trust, or plaintext against a
/// TLS node. `None` for any other failure.
pub(crate) fn tls_mismatch(status: &Status, addr: &str, tls: bool) -> Option<String> {
    let text = chain(status);
    let authority = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    if tls && text.contains("InvalidContentType") {
        return Some(format!(
            "TLS handshake with {authority} failed: the node does not speak TLS \
             (started with --plaintext? then connect with --plaintext)"
        ));
    }
    if tls && text.contains("invalid peer certificate") {
        let reason = status.message();
        return Some(format!(
            "TLS: {authority} presented a certificate this client does not accept ({reason}): \
             check the CA certificate (--ca-cert) and that the node's certificate names this host"
        ));
    }
    if !tls && (text.contains("FRAME_SIZE_ERROR") || text.contains("frame with invalid size")) {
        return Some(format!(
            "{authority} did not answer plaintext HTTP/2: the node requires TLS \
             (give the cluster's CA certificate: --ca-cert or LEASEHOLD_CA_CERT)"
        ));
    }
    None
}

/// Bound on the probe [`diagnose`] makes of a node that closed a
/// plaintext connection.
pub(crate) const TLS_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Like [`tls_mismatch`], and for a plaintext client whose connection was
/// closed or reset without a recognisable answer, probes the node: it
/// speaks TLS if it answers the HTTP/2 preface with a TLS record (an alert
/// or handshake, content types 21 and 22).
pub(crate) async fn diagnose(status: &Status, addr: &str, tls: bool) -> Option<String> {
    if let Some(m) = tls_mismatch(status, addr, tls) {
        return Some(m);
    }
    let text = chain(status).to_ascii_lowercase();
    let closed = [
        "connection closed",
        "broken pipe",
        "connection reset",
        "h2 protocol error",
    ]
    .iter()
    .any(|c| text.contains(c));
    if tls || !closed {
        return None;
    }
    let authority = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let probe = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut first = [0u8; 1];
        let n = stream.read(&mut first).await.ok()?;
        (n == 1 && (first[0] == 21 || first[0] == 22)).then_some(())
    };
    tokio::time::timeout(TLS_PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()?;
    Some(format!(
        "{authority} did not answer plaintext HTTP/2: the node requires TLS \
         (give the cluster's CA certificate: --ca-cert or LEASEHOLD_CA_CERT)"
    ))
}

/// An error and its sources on one line.
pub(crate) use leasehold_proto::error_chain as chain;

/// Whether `status` means "could not reach the node or the connection
/// broke" rather than an answer from the service: `UNAVAILABLE`, or
/// `UNKNOWN`/`CANCELLED` raised by the transport (h2 or hyper errors, which
/// tonic reports with a source error or a "transport error" message).
pub(crate) fn is_connection_failure(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Cancelled | Code::Internal => {
            let m = status.message().to_ascii_lowercase();
            std::error::Error::source(status).is_some()
                || m.contains("transport")
                || m.contains("connection")
                || m.contains("broken pipe")
                || m.contains("h2 protocol error")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_contract_errors_and_back() {
        let cases = [
            (Code::InvalidArgument, "invalid_argument", false),
            (Code::NotFound, "not_found", false),
            (Code::FailedPrecondition, "conflict", false),
            (Code::DeadlineExceeded, "wait_timed_out", false),
            (Code::ResourceExhausted, "limit_exceeded", false),
            (Code::OutOfRange, "out_of_range", false),
            (Code::Unavailable, "unavailable", true),
            (Code::PermissionDenied, "permission_denied", false),
            (Code::Unauthenticated, "unauthenticated", false),
        ];
        for (code, kind, retryable) in cases {
            let e = ClientError::from(Status::new(code, "why"));
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.is_retryable(), retryable, "{e}");
        }
    }

    #[test]
    fn conflict_message_is_the_servers() {
        let e = ClientError::from(Status::failed_precondition(
            "resource \"a\" is held by session 7 (\"x\", exclusive, token 9)",
        ));
        assert_eq!(
            e.to_string(),
            "resource \"a\" is held by session 7 (\"x\", exclusive, token 9)"
        );
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let e = ClientError::from(Status::unknown("transport error"));
        assert!(e.is_retryable());
        assert_eq!(e.code(), Code::Unavailable);
        let e = ClientError::from(Status::unknown("application panicked"));
        assert!(!e.is_retryable());
        assert_eq!(e.code(), Code::Unknown);
    }

    #[test]
    fn local_errors_have_codes() {
        assert_eq!(
            ClientError::Config("x".into()).code(),
            Code::InvalidArgument
        );
        assert_eq!(ClientError::Protocol("x".into()).code(), Code::Internal);
    }
}
