//! Errors of the storage layer, and their one mapping to openraft's
//! [`StorageError`].

use std::path::PathBuf;
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use super::db::Db;
use crate::types::{NodeId, StorageError};

/// Everything that can go wrong in the sled-backed store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled refused to open the database (bad path, permissions, lock held
    /// by another process, corrupt files).
    #[error("cannot open the sled database at {path}: {source}")]
    Open {
        /// Data directory that was being opened.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// The data directory was written by a different (newer or unknown)
    /// on-disk format; opening it could misread or corrupt it.
    #[error(
        "unsupported on-disk format version {found} in {path} (this build reads version \
         {supported}); refusing to open it"
    )]
    UnsupportedFormat {
        /// Data directory that was being opened.
        path: PathBuf,
        /// Version recorded on disk.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// The database holds data but no format version record: it was not
    /// written by Leasehold, or the record is damaged.
    #[error("{path} holds data but no Leasehold format version record; refusing to open it")]
    MissingFormatVersion {
        /// Data directory that was being opened.
        path: PathBuf,
    },
    /// The data directory's files are damaged: sled found a checksum or
    /// structure error, or what it returned breaks the store's own
    /// invariants. The node must not start on it (it could serve a state
    /// that lost writes); the operator wipes it and lets the node rejoin.
    #[error(
        "the store in {path} is corrupt ({detail}); refusing to start on it \
         (runbook: docs/operations.md, \"Corrupt data directory\")"
    )]
    Corrupt {
        /// Data directory that was being opened.
        path: PathBuf,
        /// What was found damaged.
        detail: String,
    },
    /// The durability guard file could not be opened, read or written.
    #[error("durability guard {path}: {source}")]
    Guard {
        /// The guard file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// A sled read or write failed.
    #[error("sled I/O failed: {0}")]
    Sled(#[from] sled::Error),
    /// Flushing to disk failed; every waiter of that flush sees the same error.
    #[error("flushing the database to disk failed: {0}")]
    Flush(#[source] Arc<StoreError>),
    /// The flusher task is gone (its runtime shut down) or a flush panicked.
    #[error("the flush task is not running: {0}")]
    FlusherStopped(String),
    /// Some part of a stopped node still holds the database after the
    /// wait: its data directory stays locked.
    #[error("the database at {path} is still open {waited:?} after shutdown began")]
    StillOpen {
        /// Data directory of the database.
        path: PathBuf,
        /// How long was waited.
        waited: std::time::Duration,
    },
    /// The store was opened outside a tokio runtime (the flusher needs one).
    #[error("the store must be opened inside a tokio runtime (its flusher is a tokio task)")]
    NoRuntime,
    /// A value could not be serialized.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// Which record.
        what: &'static str,
        /// What postcard reported.
        #[source]
        source: postcard::Error,
    },
    /// A stored value could not be deserialized.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// Which record.
        what: &'static str,
        /// What postcard reported.
        #[source]
        source: postcard::Error,
    },
    /// A stored key does not have the shape of its key space.
    #[error("malformed key {key:02x?} in the {space} key space")]
    BadKey {
        /// Name of the key space.
        space: &'static str,
        /// The raw key.
        key: Vec<u8>,
    },
    /// The format version record is not the four bytes of a big-endian
    /// `u32`.
    #[error("malformed format version record: {len} bytes, expected 4")]
    BadFormatVersion {
        /// Length of the stored value.
        len: usize,
    },
    /// The stored lease state breaks an invariant of the domain core.
    #[error("stored lease state is inconsistent: {0}")]
    Inconsistent(String),
    /// Snapshot bytes do not decode into a lease state.
    #[error("corrupt state snapshot: {0}")]
    Snapshot(#[from] leasehold_core::SnapshotError),
    /// A blocking task (snapshot encode/decode) panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Converts into the error openraft expects, naming what was being done
    /// to what, after reporting it as a storage failure of `db` (logged
    /// with the data directory, recorded as the store's fault: openraft
    /// stops its core on any `StorageError`, and the node fail-stops).
    /// This is the only place store errors become [`StorageError`]s.
    pub(crate) fn into_storage(
        self,
        db: &Db,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError {
        db.report_failure(format!("{verb:?} {subject:?}"), &self);
        StorageError::IO {
            source: StorageIOError::new(subject, verb, AnyError::new(&self)),
        }
    }
}

/// Adds [`StoreError::into_storage`] to results.
// openraft's `StorageError` is large, and its trait methods return it anyway.
#[allow(clippy::result_large_err)]
pub(crate) trait StorageResultExt<T> {
    /// Maps the error into a [`StorageError`] about `verb` on `subject`,
    /// reported as a failure of `db`.
    fn storage(
        self,
        db: &Db,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError>;
}

impl<T, E: Into<StoreError>> StorageResultExt<T> for Result<T, E> {
    fn storage(
        self,
        db: &Db,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError> {
        self.map_err(|e| e.into().into_storage(db, subject, verb))
    }
}
