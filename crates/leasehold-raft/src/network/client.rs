//! Client side of the peer transport: openraft's network factory and network.

use std::collections::HashMap;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};
use openraft::RPCTypes;
use prost::Message as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use leasehold_proto::raft::v1::raft_peer_client::RaftPeerClient;

use super::backoff::{ExponentialBackoff, BACKOFF_INITIAL, BACKOFF_MAX};
use super::error::TransportError;
use super::payload::{
    self, AppendEntriesReply, AppendEntriesRequest, InstallSnapshotReply, InstallSnapshotRequest,
    VoteReply, VoteRpc,
};
use super::{APPEND_ENTRIES_BYTES_MAX, MESSAGE_BYTES_MAX};
use crate::tls::NodeTls;
use crate::types::{LeaseNode, NodeId, TypeConfig};

/// The error type openraft expects from `RaftNetwork` methods.
type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, LeaseNode, RaftError<NodeId, E>>>;

/// Settings of the outgoing side of the peer transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNetworkConfig {
    /// Bound on opening a TCP connection to a peer. A host that is down
    /// should fail fast as `Unreachable` so that openraft backs off instead
    /// of piling calls onto a connect that will not finish.
    pub connect_timeout: Duration,
    /// Largest message sent or accepted, in bytes. Must cover the biggest
    /// AppendEntries batch and snapshot chunk once encoded; tonic's 4 MiB
    /// default does not.
    pub message_bytes_max: usize,
    /// Largest AppendEntries of several entries sent, in bytes; a larger one
    /// is reported as `PayloadTooLarge` so that openraft sends fewer entries
    /// (a single entry goes out up to `message_bytes_max`). openraft 0.9
    /// gives every AppendEntries one heartbeat interval (100 ms by default)
    /// end to end, follower flush included: with group commit an entry may
    /// carry a thousand commands, and a follower catching up would be sent
    /// up to `max_payload_entries` of them at once, tens of MiB that never
    /// arrive in time.
    pub append_entries_bytes_max: usize,
    /// HTTP/2 keepalive ping interval: detects half-open connections (a peer
    /// host that vanished) so the channel reconnects instead of timing out
    /// every call.
    pub keep_alive_interval: Duration,
    /// First pause after a peer turned out unreachable.
    pub backoff_initial: Duration,
    /// Longest pause between attempts to reach an unreachable peer.
    pub backoff_max: Duration,
    /// Fault injection: while on, every call fails as unreachable.
    pub isolation: super::Isolation,
    /// TLS of the peer channels: verify peers against the cluster CA and
    /// present this node's certificate (peers demand it). `None`:
    /// plaintext.
    pub tls: Option<NodeTls>,
}

impl Default for PeerNetworkConfig {
    fn default() -> Self {
        PeerNetworkConfig {
            connect_timeout: Duration::from_secs(1),
            message_bytes_max: MESSAGE_BYTES_MAX,
            append_entries_bytes_max: APPEND_ENTRIES_BYTES_MAX,
            keep_alive_interval: Duration::from_secs(10),
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            isolation: super::Isolation::default(),
            tls: None,
        }
    }
}

/// A channel made for one peer, with the address it was made for.
#[derive(Debug)]
struct CachedChannel {
    /// The `raft_addr` the channel connects to; a node re-added under a new
    /// address must not keep talking to the old one.
    addr: String,
    /// The lazily connected channel; cloning it shares the connection.
    channel: Channel,
}

/// openraft's [`RaftNetworkFactory`] for Leasehold: one cached channel per
/// peer, shared by every [`PeerClient`] made for that peer.
#[derive(Debug)]
pub struct PeerNetwork {
    /// This node's id: openraft's `Timeout` error names both ends.
    id: NodeId,
    /// Connection, message-size and backoff settings.
    config: PeerNetworkConfig,
    /// Channels by peer id. Channels connect lazily and reconnect on their
    /// own, so an entry stays valid while its peer is down.
    channels: HashMap<NodeId, CachedChannel>,
}

impl PeerNetwork {
    /// A factory for node `id` with the given settings.
    pub fn new(id: NodeId, config: PeerNetworkConfig) -> Self {
        PeerNetwork {
            id,
            config,
            channels: HashMap::new(),
        }
    }

    /// The settings this factory uses.
    pub fn config(&self) -> &PeerNetworkConfig {
        &self.config
    }

    /// The cached channel to `target` at `addr`, made on first use (or when
    /// the address changed). Needs a Tokio runtime (the channel spawns its
    /// worker).
    fn channel(&mut self, target: NodeId, addr: &str) -> Result<Channel, String> {
        if let Some(cached) = self.channels.get(&target) {
            if cached.addr == addr {
                return Ok(cached.channel.clone());
            }
        }
        let channel = endpoint(addr, &self.config)?.connect_lazy();
        tracing::info!(peer = target, raft_addr = addr, "peer channel created");
        self.channels.insert(
            target,
            CachedChannel {
                addr: addr.to_string(),
                channel: channel.clone(),
            },
        );
        Ok(channel)
    }
}

/// The endpoint for a `host:port` (or full URI) peer address, or why the
/// address is not valid.
fn endpoint(addr: &str, config: &PeerNetworkConfig) -> Result<Endpoint, String> {
    let endpoint = crate::tls::endpoint(addr, config.tls.as_ref())?;
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keep_alive_interval)
        .keep_alive_while_idle(true))
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &LeaseNode) -> PeerClient {
        let client = self.channel(target, &node.raft_addr).map(|channel| {
            RaftPeerClient::new(channel)
                .max_decoding_message_size(self.config.message_bytes_max)
                .max_encoding_message_size(self.config.message_bytes_max)
        });
        if let Err(error) = &client {
            tracing::warn!(peer = target, raft_addr = %node.raft_addr, %error, "bad peer address");
        }
        PeerClient {
            id: self.id,
            target,
            target_node: node.clone(),
            client,
            message_bytes_max: self.config.message_bytes_max,
            append_entries_bytes_max: self.config.append_entries_bytes_max,
            backoff_initial: self.config.backoff_initial,
            backoff_max: self.config.backoff_max,
            isolation: self.config.isolation.clone(),
        }
    }
}

/// openraft's [`RaftNetwork`] to one peer, over the factory's cached channel.
///
/// Every call is bounded by `RPCOption::hard_ttl()`. Failures map to
/// openraft's `RPCError` as follows:
/// - connection failures (gRPC `Unavailable`, a bad address) → `Unreachable`
///   (openraft then waits out [`RaftNetwork::backoff`]);
/// - the deadline passing (locally or `DeadlineExceeded`) → `Timeout`;
/// - an AppendEntries request over the size limit (ours, checked before
///   sending, or the server's, `OutOfRange`) → `PayloadTooLarge` with a hint
///   of half the entries; other RPCs over the limit → `Network` (keep
///   `Config::snapshot_max_chunk_size` below the limit);
/// - an error returned by the remote Raft → `RemoteError`;
/// - anything else → `Network` (openraft retries at once).
#[derive(Debug)]
pub struct PeerClient {
    /// This node's id, for `Timeout` errors.
    id: NodeId,
    /// The peer's id, for errors and logs.
    target: NodeId,
    /// The peer's record, attached to `RemoteError`s so callers see where
    /// the error came from.
    target_node: LeaseNode,
    /// The gRPC stub on the cached channel, or why none could be made (a bad
    /// address: every call then reports `Unreachable`).
    client: Result<RaftPeerClient<Channel>, String>,
    /// Largest message sent, in bytes: larger requests are refused before
    /// sending so that AppendEntries can report `PayloadTooLarge`.
    message_bytes_max: usize,
    /// See [`PeerNetworkConfig::append_entries_bytes_max`].
    append_entries_bytes_max: usize,
    /// Shape of the backoff openraft applies after `Unreachable`.
    backoff_initial: Duration,
    /// Cap of that backoff.
    backoff_max: Duration,
    /// Fault injection switch shared with the node.
    isolation: super::Isolation,
}

impl PeerClient {
    /// The peer this client talks to.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// Sends one request and decodes the reply, within `hard_ttl`.
    async fn call<Req, Reply>(
        &mut self,
        rpc: RPCTypes,
        request: &Req,
        hard_ttl: Duration,
        bytes_max: usize,
    ) -> Result<Reply, TransportError>
    where
        Req: Serialize,
        Reply: DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(client) => client,
            Err(reason) => {
                return Err(TransportError::InvalidAddress {
                    addr: self.target_node.raft_addr.clone(),
                    reason: reason.clone(),
                })
            }
        };
        if self.isolation.is_on() {
            return Err(TransportError::Status {
                rpc,
                status: Box::new(tonic::Status::unavailable("this node is isolated")),
            });
        }
        let (request_name, reply_name) = names(rpc);
        let payload = payload::encode(request_name, request)?;
        // tonic would refuse it too, but by resetting the stream, which
        // reaches us as an unrecognisable internal error.
        let message_bytes = payload.encoded_len();
        let limit_bytes = bytes_max.min(self.message_bytes_max);
        if message_bytes > limit_bytes {
            return Err(TransportError::TooLarge {
                rpc,
                message_bytes,
                limit_bytes,
            });
        }
        let request = tonic::Request::new(payload);
        let call = async {
            match rpc {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(hard_ttl, call).await;
        tracing::trace!(
            target: crate::STAGE_TARGET,
            stage = "peer_rpc",
            %rpc,
            message_bytes,
            elapsed_us = started.elapsed().as_micros() as u64,
        );
        let reply = match outcome {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                return Err(TransportError::Status {
                    rpc,
                    status: Box::new(status),
                })
            }
            Err(_elapsed) => {
                return Err(TransportError::Timeout {
                    rpc,
                    timeout: hard_ttl,
                })
            }
        };
        payload::decode(reply_name, &reply)
    }

    /// Maps a transport failure to what openraft expects (see the type docs).
    fn rpc_error<E: std::error::Error>(
        &self,
        rpc: RPCTypes,
        entries: u64,
        hard_ttl: Duration,
        err: TransportError,
    ) -> RPCError<NodeId, LeaseNode, RaftError<NodeId, E>> {
        let timeout = |timeout| {
            RPCError::Timeout(Timeout {
                action: rpc,
                id: self.id,
                target: self.target,
                timeout,
            })
        };
        // openraft retries with at most this many entries (a single entry
        // that is too large counts as Unreachable there).
        let too_large = || {
            RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2).max(1)).with_source_error(&err),
            )
        };
        let mapped = match &err {
            TransportError::Timeout { timeout: t, .. } => timeout(*t),
            TransportError::TooLarge { .. } if rpc == RPCTypes::AppendEntries => too_large(),
            TransportError::InvalidAddress { .. } => RPCError::Unreachable(Unreachable::new(&err)),
            TransportError::Status { status, .. } => match status.code() {
                Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
                Code::DeadlineExceeded => timeout(hard_ttl),
                Code::OutOfRange if rpc == RPCTypes::AppendEntries => too_large(),
                _ => RPCError::Network(NetworkError::new(&err)),
            },
            TransportError::TooLarge { .. }
            | TransportError::Encode { .. }
            | TransportError::Decode { .. }
            | TransportError::Serve(_) => RPCError::Network(NetworkError::new(&err)),
        };
        match &mapped {
            RPCError::Unreachable(_) | RPCError::Timeout(_) => {
                tracing::debug!(peer = self.target, %rpc, error = %err, "peer rpc failed");
            }
            _ => tracing::warn!(peer = self.target, %rpc, error = %err, "peer rpc failed"),
        }
        mapped
    }

    /// Wraps an error raised by the remote Raft.
    fn remote<E: std::error::Error>(
        &self,
        err: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, LeaseNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.target_node.clone(),
            err,
        ))
    }
}

/// Payload names of an RPC's request and reply, for errors.
fn names(rpc: RPCTypes) -> (&'static str, &'static str) {
    match rpc {
        RPCTypes::AppendEntries => ("append_entries request", "append_entries reply"),
        RPCTypes::Vote => ("vote request", "vote reply"),
        RPCTypes::InstallSnapshot => ("install_snapshot request", "install_snapshot reply"),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        let hard_ttl = option.hard_ttl();
        let bytes_max = if entries > 1 {
            self.append_entries_bytes_max
        } else {
            self.message_bytes_max
        };
        let reply: AppendEntriesReply = self
            .call(RPCTypes::AppendEntries, &rpc, hard_ttl, bytes_max)
            .await
            .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, entries, hard_ttl, e))?;
        reply.map_err(|e| self.remote(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let hard_ttl = option.hard_ttl();
        let reply: InstallSnapshotReply = self
            .call(
                RPCTypes::InstallSnapshot,
                &rpc,
                hard_ttl,
                self.message_bytes_max,
            )
            .await
            .map_err(|e| self.rpc_error(RPCTypes::InstallSnapshot, 0, hard_ttl, e))?;
        reply.map_err(|e| self.remote(e))
    }

    async fn vote(&mut self, rpc: VoteRpc, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let hard_ttl = option.hard_ttl();
        let reply: VoteReply = self
            .call(RPCTypes::Vote, &rpc, hard_ttl, self.message_bytes_max)
            .await
            .map_err(|e| self.rpc_error(RPCTypes::Vote, 0, hard_ttl, e))?;
        reply.map_err(|e| self.remote(e))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(ExponentialBackoff::new(
            self.backoff_initial,
            self.backoff_max,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(raft_addr: &str) -> LeaseNode {
        LeaseNode {
            raft_addr: raft_addr.to_string(),
            api_addr: String::new(),
        }
    }

    #[tokio::test]
    async fn clients_share_one_channel_per_peer_and_address() {
        let mut network = PeerNetwork::new(1, PeerNetworkConfig::default());
        let at_one = node("127.0.0.1:1");
        for _ in 0..5 {
            let client = network.new_client(2, &at_one).await;
            assert!(client.client.is_ok());
        }
        network.new_client(3, &at_one).await;
        assert_eq!(network.channels.len(), 2);

        // A node re-added under a new address gets a new channel.
        network.new_client(2, &node("127.0.0.1:2")).await;
        assert_eq!(network.channels.len(), 2);
        assert_eq!(network.channels[&2].addr, "127.0.0.1:2");

        // A bad address is not cached and yields a client that reports it.
        let bad = network.new_client(4, &node("no such host:1:2")).await;
        assert!(bad.client.is_err());
        assert_eq!(network.channels.len(), 2);
    }

    #[test]
    fn addresses_with_and_without_scheme_are_accepted() {
        let config = PeerNetworkConfig::default();
        let plain = endpoint("10.0.0.1:7001", &config).expect("host:port");
        assert_eq!(plain.uri().to_string(), "http://10.0.0.1:7001/");
        let full = endpoint("http://node-1.local:7001", &config).expect("uri");
        assert_eq!(full.uri().host(), Some("node-1.local"));
        assert!(endpoint("", &config).is_err());
    }

    fn client() -> PeerClient {
        PeerClient {
            id: 1,
            target: 2,
            target_node: node("127.0.0.1:1"),
            client: Err("not used".to_string()),
            message_bytes_max: MESSAGE_BYTES_MAX,
            append_entries_bytes_max: APPEND_ENTRIES_BYTES_MAX,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            isolation: crate::network::Isolation::default(),
        }
    }

    fn status(rpc: RPCTypes, code: Code) -> TransportError {
        TransportError::Status {
            rpc,
            status: Box::new(tonic::Status::new(code, "test")),
        }
    }

    type Mapped = RPCError<NodeId, LeaseNode, RaftError<NodeId>>;

    fn map(rpc: RPCTypes, entries: u64, err: TransportError) -> Mapped {
        client().rpc_error(rpc, entries, Duration::from_millis(250), err)
    }

    #[test]
    fn transport_failures_map_to_what_openraft_expects() {
        use RPCTypes::{AppendEntries, InstallSnapshot, Vote};

        assert!(matches!(
            map(Vote, 0, status(Vote, Code::Unavailable)),
            RPCError::Unreachable(_)
        ));
        let bad_address = TransportError::InvalidAddress {
            addr: "x".to_string(),
            reason: "test".to_string(),
        };
        assert!(matches!(
            map(Vote, 0, bad_address),
            RPCError::Unreachable(_)
        ));

        match map(Vote, 0, status(Vote, Code::DeadlineExceeded)) {
            RPCError::Timeout(t) => {
                assert_eq!((t.action, t.id, t.target), (Vote, 1, 2));
                assert_eq!(t.timeout, Duration::from_millis(250));
            }
            other => panic!("{other:?}"),
        }
        let local_timeout = TransportError::Timeout {
            rpc: AppendEntries,
            timeout: Duration::from_millis(50),
        };
        match map(AppendEntries, 3, local_timeout) {
            RPCError::Timeout(t) => assert_eq!(t.timeout, Duration::from_millis(50)),
            other => panic!("{other:?}"),
        }

        // Too large: AppendEntries is asked to split, by half.
        match map(AppendEntries, 10, status(AppendEntries, Code::OutOfRange)) {
            RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 5),
            other => panic!("{other:?}"),
        }
        let too_large = TransportError::TooLarge {
            rpc: AppendEntries,
            message_bytes: 10,
            limit_bytes: 5,
        };
        match map(AppendEntries, 1, too_large) {
            RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 1),
            other => panic!("{other:?}"),
        }
        // ... other RPCs cannot be split by openraft 0.9.
        assert!(matches!(
            map(
                InstallSnapshot,
                0,
                status(InstallSnapshot, Code::OutOfRange)
            ),
            RPCError::Network(_)
        ));

        for code in [
            Code::Internal,
            Code::Unknown,
            Code::InvalidArgument,
            Code::Cancelled,
        ] {
            assert!(
                matches!(map(Vote, 0, status(Vote, code)), RPCError::Network(_)),
                "{code:?}"
            );
        }
    }
}
