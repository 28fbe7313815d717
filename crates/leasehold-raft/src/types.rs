//! The openraft type configuration of Leasehold.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A node id (stable for the node's lifetime; never reused).
pub type NodeId = u64;

/// What the cluster knows about a member: where its Raft peer service and
/// its client API listen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseNode {
    /// `host:port` of the Raft peer gRPC service.
    pub raft_addr: String,
    /// `host:port` of the client gRPC API (for forwarding and redirects).
    pub api_addr: String,
}

impl fmt::Display for LeaseNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// Leasehold's Raft types: commands of the domain core as log payload.
    pub TypeConfig:
        D = leasehold_core::Command,
        R = leasehold_core::Response,
        NodeId = NodeId,
        Node = LeaseNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Membership as stored with the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, LeaseNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, LeaseNode>;
/// A snapshot.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;
