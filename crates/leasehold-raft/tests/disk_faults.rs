//! Disk faults at the store level (docs/adr/0007-disk-faults-fail-stop.md):
//! a damaged store never opens as a different state (sled's silent loss of
//! everything after a damaged record is caught by the durability guard,
//! its panics become errors), and a full disk fails the write path with
//! an error naming the data directory, without a panic or a hang, and
//! without losing an acknowledged append.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use leasehold_core::Command;
use leasehold_raft::store::{self, StoreError};
use leasehold_raft::types::{Entry, LogId, Vote};
use leasehold_raft::TypeConfig;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

/// Sessions the damaged-store workload opens (a store of a few MiB).
const SESSIONS: u64 = 3_000;
/// Places in the store file that get damaged, spread over it.
const DAMAGE_POINTS: u64 = 12;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn open_session(index: u64) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::<TypeConfig>::Normal(Command::OpenSession {
            client_name: format!("client-{index:06}-{}", "x".repeat(100)),
            ttl_ms: 10_000,
            secret: leasehold_core::SessionSecret([2; 16]),
            request_id: 0,
        }),
    }
}

/// What a reopened store must show to count as the same store.
#[derive(Debug, PartialEq)]
struct Seen {
    vote: Option<Vote>,
    committed: Option<LogId>,
    state: Vec<u8>,
}

/// Builds a store of [`SESSIONS`] applied, committed sessions in `dir`.
async fn build_store(dir: &Path) -> anyhow::Result<Seen> {
    let (mut log, mut sm) = store::open(dir)?;
    log.save_vote(&Vote::new(1, 1)).await?;
    let entries: Vec<Entry> = (1..=SESSIONS).map(open_session).collect();
    for chunk in entries.chunks(100) {
        log.blocking_append(chunk.to_vec()).await?;
        sm.apply(chunk.to_vec()).await?;
        let last = chunk.last().map(|e| e.log_id);
        log.save_committed(last).await?;
    }
    log.flush().await?;
    let closed = log.close_watch();
    let seen = seen(&mut log, &sm).await?;
    drop((log, sm));
    closed.closed(Duration::from_secs(10)).await?;
    Ok(seen)
}

async fn seen(log: &mut store::LogStore, sm: &store::StateMachineStore) -> anyhow::Result<Seen> {
    Ok(Seen {
        vote: log.read_vote().await?,
        committed: log.read_committed().await?,
        state: sm.read(|s| s.encode()),
    })
}

/// Copies the files of a store directory.
fn copy_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Opens `dir`: `Ok(None)` if refused as corrupt with a message naming
/// `dir`; `Ok(Some(seen))` if it opened; an error for anything else.
async fn open_damaged(dir: &Path) -> anyhow::Result<Option<Seen>> {
    match store::open(dir) {
        Err(StoreError::Corrupt { path, detail }) => {
            ensure!(path == dir, "the error names {path:?}, not {dir:?}");
            ensure!(!detail.is_empty());
            let message = StoreError::Corrupt { path, detail }.to_string();
            ensure!(
                message.contains(&dir.display().to_string()) && message.contains("corrupt"),
                "unclear: {message}"
            );
            Ok(None)
        }
        Err(other) => bail!("a damaged store gave a non-corruption error: {other}"),
        Ok((mut log, sm)) => Ok(Some(seen(&mut log, &sm).await?)),
    }
}

/// A block of the store file overwritten (a bad sector) anywhere: the store
/// either is refused as corrupt or opens exactly as it was (the block held
/// nothing live). Never a panic, never an older or different state. Without
/// the durability guard, damage in the first half of the log opened as a
/// store missing its last hundreds of sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_never_opens_as_a_different_state() -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let expected = build_store(base.path()).await?;
    let db = std::fs::read(base.path().join("db"))?;
    let blocks = db.len() as u64 / 4096;
    ensure!(
        blocks >= DAMAGE_POINTS,
        "store file too small: {} bytes",
        db.len()
    );
    let mut refused = 0;
    for point in 0..DAMAGE_POINTS {
        let block = (point * blocks / DAMAGE_POINTS) as usize;
        let dir = tempfile::tempdir()?;
        copy_store(base.path(), dir.path())?;
        let mut damaged = db.clone();
        for byte in &mut damaged[block * 4096 + 1000..block * 4096 + 1512] {
            *byte = 0xff;
        }
        std::fs::write(dir.path().join("db"), &damaged)?;
        match open_damaged(dir.path()).await? {
            None => refused += 1,
            Some(seen) => ensure!(
                seen == expected,
                "damage at block {block} opened as a different store"
            ),
        }
    }
    ensure!(refused > 0, "no damage was detected at all");
    Ok(())
}

/// sled's files cut short or emptied (a lost write-back, a bad copy): the
/// store is refused as corrupt, never opened as an older or pristine one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_store_file_is_refused() -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let expected = build_store(base.path()).await?;
    let len = std::fs::metadata(base.path().join("db"))?.len();
    for keep in [0, 100, len / 3] {
        let dir = tempfile::tempdir()?;
        copy_store(base.path(), dir.path())?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("db"))?
            .set_len(keep)?;
        if let Some(seen) = open_damaged(dir.path()).await? {
            ensure!(
                seen == expected,
                "cut to {keep} bytes, it opened as a different store"
            );
        }
    }
    // Cut to nothing, it must not pass for a pristine store.
    let dir = tempfile::tempdir()?;
    copy_store(base.path(), dir.path())?;
    std::fs::write(dir.path().join("db"), b"")?;
    ensure!(open_damaged(dir.path()).await?.is_none());
    Ok(())
}

/// Whether this process runs as root (needed to mount a tmpfs).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(2).map(|e| e == "0")
        })
        .unwrap_or(false)
}

/// A tmpfs mounted for one test, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size_bytes: u64) -> anyhow::Result<Tmpfs> {
        let status = Process::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(path)
            .status()?;
        ensure!(status.success(), "mount tmpfs at {path:?} failed");
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with a file `filler`.
fn fill(dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler"))?;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e).context("filling"),
        }
    }
    while let Ok(1) = file.write(&[0]) {}
    Ok(())
}

/// A full disk: appends fail (no panic, no hang) with an error that names
/// the data directory, the store records the fault; with space freed the
/// store reopens with every acknowledged append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_appends_clearly_and_loses_no_acknowledged_entry() -> anyhow::Result<()> {
    if !is_root() {
        println!("SKIPPED a_full_disk_fails_appends_clearly: needs root to mount a tmpfs (CI runs as root)");
        return Ok(());
    }
    let mount = tempfile::tempdir()?;
    let _tmpfs = Tmpfs::mount(mount.path(), 8 * 1024 * 1024)?;
    let dir = mount.path().join("store");
    std::fs::create_dir(&dir)?;
    let mut acknowledged = 0u64;
    {
        let (mut log, _sm) = store::open(&dir)?;
        let faults = log.fault_watch();
        fill(mount.path())?;
        let mut failure = None;
        for index in 1..=200_000u64 {
            let append = log.blocking_append([open_session(index)]);
            match tokio::time::timeout(Duration::from_secs(20), append).await {
                Err(_) => bail!("append {index} hung on a full disk"),
                Ok(Ok(_)) => acknowledged = index,
                Ok(Err(e)) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let failure = failure.context("the full disk never failed an append")?;
        ensure!(
            failure.contains("No space left on device"),
            "unclear: {failure}"
        );
        let fault = faults.fault().context("the store recorded no fault")?;
        ensure!(fault.path == dir, "the fault names {:?}", fault.path);
        ensure!(fault.to_string().contains("No space left on device"));
    }
    std::fs::remove_file(mount.path().join("filler"))?;
    let (mut log, _sm) = store::open(&dir)?;
    let entries = log.try_get_log_entries(1..=acknowledged).await?;
    ensure!(
        entries.len() as u64 == acknowledged,
        "{} of {acknowledged} acknowledged entries survived",
        entries.len()
    );
    Ok(())
}
