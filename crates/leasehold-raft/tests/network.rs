//! The Raft peer transport end to end: real `openraft::Raft` nodes on the
//! sled store, served by `serve_peer` on loopback, called through
//! `PeerNetwork`/`PeerClient`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::{Acquire, Command, LeaseConfig, LeaseState, Mode, Response, SessionTarget};
use leasehold_raft::network::{
    peer_service, serve_peer, PeerClient, PeerNetwork, PeerNetworkConfig, BACKOFF_INITIAL,
    BACKOFF_MAX,
};
use leasehold_raft::store::{self, StateMachineStore};
use leasehold_raft::types::{Entry, LogId, StoredMembership, Vote};
use leasehold_raft::{LeaseNode, NodeId, Raft};
use openraft::error::{RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    CommittedLeaderId, Config, EntryPayload, Membership, RPCTypes, ServerState, SnapshotMeta,
    SnapshotPolicy,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MIB: usize = 1024 * 1024;

/// A node: a real Raft on the sled store, served on an ephemeral port.
struct Node {
    id: NodeId,
    raft: Raft,
    state_machine: StateMachineStore,
    lease_node: LeaseNode,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), leasehold_raft::network::TransportError>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(id: NodeId, config: Config) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, state_machine) = store::open(dir.path()).expect("open store");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let network = PeerNetwork::new(id, PeerNetworkConfig::default());
        let raft = Raft::new(
            id,
            Arc::new(config.validate().expect("valid config")),
            network,
            log,
            state_machine.clone(),
        )
        .await
        .expect("raft starts");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_peer(listener, raft.clone(), async move {
            let _ = stopped.await;
        }));
        Node {
            id,
            raft,
            state_machine,
            lease_node: LeaseNode {
                raft_addr: addr.to_string(),
                api_addr: "127.0.0.1:1".to_string(),
            },
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let served = server.await.expect("server task");
            assert!(served.is_ok(), "server stopped with {served:?}");
        }
        self.raft.shutdown().await.expect("raft shuts down");
    }
}

/// A config with elections off, so tests drive votes themselves.
fn passive_config() -> Config {
    Config {
        enable_elect: false,
        enable_heartbeat: false,
        ..Config::default()
    }
}

/// A client to `target` from a (notional) node 2.
async fn client_to(target: &Node, config: PeerNetworkConfig) -> PeerClient {
    PeerNetwork::new(2, config)
        .new_client(target.id, &target.lease_node)
        .await
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(5))
}

fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

#[tokio::test]
async fn vote_round_trips_through_the_network_to_a_real_raft() {
    let node = Node::start(1, passive_config()).await;
    let mut client = client_to(&node, PeerNetworkConfig::default()).await;

    let granted = client
        .vote(VoteRequest::new(Vote::new(2, 2), None), option())
        .await
        .expect("vote answered");
    assert!(granted.vote_granted, "{granted:?}");
    assert_eq!(granted.vote, Vote::new(2, 2));

    // A candidate of an older term is refused, and the reply names the vote
    // the node holds.
    let mut rival = PeerNetwork::new(3, PeerNetworkConfig::default())
        .new_client(node.id, &node.lease_node)
        .await;
    let refused = rival
        .vote(VoteRequest::new(Vote::new(1, 3), None), option())
        .await
        .expect("vote answered");
    assert!(!refused.vote_granted, "{refused:?}");
    assert_eq!(refused.vote, Vote::new(2, 2));

    // The remote Raft saw it too.
    node.raft
        .wait(Some(Duration::from_secs(5)))
        .vote(Vote::new(2, 2), "vote recorded")
        .await
        .expect("vote recorded");

    node.stop().await;
}

#[tokio::test]
async fn one_channel_per_peer_is_reused_across_clients() {
    use futures::StreamExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let node = Node::start(1, passive_config()).await;
    // A second server for the same Raft that counts TCP connections.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(peer_service(node.raft.clone()))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            }),
    );
    let target = LeaseNode {
        raft_addr: addr.to_string(),
        api_addr: String::new(),
    };

    // Many clients, as openraft makes them, all over one connection.
    let mut network = PeerNetwork::new(2, PeerNetworkConfig::default());
    for term in 1..=20 {
        let mut client = network.new_client(node.id, &target).await;
        let reply = client
            .vote(VoteRequest::new(Vote::new(term, 2), None), option())
            .await
            .expect("vote answered");
        assert!(reply.vote_granted);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // Another factory (another node) has its own connection.
    let mut other = PeerNetwork::new(3, PeerNetworkConfig::default())
        .new_client(node.id, &target)
        .await;
    other
        .vote(VoteRequest::new(Vote::new(1, 3), None), option())
        .await
        .expect("vote answered");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    let _ = stop.send(());
    server.await.expect("server task").expect("server ran");
    node.stop().await;
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);

    let target = LeaseNode {
        raft_addr: addr.to_string(),
        api_addr: String::new(),
    };
    let mut client = PeerNetwork::new(2, PeerNetworkConfig::default())
        .new_client(1, &target)
        .await;
    let started = Instant::now();
    let err = client
        .vote(VoteRequest::new(Vote::new(1, 2), None), option())
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // AppendEntries too (the heartbeat path).
    let err = client
        .append_entries(
            AppendEntriesRequest {
                vote: Vote::new_committed(1, 2),
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            },
            option(),
        )
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // openraft then waits out our capped exponential backoff.
    let pauses: Vec<Duration> = client.backoff().take(8).collect();
    assert_eq!(pauses[0], BACKOFF_INITIAL);
    assert_eq!(pauses[1], BACKOFF_INITIAL * 2);
    assert_eq!(pauses[7], BACKOFF_MAX);
}

#[tokio::test]
async fn an_invalid_address_is_unreachable_not_a_panic() {
    let target = LeaseNode {
        raft_addr: "bad host:port:x".to_string(),
        api_addr: String::new(),
    };
    let mut client = PeerNetwork::new(2, PeerNetworkConfig::default())
        .new_client(1, &target)
        .await;
    let err = client
        .vote(VoteRequest::new(Vote::new(1, 2), None), option())
        .await
        .expect_err("bad address");
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn a_call_past_its_hard_ttl_is_a_timeout() {
    // A listener that accepts TCP but never speaks HTTP/2.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let target = LeaseNode {
        raft_addr: addr.to_string(),
        api_addr: String::new(),
    };
    let mut client = PeerNetwork::new(2, PeerNetworkConfig::default())
        .new_client(1, &target)
        .await;
    let ttl = Duration::from_millis(200);
    let started = Instant::now();
    let err = client
        .vote(VoteRequest::new(Vote::new(1, 2), None), RPCOption::new(ttl))
        .await
        .expect_err("silent peer");
    match err {
        RPCError::Timeout(timeout) => {
            assert_eq!(timeout.action, RPCTypes::Vote);
            assert_eq!((timeout.id, timeout.target), (2, 1));
            assert_eq!(timeout.timeout, ttl);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
}

/// Entries at indexes `0..count` (a pristine log starts at 0).
fn big_entries(count: u64, name_bytes: usize) -> Vec<Entry> {
    (0..count)
        .map(|index| Entry {
            log_id: log_id(1, 2, index),
            payload: EntryPayload::Normal(Command::OpenSession {
                client_name: "n".repeat(name_bytes),
                ttl_ms: 10_000,
                secret: leasehold_core::SessionSecret([2; 16]),
                request_id: 0,
            }),
        })
        .collect()
}

#[tokio::test]
async fn an_oversized_append_entries_asks_openraft_to_split_it() {
    let node = Node::start(1, passive_config()).await;
    let small = PeerNetworkConfig {
        message_bytes_max: 64 * 1024,
        ..PeerNetworkConfig::default()
    };
    let mut client = client_to(&node, small).await;
    // 10 entries of ~10 KiB: over the 64 KiB limit of this client.
    let err = client
        .append_entries(
            AppendEntriesRequest {
                vote: Vote::new_committed(1, 2),
                prev_log_id: None,
                entries: big_entries(10, 10_000),
                leader_commit: None,
            },
            option(),
        )
        .await
        .expect_err("too large");
    match err {
        RPCError::PayloadTooLarge(too_large) => {
            assert_eq!(too_large.action(), RPCTypes::AppendEntries);
            assert_eq!(too_large.entries_hint(), 5);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // Nothing reached the Raft.
    assert_eq!(node.raft.metrics().borrow().last_log_index, None);
    node.stop().await;
}

/// Several entries over the AppendEntries bound (1 MiB by default) are
/// split by openraft; one entry over it still goes out whole.
#[tokio::test]
async fn several_entries_over_the_append_entries_bound_are_split_one_is_sent() {
    let node = Node::start(1, passive_config()).await;
    let mut client = client_to(&node, PeerNetworkConfig::default()).await;
    // 3 entries of ~600 KiB: 1.8 MiB, far below the 64 MiB message limit.
    let err = client
        .append_entries(
            AppendEntriesRequest {
                vote: Vote::new_committed(1, 2),
                prev_log_id: None,
                entries: big_entries(3, 600 * 1024),
                leader_commit: None,
            },
            option(),
        )
        .await
        .expect_err("over the AppendEntries bound");
    match err {
        RPCError::PayloadTooLarge(too_large) => assert_eq!(too_large.entries_hint(), 1),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(node.raft.metrics().borrow().last_log_index, None);
    // One entry of 1.5 MiB is sent and appended.
    client
        .append_entries(
            AppendEntriesRequest {
                vote: Vote::new_committed(1, 2),
                prev_log_id: None,
                entries: big_entries(1, 1536 * 1024),
                leader_commit: None,
            },
            RPCOption::new(Duration::from_secs(10)),
        )
        .await
        .expect("a single entry goes out whole");
    assert_eq!(node.raft.metrics().borrow().last_log_index, Some(0));
    node.stop().await;
}

#[tokio::test]
async fn a_server_side_size_refusal_is_payload_too_large_too() {
    // The service mounted on a caller's own router with a small limit.
    let node = Node::start(1, passive_config()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let service = peer_service(node.raft.clone()).max_decoding_message_size(64 * 1024);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    let target = LeaseNode {
        raft_addr: addr.to_string(),
        api_addr: String::new(),
    };
    let mut client = PeerNetwork::new(2, PeerNetworkConfig::default())
        .new_client(1, &target)
        .await;
    let err = client
        .append_entries(
            AppendEntriesRequest {
                vote: Vote::new_committed(1, 2),
                prev_log_id: None,
                entries: big_entries(8, 10_000),
                leader_commit: None,
            },
            option(),
        )
        .await
        .expect_err("too large for the server");
    assert!(matches!(err, RPCError::PayloadTooLarge(_)), "{err:?}");

    // Within the limit the same path works and reaches the Raft.
    let reply = client
        .append_entries(
            AppendEntriesRequest {
                vote: Vote::new_committed(1, 2),
                prev_log_id: None,
                entries: big_entries(2, 10_000),
                leader_commit: None,
            },
            option(),
        )
        .await
        .expect("accepted");
    assert!(reply.is_success(), "{reply:?}");
    node.raft
        .wait(Some(Duration::from_secs(5)))
        .log_index(Some(1), "entries appended")
        .await
        .expect("entries reached the raft log");

    let _ = stop.send(());
    server.await.expect("server task").expect("server ran");
    node.stop().await;
}

#[tokio::test]
async fn a_remote_raft_error_is_a_remote_error() {
    let node = Node::start(1, passive_config()).await;
    let mut client = client_to(&node, PeerNetworkConfig::default()).await;
    node.raft.shutdown().await.expect("raft shuts down");
    // The server still runs, but its Raft is gone: a Fatal error on the
    // remote side, reported as such rather than as a transport problem.
    let err = client
        .vote(VoteRequest::new(Vote::new(1, 2), None), option())
        .await
        .expect_err("raft stopped");
    match err {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 1);
            assert_eq!(remote.target_node.as_ref(), Some(&node.lease_node));
            assert!(matches!(remote.source, RaftError::Fatal(_)), "{remote:?}");
        }
        other => panic!("expected RemoteError, got {other:?}"),
    }
    node.stop().await;
}

/// A lease state of 100,000 sessions with ~100-byte client names: its
/// encoding is over 8 MiB.
fn big_lease_state() -> Vec<u8> {
    let mut state = LeaseState::new(LeaseConfig::default());
    for index in 1..=100_000u64 {
        let applied = state.apply(
            index,
            &Command::OpenSession {
                client_name: format!("client-{index:08}-{}", "x".repeat(84)),
                ttl_ms: 10_000,
                secret: leasehold_core::SessionSecret([2; 16]),
                request_id: 0,
            },
        );
        assert!(
            matches!(applied.response, Response::SessionOpened { .. }),
            "{:?}",
            applied.response
        );
    }
    assert_eq!(state.session_count(), 100_000);
    state.encode()
}

#[tokio::test]
async fn a_snapshot_over_8_mib_installs_chunk_by_chunk() {
    let data = big_lease_state();
    assert!(data.len() >= 8 * MIB, "only {} bytes", data.len());

    let node = Node::start(1, passive_config()).await;
    let mut client = client_to(&node, PeerNetworkConfig::default()).await;

    let leader_vote = Vote::new_committed(1, 2);
    let nodes: BTreeMap<NodeId, LeaseNode> = [(1, node.lease_node.clone())].into();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 2, 100_000)),
        last_membership: StoredMembership::new(
            Some(log_id(1, 2, 1)),
            Membership::new(vec![BTreeSet::from([2])], nodes),
        ),
        snapshot_id: "net-test-1".to_string(),
    };

    // 4 MiB chunks: each one alone is at tonic's default limit already.
    let chunk_bytes = 4 * MIB;
    let mut offset = 0usize;
    let mut chunks = 0;
    while offset < data.len() {
        let end = (offset + chunk_bytes).min(data.len());
        let reply = client
            .install_snapshot(
                InstallSnapshotRequest {
                    vote: leader_vote,
                    meta: meta.clone(),
                    offset: offset as u64,
                    data: data[offset..end].to_vec(),
                    done: end == data.len(),
                },
                RPCOption::new(Duration::from_secs(30)),
            )
            .await
            .unwrap_or_else(|e| panic!("chunk at {offset} refused: {e:?}"));
        // The reply carries the follower's vote from before the chunk: a
        // higher one would mean the chunk was refused.
        assert!(reply.vote <= leader_vote, "{reply:?}");
        offset = end;
        chunks += 1;
    }
    assert!(chunks >= 2, "{chunks}");

    // The follower installed it: metrics and the state machine agree.
    node.raft
        .wait(Some(Duration::from_secs(30)))
        .snapshot(log_id(1, 2, 100_000), "snapshot installed")
        .await
        .expect("snapshot installed");
    assert_eq!(
        node.state_machine.read(|state| state.session_count()),
        100_000
    );
    assert_eq!(
        node.state_machine.last_applied(),
        Some(log_id(1, 2, 100_000))
    );
    node.stop().await;
}

/// Leader and follower over the real transport: replication, then a
/// snapshot the leader must send because the log it needs is purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_replicate_and_ship_a_snapshot_over_the_transport() {
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        install_snapshot_timeout: 5_000,
        snapshot_max_chunk_size: 2 * MIB as u64,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    let leader = Node::start(1, config.clone()).await;
    leader
        .raft
        .initialize(BTreeMap::from([(1, leader.lease_node.clone())]))
        .await
        .expect("initialize");
    leader
        .raft
        .wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "leader")
        .await
        .expect("leader elected");

    // 8 sessions holding 4,800 leases with 500-byte names and 1 KiB of
    // metadata: over 8 MiB of state in under 5,000 entries.
    let started = Instant::now();
    let mut sessions = Vec::new();
    for s in 0..8 {
        let opened = leader
            .raft
            .client_write(Command::OpenSession {
                client_name: format!("holder-{s}"),
                ttl_ms: 10_000,
                secret: leasehold_core::SessionSecret([2; 16]),
                request_id: 0,
            })
            .await
            .expect("open session");
        match opened.data {
            Response::SessionOpened { session, .. } => sessions.push(session),
            other => panic!("expected SessionOpened, got {other:?}"),
        }
    }
    let leases = 4_800usize;
    let writers = 48usize;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let raft = leader.raft.clone();
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..leases).step_by(writers) {
                let written = raft
                    .client_write(Command::Acquire(Acquire {
                        session: SessionTarget::Existing(leasehold_core::SessionRef {
                            id: sessions[i % sessions.len()],
                            secret: leasehold_core::SessionSecret([2; 16]),
                        }),
                        resource: format!("{i:08}{}", "r".repeat(492)),
                        mode: Mode::Exclusive,
                        wait: false,
                        metadata: vec![(i % 251) as u8; 1024],
                    }))
                    .await
                    .expect("write");
                assert!(
                    matches!(written.data, Response::Acquired { .. }),
                    "{:?}",
                    written.data
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    eprintln!("wrote {leases} leases in {:?}", started.elapsed());
    let resources = |sm: &StateMachineStore| sm.read(|state| state.resources().count());
    // Index 0 is the membership, 1 the leader's blank entry.
    let last_index = 1 + sessions.len() as u64 + leases as u64;
    let last = leader
        .raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index(Some(last_index), "all applied")
        .await
        .expect("all applied")
        .last_applied
        .expect("applied");
    assert_eq!(resources(&leader.state_machine), leases);
    let state_bytes = leader.state_machine.read(|state| state.encode().len());
    assert!(state_bytes >= 8 * MIB, "only {state_bytes} bytes");

    // Snapshot and purge everything, so a new member can only catch up by
    // snapshot.
    leader.raft.trigger().snapshot().await.expect("trigger");
    leader
        .raft
        .wait(Some(Duration::from_secs(30)))
        .snapshot(last, "snapshot built")
        .await
        .expect("snapshot built");
    leader
        .raft
        .trigger()
        .purge_log(last.index)
        .await
        .expect("purge");
    leader
        .raft
        .wait(Some(Duration::from_secs(30)))
        .purged(Some(last), "purged")
        .await
        .expect("purged");

    let follower = Node::start(2, config).await;
    leader
        .raft
        .add_learner(2, follower.lease_node.clone(), true)
        .await
        .expect("add learner");
    follower
        .raft
        .wait(Some(Duration::from_secs(60)))
        .snapshot(last, "snapshot received")
        .await
        .expect("follower got the snapshot");
    eprintln!("snapshot shipped after {:?}", started.elapsed());
    assert_eq!(resources(&follower.state_machine), leases);
    assert_eq!(
        follower.state_machine.read(|state| state.encode()),
        leader.state_machine.read(|state| state.encode())
    );

    // Promote it and keep writing: AppendEntries over the transport.
    leader
        .raft
        .change_membership(BTreeSet::from([1, 2]), false)
        .await
        .expect("change membership");
    let written = leader
        .raft
        .client_write(Command::OpenSession {
            client_name: "after-snapshot".to_string(),
            ttl_ms: 10_000,
            secret: leasehold_core::SessionSecret([2; 16]),
            request_id: 0,
        })
        .await
        .expect("write after promotion");
    follower
        .raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(written.log_id.index), "replicated")
        .await
        .expect("follower applied the write");
    assert_eq!(
        follower.state_machine.read(|state| state.session_count()),
        sessions.len() + 1
    );

    follower.stop().await;
    leader.stop().await;
}
