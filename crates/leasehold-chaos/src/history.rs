//! The JSONL history format shared by the workload and the checker.
//!
//! Every record carries `t_ns`: CLOCK_MONOTONIC in nanoseconds, the same
//! clock for every process on the host (the nemesis scripts log faults on
//! it too), so records of different processes can be compared.

use serde::{Deserialize, Serialize};

/// Now on CLOCK_MONOTONIC, in nanoseconds.
pub fn mono_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Converts a `tokio`/`std` instant to CLOCK_MONOTONIC ns (on Linux both
/// read CLOCK_MONOTONIC; this maps through the present instant).
pub fn instant_ns(at: tokio::time::Instant) -> u64 {
    let now = tokio::time::Instant::now();
    let now_ns = mono_ns();
    if at <= now {
        now_ns.saturating_sub((now - at).as_nanos() as u64)
    } else {
        now_ns.saturating_add((at - now).as_nanos() as u64)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Sent.
    Invoke,
    /// Acknowledged.
    Ok,
    /// Definitely did not happen.
    Fail,
    /// May or may not have happened (timeout, unavailable mid-call).
    Unknown,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An operation step.
    Op {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// Workload client.
        client: u32,
        /// open | acquire | release | renew | register_write | liveness | final_get
        op: String,
        /// invoke / ok / fail / unknown.
        outcome: Outcome,
        /// The resource, when the op has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        /// The session, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<u64>,
        /// Fencing token, for grants and fenced writes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<u64>,
        /// "exclusive" or "shared".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Error text or other detail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Latency of the call, for ok/fail/unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_ns: Option<u64>,
    },
    /// A lease the client believed it held, from the grant reply until its
    /// own conservative deadline or the start of its release.
    Hold {
        /// Workload client.
        client: u32,
        /// Session.
        session: u64,
        /// Resource.
        resource: String,
        /// "exclusive" or "shared".
        mode: String,
        /// Fencing token.
        token: u64,
        /// Belief started (reply received).
        start_ns: u64,
        /// Belief ended.
        end_ns: u64,
        /// "released", "deadline", "lost" or "end".
        ended_by: String,
    },
    /// A session the service declared dead while the client's own deadline
    /// from acknowledged renewals was still ahead.
    EarlyExpiry {
        /// Workload client.
        client: u32,
        /// Session.
        session: u64,
        /// When the service said "not alive".
        t_ns: u64,
        /// The holder's deadline at that moment.
        holder_deadline_ns: u64,
    },
    /// A write the fenced register accepted.
    RegisterWrite {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// The register (one per resource).
        resource: String,
        /// Workload client.
        client: u32,
        /// Token it carried.
        token: u64,
        /// The value the writer had read.
        read_value: u64,
        /// The value the register held just before this write.
        before: u64,
        /// The value written.
        value: u64,
    },
    /// A fault from a nemesis script.
    Fault {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// kill, restart, pause, resume, partition, heal, wipe, clock, ...
        fault: String,
        /// Target node, if any.
        #[serde(default)]
        node: Option<serde_json::Value>,
        /// Free text.
        #[serde(default)]
        detail: Option<serde_json::Value>,
    },
}
