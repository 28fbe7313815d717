//! On-disk record decoding: arbitrary (key, value) pairs through
//! `leasehold_raft::store::decode_record`, the decoders the store reads
//! its sled tree with (log entries, sessions, resources, configuration,
//! snapshot, and the meta records: format version, vote, committed, last
//! purged, last applied, membership, revision, position).
//!
//! Input: one byte `n`, then `n % 32` bytes of key, the rest is the value.
//! Checked: no panic; an error has a message; a record that decodes
//! encodes back to the same key, and its value decodes to the same record
//! (a stored snapshot's state bytes are decoded too).
#![no_main]

use libfuzzer_sys::fuzz_target;

use leasehold_core::LeaseState;
use leasehold_raft::store::{decode_record, encode_record, Record};

/// Longest key an input carries (keys are a prefix byte and at most a
/// resource name; short keys reach every space).
const KEY_BYTES_MAX: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Some((n, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at((usize::from(*n) % KEY_BYTES_MAX).min(rest.len()));
    let record = match decode_record(key, value) {
        Ok(record) => record,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    if let Record::Snapshot { data, .. } = &record {
        if let Err(e) = LeaseState::decode(data) {
            assert!(!e.to_string().is_empty());
        }
    }
    let (key2, value2) = match encode_record(&record) {
        Ok(kv) => kv,
        Err(e) => panic!("a decoded record does not encode: {e}"),
    };
    assert_eq!(key2, key, "{record:?} encodes under another key");
    match decode_record(&key2, &value2) {
        Ok(back) => assert_eq!(back, record, "record changed through encode/decode"),
        Err(e) => panic!("a re-encoded record does not decode: {e}"),
    }
});
