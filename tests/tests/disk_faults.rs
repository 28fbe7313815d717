//! Disk faults are fail-stop (docs/adr/0007-disk-faults-fail-stop.md): a
//! full disk, a data directory that turns read-only and a corrupt store
//! each give a clear error and a node that stops serving, never a wrong
//! answer; the rest of the cluster keeps serving and no acknowledged write
//! is lost.
//!
//! Mounting needs root: those tests print a SKIPPED line and return when
//! not root (CI runs as root, so they run there). The corrupt-store test
//! needs no mount and always runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use leasehold_proto::v1 as pb;
use leasehold_raft::NodeId;
use leasehold_server::{Node, ServerError, Serving};
use leasehold_tests::disk::{self, Ext4Loop, Tmpfs};
use leasehold_tests::grpc::{self, client, Sess};
use leasehold_tests::{http, wait_until, ClusterOptions, TestCluster, WAIT};
use tokio::time::Instant;

/// Size of each node's tmpfs: room for a small cluster's store, small
/// enough to fill in a moment.
const TMPFS_BYTES: u64 = 32 * 1024 * 1024;
/// Size of the ext4 image (ext4 needs a few MiB for itself).
const EXT4_BYTES: u64 = 32 * 1024 * 1024;
/// Writes the cluster must still acknowledge after the faulty node
/// fail-stopped (the rest keeps serving).
const ACKS_AFTER_FAIL_STOP: usize = 20;
/// Most acquires one scenario sends before giving up on the fault.
const ACQUIRES_MAX: usize = 20_000;
/// How long a scenario may run its workload.
const WORKLOAD_MAX: Duration = Duration::from_secs(90);
/// Session TTL of the workload's client (kept alive throughout).
const SESSION_TTL_MS: u64 = 10_000;

/// Options of a cluster whose node `i` keeps its data in `root/node-i`.
fn options(root: &Path) -> ClusterOptions {
    ClusterOptions {
        metrics: true,
        data_root: Some(root.to_path_buf()),
        // Small snapshots so the restarted node also catches up through
        // one, and so the store is exercised beyond appends.
        snapshot_every_entries: 500,
        log_entries_kept: 100,
        ..ClusterOptions::default()
    }
}

/// Mounts a tmpfs of [`TMPFS_BYTES`] for each of three nodes under `root`.
fn tmpfs_per_node(root: &Path) -> anyhow::Result<BTreeMap<NodeId, Tmpfs>> {
    (1..=3)
        .map(|id| {
            Ok((
                id,
                Tmpfs::mount(root.join(format!("node-{id}")), TMPFS_BYTES)?,
            ))
        })
        .collect()
}

/// Whether `status` is a fail-stopped node's answer.
fn is_storage_failed(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().contains("storage failed")
}

/// A client workload: acquires of fresh resources, sent to whichever node
/// answers, recording every acquire the client saw succeed.
struct Workload {
    /// Every member's client address.
    endpoints: Vec<String>,
    /// The session holding every lease.
    session: Sess,
    /// Acknowledged acquires: resource → fencing token.
    acked: BTreeMap<String, u64>,
    /// Acquires sent (each on a fresh resource).
    sent: usize,
    /// Where the next acquire goes first (moves on after a failure).
    next_endpoint: usize,
}

impl Workload {
    /// One acquire of a fresh resource; `true` if it was acknowledged.
    async fn acquire_one(&mut self) -> bool {
        let resource = format!("disk/{:06}", self.sent);
        self.sent += 1;
        let endpoint = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
        let answer = match client(&endpoint).await {
            Ok(mut api) => tokio::time::timeout(
                Duration::from_secs(6),
                api.acquire(grpc::acquire_req(self.session, &resource, false, 0)),
            )
            .await
            .ok()
            .and_then(Result::ok),
            Err(_) => None,
        };
        match answer.and_then(|a| a.into_inner().lease) {
            Some(lease) => {
                self.acked.insert(resource, lease.fencing_token);
                true
            }
            None => {
                // Unacknowledged: it may or may not have applied; it is
                // never asserted. Try the next node.
                self.next_endpoint += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                false
            }
        }
    }

    /// Runs acquires until `victim` fail-stopped and the cluster then
    /// acknowledged [`ACKS_AFTER_FAIL_STOP`] more.
    async fn run_until_fail_stop(&mut self, c: &TestCluster, victim: NodeId) -> anyhow::Result<()> {
        let deadline = Instant::now() + WORKLOAD_MAX;
        let mut acked_after = 0;
        while acked_after < ACKS_AFTER_FAIL_STOP {
            anyhow::ensure!(
                Instant::now() < deadline && self.sent < ACQUIRES_MAX,
                "node {victim} did not fail-stop, or the others stopped serving ({} acquires \
                 sent, {} acknowledged, {acked_after} after the fail-stop)",
                self.sent,
                self.acked.len()
            );
            let failed = c.node(victim)?.storage_failure().is_some();
            if self.acquire_one().await && failed {
                acked_after += 1;
            }
        }
        Ok(())
    }

    /// Checks that every acknowledged acquire is held, with its token, in
    /// the applied state of `node`.
    fn check_acked_on(&self, node: &Node) -> anyhow::Result<()> {
        let missing: Vec<&String> = node.read(|s| {
            self.acked
                .iter()
                .filter(|(resource, token)| {
                    s.resource(resource)
                        .and_then(|r| r.holders.get(&self.session.id))
                        .map(|lease| lease.token)
                        != Some(**token)
                })
                .map(|(resource, _)| resource)
                .collect()
        });
        let first = missing.first().map(|name| {
            let token = self.acked.get(*name);
            let found = node.read(|s| format!("{:?}", s.resource(name)));
            let applied = node.raft().metrics().borrow().last_applied;
            format!("{name} (token {token:?}; state: {found}; node applied {applied:?})")
        });
        anyhow::ensure!(
            missing.is_empty(),
            "node {} lost {} acknowledged acquires, e.g. {}",
            node.id(),
            missing.len(),
            first.unwrap_or_default()
        );
        Ok(())
    }
}

/// Waits until every running node (but `except`) holds every
/// acknowledged acquire in its applied state (a follower applies a moment
/// after the leader answered); fails with what is missing if one does not
/// within [`WAIT`].
async fn check_nodes(c: &TestCluster, w: &Workload, except: Option<NodeId>) -> anyhow::Result<()> {
    for node in c.running().filter(|n| Some(n.id()) != except) {
        let held = wait_until("every acknowledged acquire to be applied", WAIT, || async {
            w.check_acked_on(node).ok()
        })
        .await;
        if held.is_err() {
            w.check_acked_on(node)?;
        }
    }
    Ok(())
}

/// Opens the workload's session and keeps it alive on every node.
async fn workload(c: &TestCluster) -> anyhow::Result<(Workload, tokio::sync::mpsc::Sender<()>)> {
    let leader = c.serving_leader().await?;
    let session = grpc::open(&c.api_endpoint(leader)?, "disk-faults", SESSION_TTL_MS).await?;
    let (_view, keep) =
        grpc::keep_alive(c.api_endpoints(), vec![session], Duration::from_millis(500));
    let w = Workload {
        endpoints: c.api_endpoints(),
        session,
        acked: BTreeMap::new(),
        sent: 0,
        next_endpoint: (leader - 1) as usize,
    };
    Ok((w, keep))
}

/// Everything a fail-stopped node shows: its serving state, its client
/// API, its health endpoints and its metrics.
async fn assert_fail_stopped(c: &TestCluster, victim: NodeId, cause: &str) -> anyhow::Result<()> {
    let node = c.node(victim)?;
    let reason = node
        .storage_failure()
        .ok_or_else(|| anyhow::anyhow!("node {victim} did not fail-stop"))?;
    anyhow::ensure!(
        reason.contains(cause),
        "node {victim}'s failure does not name {cause:?}: {reason}"
    );
    let data_dir = c.data_dir(victim)?.display().to_string();
    anyhow::ensure!(
        reason.contains(&data_dir),
        "node {victim}'s failure does not name its data dir {data_dir}: {reason}"
    );
    assert_eq!(node.serving(), Serving::StorageFailed);
    assert_eq!(node.metrics().storage_failures_total, 1);
    // Raft stopped: no vote, no acknowledgement from here on.
    wait_until("the failed node's Raft to stop", WAIT, || async {
        node.raft()
            .metrics()
            .borrow()
            .state
            .eq(&openraft::ServerState::Shutdown)
            .then_some(())
    })
    .await?;
    let mut api = client(&c.api_endpoint(victim)?).await?;
    let get = api
        .get(pb::GetRequest {
            resource: "disk/000000".into(),
        })
        .await;
    match get {
        Err(status) if is_storage_failed(&status) => {}
        other => anyhow::bail!("Get on the failed node answered {other:?}"),
    }
    match api.status(pb::StatusRequest {}).await {
        Err(status) if is_storage_failed(&status) => {}
        other => anyhow::bail!("Status on the failed node answered {other:?}"),
    }
    let addr = c.metrics_addr(victim)?;
    for path in ["/readyz", "/healthz"] {
        let answer = http::get(addr, path).await?;
        anyhow::ensure!(
            answer.status == 503 && answer.body.contains("storage failed"),
            "{path} on the failed node: {answer:?}"
        );
    }
    let metrics = http::get(addr, "/metrics").await?;
    assert_eq!(
        http::sample(&metrics.body, "leasehold_storage_failures_total"),
        Some(1.0)
    );
    assert_eq!(
        http::sample(
            &metrics.body,
            "leasehold_serving_state{state=\"storage_failed\"}"
        ),
        Some(1.0)
    );
    Ok(())
}

/// The full-disk scenario on `victim`: fill its tmpfs, keep writing until
/// it fail-stops while the others keep acknowledging, then free space,
/// restart it and check it caught up with every acknowledged write.
async fn disk_fills_on(
    mut c: TestCluster,
    mounts: &BTreeMap<NodeId, Tmpfs>,
    victim: NodeId,
) -> anyhow::Result<()> {
    let (mut w, _keep) = workload(&c).await?;
    for _ in 0..50 {
        w.acquire_one().await;
    }
    mounts[&victim].fill()?;
    w.run_until_fail_stop(&c, victim).await?;
    assert_fail_stopped(&c, victim, "No space left on device").await?;
    // The others serve, and hold every acknowledged write.
    let leader = c.serving_leader().await?;
    anyhow::ensure!(leader != victim, "the failed node still serves");
    check_nodes(&c, &w, Some(victim))
        .await
        .with_context(|| format!("before the restart of {victim}"))?;
    // The operator frees space and restarts it: it rejoins and catches up.
    c.stop(victim).await?;
    mounts[&victim].free()?;
    c.restart(victim).await?;
    for _ in 0..20 {
        w.acquire_one().await;
    }
    check_nodes(&c, &w, None)
        .await
        .with_context(|| format!("after the restart of {victim}"))?;
    c.shutdown().await
}

/// A follower whose disk fills fail-stops; the leader and the other
/// follower keep serving; freed and restarted, it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_disk_fills_fail_stops_and_catches_up_after_space_is_freed(
) -> anyhow::Result<()> {
    if disk::skip_unless_root("a_follower_whose_disk_fills_fail_stops") {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    let mounts = tmpfs_per_node(root.path())?;
    let c = TestCluster::start(options(root.path())).await?;
    let leader = c.serving_leader().await?;
    let victim = c.other_than(leader)?;
    disk_fills_on(c, &mounts, victim).await
}

/// A leader whose disk fills fail-stops; the others elect a new leader and
/// keep serving, with every acknowledged write; freed and restarted, the
/// old leader catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_disk_fills_fail_stops_and_the_others_take_over() -> anyhow::Result<()> {
    if disk::skip_unless_root("a_leader_whose_disk_fills_fail_stops") {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    let mounts = tmpfs_per_node(root.path())?;
    let c = TestCluster::start(options(root.path())).await?;
    let leader = c.serving_leader().await?;
    disk_fills_on(c, &mounts, leader).await
}

/// A node whose data directory is read-only refuses to start, with one
/// error naming the directory and the cause; the others keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_data_dir_is_refused_at_start() -> anyhow::Result<()> {
    if disk::skip_unless_root("a_read_only_data_dir_is_refused_at_start") {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    let mounts = tmpfs_per_node(root.path())?;
    let mut c = TestCluster::start(options(root.path())).await?;
    let leader = c.serving_leader().await?;
    let victim = c.other_than(leader)?;
    let (mut w, _keep) = workload(&c).await?;
    for _ in 0..20 {
        w.acquire_one().await;
    }
    c.stop(victim).await?;
    mounts[&victim].remount_read_only()?;
    let error = match c.restart(victim).await {
        Ok(()) => anyhow::bail!("node {victim} started on a read-only data directory"),
        Err(e) => e,
    };
    let server_error = error
        .chain()
        .find_map(|e| e.downcast_ref::<ServerError>())
        .ok_or_else(|| anyhow::anyhow!("not a ServerError: {error:#}"))?;
    let message = server_error.to_string();
    let data_dir = c.data_dir(victim)?.display().to_string();
    anyhow::ensure!(
        matches!(server_error, ServerError::Storage(_))
            && message.contains(&data_dir)
            && message.contains("Read-only file system")
            && !message.contains('\n'),
        "unclear start error: {message}"
    );
    // The other two keep serving and hold every acknowledged write.
    for _ in 0..20 {
        anyhow::ensure!(w.acquire_one().await || w.acquire_one().await);
    }
    check_nodes(&c, &w, None).await?;
    // Writable again, it starts and catches up.
    mounts[&victim].remount_read_write()?;
    c.restart(victim).await?;
    check_nodes(&c, &w, None).await?;
    c.shutdown().await
}

/// A data directory that turns read-only under a running node (the kernel
/// remounts ext4 read-only after a disk error) makes it fail-stop; the
/// others keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_dir_turning_read_only_while_running_fail_stops_the_node() -> anyhow::Result<()> {
    if disk::skip_unless_root("a_data_dir_turning_read_only_while_running") {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    let images = tempfile::tempdir()?;
    let mut mounts = BTreeMap::new();
    for id in 1..=3u64 {
        let image = images.path().join(format!("node-{id}.img"));
        mounts.insert(
            id,
            Ext4Loop::mount(&image, root.path().join(format!("node-{id}")), EXT4_BYTES)?,
        );
    }
    let c = TestCluster::start(options(root.path())).await?;
    let leader = c.serving_leader().await?;
    let victim = c.other_than(leader)?;
    let (mut w, _keep) = workload(&c).await?;
    for _ in 0..20 {
        w.acquire_one().await;
    }
    mounts[&victim].fail()?;
    w.run_until_fail_stop(&c, victim).await?;
    assert_fail_stopped(&c, victim, "Read-only file system").await?;
    check_nodes(&c, &w, Some(victim)).await?;
    c.shutdown().await
}

/// Damages the sled files of a stopped node the way a bad disk would:
/// overwrites a block in the middle of its log.
fn damage_store(dir: &Path) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let db = dir.join("db");
    let len = std::fs::metadata(&db)?.len();
    anyhow::ensure!(len > 8192, "store file too small to damage: {len} bytes");
    let mut file = std::fs::OpenOptions::new().write(true).open(&db)?;
    for offset in [len / 4, len / 2] {
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&[0xff; 512])?;
    }
    file.sync_all()?;
    Ok(())
}

/// A node whose store is damaged refuses to start with an error naming its
/// data directory and the corruption (never serving a wrong state); the
/// others keep serving; the operator's fix (take the id out of the
/// membership, wipe, start, add it back) brings it back with every
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_store_is_refused_at_start_and_rejoins_after_a_wipe() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut c = TestCluster::start(options(root.path())).await?;
    let leader = c.serving_leader().await?;
    let victim = c.other_than(leader)?;
    let (mut w, _keep) = workload(&c).await?;
    for _ in 0..200 {
        w.acquire_one().await;
    }
    c.wait_caught_up(victim).await?;
    c.stop(victim).await?;
    damage_store(c.data_dir(victim)?)?;
    let error = match c.restart(victim).await {
        Ok(()) => anyhow::bail!("node {victim} started on a damaged store"),
        Err(e) => e,
    };
    let message = format!("{error:#}");
    let data_dir = c.data_dir(victim)?.display().to_string();
    anyhow::ensure!(
        message.contains(&data_dir) && message.contains("corrupt"),
        "unclear start error: {message}"
    );
    // The other two keep serving.
    for _ in 0..20 {
        anyhow::ensure!(w.acquire_one().await || w.acquire_one().await);
    }
    // The runbook: remove the id, wipe the directory, start, add it back.
    let others: Vec<NodeId> = c.ids().into_iter().filter(|id| *id != victim).collect();
    c.change_voters(&others).await?;
    c.wipe(victim)?;
    c.restart(victim).await?;
    c.wait_admission(victim, leasehold_server::Admission::AwaitingMembership)
        .await?;
    c.change_voters(&c.ids()).await?;
    check_nodes(&c, &w, None).await?;
    c.shutdown().await
}
