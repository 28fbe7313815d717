//! One on-disk record (a raw sled key and value) decoded by its key: the
//! store's whole on-disk format behind one function, for tools that read a
//! data directory record by record (and the fuzz target
//! `crates/leasehold-fuzz/fuzz_targets/store_records.rs`). The store itself
//! reads through the same decoders in `keys`.

use leasehold_core::{LeaseConfig, Resource, Session};

use super::error::StoreError;
use super::keys::{
    self, ConfigSpace, KeySpace, LogSpace, MetaField, ResourceSpace, SessionSpace, SnapshotSpace,
    StoredSnapshot,
};
use crate::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};

/// A decoded record of the store (see the table in [`crate::store`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `0x00 0x00`: the on-disk format version.
    FormatVersion(u32),
    /// `0x00 0x01`: the last saved vote.
    Vote(Vote),
    /// `0x00 0x02`: the last saved committed log id.
    Committed(LogId),
    /// `0x00 0x03`: the last purged log id.
    LastPurged(LogId),
    /// `0x00 0x04`: the state machine's last applied log id.
    LastApplied(LogId),
    /// `0x00 0x05`: the state machine's last applied membership.
    LastMembership(StoredMembership),
    /// `0x00 0x06`: the lease state's revision.
    Revision(u64),
    /// `0x00 0x07`: the lease state's last position.
    Position(u64),
    /// `0x00 0x08`: a snapshot install is half-written (the snapshot's
    /// last log id).
    Installing(LogId),
    /// `0x01` + index: a Raft log entry (carrying that index).
    Log(Entry),
    /// `0x02` + id: an open session (carrying that id).
    Session(Session),
    /// `0x03` + name: a resource with a holder or a waiter.
    Resource {
        /// The resource's name (the key).
        name: String,
        /// Its holders and waiters.
        resource: Resource,
    },
    /// `0x04`: the replicated lease configuration.
    Config(LeaseConfig),
    /// `0x05`: the latest snapshot.
    Snapshot {
        /// Its metadata (last log id, membership, id).
        meta: SnapshotMeta,
        /// Sequence number of the last snapshot built on this node.
        seq: u64,
        /// The encoded lease state (`LeaseState::encode` bytes).
        data: Vec<u8>,
    },
}

/// Decodes the meta record `field` from `raw`.
fn meta<V: serde::de::DeserializeOwned>(
    field: &MetaField<V>,
    raw: &[u8],
    wrap: impl FnOnce(V) -> Record,
) -> Result<Record, StoreError> {
    keys::decode_meta(field, raw).map(wrap)
}

/// Decodes the record stored under `key` with value `value`. Bytes that are
/// not a record of this format give an error naming the key space and what
/// is wrong; a record filed under another key than the one it names (a log
/// entry's index, a session's id) is refused as inconsistent.
pub fn decode_record(key: &[u8], value: &[u8]) -> Result<Record, StoreError> {
    match key {
        k if k == keys::FORMAT_VERSION_KEY => {
            keys::decode_format_version(value).map(Record::FormatVersion)
        }
        k if k == keys::VOTE.key() => meta(&keys::VOTE, value, Record::Vote),
        k if k == keys::COMMITTED.key() => meta(&keys::COMMITTED, value, Record::Committed),
        k if k == keys::LAST_PURGED.key() => meta(&keys::LAST_PURGED, value, Record::LastPurged),
        k if k == keys::LAST_APPLIED.key() => meta(&keys::LAST_APPLIED, value, Record::LastApplied),
        k if k == keys::LAST_MEMBERSHIP.key() => {
            meta(&keys::LAST_MEMBERSHIP, value, Record::LastMembership)
        }
        k if k == keys::REVISION.key() => meta(&keys::REVISION, value, Record::Revision),
        k if k == keys::POSITION.key() => meta(&keys::POSITION, value, Record::Position),
        k if k == keys::INSTALLING.key() => meta(&keys::INSTALLING, value, Record::Installing),
        [LogSpace::PREFIX, ..] => keys::decode_log_entry(key, value).map(Record::Log),
        [SessionSpace::PREFIX, ..] => keys::decode_session(key, value).map(Record::Session),
        [ResourceSpace::PREFIX, ..] => Ok(Record::Resource {
            name: ResourceSpace::decode_key(key)?,
            resource: keys::decode::<ResourceSpace>(value)?,
        }),
        [ConfigSpace::PREFIX, ..] => {
            ConfigSpace::decode_key(key)?;
            keys::decode::<ConfigSpace>(value).map(Record::Config)
        }
        [SnapshotSpace::PREFIX, ..] => {
            SnapshotSpace::decode_key(key)?;
            let s = keys::decode::<SnapshotSpace>(value)?;
            Ok(Record::Snapshot {
                meta: s.meta,
                seq: s.seq,
                data: s.data,
            })
        }
        _ => Err(StoreError::BadKey {
            space: "any",
            key: key.to_vec(),
        }),
    }
}

/// Encodes a record as the store writes it: `(key, value)`.
/// `decode_record` of the result gives the record back.
pub fn encode_record(record: &Record) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    /// A meta record's key and value.
    fn meta<V: serde::Serialize>(
        field: &MetaField<V>,
        value: &V,
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        Ok((field.key().to_vec(), keys::encode_meta_value(field, value)?))
    }
    match record {
        Record::FormatVersion(v) => {
            Ok((keys::FORMAT_VERSION_KEY.to_vec(), v.to_be_bytes().to_vec()))
        }
        Record::Vote(v) => meta(&keys::VOTE, v),
        Record::Committed(v) => meta(&keys::COMMITTED, v),
        Record::LastPurged(v) => meta(&keys::LAST_PURGED, v),
        Record::LastApplied(v) => meta(&keys::LAST_APPLIED, v),
        Record::LastMembership(v) => meta(&keys::LAST_MEMBERSHIP, v),
        Record::Revision(v) => meta(&keys::REVISION, v),
        Record::Position(v) => meta(&keys::POSITION, v),
        Record::Installing(v) => meta(&keys::INSTALLING, v),
        Record::Log(entry) => Ok((
            LogSpace::encode_key(&entry.log_id.index),
            keys::encode::<LogSpace>(entry)?,
        )),
        Record::Session(s) => Ok((
            SessionSpace::encode_key(&s.id),
            keys::encode::<SessionSpace>(s)?,
        )),
        Record::Resource { name, resource } => Ok((
            ResourceSpace::encode_key(name),
            keys::encode::<ResourceSpace>(resource)?,
        )),
        Record::Config(c) => Ok((
            ConfigSpace::encode_key(&()),
            keys::encode::<ConfigSpace>(c)?,
        )),
        Record::Snapshot { meta, seq, data } => Ok((
            SnapshotSpace::encode_key(&()),
            keys::encode::<SnapshotSpace>(&StoredSnapshot {
                meta: meta.clone(),
                seq: *seq,
                data: data.clone(),
            })?,
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use leasehold_core::{Command, SessionSecret};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn session(id: u64) -> Session {
        Session {
            id,
            client_name: "w".into(),
            ttl_ms: 10_000,
            private: false,
            secret: SessionSecret([3; 16]),
            request_id: 0,
            held: Default::default(),
            waiting: Default::default(),
        }
    }

    #[test]
    fn records_round_trip_under_their_keys() {
        let records = [
            Record::FormatVersion(3),
            Record::Vote(Vote::new_committed(2, 1)),
            Record::Committed(log_id(2, 9)),
            Record::LastPurged(log_id(1, 3)),
            Record::LastApplied(log_id(2, 9)),
            Record::LastMembership(StoredMembership::default()),
            Record::Revision(5),
            Record::Position(6),
            Record::Installing(log_id(2, 8)),
            Record::Log(Entry {
                log_id: log_id(2, 7),
                payload: EntryPayload::Normal(Command::ExpireSessions { sessions: vec![4] }),
            }),
            Record::Session(session(4)),
            Record::Config(LeaseConfig::default()),
            Record::Snapshot {
                meta: SnapshotMeta::default(),
                seq: 2,
                data: vec![1, 2, 3],
            },
        ];
        for record in records {
            let (key, value) = encode_record(&record).unwrap();
            assert_eq!(decode_record(&key, &value).unwrap(), record);
        }
    }

    #[test]
    fn a_log_entry_under_another_index_is_refused() {
        let entry = Entry {
            log_id: log_id(2, 7),
            payload: EntryPayload::Blank,
        };
        let value = keys::encode::<LogSpace>(&entry).unwrap();
        let err = decode_record(&LogSpace::encode_key(&8), &value).unwrap_err();
        assert!(
            matches!(&err, StoreError::Inconsistent(m) if m.contains("index 8")),
            "{err}"
        );
        assert_eq!(
            keys::decode_log_entry(&LogSpace::encode_key(&7), &value).unwrap(),
            entry
        );
    }

    #[test]
    fn a_session_under_another_id_is_refused() {
        let value = keys::encode::<SessionSpace>(&session(4)).unwrap();
        let err = decode_record(&SessionSpace::encode_key(&5), &value).unwrap_err();
        assert!(
            matches!(&err, StoreError::Inconsistent(m) if m.contains("id 5")),
            "{err}"
        );
    }

    #[test]
    fn malformed_records_give_clear_errors() {
        // A format version that is not four bytes names its length.
        let err = decode_record(&keys::FORMAT_VERSION_KEY, &[0, 0, 3]).unwrap_err();
        assert!(
            matches!(err, StoreError::BadFormatVersion { len: 3 }),
            "{err}"
        );
        assert!(err.to_string().contains("3 bytes, expected 4"));
        // A meta tag nobody writes, a prefix nobody uses, a short log key.
        for key in [&[0x00, 0x09][..], &[0x09][..], &[0x01, 1, 2][..], &[][..]] {
            let err = decode_record(key, &[]).unwrap_err();
            assert!(matches!(err, StoreError::BadKey { .. }), "{key:?}: {err}");
        }
        // A value that is not the space's type.
        let err = decode_record(&keys::VOTE.key(), &[0xff; 3]).unwrap_err();
        assert!(err.to_string().starts_with("cannot decode vote"), "{err}");
        // A resource name that is not UTF-8.
        let err = decode_record(&[ResourceSpace::PREFIX, 0xff], &[0, 0]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::BadKey {
                space: "resources",
                ..
            }
        ));
    }
}
