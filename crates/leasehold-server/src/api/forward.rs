//! Where a request is served: here (leader with a valid lease), forwarded
//! to the leader (hop-limited), or refused with the leader's address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use leasehold_proto::v1::leasehold_client::LeaseholdClient;
use leasehold_proto::{FORWARD_HOPS_MAX, HOPS_METADATA_KEY};
use leasehold_raft::tls::NodeTls;
use leasehold_raft::{LeaseNode, NodeId, Raft};
use openraft::RaftMetrics;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

use super::auth::{Caller, AUTHORIZATION_METADATA_KEY, PRINCIPAL_METADATA_KEY};
use super::error::ApiError;
use crate::auth::Via;
use crate::lessor::{Lessor, Serving};

/// What a node answers (UNAVAILABLE) once it began shutting down: clients
/// retry on another node.
pub const SHUTTING_DOWN: &str = "node shutting down; retry on another node";

/// What a fail-stopped node answers (UNAVAILABLE) before the reason: its
/// store failed, it serves nothing until restarted; clients retry on
/// another node.
pub const STORAGE_FAILED: &str =
    "storage failed on this node; it serves nothing until restarted (retry on another node)";

/// The UNAVAILABLE answer of a node whose store failed with `reason`.
pub fn storage_failed(reason: &str) -> ApiError {
    ApiError::unavailable(format!("{STORAGE_FAILED}: {reason}"))
}

/// Where to serve a request.
pub enum Route {
    /// This node is the serving leader.
    Local,
    /// Send it to the leader's client API, with this hop count.
    Forward {
        /// The leader's client address.
        addr: String,
        /// Hops including this one.
        hops: u32,
    },
}

/// Decides routes and keeps one channel per leader address.
pub struct Forwarder {
    /// This node.
    node_id: NodeId,
    /// Current leader and membership (its client addresses).
    raft: Raft,
    /// Cached clients by address.
    clients: Mutex<HashMap<String, LeaseholdClient<Channel>>>,
    /// TLS of the channels to the leader (the node's certificate, the
    /// cluster CA); `None`: plaintext.
    tls: Option<NodeTls>,
}

/// Timeout for establishing a connection to the leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl Forwarder {
    /// A forwarder for this node.
    pub fn new(node_id: NodeId, raft: Raft) -> Self {
        Forwarder {
            node_id,
            raft,
            clients: Mutex::new(HashMap::new()),
            tls: None,
        }
    }

    /// This node's TLS towards other nodes (`None`: plaintext); membership
    /// probes dial peers with it too.
    pub fn tls(&self) -> Option<&NodeTls> {
        self.tls.as_ref()
    }

    /// Dials the leader over TLS with this node's certificate.
    pub fn with_tls(mut self, tls: Option<NodeTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The leader's client address, if a leader other than this node is known.
    pub fn leader_api_addr(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match known_leader(&m) {
            Some((leader, addr)) if leader != self.node_id && !addr.is_empty() => Some(addr),
            _ => None,
        }
    }

    /// Where a leader-only request goes.
    pub fn route(&self, lessor: &Lessor, metadata: &MetadataMap) -> Result<Route, ApiError> {
        match lessor.serving() {
            Serving::Serving | Serving::FailoverGrace { .. } => Ok(Route::Local),
            // Its Raft stopped: what it knows of the leader is stale, so it
            // does not even forward.
            Serving::StorageFailed => Err(storage_failed(
                lessor.storage_failure().unwrap_or("unknown"),
            )),
            Serving::ShuttingDown => Err(ApiError::Unavailable {
                reason: SHUTTING_DOWN.into(),
                leader_api_addr: self.leader_api_addr(),
            }),
            Serving::WaitingForQuorum => Err(ApiError::unavailable(
                "this leader is not confirmed by a quorum (leader lease not valid); retry",
            )),
            Serving::Follower => {
                let hops = metadata
                    .get(HOPS_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0);
                let Some(addr) = self.leader_api_addr() else {
                    return Err(ApiError::unavailable(
                        "no leader is known (election under way)",
                    ));
                };
                if hops >= FORWARD_HOPS_MAX {
                    return Err(ApiError::Unavailable {
                        reason: format!("not the leader; forwarded {hops} times already"),
                        leader_api_addr: Some(addr),
                    });
                }
                Ok(Route::Forward {
                    addr,
                    hops: hops + 1,
                })
            }
        }
    }

    /// A client for the leader at `addr` (cached), and the metadata to send.
    pub fn client(&self, addr: &str) -> Result<LeaseholdClient<Channel>, ApiError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = leasehold_raft::tls::endpoint(addr, self.tls.as_ref())
            .map_err(|e| ApiError::unavailable(format!("bad leader address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = LeaseholdClient::new(endpoint.connect_lazy())
            .max_encoding_message_size(leasehold_proto::REQUEST_BYTES_MAX);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }
}

/// The current leader as Raft reports it, and its client address (empty
/// when the membership does not name it).
pub fn known_leader(m: &RaftMetrics<NodeId, LeaseNode>) -> Option<(NodeId, String)> {
    known_leader_addr(m, |n| &n.api_addr)
}

/// The current leader as Raft reports it, and the address `pick` takes
/// from its node entry (empty when the membership does not name it).
pub fn known_leader_addr(
    m: &RaftMetrics<NodeId, LeaseNode>,
    pick: impl Fn(&LeaseNode) -> &String,
) -> Option<(NodeId, String)> {
    let leader = m.current_leader?;
    let addr = m
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| pick(n).clone())
        .unwrap_or_default();
    Some((leader, addr))
}

/// Builds the request forwarded to the leader: the message, the hop
/// count, and the caller's credentials, so that the leader checks the
/// caller again with its own principals (it never trusts the forwarding
/// node's check): the `authorization` metadata as it came, or, for a
/// caller known by its client certificate (which the leader cannot see:
/// the channel presents this node's certificate), the principal's name in
/// [`PRINCIPAL_METADATA_KEY`], which the leader accepts from a node
/// certificate only.
pub fn forwarded<T>(request: tonic::Request<T>, hops: u32, caller: &Caller) -> tonic::Request<T> {
    let authorization = request.metadata().get(AUTHORIZATION_METADATA_KEY).cloned();
    let mut req = tonic::Request::new(request.into_inner());
    req.metadata_mut()
        .insert(HOPS_METADATA_KEY, MetadataValue::from(hops));
    match caller {
        Caller::Principal {
            name,
            via: Via::Certificate | Via::Forwarded(_),
        } => {
            req.metadata_mut().insert_bin(
                PRINCIPAL_METADATA_KEY,
                MetadataValue::from_bytes(name.as_bytes()),
            );
        }
        Caller::Principal {
            via: Via::Token, ..
        }
        | Caller::Open => {
            if let Some(value) = authorization {
                req.metadata_mut().insert(AUTHORIZATION_METADATA_KEY, value);
            }
        }
    }
    req
}
