//! Writes the small seed inputs of every fuzz target into
//! `crates/leasehold-fuzz/seeds/<target>/` (committed; `cluster/fuzz.sh`
//! passes them to libFuzzer beside the growing corpus). Each seed is a
//! valid input made by the real encoders, so the fuzzer starts from inputs
//! that get past the first checks.
//!
//! Run: `cargo +nightly run --manifest-path crates/leasehold-fuzz/Cargo.toml --bin seeds`.

use std::path::{Path, PathBuf};

use leasehold_core::{
    Acquire, Command, LeaseConfig, LeaseState, Mode, SessionRef, SessionSecret, SessionTarget,
};
use leasehold_fuzz::requests::{self, SECRET_1, SECRET_2};
use leasehold_proto::v1 as pb;
use leasehold_raft::network::payload;
use leasehold_raft::store::{encode_record, Record};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, StoredMembership, Vote};
use prost::Message;

/// Writes one seed file.
fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

/// A request seed: the kind byte, then the protobuf bytes.
fn request(kind: u8, msg: &impl Message) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(msg.encode_to_vec());
    out
}

/// A small state with sessions, holders, a waiter and a recall.
fn sample_state() -> LeaseState {
    let mut state = requests::state();
    state.apply(
        5,
        &Command::Batch(vec![
            Command::Acquire(Acquire {
                session: SessionTarget::Existing(SessionRef {
                    id: 1,
                    secret: SECRET_1,
                }),
                resource: "b".into(),
                mode: Mode::Shared,
                wait: false,
                metadata: b"m".to_vec(),
            }),
            Command::Recall {
                resource: "a".into(),
                reason: "drain".into(),
            },
        ]),
    );
    state
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");

    // request_validation: one valid request of each kind.
    let t = "request_validation";
    write(
        &dir,
        t,
        "open_session",
        &request(
            0,
            &pb::OpenSessionRequest {
                client_name: "w".into(),
                ttl_ms: 10_000,
                request_id: 7,
            },
        ),
    )?;
    let close = pb::CloseSessionRequest {
        session_id: 2,
        session_secret: SECRET_2.0.to_vec().into(),
    };
    write(&dir, t, "close_session", &request(1, &close))?;
    let acquire = pb::AcquireRequest {
        session_id: 1,
        resource: "b".into(),
        mode: pb::Mode::Shared as i32,
        wait_timeout_ms: 0,
        metadata: b"m".to_vec().into(),
        ttl_ms: 0,
        client_name: String::new(),
        session_secret: SECRET_1.0.to_vec().into(),
        request_id: 0,
    };
    write(&dir, t, "acquire", &request(2, &acquire))?;
    let one_call = pb::AcquireRequest {
        session_id: 0,
        resource: "a".into(),
        wait_timeout_ms: 5_000,
        ttl_ms: 10_000,
        client_name: "one-call".into(),
        request_id: 3,
        ..acquire.clone()
    };
    write(&dir, t, "acquire_one_call", &request(2, &one_call))?;
    let release = pb::ReleaseRequest {
        session_id: 1,
        resource: "a".into(),
        session_secret: SECRET_1.0.to_vec().into(),
    };
    write(&dir, t, "release", &request(3, &release))?;
    write(
        &dir,
        t,
        "get",
        &request(
            4,
            &pb::GetRequest {
                resource: "a".into(),
            },
        ),
    )?;
    let list = pb::ListRequest {
        prefix: "a".into(),
        page_size: 10,
        page_token: String::new(),
    };
    write(&dir, t, "list", &request(5, &list))?;
    let sessions = pb::ListSessionsRequest {
        page_size: 10,
        page_token: "1".into(),
    };
    write(&dir, t, "list_sessions", &request(6, &sessions))?;
    let watch = pb::WatchRequest {
        prefix: "a".into(),
        start_revision: 3,
    };
    write(&dir, t, "watch", &request(7, &watch))?;
    let keepalive = pb::KeepAliveRequest {
        session_ids: vec![1, 2],
        session_secrets: vec![SECRET_1.0.to_vec().into(), SECRET_2.0.to_vec().into()],
    };
    write(&dir, t, "keepalive", &request(8, &keepalive))?;
    let recall = pb::RecallRequest {
        resource: "a".into(),
        reason: "drain".into(),
    };
    write(&dir, t, "recall", &request(9, &recall))?;
    let set_config = pb::SetConfigRequest {
        config: Some(pb::LeaseConfig {
            ttl_ms_min: 2_000,
            ttl_ms_max: 60_000,
            drift_ppm: 10_000,
            grace_margin_ms: 500,
            vote_window_ms: 600,
        }),
    };
    write(&dir, t, "set_config", &request(10, &set_config))?;
    let membership = pb::ChangeMembershipRequest {
        voters: vec![pb::Member {
            node_id: 1,
            raft_addr: "127.0.0.1:7001".into(),
            api_addr: "127.0.0.1:7000".into(),
            learner: false,
        }],
        catch_up_timeout_ms: 0,
    };
    write(&dir, t, "change_membership", &request(11, &membership))?;

    // apply_commands: a few byte patterns (the generator reads any bytes).
    let t = "apply_commands";
    write(&dir, t, "zeros", &[0u8; 64])?;
    write(&dir, t, "counting", &(0..=255u8).collect::<Vec<_>>())?;
    write(&dir, t, "sevens", &[7u8; 96])?;

    // snapshot_decode: a v3 snapshot (current), the same state as v2, and
    // an empty state; each followed by a few command bytes.
    let t = "snapshot_decode";
    let state = sample_state();
    let v3 = state.encode();
    let with_len = |snapshot: &[u8]| {
        let mut out = (snapshot.len() as u16).to_le_bytes().to_vec();
        out.extend_from_slice(snapshot);
        out.extend_from_slice(&[3, 1, 4, 1, 5, 9, 2, 6]);
        out
    };
    write(&dir, t, "v3", &with_len(&v3))?;
    let sessions: Vec<_> = state.sessions().cloned().collect();
    let resources: Vec<_> = state
        .resources()
        .map(|(n, r)| (n.clone(), r.clone()))
        .collect();
    // Version 2's body: config, revision, sessions, resources (no position).
    let mut v2 = b"LHSM".to_vec();
    v2.extend_from_slice(&2u32.to_be_bytes());
    v2.extend(
        postcard::to_stdvec(&(state.config(), state.revision(), &sessions, &resources))
            .map_err(std::io::Error::other)?,
    );
    write(&dir, t, "v2", &with_len(&v2))?;
    write(
        &dir,
        t,
        "empty",
        &with_len(&LeaseState::new(LeaseConfig::default()).encode()),
    )?;

    // store_records: one record of every kind.
    let t = "store_records";
    let entry = |index, payload| openraft::Entry::<leasehold_raft::TypeConfig> {
        log_id: log_id(2, index),
        payload,
    };
    let nodes = std::collections::BTreeMap::from([(
        1u64,
        leasehold_raft::LeaseNode {
            raft_addr: "127.0.0.1:7001".into(),
            api_addr: "127.0.0.1:7000".into(),
        },
    )]);
    let membership = Membership::new(vec![std::collections::BTreeSet::from([1u64])], nodes);
    let session = state
        .session(1)
        .cloned()
        .ok_or_else(|| std::io::Error::other("no session 1"))?;
    let (name, resource) = state
        .resources()
        .next()
        .map(|(n, r)| (n.clone(), r.clone()))
        .ok_or_else(|| std::io::Error::other("no resource"))?;
    let records = [
        ("format_version", Record::FormatVersion(4)),
        ("vote", Record::Vote(Vote::new_committed(2, 1))),
        ("committed", Record::Committed(log_id(2, 9))),
        ("last_purged", Record::LastPurged(log_id(1, 3))),
        ("last_applied", Record::LastApplied(log_id(2, 9))),
        (
            "last_membership",
            Record::LastMembership(StoredMembership::new(
                Some(log_id(1, 1)),
                membership.clone(),
            )),
        ),
        ("revision", Record::Revision(5)),
        ("position", Record::Position(6)),
        ("installing", Record::Installing(log_id(2, 8))),
        (
            "log_command",
            Record::Log(entry(
                9,
                EntryPayload::Normal(Command::OpenSession {
                    client_name: "w".into(),
                    ttl_ms: 10_000,
                    secret: SessionSecret([9; 16]),
                    request_id: 0,
                }),
            )),
        ),
        ("log_blank", Record::Log(entry(10, EntryPayload::Blank))),
        (
            "log_membership",
            Record::Log(entry(11, EntryPayload::Membership(membership.clone()))),
        ),
        ("session", Record::Session(session)),
        ("resource", Record::Resource { name, resource }),
        ("config", Record::Config(LeaseConfig::default())),
        (
            "snapshot",
            Record::Snapshot {
                meta: openraft::SnapshotMeta {
                    last_log_id: Some(log_id(2, 9)),
                    last_membership: StoredMembership::new(Some(log_id(1, 1)), membership.clone()),
                    snapshot_id: "2-1-9-1".into(),
                },
                seq: 1,
                data: v3.clone(),
            },
        ),
    ];
    for (name, record) in &records {
        let (key, value) = encode_record(record).map_err(std::io::Error::other)?;
        let mut seed = vec![key.len() as u8];
        seed.extend(key);
        seed.extend(value);
        write(&dir, t, name, &seed)?;
    }

    // peer_messages: one valid payload per message kind.
    let t = "peer_messages";
    let peer = |kind: u8, p: leasehold_proto::raft::v1::RaftPayload| {
        let mut out = vec![kind];
        out.extend(p.encode_to_vec());
        out
    };
    let append = payload::AppendEntriesRequest {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(2, 8)),
        entries: vec![
            entry(
                9,
                EntryPayload::Normal(Command::OpenSession {
                    client_name: "w".into(),
                    ttl_ms: 10_000,
                    secret: SessionSecret([9; 16]),
                    request_id: 0,
                }),
            ),
            entry(
                10,
                EntryPayload::Normal(Command::Acquire(Acquire {
                    session: SessionTarget::Existing(SessionRef {
                        id: 9,
                        secret: SessionSecret([9; 16]),
                    }),
                    resource: "a".into(),
                    mode: Mode::Exclusive,
                    wait: false,
                    metadata: Vec::new(),
                })),
            ),
            entry(11, EntryPayload::Blank),
        ],
        leader_commit: Some(log_id(2, 8)),
    };
    let enc = |what, v: &dyn erased::Encode| v.encode(what).map_err(std::io::Error::other);
    write(
        &dir,
        t,
        "append_entries",
        &peer(0, enc("append_entries request", &append)?),
    )?;
    let vote = payload::VoteRpc {
        vote: Vote::new(3, 2),
        last_log_id: Some(log_id(2, 11)),
    };
    write(&dir, t, "vote", &peer(1, enc("vote request", &vote)?))?;
    let install = payload::InstallSnapshotRequest {
        vote: Vote::new_committed(2, 1),
        meta: openraft::SnapshotMeta {
            last_log_id: Some(log_id(2, 9)),
            last_membership: StoredMembership::new(Some(log_id(1, 1)), membership),
            snapshot_id: "2-1-9-1".into(),
        },
        offset: 0,
        data: v3,
        done: true,
    };
    write(
        &dir,
        t,
        "install_snapshot",
        &peer(2, enc("install_snapshot request", &install)?),
    )?;
    let reply: payload::AppendEntriesReply = Ok(openraft::raft::AppendEntriesResponse::Success);
    write(
        &dir,
        t,
        "append_entries_reply",
        &peer(3, enc("append_entries reply", &reply)?),
    )?;
    let reply: payload::VoteReply = Ok(openraft::raft::VoteResponse::new(
        Vote::new(3, 2),
        Some(log_id(2, 11)),
        true,
    ));
    write(&dir, t, "vote_reply", &peer(4, enc("vote reply", &reply)?))?;
    let reply: payload::InstallSnapshotReply = Ok(openraft::raft::InstallSnapshotResponse {
        vote: Vote::new_committed(2, 1),
    });
    write(
        &dir,
        t,
        "install_snapshot_reply",
        &peer(5, enc("install_snapshot reply", &reply)?),
    )?;
    // The known case: 64 zero bytes are a valid AppendEntries.
    write(
        &dir,
        t,
        "zeros_append_entries",
        &peer(
            0,
            leasehold_proto::raft::v1::RaftPayload {
                data: vec![0; 64].into(),
            },
        ),
    )?;
    println!("seeds written to {}", dir.display());
    Ok(())
}

/// Encoding any payload type through one closure.
mod erased {
    use leasehold_proto::raft::v1::RaftPayload;
    use leasehold_raft::network::{payload, TransportError};

    /// A value `payload::encode` accepts.
    pub trait Encode {
        /// Encodes it as the peer transport does.
        fn encode(&self, what: &'static str) -> Result<RaftPayload, TransportError>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self, what: &'static str) -> Result<RaftPayload, TransportError> {
            payload::encode(what, self)
        }
    }
}
