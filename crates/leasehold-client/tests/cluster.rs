//! The client library against a real three-node cluster on loopback.

use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_client::{
    AcquireOptions, Client, ClientBuilder, ClientError, EventKind, HolderClock, LeaseStatus,
    LostReason, Mode,
};
use leasehold_proto::v1 as pb;
use leasehold_tests::{ClusterOptions, TestCluster, WAIT};

async fn start() -> anyhow::Result<(TestCluster, Client)> {
    let cluster = TestCluster::start(ClusterOptions::default()).await?;
    let client = Client::connect(cluster.api_endpoints()).await?;
    Ok((cluster, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_leases_conflicts_and_release() -> anyhow::Result<()> {
    let (cluster, client) = start().await?;
    let a = client.open_session("a", Duration::from_secs(5)).await?;
    let b = client.open_session("b", Duration::from_secs(5)).await?;
    let lease = a.acquire("res/1", AcquireOptions::exclusive()).await?;
    assert!(lease.is_valid());
    assert_eq!(lease.mode(), Mode::Exclusive);
    assert_eq!(lease.session_id(), a.id());
    assert!(lease.deadline() > Instant::now());

    let conflict = b
        .acquire("res/1", AcquireOptions::exclusive())
        .await
        .expect_err("held by a");
    assert_eq!(
        conflict.code(),
        tonic::Code::FailedPrecondition,
        "{conflict}"
    );
    assert!(
        conflict.to_string().contains(&a.id().to_string()),
        "{conflict}"
    );

    let state = client.get("res/1").await?;
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].session_id, a.id());
    assert_eq!(state.holders[0].client_name, "a");
    assert_eq!(state.holders[0].fencing_token, lease.fencing_token());

    // Waiting works: b queues, a releases, b gets a larger token.
    let token_a = lease.fencing_token();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            b.acquire(
                "res/1",
                AcquireOptions::exclusive().wait(Duration::from_secs(10)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lease.release().await?, token_a);
    let lease_b = waiter.await??;
    assert!(lease_b.fencing_token() > token_a);

    // Shared leases coexist.
    let s1 = a.acquire("res/shared", AcquireOptions::shared()).await?;
    let s2 = b.acquire("res/shared", AcquireOptions::shared()).await?;
    assert_eq!(client.get("res/shared").await?.holders.len(), 2);
    assert_eq!(
        client.list("res/").await?.len(),
        2,
        "res/1 and res/shared listed"
    );
    // Pages: two resources, one per page.
    let first = client.list_page("res/", 1, None).await?;
    assert_eq!(first.resources.len(), 1);
    let token = first.next_page_token.clone().expect("a second page");
    let second = client.list_page("res/", 1, Some(&token)).await?;
    assert_eq!(second.resources.len(), 1);
    assert_ne!(first.resources[0].resource, second.resources[0].resource);

    // Dropping a lease releases it in the background.
    drop((s1, s2));
    leasehold_tests::wait_until("release on drop", WAIT, || async {
        let s = client.get("res/shared").await.ok()?;
        s.holders.is_empty().then_some(())
    })
    .await?;

    // A one-call lease.
    let once = client
        .acquire_once(
            "res/once",
            Duration::from_secs(5),
            AcquireOptions::default(),
        )
        .await?;
    assert!(once.is_valid());
    let once_session = once.session_id();
    assert_ne!(once_session, a.id());
    once.release().await?;
    assert!(client.get("res/once").await?.holders.is_empty());

    let released = b.close().await?;
    assert_eq!(released, ["res/1"]);
    a.close().await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keepalive_renews_past_the_ttl_and_recall_is_signalled() -> anyhow::Result<()> {
    let (cluster, client) = start().await?;
    let session = client.open_session("k", Duration::from_secs(2)).await?;
    let lease = session.acquire("kept", AcquireOptions::default()).await?;
    let first_deadline = session.deadline();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(lease.is_valid(), "renewed for 5 s with a 2 s TTL");
    assert!(session.deadline() > first_deadline + Duration::from_secs(2));
    assert_eq!(lease.status(), LeaseStatus::Held);
    assert!(lease.is_usable());

    let holders = client.recall("kept", "maintenance").await?;
    assert_eq!(holders, [session.id()]);
    let status = tokio::time::timeout(WAIT, lease.lost()).await?;
    assert_eq!(
        status,
        LeaseStatus::Recalled {
            reason: "maintenance".into()
        }
    );
    assert!(lease.is_valid(), "recalled is still held");
    assert!(!lease.is_usable(), "recalled takes no new work");
    session.release("kept").await?;
    assert_eq!(
        lease.status(),
        LeaseStatus::Lost {
            why: LostReason::Released
        }
    );
    session.close().await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_closed_elsewhere_is_lost() -> anyhow::Result<()> {
    let (cluster, client) = start().await?;
    let session = client.open_session("x", Duration::from_secs(2)).await?;
    let lease = session.acquire("gone", AcquireOptions::default()).await?;
    let other = Client::connect(cluster.api_endpoints()).await?;
    other.close_session(&session.handle()).await?;
    let status = tokio::time::timeout(WAIT, lease.lost()).await?;
    assert_eq!(
        status,
        LeaseStatus::Lost {
            why: LostReason::SessionGone
        }
    );
    assert!(!lease.is_valid());
    assert_eq!(session.lost().await, LostReason::SessionGone);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_the_lease_is_lost_at_the_holder_deadline() -> anyhow::Result<()> {
    let (mut cluster, client) = start().await?;
    let session = client.open_session("q", Duration::from_secs(2)).await?;
    let lease = session.acquire("quorum", AcquireOptions::default()).await?;
    // Let a renewal or two happen, then take the majority away.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let leader = cluster.leader().await?;
    for id in cluster.ids() {
        if id != leader {
            cluster.stop(id).await?;
        }
    }
    let deadline = lease.deadline();
    let status = tokio::time::timeout(WAIT, lease.lost()).await?;
    let fired = Instant::now();
    assert_eq!(
        status,
        LeaseStatus::Lost {
            why: LostReason::DeadlinePassed
        }
    );
    // Not before the (last) deadline, and promptly after it.
    assert!(fired >= deadline.min(lease.deadline()));
    assert!(
        fired < lease.deadline() + Duration::from_secs(1),
        "fired {:?} after the deadline",
        fired - lease.deadline()
    );
    assert!(!lease.is_valid());
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_survive_a_leader_failover() -> anyhow::Result<()> {
    let (mut cluster, client) = start().await?;
    let session = client.open_session("f", Duration::from_secs(6)).await?;
    let lease = session
        .acquire("failover", AcquireOptions::default())
        .await?;
    let leader = cluster.leader().await?;
    cluster.stop(leader).await?;
    let new_leader = cluster.serving_leader().await?;
    assert_ne!(new_leader, leader);
    // Renewals reach the new leader before the deadline.
    let before = session.deadline();
    leasehold_tests::wait_until("a renewal by the new leader", WAIT, || async {
        (session.deadline() > before + Duration::from_millis(500)).then_some(())
    })
    .await?;
    assert!(lease.is_valid(), "{:?}", lease.status());
    // Unary calls follow the new leader too.
    assert_eq!(
        client.get("failover").await?.holders[0].session_id,
        session.id()
    );
    session.close().await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_status_and_unavailable() -> anyhow::Result<()> {
    let (cluster, client) = start().await?;
    let mut events = client.watch("w/", 0).await?;
    let session = client.open_session("w", Duration::from_secs(5)).await?;
    let lease = session.acquire("w/a", AcquireOptions::default()).await?;
    let token = lease.fencing_token();
    lease.release().await?;
    let first = tokio::time::timeout(WAIT, events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
    assert_eq!(first.kind, EventKind::Acquired);
    assert_eq!(first.resource, "w/a");
    assert_eq!(first.fencing_token, token);
    let second = tokio::time::timeout(WAIT, events.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
    assert_eq!(second.kind, EventKind::Released);
    // Replay from the first event's revision.
    let mut replay = client.watch("w/", first.revision).await?;
    let again = tokio::time::timeout(WAIT, replay.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
    assert_eq!(again, first);

    let views = client.status_all().await;
    assert_eq!(views.len(), 3);
    let leaders = views
        .iter()
        .filter(|(_, v)| v.as_ref().is_ok_and(|s| s.is_leader()))
        .count();
    assert_eq!(leaders, 1);
    session.close().await?;
    cluster.shutdown().await?;

    let e = ClientBuilder::new(["127.0.0.1:1"])
        .call_timeout(Duration::from_millis(300))
        .connect()
        .await
        .expect_err("nothing listens");
    assert!(matches!(e, ClientError::Unavailable { .. }), "{e}");
    Ok(())
}

/// Sets the cluster's drift bound ρ with `SetConfig`, keeping the rest of
/// its lease configuration.
async fn set_cluster_drift_ppm(cluster: &TestCluster, drift_ppm: u32) -> anyhow::Result<()> {
    let endpoint = cluster.api_endpoint(cluster.serving_leader().await?)?;
    let mut api = leasehold_tests::grpc::client(&endpoint).await?;
    let mut config = api
        .status(pb::StatusRequest {})
        .await?
        .into_inner()
        .config
        .context("status without a config")?;
    config.drift_ppm = drift_ppm;
    let set = api
        .set_config(pb::SetConfigRequest {
            config: Some(config),
        })
        .await?
        .into_inner();
    assert_eq!(set.config.map(|c| c.drift_ppm), Some(drift_ppm));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_raised_cluster_drift_bound_moves_holder_deadlines_earlier() -> anyhow::Result<()> {
    const RAISED_PPM: u32 = 100_000;
    let (cluster, client) = start().await?;
    let margin = client.holder_clock().margin();
    let raised = HolderClock::new(RAISED_PPM, margin);

    // A holder with a long TTL (renewed every 10 s), after its first renewal.
    let other = Client::connect(cluster.api_endpoints()).await?;
    let long_ttl = Duration::from_secs(30);
    let slow = other.open_session("slow", long_ttl).await?;
    let slow_lease = slow
        .acquire("drift/slow", AcquireOptions::default())
        .await?;
    let opened = slow_lease.deadline();
    leasehold_tests::wait_until("the first renewal", WAIT, || async {
        (slow_lease.deadline() != opened).then_some(())
    })
    .await?;
    let slow_before = slow_lease.deadline();

    // A holder renewed every 2 s.
    let ttl = Duration::from_secs(6);
    let session = client.open_session("fast", ttl).await?;
    let lease = session
        .acquire("drift/fast", AcquireOptions::default())
        .await?;

    set_cluster_drift_ppm(&cluster, RAISED_PPM).await?;

    // Any answer carries the raised bound: opening another session makes
    // the slow holder recompute its lease's deadline from the same t_send
    // with ρ = 10% at once, long before its next renewal.
    let configured = other.holder_clock();
    other.open_session("probe", long_ttl).await?.detach();
    let shift = configured.validity(30_000) - raised.validity(30_000);
    assert_eq!(
        slow_lease.deadline(),
        slow_before - shift,
        "moved {shift:?} earlier"
    );
    assert_eq!(other.holder_clock().drift_ppm(), RAISED_PPM);
    assert!(slow_lease.is_valid());

    // The next keepalive reply: the deadline counts from a t_send read
    // before the reply was seen, with TTL × 0.9 / 1.1 − m.
    let before = lease.deadline();
    let seen = leasehold_tests::wait_until("the next keepalive reply", WAIT, || async {
        (lease.deadline() != before).then(Instant::now)
    })
    .await?;
    let bound = seen + raised.validity(6_000);
    assert!(
        lease.deadline() <= bound,
        "deadline {:?} after t_send + TTL × 0.9 / 1.1 − m",
        lease.deadline() - bound
    );
    assert_eq!(client.holder_clock().drift_ppm(), RAISED_PPM);
    assert!(lease.is_valid());

    // A client connecting now starts from the cluster's bound (Status).
    let late = Client::connect(cluster.api_endpoints()).await?;
    assert_eq!(late.holder_clock().drift_ppm(), RAISED_PPM);

    session.close().await?;
    slow.close().await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_is_adopted_by_its_handle_and_kept_alive() -> anyhow::Result<()> {
    let (cluster, client) = start().await?;
    // Opened by one client that stops renewing it (like `leasehold acquire`).
    let opener = client
        .open_session("opener", Duration::from_secs(2))
        .await?;
    let handle = opener.handle();
    let _lease = opener
        .acquire("adopt/a", AcquireOptions::exclusive())
        .await?;
    opener.detach();

    // Another client adopts it: the TTL is the service's, the deadline
    // rests on the renewal adopt_session just made.
    let other = Client::connect(cluster.api_endpoints()).await?;
    let before = Instant::now();
    let adopted = other.adopt_session(handle).await?;
    assert_eq!(adopted.id(), handle.id);
    assert_eq!(adopted.ttl(), Duration::from_secs(2));
    assert_eq!(adopted.name(), "");
    assert!(adopted.deadline() > before);
    assert!(adopted.deadline() <= Instant::now() + Duration::from_secs(2));
    // Kept alive past its TTL, with its lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(adopted.is_alive());
    assert_eq!(
        client.get("adopt/a").await?.holders[0].session_id,
        handle.id
    );
    // Adopting it twice in one client is refused; a wrong secret too.
    let twice = other.adopt_session(handle).await.expect_err("already kept");
    assert_eq!(twice.kind(), "invalid_argument", "{twice}");
    let forged =
        leasehold_client::SessionHandle::new(handle.id, leasehold_client::SessionSecret([0; 16]));
    let denied = client.adopt_session(forged).await.expect_err("forged");
    assert_eq!(denied.kind(), "permission_denied", "{denied}");

    adopted.close().await?;
    assert!(client.get("adopt/a").await?.holders.is_empty());
    let gone = client.adopt_session(handle).await.expect_err("closed");
    assert_eq!(gone.kind(), "not_found", "{gone}");
    cluster.shutdown().await
}

/// A rolling restart through the client library: each node in turn (the
/// leader first) is stopped gracefully, restarted once the others serve,
/// and caught up, with every holder renewed, before the next. No session
/// or lease is ever lost (`Lease::lost()` never fires), every lease keeps
/// its holder and fencing token, and the test prints the longest gap
/// between renewals (a figure, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_loses_no_session_or_lease() -> anyhow::Result<()> {
    use std::sync::Arc;

    const SESSIONS: usize = 20;
    let ttl = Duration::from_secs(6);
    let (mut cluster, client) = start().await?;
    let mut held = Vec::new();
    for i in 0..SESSIONS {
        let session = client.open_session(&format!("roll-{i}"), ttl).await?;
        let lease = session
            .acquire(&format!("roll/{i}"), AcquireOptions::exclusive())
            .await?;
        held.push((session, Arc::new(lease)));
    }
    // Whatever is lost or recalled reports here.
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel();
    for (session, lease) in &held {
        let (id, lease, tx) = (session.id(), Arc::clone(lease), lost_tx.clone());
        tokio::spawn(async move {
            let status = lease.lost().await;
            let _ = tx.send((id, status));
        });
    }
    // A session's holder deadline moves only when a renewal lands: the
    // longest time between two moves is the longest renewal gap.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sessions: Vec<_> = held.iter().map(|(s, _)| s.clone()).collect();
    let monitor = tokio::spawn(async move {
        let mut last: Vec<(Instant, Instant)> = sessions
            .iter()
            .map(|s| (s.deadline(), Instant::now()))
            .collect();
        let mut longest = Duration::ZERO;
        loop {
            tokio::select! {
                _ = &mut stop_rx => return longest,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            let now = Instant::now();
            for (s, (deadline, at)) in sessions.iter().zip(last.iter_mut()) {
                let d = s.deadline();
                if d != *deadline {
                    longest = longest.max(now - *at);
                    *deadline = d;
                    *at = now;
                }
            }
        }
    });

    let ids = cluster.ids();
    let mut restarted = Vec::new();
    let mut leaders_restarted = 0;
    while restarted.len() < ids.len() {
        let leader = cluster.serving_leader().await?;
        let id = if restarted.contains(&leader) {
            *ids.iter()
                .find(|id| !restarted.contains(*id))
                .context("a node not restarted yet")?
        } else {
            leader
        };
        cluster.stop(id).await?;
        assert_ne!(cluster.serving_leader().await?, id);
        cluster.restart(id).await?;
        cluster.wait_caught_up(id).await?;
        let before: Vec<Instant> = held.iter().map(|(s, _)| s.deadline()).collect();
        leasehold_tests::wait_until("every holder renewed after the restart", WAIT, || async {
            held.iter()
                .zip(&before)
                .all(|((s, _), d)| s.deadline() > *d)
                .then_some(())
        })
        .await?;
        restarted.push(id);
        leaders_restarted += usize::from(id == leader);
    }
    assert!(leaders_restarted >= 1, "the leader was restarted too");
    let _ = stop_tx.send(());
    let longest = monitor.await?;
    drop(lost_tx);
    if let Ok((id, status)) = lost_rx.try_recv() {
        panic!("session {id}'s lease ended during the rolling restart: {status:?}");
    }
    for (i, (session, lease)) in held.iter().enumerate() {
        assert!(lease.is_valid(), "{:?}", lease.status());
        assert!(session.is_alive());
        let state = client.get(&format!("roll/{i}")).await?;
        assert_eq!(state.holders.len(), 1);
        assert_eq!(state.holders[0].session_id, session.id());
        assert_eq!(state.holders[0].fencing_token, lease.fencing_token());
    }
    println!(
        "rolling restart (client library): {SESSIONS} of {SESSIONS} sessions and leases kept \
         through {} restarts ({leaders_restarted} of a leader); longest gap between renewals \
         {longest:?} (TTL {ttl:?}, renewal every TTL/3)",
        restarted.len()
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_names_a_principal_whose_role_and_prefixes_hold() -> anyhow::Result<()> {
    use leasehold_tests::Role;
    let cluster = TestCluster::start(ClusterOptions::with_principals(&[
        ("ops", "admin-secret-token", Role::Admin, &[]),
        (
            "chunkserver",
            "chunk-secret-token",
            Role::Client,
            &["chunk/"],
        ),
    ]))
    .await?;
    let refused = Client::connect(cluster.api_endpoints())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    assert_eq!(refused.kind(), "unauthenticated");
    let refused = ClientBuilder::new(cluster.api_endpoints())
        .token("wrong-token")
        .connect()
        .await
        .expect_err("unknown token");
    assert!(refused.to_string().contains("unknown token"), "{refused}");
    let bad = ClientBuilder::new(cluster.api_endpoints())
        .token("has a space")
        .connect()
        .await
        .expect_err("bad token");
    assert_eq!(bad.kind(), "config", "{bad}");

    let chunks = ClientBuilder::new(cluster.api_endpoints())
        .token("chunk-secret-token")
        .connect()
        .await?;
    // Sessions, acquires and the keepalive task all carry the token.
    let session = chunks.open_session("cs-1", Duration::from_secs(3)).await?;
    let lease = session
        .acquire("chunk/1", AcquireOptions::exclusive())
        .await?;
    let denied = session
        .acquire("jobs/1", AcquireOptions::exclusive())
        .await
        .expect_err("outside chunk/");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    assert!(denied.to_string().contains("chunkserver"), "{denied}");
    let denied = chunks
        .recall("chunk/1", "not an admin")
        .await
        .expect_err("needs admin");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    // Kept alive past several TTLs by the keepalive task (its renewals
    // would be refused without the token): the session is still there.
    let admin = ClientBuilder::new(cluster.api_endpoints())
        .token("admin-secret-token")
        .connect()
        .await?;
    let renewed = cluster
        .node(cluster.leader().await?)?
        .metrics()
        .keepalive_renewed_total;
    leasehold_tests::wait_until("three keepalive renewals", WAIT, || async {
        let now = cluster
            .node(cluster.leader().await.ok()?)
            .ok()?
            .metrics()
            .keepalive_renewed_total;
        (now >= renewed + 3).then_some(())
    })
    .await?;
    assert!(lease.is_valid());
    assert_eq!(
        admin.get("chunk/1").await?.holders[0].session_id,
        session.id()
    );
    assert!(!format!("{chunks:?}").contains("chunk-secret-token"));
    session.close().await?;
    cluster.shutdown().await
}
