//! Request validation: arbitrary bytes prost-decoded as each request of
//! `proto/leasehold/v1/lease.proto`, then the checks the server's handlers
//! run (`leasehold_server::api::request`).
//!
//! Input: one byte choosing the request type, then its protobuf bytes.
//! Checked: no panic; a refusal is a gRPC status of the codes the API
//! documents for bad input, with a message (naming the field for
//! `INVALID_ARGUMENT`); a request the checks accept is never refused by the
//! state machine for a field the checks should have caught (the server's
//! checks are at least as strict as apply's).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;

use leasehold_core::{Command, LeaseConfig, LeaseState, Rejection, Response, SessionSecret};
use leasehold_fuzz::requests::{self, REQUEST_KINDS};
use leasehold_proto::v1 as pb;
use leasehold_server::api::{request, ApiError, LIST_PAGE_MAX, SESSIONS_PAGE_MAX, VOTERS_MAX};

/// `election_timeout_ms_max` of the leader the checks run on.
const ELECTION_TIMEOUT_MS_MAX: u64 = 1_000;

/// A refusal must be one the API documents for bad input, with a message.
fn check_refusal(e: ApiError) {
    let field_error = matches!(e, ApiError::InvalidArgument { .. });
    let status = tonic::Status::from(e);
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::NotFound | Code::PermissionDenied
        ),
        "unexpected code for bad input: {status:?}"
    );
    assert!(!status.message().is_empty());
    if field_error {
        assert!(status.message().starts_with("invalid "), "{status:?}");
    }
}

/// Applies a command the checks accepted; apply must not refuse it for a
/// reason the checks cover.
fn apply_accepted(state: &LeaseState, command: &Command) -> Response {
    let mut state = state.clone();
    let index = state.position() + 1;
    let applied = state.apply(index, command);
    if let Err(broken) = state.check_invariants() {
        panic!("invariant broken after {command:?}: {broken}");
    }
    match &applied.response {
        Response::Rejected(Rejection::InvalidArgument { field, .. }) if field != "request_id" => {
            panic!(
                "checks accepted {command:?} but apply refuses {field}: {:?}",
                applied.response
            )
        }
        Response::Rejected(
            r @ (Rejection::SessionNotFound(_) | Rejection::PermissionDenied(_)),
        ) => {
            panic!("checks accepted {command:?} but apply refuses: {r}")
        }
        _ => {}
    }
    applied.response
}

/// Decodes `bytes` as `T`; `None` when they are not one (tonic would refuse
/// the call before any handler runs).
fn decode<T: Message + Default>(bytes: &[u8]) -> Option<T> {
    T::decode(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = data.split_first() else {
        return;
    };
    let state = requests::state();
    let secret = SessionSecret([0xa5; 16]);
    match *kind % REQUEST_KINDS {
        0 => {
            let Some(req) = decode::<pb::OpenSessionRequest>(bytes) else {
                return;
            };
            match request::open_session(&state, &req, secret) {
                Ok(command) => {
                    let r = apply_accepted(&state, &command);
                    assert!(matches!(r, Response::SessionOpened { .. }), "{r:?}");
                }
                Err(e) => check_refusal(e),
            }
        }
        1 => {
            let Some(req) = decode::<pb::CloseSessionRequest>(bytes) else {
                return;
            };
            match request::close_session(&state, &req) {
                Ok(command) => {
                    let r = apply_accepted(&state, &command);
                    assert!(matches!(r, Response::SessionClosed { .. }), "{r:?}");
                }
                Err(e) => check_refusal(e),
            }
        }
        2 => {
            let Some(req) = decode::<pb::AcquireRequest>(bytes) else {
                return;
            };
            match request::acquire(&state, &req, secret) {
                Ok(acquire) => {
                    assert_eq!(acquire.wait, req.wait_timeout_ms > 0);
                    apply_accepted(&state, &Command::Acquire(acquire));
                }
                Err(e) => check_refusal(e),
            }
        }
        3 => {
            let Some(req) = decode::<pb::ReleaseRequest>(bytes) else {
                return;
            };
            match request::release(&state, &req) {
                Ok(command) => {
                    apply_accepted(&state, &command);
                }
                Err(e) => check_refusal(e),
            }
        }
        4 => {
            let Some(req) = decode::<pb::GetRequest>(bytes) else {
                return;
            };
            if let Err(e) = request::get(&req) {
                check_refusal(e);
            }
        }
        5 => {
            let Some(req) = decode::<pb::ListRequest>(bytes) else {
                return;
            };
            match request::list(&req) {
                Ok(page) => assert!((1..=LIST_PAGE_MAX).contains(&page)),
                Err(e) => check_refusal(e),
            }
        }
        6 => {
            let Some(req) = decode::<pb::ListSessionsRequest>(bytes) else {
                return;
            };
            match request::list_sessions(&req) {
                Ok((page, _)) => assert!((1..=SESSIONS_PAGE_MAX).contains(&page)),
                Err(e) => check_refusal(e),
            }
        }
        7 => {
            let Some(req) = decode::<pb::WatchRequest>(bytes) else {
                return;
            };
            if let Err(e) = request::watch(&req) {
                check_refusal(e);
            }
        }
        8 => {
            let Some(req) = decode::<pb::KeepAliveRequest>(bytes) else {
                return;
            };
            match request::keepalive(&req) {
                Ok(named) => {
                    assert_eq!(named.len(), req.session_ids.len());
                    for ((id, secret), (wire_id, wire_secret)) in named
                        .iter()
                        .zip(req.session_ids.iter().zip(&req.session_secrets))
                    {
                        assert_eq!(id, wire_id);
                        assert_eq!(&secret.as_bytes()[..], &wire_secret[..]);
                    }
                }
                Err(e) => check_refusal(e),
            }
        }
        9 => {
            let Some(req) = decode::<pb::RecallRequest>(bytes) else {
                return;
            };
            match request::recall(&req) {
                Ok(command) => {
                    let r = apply_accepted(&state, &command);
                    assert!(matches!(r, Response::Recalled { .. }), "{r:?}");
                }
                Err(e) => check_refusal(e),
            }
        }
        10 => {
            let Some(req) = decode::<pb::SetConfigRequest>(bytes) else {
                return;
            };
            match request::set_config(&req, &LeaseConfig::default(), ELECTION_TIMEOUT_MS_MAX) {
                Ok(config) => {
                    assert!(config.vote_window_ms <= ELECTION_TIMEOUT_MS_MAX);
                    let r = apply_accepted(&state, &Command::SetConfig(config));
                    assert_eq!(r, Response::ConfigSet(config));
                }
                Err(e) => check_refusal(e),
            }
        }
        _ => {
            let Some(req) = decode::<pb::ChangeMembershipRequest>(bytes) else {
                return;
            };
            match request::change_membership(&req) {
                Ok((voters, _catch_up)) => {
                    assert!((1..=VOTERS_MAX).contains(&voters.len()));
                    assert_eq!(voters.len(), req.voters.len());
                    assert!(voters.keys().all(|id| *id != 0));
                }
                Err(e) => check_refusal(e),
            }
        }
    }
});
