//! Server side of the peer transport: the `RaftPeer` gRPC service.

use std::fmt;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use leasehold_proto::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
use leasehold_proto::raft::v1::RaftPayload;

use super::error::TransportError;
use super::payload::{
    self, AppendEntriesReply, AppendEntriesRequest, InstallSnapshotReply, InstallSnapshotRequest,
    PeerStatus, VoteReply, VoteRpc, Withdrawal,
};
use super::MESSAGE_BYTES_MAX;
use crate::identity::PeerIdentity;
use crate::tls::{ClientAuth, NodeTls};
use crate::types::Raft;
use openraft::raft::AppendEntriesResponse;

/// Answers the peer RPCs from the local Raft: decodes the payload, calls
/// `Raft::append_entries`/`vote`/`install_snapshot`, encodes the result
/// (errors of the Raft included, so the caller gets a `RemoteError`).
///
/// A payload that does not decode is refused with `InvalidArgument`.
#[derive(Clone)]
pub struct PeerService {
    /// The local Raft the RPCs are delivered to.
    raft: Raft,
    /// Vote requests are refused until this instant. A restarted node has
    /// forgotten when it last heard from the leader (openraft then treats
    /// the leader's lease as expired); refusing votes for `W × (1 + ρ)`
    /// after start keeps an acknowledgement it gave before dying valid.
    /// See docs/adr/0001-time-model.md §4.
    votes_refused_until: Option<tokio::time::Instant>,
    /// Fault injection: while on, every RPC is refused as unavailable.
    isolation: super::Isolation,
    /// While on, every RPC is refused as unavailable, like `isolation`: the
    /// node's store is pristine and it has not yet learnt that the cluster
    /// may talk to it (a wiped node the leader still counts as a member
    /// must not answer it; see leasehold-server's `Admission`).
    quarantine: super::Isolation,
    /// Refuses votes while it answers a reason: a leader serving under its
    /// leader lease must not help elect another (openraft lets a leader
    /// grant a vote, since it does not refresh its own vote time).
    vote_gate: Option<VoteGate>,
    /// Where the node stands with its cluster, for the `Status` RPC
    /// (leasehold-server's admission; `None`: not said).
    admission: Option<AdmissionView>,
    /// Recorded on every AppendEntries from a current leader, on arrival
    /// and once accepted (a prompt election counts from it; see
    /// [`super::LeaderContact`]).
    contact: super::LeaderContact,
    /// Every RPC needs a node certificate of the cluster (subject CN
    /// `leasehold node <id>`, see [`crate::identity`]): set when the
    /// server runs mutual TLS, where the handshake only proves that the
    /// CA signed the caller's certificate, which it also does for clients.
    require_node_cert: bool,
}

/// Names where the node stands with its cluster (`PeerStatus::admission`).
pub type AdmissionView = std::sync::Arc<dyn Fn() -> &'static str + Send + Sync>;

/// While it answers a reason, this node refuses every vote request (the
/// candidate sees the reason).
pub type VoteGate = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl fmt::Debug for PeerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerService").finish_non_exhaustive()
    }
}

impl PeerService {
    /// A service delivering to `raft`.
    pub fn new(raft: Raft) -> Self {
        PeerService {
            raft,
            votes_refused_until: None,
            isolation: super::Isolation::default(),
            quarantine: super::Isolation::default(),
            vote_gate: None,
            admission: None,
            contact: super::LeaderContact::default(),
            require_node_cert: false,
        }
    }

    /// Refuses vote requests (with `UNAVAILABLE`, which the candidate sees
    /// as an unreachable voter) until `until`.
    pub fn refuse_votes_until(mut self, until: tokio::time::Instant) -> Self {
        self.votes_refused_until = Some(until);
        self
    }

    /// Refuses vote requests while `gate` answers a reason.
    pub fn refuse_votes_while(mut self, gate: VoteGate) -> Self {
        self.vote_gate = Some(gate);
        self
    }

    /// Refuses every RPC while `isolation` is on.
    pub fn with_isolation(mut self, isolation: super::Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Refuses every RPC while `quarantine` is on. Unlike the fault
    /// injection switch of [`PeerService::with_isolation`], the node turns
    /// this one on itself: a pristine node keeps it on until it knows that
    /// no leader counts it as a member whose log it has seen.
    pub fn with_quarantine(mut self, quarantine: super::Isolation) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// Records in `contact` each AppendEntries from a current leader.
    pub fn with_leader_contact(mut self, contact: super::LeaderContact) -> Self {
        self.contact = contact;
        self
    }

    /// The `Status` RPC reports what `view` answers as the node's admission.
    pub fn with_admission(mut self, view: AdmissionView) -> Self {
        self.admission = Some(view);
        self
    }

    /// Refuses a caller whose certificate is not a node certificate of
    /// the cluster (when TLS is on): a client certificate signed by the
    /// same CA gets through the handshake, and must not reach Raft.
    fn check_caller<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<(), Status> {
        if !self.require_node_cert {
            return Ok(());
        }
        let certs = crate::identity::peer_certs::<T, TcpConnectInfo>(request);
        let refused = match crate::identity::identify(certs.as_deref().map(Vec::as_slice)) {
            PeerIdentity::Node(_) => return Ok(()),
            PeerIdentity::None => "no client certificate".to_string(),
            PeerIdentity::Other(cn) => format!("certificate CN {cn:?} is not a node's"),
            PeerIdentity::Unreadable(e) => e.to_string(),
        };
        tracing::warn!(
            rpc,
            remote_addr = ?request.remote_addr(),
            reason = %refused,
            "peer RPC refused: not a node certificate"
        );
        Err(Status::permission_denied(format!(
            "the Raft peer port accepts node certificates only (subject CN `{}<id>`): {refused}",
            crate::identity::NODE_CN_PREFIX
        )))
    }

    fn check_isolation(&self) -> Result<(), Status> {
        if self.isolation.is_on() {
            return Err(Status::unavailable("this node is isolated"));
        }
        if self.quarantine.is_on() {
            return Err(Status::unavailable(
                "this node's store is pristine and it is not admitted to the cluster yet",
            ));
        }
        Ok(())
    }

    /// Wraps this service for tonic with message limits raised to
    /// [`MESSAGE_BYTES_MAX`] both ways.
    pub fn into_server(self) -> RaftPeerServer<PeerService> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }
}

/// The tonic service for `raft`, with message limits raised to
/// [`MESSAGE_BYTES_MAX`] both ways: mount it on any tonic router. Remember
/// `TCP_NODELAY` on the listener (see [`serve_peer`]).
pub fn peer_service(raft: Raft) -> RaftPeerServer<PeerService> {
    PeerService::new(raft).into_server()
}

/// Serves the peer service for `raft` on `listener` until `shutdown`
/// completes, with `TCP_NODELAY` on every accepted connection (tonic ignores
/// the builder's setting for an external listener; without it small Raft
/// messages wait on Nagle's algorithm).
pub async fn serve_peer<F>(
    listener: TcpListener,
    raft: Raft,
    shutdown: F,
) -> Result<(), TransportError>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_peer_service(listener, PeerService::new(raft), shutdown).await
}

/// Like [`serve_peer`], for a configured [`PeerService`] (plaintext).
pub async fn serve_peer_service<F>(
    listener: TcpListener,
    service: PeerService,
    shutdown: F,
) -> Result<(), TransportError>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_peer_service_tls(listener, service, None, shutdown).await
}

/// Like [`serve_peer_service`], with mutual TLS when `tls` is given: a
/// caller must present a certificate signed by the cluster CA, or its
/// handshake fails before any RPC reaches the service; and that
/// certificate must be a node certificate (subject CN `leasehold node
/// <id>`), or every RPC is refused with `PERMISSION_DENIED` before it
/// reaches Raft.
pub async fn serve_peer_service_tls<F>(
    listener: TcpListener,
    service: PeerService,
    tls: Option<&NodeTls>,
    shutdown: F,
) -> Result<(), TransportError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let local_addr = listener.local_addr().ok();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(addr = ?local_addr, tls = tls.is_some(), "raft peer server listening");
    let mut builder = Server::builder();
    let mut service = service;
    service.require_node_cert = tls.is_some();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.server_config(ClientAuth::Required))
            .map_err(TransportError::Serve)?;
    }
    let result = builder
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    match &result {
        Ok(()) => tracing::info!(addr = ?local_addr, "raft peer server stopped"),
        Err(error) => tracing::error!(addr = ?local_addr, %error, "raft peer server failed"),
    }
    result.map_err(TransportError::Serve)
}

/// Decodes a request payload; a bad one is the caller's fault.
fn decode_request<T: DeserializeOwned>(
    what: &'static str,
    request: Request<RaftPayload>,
) -> Result<T, Status> {
    let remote_addr = request.remote_addr();
    payload::decode(what, request.get_ref()).map_err(|error| {
        tracing::warn!(remote_addr = ?remote_addr, %error, "undecodable peer request");
        Status::invalid_argument(error.to_string())
    })
}

/// Encodes a reply payload.
fn encode_reply<T: Serialize>(
    what: &'static str,
    reply: &T,
) -> Result<Response<RaftPayload>, Status> {
    payload::encode(what, reply)
        .map(Response::new)
        .map_err(|error| {
            tracing::error!(%error, "cannot encode peer reply");
            Status::internal(error.to_string())
        })
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_caller("append_entries", &request)?;
        self.check_isolation()?;
        let rpc: AppendEntriesRequest = decode_request("append_entries request", request)?;
        let entries = rpc.entries.len();
        let started = std::time::Instant::now();
        // Heard on arrival, not only once answered: while this node's Raft
        // is busy (a large apply) the leader's messages wait in its queue,
        // and a prompt election queued behind them would depose a leader
        // that is alive. A leader of an older vote is not counted.
        if rpc.vote >= self.raft.metrics().borrow().vote {
            self.contact.heard();
        }
        let reply: AppendEntriesReply = self.raft.append_entries(rpc).await;
        // Any answer but "higher vote" means openraft accepted this leader
        // and refreshed its vote time.
        if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.contact.heard();
        }
        tracing::trace!(
            target: crate::STAGE_TARGET,
            stage = "follower_append",
            entries,
            elapsed_us = started.elapsed().as_micros() as u64,
        );
        encode_reply("append_entries reply", &reply)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_caller("vote", &request)?;
        self.check_isolation()?;
        if let Some(until) = self.votes_refused_until {
            let now = tokio::time::Instant::now();
            if now < until {
                let left_ms = (until - now).as_millis();
                tracing::info!(left_ms, "refusing a vote request: restarted recently");
                return Err(Status::unavailable(format!(
                    "restarted recently; refusing votes for another {left_ms} ms"
                )));
            }
        }
        if let Some(why) = self.vote_gate.as_ref().and_then(|gate| gate()) {
            tracing::info!(%why, "refusing a vote request");
            return Err(Status::unavailable(format!("{why}; refusing votes")));
        }
        let rpc: VoteRpc = decode_request("vote request", request)?;
        let reply: VoteReply = self.raft.vote(rpc).await;
        encode_reply("vote reply", &reply)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_caller("install_snapshot", &request)?;
        self.check_isolation()?;
        let rpc: InstallSnapshotRequest = decode_request("install_snapshot request", request)?;
        let reply: InstallSnapshotReply = self.raft.install_snapshot(rpc).await;
        encode_reply("install_snapshot reply", &reply)
    }

    async fn status(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_caller("status", &request)?;
        // Neither quarantine nor the isolation switch applies: a pristine
        // node's own state is what its pristine peers ask about, and the
        // isolation fault cuts Raft traffic (votes, entries, snapshots),
        // which is what a member that answers but cannot catch up looks
        // like to a leader adding it.
        let reply = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            PeerStatus {
                node_id: m.id,
                term: m.current_term,
                leader: m.current_leader == Some(m.id) && m.state == openraft::ServerState::Leader,
                leader_id: m.current_leader,
                applied_index: m.last_applied.map_or(0, |l| l.index),
                members: m
                    .membership_config
                    .membership()
                    .nodes()
                    .map(|(id, n)| (*id, n.clone()))
                    .collect(),
                admission: self
                    .admission
                    .as_ref()
                    .map_or(String::new(), |view| view().to_string()),
            }
        };
        encode_reply("status reply", &reply)
    }

    async fn withdraw(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_caller("withdraw", &request)?;
        self.check_isolation()?;
        let withdrawal: Withdrawal = decode_request("withdraw request", request)?;
        if withdrawal.resource.len() > leasehold_core::limits::RESOURCE_NAME_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "resource name of {} bytes (at most {})",
                withdrawal.resource.len(),
                leasehold_core::limits::RESOURCE_NAME_BYTES_MAX
            )));
        }
        let write = self.raft.client_write(withdrawal.command());
        match tokio::time::timeout(WITHDRAW_COMMIT_TIMEOUT, write).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    session = withdrawal.session,
                    resource = %withdrawal.resource,
                    queued_at = withdrawal.queued_at,
                    "withdrew a wait for another member"
                );
                encode_reply("withdraw reply", &())
            }
            Ok(Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            ))) => Err(Status::unavailable(format!(
                "not the leader (leader: {:?})",
                f.leader_id
            ))),
            Ok(Err(error)) => Err(Status::unavailable(error.to_string())),
            Err(_) => Err(Status::unavailable(format!(
                "the withdrawal did not commit within {} ms",
                WITHDRAW_COMMIT_TIMEOUT.as_millis()
            ))),
        }
    }
}

/// Bound on committing one withdrawal for another member: it retries.
const WITHDRAW_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
