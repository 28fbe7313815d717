//! Peer service message decoding: arbitrary bytes prost-decoded as the
//! `RaftPayload` of `proto/leasehold/raft/v1/raft.proto`, then decoded into
//! the openraft message the peer server (requests) or client (replies)
//! expects, with `leasehold_raft::network::payload::decode`, the function
//! both run.
//!
//! Input: one byte choosing the message, then the protobuf bytes.
//! Checked: no panic; a payload that does not decode is a `Decode` error
//! naming the message (the server answers it with `INVALID_ARGUMENT`); one
//! that decodes re-encodes to a payload that decodes to the same message;
//! the commands of a decoded AppendEntries apply cleanly to a fresh state.
//! (64 zero bytes decode as a valid AppendEntries: authenticating peers is
//! mTLS's job, not the decoder's.)
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use openraft::EntryPayload;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use leasehold_core::{LeaseConfig, LeaseState};
use leasehold_fuzz::Replica;
use leasehold_proto::raft::v1::RaftPayload;
use leasehold_raft::network::payload::{
    self, AppendEntriesReply, AppendEntriesRequest, InstallSnapshotReply, InstallSnapshotRequest,
    VoteReply, VoteRpc, Withdrawal,
};
use leasehold_raft::network::TransportError;

/// Most entries of a decoded AppendEntries applied to a state.
const APPLY_ENTRIES_MAX: usize = 64;

/// Decodes `payload` as `T`; on success checks the round trip with `same`.
fn check<T: Serialize + DeserializeOwned + Debug>(
    what: &'static str,
    payload: &RaftPayload,
    same: impl Fn(&T, &T) -> bool,
) -> Option<T> {
    match payload::decode::<T>(what, payload) {
        Ok(msg) => {
            let again = match payload::encode(what, &msg) {
                Ok(p) => p,
                Err(e) => panic!("a decoded {what} does not encode: {e}"),
            };
            match payload::decode::<T>(what, &again) {
                Ok(back) => assert!(same(&msg, &back), "{what} changed: {msg:?} vs {back:?}"),
                Err(e) => panic!("a re-encoded {what} does not decode: {e}"),
            }
            Some(msg)
        }
        Err(e) => {
            assert!(matches!(e, TransportError::Decode { what: w, .. } if w == what));
            let status = tonic::Status::invalid_argument(e.to_string());
            assert!(status.message().contains(what));
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = data.split_first() else {
        return;
    };
    let Ok(payload) = RaftPayload::decode(bytes) else {
        return;
    };
    match kind % 7 {
        0 => {
            let Some(rpc) =
                check::<AppendEntriesRequest>("append_entries request", &payload, |a, b| {
                    a.vote == b.vote
                        && a.prev_log_id == b.prev_log_id
                        && a.entries == b.entries
                        && a.leader_commit == b.leader_commit
                })
            else {
                return;
            };
            // Apply the commands at their indexes, as a follower would once
            // committed (indexes out of order are skipped: openraft refuses
            // such an AppendEntries before it reaches the state machine).
            let mut replica = Replica::new(LeaseState::new(LeaseConfig::default()), 0);
            for entry in rpc.entries.iter().take(APPLY_ENTRIES_MAX) {
                let index = entry.log_id.index;
                if index <= replica.index || index - replica.index > 1_000 {
                    continue;
                }
                let gap = index - replica.index - 1;
                match &entry.payload {
                    EntryPayload::Normal(command) => replica.apply(gap, Some(command)),
                    _ => replica.apply(gap + 1, None),
                }
            }
            replica.check_encoding();
        }
        1 => {
            check::<VoteRpc>("vote request", &payload, |a, b| a == b);
        }
        2 => {
            check::<InstallSnapshotRequest>("install_snapshot request", &payload, |a, b| {
                a.vote == b.vote
                    && a.meta == b.meta
                    && a.offset == b.offset
                    && a.data == b.data
                    && a.done == b.done
            });
        }
        3 => {
            check::<AppendEntriesReply>("append_entries reply", &payload, |a, b| a == b);
        }
        4 => {
            check::<VoteReply>("vote reply", &payload, |a, b| a == b);
        }
        5 => {
            // A decoded withdrawal becomes an AbandonWait that applies
            // cleanly to a fresh state (nothing to withdraw there).
            if let Some(w) = check::<Withdrawal>("withdraw request", &payload, |a, b| a == b) {
                let mut replica = Replica::new(LeaseState::new(LeaseConfig::default()), 0);
                replica.apply(0, Some(&w.command()));
                replica.check_encoding();
            }
        }
        _ => {
            check::<InstallSnapshotReply>("install_snapshot reply", &payload, |a, b| a == b);
        }
    }
});
