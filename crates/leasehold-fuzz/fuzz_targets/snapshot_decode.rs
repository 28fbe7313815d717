//! Snapshot decoding (`LeaseState::decode`, formats 2 and 3), as the state
//! machine store runs it when installing a snapshot from a peer.
//!
//! Input: a little-endian `u16` length, that many bytes of snapshot, the
//! rest drives a log of commands. Arbitrary bytes must decode to a state
//! or a clear error, never panic. A state that decodes must pass the
//! invariants, re-encode to bytes that decode to the same state (and
//! encode identically again), and stay consistent while commands are
//! applied to it.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

use leasehold_core::{LeaseState, SnapshotError};
use leasehold_fuzz::{run_log, Replica};

fuzz_target!(|data: &[u8]| {
    let (snapshot, rest) = match data {
        [a, b, rest @ ..] => {
            let n = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
            rest.split_at(n)
        }
        _ => (data, &[][..]),
    };
    let state = match LeaseState::decode(snapshot) {
        Ok(state) => state,
        Err(e) => {
            // Every refusal says what is wrong.
            assert!(!e.to_string().is_empty());
            if let SnapshotError::Inconsistent(why) = &e {
                assert!(!why.is_empty());
            }
            return;
        }
    };
    if let Err(broken) = state.check_invariants() {
        panic!("decode accepted a state that breaks an invariant: {broken}");
    }
    let bytes = state.encode();
    let back = match LeaseState::decode(&bytes) {
        Ok(back) => back,
        Err(e) => panic!("re-encoded snapshot does not decode: {e}"),
    };
    assert_eq!(back, state, "state changed through encode/decode");
    assert_eq!(back.encode(), bytes, "re-encoding differs");
    // Entries after a snapshot come after its revision (its last applied
    // index may be later still).
    let index = state.revision();
    let mut replica = Replica::new(state, index);
    let mut u = Unstructured::new(rest);
    run_log(&mut u, &mut replica);
});
