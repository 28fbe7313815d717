//! openraft storage (storage-v2) on sled: the Raft log and vote
//! ([`LogStore`]) and the persisted lease state machine
//! ([`StateMachineStore`]).
//!
//! # Layout
//! Code:
//! - [`error`]: [`StoreError`] and its single mapping to openraft's
//!   `StorageError`.
//! - `keys`: the typed key spaces (the only code that builds raw keys).
//! - `db`: the shared database handle and [`CloseWatch`] (when it closed).
//! - `flusher`: the single serialized flush path (group commit).
//! - [`log`]: [`LogStore`] (`RaftLogStorage`, `RaftLogReader`).
//! - [`record`]: [`decode_record`]: any raw record decoded by its key (for
//!   tools and fuzzing; the store reads through the same decoders).
//! - [`state_machine`]: [`StateMachineStore`] (`RaftStateMachine`,
//!   `RaftSnapshotBuilder`) and [`AppliedEvents`].
//!
//! On disk: one sled database per node, all data in its default tree
//! except the snapshot, which has a tree of its own (`snapshot`: a value
//! of tens of MiB must not share a B-tree node with hot keys, or sled
//! rewrites it with them). A key is one prefix byte naming its key space,
//! then the key; integers are big-endian, values postcard-encoded with one
//! fixed type per space.
//!
//! | prefix | key                         | value                                   |
//! |--------|-----------------------------|-----------------------------------------|
//! | `0x00` | `0x00` format version       | big-endian `u32` ([`STORE_FORMAT_VERSION`]) |
//! | `0x00` | `0x01` vote                 | `Vote`                                  |
//! | `0x00` | `0x02` committed            | `LogId`                                 |
//! | `0x00` | `0x03` last purged          | `LogId`                                 |
//! | `0x00` | `0x04` last applied         | `LogId`                                 |
//! | `0x00` | `0x05` last membership      | `StoredMembership`                      |
//! | `0x00` | `0x06` lease state revision | `u64`                                   |
//! | `0x00` | `0x07` last position        | `u64` (absent in version 2: = revision) |
//! | `0x00` | `0x08` installing           | `LogId`: a snapshot install is half-written |
//! | `0x01` | log index (`u64` BE)        | `Entry`                                 |
//! | `0x02` | session id (`u64` BE)       | `leasehold_core::Session`               |
//! | `0x03` | resource name (UTF-8)       | `leasehold_core::Resource`              |
//! | `0x04` | (none)                      | `leasehold_core::LeaseConfig`           |
//! | `0x05` | (none), tree `snapshot`     | latest snapshot: meta, sequence, bytes  |
//!
//! Durability: the vote is flushed before `save_vote` returns; appended
//! entries are acknowledged to openraft only after a flush; `purge` flushes
//! the new last-purged pointer before deleting entries. State machine
//! writes are atomic per applied batch but not flushed on their own: the
//! log is durable and openraft re-applies committed entries on start-up.
//! A snapshot install rewrites the whole state in batches of 1,000 keys
//! (one batch of millions held gigabytes in sled) between setting and
//! clearing the `installing` marker; opening a store with the marker set
//! finishes the install from the stored snapshot (ADR 0010).
//! All flushes go through one task, never concurrently (sled deadlocks on
//! concurrent `flush_async`).

mod db;
pub mod error;
mod fault;
mod flusher;
mod guard;
mod keys;
pub mod log;
pub mod record;
pub mod state_machine;

use std::path::Path;

pub use db::CloseWatch;
pub use error::StoreError;
pub use fault::{FaultWatch, StoreFault};
pub use log::LogStore;
pub use record::{decode_record, encode_record, Record};
pub use state_machine::{AppliedEvents, ApplyObserver, SnapshotStats, StateMachineStore};

use db::Db;
use flusher::Flusher;

/// On-disk format this build reads and writes. A database recording any
/// other version is refused. 2: sessions carry their owner secret and
/// request id, leases the index of the wait they were granted to (the
/// Raft log's commands changed with them); a version 1 database is
/// refused with a clear error (no migration: no version 1 cluster was
/// ever released). 3: log entries may carry `Command::Batch`, and the
/// lease state's last position is stored; a version 2 database is
/// upgraded in place when opened (its position is its revision), after
/// which a version 2 build refuses it (it could not read batch entries).
/// 4: the snapshot lives in its own tree (`keys::SNAPSHOT_TREE`); a
/// version 2 or 3 database is upgraded in place when opened, after which
/// older builds refuse it (they would not find its snapshot).
pub const STORE_FORMAT_VERSION: u32 = 4;
/// The oldest format version upgraded in place on open.
const STORE_FORMAT_VERSION_UPGRADABLE: u32 = 2;

/// sled's page cache bound. sled's default (1 GiB) would let the cache
/// alone take more than a node's whole memory budget (issue 8: a million
/// leases under 1 GiB resident); the lease state is served from memory by
/// the state machine, and the log is read back only for replication of
/// recent entries and snapshots, so a small cache costs little.
pub const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Opens (or creates) the store in `dir` and loads the state machine.
///
/// Must be called inside a tokio runtime: the flusher is a task on it, and
/// the stores stop working once that runtime shuts down. The database (and
/// its lock on `dir`) is closed when every clone of both stores is dropped;
/// [`LogStore::close_watch`] tells when that happened.
///
/// Damaged files are refused with [`StoreError::Corrupt`] (naming `dir`):
/// sled's own checksum and structure errors, a panic inside sled while it
/// recovers its log (it panics on some damage rather than returning an
/// error), records that do not decode, and a Raft log with a hole. What
/// this cannot detect is listed in docs/adr/0007-disk-faults-fail-stop.md.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = open_sled(dir)?;
    let snapshots = db.open_tree(keys::SNAPSHOT_TREE)?;
    check_format(&db, &snapshots, dir)?;
    let (guard, recorded) = guard::Guard::open(dir)?;
    check_guard(&db, dir, recorded)?;
    let (db, close_watch) = Db::new(db, snapshots, dir.to_path_buf(), guard);
    let flusher = Flusher::start(db.clone())?;
    let state_machine = StateMachineStore::load(db.clone(), flusher.clone())
        .map_err(|e| corrupt_if_damaged(e, dir))?;
    let log = LogStore::new(db, flusher, close_watch);
    log.check_integrity(state_machine.last_applied())
        .map_err(|e| corrupt_if_damaged(e, dir))?;
    tracing::info!(
        path = %dir.display(),
        format_version = STORE_FORMAT_VERSION,
        "opened store"
    );
    Ok((log, state_machine))
}

/// How long opening waits for a data directory whose lock is held (by
/// sled's threads just after a close; another process holding it is
/// refused once this passed).
pub const LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled with `config`, waiting (up to [`LOCK_WAIT_MAX`]) for the
/// data directory's lock: sled's own background threads may hold it for a
/// moment after the last handle of a database closed in this process (a
/// restart in place). Another process holding it is still refused. Tools
/// and tests that open a store's database directly use this too.
pub fn open_sled_waiting(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT_MAX;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Opens sled on `dir`, turning its corruption reports, and its panics
/// while recovering a damaged log, into [`StoreError::Corrupt`].
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(SLED_CACHE_BYTES);
    // sled 0.34 panics on some damaged segments ("tried to serialize
    // Uninitialized") instead of returning `Corruption`: a damaged disk
    // must give a clear error, not a crash with a backtrace into sled.
    quiet_panics_while_opening();
    OPENING.with(|o| o.set(true));
    let opened =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_sled_waiting(&config)));
    OPENING.with(|o| o.set(false));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Corruption { at, .. })) => Err(StoreError::Corrupt {
            path: dir.to_path_buf(),
            detail: match at {
                Some(at) => format!("sled found a damaged record at {at:?}"),
                None => "sled found a damaged record".to_string(),
            },
        }),
        Ok(Err(source)) => Err(StoreError::Open {
            path: dir.to_path_buf(),
            source,
        }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(StoreError::Corrupt {
                path: dir.to_path_buf(),
                detail: format!("sled panicked while recovering its log: {message}"),
            })
        }
    }
}

/// Refuses a store that is behind what its durability guard recorded:
/// sled dropped writes that were on disk (docs: [`guard`]).
fn check_guard(db: &sled::Db, dir: &Path, recorded: Option<guard::Mark>) -> Result<(), StoreError> {
    let Some(recorded) = recorded else {
        return Ok(());
    };
    let now = guard::Mark::read(db).map_err(|e| corrupt_if_damaged(e, dir))?;
    match now.behind(&recorded) {
        None => Ok(()),
        Some(lost) => Err(StoreError::Corrupt {
            path: dir.to_path_buf(),
            detail: format!(
                "it lost writes that were on disk ({lost}): sled drops everything after a \
                 damaged record"
            ),
        }),
    }
}

thread_local! {
    /// Set while this thread opens sled: its panics become errors.
    static OPENING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that keeps a panic inside `sled::open`
/// off stderr (it becomes [`StoreError::Corrupt`], one clear line);
/// every other panic goes to the hook that was installed before.
fn quiet_panics_while_opening() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if OPENING.with(std::cell::Cell::get) {
                tracing::debug!(panic = %info, "sled panicked while opening its database");
            } else {
                previous(info);
            }
        }));
    });
}

/// Errors that, while loading an opened database, mean its contents are
/// damaged become [`StoreError::Corrupt`]; I/O errors stay what they are.
fn corrupt_if_damaged(error: StoreError, dir: &Path) -> StoreError {
    let detail = match &error {
        StoreError::Decode { .. }
        | StoreError::BadKey { .. }
        | StoreError::Inconsistent(_)
        | StoreError::Snapshot(_) => error.to_string(),
        StoreError::Sled(sled::Error::Corruption { .. }) => error.to_string(),
        _ => return error,
    };
    StoreError::Corrupt {
        path: dir.to_path_buf(),
        detail,
    }
}

/// Writes the format version on a fresh database; refuses any other version.
fn check_format(db: &sled::Db, snapshots: &sled::Tree, dir: &Path) -> Result<(), StoreError> {
    match keys::get_format_version(db)? {
        Some(STORE_FORMAT_VERSION) => Ok(()),
        Some(found @ STORE_FORMAT_VERSION_UPGRADABLE..STORE_FORMAT_VERSION) => {
            // 2: the missing position reads as the revision. 2 and 3: the
            // snapshot moves to its own tree. Durable with the first flush
            // (one transaction: a crash leaves the old version or the new).
            tracing::info!(
                path = %dir.display(),
                from = found,
                to = STORE_FORMAT_VERSION,
                "upgrading store format"
            );
            keys::move_snapshot_to_its_tree(db, snapshots, STORE_FORMAT_VERSION)
        }
        Some(found) => Err(StoreError::UnsupportedFormat {
            path: dir.to_path_buf(),
            found,
            supported: STORE_FORMAT_VERSION,
        }),
        None if db.is_empty() => {
            // Durable with the first flush; every later write is ordered
            // after it.
            keys::set_format_version(db, STORE_FORMAT_VERSION)
        }
        None => Err(StoreError::MissingFormatVersion {
            path: dir.to_path_buf(),
        }),
    }
}
