//! Every bound the state machine enforces. A limit on everything: nothing a
//! client sends can grow the replicated state without bound.

/// Longest resource name, in bytes (UTF-8). Empty names are rejected too.
pub const RESOURCE_NAME_BYTES_MAX: usize = 512;
/// Longest holder metadata, in bytes.
pub const METADATA_BYTES_MAX: usize = 1024;
/// Longest client name of a session, in bytes.
pub const CLIENT_NAME_BYTES_MAX: usize = 256;
/// Longest recall reason, in bytes.
pub const REASON_BYTES_MAX: usize = 512;
/// Most sessions alive at once in the whole cluster.
pub const SESSIONS_MAX: usize = 1_000_000;
/// Most leases (held or waited for) by one session.
pub const LEASES_PER_SESSION_MAX: usize = 10_000;
/// Most waiters queued on one resource.
pub const WAITERS_PER_RESOURCE_MAX: usize = 10_000;
/// Most sessions one `ExpireSessions` command may name.
pub const EXPIRE_BATCH_MAX: usize = 1_000;
/// Most commands one [`crate::Command::Batch`] entry carries.
pub const BATCH_COMMANDS_MAX: usize = 1_024;
/// Smallest TTL the configuration may allow, whatever the operator asks.
pub const TTL_MS_FLOOR: u64 = 100;
/// Largest TTL the configuration may allow (one day).
pub const TTL_MS_CEILING: u64 = 24 * 60 * 60 * 1000;
/// Largest clock drift bound, in parts per million (10%).
pub const DRIFT_PPM_MAX: u32 = 100_000;
/// Largest failover grace margin added on top of a TTL (one minute).
pub const GRACE_MARGIN_MS_MAX: u64 = 60_000;
/// Longest cluster-wide vote window `W` (the election timeout's maximum).
pub const VOTE_WINDOW_MS_MAX: u64 = 60_000;
