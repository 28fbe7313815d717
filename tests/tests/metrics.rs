//! The metrics and health endpoint of live nodes, scraped over real HTTP:
//! counters and histograms follow the API calls made, gauges match
//! `Status` and the applied state, `/healthz` and `/readyz` answer per
//! node, and an isolated node stops being ready once it lost its leader.

use std::time::Duration;

use leasehold_proto::v1 as pb;
use leasehold_tests::grpc::{acquire_req, client, keep_alive, open};
use leasehold_tests::http::{get, sample};
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};

const LONG_TTL_MS: u64 = 120_000;

async fn start() -> anyhow::Result<TestCluster> {
    let c = TestCluster::start(ClusterOptions {
        metrics: true,
        ..ClusterOptions::default()
    })
    .await?;
    c.serving_leader().await?;
    Ok(c)
}

/// Scrapes `/metrics` of node `id` and checks the framing.
async fn scrape(c: &TestCluster, id: u64) -> anyhow::Result<String> {
    let answer = get(c.metrics_addr(id)?, "/metrics").await?;
    anyhow::ensure!(answer.status == 200, "/metrics answered {answer:?}");
    let content_type = answer.header("content-type").unwrap_or_default();
    anyhow::ensure!(
        content_type.starts_with("application/openmetrics-text"),
        "content type {content_type:?}"
    );
    anyhow::ensure!(
        answer.body.trim_end().ends_with("# EOF"),
        "no # EOF at the end"
    );
    Ok(answer.body)
}

/// A sample that must be present.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_the_api_calls_and_match_status() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let follower = c.other_than(leader)?;
    let ep = c.api_endpoint(leader)?;
    let follower_ep = c.api_endpoint(follower)?;

    // Grants: three here, one forwarded by a follower; a release, a recall.
    let a = open(&ep, "metrics-a", LONG_TTL_MS).await?;
    let mut api = client(&ep).await?;
    for r in ["m/1", "m/2", "m/3"] {
        api.acquire(acquire_req(a, r, false, 0)).await?;
    }
    client(&follower_ep)
        .await?
        .acquire(acquire_req(a, "m/4", false, 0))
        .await?;
    api.release(pb::ReleaseRequest {
        session_id: a.id,
        resource: "m/1".into(),
        session_secret: a.secret(),
    })
    .await?;
    api.recall(pb::RecallRequest {
        resource: "m/2".into(),
        reason: "metrics test".into(),
    })
    .await?;

    // Keepalives straight to the leader.
    let (mut view, stop) = keep_alive(vec![ep.clone()], vec![a], Duration::from_millis(20));
    let replies = tokio::time::timeout(WAIT, view.wait_for(|v| v.replies >= 3))
        .await??
        .replies;
    drop(stop);

    // A snapshot, so its size and build time are measured.
    c.node(leader)?
        .raft()
        .trigger()
        .snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("snapshot trigger: {e}"))?;
    let text = wait_until("a snapshot built on the leader", WAIT, || async {
        let text = scrape(&c, leader).await.ok()?;
        (sample(&text, "leasehold_snapshots_built_total")? >= 1.0).then_some(text)
    })
    .await?;
    println!("--- /metrics of the leader (node {leader}) ---\n{text}");

    // Counters: at least what this test did.
    assert!(value(&text, "leasehold_grants_total") >= 4.0);
    assert!(value(&text, "leasehold_releases_total") >= 1.0);
    assert!(value(&text, "leasehold_recalls_total") >= 1.0);
    assert!(value(&text, "leasehold_keepalive_renewed_total") >= replies as f64);
    assert_eq!(value(&text, "leasehold_keepalive_refused_total"), 0.0);
    assert!(value(&text, "leasehold_proposals_total") >= 6.0);
    assert!(value(&text, "leasehold_takeovers_total") >= 1.0);
    assert!(sample(&text, "leasehold_sessions_expired_total").is_some());
    // The same counters as the node's snapshot: one definition.
    let counters = c.node(leader)?.metrics();
    assert_eq!(
        value(&text, "leasehold_grants_total"),
        counters.grants_total as f64
    );
    assert_eq!(
        value(&text, "leasehold_releases_total"),
        counters.releases_total as f64
    );

    // Histograms: one observation per served call, buckets cumulative.
    let acquires = value(&text, "leasehold_acquire_duration_seconds_count");
    assert!(acquires >= 4.0, "{acquires}");
    assert_eq!(
        value(
            &text,
            "leasehold_acquire_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        acquires
    );
    assert!(value(&text, "leasehold_acquire_duration_seconds_sum") > 0.0);
    let keepalives = value(&text, "leasehold_keepalive_duration_seconds_count");
    assert!(keepalives >= replies as f64, "{keepalives} < {replies}");
    assert!(text.contains("# TYPE leasehold_acquire_duration_seconds histogram"));
    assert!(text.contains("# UNIT leasehold_acquire_duration_seconds seconds"));

    // Raft and serving state.
    let status = client(&ep)
        .await?
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    assert!(value(&text, "leasehold_raft_term") > 0.0);
    assert_eq!(value(&text, "leasehold_raft_term"), status.term as f64);
    assert_eq!(value(&text, "leasehold_raft_leader_id"), leader as f64);
    let applied = value(&text, "leasehold_raft_applied_index");
    assert!(applied > 0.0);
    assert!(value(&text, "leasehold_raft_commit_index") >= applied);
    let serving = value(&text, "leasehold_serving_state{state=\"serving\"}")
        + value(&text, "leasehold_serving_state{state=\"failover_grace\"}");
    assert_eq!(serving, 1.0);
    assert_eq!(
        value(&text, "leasehold_serving_state{state=\"follower\"}"),
        0.0
    );
    assert!(value(&text, "leasehold_failover_grace_remaining_seconds") >= 0.0);
    assert!(value(&text, "leasehold_snapshot_size_bytes") > 0.0);
    assert!(value(&text, "leasehold_snapshot_build_duration_seconds") >= 0.0);

    // Gauges from the applied state: nothing changes it any more.
    assert_eq!(
        value(&text, "leasehold_sessions_active"),
        status.sessions as f64
    );
    let leases = c.node(leader)?.read(|s| {
        s.resources()
            .map(|(_, r)| r.holders.len() as u64)
            .sum::<u64>()
    });
    assert_eq!(leases, 3, "m/2, m/3, m/4 are held");
    assert_eq!(value(&text, "leasehold_leases_active"), leases as f64);

    // The follower: forwarded one acquire, serves nothing itself.
    let ftext = scrape(&c, follower).await?;
    assert!(value(&ftext, "leasehold_forwarded_total") >= 1.0);
    assert_eq!(
        value(&ftext, "leasehold_serving_state{state=\"follower\"}"),
        1.0
    );
    assert_eq!(value(&ftext, "leasehold_raft_leader_id"), leader as f64);

    // Health and readiness of every node.
    for id in c.ids() {
        let health = get(c.metrics_addr(id)?, "/healthz").await?;
        assert_eq!(health.status, 200, "node {id}: {health:?}");
        let ready = get(c.metrics_addr(id)?, "/readyz").await?;
        assert_eq!(ready.status, 200, "node {id}: {ready:?}");
        let why = if id == leader {
            "leader, serving".to_string()
        } else {
            format!("follower of leader {leader}")
        };
        assert!(ready.body.starts_with(&why), "node {id}: {:?}", ready.body);
    }
    let missing = get(c.metrics_addr(leader)?, "/nothing").await?;
    assert_eq!(missing.status, 404);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_node_is_healthy_but_not_ready() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let cut = c.other_than(leader)?;
    let addr = c.metrics_addr(cut)?;
    let ready = get(addr, "/readyz").await?;
    assert_eq!(ready.status, 200, "{ready:?}");

    c.isolate(cut, true)?;
    // Once its election timer fires it campaigns alone and knows no leader.
    let refused = wait_until("the isolated node to be not ready", WAIT, || async {
        let a = get(addr, "/readyz").await.ok()?;
        (a.status == 503).then_some(a)
    })
    .await?;
    assert_eq!(refused.body.lines().count(), 1, "{:?}", refused.body);
    assert!(
        refused.body.contains("no leader known"),
        "{:?}",
        refused.body
    );
    let health = get(addr, "/healthz").await?;
    assert_eq!(health.status, 200, "{health:?}");
    let text = scrape(&c, cut).await?;
    assert_eq!(value(&text, "leasehold_raft_leader_id"), 0.0);
    // The rest of the cluster keeps its leader and stays ready.
    let leader_ready = get(c.metrics_addr(leader)?, "/readyz").await?;
    assert_eq!(leader_ready.status, 200, "{leader_ready:?}");

    c.isolate(cut, false)?;
    wait_until("the reconnected node to be ready again", WAIT, || async {
        let a = get(addr, "/readyz").await.ok()?;
        (a.status == 200).then_some(())
    })
    .await?;
    c.shutdown().await
}
