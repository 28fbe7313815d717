//! Exit codes: one per kind of failure, so scripts can tell them apart.

use leasehold_client::error::Code;
use leasehold_client::ClientError;

/// Success.
pub const OK: u8 = 0;
/// Any other error.
pub const OTHER: u8 = 1;
/// Bad usage (clap's own code).
pub const USAGE: u8 = 2;
/// Conflict: the resource is held (`FAILED_PRECONDITION`).
pub const CONFLICT: u8 = 3;
/// Not found: unknown or expired session (`NOT_FOUND`).
pub const NOT_FOUND: u8 = 4;
/// The wait for a lease timed out (`DEADLINE_EXCEEDED`).
pub const WAIT_TIMED_OUT: u8 = 5;
/// No node could serve the request (`UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 6;
/// A malformed or out-of-bounds argument (`INVALID_ARGUMENT`).
pub const INVALID_ARGUMENT: u8 = 7;
/// A session named without its secret (`PERMISSION_DENIED`).
pub const PERMISSION_DENIED: u8 = 8;

/// The help text listing the exit codes (shown by `--help`).
pub const HELP: &str = "\
Exit codes:
  0  ok
  1  other error
  2  usage error
  3  conflict: the resource is held, or the lease is not held (FAILED_PRECONDITION)
  4  not found: unknown, closed or expired session (NOT_FOUND)
  5  wait timed out (DEADLINE_EXCEEDED)
  6  unavailable: no node could serve the request (UNAVAILABLE)
  7  invalid argument (INVALID_ARGUMENT)
  8  permission denied: a session handle with a wrong secret (PERMISSION_DENIED)
`run` exits with the command's own code (128+N if a signal N killed it).";

/// The exit code of a gRPC code.
pub fn for_code(code: Code) -> u8 {
    match code {
        Code::Ok => OK,
        Code::FailedPrecondition => CONFLICT,
        Code::NotFound => NOT_FOUND,
        Code::DeadlineExceeded => WAIT_TIMED_OUT,
        Code::Unavailable => UNAVAILABLE,
        Code::InvalidArgument => INVALID_ARGUMENT,
        Code::PermissionDenied => PERMISSION_DENIED,
        _ => OTHER,
    }
}

/// The exit code of an error: by the gRPC code of the first
/// [`ClientError`] in its chain, else [`OTHER`].
pub fn for_error(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<ClientError>())
        .map_or(OTHER, |e| for_code(e.code()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_map_as_documented() {
        let cases = [
            (Code::FailedPrecondition, 3),
            (Code::NotFound, 4),
            (Code::DeadlineExceeded, 5),
            (Code::Unavailable, 6),
            (Code::InvalidArgument, 7),
            (Code::Internal, 1),
            (Code::PermissionDenied, 8),
        ];
        for (code, exit) in cases {
            assert_eq!(for_code(code), exit, "{code:?}");
            assert!(HELP.contains(&format!("  {exit}  ")), "{exit} undocumented");
        }
    }

    #[test]
    fn errors_map_through_their_chain() {
        let e: anyhow::Result<()> = Err(ClientError::Conflict("held".into())).context("acquire x");
        let e = e.expect_err("error");
        assert_eq!(for_error(&e), CONFLICT);
        let unavailable = anyhow::Error::new(ClientError::Unavailable {
            message: "down".into(),
            after: std::time::Duration::ZERO,
        });
        assert_eq!(for_error(&unavailable), UNAVAILABLE);
        assert_eq!(for_error(&anyhow::anyhow!("plain")), OTHER);
    }
}
