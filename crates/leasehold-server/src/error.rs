//! Errors of the node layer.

use leasehold_raft::{LeaseNode, NodeId};
use openraft::error::{ClientWriteError, RaftError};

/// Failures starting, running or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable; the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Raft failed fatally (storage failure, panic in the core).
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a proposal did not produce an applied response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; the leader is named when known.
    #[error("not the leader (leader: {leader_id:?})")]
    NotLeader {
        /// Current leader id, if known.
        leader_id: Option<NodeId>,
        /// Its addresses, if known.
        leader: Option<LeaseNode>,
    },
    /// The cluster cannot commit now (no quorum, leadership changing); the
    /// command may or may not have been applied.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Raft refused the change itself (a membership change that is not
    /// allowed now); nothing was proposed.
    #[error("refused: {0}")]
    Refused(String),
    /// The node is shutting down or Raft failed.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// The error of `Raft::client_write` and `Raft::change_membership`.
pub type RaftWriteError = RaftError<NodeId, ClientWriteError<NodeId, LeaseNode>>;

/// The one mapping of Raft write errors (proposals, membership changes).
impl From<RaftWriteError> for ProposeError {
    fn from(e: RaftWriteError) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
                leader_id: f.leader_id,
                leader: f.leader_node,
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ProposeError::Refused(e.to_string())
            }
            RaftError::Fatal(e) => ProposeError::Fatal(e.to_string()),
        }
    }
}

impl ProposeError {
    /// Whether retrying (possibly on another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProposeError::NotLeader { .. } | ProposeError::Unavailable(_)
        )
    }
}
