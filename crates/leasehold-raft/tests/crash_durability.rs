//! Durability of the sled store: close-and-reopen, refusal of unknown
//! on-disk formats, snapshot install, and a SIGKILL of a process in the
//! middle of appending.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Cursor, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use leasehold_core::{Acquire, Command, EventKind, Mode, Response, SessionTarget};
use leasehold_raft::store::{self, StoreError, STORE_FORMAT_VERSION};
use leasehold_raft::types::{Entry, LogId, Vote};
use leasehold_raft::{LeaseNode, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};

/// Environment variable that turns `crash_child_appender` into the child
/// process of `sigkill_loses_no_acknowledged_write`: the data directory.
const CHILD_DIR_ENV: &str = "LEASEHOLD_CRASH_CHILD_DIR";

/// sled on `dir`, as the store left it: waits (2 s at most) for the lock
/// sled's own threads may hold a moment after the store closed.
fn raw_open(dir: &Path) -> anyhow::Result<sled::Db> {
    Ok(store::open_sled_waiting(&sled::Config::new().path(dir))?)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

fn command(term: u64, index: u64, cmd: Command) -> Entry {
    entry(term, index, EntryPayload::Normal(cmd))
}

fn membership(term: u64, index: u64) -> Entry {
    let node = LeaseNode {
        raft_addr: "127.0.0.1:7001".to_string(),
        api_addr: "127.0.0.1:7101".to_string(),
    };
    entry(
        term,
        index,
        EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([1])],
            BTreeMap::from([(1, node)]),
        )),
    )
}

fn open_session(name: &str) -> Command {
    Command::OpenSession {
        client_name: name.to_string(),
        ttl_ms: 10_000,
        secret: leasehold_core::SessionSecret([2; 16]),
        request_id: 0,
    }
}

fn acquire(session: u64, resource: &str, mode: Mode) -> Command {
    Command::Acquire(Acquire {
        session: SessionTarget::Existing(leasehold_core::SessionRef {
            id: session,
            secret: leasehold_core::SessionSecret([2; 16]),
        }),
        resource: resource.to_string(),
        mode,
        wait: true,
        metadata: b"meta".to_vec(),
    })
}

/// A workload touching sessions, resources (created, changed, deleted) and
/// the configuration. Session ids are the indexes of their open entries.
fn workload(term: u64) -> Vec<Entry> {
    vec![
        entry(term, 1, EntryPayload::Blank),
        membership(term, 2),
        command(term, 3, open_session("alpha")),
        command(term, 4, open_session("beta")),
        command(term, 5, acquire(3, "db/primary", Mode::Exclusive)),
        command(term, 6, acquire(4, "db/primary", Mode::Exclusive)),
        command(term, 7, acquire(4, "cache", Mode::Shared)),
        command(
            term,
            8,
            Command::Recall {
                resource: "db/primary".to_string(),
                reason: "maintenance".to_string(),
            },
        ),
        command(
            term,
            9,
            Command::Release {
                session: leasehold_core::SessionRef {
                    id: 3,
                    secret: leasehold_core::SessionSecret([2; 16]),
                },
                resource: "db/primary".to_string(),
            },
        ),
        command(term, 10, open_session("gamma")),
        command(
            term,
            11,
            Command::CloseSession {
                session: leasehold_core::SessionRef {
                    id: 10,
                    secret: leasehold_core::SessionSecret([2; 16]),
                },
            },
        ),
        command(
            term,
            12,
            Command::SetConfig(leasehold_core::LeaseConfig {
                ttl_ms_min: 3_000,
                ..leasehold_core::LeaseConfig::default()
            }),
        ),
        command(term, 13, acquire(3, "queue", Mode::Exclusive)),
    ]
}

#[tokio::test]
async fn reopen_keeps_vote_log_committed_purged_and_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = workload(2);
    let vote = Vote::new(2, 1);

    let (before_state, before_applied, before_snapshot) = {
        let (mut log, mut sm) = store::open(dir.path())?;
        log.save_vote(&vote).await?;
        log.blocking_append(entries.clone()).await?;
        log.save_committed(Some(log_id(2, 12))).await?;
        log.purge(log_id(2, 4)).await?;

        let responses = sm.apply(entries[..12].to_vec()).await?;
        assert_eq!(responses.len(), 12, "one response per entry");
        assert_eq!(responses[0], Response::Noop);
        assert_eq!(responses[1], Response::Noop);
        assert!(
            matches!(responses[2], Response::SessionOpened { session: 3, .. }),
            "{:?}",
            responses[2]
        );
        assert!(
            matches!(responses[5], Response::Queued { session: 4, .. }),
            "{:?}",
            responses[5]
        );

        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
        let state = sm.read(|s| s.encode());
        ensure!(sm.read(|s| s.session(4).is_some() && s.session(10).is_none()));
        ensure!(sm.read(|s| s.resource("db/primary").is_some()));
        ensure!(sm.read(|s| s.config().ttl_ms_min == 3_000));
        (state, sm.applied_state().await?, snapshot.meta)
        // Both stores drop here: the database closes.
    };

    let (mut log, mut sm) = store::open(dir.path())?;
    assert_eq!(log.read_vote().await?, Some(vote));
    assert_eq!(log.read_committed().await?, Some(log_id(2, 12)));
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 4)));
    assert_eq!(state.last_log_id, Some(log_id(2, 13)));
    assert_eq!(log.try_get_log_entries(0..).await?, entries[4..].to_vec());

    assert_eq!(
        sm.read(|s| s.encode()),
        before_state,
        "state machine bytes differ after reopen"
    );
    assert_eq!(sm.applied_state().await?, before_applied);
    assert_eq!(sm.applied_state().await?.0, Some(log_id(2, 12)));
    let snapshot = sm.get_current_snapshot().await?.context("snapshot lost")?;
    assert_eq!(snapshot.meta, before_snapshot);
    assert_eq!(snapshot.snapshot.into_inner(), before_state);

    // Applying continues from the reloaded state exactly as before.
    let responses = sm.apply(entries[12..].to_vec()).await?;
    assert!(
        matches!(
            &responses[0],
            Response::Acquired {
                session: 3,
                newly_granted: true,
                ..
            }
        ),
        "{:?}",
        responses[0]
    );
    ensure!(sm.read(|s| s.check_invariants().is_ok()));
    Ok(())
}

#[tokio::test]
async fn purge_everything_keeps_last_log_id() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (mut log, _sm) = store::open(dir.path())?;
        log.blocking_append(workload(1)).await?;
        log.purge(log_id(1, 13)).await?;
        let state = log.get_log_state().await?;
        assert_eq!(state.last_log_id, Some(log_id(1, 13)));
    }
    let (mut log, _sm) = store::open(dir.path())?;
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 13)));
    assert_eq!(
        state.last_log_id,
        Some(log_id(1, 13)),
        "empty log reports the purged id"
    );
    assert!(log.try_get_log_entries(0..).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn truncate_survives_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = workload(1);
    {
        let (mut log, _sm) = store::open(dir.path())?;
        log.blocking_append(entries.clone()).await?;
        log.truncate(log_id(1, 8)).await?;
        // A new leader's entries replace the truncated suffix.
        log.blocking_append([entry(3, 8, EntryPayload::Blank)])
            .await?;
    }
    let (mut log, _sm) = store::open(dir.path())?;
    let got = log.try_get_log_entries(0..).await?;
    let mut expected = entries[..7].to_vec();
    expected.push(entry(3, 8, EntryPayload::Blank));
    assert_eq!(got, expected);
    Ok(())
}

#[tokio::test]
async fn unknown_format_version_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(store::open(dir.path())?);
    {
        // Documented layout: key [0x00, 0x00] holds the version as a
        // big-endian u32.
        let db = raw_open(dir.path())?;
        db.insert([0x00, 0x00], &99u32.to_be_bytes())?;
        db.flush()?;
    }
    match store::open(dir.path()) {
        Err(StoreError::UnsupportedFormat {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, STORE_FORMAT_VERSION);
        }
        Err(other) => bail!("wrong error: {other}"),
        Ok(_) => bail!("a database of format version 99 was opened"),
    }
    let message = match store::open(dir.path()) {
        Err(e) => e.to_string(),
        Ok(_) => bail!("opened"),
    };
    ensure!(
        message.contains("unsupported on-disk format version 99")
            && message.contains(&format!("reads version {STORE_FORMAT_VERSION}")),
        "unclear message: {message}"
    );
    Ok(())
}

#[tokio::test]
async fn a_version_2_store_is_upgraded_and_a_batch_position_survives_reopen() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    {
        let (_log, mut sm) = store::open(dir.path())?;
        sm.apply(vec![command(1, 1, open_session("a"))]).await?;
    }
    {
        // What a version 2 build left: version 2, no position record
        // (documented layout: [0x00, 0x00] version, [0x00, 0x07] position).
        let db = raw_open(dir.path())?;
        db.insert([0x00, 0x00], &2u32.to_be_bytes())?;
        db.remove([0x00, 0x07])?;
        db.flush()?;
    }
    {
        let (_log, mut sm) = store::open(dir.path())?;
        // Its position is its revision.
        assert_eq!(sm.read(|s| (s.position(), s.revision())), (1, 1));
        // A batch at entry 2 takes positions 2 and 3.
        let responses = sm
            .apply(vec![command(
                1,
                2,
                Command::Batch(vec![open_session("b"), open_session("c")]),
            )])
            .await?;
        match &responses[..] {
            [Response::Batch(rs)] => ensure!(
                matches!(
                    &rs[..],
                    [
                        Response::SessionOpened { session: 2, .. },
                        Response::SessionOpened { session: 3, .. }
                    ]
                ),
                "{rs:?}"
            ),
            other => bail!("{other:?}"),
        }
        sm.flush().await?;
    }
    {
        let db = raw_open(dir.path())?;
        let version = db.get([0x00, 0x00])?.context("no version")?;
        assert_eq!(version.as_ref(), &STORE_FORMAT_VERSION.to_be_bytes());
    }
    let (_log, mut sm) = store::open(dir.path())?;
    assert_eq!(sm.read(|s| (s.position(), s.revision())), (3, 2));
    // The next entry (3) is behind the positions: its session is 4.
    let responses = sm.apply(vec![command(1, 3, open_session("d"))]).await?;
    ensure!(
        matches!(responses[..], [Response::SessionOpened { session: 4, .. }]),
        "{responses:?}"
    );
    Ok(())
}

/// Drops both stores and waits until the database is closed (background
/// tasks, a snapshot build's among them, hold handles for a moment).
async fn close(log: store::LogStore, sm: store::StateMachineStore) -> anyhow::Result<()> {
    let closed = log.close_watch();
    drop((log, sm));
    closed.closed(Duration::from_secs(10)).await?;
    Ok(())
}

/// Opens `n` sessions with names long enough that the snapshot of them
/// (about 270 bytes a session) is stored by sled as a blob of its own.
async fn open_many(sm: &mut store::StateMachineStore, index: u64, n: usize) -> anyhow::Result<()> {
    let name = "n".repeat(250);
    let batch = Command::Batch((0..n).map(|_| open_session(&name)).collect());
    let responses = sm.apply(vec![command(1, index, batch)]).await?;
    ensure!(
        matches!(&responses[..], [Response::Batch(rs)] if rs.len() == n),
        "the batch was refused: {responses:?}"
    );
    Ok(())
}

/// Names of the files in sled's blob directory (values and nodes too large
/// for its segments: one file each, a new name each time one is written).
fn blobs(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("blobs"))? {
        names.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Issue 8: in the default tree the snapshot shared a B-tree leaf with the
/// highest keys, and every flush after a write to one of them wrote the
/// whole snapshot to disk again (sled writes a node holding such a value
/// as a blob). In its own tree it is written once.
#[tokio::test]
async fn writes_next_to_the_snapshot_do_not_rewrite_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = store::open(dir.path())?;
    open_many(&mut sm, 1, 1_000).await?;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
    ensure!(snapshot.snapshot.get_ref().len() > 250_000);
    sm.flush().await?;
    let before = blobs(dir.path())?;
    ensure!(
        !before.is_empty(),
        "the snapshot is not a blob: the test shows nothing"
    );
    // Sessions are the highest keys of the default tree (no resources).
    for index in 2..42 {
        sm.apply(vec![command(1, index, open_session("next"))])
            .await?;
        sm.flush().await?;
    }
    let after = blobs(dir.path())?;
    ensure!(
        after == before,
        "blobs written by 40 small writes: {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
    Ok(())
}

/// Issue 8 (`scale` run at 700,000 leases): a snapshot build reads the
/// whole state under the read lock for seconds. Apply must wait for it,
/// but it used to wait in `RwLock::write`, blocking a runtime thread and,
/// as a queued writer, every new reader of the state with it: the node
/// froze, and its peers stood for election. Here a reader holds the state
/// (as a build does) while an entry is applied: apply waits, and another
/// reader still gets the state at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_waiting_for_a_snapshot_build_blocks_no_other_reader() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, sm) = store::open(dir.path())?;
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let builder = sm.clone();
    let long_reader = std::thread::spawn(move || {
        builder.read(|_| {
            let _ = held_tx.send(());
            let _ = release_rx.recv();
        })
    });
    held_rx.recv()?;

    let mut applier = sm.clone();
    let apply =
        tokio::spawn(async move { applier.apply(vec![command(1, 1, open_session("a"))]).await });
    // Nothing to wait on: a writer waiting on the lock is not visible.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let applied_under_reader = apply.is_finished();

    let (got_tx, got_rx) = mpsc::channel();
    let reader = sm.clone();
    let other_reader = std::thread::spawn(move || {
        let sessions = reader.read(|s| s.session_count());
        let _ = got_tx.send(sessions);
    });
    let got = got_rx.recv_timeout(Duration::from_secs(5));
    release_tx.send(())?;
    long_reader
        .join()
        .map_err(|_| anyhow::anyhow!("long reader panicked"))?;
    other_reader
        .join()
        .map_err(|_| anyhow::anyhow!("other reader panicked"))?;

    ensure!(
        !applied_under_reader,
        "apply changed the state under a reader"
    );
    ensure!(
        got == Ok(0),
        "a reader waited behind apply, itself waiting for the long reader: {got:?}"
    );
    let responses = tokio::time::timeout(Duration::from_secs(10), apply).await???;
    ensure!(
        matches!(responses[..], [Response::SessionOpened { .. }]),
        "{responses:?}"
    );
    ensure!(sm.read(|s| s.session_count()) == 1);
    Ok(())
}

/// A store in `dir` holding `sessions` sessions and a snapshot of them,
/// flushed and closed; returns the snapshot's meta and bytes.
async fn snapshot_of(
    dir: &Path,
    sessions: usize,
) -> anyhow::Result<(leasehold_raft::types::SnapshotMeta, Vec<u8>)> {
    let (log, mut sm) = store::open(dir)?;
    open_many(&mut sm, 1, sessions).await?;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
    sm.flush().await?;
    close(log, sm).await?;
    Ok((snapshot.meta, snapshot.snapshot.into_inner()))
}

/// A snapshot install is written in many sled batches (one batch of a
/// million keys held ~9 GiB): a crash between them leaves the marker, and
/// the next open finishes the install from the stored snapshot.
#[tokio::test]
async fn an_install_cut_short_is_finished_when_the_store_opens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (meta, data) = snapshot_of(dir.path(), 1_000).await?;
    let at = meta.last_log_id.context("no last log id")?;
    {
        // What a crash in the middle of the rewrite leaves: the marker, the
        // snapshot, and the state spaces half old, half new.
        let db = raw_open(dir.path())?;
        let (key, value) = store::encode_record(&store::Record::Installing(at))?;
        db.insert(key, value)?;
        let sessions: Vec<_> = db.scan_prefix([0x02]).keys().collect::<Result<_, _>>()?;
        for key in sessions.iter().step_by(2) {
            db.remove(key)?;
        }
        db.insert(
            [0x00, 0x04],
            store::encode_record(&store::Record::LastApplied(log_id(1, 7)))?.1,
        )?;
        db.flush()?;
    }
    {
        let (log, mut sm) = store::open(dir.path())?;
        assert_eq!(sm.read(|s| s.encode()), data, "the state is the snapshot's");
        assert_eq!(sm.applied_state().await?.0, Some(at));
        sm.flush().await?;
        close(log, sm).await?;
    }
    let db = raw_open(dir.path())?;
    ensure!(db.get([0x00, 0x08])?.is_none(), "the marker stayed");
    ensure!(db.scan_prefix([0x02]).count() == 1_000);
    Ok(())
}

#[tokio::test]
async fn a_version_3_store_gets_its_snapshot_moved_to_its_own_tree() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let built = snapshot_of(dir.path(), 10).await?;
    {
        // What a version 3 build left: the snapshot at [0x05] of the
        // default tree (documented layout).
        let db = raw_open(dir.path())?;
        let tree = db.open_tree("snapshot")?;
        let value = tree.remove([0x05])?.context("no snapshot in its tree")?;
        db.insert([0x05], value)?;
        db.insert([0x00, 0x00], &3u32.to_be_bytes())?;
        db.flush()?;
    }
    {
        let (log, mut sm) = store::open(dir.path())?;
        let snapshot = sm.get_current_snapshot().await?.context("snapshot lost")?;
        assert_eq!((snapshot.meta, snapshot.snapshot.into_inner()), built);
        sm.flush().await?;
        close(log, sm).await?;
    }
    let db = raw_open(dir.path())?;
    assert_eq!(
        db.get([0x00, 0x00])?.context("no version")?.as_ref(),
        &STORE_FORMAT_VERSION.to_be_bytes()
    );
    ensure!(db.get([0x05])?.is_none(), "the old copy stayed");
    ensure!(db.open_tree("snapshot")?.get([0x05])?.is_some());
    Ok(())
}

#[tokio::test]
async fn foreign_database_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let db = raw_open(dir.path())?;
        db.insert(b"someone else's key", b"value".as_slice())?;
        db.flush()?;
    }
    match store::open(dir.path()) {
        Err(StoreError::MissingFormatVersion { .. }) => Ok(()),
        Err(other) => bail!("wrong error: {other}"),
        Ok(_) => bail!("a foreign database was opened"),
    }
}

#[tokio::test]
async fn snapshot_install_replaces_state_and_survives_reopen() -> anyhow::Result<()> {
    let leader_dir = tempfile::tempdir()?;
    let follower_dir = tempfile::tempdir()?;
    let (_leader_log, mut leader) = store::open(leader_dir.path())?;
    leader.apply(workload(2)).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let leader_state = leader.read(|s| s.encode());

    let follower_state = {
        let (_log, mut follower) = store::open(follower_dir.path())?;
        // State the snapshot must wipe: sessions and resources the leader
        // does not have.
        follower
            .apply([
                command(1, 1, open_session("stale")),
                command(1, 2, acquire(1, "stale-resource", Mode::Exclusive)),
                command(1, 3, open_session("stale-2")),
            ])
            .await?;
        let mut receiving = follower.begin_receiving_snapshot().await?;
        receiving.write_all(snapshot.snapshot.get_ref())?;
        follower.install_snapshot(&snapshot.meta, receiving).await?;

        assert_eq!(follower.read(|s| s.encode()), leader_state);
        let (applied, membership) = follower.applied_state().await?;
        assert_eq!(applied, Some(log_id(2, 13)));
        assert_eq!(membership, snapshot.meta.last_membership);
        follower.read(|s| s.encode())
    };

    let (_log, mut follower) = store::open(follower_dir.path())?;
    assert_eq!(follower.read(|s| s.encode()), follower_state);
    ensure!(follower.read(|s| s.session(1).is_none() && s.resource("stale-resource").is_none()));
    assert_eq!(follower.applied_state().await?.0, Some(log_id(2, 13)));
    let current = follower
        .get_current_snapshot()
        .await?
        .context("installed snapshot lost")?;
    assert_eq!(current.meta, snapshot.meta);
    Ok(())
}

#[tokio::test]
async fn corrupt_snapshot_is_an_error_and_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = store::open(dir.path())?;
    sm.apply(workload(1)).await?;
    let good = sm.get_snapshot_builder().await.build_snapshot().await?;
    let before = sm.read(|s| s.encode());
    let applied_before = sm.applied_state().await?;

    let mut meta = good.meta.clone();
    meta.last_log_id = Some(log_id(5, 50));
    meta.snapshot_id = "5-50-corrupt".to_string();
    let mut truncated = good.snapshot.get_ref().clone();
    truncated.truncate(truncated.len() / 2);
    for bytes in [b"garbage".to_vec(), truncated, Vec::new()] {
        let result = sm
            .install_snapshot(&meta, Box::new(Cursor::new(bytes)))
            .await;
        ensure!(result.is_err(), "corrupt snapshot was installed");
    }
    assert_eq!(sm.read(|s| s.encode()), before);
    assert_eq!(sm.applied_state().await?, applied_before);
    let current = sm.get_current_snapshot().await?.context("snapshot lost")?;
    assert_eq!(current.meta, good.meta);
    Ok(())
}

#[tokio::test]
async fn subscribers_see_events_of_applied_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = store::open(dir.path())?;
    let mut events = sm.subscribe();
    sm.apply(workload(1)[..6].to_vec()).await?;
    let first = events.try_recv()?;
    assert_eq!(first.index, 5);
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].kind, EventKind::Acquired);
    assert_eq!(first.events[0].resource, "db/primary");
    assert_eq!(first.events[0].token, 5);
    ensure!(
        events.try_recv().is_err(),
        "entries without events published something"
    );
    Ok(())
}

/// Deterministic content of entry `index` in the SIGKILL test.
fn crash_entry(index: u64) -> Entry {
    command(1, index, open_session(&format!("client-{index}")))
}

/// The child process of `sigkill_loses_no_acknowledged_write`. Without the
/// environment variable it does nothing.
#[test]
#[ignore = "child process of sigkill_loses_no_acknowledged_write"]
fn crash_child_appender() -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return Ok(());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (mut log, _sm) = store::open(Path::new(&dir))?;
        let mut stdout = std::io::stdout();
        // Bounded in case the parent dies without killing us.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut next = 1u64;
        let mut round = 0u64;
        while Instant::now() < deadline {
            round += 1;
            if round % 8 == 1 {
                let term = round / 8 + 1;
                log.save_vote(&Vote::new(term, 1)).await?;
                writeln!(stdout, "VOTE {term}")?;
                stdout.flush()?;
            }
            let count = round % 5 + 1;
            let batch: Vec<Entry> = (next..next + count).map(crash_entry).collect();
            log.blocking_append(batch).await?;
            next += count;
            writeln!(stdout, "ACK {}", next - 1)?;
            stdout.flush()?;
        }
        anyhow::Ok(())
    })
}

#[test]
fn sigkill_loses_no_acknowledged_write() -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;

    const ACKS_BEFORE_KILL: usize = 60;
    let dir = tempfile::tempdir()?;
    let mut child = Process::new(std::env::current_exe()?)
        .args([
            "--exact",
            "crash_child_appender",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acked_index = 0u64;
    let mut acked_term = 0u64;
    let mut acks = 0usize;
    let mut record = |line: &str| -> anyhow::Result<()> {
        if let Some(index) = line.strip_prefix("ACK ") {
            let index: u64 = index.parse()?;
            ensure!(index > acked_index, "acknowledgements out of order");
            acked_index = index;
            acks += 1;
        } else if let Some(term) = line.strip_prefix("VOTE ") {
            acked_term = term.parse()?;
        }
        Ok(())
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0usize;
    while seen < ACKS_BEFORE_KILL {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok(line) => {
                if line.starts_with("ACK ") {
                    seen += 1;
                }
                record(&line)?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                bail!("child acknowledged only {seen} appends before the deadline");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("child exited early: {:?}", child.wait()?);
            }
        }
    }
    // SIGKILL, in the middle of whatever append comes next.
    child.kill()?;
    let status = child.wait()?;
    assert_eq!(
        status.signal(),
        Some(9),
        "child was not killed by SIGKILL: {status:?}"
    );
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    // Lines printed before the kill are acknowledgements too.
    for line in rx.try_iter() {
        record(&line)?;
    }
    ensure!(acks >= ACKS_BEFORE_KILL && acked_term >= 1);

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (mut log, _sm) = store::open(dir.path())?;
        let vote = log.read_vote().await?.context("acknowledged vote lost")?;
        ensure!(
            vote.leader_id.term >= acked_term,
            "vote term {} older than acknowledged term {acked_term}",
            vote.leader_id.term
        );
        let entries = log.try_get_log_entries(1..=acked_index).await?;
        ensure!(
            entries.len() as u64 == acked_index,
            "{} of {acked_index} acknowledged entries survived",
            entries.len()
        );
        for (entry, index) in entries.iter().zip(1..) {
            assert_eq!(entry, &crash_entry(index));
        }
        let state = log.get_log_state().await?;
        let last = state.last_log_id.context("empty log")?;
        ensure!(last.index >= acked_index);
        // No hole: everything up to the last entry is present.
        assert_eq!(
            log.try_get_log_entries(1..=last.index).await?.len() as u64,
            last.index
        );
        eprintln!(
            "sigkill: {acks} acknowledgements, last acknowledged index {acked_index}, \
             last index on disk {}, vote term {} (acknowledged {acked_term})",
            last.index, vote.leader_id.term
        );
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flush_requests_all_complete() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, sm) = store::open(dir.path())?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        let (log, sm) = (log.clone(), sm.clone());
        tasks.spawn(async move {
            if i % 2 == 0 {
                log.flush().await
            } else {
                sm.flush().await
            }
        });
    }
    // Group commit: all waiters complete, none deadlocks.
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        anyhow::Ok(())
    })
    .await
    .context("flushes did not complete")??;
    ensure!(log.db_size_on_disk_bytes()? > 0);
    Ok(())
}

#[tokio::test]
async fn close_watch_fires_when_the_last_handle_is_gone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, sm) = store::open(dir.path())?;
    let watch = log.close_watch();
    // A late task still holds a clone of a store after its owner let go.
    let held = log.clone();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let late = tokio::spawn(async move {
        let _ = released.await;
        drop(held);
    });
    drop(log);
    drop(sm);
    ensure!(!watch.is_closed(), "closed while a clone is alive");
    match store::open(dir.path()) {
        Err(StoreError::Open { .. }) => {}
        Err(other) => bail!("wrong error while locked: {other}"),
        Ok(_) => bail!("opened twice at once"),
    }
    match watch.closed(Duration::from_millis(50)).await {
        Err(StoreError::StillOpen { waited, .. }) => {
            ensure!(waited == Duration::from_millis(50))
        }
        other => bail!("expected StillOpen, got {other:?}"),
    }
    let _ = release.send(());
    watch.closed(Duration::from_secs(10)).await?;
    ensure!(watch.is_closed());
    late.await?;
    // Closed means unlocked: the directory opens again at once.
    let (log, _sm) = store::open(dir.path())?;
    ensure!(!log.close_watch().is_closed());
    Ok(())
}
