//! Small value types shared by every part of the domain core.

use serde::{Deserialize, Serialize};

/// Identifies a session. It is the position of the command that opened the
/// session (see [`crate::LeaseState::position`]: the entry's log index unless
/// the entry is a batch), so it is unique across the cluster and never reused.
pub type SessionId = u64;

/// A Raft log index as seen by the state machine. Every command is applied at
/// one index; indexes strictly increase.
pub type LogIndex = u64;

/// A fencing token: the position of the command that granted the lease
/// (strictly increasing across all grants).
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

/// Bytes in a [`SessionSecret`] (128 bits).
pub const SESSION_SECRET_BYTES: usize = 16;

/// The unguessable secret of a session: chosen at random by the node that
/// proposes the opening entry, replicated with the session, returned only
/// to the client that opened it, and required by every call that names the
/// session. Compared in constant time; never shown in logs or `Debug`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SessionSecret(pub [u8; SESSION_SECRET_BYTES]);

impl SessionSecret {
    /// Whether `presented` is this secret, in time independent of where the
    /// bytes differ (no early exit a caller could time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != SESSION_SECRET_BYTES {
            return false;
        }
        let diff = self
            .0
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }

    /// The secret as bytes (for the wire).
    pub fn as_bytes(&self) -> &[u8; SESSION_SECRET_BYTES] {
        &self.0
    }

    /// Parses wire bytes; `None` unless exactly [`SESSION_SECRET_BYTES`] long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; SESSION_SECRET_BYTES]>::try_from(bytes)
            .ok()
            .map(SessionSecret)
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// A client-chosen id that makes a retried `OpenSession` or one-call
/// `Acquire` find the session its first attempt created instead of opening
/// another (0: no deduplication). Random 64-bit values from the client.
pub type RequestId = u64;
