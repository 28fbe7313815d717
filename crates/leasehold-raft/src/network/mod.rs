//! The Raft peer transport over tonic (`leasehold.raft.v1.RaftPeer`).
//!
//! - Client side: [`PeerNetwork`] is openraft's `RaftNetworkFactory`. It keeps
//!   one lazily connected [`tonic::transport::Channel`] per peer and clones
//!   it into every [`PeerClient`] it hands out (openraft asks for clients
//!   often: per replication stream, per election, per linearizable read).
//! - Server side: [`PeerService`] answers the three RPCs from a local
//!   [`Raft`](crate::Raft); [`serve_peer`] runs it on a listener with
//!   `TCP_NODELAY` set on every accepted connection, and [`peer_service`]
//!   builds the tonic service for a server that mounts it on its own router.
//! - [`payload`]: postcard-encoded openraft messages in `RaftPayload.data`
//!   (see `proto/leasehold/raft/v1/raft.proto`).
//!
//! Both sides accept messages up to [`MESSAGE_BYTES_MAX`] (tonic's default
//! is 4 MiB, below openraft's snapshot chunks once encoded). Keep
//! `Config::snapshot_max_chunk_size` well below it; openraft's 3 MiB default
//! fits with room to spare since postcard copies chunk bytes 1:1.

mod backoff;
mod client;
mod error;
pub mod payload;
mod server;

pub use backoff::{ExponentialBackoff, BACKOFF_INITIAL, BACKOFF_MAX};
pub use client::{PeerClient, PeerNetwork, PeerNetworkConfig};
pub use error::TransportError;
pub use payload::{decode, encode, PeerStatus, Withdrawal};
pub use server::{
    peer_service, serve_peer, serve_peer_service, serve_peer_service_tls, AdmissionView,
    PeerService, VoteGate,
};

/// A switch that cuts this node off from its peers, both ways: outgoing
/// RPCs fail as unreachable and incoming ones are refused. For fault
/// injection in tests and operations ("isolate this node"). The same
/// switch type serves as a node's own quarantine
/// ([`PeerService::with_quarantine`]), a separate instance.
#[derive(Debug, Clone, Default)]
pub struct Isolation(std::sync::Arc<std::sync::atomic::AtomicBool>);

/// Two switches are equal when they are the same switch.
impl PartialEq for Isolation {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Isolation {}

impl Isolation {
    /// Turns the isolation on or off.
    pub fn set(&self, isolated: bool) {
        self.0.store(isolated, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the node is isolated now.
    pub fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// When this node last heard from a leader: an AppendEntries (entries or a
/// heartbeat) of at least its own vote arrived, or openraft accepted one
/// (and refreshed its vote time, from which every voter that heard from
/// the same leader refuses other candidates for its vote window). leasehold-server starts an election as soon as that window
/// has passed (`election.rs`) instead of waiting for openraft's own timer,
/// which adds a random election timeout on top of it.
///
/// Recorded with one atomic store per RPC (no wake-ups on the hot path);
/// clones share the record.
#[derive(Debug, Clone)]
pub struct LeaderContact(std::sync::Arc<ContactRecord>);

/// The shared record of a [`LeaderContact`].
#[derive(Debug)]
struct ContactRecord {
    /// Zero of `heard_ms`.
    origin: tokio::time::Instant,
    /// Milliseconds from `origin` to the last contact, plus one (0: none).
    heard_ms: std::sync::atomic::AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact(std::sync::Arc::new(ContactRecord {
            origin: tokio::time::Instant::now(),
            heard_ms: std::sync::atomic::AtomicU64::new(0),
        }))
    }
}

impl LeaderContact {
    /// Records a contact now.
    pub fn heard(&self) {
        let ms = self.0.origin.elapsed().as_millis() as u64 + 1;
        self.0
            .heard_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last contact, rounded up to the millisecond (`None`: never, in
    /// this process).
    pub fn last(&self) -> Option<tokio::time::Instant> {
        match self.0.heard_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            ms => Some(self.0.origin + std::time::Duration::from_millis(ms)),
        }
    }
}

/// Largest gRPC message either side sends or accepts, in bytes (64 MiB).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Default bound on an AppendEntries of several entries (1 MiB): see
/// `PeerNetworkConfig::append_entries_bytes_max`.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 1024 * 1024;
