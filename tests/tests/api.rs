//! The client API on a real three-node cluster over gRPC on 127.0.0.1:
//! grants, conflicts, waiting, expiry timing, failover grace, leader lease,
//! recall, forwarding, watch and every invalid input's status code.

use std::time::Duration;

use leasehold_proto::v1 as pb;
use leasehold_tests::grpc::{
    acquire_req, client, keep_alive, keepalive_req, open, release_req, Sess,
};
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};
use tokio::time::Instant;
use tonic::Code;

const TTL_MS: u64 = 2_000;
/// TTL of sessions that no test expects to expire and nobody keeps alive:
/// longer than any test runs, even on a loaded machine.
const LONG_TTL_MS: u64 = 120_000;

async fn start() -> anyhow::Result<TestCluster> {
    let c = TestCluster::start(ClusterOptions::default()).await?;
    c.serving_leader().await?;
    Ok(c)
}

/// Waits until `resource` has exactly `n` queued waiters.
async fn waiters_become(ep: &str, resource: &str, n: u32) -> anyhow::Result<()> {
    wait_until(&format!("{n} waiter(s) on {resource}"), WAIT, || async {
        let mut api = client(ep).await.ok()?;
        let g = api
            .get(pb::GetRequest {
                resource: resource.into(),
            })
            .await
            .ok()?;
        (g.into_inner().state?.waiters == n).then_some(())
    })
    .await
}

fn follower_endpoint(c: &TestCluster, leader: u64) -> anyhow::Result<String> {
    c.api_endpoint(c.other_than(leader)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acquire_conflict_release_through_a_follower() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    // Every call goes to a follower: it forwards to the leader.
    let ep = follower_endpoint(&c, leader)?;
    let a = open(&ep, "alpha", LONG_TTL_MS).await?;
    let b = open(&ep, "beta", LONG_TTL_MS).await?;
    let mut api = client(&ep).await?;
    let mut req = acquire_req(a, "db/primary", false, 0);
    req.metadata = b"10.0.0.1:5432".to_vec().into();
    let lease = api.acquire(req).await?.into_inner().lease.expect("lease");
    assert_eq!(lease.session_id, a.id);
    assert!(lease.fencing_token > a.id);

    let err = api
        .acquire(acquire_req(b, "db/primary", false, 0))
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&format!("session {}", a.id)),
        "{}",
        err.message()
    );
    assert!(err.message().contains("alpha"), "{}", err.message());
    assert!(
        err.message()
            .contains(&format!("token {}", lease.fencing_token)),
        "{}",
        err.message()
    );
    let err = api
        .acquire(acquire_req(b, "db/primary", true, 0))
        .await
        .expect_err("shared beside exclusive");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let got = api
        .get(pb::GetRequest {
            resource: "db/primary".into(),
        })
        .await?
        .into_inner();
    let state = got.state.expect("state");
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].metadata.as_ref(), b"10.0.0.1:5432");
    assert_eq!(state.holders[0].client_name, "alpha");
    assert!(state.holders[0].remaining_ttl_ms > 0);

    let err = api
        .release(release_req(b, "db/primary"))
        .await
        .expect_err("not holder");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let r = api
        .release(release_req(a, "db/primary"))
        .await?
        .into_inner();
    assert_eq!(r.fencing_token, lease.fencing_token);
    let next = api
        .acquire(acquire_req(b, "db/primary", false, 0))
        .await?
        .into_inner()
        .lease
        .expect("lease");
    assert!(next.fencing_token > lease.fencing_token);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_inputs_get_their_codes() -> anyhow::Result<()> {
    let c = start().await?;
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let mut api = client(&ep).await?;
    let s = open(&ep, "t", LONG_TTL_MS).await?;
    let check = |r: Result<tonic::Response<pb::AcquireResponse>, tonic::Status>,
                 code: Code,
                 needle: &str| {
        let e = r.expect_err("must fail");
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    };
    check(
        api.acquire(acquire_req(s, "", false, 0)).await,
        Code::InvalidArgument,
        "resource",
    );
    check(
        api.acquire(acquire_req(s, &"x".repeat(513), false, 0))
            .await,
        Code::InvalidArgument,
        "512",
    );
    let mut big = acquire_req(s, "ok", false, 0);
    big.metadata = vec![0u8; 1025].into();
    check(api.acquire(big).await, Code::InvalidArgument, "metadata");
    let mut bad_mode = acquire_req(s, "ok", false, 0);
    bad_mode.mode = 9;
    check(api.acquire(bad_mode).await, Code::InvalidArgument, "mode");
    check(
        api.acquire(acquire_req(s, "ok", false, 11 * 60 * 1000))
            .await,
        Code::InvalidArgument,
        "wait_timeout_ms",
    );
    check(
        api.acquire(acquire_req(987_654, "ok", false, 0)).await,
        Code::NotFound,
        "987654",
    );
    let mut oneshot = acquire_req(0, "ok", false, 0);
    oneshot.ttl_ms = 1;
    check(api.acquire(oneshot).await, Code::InvalidArgument, "ttl");
    for ttl in [0, 1, 10_000_000_000] {
        let e = api
            .open_session(pb::OpenSessionRequest {
                client_name: "x".into(),
                ttl_ms: ttl,
                request_id: 0,
            })
            .await
            .expect_err("bad ttl");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("ttl"), "{}", e.message());
    }
    let e = api
        .close_session(pb::CloseSessionRequest {
            session_id: 424_242,
            session_secret: Default::default(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    let e = api
        .list(pb::ListRequest {
            prefix: String::new(),
            page_size: 5_000,
            page_token: String::new(),
        })
        .await
        .expect_err("page too big");
    assert_eq!(e.code(), Code::InvalidArgument);
    // Nothing was created by the refused calls.
    let st = api.status(pb::StatusRequest {}).await?.into_inner();
    assert_eq!(st.resources, 0);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_exclusive_and_fifo_waiting() -> anyhow::Result<()> {
    let c = start().await?;
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let ids: Vec<Sess> = {
        let mut v = Vec::new();
        for n in ["r1", "r2", "w", "r3", "late"] {
            v.push(open(&ep, n, 10_000).await?);
        }
        v
    };
    let (r1, r2, w, r3, late) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let mut api = client(&ep).await?;
    api.acquire(acquire_req(r1, "cfg", true, 0)).await?;
    api.acquire(acquire_req(r2, "cfg", true, 0)).await?;

    let spawn_acquire = |session: Sess, shared: bool, wait_ms: u64| {
        let ep = ep.clone();
        tokio::spawn(async move {
            let mut api = client(&ep).await?;
            let r = api
                .acquire(acquire_req(session, "cfg", shared, wait_ms))
                .await;
            anyhow::Ok((r, Instant::now()))
        })
    };
    let writer = spawn_acquire(w, false, 10_000);
    waiters_become(&ep, "cfg", 1).await?;
    // A queued writer blocks new readers: without waiting they conflict.
    let e = api
        .acquire(acquire_req(r3, "cfg", true, 0))
        .await
        .expect_err("reader must not overtake the writer");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let reader = spawn_acquire(r3, true, 10_000);
    waiters_become(&ep, "cfg", 2).await?;
    // A short wait times out with DEADLINE_EXCEEDED and leaves no waiter behind.
    let e = api
        .acquire(acquire_req(late, "cfg", false, 300))
        .await
        .expect_err("times out");
    assert_eq!(e.code(), Code::DeadlineExceeded);

    for s in [r1, r2] {
        api.release(release_req(s, "cfg")).await?;
    }
    let (w_res, w_at) = writer.await??;
    let w_lease = w_res?.into_inner().lease.expect("writer lease");
    assert_eq!(w_lease.session_id, w.id);
    assert!(!reader.is_finished(), "the reader waits for the writer");
    api.release(release_req(w, "cfg")).await?;
    let (r_res, r_at) = reader.await??;
    let r_lease = r_res?.into_inner().lease.expect("reader lease");
    assert!(r_at > w_at);
    assert!(r_lease.fencing_token > w_lease.fencing_token);
    let g = api
        .get(pb::GetRequest {
            resource: "cfg".into(),
        })
        .await?
        .into_inner()
        .state
        .expect("state");
    assert_eq!(g.waiters, 0);
    assert_eq!(g.holders.len(), 1);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_holder_loses_its_lease_after_ttl_and_not_before() -> anyhow::Result<()> {
    let c = start().await?;
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let mut api = client(&ep).await?;
    let waiter = open(&ep, "waiter", TTL_MS).await?;
    let (_view, _stop) = keep_alive(c.api_endpoints(), vec![waiter], Duration::from_millis(300));
    // The holder opens its session and never renews it.
    let before_open = Instant::now();
    let holder = open(&ep, "silent", TTL_MS).await?;
    api.acquire(acquire_req(holder, "job", false, 0)).await?;
    let t = api
        .acquire(acquire_req(waiter, "job", false, 15_000))
        .await?
        .into_inner()
        .lease
        .expect("lease");
    let granted_after = before_open.elapsed();
    assert_eq!(t.session_id, waiter.id);
    assert!(
        granted_after >= Duration::from_millis(TTL_MS),
        "granted {granted_after:?} after the holder's session opened, before its TTL"
    );
    assert!(
        granted_after < Duration::from_millis(TTL_MS + 2_000),
        "expiry too late: {granted_after:?}"
    );
    let e = api
        .release(release_req(holder, "job"))
        .await
        .expect_err("expired");
    assert_eq!(e.code(), Code::NotFound);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_sessions_survive_and_dead_holders_keep_grace() -> anyhow::Result<()> {
    // Longer than the suite's TTL: renewals must survive a leader's
    // shutdown and an election even on a loaded machine.
    const FAILOVER_TTL_MS: u64 = 5_000;
    let mut c = start().await?;
    let leader = c.serving_leader().await?;
    let ep = c.api_endpoint(leader)?;
    let mut api = client(&ep).await?;
    let live = open(&ep, "live", FAILOVER_TTL_MS).await?;
    let dead = open(&ep, "dead", FAILOVER_TTL_MS).await?;
    let contender = open(&ep, "contender", FAILOVER_TTL_MS).await?;
    let (view, _stop) = keep_alive(
        c.api_endpoints(),
        vec![live, contender],
        Duration::from_millis(200),
    );
    let t_live = api
        .acquire(acquire_req(live, "kept", false, 0))
        .await?
        .into_inner();
    let t_dead = api
        .acquire(acquire_req(dead, "orphan", false, 0))
        .await?
        .into_inner();

    c.stop(leader).await?;
    let killed_at = Instant::now();
    let new_leader = c.serving_leader().await?;
    assert_ne!(new_leader, leader);
    let ep = c.api_endpoint(new_leader)?;
    let mut api = client(&ep).await?;

    // Renewals resume at the new leader.
    let resumed = wait_until("renewals at the new leader", WAIT, || {
        let v = view.borrow().clone();
        async move { v.last_renewed_at.filter(|t| *t > killed_at) }
    })
    .await?;
    println!(
        "renewals served again {:?} after the kill",
        resumed - killed_at
    );
    assert!(
        view.borrow().dead.is_empty(),
        "a renewed session was declared dead"
    );

    // The live holder still holds; a non-conflicting acquire goes at once.
    let g = api
        .get(pb::GetRequest {
            resource: "kept".into(),
        })
        .await?
        .into_inner();
    assert_eq!(g.state.expect("state").holders[0].session_id, live.id);
    let quick = Instant::now();
    api.acquire(acquire_req(contender, "fresh", false, 0))
        .await?;
    assert!(
        quick.elapsed() < Duration::from_millis(FAILOVER_TTL_MS),
        "non-conflicting work waited"
    );

    // The dead holder's resource is not granted before its refreshed deadline.
    let lease = api
        .acquire(acquire_req(contender, "orphan", false, 20_000))
        .await?
        .into_inner()
        .lease
        .expect("granted after grace");
    let waited = killed_at.elapsed();
    println!("first conflicting grant {waited:?} after the kill");
    assert!(
        waited >= Duration::from_millis(FAILOVER_TTL_MS),
        "conflicting grant after {waited:?}"
    );
    assert!(
        lease.fencing_token > t_dead.lease.expect("lease").fencing_token,
        "tokens grow across the leader change"
    );
    assert!(lease.fencing_token > t_live.lease.expect("lease").fencing_token);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader_stops_renewing_before_the_next_leader_grants() -> anyhow::Result<()> {
    let c = start().await?;
    let old = c.serving_leader().await?;
    let old_ep = c.api_endpoint(old)?;
    let mut api = client(&old_ep).await?;
    let holder = open(&old_ep, "holder", TTL_MS).await?;
    api.acquire(acquire_req(holder, "lock", false, 0)).await?;
    // The holder keeps renewing at the old leader only.
    let (view, _stop) = keep_alive(
        vec![old_ep.clone()],
        vec![holder],
        Duration::from_millis(100),
    );
    wait_until("a renewal", WAIT, || {
        let v = view.borrow().clone();
        async move { v.last_renewed_at }
    })
    .await?;

    c.isolate(old, true)?;
    let isolated_at = Instant::now();
    // The old leader stops serving on its own.
    let old_node = c.node(old)?;
    wait_until("the old leader to stop serving", WAIT, || async {
        (!old_node.serving().may_serve()).then_some(())
    })
    .await?;
    let stopped_at = Instant::now();
    // The rest elect a leader that serves only after the old one stopped.
    let new = wait_until("a new serving leader", WAIT, || async {
        c.running()
            .find(|n| n.id() != old && n.serving().may_serve())
            .map(|n| n.id())
    })
    .await?;
    let new_serving_at = Instant::now();
    assert!(stopped_at <= new_serving_at);
    let last = view.borrow().clone();
    let last_renewed = last.last_renewed_at.expect("renewed at least once");
    assert!(
        last_renewed <= new_serving_at,
        "old leader renewed after the new one served"
    );

    // The next leader's conflicting grant comes after the holder's own
    // conservative deadline (t_send + TTL × (1 − ρ)/(1 + ρ)).
    let new_ep = c.api_endpoint(new)?;
    let contender = open(&new_ep, "contender", TTL_MS).await?;
    let (_v2, _s2) = keep_alive(
        vec![new_ep.clone()],
        vec![contender],
        Duration::from_millis(200),
    );
    let mut api = client(&new_ep).await?;
    api.acquire(acquire_req(contender, "lock", false, 20_000))
        .await?;
    let granted_at = Instant::now();
    let holder_deadline = last.last_renewed_sent_at.expect("sent")
        + Duration::from_millis(leasehold_core::time::holder_validity_ms(TTL_MS, 10_000, 5));
    assert!(
        granted_at > holder_deadline,
        "granted while the old holder still believed"
    );
    println!(
        "isolated→old stopped {:?}; new leader serving {:?}; conflicting grant {:?}",
        stopped_at - isolated_at,
        new_serving_at - isolated_at,
        granted_at - isolated_at
    );
    c.isolate(old, false)?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_ex_leader_serves_nothing_before_quorum() -> anyhow::Result<()> {
    let mut c = start().await?;
    let leader = c.serving_leader().await?;
    let ep = c.api_endpoint(leader)?;
    let s = open(&ep, "s", LONG_TTL_MS).await?;
    client(&ep)
        .await?
        .acquire(acquire_req(s, "x", false, 0))
        .await?;
    for id in c.ids() {
        c.stop(id).await?;
    }
    c.restart(leader).await?;
    // Alone, it may even believe it leads (openraft restores a single
    // ex-leader's state), but it must not serve for a good while.
    let node = c.node(leader)?;
    let until = Instant::now() + Duration::from_millis(1_500);
    let mut api = client(&ep).await?;
    while Instant::now() < until {
        assert!(!node.serving().may_serve(), "serving without a quorum");
        let st = api.status(pb::StatusRequest {}).await?.into_inner();
        assert_ne!(st.serving, pb::Serving::Serving as i32);
        let e = api
            .acquire(acquire_req(s, "y", false, 0))
            .await
            .expect_err("no grant without quorum");
        assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = c.other_than(leader)?;
    c.restart(other).await?;
    let serving = c.serving_leader().await?;
    let ep = c.api_endpoint(serving)?;
    let st = client(&ep)
        .await?
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    assert!(
        st.serving == pb::Serving::FailoverGrace as i32
            || st.serving == pb::Serving::Serving as i32
    );
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recall_reaches_the_holder_and_watch_sees_it() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let ep = c.api_endpoint(leader)?;
    let fep = follower_endpoint(&c, leader)?;
    let mut api = client(&ep).await?;
    // Watch from a follower: it serves watches from its own applied state.
    let mut watch = client(&fep)
        .await?
        .watch(pb::WatchRequest {
            prefix: "chunk/".into(),
            start_revision: 0,
        })
        .await?
        .into_inner();
    let holder = open(&ep, "chunkserver-1", 10_000).await?;
    let (view, _stop) = keep_alive(c.api_endpoints(), vec![holder], Duration::from_millis(100));
    let lease = api
        .acquire(acquire_req(holder, "chunk/42", false, 0))
        .await?
        .into_inner()
        .lease
        .expect("lease");
    let r = api
        .recall(pb::RecallRequest {
            resource: "chunk/42".into(),
            reason: "rebalance".into(),
        })
        .await?
        .into_inner();
    assert_eq!(r.holders, vec![holder.id]);
    let notice = wait_until("the recall notice", WAIT, || {
        let v = view.borrow().clone();
        async move { v.notices.first().cloned() }
    })
    .await?;
    assert_eq!(notice.resource, "chunk/42");
    assert_eq!(notice.reason, "rebalance");
    assert_eq!(notice.fencing_token, lease.fencing_token);
    api.release(release_req(holder, "chunk/42")).await?;

    let mut kinds = Vec::new();
    let mut first_rev = 0;
    while kinds.len() < 3 {
        let e = tokio::time::timeout(WAIT, watch.message())
            .await??
            .expect("event");
        if first_rev == 0 {
            first_rev = e.revision;
        }
        assert_eq!(e.resource, "chunk/42");
        kinds.push(e.kind);
    }
    use pb::EventKind as K;
    assert_eq!(
        kinds,
        vec![K::Acquired as i32, K::Recalled as i32, K::Released as i32]
    );
    // A watch resumed from the first revision replays the same events.
    let mut again = client(&fep)
        .await?
        .watch(pb::WatchRequest {
            prefix: "chunk/".into(),
            start_revision: first_rev,
        })
        .await?
        .into_inner();
    let e = tokio::time::timeout(WAIT, again.message())
        .await??
        .expect("event");
    assert_eq!((e.revision, e.kind), (first_rev, K::Acquired as i32));
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_redirects_keepalives_and_list_pages() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let fep = follower_endpoint(&c, leader)?;
    let s = open(&fep, "lister", 10_000).await?;
    let mut api = client(&fep).await?;
    for i in 0..7 {
        api.acquire(acquire_req(s, &format!("svc/{i}"), true, 0))
            .await?;
    }
    api.acquire(acquire_req(s, "other", true, 0)).await?;
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list(pb::ListRequest {
                prefix: "svc/".into(),
                page_size: 3,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        assert!(page.resources.len() <= 3);
        names.extend(page.resources.into_iter().map(|r| r.resource));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        (0..7).map(|i| format!("svc/{i}")).collect::<Vec<_>>()
    );

    // KeepAlive is leader-only: a follower answers UNAVAILABLE with the leader.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(keepalive_req(&[s])).await?;
    let e = api
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("follower refuses keepalives");
    assert_eq!(e.code(), Code::Unavailable);
    let hint = e
        .metadata()
        .get(leasehold_proto::LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(hint, Some(c.api_endpoint(leader)?));
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_bounds_are_replicated_configuration() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let mut api = client(&follower_endpoint(&c, leader)?).await?;
    let cfg = |min: u64, max: u64| pb::SetConfigRequest {
        config: Some(pb::LeaseConfig {
            ttl_ms_min: min,
            ttl_ms_max: max,
            drift_ppm: 20_000,
            grace_margin_ms: 250,
            vote_window_ms: 0,
        }),
    };
    // Below 2 × election timeout (2 × 600 ms): refused, naming the field.
    let e = api
        .set_config(cfg(1_000, 60_000))
        .await
        .expect_err("too short");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("ttl_ms_min") && e.message().contains("1200"),
        "{}",
        e.message()
    );
    let e = api
        .set_config(cfg(5_000, 4_000))
        .await
        .expect_err("min > max");
    assert_eq!(e.code(), Code::InvalidArgument);
    // W above the nodes' own windows: refused (restart them first).
    let mut too_wide = cfg(30_000, 60_000);
    if let Some(c) = too_wide.config.as_mut() {
        c.vote_window_ms = 10_000;
    }
    let e = api.set_config(too_wide).await.expect_err("W too wide");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("vote_window_ms"), "{}", e.message());

    api.set_config(cfg(3_000, 60_000)).await?;
    // Every node applies it.
    for ep in c.api_endpoints() {
        let st = client(&ep)
            .await?
            .status(pb::StatusRequest {})
            .await?
            .into_inner();
        let got = wait_until("config to replicate", WAIT, || {
            let ep = ep.clone();
            async move {
                let st = client(&ep)
                    .await
                    .ok()?
                    .status(pb::StatusRequest {})
                    .await
                    .ok()?;
                st.into_inner().config.filter(|c| c.ttl_ms_min == 3_000)
            }
        })
        .await?;
        assert_eq!(
            (got.ttl_ms_max, got.drift_ppm, got.grace_margin_ms),
            (60_000, 20_000, 250)
        );
        // 0 kept the cluster-wide vote window the first leader set.
        assert_eq!(got.vote_window_ms, 600);
        let _ = st;
    }
    let e = api
        .open_session(pb::OpenSessionRequest {
            client_name: "short".into(),
            ttl_ms: 2_000,
            request_id: 0,
        })
        .await
        .expect_err("below the new minimum");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("3000"), "{}", e.message());
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_change_during_load_keeps_every_lease() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let ep = c.api_endpoint(leader)?;
    let holder = open(&ep, "holder", 10_000).await?;
    let (_view, _stop) = keep_alive(c.api_endpoints(), vec![holder], Duration::from_millis(300));
    let mut api = client(&ep).await?;
    let first = api
        .acquire(acquire_req(holder, "m/held", false, 0))
        .await?
        .into_inner();
    let members: Vec<pb::Member> = api.status(pb::StatusRequest {}).await?.into_inner().members;
    assert_eq!(members.len(), 3);
    let victim = members
        .iter()
        .find(|m| m.node_id != leader)
        .expect("a follower")
        .clone();

    // Load keeps going while the membership changes.
    let load_ep = ep.clone();
    let load = tokio::spawn(async move {
        let mut api = client(&load_ep).await?;
        let s = open(&load_ep, "load", 10_000).await?;
        let mut last = 0;
        for i in 0..40 {
            let r = format!("m/load/{i}");
            let t = api
                .acquire(acquire_req(s, &r, false, 0))
                .await?
                .into_inner();
            let token = t.lease.expect("lease").fencing_token;
            anyhow::ensure!(token > last, "tokens must grow: {token} after {last}");
            last = token;
            api.release(pb::ReleaseRequest {
                session_id: s.id,
                session_secret: s.secret(),
                resource: r,
            })
            .await?;
        }
        anyhow::Ok(last)
    });
    let without: Vec<pb::Member> = members
        .iter()
        .filter(|m| m.node_id != victim.node_id)
        .cloned()
        .collect();
    let r = api
        .change_membership(pb::ChangeMembershipRequest {
            voters: without,
            catch_up_timeout_ms: 0,
        })
        .await?
        .into_inner();
    assert_eq!(r.voters.len(), 2);
    let r = api
        .change_membership(pb::ChangeMembershipRequest {
            voters: members.clone(),
            catch_up_timeout_ms: 0,
        })
        .await?
        .into_inner();
    assert_eq!(r.voters.len(), 3);
    let last = load.await??;
    let g = api
        .get(pb::GetRequest {
            resource: "m/held".into(),
        })
        .await?
        .into_inner();
    let held = g.state.expect("state").holders;
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].fencing_token,
        first.lease.expect("lease").fencing_token
    );
    assert!(last > 0);
    // The re-added node caught up with everything.
    let victim_ep = c.api_endpoint(victim.node_id)?;
    wait_until("the re-added node to catch up", WAIT, || {
        let ep = victim_ep.clone();
        async move {
            let st = client(&ep)
                .await
                .ok()?
                .status(pb::StatusRequest {})
                .await
                .ok()?
                .into_inner();
            (st.resources >= 1 && st.applied_index >= r.log_index).then_some(())
        }
    })
    .await?;
    // Bad requests are refused without effect.
    let e = api
        .change_membership(pb::ChangeMembershipRequest {
            voters: vec![],
            catch_up_timeout_ms: 0,
        })
        .await
        .expect_err("empty");
    assert_eq!(e.code(), Code::InvalidArgument);
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_wait_is_withdrawn() -> anyhow::Result<()> {
    let c = start().await?;
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let (holder, call) = queue_a_waiter(&ep, "w/busy").await?;
    // The caller goes away: its call is cancelled mid-wait.
    call.abort();
    waiters_become(&ep, "w/busy", 0).await?;
    release_grants_nobody(&ep, holder, "w/busy").await?;
    c.shutdown().await
}

/// A waiter's call that ends at a node which lost leadership meanwhile is
/// still withdrawn, through the new leader: otherwise the wait stays
/// queued and the next release grants the resource to a session whose
/// client never learns of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_wait_is_withdrawn_through_the_next_leader() -> anyhow::Result<()> {
    let c = start().await?;
    let old = c.serving_leader().await?;
    let (holder, call) = queue_a_waiter(&c.api_endpoint(old)?, "w/moved").await?;
    // The leader is cut off, the others elect a new one, and only then the
    // caller goes away: the old leader can no longer commit anything.
    c.isolate(old, true)?;
    let new = wait_until("a new leader", WAIT, || async {
        c.running()
            .find(|n| {
                let m = n.raft().metrics().borrow().clone();
                n.id() != old && m.current_leader == Some(n.id())
            })
            .map(|n| n.id())
    })
    .await?;
    call.abort();
    c.isolate(old, false)?;
    let new_ep = c.api_endpoint(new)?;
    waiters_become(&new_ep, "w/moved", 0).await?;
    release_grants_nobody(&new_ep, holder, "w/moved").await?;
    c.shutdown().await
}

/// At `ep`: a holder takes `resource`, and a waiter's acquire (60 s wait)
/// queues behind it; returns the holder and the waiting call.
async fn queue_a_waiter(
    ep: &str,
    resource: &str,
) -> anyhow::Result<(Sess, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let holder = open(ep, "holder", LONG_TTL_MS).await?;
    let waiter = open(ep, "waiter", LONG_TTL_MS).await?;
    client(ep)
        .await?
        .acquire(acquire_req(holder, resource, false, 0))
        .await?;
    let (wep, name) = (ep.to_string(), resource.to_string());
    let call = tokio::spawn(async move {
        let mut api = client(&wep).await?;
        api.acquire(acquire_req(waiter, &name, false, 60_000))
            .await?;
        anyhow::Ok(())
    });
    waiters_become(ep, resource, 1).await?;
    Ok((holder, call))
}

/// The holder releases `resource`: nobody is granted it behind its back
/// (no wait was left queued).
async fn release_grants_nobody(ep: &str, holder: Sess, resource: &str) -> anyhow::Result<()> {
    let mut api = client(ep).await?;
    api.release(release_req(holder, resource)).await?;
    let g = api
        .get(pb::GetRequest {
            resource: resource.into(),
        })
        .await?
        .into_inner();
    assert!(
        g.state
            .is_none_or(|s| s.holders.is_empty() && s.waiters == 0),
        "{resource} was granted on release"
    );
    Ok(())
}

/// Every call naming a session must present its secret: a client that
/// knows only the (sequential) id, or forges a secret, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_belong_to_their_owner() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let ep = follower_endpoint(&c, leader)?;
    let owner = open(&ep, "owner", LONG_TTL_MS).await?;
    let mut api = client(&ep).await?;
    let lease = api
        .acquire(acquire_req(owner, "own/r", false, 0))
        .await?
        .into_inner();
    assert_eq!(lease.session_secret.as_ref(), &owner.secret[..]);
    // Counts from the leader: it applied the acquire before answering (a
    // follower's Status may lag behind).
    let mut on_leader = client(&c.api_endpoint(leader)?).await?;
    let before = on_leader.status(pb::StatusRequest {}).await?.into_inner();
    let thieves = [
        Sess::from(owner.id),
        Sess {
            id: owner.id,
            secret: [0xee; 16],
        },
    ];
    for thief in thieves {
        let e = api
            .release(release_req(thief, "own/r"))
            .await
            .expect_err("release by a stranger");
        assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
        assert!(
            e.message().contains(&owner.id.to_string()),
            "{}",
            e.message()
        );
        let e = api
            .close_session(pb::CloseSessionRequest {
                session_id: thief.id,
                session_secret: thief.secret(),
            })
            .await
            .expect_err("close by a stranger");
        assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
        let e = api
            .acquire(acquire_req(thief, "own/other", false, 0))
            .await
            .expect_err("acquire in a stranger's session");
        assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
        // A keepalive naming it ends with PERMISSION_DENIED and renews nothing.
        let leader_ep = c.api_endpoint(leader)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(keepalive_req(&[thief])).await?;
        let mut stream = client(&leader_ep)
            .await?
            .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let e = stream.message().await.expect_err("a stranger's keepalive");
        assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    }
    // Nothing changed: the owner still holds, and can release.
    let after = on_leader.status(pb::StatusRequest {}).await?.into_inner();
    assert_eq!(
        (after.sessions, after.resources),
        (before.sessions, before.resources)
    );
    let g = api
        .get(pb::GetRequest {
            resource: "own/r".into(),
        })
        .await?
        .into_inner();
    assert_eq!(g.state.expect("state").holders[0].session_id, owner.id);
    api.release(release_req(owner, "own/r")).await?;
    drop(lease);
    c.shutdown().await
}

/// A retried OpenSession or one-call Acquire (same request id, as after an
/// unknown outcome) finds what the first attempt made; a one-call wait
/// longer than its TTL is refused rather than left to expire under itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_with_a_request_id_are_idempotent() -> anyhow::Result<()> {
    let c = start().await?;
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let mut api = client(&ep).await?;
    let open_req = pb::OpenSessionRequest {
        client_name: "retry".into(),
        ttl_ms: LONG_TTL_MS,
        request_id: 0x5eed,
    };
    let first = api.open_session(open_req.clone()).await?.into_inner();
    let again = api.open_session(open_req).await?.into_inner();
    assert_eq!(first.session_id, again.session_id);
    assert_eq!(first.session_secret, again.session_secret);
    let sessions = api
        .status(pb::StatusRequest {})
        .await?
        .into_inner()
        .sessions;

    let mut one_call = acquire_req(0, "retry/job", false, 0);
    one_call.ttl_ms = LONG_TTL_MS;
    one_call.client_name = "one-call".into();
    one_call.request_id = 0xbeef;
    let a = api.acquire(one_call.clone()).await?.into_inner();
    let b = api.acquire(one_call.clone()).await?.into_inner();
    assert_eq!(a.session_id, b.session_id, "no orphan private session");
    assert_eq!(
        a.lease.as_ref().map(|l| l.fencing_token),
        b.lease.as_ref().map(|l| l.fencing_token)
    );
    let st = api.status(pb::StatusRequest {}).await?.into_inner();
    assert_eq!(st.sessions, sessions + 1);

    let mut long_wait = acquire_req(0, "retry/wait", false, TTL_MS + 1);
    long_wait.ttl_ms = TTL_MS;
    let e = api.acquire(long_wait).await.expect_err("wait > ttl");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("wait_timeout_ms"), "{}", e.message());
    c.shutdown().await
}

/// A waiting acquire learns at once that its session ended (closed here by
/// another call), although no lease event touched its resource: it answers
/// NOT_FOUND, not the wait timeout much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_acquire_ends_with_its_session() -> anyhow::Result<()> {
    let c = start().await?;
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let holder = open(&ep, "holder", LONG_TTL_MS).await?;
    let waiter = open(&ep, "waiter", LONG_TTL_MS).await?;
    let mut api = client(&ep).await?;
    api.acquire(acquire_req(holder, "end/r", false, 0)).await?;
    let wep = ep.clone();
    let call = tokio::spawn(async move {
        let mut api = client(&wep).await?;
        // Far longer than the test waits below.
        anyhow::Ok(
            api.acquire(acquire_req(waiter, "end/r", false, 600_000))
                .await,
        )
    });
    waiters_become(&ep, "end/r", 1).await?;
    api.close_session(pb::CloseSessionRequest {
        session_id: waiter.id,
        session_secret: waiter.secret(),
    })
    .await?;
    let answer = tokio::time::timeout(WAIT, call)
        .await
        .map_err(|_| anyhow::anyhow!("the waiting acquire did not notice its session ended"))???;
    match answer {
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        Ok(granted) => anyhow::bail!("granted to a closed session: {granted:?}"),
    }
    c.shutdown().await
}
