//! The payload encoding of the peer protocol: postcard inside
//! `RaftPayload.data`.
//!
//! Requests travel as the openraft request types; responses as
//! `Result<response, RaftError>`, so that an error raised by the remote Raft
//! (as opposed to the transport) reaches the caller as a `RemoteError`.
//! postcard is compact (snapshot bytes are copied 1:1, integers are varints)
//! and not self-describing: both ends must use the same openraft types.
//!
//! Public so that the exact decoding the peer server and client run can be
//! exercised on its own (the fuzz target
//! `crates/leasehold-fuzz/fuzz_targets/peer_messages.rs`): a payload that
//! does not decode is a [`TransportError::Decode`] naming the message, never
//! a panic.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteRequest, VoteResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;

use leasehold_proto::raft::v1::RaftPayload;

use super::error::TransportError;
use crate::types::{LeaseNode, NodeId, TypeConfig};

/// An AppendEntries request as sent.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// An AppendEntries reply as sent.
pub type AppendEntriesReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
/// A Vote request as sent.
pub type VoteRpc = VoteRequest<NodeId>;
/// A Vote reply as sent.
pub type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
/// One snapshot chunk as sent.
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
/// The reply to one snapshot chunk as sent.
pub type InstallSnapshotReply =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// The answer to a `Status` peer RPC: where a member stands, for a
/// pristine node's admission and for a leader probing a member it is about
/// to add (cluster-internal, so on the peer port: it needs none of the
/// client API's credentials).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// The answering node's id (a leader checks it is the node it means
    /// to add).
    pub node_id: NodeId,
    /// Its current term.
    pub term: u64,
    /// Whether it is the leader.
    pub leader: bool,
    /// The leader it knows of, if any (a leader checks that a voter
    /// follows it).
    pub leader_id: Option<NodeId>,
    /// Its last applied log index (0: nothing committed that it knows of).
    pub applied_index: u64,
    /// Every member of its membership, voters and learners, with their
    /// addresses (empty: its store is pristine).
    pub members: Vec<(NodeId, LeaseNode)>,
    /// Where it stands with its cluster (leasehold-server's `Admission`,
    /// e.g. `awaiting_membership`; empty where the node does not say).
    pub admission: String,
}

/// The request of a `Withdraw` peer RPC: the wait `session` queued on
/// `resource` by the entry at `queued_at`, whose call ended without an
/// answer. The leader proposes `Command::AbandonWait` with these fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Withdrawal {
    /// The waiting session.
    pub session: u64,
    /// The resource it waited for.
    pub resource: String,
    /// The index of the entry that queued the wait (names that wait, and
    /// the lease granted from it, and nothing a later call claimed).
    pub queued_at: u64,
}

impl Withdrawal {
    /// The command the leader proposes for it.
    pub fn command(&self) -> leasehold_core::Command {
        leasehold_core::Command::AbandonWait {
            session: self.session,
            resource: self.resource.clone(),
            queued_at: self.queued_at,
        }
    }
}

/// Encodes `value` into a payload; `what` names it in errors.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<RaftPayload, TransportError> {
    postcard::to_allocvec(value)
        .map(|data| RaftPayload { data: data.into() })
        .map_err(|source| TransportError::Encode { what, source })
}

/// Decodes a payload made by [`encode`]; `what` names it in errors.
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    payload: &RaftPayload,
) -> Result<T, TransportError> {
    postcard::from_bytes(&payload.data).map_err(|source| TransportError::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Debug;

    use openraft::error::{Fatal, SnapshotMismatch};
    use openraft::{
        CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotMeta, SnapshotSegmentId,
        StoredMembership, Vote,
    };

    use super::*;
    use crate::types::Entry;

    fn round_trip<T>(what: &'static str, value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let payload = encode(what, value).expect("encodes");
        let back: T = decode(what, &payload).expect("decodes");
        assert_eq!(&back, value, "{what} changed in a round trip");
    }

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn node(n: u64) -> LeaseNode {
        LeaseNode {
            raft_addr: format!("10.0.0.{n}:7001"),
            api_addr: format!("10.0.0.{n}:7000"),
        }
    }

    fn membership() -> Membership<NodeId, LeaseNode> {
        let nodes: BTreeMap<NodeId, LeaseNode> = (1..=3).map(|n| (n, node(n))).collect();
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    fn snapshot_meta() -> SnapshotMeta<NodeId, LeaseNode> {
        SnapshotMeta {
            last_log_id: Some(log_id(3, 1, 40)),
            last_membership: StoredMembership::new(Some(log_id(1, 1, 1)), membership()),
            snapshot_id: "3-1-40-7".to_string(),
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                log_id: log_id(3, 1, 41),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(3, 1, 42),
                payload: EntryPayload::Normal(leasehold_core::Command::OpenSession {
                    client_name: "worker-7".to_string(),
                    ttl_ms: 10_000,
                    secret: leasehold_core::SessionSecret([2; 16]),
                    request_id: 0,
                }),
            },
            Entry {
                log_id: log_id(3, 1, 43),
                payload: EntryPayload::Membership(membership()),
            },
        ]
    }

    #[test]
    fn append_entries_request_round_trips() {
        let req = AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(3, 1, 40)),
            entries: entries(),
            leader_commit: Some(log_id(3, 1, 39)),
        };
        let payload = encode("append_entries request", &req).expect("encodes");
        let back: AppendEntriesRequest =
            decode("append_entries request", &payload).expect("decodes");
        // AppendEntriesRequest has no PartialEq of its own; compare by parts.
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.prev_log_id, req.prev_log_id);
        assert_eq!(back.entries, req.entries);
        assert_eq!(back.leader_commit, req.leader_commit);
    }

    #[test]
    fn append_entries_replies_round_trip() {
        let replies: Vec<AppendEntriesReply> = vec![
            Ok(AppendEntriesResponse::Success),
            Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(
                3, 1, 42,
            )))),
            Ok(AppendEntriesResponse::Conflict),
            Ok(AppendEntriesResponse::HigherVote(Vote::new(4, 2))),
            Err(RaftError::Fatal(Fatal::Stopped)),
            Err(RaftError::Fatal(Fatal::Panicked)),
        ];
        for reply in &replies {
            round_trip("append_entries reply", reply);
        }
    }

    #[test]
    fn vote_request_and_replies_round_trip() {
        round_trip(
            "vote request",
            &VoteRpc {
                vote: Vote::new(5, 2),
                last_log_id: Some(log_id(4, 1, 77)),
            },
        );
        round_trip(
            "vote request",
            &VoteRpc {
                vote: Vote::new(1, 3),
                last_log_id: None,
            },
        );
        let replies: Vec<VoteReply> = vec![
            Ok(VoteResponse::new(
                Vote::new(5, 2),
                Some(log_id(4, 1, 77)),
                true,
            )),
            Ok(VoteResponse::new(Vote::new_committed(6, 1), None, false)),
            Err(RaftError::Fatal(Fatal::Stopped)),
        ];
        for reply in &replies {
            round_trip("vote reply", reply);
        }
    }

    #[test]
    fn install_snapshot_request_and_replies_round_trip() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let req = InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: snapshot_meta(),
            offset: 3 * 1024 * 1024,
            data: data.clone(),
            done: true,
        };
        let payload = encode("install_snapshot request", &req).expect("encodes");
        // Compact: the chunk is copied 1:1 plus a small header.
        assert!(
            payload.data.len() < data.len() + 512,
            "{}",
            payload.data.len()
        );
        let back: InstallSnapshotRequest =
            decode("install_snapshot request", &payload).expect("decodes");
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.meta, req.meta);
        assert_eq!(back.offset, req.offset);
        assert_eq!(back.data, data);
        assert!(back.done);

        let replies: Vec<InstallSnapshotReply> = vec![
            Ok(InstallSnapshotResponse {
                vote: Vote::new_committed(3, 1),
            }),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
                SnapshotMismatch {
                    expect: SnapshotSegmentId {
                        id: "a".to_string(),
                        offset: 0,
                    },
                    got: SnapshotSegmentId {
                        id: "b".to_string(),
                        offset: 7,
                    },
                },
            ))),
            Err(RaftError::Fatal(Fatal::Stopped)),
        ];
        for reply in &replies {
            round_trip("install_snapshot reply", reply);
        }
    }

    #[test]
    fn garbage_does_not_decode_as_a_request() {
        let payload = RaftPayload {
            data: vec![0xff; 3].into(),
        };
        let err = decode::<VoteRpc>("vote request", &payload).expect_err("garbage");
        assert!(matches!(
            err,
            TransportError::Decode {
                what: "vote request",
                ..
            }
        ));
        let empty = RaftPayload::default();
        assert!(decode::<AppendEntriesRequest>("append_entries request", &empty).is_err());
    }
}
