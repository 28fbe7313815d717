//! The persisted lease state machine: [`StateMachineStore`], openraft's
//! `RaftStateMachine`, and its snapshots.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockWriteGuard, TryLockError};

use leasehold_core::{Event, LeaseState, Response, SessionChange, SessionId, Touched};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::broadcast;

use super::db::Db;
use super::error::{StorageResultExt, StoreError};
use super::flusher::Flusher;
use super::keys::{self, ConfigSpace, ResourceSpace, SessionSpace, SnapshotSpace, StoredSnapshot};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Event batches a slow subscriber may fall behind by before it sees
/// `RecvError::Lagged`.
const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// The lease events and ended sessions of one applied log entry (published
/// only for entries that have either), or news that a snapshot replaced
/// the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvents {
    /// Log index of the entry (the watch revision), or the last index the
    /// installed snapshot covers.
    pub index: u64,
    /// The events, in order (none after a snapshot install).
    pub events: Vec<Event>,
    /// Sessions the entry ended (closed, expired, or gone with their last
    /// private lease), so a waiter can tell its own session ended without
    /// re-reading the state on every entry.
    pub ended_sessions: Vec<SessionId>,
    /// The state jumped to `index` by installing a snapshot: the entries
    /// up to it were never applied here, so their events were never seen.
    pub snapshot_installed: bool,
}

/// Sees every change of the applied state as it happens, under the state
/// machine's write lock: nothing else can read the state between an apply
/// and its observer. Keep it short and never take the state lock inside.
pub trait ApplyObserver: Send + Sync + 'static {
    /// Entries applied: the sessions they opened and ended, in order, and
    /// whether the configuration changed. `state` is the state after them.
    fn applied(&self, state: &LeaseState, sessions: &[SessionChange], config_changed: bool);
    /// An installed snapshot replaced the whole state.
    fn replaced(&self, state: &LeaseState);
}

/// What the snapshot builder measured, for metrics (see
/// [`StateMachineStore::snapshot_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    /// Size of the latest snapshot built or installed here (or found on
    /// disk at start), in bytes.
    pub size_bytes: u64,
    /// How long the last build on this node took (zero before the first).
    pub last_build: std::time::Duration,
    /// Snapshots built by this node since it started.
    pub built: u64,
}

/// The builder's measurements, written once per build or install.
#[derive(Debug, Default)]
struct SnapshotCounters {
    /// See [`SnapshotStats::size_bytes`].
    size_bytes: AtomicU64,
    /// See [`SnapshotStats::last_build`], in microseconds.
    last_build_us: AtomicU64,
    /// See [`SnapshotStats::built`].
    built: AtomicU64,
}

/// What the state machine holds in memory, always replaced as a whole.
#[derive(Debug, Clone, Default)]
struct Machine {
    /// The replicated lease state.
    lease: LeaseState,
    /// Last applied log id (what openraft re-applies from at start-up).
    last_applied: Option<LogId>,
    /// Membership of the last applied membership entry.
    last_membership: StoredMembership,
}

/// State shared by all clones of a [`StateMachineStore`].
struct Shared {
    /// The node's database.
    db: Db,
    /// The serialized flush path (used after installing a snapshot).
    flusher: Flusher,
    /// In-memory state; never held across an `.await`.
    machine: RwLock<Machine>,
    /// Publishes the events of applied entries to watchers.
    events: broadcast::Sender<Arc<AppliedEvents>>,
    /// Sequence number of the last snapshot built here (unique snapshot ids).
    snapshot_seq: AtomicU64,
    /// What the snapshot builder measured.
    snapshot_counters: SnapshotCounters,
    /// Serializes read-compare-write of the stored snapshot, so a slow build
    /// never replaces a newer installed snapshot.
    snapshot_lock: Mutex<()>,
    /// Told of every applied change under the write lock (the leader's
    /// session table); set once by the node.
    observer: OnceLock<Arc<dyn ApplyObserver>>,
}

/// The lease state machine, persisted key by key in sled. Cheap to clone;
/// clones share the state.
///
/// Each applied batch writes exactly the sessions, resources and
/// configuration it touched, plus the last applied log id and membership, in
/// one atomic sled batch. It is not flushed on its own: the log is durable,
/// and openraft re-applies committed entries after a restart.
#[derive(Clone)]
pub struct StateMachineStore {
    /// The shared state.
    shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Loads the state machine from the database's key spaces.
    pub(crate) fn load(db: Db, flusher: Flusher) -> Result<Self, StoreError> {
        if let Some(at) = keys::get_meta(&db, &keys::INSTALLING)? {
            finish_install(&db, db.snapshots(), at)?;
        }
        let config = keys::get::<ConfigSpace>(&db, &())?.unwrap_or_default();
        let revision = keys::get_meta(&db, &keys::REVISION)?.unwrap_or(0);
        let position = keys::get_meta(&db, &keys::POSITION)?.unwrap_or(revision);
        let sessions = keys::scan_sessions(&db).collect::<Result<Vec<_>, _>>()?;
        let resources = keys::scan::<ResourceSpace>(&db).collect::<Result<Vec<_>, _>>()?;
        let lease = LeaseState::from_parts(config, revision, position, sessions, resources);
        lease.check_invariants().map_err(StoreError::Inconsistent)?;
        let last_applied = keys::get_meta(&db, &keys::LAST_APPLIED)?;
        let last_membership = keys::get_meta(&db, &keys::LAST_MEMBERSHIP)?.unwrap_or_default();
        let stored_snapshot = keys::get::<SnapshotSpace>(db.snapshots(), &())?;
        let snapshot_seq = stored_snapshot.as_ref().map_or(0, |s| s.seq);
        let snapshot_counters = SnapshotCounters::default();
        if let Some(s) = &stored_snapshot {
            snapshot_counters
                .size_bytes
                .store(s.data.len() as u64, Ordering::Relaxed);
        }
        tracing::info!(
            ?last_applied,
            revision,
            sessions = lease.session_count(),
            "loaded state machine"
        );
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                db,
                flusher,
                machine: RwLock::new(Machine {
                    lease,
                    last_applied,
                    last_membership,
                }),
                events,
                snapshot_seq: AtomicU64::new(snapshot_seq),
                snapshot_counters,
                snapshot_lock: Mutex::new(()),
                observer: OnceLock::new(),
            }),
        })
    }

    /// Runs `f` on the current lease state under the read lock. Keep `f`
    /// short: apply waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&LeaseState) -> R) -> R {
        let machine = self
            .shared
            .machine
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&machine.lease)
    }

    /// Registers the observer of applied changes (once; a second call is
    /// refused and returns false).
    pub fn observe(&self, observer: Arc<dyn ApplyObserver>) -> bool {
        self.shared.observer.set(observer).is_ok()
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared
            .machine
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_applied
    }

    /// Subscribes to the events of entries applied from now on. One message
    /// per entry that produced events, and one (no events,
    /// `snapshot_installed`) per installed snapshot.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedEvents>> {
        self.shared.events.subscribe()
    }

    /// What the snapshot builder measured: latest size, last build time,
    /// builds since start. Reads three atomics.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        let c = &self.shared.snapshot_counters;
        SnapshotStats {
            size_bytes: c.size_bytes.load(Ordering::Relaxed),
            last_build: std::time::Duration::from_micros(c.last_build_us.load(Ordering::Relaxed)),
            built: c.built.load(Ordering::Relaxed),
        }
    }

    /// Bytes the whole database (log, state machine, snapshot) takes on disk.
    pub fn db_size_on_disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.shared.db.size_on_disk()?)
    }

    /// Returns once everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.shared.flusher.flush().await
    }

    /// The stored snapshot, if any.
    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        keys::get::<SnapshotSpace>(self.shared.db.snapshots(), &())
    }
}

/// Adds the touched keys of `machine`, and its applied pointers, to `batch`.
fn write_touched(
    machine: &Machine,
    touched: &Touched,
    batch: &mut sled::Batch,
) -> Result<(), StoreError> {
    for id in &touched.sessions {
        match machine.lease.session(*id) {
            Some(session) => keys::put::<SessionSpace>(batch, id, session)?,
            None => keys::remove::<SessionSpace>(batch, id),
        }
    }
    for name in &touched.resources {
        match machine.lease.resource(name) {
            Some(resource) => keys::put::<ResourceSpace>(batch, name, resource)?,
            None => keys::remove::<ResourceSpace>(batch, name),
        }
    }
    if touched.config {
        keys::put::<ConfigSpace>(batch, &(), machine.lease.config())?;
    }
    write_pointers(machine, batch)
}

/// Adds last applied, membership and revision of `machine` to `batch`.
fn write_pointers(machine: &Machine, batch: &mut sled::Batch) -> Result<(), StoreError> {
    keys::put_meta(batch, &keys::LAST_APPLIED, machine.last_applied.as_ref())?;
    keys::put_meta(
        batch,
        &keys::LAST_MEMBERSHIP,
        Some(&machine.last_membership),
    )?;
    keys::put_meta(batch, &keys::REVISION, Some(&machine.lease.revision()))?;
    keys::put_meta(batch, &keys::POSITION, Some(&machine.lease.position()))
}

/// Rewrites the sessions, resources and configuration spaces (and the
/// pointers) to `machine`'s state, in batches of
/// [`keys::REWRITE_BATCH_KEYS`], and clears the [`keys::INSTALLING`] marker
/// in the last one. Call only with the marker set (the batches before the
/// last leave a mix of old and new state that only the marker explains).
/// `flush` is called every [`keys::REWRITE_FLUSH_KEYS`] keys.
fn rewrite_all(
    db: &sled::Db,
    machine: &Machine,
    flush: &mut dyn FnMut() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut writer = keys::BatchWriter::new(db, flush);
    keys::clear_space::<SessionSpace>(db, &mut writer)?;
    keys::clear_space::<ResourceSpace>(db, &mut writer)?;
    keys::clear_space::<ConfigSpace>(db, &mut writer)?;
    for session in machine.lease.sessions() {
        writer.write(|batch| keys::put::<SessionSpace>(batch, &session.id, session))?;
    }
    for (name, resource) in machine.lease.resources() {
        writer.write(|batch| keys::put::<ResourceSpace>(batch, name, resource))?;
    }
    writer.finish(|batch| {
        keys::put::<ConfigSpace>(batch, &(), machine.lease.config())?;
        keys::put_meta(batch, &keys::INSTALLING, None)?;
        write_pointers(machine, batch)
    })
}

/// Finishes an install a crash interrupted (the [`keys::INSTALLING`]
/// marker is set): rewrites the state from the stored snapshot it names.
fn finish_install(db: &sled::Db, snapshots: &sled::Tree, at: LogId) -> Result<(), StoreError> {
    let stored = keys::get::<SnapshotSpace>(snapshots, &())?.ok_or_else(|| {
        StoreError::Inconsistent(format!(
            "an install of the snapshot at {at} was interrupted, and no snapshot is stored"
        ))
    })?;
    if stored.meta.last_log_id != Some(at) {
        return Err(StoreError::Inconsistent(format!(
            "an install of the snapshot at {at} was interrupted, and the stored snapshot is at {:?}",
            stored.meta.last_log_id
        )));
    }
    tracing::warn!(%at, "finishing a snapshot install that was interrupted");
    let machine = Machine {
        lease: LeaseState::decode(&stored.data)?,
        last_applied: stored.meta.last_log_id,
        last_membership: stored.meta.last_membership,
    };
    // Opening runs before the flusher serves anyone: sled's own flush.
    rewrite_all(db, &machine, &mut || {
        db.flush().map(drop).map_err(StoreError::from)
    })
}

/// Stores `snapshot` unless the stored one is newer.
fn store_snapshot(shared: &Shared, snapshot: &StoredSnapshot) -> Result<bool, StoreError> {
    let _serialized = shared
        .snapshot_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let snapshots = shared.db.snapshots();
    if let Some(current) = keys::get::<SnapshotSpace>(snapshots, &())? {
        if current.meta.last_log_id > snapshot.meta.last_log_id {
            return Ok(false);
        }
    }
    keys::set::<SnapshotSpace>(snapshots, &(), snapshot)?;
    Ok(true)
}

/// How often apply tries the state's lock again while a reader holds it.
const APPLY_LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// Write access to the state for apply and snapshot install, awaited
/// without blocking a runtime thread and without queueing as a writer.
///
/// A snapshot build reads the whole state under the read lock (seconds at
/// a million leases). A thread blocked in `RwLock::write` behind it would
/// be a runtime worker lost for that long, and, since a queued writer makes
/// every new `read` wait too, every task that reads the state (API calls)
/// would block its worker as well: the node froze, stopped answering its
/// peers, and its followers stood for election (issue 8, `scale` run).
/// Trying again every [`APPLY_LOCK_RETRY`] keeps the workers free and the
/// state readable while the snapshot is encoded; apply waits for the
/// encoding, as it must (it needs the state unchanged under the reader).
async fn write_without_queueing(lock: &RwLock<Machine>) -> RwLockWriteGuard<'_, Machine> {
    loop {
        if let Some(guard) = try_write(lock) {
            return guard;
        }
        tokio::time::sleep(APPLY_LOCK_RETRY).await;
    }
}

/// The write lock if nobody holds the lock now.
fn try_write(lock: &RwLock<Machine>) -> Option<RwLockWriteGuard<'_, Machine>> {
    match lock.try_write() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Maps a failed blocking task.
fn task_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Task(e.to_string())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let machine = self
            .shared
            .machine
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok((machine.last_applied, machine.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut responses = Vec::new();
        let mut published = Vec::new();
        let mut batch = sled::Batch::default();
        let last_applied = {
            let mut machine = write_without_queueing(&self.shared.machine).await;
            let mut touched = Touched::default();
            let mut sessions: Vec<SessionChange> = Vec::new();
            for entry in entries {
                let index = entry.log_id.index;
                let applied = match entry.payload {
                    EntryPayload::Normal(command) => machine.lease.apply(index, &command),
                    EntryPayload::Blank => machine.lease.apply_noop(index),
                    EntryPayload::Membership(membership) => {
                        machine.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        machine.lease.apply_noop(index)
                    }
                };
                machine.last_applied = Some(entry.log_id);
                touched.merge(applied.touched);
                let ended_sessions: Vec<SessionId> = applied
                    .sessions
                    .iter()
                    .filter_map(|change| match change {
                        SessionChange::Ended { session } => Some(*session),
                        SessionChange::Opened { .. } => None,
                    })
                    .collect();
                sessions.extend(applied.sessions);
                if !applied.events.is_empty() || !ended_sessions.is_empty() {
                    published.push(AppliedEvents {
                        index,
                        events: applied.events,
                        ended_sessions,
                        snapshot_installed: false,
                    });
                }
                responses.push(applied.response);
            }
            if responses.is_empty() {
                return Ok(responses);
            }
            write_touched(&machine, &touched, &mut batch).storage(
                &self.shared.db,
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
            )?;
            if let Some(observer) = self.shared.observer.get() {
                if !sessions.is_empty() || touched.config {
                    observer.applied(&machine.lease, &sessions, touched.config);
                }
            }
            machine.last_applied
        };
        self.shared.db.apply_batch(batch).storage(
            &self.shared.db,
            ErrorSubject::StateMachine,
            ErrorVerb::Write,
        )?;
        tracing::trace!(
            target: crate::STAGE_TARGET,
            stage = "apply",
            entries = responses.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
        );
        tracing::trace!(
            ?last_applied,
            entries = responses.len(),
            event_batches = published.len(),
            "applied entries"
        );
        for events in published {
            // Nobody listening is fine.
            let _ = self.shared.events.send(Arc::new(events));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let (lease, data) = tokio::task::spawn_blocking(move || {
            LeaseState::decode(&data).map(|lease| (lease, data))
        })
        .await
        .map_err(task_error)
        .storage(&self.shared.db, subject(), ErrorVerb::Read)?
        .storage(&self.shared.db, subject(), ErrorVerb::Read)?;

        let machine = Machine {
            lease,
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
        };
        self.shared
            .snapshot_counters
            .size_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            seq: self.shared.snapshot_seq.load(Ordering::SeqCst),
            data,
        };
        let shared = self.shared.clone();
        let runtime = tokio::runtime::Handle::current();
        let machine = tokio::task::spawn_blocking(move || -> Result<Machine, StoreError> {
            {
                let _serialized = shared
                    .snapshot_lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                keys::begin_install(&shared.db, shared.db.snapshots(), stored)?;
            }
            rewrite_all(&shared.db, &machine, &mut || {
                runtime.block_on(shared.flusher.flush())
            })?;
            Ok(machine)
        })
        .await
        .map_err(task_error)
        .storage(&self.shared.db, subject(), ErrorVerb::Write)?
        .storage(&self.shared.db, subject(), ErrorVerb::Write)?;

        let sessions = machine.lease.session_count();
        {
            let mut current = write_without_queueing(&self.shared.machine).await;
            *current = machine;
            if let Some(observer) = self.shared.observer.get() {
                observer.replaced(&current.lease);
            }
        }
        self.shared
            .flusher
            .flush()
            .await
            .storage(&self.shared.db, subject(), ErrorVerb::Write)?;
        tracing::info!(snapshot_id = %meta.snapshot_id, last_log_id = ?meta.last_log_id, sessions, "installed snapshot");
        // Nobody listening is fine.
        let _ = self.shared.events.send(Arc::new(AppliedEvents {
            index: meta.last_log_id.map_or(0, |l| l.index),
            events: Vec::new(),
            ended_sessions: Vec::new(),
            snapshot_installed: true,
        }));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self.stored_snapshot().storage(
            &self.shared.db,
            ErrorSubject::Snapshot(None),
            ErrorVerb::Read,
        )?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::SeqCst) + 1;
        let shared = self.shared.clone();
        // Encoded under the read lock, on the blocking pool: apply waits for
        // the encoding (about 1 s per million leases), never for a deep copy
        // of the state (several times longer) nor for the disk write.
        let (meta, data, stored) = tokio::task::spawn_blocking(
            move || -> Result<(SnapshotMeta, Vec<u8>, bool), StoreError> {
                let (meta, data) = {
                    let machine = shared
                        .machine
                        .read()
                        .unwrap_or_else(PoisonError::into_inner);
                    let snapshot_id = match machine.last_applied {
                        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, seq),
                        None => format!("0-0-{seq}"),
                    };
                    let meta = SnapshotMeta {
                        last_log_id: machine.last_applied,
                        last_membership: machine.last_membership.clone(),
                        snapshot_id,
                    };
                    (meta, machine.lease.encode())
                };
                let snapshot = StoredSnapshot {
                    meta: meta.clone(),
                    seq,
                    data,
                };
                let stored = store_snapshot(&shared, &snapshot)?;
                Ok((meta, snapshot.data, stored))
            },
        )
        .await
        .map_err(task_error)
        .storage(
            &self.shared.db,
            ErrorSubject::Snapshot(None),
            ErrorVerb::Write,
        )?
        .storage(
            &self.shared.db,
            ErrorSubject::Snapshot(None),
            ErrorVerb::Write,
        )?;
        let took = started.elapsed();
        let counters = &self.shared.snapshot_counters;
        if stored {
            counters
                .size_bytes
                .store(data.len() as u64, Ordering::Relaxed);
        }
        counters.last_build_us.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        counters.built.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            last_log_id = ?meta.last_log_id,
            snapshot_bytes = data.len(),
            build_ms = took.as_millis() as u64,
            stored,
            "built snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
