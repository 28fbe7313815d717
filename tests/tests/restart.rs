//! Graceful restarts: a stopping node drains its calls and ends its streams
//! with UNAVAILABLE, a stopping leader steps aside, and a rolling restart of
//! every node keeps every session alive.

use std::time::Duration;

use leasehold_proto::v1 as pb;
use leasehold_tests::grpc::{self, client};
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};
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
