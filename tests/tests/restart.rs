//! Graceful restarts: a stopping node drains its calls and ends its streams
//! with UNAVAILABLE, a stopping leader steps aside, and a rolling restart of
//! every node keeps every session alive.

use std::time::Duration;

use leasehold_proto::v1 as pb;
use leasehold_tests::grpc::{self, client};
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Whether a status is the one a node answers while shutting down.
fn shutting_down(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().contains("node shutting down")
}

/// A watch stream on a node that shuts down ends with UNAVAILABLE "node
/// shutting down" (so its client resumes elsewhere), not with a clean end
/// that looks like the server finished the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_node_ends_its_watch_streams_with_unavailable() -> anyhow::Result<()> {
    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    let leader = c.serving_leader().await?;
    let follower = c.other_than(leader)?;
    let mut streams = Vec::new();
    for id in [leader, follower] {
        let mut api = client(&c.api_endpoint(id)?).await?;
        let stream = api
            .watch(pb::WatchRequest {
                prefix: String::new(),
                start_revision: 0,
            })
            .await?
            .into_inner();
        streams.push((id, stream));
    }
    for (id, mut stream) in streams {
        let stop = c.stop(id);
        let (stopped, end) = tokio::join!(stop, async {
            tokio::time::timeout(WAIT, stream.message()).await
        });
        stopped?;
        match end? {
            Err(status) if shutting_down(&status) => {}
            other => panic!("node {id}'s watch stream ended with {other:?}"),
        }
    }
    Ok(())
}

/// A queued acquire (waiting for a held resource, for far longer than any
/// drain) on a leader that shuts down: the call ends with UNAVAILABLE
/// "node shutting down" instead of holding the shutdown up for its whole
/// wait, and its wait is withdrawn, so the caller's session is not granted
/// a lease it never learned of.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_acquire_does_not_hold_up_a_stopping_leader() -> anyhow::Result<()> {
    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    let leader = c.serving_leader().await?;
    let endpoint = c.api_endpoint(leader)?;
    let holder = grpc::open(&endpoint, "holder", 10_000).await?;
    let waiter = grpc::open(&endpoint, "waiter", 10_000).await?;
    let (_view, _keep) = grpc::keep_alive(
        c.api_endpoints(),
        vec![holder, waiter],
        Duration::from_millis(300),
    );
    client(&endpoint)
        .await?
        .acquire(grpc::acquire_req(holder, "db/primary", false, 0))
        .await?;
    let waiting = {
        let mut api = client(&endpoint).await?;
        tokio::spawn(async move {
            api.acquire(grpc::acquire_req(waiter, "db/primary", false, 120_000))
                .await
        })
    };
    let queued = |c: &TestCluster, id: u64| -> anyhow::Result<bool> {
        Ok(c.node(id)?.read(|s| {
            s.resource("db/primary")
                .is_some_and(|r| r.waiters.iter().any(|w| w.session == waiter.id))
        }))
    };
    wait_until("the waiter to be queued", WAIT, || async {
        queued(&c, leader).ok()?.then_some(())
    })
    .await?;
    tokio::time::timeout(WAIT, c.stop(leader))
        .await
        .map_err(|_| anyhow::anyhow!("the leader's shutdown waited for the queued acquire"))??;
    match tokio::time::timeout(WAIT, waiting).await?? {
        Err(status) if shutting_down(&status) => {}
        other => panic!("the waiting acquire ended with {other:?}"),
    }
    let next = c.serving_leader().await?;
    assert!(
        !queued(&c, next)?,
        "the stopping leader withdrew the wait it could no longer answer"
    );
    c.restart(leader).await?;
    c.shutdown().await
}

/// Stepping aside (the first step of a graceful shutdown) on the leader:
/// its keepalive streams end with UNAVAILABLE "node shutting down" instead
/// of renewing, it grants nothing (directly or forwarded from a follower),
/// and once its Raft stops the next leader's takeover keeps the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stepped_aside_leader_refuses_renewals_and_grants() -> anyhow::Result<()> {
    let mut c = TestCluster::start(ClusterOptions::default()).await?;
    let leader = c.serving_leader().await?;
    let follower = c.other_than(leader)?;
    let endpoint = c.api_endpoint(leader)?;
    let session = grpc::open(&endpoint, "holder", 5_000).await?;
    let mut api = client(&endpoint).await?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(grpc::keepalive_req(&[session])).await?;
    let mut stream = api.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
    let first = stream.message().await?.expect("a reply");
    assert!(first.sessions.iter().all(|s| s.alive), "{first:?}");

    assert!(c.node(leader)?.step_aside(), "it was leading");
    assert!(!c.node(leader)?.serving().may_serve());
    tx.send(grpc::keepalive_req(&[session])).await?;
    match stream.message().await {
        Err(status) if shutting_down(&status) => {}
        other => panic!("a renewal after stepping aside was answered with {other:?}"),
    }
    let renewal = api
        .keep_alive(ReceiverStream::new(mpsc::channel(1).1))
        .await
        .map(|_| ());
    match renewal {
        Err(status) if shutting_down(&status) => {}
        other => panic!("a new keepalive stream was answered with {other:?}"),
    }
    for via in [leader, follower] {
        let answer = client(&c.api_endpoint(via)?)
            .await?
            .acquire(grpc::acquire_req(session, "db/primary", false, 0))
            .await;
        match answer {
            Err(status) if shutting_down(&status) => {}
            other => panic!("an acquire through node {via} was answered with {other:?}"),
        }
    }
    assert!(
        c.node(leader)?.read(|s| s.resource("db/primary").is_none()),
        "nothing was granted"
    );

    c.stop(leader).await?;
    let next = c.serving_leader().await?;
    assert_ne!(next, leader);
    let (view, _keep) =
        grpc::keep_alive(c.api_endpoints(), vec![session], Duration::from_millis(100));
    wait_until("the session renewed by the next leader", WAIT, || {
        let v = view.borrow().clone();
        async move { (v.last_renewed_at.is_some() || !v.dead.is_empty()).then_some(v) }
    })
    .await
    .map(|v| {
        assert!(
            v.dead.is_empty(),
            "the session survived the handover: {v:?}"
        )
    })?;
    c.restart(leader).await?;
    c.shutdown().await
}

/// A rolling restart of a three-node cluster (each node in turn, the leader
/// first, stopped gracefully, restarted once the others serve, and caught
/// up, with every holder renewed since, before the next) while
/// 20 sessions, each holding a lease, keep renewing: no session is ever
/// reported not alive, no holder's deadline ever lapses, every lease stays
/// with its holder under its fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_keeps_every_session_alive() -> anyhow::Result<()> {
    const SESSIONS: usize = 20;
    const TTL_MS: u64 = 6_000;
    let options = ClusterOptions::default();
    // A session must outlive an election: TTL ≥ 2 × the election timeout.
    assert!(TTL_MS >= 2 * options.timing.election_timeout_ms_max);
    let mut c = TestCluster::start(options).await?;
    let leader = c.serving_leader().await?;
    let endpoint = c.api_endpoint(leader)?;
    let mut holders = Vec::new();
    for i in 0..SESSIONS {
        let session = grpc::open(&endpoint, &format!("holder-{i}"), TTL_MS).await?;
        let lease = client(&endpoint)
            .await?
            .acquire(grpc::acquire_req(session, &format!("res/{i}"), false, 0))
            .await?
            .into_inner()
            .lease
            .expect("granted");
        let (view, keep) =
            grpc::keep_alive(c.api_endpoints(), vec![session], Duration::from_millis(500));
        holders.push((session, lease.fencing_token, view, keep));
    }
    wait_until("every session renewed once", WAIT, || async {
        holders
            .iter()
            .all(|(_, _, v, _)| v.borrow().last_renewed_at.is_some())
            .then_some(())
    })
    .await?;

    let mut restarted = Vec::new();
    let mut leaders_restarted = 0;
    while restarted.len() < c.ids().len() {
        let leader = c.serving_leader().await?;
        let id = if restarted.contains(&leader) {
            c.ids()
                .into_iter()
                .find(|id| !restarted.contains(id))
                .expect("a node not restarted yet")
        } else {
            leader
        };
        let stopping = tokio::time::Instant::now();
        c.stop(id).await?;
        let stopped = stopping.elapsed();
        // As an operator would: the others serve before the node returns
        // (a stopped leader restarted at once would simply lead again).
        let without = c.serving_leader().await?;
        assert_ne!(without, id);
        println!(
            "node {id} stopped in {stopped:?}; node {without} serving {:?} after the stop began",
            stopping.elapsed()
        );
        c.restart(id).await?;
        let serving = c.wait_caught_up(id).await?;
        // And every holder renewed since: clients are back before the next.
        let back = tokio::time::Instant::now();
        wait_until("every session renewed after the restart", WAIT, || async {
            holders
                .iter()
                .all(|(_, _, v, _)| v.borrow().last_renewed_at.is_some_and(|t| t > back))
                .then_some(())
        })
        .await?;
        restarted.push(id);
        leaders_restarted += usize::from(id == leader);
        println!(
            "restarted node {id} (leader: {}), now led by {serving}",
            id == leader
        );
    }
    assert!(leaders_restarted >= 1, "the leader was restarted too");

    let drift_ppm = c
        .node(c.serving_leader().await?)?
        .read(|s| s.config().drift_ppm);
    let holder_span = Duration::from_millis(leasehold_core::time::holder_validity_ms(
        TTL_MS, drift_ppm, 5,
    ));
    let mut longest_gap = Duration::ZERO;
    let mut longest_span = Duration::ZERO;
    for (session, token, view, _) in &holders {
        let v = view.borrow().clone();
        assert!(
            v.dead.is_empty(),
            "session {} reported not alive: {v:?}",
            session.id
        );
        assert!(
            v.longest_holder_span < holder_span,
            "session {}: the holder's deadline lapsed ({:?} between renewals, span {holder_span:?})",
            session.id,
            v.longest_holder_span
        );
        longest_gap = longest_gap.max(v.longest_renewal_gap);
        longest_span = longest_span.max(v.longest_holder_span);
        let leader = c.serving_leader().await?;
        let kept = c.node(leader)?.read(|s| {
            s.session(session.id).is_some_and(|x| {
                x.held.iter().any(|name| {
                    s.resource(name)
                        .and_then(|r| r.holders.get(&session.id))
                        .is_some_and(|l| l.token == *token)
                })
            })
        });
        assert!(
            kept,
            "session {} kept its lease (token {token})",
            session.id
        );
    }
    println!(
        "rolling restart: {SESSIONS} of {SESSIONS} sessions kept alive through {} restarts \
         ({leaders_restarted} of a leader); longest gap between successful renewals \
         {longest_gap:?}; longest send-to-next-renewal {longest_span:?} (holder deadline span \
         {holder_span:?}, renewal period 500ms, TTL {TTL_MS}ms)",
        restarted.len()
    );
    drop(holders);
    c.shutdown().await
}
