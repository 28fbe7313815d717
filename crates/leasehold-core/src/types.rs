//! Small value types shared by every part of the domain core.

use serde::{Deserialize, Serialize};

/// Identifies a session. It is the Raft log index of the entry that opened the
/// session, so it is unique across the cluster and never reused.
pub type SessionId = u64;

/// A Raft log index as seen by the state machine. Every command is applied at
/// one index; indexes strictly increase.
pub type LogIndex = u64;

/// A fencing token: the log index of the entry that granted the lease.
pub type FencingToken = u64;

/// How a lease is held on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// One holder and no other (a writer).
    Exclusive,
    /// Many holders, none of them exclusive (readers).
    Shared,
}

impl Mode {
    /// Whether a holder in mode `self` may coexist with a holder in `other`.
    pub fn compatible_with(self, other: Mode) -> bool {
        matches!((self, other), (Mode::Shared, Mode::Shared))
    }

    /// Lower-case name used in messages and on the wire of the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
