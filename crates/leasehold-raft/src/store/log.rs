//! The Raft log and vote: [`LogStore`], openraft's `RaftLogStorage`.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};

use super::db::{CloseWatch, Db};
use super::error::{StorageResultExt, StoreError};
use super::fault::FaultWatch;
use super::flusher::{Flusher, Waiter};
use super::keys::{self, KeySpace, LogSpace};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The Raft log and vote on sled. Cheap to clone; clones share the database
/// and the flusher (openraft's log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    /// The node's database (all key spaces live in its default tree).
    db: Db,
    /// The serialized flush path: vote and appends are durable through it.
    flusher: Flusher,
    /// Tells a stopping node when the database has really closed.
    close_watch: CloseWatch,
}

impl LogStore {
    /// Wraps an opened, version-checked database.
    pub(crate) fn new(db: Db, flusher: Flusher, close_watch: CloseWatch) -> Self {
        LogStore {
            db,
            flusher,
            close_watch,
        }
    }

    /// Learns of the first failed storage operation of the database
    /// (shared with the state machine store).
    pub fn fault_watch(&self) -> FaultWatch {
        self.db.fault_watch()
    }

    /// Checks, at open, what sled cannot: that the Raft log has no hole
    /// above the last purged entry and that it still holds every entry
    /// recorded as committed (beyond what the state machine applied).
    /// A damaged log that sled recovered as a shorter one fails here when
    /// the loss crosses these records. Reads keys only.
    pub(crate) fn check_integrity(&self, last_applied: Option<LogId>) -> Result<(), StoreError> {
        let purged = self.last_purged()?.map(|l| l.index);
        let mut last: Option<u64> = None;
        for key in self.db.range(LogSpace::key_range(&(..))).keys() {
            let index = LogSpace::decode_key(&key?)?;
            if purged.is_some_and(|p| index <= p) {
                // Purge deletes after its pointer is durable: leftovers.
                continue;
            }
            let expected = last.map(|l| l + 1).or(purged.map(|p| p + 1));
            if let Some(expected) = expected {
                if index != expected {
                    return Err(StoreError::Inconsistent(format!(
                        "the Raft log has a hole: entry {index} follows entry {}",
                        expected.saturating_sub(1)
                    )));
                }
            }
            last = Some(index);
        }
        let log_end = last.or(purged);
        let covered = log_end.max(last_applied.map(|l| l.index));
        let committed = keys::get_meta::<LogId>(&self.db, &keys::COMMITTED)?.map(|l| l.index);
        if let Some(committed) = committed {
            if covered.is_none_or(|end| committed > end) {
                return Err(StoreError::Inconsistent(format!(
                    "entry {committed} is recorded as committed but the Raft log ends at {} \
                     (entries were lost)",
                    log_end.map_or("nothing".to_string(), |e| e.to_string())
                )));
            }
        }
        Ok(())
    }

    /// Learns when the database (shared with the state machine store) has
    /// closed: every clone of both stores dropped, the directory unlocked.
    pub fn close_watch(&self) -> CloseWatch {
        self.close_watch.clone()
    }

    /// The committed log index as last saved (0 when none, or unreadable:
    /// for reports such as `Status` and metrics, never for decisions).
    pub async fn committed_index(&self) -> u64 {
        use openraft::storage::RaftLogStorage;
        self.clone()
            .read_committed()
            .await
            .ok()
            .flatten()
            .map_or(0, |l| l.index)
    }

    /// Bytes the whole database (log, state machine, snapshot) takes on disk.
    pub fn db_size_on_disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Returns once everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }

    /// The last purged log id, if any.
    pub fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        keys::get_meta(&self.db, &keys::LAST_PURGED)
    }

    /// The id of the last entry present in the log, if any.
    pub fn last_entry_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.db.range(LogSpace::key_range(&(..))).next_back() {
            Some(item) => {
                let (key, raw) = item?;
                Ok(Some(keys::decode_log_entry(&key, &raw)?.log_id))
            }
            None => Ok(None),
        }
    }

    /// Reads the entries whose index lies in `range`, in order.
    fn read_entries(&self, range: &impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
        self.db
            .range(LogSpace::key_range(range))
            .map(|item| {
                let (key, raw) = item?;
                keys::decode_log_entry(&key, &raw)
            })
            .collect()
    }

    /// Removes every entry whose index lies in `range` in one atomic batch.
    fn remove_entries(&self, range: &impl RangeBounds<u64>) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for key in self.db.range(LogSpace::key_range(range)).keys() {
            batch.remove(key?);
            removed += 1;
        }
        self.db.apply_batch(batch)?;
        Ok(removed)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(&range)
            .storage(&self.db, ErrorSubject::Logs, ErrorVerb::Read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id =
            self.last_purged()
                .storage(&self.db, ErrorSubject::Store, ErrorVerb::Read)?;
        let last_entry =
            self.last_entry_id()
                .storage(&self.db, ErrorSubject::Logs, ErrorVerb::Read)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_entry.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        keys::set_meta(&self.db, &keys::VOTE, vote).storage(
            &self.db,
            ErrorSubject::Vote,
            ErrorVerb::Write,
        )?;
        self.flusher
            .flush()
            .await
            .storage(&self.db, ErrorSubject::Vote, ErrorVerb::Write)?;
        tracing::debug!(vote = %vote, "saved vote");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        keys::get_meta(&self.db, &keys::VOTE).storage(&self.db, ErrorSubject::Vote, ErrorVerb::Read)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: losing the newest value only means fewer
        // entries are re-applied at start-up; the next flush carries it.
        let mut batch = sled::Batch::default();
        keys::put_meta(&mut batch, &keys::COMMITTED, committed.as_ref()).storage(
            &self.db,
            ErrorSubject::Store,
            ErrorVerb::Write,
        )?;
        self.db
            .apply_batch(batch)
            .storage(&self.db, ErrorSubject::Store, ErrorVerb::Write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        keys::get_meta(&self.db, &keys::COMMITTED).storage(
            &self.db,
            ErrorSubject::Store,
            ErrorVerb::Read,
        )
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut first_index = None;
        let mut last_index = None;
        let mut count = 0usize;
        for entry in entries {
            let index = entry.log_id.index;
            keys::put::<LogSpace>(&mut batch, &index, &entry).storage(
                &self.db,
                ErrorSubject::Log(entry.log_id),
                ErrorVerb::Write,
            )?;
            first_index.get_or_insert(index);
            last_index = Some(index);
            count += 1;
        }
        // Readable once applied; durable once the flusher calls back.
        self.db
            .apply_batch(batch)
            .storage(&self.db, ErrorSubject::Logs, ErrorVerb::Write)?;
        tracing::trace!(?first_index, ?last_index, count, "appended log entries");
        self.flusher.submit(Waiter::Log(callback)).await.storage(
            &self.db,
            ErrorSubject::Logs,
            ErrorVerb::Write,
        )
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let removed = self.remove_entries(&(log_id.index..)).storage(
            &self.db,
            ErrorSubject::Logs,
            ErrorVerb::Delete,
        )?;
        tracing::debug!(since_index = log_id.index, removed, "truncated log");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The pointer must be durable before any entry goes: a restart that
        // finds entries missing below an older pointer sees a hole.
        keys::set_meta(&self.db, &keys::LAST_PURGED, &log_id).storage(
            &self.db,
            ErrorSubject::Store,
            ErrorVerb::Write,
        )?;
        self.flusher
            .flush()
            .await
            .storage(&self.db, ErrorSubject::Store, ErrorVerb::Write)?;
        let removed = self.remove_entries(&(..=log_id.index)).storage(
            &self.db,
            ErrorSubject::Logs,
            ErrorVerb::Delete,
        )?;
        tracing::debug!(upto_index = log_id.index, removed, "purged log");
        Ok(())
    }
}
