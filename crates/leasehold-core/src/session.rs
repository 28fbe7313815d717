//! A session: the client's heartbeat. All its leases live and die with it.

use serde::{Deserialize, Serialize};

use crate::small::SmallSet;
use crate::types::{RequestId, SessionId, SessionSecret};

/// Replicated record of an open session. Its deadline is *not* here: the
/// leader keeps deadlines in memory on its monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Position of the command that opened it.
    pub id: SessionId,
    /// Name the client gave, for operators and conflict messages.
    pub client_name: Box<str>,
    /// TTL the leader renews it for on every keepalive.
    pub ttl_ms: u64,
    /// Created by a one-call acquire: closed with its last lease.
    pub private: bool,
    /// What every call naming this session must present.
    pub secret: SessionSecret,
    /// The client's id for the request that opened it (0: none), so a
    /// retry of that request finds this session instead of opening another.
    pub request_id: RequestId,
    /// Resources this session holds (index into the resource table).
    pub held: SmallSet<String>,
    /// Resources this session waits for.
    pub waiting: SmallSet<String>,
}

impl Session {
    /// Number of leases held or waited for, checked against the per-session limit.
    pub fn lease_count(&self) -> usize {
        self.held.len() + self.waiting.len()
    }
}
