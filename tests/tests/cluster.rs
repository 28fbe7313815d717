//! Three real nodes over real gRPC on 127.0.0.1: replication, leader loss,
//! catch-up from the log and from a snapshot, whole-cluster restart.

use leasehold_core::{Acquire, Command, Mode, Response, SessionRef, SessionSecret, SessionTarget};
use leasehold_server::Admission;

/// The secret every session these tests open directly is given.
const S: SessionSecret = SessionSecret([3; 16]);
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};

/// Nobody keeps these sessions alive: their TTL outlasts any test here,
/// even on a loaded machine, so the leader never expires them mid-test.
fn open(name: &str) -> Command {
    Command::OpenSession {
        client_name: name.into(),
        ttl_ms: 120_000,
        secret: S,
        request_id: 0,
    }
}

fn acquire(session: u64, resource: &str, mode: Mode, wait: bool) -> Command {
    Command::Acquire(Acquire {
        session: SessionTarget::Existing(SessionRef {
            id: session,
            secret: S,
        }),
        resource: resource.into(),
        mode,
        wait,
        metadata: format!("holder-{session}").into_bytes(),
    })
}

async fn open_session(c: &TestCluster, name: &str) -> anyhow::Result<u64> {
    match c.propose(open(name)).await? {
        (_, Response::SessionOpened { session, .. }) => Ok(session),
        (_, other) => anyhow::bail!("open failed: {other:?}"),
    }
}

async fn grant_token(c: &TestCluster, cmd: Command) -> anyhow::Result<u64> {
    match c.propose(cmd).await? {
        (index, Response::Acquired { grant, .. }) => {
            assert_eq!(grant.lease.token, index, "token is the granting index");
            Ok(grant.lease.token)
        }
        (_, other) => anyhow::bail!("acquire failed: {other:?}"),
    }
}

/// Asserts every running node holds byte-identical state.
fn assert_same_state(c: &TestCluster) -> anyhow::Result<Vec<u8>> {
    let mut bytes = None;
    for node in c.running() {
        let b = c.state_bytes(node.id())?;
        match &bytes {
            None => bytes = Some(b),
            Some(first) => assert_eq!(first, &b, "node {} diverged", node.id()),
        }
    }
    bytes.ok_or_else(|| anyhow::anyhow!("no running node"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_replicate_to_all_three() -> anyhow::Result<()> {
    let c = TestCluster::start(ClusterOptions::default()).await?;
    let a = open_session(&c, "alpha").await?;
    let b = open_session(&c, "beta").await?;
    let t1 = grant_token(&c, acquire(a, "db/primary", Mode::Exclusive, false)).await?;
    let (_, queued) = c
        .propose(acquire(b, "db/primary", Mode::Exclusive, true))
        .await?;
    assert!(matches!(queued, Response::Queued { position: 0, .. }));
    let (last, released) = c
        .propose(Command::Release {
            session: SessionRef { id: a, secret: S },
            resource: "db/primary".into(),
        })
        .await?;
    assert!(matches!(released, Response::Released { .. }));
    c.wait_all_applied(last).await?;
    assert_same_state(&c)?;
    for node in c.running() {
        let (holder, token, meta) = node
            .read(|s| {
                let lease = s
                    .resource("db/primary")
                    .and_then(|r| r.holders.values().next().cloned());
                lease.map(|l| (l.session, l.token, l.metadata))
            })
            .ok_or_else(|| anyhow::anyhow!("node {} lost the lease", node.id()))?;
        assert_eq!(holder, b, "waiter got the lease on node {}", node.id());
        assert_eq!(token, last, "granted in the releasing entry");
        assert!(token > t1);
        assert_eq!(meta, format!("holder-{b}").into_bytes());
    }
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_new_leader_and_catch_up() -> anyhow::Result<()> {
    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    let s = open_session(&c, "survivor").await?;
    let t1 = grant_token(&c, acquire(s, "r1", Mode::Exclusive, false)).await?;

    let old = c.leader().await?;
    c.stop(old).await?;
    let new = c.leader().await?;
    assert_ne!(new, old, "a different node leads after the leader stopped");

    // The new leader keeps accepting commands; tokens keep growing.
    let t2 = grant_token(&c, acquire(s, "r2", Mode::Exclusive, false)).await?;
    assert!(t2 > t1, "token {t2} after failover is not above {t1}");
    let mut last = t2;
    for i in 0..20 {
        last = c.propose(open(&format!("after-{i}"))).await?.0;
    }

    // The old leader restarts from its data and catches up.
    c.restart(old).await?;
    c.wait_all_applied(last).await?;
    let state = assert_same_state(&c)?;
    let restored = leasehold_core::LeaseState::decode(&state)?;
    assert_eq!(restored.session_count(), 21);
    assert!(restored.resource("r1").is_some() && restored.resource("r2").is_some());
    c.shutdown().await
}

/// A follower stands for election as soon as the silent leader's vote
/// window has run out (`leasehold_server::election`), before openraft's
/// own timer (which waits the window plus a random election timeout); and
/// no follower stands while the leader is heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_stands_once_the_silent_leaders_window_ran_out() -> anyhow::Result<()> {
    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    let old = c.serving_leader().await?;
    let term = c.node(old)?.raft().metrics().borrow().current_term;
    // Longer than W plus the longest election timeout (1.2 s): commands
    // and heartbeats flow, and nobody stands.
    for i in 0..30 {
        c.propose(open(&format!("heard-{i}"))).await?;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for id in c.ids() {
        assert_eq!(
            c.node(id)?.metrics().prompt_elections_total,
            0,
            "node {id} stood while the leader was heard"
        );
    }
    assert_eq!(c.node(old)?.raft().metrics().borrow().current_term, term);

    c.stop(old).await?;
    let new = c.leader().await?;
    assert_ne!(new, old);
    assert!(
        c.node(new)?.metrics().prompt_elections_total >= 1,
        "the new leader was not elected by standing promptly"
    );
    let (index, _) = c.propose(open("after")).await?;
    c.wait_all_applied(index).await?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_node_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    let options = ClusterOptions {
        snapshot_every_entries: 50,
        log_entries_kept: 5,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::start(options).await?;
    let leader = c.leader().await?;
    let lagging = c.other_than(leader)?;
    let lag_log = c.node(lagging)?.raft().metrics().borrow().last_log_index;
    c.stop(lagging).await?;

    let mut last = 0;
    for i in 0..200 {
        last = c.propose(open(&format!("s{i}"))).await?.0;
    }
    // The leader snapshotted and purged past everything the lagging node has,
    // so the log alone cannot bring it back.
    let leader_node = c.node(c.leader().await?)?;
    let purged = wait_until("the leader to purge its log", WAIT, || async {
        let m = leader_node.raft().metrics().borrow().clone();
        m.purged
            .filter(|p| Some(p.index) > lag_log)
            .map(|p| p.index)
    })
    .await?;

    c.restart(lagging).await?;
    c.wait_all_applied(last).await?;
    let m = c.node(lagging)?.raft().metrics().borrow().clone();
    let snap = m
        .snapshot
        .ok_or_else(|| anyhow::anyhow!("no snapshot installed"))?;
    assert!(
        snap.index >= purged,
        "installed snapshot {snap} below purge {purged}"
    );
    assert_same_state(&c)?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_on_a_node_that_installs_a_snapshot_reports_the_gap() -> anyhow::Result<()> {
    use leasehold_proto::v1 as pb;
    use leasehold_tests::grpc::client;

    let options = ClusterOptions {
        snapshot_every_entries: 50,
        log_entries_kept: 5,
        ..ClusterOptions::default()
    };
    let c = TestCluster::start(options).await?;
    let leader = c.leader().await?;
    let cut = c.other_than(leader)?;
    let session = open_session(&c, "g").await?;
    let first = grant_token(&c, acquire(session, "g/r", Mode::Exclusive, false)).await?;
    c.wait_all_applied(first).await?;
    // A watcher on the node about to fall behind: it serves watches from
    // its own applied state, and has seen everything up to `first`.
    let ep = c.api_endpoint(cut)?;
    let mut watch = client(&ep)
        .await?
        .watch(pb::WatchRequest {
            prefix: "g/".into(),
            start_revision: first,
        })
        .await?
        .into_inner();
    let seen = watch.message().await?.expect("the acquisition");
    assert_eq!(seen.revision, first);
    let cut_log = c.node(cut)?.raft().metrics().borrow().last_log_index;
    c.isolate(cut, true)?;

    // Events it will never apply: the leader snapshots and purges past them.
    let mut last = first;
    for _ in 0..60 {
        c.propose(Command::Release {
            session: SessionRef {
                id: session,
                secret: S,
            },
            resource: "g/r".into(),
        })
        .await?;
        last = grant_token(&c, acquire(session, "g/r", Mode::Exclusive, false)).await?;
    }
    let leader_node = c.node(c.leader().await?)?;
    wait_until("the leader to purge past the cut node", WAIT, || async {
        let m = leader_node.raft().metrics().borrow().clone();
        m.purged.filter(|p| Some(p.index) > cut_log)
    })
    .await?;
    c.isolate(cut, false)?;
    c.wait_all_applied(last).await?;

    // Not silence: the watcher learns that events went missing here.
    let e = tokio::time::timeout(WAIT, async {
        loop {
            match watch.message().await {
                Ok(Some(ev)) => assert!(ev.revision > first, "replayed {ev:?}"),
                Ok(None) => anyhow::bail!("watch ended without an error"),
                Err(status) => return Ok(status),
            }
        }
    })
    .await??;
    assert_eq!(e.code(), tonic::Code::DataLoss, "{}", e.message());
    assert!(
        e.message().contains("installed a snapshot"),
        "{}",
        e.message()
    );
    // Resuming there from before the snapshot is refused, not half served.
    let mut api = client(&ep).await?;
    let resumed = api
        .watch(pb::WatchRequest {
            prefix: "g/".into(),
            start_revision: first + 1,
        })
        .await;
    let e = resumed.expect_err("history before the snapshot is gone");
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{}", e.message());
    // A node that applied every entry still serves the resume in full.
    let mut full = client(&c.api_endpoint(leader)?)
        .await?
        .watch(pb::WatchRequest {
            prefix: "g/".into(),
            start_revision: first + 1,
        })
        .await?
        .into_inner();
    let next = full.message().await?.expect("a replayed event");
    assert_eq!(next.revision, first + 1);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_recovers_every_session_and_lease() -> anyhow::Result<()> {
    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    let mut sessions = Vec::new();
    for i in 0..5 {
        sessions.push(open_session(&c, &format!("client-{i}")).await?);
    }
    let mut top = 0;
    for (i, s) in sessions.iter().enumerate() {
        top = grant_token(
            &c,
            acquire(*s, &format!("lock/{i}"), Mode::Exclusive, false),
        )
        .await?;
        grant_token(&c, acquire(*s, "config", Mode::Shared, false)).await?;
    }
    let (last, _) = c
        .propose(acquire(sessions[0], "lock/1", Mode::Exclusive, true))
        .await?;
    c.wait_all_applied(last).await?;
    let before = assert_same_state(&c)?;

    for id in c.ids() {
        c.stop(id).await?;
    }
    for id in c.ids() {
        c.restart(id).await?;
    }
    c.leader().await?;
    c.wait_all_applied(last).await?;
    let after = assert_same_state(&c)?;
    assert_eq!(before, after, "state after a full restart differs");

    // Service goes on, and tokens keep growing past every earlier grant.
    let fresh = open_session(&c, "fresh").await?;
    let t = grant_token(&c, acquire(fresh, "new", Mode::Exclusive, false)).await?;
    assert!(t > top && t > last);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_node_refuses_votes_for_the_leader_lease_window() -> anyhow::Result<()> {
    use leasehold_raft::network::{PeerNetwork, PeerNetworkConfig};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::VoteRequest;

    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    let leader = c.leader().await?;
    let follower = c.other_than(leader)?;
    c.stop(follower).await?;
    c.restart(follower).await?;
    let started = tokio::time::Instant::now();

    let target = c.node(follower)?;
    let node = target.config().me().expect("member").node.clone();
    let term = target.raft().metrics().borrow().current_term;
    let mut net = PeerNetwork::new(99, PeerNetworkConfig::default());
    let mut client = net.new_client(follower, &node).await;
    let ask = |term: u64| VoteRequest::new(openraft::Vote::new(term + 10, 99), None);
    let option = RPCOption::new(std::time::Duration::from_secs(1));

    // Right after the restart the vote is refused as if the node were unreachable.
    let early = client.vote(ask(term), option.clone()).await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(600),
        "test too slow to probe the window"
    );
    assert!(
        matches!(early, Err(openraft::error::RPCError::Unreachable(_))),
        "vote not refused right after restart: {early:?}"
    );
    // Once W × (1 + ρ) passed, the request reaches Raft and gets a real answer
    // (refused here, since this candidate's log is empty).
    let deadline = tokio::time::Instant::now() + WAIT;
    let answered = loop {
        if let Ok(reply) = client.vote(ask(term), option.clone()).await {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "votes refused for too long"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(!answered.vote_granted, "an empty-log candidate got a vote");
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    c.shutdown().await
}

/// A cluster that snapshots every 50 entries (keeping 5), with `sessions`
/// sessions opened and applied everywhere; returns it, a follower, and the
/// index of the last open.
async fn snapshotting_cluster_with_sessions(
    sessions: usize,
) -> anyhow::Result<(TestCluster, u64, u64)> {
    let options = ClusterOptions {
        snapshot_every_entries: 50,
        log_entries_kept: 5,
        ..ClusterOptions::default()
    };
    let c = TestCluster::start(options).await?;
    let mut last = 0;
    for i in 0..sessions {
        last = c.propose(open(&format!("before-{i}"))).await?.0;
    }
    let leader = c.leader().await?;
    let follower = c.other_than(leader)?;
    c.wait_all_applied(last).await?;
    Ok((c, follower, last))
}

/// The wipe procedure (docs/adr/0001-time-model.md §4): out of the
/// membership, wiped, restarted pristine under the same id, added back. It
/// needs no log reversion (openraft is built without
/// `loosen-follower-log-revert`, and this debug build keeps openraft's
/// `debug_assert!` on it): the leader dropped its progress for the id with
/// the removal and starts a fresh one when it is added again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_follower_rejoins_from_a_snapshot_and_nothing_is_lost() -> anyhow::Result<()> {
    let (mut c, victim, mut last) = snapshotting_cluster_with_sessions(150).await?;
    let before = assert_same_state(&c)?;
    // 1. Out of the membership: no leader keeps its progress, and its
    //    empty log will never count as a vote.
    let others: Vec<_> = c.ids().into_iter().filter(|id| *id != victim).collect();
    c.change_voters(&others).await?;
    // 2. Wiped and restarted pristine under the same id: it finds a formed
    //    cluster that does not list it, so it founds nothing and waits.
    c.stop(victim).await?;
    c.wipe(victim)?;
    c.restart(victim).await?;
    c.wait_admission(victim, Admission::AwaitingMembership)
        .await?;
    assert!(
        !c.node(victim)?.raft().is_initialized().await?,
        "the wiped node initialized a cluster of its own"
    );
    // The cluster keeps working meanwhile.
    for i in 0..20 {
        last = c.propose(open(&format!("after-{i}"))).await?.0;
    }
    // 3. Added back: learner, caught up from a snapshot, then voter.
    c.change_voters(&c.ids()).await?;
    c.wait_all_applied(last).await?;
    let after = assert_same_state(&c)?;
    let restored = leasehold_core::LeaseState::decode(&after)?;
    assert_eq!(
        restored.session_count(),
        170,
        "every acknowledged session survived"
    );
    let old = leasehold_core::LeaseState::decode(&before)?;
    for s in old.sessions() {
        assert!(restored.session(s.id).is_some(), "session {} lost", s.id);
    }
    let m = c.node(victim)?.raft().metrics().borrow().clone();
    assert!(
        m.snapshot.is_some(),
        "the wiped node was rebuilt from a snapshot"
    );
    // The change commits on a majority; the wiped node may append the
    // final configuration a moment later.
    c.node(victim)?
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| {
                m.membership_config
                    .membership()
                    .voter_ids()
                    .any(|id| id == victim)
            },
            "the wiped node votes again",
        )
        .await?;
    // Every Raft core is still healthy (no log-reversion panic).
    for node in c.running() {
        let m = node.raft().metrics().borrow().clone();
        assert!(
            m.running_state.is_ok(),
            "node {}: {:?}",
            node.id(),
            m.running_state
        );
    }
    c.shutdown().await
}

/// A wiped node restarted under its old id while the cluster still counts
/// it as a voter (the procedure skipped) neither founds a cluster again nor
/// answers the leader, which had matched its old log: it stays quarantined,
/// the other two carry on, and once the operator removes the id it waits
/// to be added back like any wiped node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_member_restarted_under_its_old_id_stays_out_until_removed() -> anyhow::Result<()> {
    let (mut c, victim, mut last) = snapshotting_cluster_with_sessions(60).await?;
    c.stop(victim).await?;
    c.wipe(victim)?;
    c.restart(victim).await?;
    c.wait_admission(victim, Admission::Quarantined).await?;
    // Commands still commit, on the two nodes that have the log.
    for i in 0..20 {
        last = c.propose(open(&format!("meanwhile-{i}"))).await?.0;
    }
    for id in c.ids() {
        if id != victim {
            c.wait_applied(id, last).await?;
        }
    }
    {
        let wiped = c.node(victim)?;
        assert_eq!(wiped.admission(), Admission::Quarantined);
        assert!(
            !wiped.raft().is_initialized().await?,
            "the wiped node initialized or was reached by a leader"
        );
        let m = wiped.raft().metrics().borrow().clone();
        assert_eq!(m.last_log_index, None, "it took entries");
    }
    for node in c.running() {
        let m = node.raft().metrics().borrow().clone();
        assert!(
            m.running_state.is_ok(),
            "node {}: {:?}",
            node.id(),
            m.running_state
        );
    }
    // The way out: remove the id, then add it back.
    let others: Vec<_> = c.ids().into_iter().filter(|id| *id != victim).collect();
    c.change_voters(&others).await?;
    c.wait_admission(victim, Admission::AwaitingMembership)
        .await?;
    c.change_voters(&c.ids()).await?;
    c.wait_all_applied(last).await?;
    let state = assert_same_state(&c)?;
    let restored = leasehold_core::LeaseState::decode(&state)?;
    assert_eq!(restored.session_count(), 80);
    for node in c.running() {
        let m = node.raft().metrics().borrow().clone();
        assert!(
            m.running_state.is_ok(),
            "node {}: {:?}",
            node.id(),
            m.running_state
        );
    }
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serving_leader_refuses_votes() -> anyhow::Result<()> {
    use leasehold_raft::network::{PeerNetwork, PeerNetworkConfig};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::VoteRequest;

    let c = TestCluster::start(ClusterOptions::default()).await?;
    let leader = c.serving_leader().await?;
    let node = c.node(leader)?;
    let target = node.config().me().expect("member").node.clone();
    let mut net = PeerNetwork::new(99, PeerNetworkConfig::default());
    let mut client = net.new_client(leader, &target).await;
    // Every answer is a refusal; once the start-up window has passed, the
    // refusal names the leader lease.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = node.raft().metrics().borrow().clone();
        let ask = VoteRequest::new(openraft::Vote::new(m.current_term + 5, 99), m.last_applied);
        let r = client
            .vote(ask, RPCOption::new(std::time::Duration::from_secs(1)))
            .await;
        match r {
            Err(openraft::error::RPCError::Unreachable(e)) => {
                if e.to_string().contains("leader lease") {
                    break;
                }
            }
            other => panic!("a serving leader answered a vote request: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused for the lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(node.serving().may_serve(), "the leader kept serving");
    c.shutdown().await
}

/// The vote window leader leases are computed from is cluster-wide: the
/// first leader replicates its own, and a node restarted with a shorter
/// one (it would grant votes while another leader's lease still runs)
/// refuses every vote, never leads, and says why in Status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_shorter_vote_window_refuses_to_vote_and_lead() -> anyhow::Result<()> {
    use leasehold_proto::v1 as pb;
    use leasehold_raft::network::{PeerNetwork, PeerNetworkConfig};
    use leasehold_tests::grpc::client;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::VoteRequest;

    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    // The first leader set W = its election_timeout_ms_max (600 ms).
    for id in c.ids() {
        wait_until("the cluster's vote window", WAIT, || async {
            c.node(id)
                .ok()?
                .read(|s| s.config().vote_window_ms == 600)
                .then_some(())
        })
        .await?;
    }
    let leader = c.leader().await?;
    let short = c.other_than(leader)?;
    c.stop(short).await?;
    c.restart_with(short, |config| {
        config.timing.election_timeout_ms_min = 150;
        config.timing.election_timeout_ms_max = 300;
    })
    .await?;
    let status = client(&c.api_endpoint(short)?)
        .await?
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    assert!(
        status.config_error.contains("300 ms") && status.config_error.contains("600 ms"),
        "{:?}",
        status.config_error
    );
    // Once its start-up refusal is over, it still refuses: naming the window.
    let node = c.node(short)?;
    let target = node.config().me().expect("member").node.clone();
    let mut net = PeerNetwork::new(99, PeerNetworkConfig::default());
    let mut peer = net.new_client(short, &target).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = node.raft().metrics().borrow().clone();
        let ask = VoteRequest::new(openraft::Vote::new(m.current_term + 5, 99), m.last_applied);
        match peer
            .vote(ask, RPCOption::new(std::time::Duration::from_secs(1)))
            .await
        {
            Err(openraft::error::RPCError::Unreachable(e))
                if e.to_string().contains("vote window") =>
            {
                break
            }
            Err(openraft::error::RPCError::Unreachable(_)) => {}
            other => panic!("a node with a short vote window answered a vote: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused for its window"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The cluster goes on without its vote; it never serves as leader.
    let (index, _) = c.propose(open("after")).await?;
    c.wait_all_applied(index).await?;
    assert!(!c.node(short)?.serving().may_serve());
    c.shutdown().await
}
