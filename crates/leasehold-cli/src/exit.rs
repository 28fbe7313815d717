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
/// A session named without its secret, or a call the token's principal
/// may not make (`PERMISSION_DENIED`).
pub const PERMISSION_DENIED: u8 = 8;
/// The lease was lost while held: its session expired, was closed, or
/// its holder deadline passed unrenewed (`run`, `acquire --hold`,
/// `session keepalive`).
pub const LEASE_LOST: u8 = 9;
/// The lease was recalled while held (`run`).
pub const LEASE_RECALLED: u8 = 10;
/// No bearer token, or one no principal has (`UNAUTHENTICATED`).
pub const UNAUTHENTICATED: u8 = 11;

/// The help text listing the exit codes (shown by `--help`).
pub const HELP: &str = "\
Exit codes:
  0  ok
  1  other error
  2  usage error
  3  conflict: the resource is held, or the lease is not held, or a membership
     change was refused (FAILED_PRECONDITION)
  4  not found: unknown, closed or expired session (NOT_FOUND)
  5  wait timed out, or a new member did not catch up in time (DEADLINE_EXCEEDED)
  6  unavailable: no node could serve the request (UNAVAILABLE)
  7  invalid argument (INVALID_ARGUMENT)
  8  permission denied: a session handle with a wrong secret, or a call the
     token's principal may not make (PERMISSION_DENIED)
  9  the lease was lost while held: its session expired or was closed
     (`run`, `acquire --hold`, `session keepalive`)
 10  the lease was recalled while held (`run`)
 11  unauthenticated: no token, or an unknown one (UNAUTHENTICATED); see --token
`run` exits with the command's own code (128+N if a signal N killed it), unless
the lease was lost (9) or recalled (10) before the command ended: then with
that code, whatever the command's own.";

/// An error the CLI words itself, with the exit code it exits with (e.g. a
/// wait that timed out, reworded with the time waited and the holder).
#[derive(Debug)]
pub struct Coded {
    /// The exit code.
    pub code: u8,
    /// The message (one line).
    pub message: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

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
        Code::Unauthenticated => UNAUTHENTICATED,
        _ => OTHER,
    }
}

/// A stable name of an exit code, for scripts (`"conflict"`, …).
pub fn name(code: u8) -> &'static str {
    match code {
        OK => "ok",
        USAGE => "usage",
        CONFLICT => "conflict",
        NOT_FOUND => "not_found",
        WAIT_TIMED_OUT => "wait_timed_out",
        UNAVAILABLE => "unavailable",
        INVALID_ARGUMENT => "invalid_argument",
        PERMISSION_DENIED => "permission_denied",
        LEASE_LOST => "lease_lost",
        LEASE_RECALLED => "lease_recalled",
        UNAUTHENTICATED => "unauthenticated",
        _ => "error",
    }
}

/// The `code` an error reports in JSON: the kind of the first
/// [`ClientError`] in its chain (`"conflict"`, `"not_found"`, …,
/// [`ClientError::kind`]) unless a [`Coded`] words it, else the name of its
/// exit code.
pub fn code_name(error: &anyhow::Error) -> &'static str {
    if let Some(coded) = error.chain().find_map(|e| e.downcast_ref::<Coded>()) {
        return name(coded.code);
    }
    error
        .chain()
        .find_map(|e| e.downcast_ref::<ClientError>())
        .map_or_else(|| name(for_error(error)), ClientError::kind)
}

/// An error as one JSON object: `{"error": …, "code": …, "exit": …}`
/// (what `--output json` prints on stderr instead of `leasehold: …`).
pub fn json_error(message: &str, code: &str, exit: u8) -> String {
    serde_json::json!({ "error": message, "code": code, "exit": exit }).to_string()
}

/// The exit code of an error: that of the first [`Coded`] or, failing
/// that, the gRPC code of the first [`ClientError`] in its chain, else
/// [`OTHER`].
pub fn for_error(error: &anyhow::Error) -> u8 {
    if let Some(coded) = error.chain().find_map(|e| e.downcast_ref::<Coded>()) {
        return coded.code;
    }
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
        for exit in [LEASE_LOST, LEASE_RECALLED] {
            assert!(
                HELP.contains(&format!("\n{exit:>3}  ")),
                "{exit} undocumented"
            );
        }
    }

    #[test]
    fn coded_errors_keep_their_code() {
        let e = anyhow::Error::new(Coded {
            code: WAIT_TIMED_OUT,
            message: "waited 1s for r; still held by session 1".into(),
        });
        assert_eq!(for_error(&e), WAIT_TIMED_OUT);
        assert_eq!(format!("{e:#}"), "waited 1s for r; still held by session 1");
    }

    #[test]
    fn errors_have_json_codes() {
        let e: anyhow::Result<()> = Err(ClientError::Conflict("held by 3".into())).context("x");
        let e = e.expect_err("error");
        assert_eq!(code_name(&e), "conflict");
        let v: serde_json::Value =
            serde_json::from_str(&json_error("x: held by 3", code_name(&e), for_error(&e)))
                .expect("json");
        assert_eq!(
            v,
            serde_json::json!({"error": "x: held by 3", "code": "conflict", "exit": 3})
        );
        let waited = anyhow::Error::new(Coded {
            code: WAIT_TIMED_OUT,
            message: "waited".into(),
        });
        assert_eq!(code_name(&waited), "wait_timed_out");
        assert_eq!(code_name(&anyhow::anyhow!("plain")), "error");
        for code in 0..=LEASE_RECALLED {
            assert!(code == OTHER || name(code) != "error", "{code} unnamed");
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
