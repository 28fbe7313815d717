//! GFS chunk primaries on a real Leasehold cluster, in one process:
//! assignment, renewal by heartbeat, reassignment after a killed
//! chunkserver (never before its lease ended), recall, stale replicas,
//! master failover, record-append atomicity, and the checker catching a
//! primary that ignores its deadline.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Gfs, Options, TTL, WAIT};
use leasehold_gfs::history::{mono_ns, Event};
use leasehold_gfs::names::chunk_lease;
use leasehold_gfs::GfsError;
use leasehold_tests::wait_until;

/// A create assigns a primary holding `chunk/C` in its own session with its
/// address as metadata; the version is the lease's fencing token; the
/// data reaches all three replicas; and with no further assignment, one
/// session keepalive per chunkserver keeps every chunk lease for several
/// TTLs while writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assignment_and_renewal_by_heartbeat() -> anyhow::Result<()> {
    let gfs = Gfs::start(Options::default()).await?;
    let chunks = ["c1", "c2", "c3", "c4"];
    for c in chunks {
        let loc = gfs.client.create(c, 0).await?;
        assert_eq!(loc.replicas.len(), 3, "{loc:?}");
        assert!(loc.version > 0);
    }
    let mut versions = Vec::new();
    for c in chunks {
        let loc = gfs.wait_primary(c, 0).await?;
        let state = gfs.leasehold.get(&chunk_lease(c)).await?;
        let holder = &state.holders[0];
        assert_eq!(holder.fencing_token, loc.version, "version = fencing token");
        let primary = Gfs::primary_id(&loc)?;
        assert_eq!(Some(holder.session_id), gfs.server(&primary)?.session_id());
        let meta = String::from_utf8_lossy(&holder.metadata).to_string();
        assert!(
            meta.contains(&loc.primary),
            "holder metadata {meta} names the address"
        );
        versions.push(loc.version);
    }
    // Writes and reads during three TTLs: no new grant may be needed.
    let until = Instant::now() + TTL * 3;
    let mut n = 0u64;
    while Instant::now() < until {
        for c in chunks {
            let data = format!("record {n} of {c}");
            gfs.write(c, n * 64, data.as_bytes()).await?;
            let back = gfs.client.read(c, n * 64, data.len() as u64).await?;
            assert_eq!(back, data.as_bytes());
        }
        n += 1;
    }
    for (c, v) in chunks.iter().zip(&versions) {
        let terms = gfs.terms(c);
        assert_eq!(
            terms.len(),
            1,
            "{c}: one term, renewed by heartbeat: {terms:?}"
        );
        assert_eq!(gfs.client.locate(c).await?.version, *v);
    }
    let s = gfs.check()?;
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.acknowledged_writes as u64, n * chunks.len() as u64);
    assert_eq!(s.replicas_up_to_date, 3 * chunks.len());
    gfs.shutdown().await
}

/// A killed primary's chunk gets a new primary only after the old lease
/// ended on the service (its remaining TTL as the service reported it),
/// at a higher version; acknowledged writes survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_primary_is_replaced_only_after_its_lease_ended() -> anyhow::Result<()> {
    let mut gfs = Gfs::start(Options {
        servers: 4,
        ..Options::default()
    })
    .await?;
    gfs.client.create("k1", 0).await?;
    let before = gfs.wait_primary("k1", 0).await?;
    for i in 0..10u64 {
        gfs.write("k1", i * 100, format!("before kill {i}").as_bytes())
            .await?;
    }
    let old = Gfs::primary_id(&before)?;
    let t0_ns = mono_ns();
    let state = gfs.leasehold.get(&chunk_lease("k1")).await?;
    let remaining = state.holders[0]
        .remaining_ttl
        .ok_or_else(|| anyhow::anyhow!("the leader reports the remaining TTL"))?;
    gfs.kill_server(&old).await?;
    let after = gfs.wait_primary("k1", before.version).await?;
    let new = Gfs::primary_id(&after)?;
    assert_ne!(new, old);
    let terms = gfs.terms("k1");
    let (t_new, v_new, s_new) = terms
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no term"))?;
    assert_eq!((v_new, s_new.as_str()), (after.version, new.as_str()));
    let ended_ns = t0_ns + u64::try_from(remaining.as_nanos())?;
    assert!(
        t_new >= ended_ns,
        "new primary at {t_new} ns, before the old lease ended at {ended_ns} ns"
    );
    let versions: Vec<u64> = terms.iter().map(|t| t.1).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    for i in 10..20u64 {
        gfs.write("k1", i * 100, format!("after kill {i}").as_bytes())
            .await?;
    }
    // The new term re-replicated onto the spare chunkserver.
    let full = wait_until("three up-to-date replicas again", WAIT, || async {
        gfs.client.invalidate("k1");
        gfs.client
            .locate("k1")
            .await
            .ok()
            .filter(|l| l.replicas.len() == 3 && l.cache_ms > 0)
    })
    .await?;
    assert!(full.replicas.iter().all(|r| r.server_id != old));
    let s = gfs.check()?;
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    gfs.shutdown().await
}

/// A recall makes the primary stop accepting and give the lease up; the
/// master reassigns to the preferred chunkserver at a higher version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recall_moves_the_primary() -> anyhow::Result<()> {
    let gfs = Gfs::start(Options::default()).await?;
    gfs.client.create("r1", 0).await?;
    let before = gfs.wait_primary("r1", 0).await?;
    gfs.write("r1", 0, b"before the recall").await?;
    let old = Gfs::primary_id(&before)?;
    let target = before
        .replicas
        .iter()
        .map(|r| r.server_id.clone())
        .find(|s| *s != old)
        .ok_or_else(|| anyhow::anyhow!("no secondary"))?;
    let recalled = gfs.client.recall("r1", "snapshot", &target).await?;
    assert_eq!(recalled, before.version);
    let after = gfs.wait_primary("r1", before.version).await?;
    assert_eq!(Gfs::primary_id(&after)?, target);
    gfs.write("r1", 100, b"after the recall").await?;
    assert_eq!(gfs.client.read("r1", 0, 17).await?, b"before the recall");
    let stepped: Vec<String> = gfs
        .history
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Stepped { server, why, .. } if why.starts_with("recalled") => Some(server),
            _ => None,
        })
        .collect();
    assert_eq!(stepped, vec![old]);
    let s = gfs.check()?;
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.recalls, 1);
    gfs.shutdown().await
}

/// With tokens required, the master (an admin principal: it recalls) and
/// the chunkservers (a `client` principal limited to `chunk/`) still
/// assign, write and move a primary by recall; the chunkservers' principal
/// may not take the master's election lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primaries_work_with_least_privilege_tokens() -> anyhow::Result<()> {
    let gfs = Gfs::start(Options {
        auth: true,
        ..Options::default()
    })
    .await?;
    gfs.client.create("a1", 0).await?;
    let before = gfs.wait_primary("a1", 0).await?;
    gfs.write("a1", 0, b"with tokens").await?;
    let old = Gfs::primary_id(&before)?;
    let target = before
        .replicas
        .iter()
        .map(|r| r.server_id.clone())
        .find(|s| *s != old)
        .ok_or_else(|| anyhow::anyhow!("no secondary"))?;
    gfs.client.recall("a1", "snapshot", &target).await?;
    let after = gfs.wait_primary("a1", before.version).await?;
    assert_eq!(Gfs::primary_id(&after)?, target);
    assert_eq!(gfs.client.read("a1", 0, 11).await?, b"with tokens");
    // The chunkservers' token cannot stand for master.
    let cs = leasehold_client::ClientBuilder::new(gfs.cluster.api_endpoints())
        .token(common::CHUNKSERVER_TOKEN)
        .connect()
        .await?;
    let session = cs.open_session("not-a-master", TTL).await?;
    let denied = session
        .acquire(
            leasehold_gfs::names::MASTER_LEASE,
            leasehold_client::AcquireOptions::exclusive(),
        )
        .await
        .expect_err("outside chunk/");
    assert_eq!(denied.kind(), "permission_denied", "{denied}");
    session.close().await?;
    let s = gfs.check()?;
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    gfs.shutdown().await
}

/// A secondary that was down while the chunk moved on comes back with an
/// older version: it is left out of every location while stale, then the
/// master restores the replication factor by recalling the primary and
/// installing the chunk on it at the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_replica_is_excluded_then_re_replicated() -> anyhow::Result<()> {
    let mut gfs = Gfs::start(Options::default()).await?;
    gfs.client.create("s1", 0).await?;
    let v1 = gfs.wait_primary("s1", 0).await?;
    gfs.write("s1", 0, b"v1 data").await?;
    let primary = Gfs::primary_id(&v1)?;
    let victim = v1
        .replicas
        .iter()
        .map(|r| r.server_id.clone())
        .find(|s| *s != primary)
        .ok_or_else(|| anyhow::anyhow!("no secondary"))?;
    gfs.kill_server(&victim).await?;
    // The next write fails at the dead secondary; the primary steps down
    // and the chunk is reassigned to the two live replicas.
    gfs.write("s1", 100, b"written while a replica is down")
        .await?;
    let v2 = gfs.wait_primary("s1", v1.version).await?;
    assert!(v2.replicas.iter().all(|r| r.server_id != victim), "{v2:?}");
    gfs.start_server(&victim).await?;
    assert_eq!(gfs.server(&victim)?.version_of("s1"), Some(v1.version));
    // Stale: never located while behind; then installed at a newer version.
    let v3 = wait_until("the stale replica re-replicated", WAIT, || async {
        gfs.client.invalidate("s1");
        let l = gfs.client.locate("s1").await.ok()?;
        let listed = l.replicas.iter().any(|r| r.server_id == victim);
        let version = gfs.server(&victim).ok()?.version_of("s1")?;
        assert!(
            !listed || version == l.version,
            "a stale replica at {version} listed for version {}",
            l.version
        );
        (listed && l.cache_ms > 0).then_some(l)
    })
    .await?;
    assert!(v3.version > v2.version);
    assert_eq!(v3.replicas.len(), 3);
    gfs.write("s1", 200, b"after re-replication").await?;
    let s = gfs.check()?;
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.replicas_up_to_date, 3);
    gfs.shutdown().await
}

/// Two masters: the elected one is killed; the standby takes over through
/// `gfs/master` with no state but reports and leases, serves existing
/// chunks, creates new ones, and reassigns a killed primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_failover() -> anyhow::Result<()> {
    let mut gfs = Gfs::start(Options {
        masters: 2,
        servers: 4,
        ..Options::default()
    })
    .await?;
    gfs.client.create("f1", 0).await?;
    let before = gfs.wait_primary("f1", 0).await?;
    gfs.write("f1", 0, b"first master").await?;
    let first = gfs.wait_elected().await?;
    if let Some(m) = gfs.masters[first].take() {
        m.kill();
    }
    let second = gfs.wait_elected().await?;
    assert_ne!(first, second);
    gfs.write("f1", 100, b"second master").await?;
    gfs.client.create("f2", 0).await?;
    gfs.write("f2", 0, b"created by the second master").await?;
    // The second master may have granted f1 again, at a version above
    // `before`: wait for a primary above the one killed, not above `before`
    // (the killed one's location is still served until its lease ends).
    let current = gfs.wait_primary("f1", 0).await?;
    assert!(current.version >= before.version, "versions only grow");
    let old = Gfs::primary_id(&current)?;
    gfs.kill_server(&old).await?;
    let after = gfs.wait_primary("f1", current.version).await?;
    assert_ne!(Gfs::primary_id(&after)?, old);
    assert_eq!(gfs.client.read("f1", 0, 12).await?, b"first master");
    let s = gfs.check()?;
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    gfs.shutdown().await
}

/// Concurrent record appends on one small chunk: every acknowledged record
/// sits whole at its own offset, the same on every replica; the chunk ends
/// padded, and appends after that report a full chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_append_is_atomic_across_replicas() -> anyhow::Result<()> {
    let gfs = Gfs::start(Options {
        chunk_bytes: 8 * 1024,
        ..Options::default()
    })
    .await?;
    gfs.client.create("a1", 0).await?;
    gfs.wait_primary("a1", 0).await?;
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let client = gfs.client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for seq in 0..40u64 {
                let data = leasehold_gfs::workload::payload(w, seq, 300);
                match client.append("a1", &data).await {
                    Ok(a) => acked.push((a.offset, data, a.version)),
                    Err(GfsError::ChunkFull(_)) => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(acked)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    for (offset, data, version) in &all {
        gfs.ack("append", "a1", *offset, data, *version);
    }
    assert!(all.len() >= 20, "{} records", all.len());
    let offsets: BTreeSet<u64> = all.iter().map(|a| a.0).collect();
    assert_eq!(offsets.len(), all.len(), "distinct offsets");
    assert!(offsets
        .iter()
        .zip(offsets.iter().skip(1))
        .all(|(a, b)| b - a >= 300));
    let replicas: Vec<_> = gfs
        .replicas()?
        .into_iter()
        .filter(|r| r.chunk == "a1")
        .collect();
    assert_eq!(replicas.len(), 3);
    for r in &replicas {
        assert_eq!(
            r.data.len() as u64,
            8 * 1024,
            "{} padded to the chunk end",
            r.server
        );
        for (offset, data, _) in &all {
            let at = usize::try_from(*offset)?;
            assert_eq!(&r.data[at..at + data.len()], &data[..]);
        }
    }
    assert!(matches!(
        gfs.client.append("a1", b"one more").await,
        Err(GfsError::ChunkFull(_))
    ));
    let s = gfs.check()?;
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.appends, all.len());
    gfs.shutdown().await
}

/// The scenario behind the checker test: the primary loses Leasehold (its
/// session expires) but keeps serving; a writer that still addresses it
/// keeps trying while the new primary takes writes. Returns the checker's
/// summary.
async fn primary_cut_from_leasehold(
    unsafe_primary: bool,
) -> anyhow::Result<leasehold_gfs::checker::Summary> {
    let ids: Vec<String> = (1..=3).map(|i| format!("cs{i}")).collect();
    let gfs = Gfs::start(Options {
        unsafe_servers: if unsafe_primary { ids } else { Vec::new() },
        ..Options::default()
    })
    .await?;
    gfs.client.create("u1", 0).await?;
    let before = gfs.wait_primary("u1", 0).await?;
    let old = Gfs::primary_id(&before)?;
    gfs.write("u1", 0, b"before").await?;
    gfs.server(&old)?.stop_heartbeat();
    // A stale writer straight at the old primary, with the old version.
    let stale = {
        let addr = before.primary.clone();
        let version = before.version;
        tokio::spawn(async move {
            let mut stub =
                leasehold_proto::gfs::v1::chunkserver_client::ChunkserverClient::connect(format!(
                    "http://{addr}"
                ))
                .await?;
            let end = Instant::now() + TTL * 4;
            let mut i = 0u64;
            while Instant::now() < end {
                let _ = stub
                    .write(leasehold_proto::gfs::v1::WriteRequest {
                        chunk: "u1".into(),
                        version,
                        offset: 1_000 + i * 10,
                        data: b"stale".to_vec().into(),
                    })
                    .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    };
    let after = gfs.wait_primary("u1", before.version).await?;
    assert_ne!(Gfs::primary_id(&after)?, old);
    let end = Instant::now() + TTL;
    let mut i = 0u64;
    while Instant::now() < end {
        gfs.write("u1", 30_000 + i * 10, b"fresh").await?;
        i += 1;
    }
    stale.await??;
    let s = gfs.check()?;
    gfs.shutdown().await?;
    Ok(s)
}

/// With the test-only unsafe switch, the old primary keeps accepting after
/// its deadline and the checker reports two primaries at once; without it
/// (the same scenario) the checker finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checker_catches_a_primary_ignoring_its_deadline() -> anyhow::Result<()> {
    let safe = primary_cut_from_leasehold(false).await?;
    assert!(safe.violations.is_empty(), "{:?}", safe.violations);
    let unsafe_run = primary_cut_from_leasehold(true).await?;
    assert!(
        unsafe_run
            .violations
            .iter()
            .any(|v| v.rule == "two_primaries"),
        "{:?}",
        unsafe_run.violations
    );
    Ok(())
}
