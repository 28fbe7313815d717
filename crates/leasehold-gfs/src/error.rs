//! [`GfsError`]: every way a GFS call fails, and the one place it maps to
//! and from gRPC statuses (the codes of `proto/leasehold/gfs/v1/gfs.proto`).

use tonic::{Code, Status};

/// Every way a GFS call fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GfsError {
    /// The chunkserver is not (or no longer) the accepting primary of the
    /// chunk: its lease ended, was recalled, or was never granted.
    #[error("not primary: {0}")]
    NotPrimary(String),
    /// A version mismatch: the sender or the replica is behind.
    #[error("stale version: {0}")]
    StaleVersion(String),
    /// Record append found the chunk full; the rest of it was padded.
    #[error("chunk full: {0}")]
    ChunkFull(String),
    /// Unknown chunk.
    #[error("not found: {0}")]
    NotFound(String),
    /// Retry later, possibly elsewhere: not the elected master, no primary
    /// yet, a replica did not answer, a process is down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A malformed request (the message names the field).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Local disk I/O failed.
    #[error("disk: {0}")]
    Disk(String),
    /// The Leasehold client failed.
    #[error("leasehold: {0}")]
    Lease(#[from] leasehold_client::ClientError),
}

impl GfsError {
    /// Whether the client should locate the chunk again and retry.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GfsError::NotPrimary(_)
                | GfsError::StaleVersion(_)
                | GfsError::Unavailable(_)
                | GfsError::NotFound(_)
        )
    }

    /// A short, stable name of the kind (for histories and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            GfsError::NotPrimary(_) => "not_primary",
            GfsError::StaleVersion(_) => "stale_version",
            GfsError::ChunkFull(_) => "chunk_full",
            GfsError::NotFound(_) => "not_found",
            GfsError::Unavailable(_) => "unavailable",
            GfsError::InvalidArgument(_) => "invalid_argument",
            GfsError::Disk(_) => "disk",
            GfsError::Lease(_) => "leasehold",
        }
    }
}

impl From<GfsError> for Status {
    fn from(e: GfsError) -> Status {
        let code = match &e {
            GfsError::NotPrimary(_) => Code::FailedPrecondition,
            GfsError::StaleVersion(_) => Code::Aborted,
            GfsError::ChunkFull(_) => Code::OutOfRange,
            GfsError::NotFound(_) => Code::NotFound,
            GfsError::Unavailable(_) => Code::Unavailable,
            GfsError::InvalidArgument(_) => Code::InvalidArgument,
            GfsError::Disk(_) => Code::Internal,
            GfsError::Lease(c) if c.is_retryable() => Code::Unavailable,
            GfsError::Lease(_) => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

impl From<Status> for GfsError {
    fn from(s: Status) -> GfsError {
        let m = s.message().to_string();
        match s.code() {
            Code::FailedPrecondition => GfsError::NotPrimary(m),
            Code::Aborted => GfsError::StaleVersion(m),
            Code::OutOfRange => GfsError::ChunkFull(m),
            Code::NotFound => GfsError::NotFound(m),
            Code::InvalidArgument => GfsError::InvalidArgument(m),
            Code::Internal => GfsError::Disk(m),
            // Unavailable, deadline exceeded, transport failures, …
            _ => GfsError::Unavailable(format!("{:?}: {m}", s.code())),
        }
    }
}

impl From<std::io::Error> for GfsError {
    fn from(e: std::io::Error) -> GfsError {
        GfsError::Disk(e.to_string())
    }
}
