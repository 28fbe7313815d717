//! The state machine's apply on arbitrary command sequences.
//!
//! The input drives a log of commands (see `leasehold_fuzz::CommandGen`)
//! applied to two replicas from an empty state at strictly increasing
//! indexes, with blank/membership entries in between, as the server's
//! state machine does. After every entry: the state's invariants hold,
//! both replicas gave the same answer, events carry the entry's index,
//! revision and position move as documented. At the end both replicas
//! encode identically, and the encoding round-trips.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

use leasehold_core::{LeaseConfig, LeaseState};
use leasehold_fuzz::{run_log, Replica};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut replica = Replica::new(LeaseState::new(LeaseConfig::default()), 0);
    run_log(&mut u, &mut replica);
});
