//! Typed key spaces of the store's single sled tree.
//!
//! Every key starts with one prefix byte naming its space; integer keys are
//! big-endian so sled's byte order is numeric order. Every space has one
//! value type, postcard-encoded. Nothing outside this module builds or
//! parses raw keys.

use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StoreError;
use crate::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};

/// Prefix of the meta space (format version, vote, log pointers, applied state).
const META: u8 = 0x00;
/// Prefix of the log space.
const LOG: u8 = 0x01;
/// Prefix of the sessions space.
const SESSION: u8 = 0x02;
/// Prefix of the resources space.
const RESOURCE: u8 = 0x03;
/// Prefix of the lease configuration space (one key).
const CONFIG: u8 = 0x04;
/// Prefix of the current snapshot space (one key).
const SNAPSHOT: u8 = 0x05;

/// A key space: a prefix byte, a key type and a fixed value type.
pub(crate) trait KeySpace {
    /// Name used in errors and logs.
    const NAME: &'static str;
    /// The prefix byte every key of the space starts with.
    const PREFIX: u8;
    /// Logical key.
    type Key;
    /// Stored value.
    type Value: Serialize + DeserializeOwned;

    /// The raw key, prefix included.
    fn encode_key(key: &Self::Key) -> Vec<u8>;
    /// Parses a raw key of this space (prefix included).
    fn decode_key(raw: &[u8]) -> Result<Self::Key, StoreError>;
}

/// Builds a `BadKey` error for space `S`.
fn bad_key<S: KeySpace>(raw: &[u8]) -> StoreError {
    StoreError::BadKey {
        space: S::NAME,
        key: raw.to_vec(),
    }
}

/// `prefix || u64 BE`.
fn u64_key(prefix: u8, n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(prefix);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// Parses `prefix || u64 BE` for space `S`.
fn decode_u64_key<S: KeySpace>(raw: &[u8]) -> Result<u64, StoreError> {
    match raw {
        [p, rest @ ..] if *p == S::PREFIX => {
            let bytes: [u8; 8] = rest.try_into().map_err(|_| bad_key::<S>(raw))?;
            Ok(u64::from_be_bytes(bytes))
        }
        _ => Err(bad_key::<S>(raw)),
    }
}

/// Raft log entries by index.
pub(crate) struct LogSpace;

impl KeySpace for LogSpace {
    const NAME: &'static str = "log";
    const PREFIX: u8 = LOG;
    type Key = u64;
    type Value = Entry;

    fn encode_key(index: &u64) -> Vec<u8> {
        u64_key(LOG, *index)
    }

    fn decode_key(raw: &[u8]) -> Result<u64, StoreError> {
        decode_u64_key::<Self>(raw)
    }
}

impl LogSpace {
    /// Raw key bounds covering the log indexes in `range`.
    pub(crate) fn key_range(range: &impl RangeBounds<u64>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(Self::encode_key(i)),
            Bound::Excluded(i) => Bound::Excluded(Self::encode_key(i)),
            Bound::Unbounded => Bound::Included(Self::encode_key(&0)),
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(Self::encode_key(i)),
            Bound::Excluded(i) => Bound::Excluded(Self::encode_key(i)),
            Bound::Unbounded => Bound::Included(Self::encode_key(&u64::MAX)),
        };
        (start, end)
    }
}

/// Open sessions by id.
pub(crate) struct SessionSpace;

impl KeySpace for SessionSpace {
    const NAME: &'static str = "sessions";
    const PREFIX: u8 = SESSION;
    type Key = u64;
    type Value = leasehold_core::Session;

    fn encode_key(id: &u64) -> Vec<u8> {
        u64_key(SESSION, *id)
    }

    fn decode_key(raw: &[u8]) -> Result<u64, StoreError> {
        decode_u64_key::<Self>(raw)
    }
}

/// Non-idle resources by name (UTF-8 bytes after the prefix).
pub(crate) struct ResourceSpace;

impl KeySpace for ResourceSpace {
    const NAME: &'static str = "resources";
    const PREFIX: u8 = RESOURCE;
    type Key = String;
    type Value = leasehold_core::Resource;

    fn encode_key(name: &String) -> Vec<u8> {
        let mut key = Vec::with_capacity(1 + name.len());
        key.push(RESOURCE);
        key.extend_from_slice(name.as_bytes());
        key
    }

    fn decode_key(raw: &[u8]) -> Result<String, StoreError> {
        match raw {
            [p, name @ ..] if *p == RESOURCE => {
                String::from_utf8(name.to_vec()).map_err(|_| bad_key::<Self>(raw))
            }
            _ => Err(bad_key::<Self>(raw)),
        }
    }
}

/// The replicated lease configuration (absent = the default configuration).
pub(crate) struct ConfigSpace;

impl KeySpace for ConfigSpace {
    const NAME: &'static str = "config";
    const PREFIX: u8 = CONFIG;
    type Key = ();
    type Value = leasehold_core::LeaseConfig;

    fn encode_key(_: &()) -> Vec<u8> {
        vec![CONFIG]
    }

    fn decode_key(raw: &[u8]) -> Result<(), StoreError> {
        if raw == [CONFIG] {
            Ok(())
        } else {
            Err(bad_key::<Self>(raw))
        }
    }
}

/// The latest snapshot: its metadata and the encoded state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredSnapshot {
    /// What openraft needs to know about it (last log id, membership, id).
    pub(crate) meta: SnapshotMeta,
    /// Sequence number of the last snapshot built here, so ids stay unique
    /// across restarts.
    pub(crate) seq: u64,
    /// `LeaseState::encode` bytes.
    pub(crate) data: Vec<u8>,
}

/// Name of the sled tree that holds the snapshot space, and only it (format
/// 4). In the default tree the snapshot's one large value shared a B-tree
/// leaf with the highest resource (or session) keys, and sled writes a node
/// with such a value as a whole blob each time it rewrites the node: every
/// flush after a write to a neighbouring key copied the whole snapshot to
/// disk again (28 MiB per flush at 450,000 leases, issue 8).
pub(crate) const SNAPSHOT_TREE: &[u8] = b"snapshot";

/// The current snapshot (one key, in its own tree: [`SNAPSHOT_TREE`]).
pub(crate) struct SnapshotSpace;

impl KeySpace for SnapshotSpace {
    const NAME: &'static str = "snapshot";
    const PREFIX: u8 = SNAPSHOT;
    type Key = ();
    type Value = StoredSnapshot;

    fn encode_key(_: &()) -> Vec<u8> {
        vec![SNAPSHOT]
    }

    fn decode_key(raw: &[u8]) -> Result<(), StoreError> {
        if raw == [SNAPSHOT] {
            Ok(())
        } else {
            Err(bad_key::<Self>(raw))
        }
    }
}

/// One typed record of the meta space: key `[0x00, tag]`.
pub(crate) struct MetaField<V> {
    /// Second key byte.
    tag: u8,
    /// Name used in errors and logs.
    name: &'static str,
    /// Ties the field to its value type.
    _value: PhantomData<fn() -> V>,
}

impl<V> MetaField<V> {
    /// Declares a field.
    const fn new(tag: u8, name: &'static str) -> Self {
        MetaField {
            tag,
            name,
            _value: PhantomData,
        }
    }

    /// The raw key.
    pub(crate) fn key(&self) -> [u8; 2] {
        [META, self.tag]
    }
}

/// Key of the format version record. Its value is a raw big-endian `u32`
/// (not postcard) so any future build can read it whatever the codec.
pub(crate) const FORMAT_VERSION_KEY: [u8; 2] = [META, 0x00];
/// The last saved vote.
pub(crate) const VOTE: MetaField<Vote> = MetaField::new(0x01, "vote");
/// The last saved committed log id.
pub(crate) const COMMITTED: MetaField<LogId> = MetaField::new(0x02, "committed");
/// The last purged log id.
pub(crate) const LAST_PURGED: MetaField<LogId> = MetaField::new(0x03, "last_purged");
/// The state machine's last applied log id.
pub(crate) const LAST_APPLIED: MetaField<LogId> = MetaField::new(0x04, "last_applied");
/// The state machine's last applied membership.
pub(crate) const LAST_MEMBERSHIP: MetaField<StoredMembership> =
    MetaField::new(0x05, "last_membership");
/// The lease state's revision (index of the last state-changing command).
pub(crate) const REVISION: MetaField<u64> = MetaField::new(0x06, "revision");
/// The lease state's last position (absent before format version 3).
pub(crate) const POSITION: MetaField<u64> = MetaField::new(0x07, "position");
/// Present only while a snapshot install is half-written: the last log id
/// of the snapshot (stored in full before the marker) whose state the
/// sessions, resources and configuration spaces are being rewritten to.
/// Loading a store that has it finishes the rewrite from that snapshot.
pub(crate) const INSTALLING: MetaField<LogId> = MetaField::new(0x08, "installing");

/// Most keys written by one sled batch when the whole state is rewritten.
/// sled keeps every node version a batch replaced until the batch ends
/// (epoch-based reclamation): one batch rewriting a million sessions held
/// about 9 GiB resident on a follower catching up from a snapshot (issue
/// 8). Batches of this size keep the rewrite near the size of the state.
pub(crate) const REWRITE_BATCH_KEYS: usize = 1_000;

/// Keys a rewrite writes between flushes: sled keeps what it has not
/// written to disk in memory, beyond its cache bound (a multiple of
/// [`REWRITE_BATCH_KEYS`]).
pub(crate) const REWRITE_FLUSH_KEYS: usize = 100_000;

/// Writes a long run of changes to `tree` in sled batches of at most
/// [`REWRITE_BATCH_KEYS`] keys (each batch atomic, the run as a whole not:
/// callers mark the run with [`INSTALLING`]).
pub(crate) struct BatchWriter<'a> {
    /// Where the batches go.
    tree: &'a sled::Tree,
    /// The batch being filled.
    batch: sled::Batch,
    /// Keys in `batch`.
    keys: usize,
    /// Keys in the batches written so far.
    written: usize,
    /// Makes what was written durable (through the store's one flush path).
    flush: &'a mut dyn FnMut() -> Result<(), StoreError>,
}

impl<'a> BatchWriter<'a> {
    /// A writer to `tree` that calls `flush` as it goes.
    pub(crate) fn new(
        tree: &'a sled::Tree,
        flush: &'a mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Self {
        BatchWriter {
            tree,
            batch: sled::Batch::default(),
            keys: 0,
            written: 0,
            flush,
        }
    }

    /// Adds one key's change (made by `f` on the batch); writes the batch
    /// once it is full, and then every [`REWRITE_FLUSH_KEYS`] keys calls
    /// `flush` (sled cannot evict what it has not written to disk).
    pub(crate) fn write(
        &mut self,
        f: impl FnOnce(&mut sled::Batch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        f(&mut self.batch)?;
        self.keys += 1;
        if self.keys >= REWRITE_BATCH_KEYS {
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.keys = 0;
            self.written += REWRITE_BATCH_KEYS;
            if self.written.is_multiple_of(REWRITE_FLUSH_KEYS) {
                (self.flush)()?;
            }
        }
        Ok(())
    }

    /// Writes what is left, with `last` (changes that must come after
    /// everything else) in the same batch.
    pub(crate) fn finish(
        mut self,
        last: impl FnOnce(&mut sled::Batch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        last(&mut self.batch)?;
        self.tree.apply_batch(self.batch)?;
        Ok(())
    }
}

/// Encodes a value of space `S`.
pub(crate) fn encode<S: KeySpace>(value: &S::Value) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|source| StoreError::Encode {
        what: S::NAME,
        source,
    })
}

/// Decodes a value of space `S`.
pub(crate) fn decode<S: KeySpace>(raw: &[u8]) -> Result<S::Value, StoreError> {
    postcard::from_bytes(raw).map_err(|source| StoreError::Decode {
        what: S::NAME,
        source,
    })
}

/// Reads one value of space `S`.
pub(crate) fn get<S: KeySpace>(
    tree: &sled::Tree,
    key: &S::Key,
) -> Result<Option<S::Value>, StoreError> {
    match tree.get(S::encode_key(key))? {
        Some(raw) => Ok(Some(decode::<S>(&raw)?)),
        None => Ok(None),
    }
}

/// Every `(key, value)` of space `S`, in key order.
pub(crate) fn scan<S: KeySpace>(
    tree: &sled::Tree,
) -> impl Iterator<Item = Result<(S::Key, S::Value), StoreError>> {
    tree.scan_prefix([S::PREFIX]).map(|item| {
        let (k, v) = item?;
        Ok((S::decode_key(&k)?, decode::<S>(&v)?))
    })
}

/// Every open session, in id order, each checked against its key
/// ([`decode_session`]).
pub(crate) fn scan_sessions(
    tree: &sled::Tree,
) -> impl Iterator<Item = Result<leasehold_core::Session, StoreError>> {
    tree.scan_prefix([SessionSpace::PREFIX]).map(|item| {
        let (k, v) = item?;
        decode_session(&k, &v)
    })
}

/// Removes every key of space `S` through `writer`.
pub(crate) fn clear_space<S: KeySpace>(
    tree: &sled::Tree,
    writer: &mut BatchWriter<'_>,
) -> Result<(), StoreError> {
    for item in tree.scan_prefix([S::PREFIX]).keys() {
        let key = item?;
        writer.write(|batch| {
            batch.remove(key);
            Ok(())
        })?;
    }
    Ok(())
}

/// Adds `key = value` of space `S` to `batch`.
pub(crate) fn put<S: KeySpace>(
    batch: &mut sled::Batch,
    key: &S::Key,
    value: &S::Value,
) -> Result<(), StoreError> {
    batch.insert(S::encode_key(key), encode::<S>(value)?);
    Ok(())
}

/// Writes `value` under `key` of space `S` directly (not in a batch).
pub(crate) fn set<S: KeySpace>(
    tree: &sled::Tree,
    key: &S::Key,
    value: &S::Value,
) -> Result<(), StoreError> {
    tree.insert(S::encode_key(key), encode::<S>(value)?)?;
    Ok(())
}

/// Stores `snapshot` in the snapshot tree and sets the [`INSTALLING`]
/// marker in the default tree, both or neither (a sled transaction over
/// the two trees): from then on a crash leaves a store that finishes the
/// install from this snapshot when it is opened. Takes the snapshot by
/// value and drops it once encoded: at a million leases it is tens of MiB,
/// and the install must not hold it twice (issue 8: a wiped follower's
/// peak).
pub(crate) fn begin_install(
    main: &sled::Tree,
    snapshots: &sled::Tree,
    snapshot: StoredSnapshot,
) -> Result<(), StoreError> {
    let key = SnapshotSpace::encode_key(&());
    let at = snapshot
        .meta
        .last_log_id
        .ok_or_else(|| StoreError::Inconsistent("a snapshot without a last log id".into()))?;
    let value = sled::IVec::from(encode::<SnapshotSpace>(&snapshot)?);
    drop(snapshot);
    let marker = encode_meta(&INSTALLING, &at)?;
    in_main_and_snapshot_trees(main, snapshots, |main, snapshots| {
        snapshots.insert(key.as_slice(), value.clone())?;
        main.insert(&INSTALLING.key(), marker.as_slice())?;
        Ok(())
    })
}

/// Moves a snapshot a format 2 or 3 store kept in the default tree into
/// the snapshot tree, and records `version`, both or neither.
pub(crate) fn move_snapshot_to_its_tree(
    main: &sled::Tree,
    snapshots: &sled::Tree,
    version: u32,
) -> Result<(), StoreError> {
    let key = SnapshotSpace::encode_key(&());
    in_main_and_snapshot_trees(main, snapshots, |main, snapshots| {
        if let Some(value) = main.remove(key.as_slice())? {
            snapshots.insert(key.as_slice(), value)?;
        }
        main.insert(&FORMAT_VERSION_KEY, &version.to_be_bytes())?;
        Ok(())
    })
}

/// Runs `change` as one sled transaction over the default tree and the
/// snapshot tree: both trees change, or neither. sled may run `change`
/// more than once (on conflict), so it must only write.
fn in_main_and_snapshot_trees<F>(
    main: &sled::Tree,
    snapshots: &sled::Tree,
    change: F,
) -> Result<(), StoreError>
where
    F: Fn(
        &sled::transaction::TransactionalTree,
        &sled::transaction::TransactionalTree,
    ) -> Result<(), sled::transaction::ConflictableTransactionError<()>>,
{
    use sled::Transactional;
    (main, snapshots)
        .transaction(|(main, snapshots)| change(main, snapshots))
        .map_err(|error| match error {
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
            // `change` never aborts.
            sled::transaction::TransactionError::Abort(()) => {
                StoreError::Inconsistent("a store transaction aborted".to_string())
            }
        })
}

/// Adds removal of `key` of space `S` to `batch`.
pub(crate) fn remove<S: KeySpace>(batch: &mut sled::Batch, key: &S::Key) {
    batch.remove(S::encode_key(key));
}

/// Encodes a meta value.
fn encode_meta<V: Serialize>(field: &MetaField<V>, value: &V) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|source| StoreError::Encode {
        what: field.name,
        source,
    })
}

/// Decodes the raw value of a meta field.
pub(crate) fn decode_meta<V: DeserializeOwned>(
    field: &MetaField<V>,
    raw: &[u8],
) -> Result<V, StoreError> {
    postcard::from_bytes(raw).map_err(|source| StoreError::Decode {
        what: field.name,
        source,
    })
}

/// Encodes the value of a meta field (its raw stored bytes).
pub(crate) fn encode_meta_value<V: Serialize>(
    field: &MetaField<V>,
    value: &V,
) -> Result<Vec<u8>, StoreError> {
    encode_meta(field, value)
}

/// Reads a meta field.
pub(crate) fn get_meta<V: DeserializeOwned>(
    tree: &sled::Tree,
    field: &MetaField<V>,
) -> Result<Option<V>, StoreError> {
    match tree.get(field.key())? {
        Some(raw) => decode_meta(field, &raw).map(Some),
        None => Ok(None),
    }
}

/// Writes a meta field directly (not in a batch).
pub(crate) fn set_meta<V: Serialize>(
    tree: &sled::Tree,
    field: &MetaField<V>,
    value: &V,
) -> Result<(), StoreError> {
    tree.insert(field.key(), encode_meta(field, value)?)?;
    Ok(())
}

/// Adds a meta field write (or removal, for `None`) to `batch`.
pub(crate) fn put_meta<V: Serialize>(
    batch: &mut sled::Batch,
    field: &MetaField<V>,
    value: Option<&V>,
) -> Result<(), StoreError> {
    match value {
        Some(v) => batch.insert(&field.key(), encode_meta(field, v)?),
        None => batch.remove(&field.key()),
    }
    Ok(())
}

/// Decodes the raw value of the format version record (exactly four
/// big-endian bytes).
pub(crate) fn decode_format_version(raw: &[u8]) -> Result<u32, StoreError> {
    let bytes: [u8; 4] = raw
        .try_into()
        .map_err(|_| StoreError::BadFormatVersion { len: raw.len() })?;
    Ok(u32::from_be_bytes(bytes))
}

/// Reads the format version record (`None` on a fresh database).
pub(crate) fn get_format_version(tree: &sled::Tree) -> Result<Option<u32>, StoreError> {
    match tree.get(FORMAT_VERSION_KEY)? {
        Some(raw) => decode_format_version(&raw).map(Some),
        None => Ok(None),
    }
}

/// Decodes one log record: the entry stored under `raw_key`, which must
/// carry that very index (an entry filed under another index would be
/// replicated or applied at the wrong place).
pub(crate) fn decode_log_entry(raw_key: &[u8], raw_value: &[u8]) -> Result<Entry, StoreError> {
    let index = LogSpace::decode_key(raw_key)?;
    let entry = decode::<LogSpace>(raw_value)?;
    if entry.log_id.index != index {
        return Err(StoreError::Inconsistent(format!(
            "log entry stored under index {index} carries log id {}",
            entry.log_id
        )));
    }
    Ok(entry)
}

/// Decodes one session record: the session stored under `raw_key`, which
/// must carry that very id.
pub(crate) fn decode_session(
    raw_key: &[u8],
    raw_value: &[u8],
) -> Result<leasehold_core::Session, StoreError> {
    let id = SessionSpace::decode_key(raw_key)?;
    let session = decode::<SessionSpace>(raw_value)?;
    if session.id != id {
        return Err(StoreError::Inconsistent(format!(
            "session record stored under id {id} carries id {}",
            session.id
        )));
    }
    Ok(session)
}

/// Writes the format version record.
pub(crate) fn set_format_version(tree: &sled::Tree, version: u32) -> Result<(), StoreError> {
    tree.insert(FORMAT_VERSION_KEY, &version.to_be_bytes())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_numerically() {
        let mut keys: Vec<Vec<u8>> = [300u64, 2, 256, 1, u64::MAX, 0]
            .iter()
            .map(LogSpace::encode_key)
            .collect();
        keys.sort();
        let decoded: Vec<u64> = keys
            .iter()
            .map(|k| LogSpace::decode_key(k))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded, vec![0, 1, 2, 256, 300, u64::MAX]);
    }

    #[test]
    fn keys_round_trip_and_reject_other_spaces() {
        let name = "db/primary".to_string();
        let raw = ResourceSpace::encode_key(&name);
        assert_eq!(ResourceSpace::decode_key(&raw).unwrap(), name);
        assert!(SessionSpace::decode_key(&raw).is_err());
        let raw = SessionSpace::encode_key(&42);
        assert_eq!(SessionSpace::decode_key(&raw).unwrap(), 42);
        assert!(LogSpace::decode_key(&raw).is_err());
        assert!(LogSpace::decode_key(&[LOG, 1, 2]).is_err());
        assert_eq!(VOTE.key(), [META, 1]);
    }

    #[test]
    fn spaces_do_not_overlap() {
        let prefixes = [
            FORMAT_VERSION_KEY[0],
            LogSpace::PREFIX,
            SessionSpace::PREFIX,
            ResourceSpace::PREFIX,
            ConfigSpace::PREFIX,
            SnapshotSpace::PREFIX,
        ];
        let unique: std::collections::BTreeSet<u8> = prefixes.iter().copied().collect();
        assert_eq!(unique.len(), prefixes.len());
    }
}
