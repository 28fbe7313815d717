//! Errors of the Raft peer transport.

use std::time::Duration;

use openraft::RPCTypes;

/// What can go wrong in the peer transport, on either side.
///
/// The client side converts these into openraft's `RPCError` (see
/// [`PeerClient`](super::PeerClient) for the mapping); the server side returns
/// them from [`serve_peer`](super::serve_peer).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A node's `raft_addr` does not make a valid endpoint URI.
    #[error("invalid peer address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as configured in the membership.
        addr: String,
        /// Why it was refused.
        reason: String,
    },

    /// A value could not be encoded into a payload.
    #[error("cannot encode {what} payload: {source}")]
    Encode {
        /// Which message was being encoded.
        what: &'static str,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },

    /// A payload does not decode into the message it should carry.
    #[error("cannot decode {what} payload: {source}")]
    Decode {
        /// Which message was expected.
        what: &'static str,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },

    /// A request is larger than the message limit, so it was not sent.
    #[error("{rpc} request of {message_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// Which RPC.
        rpc: RPCTypes,
        /// Size of the encoded message.
        message_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },

    /// The call did not complete within its deadline (openraft's `hard_ttl`).
    #[error("{rpc} timed out after {timeout:?}")]
    Timeout {
        /// Which RPC.
        rpc: RPCTypes,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// The call failed with a gRPC status (connection failures included:
    /// tonic reports them as `Unavailable`).
    #[error("{rpc} failed: {status}")]
    Status {
        /// Which RPC.
        rpc: RPCTypes,
        /// The status (boxed: it is large and errors travel by value).
        status: Box<tonic::Status>,
    },

    /// The peer server stopped with a transport error.
    #[error("peer server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

impl TransportError {
    /// The gRPC code of a [`TransportError::Status`], if that is what this is.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            TransportError::Status { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}
