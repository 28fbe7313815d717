//! The checks of decoded requests, as pure functions: each turns a wire
//! request into what its handler proposes (or reads with), or the
//! [`ApiError`] that names the field and the limit. They read nothing but
//! their arguments (the applied state where a check needs it), so the
//! handlers and the fuzz target (`crates/leasehold-fuzz`) run exactly the
//! same checks.

use std::collections::BTreeMap;

use leasehold_core::machine::{
    validate_client_name, validate_metadata, validate_reason, validate_resource, validate_text,
};
use leasehold_core::{
    limits, Acquire, Command, LeaseConfig, LeaseState, SessionId, SessionRef, SessionSecret,
    SessionTarget,
};
use leasehold_proto::v1 as pb;
use leasehold_raft::{LeaseNode, NodeId};

use super::acquire::WAIT_MS_MAX;
use super::error::{mode_from_proto, secret_from_proto, ApiError};
use super::keepalive::KEEPALIVE_SESSIONS_MAX;
use super::read::{LIST_PAGE_DEFAULT, LIST_PAGE_MAX};
use super::sessions::{page_after, page_size};

/// A session named by a client with its secret, checked against the
/// applied state before anything is proposed (apply checks again).
pub fn owned_session(state: &LeaseState, id: u64, secret: &[u8]) -> Result<SessionRef, ApiError> {
    match state.session(id).map(|x| x.secret) {
        None => Err(ApiError::SessionNotFound(id)),
        Some(stored) if !stored.matches(secret) => Err(ApiError::PermissionDenied(id)),
        Some(stored) => Ok(SessionRef { id, secret: stored }),
    }
}

/// `OpenSession`: the command to propose, with `secret` as the new
/// session's secret.
pub fn open_session(
    state: &LeaseState,
    req: &pb::OpenSessionRequest,
    secret: SessionSecret,
) -> Result<Command, ApiError> {
    validate_client_name(&req.client_name)?;
    validate_text("client_name", &req.client_name)?;
    state.config().check_ttl(req.ttl_ms)?;
    Ok(Command::OpenSession {
        client_name: req.client_name.clone(),
        ttl_ms: req.ttl_ms,
        secret,
        request_id: req.request_id,
    })
}

/// `CloseSession`: the command to propose.
pub fn close_session(
    state: &LeaseState,
    req: &pb::CloseSessionRequest,
) -> Result<Command, ApiError> {
    let session = owned_session(state, req.session_id, &req.session_secret)?;
    Ok(Command::CloseSession { session })
}

/// `Acquire`: the acquire to propose. `secret` becomes the secret of the
/// private session a one-call lease (`session_id` 0) creates.
pub fn acquire(
    state: &LeaseState,
    req: &pb::AcquireRequest,
    secret: SessionSecret,
) -> Result<Acquire, ApiError> {
    validate_resource(&req.resource)?;
    validate_text("resource", &req.resource)?;
    validate_metadata(&req.metadata)?;
    let mode = mode_from_proto(req.mode)?;
    if req.wait_timeout_ms > WAIT_MS_MAX {
        return Err(ApiError::invalid(
            "wait_timeout_ms",
            format!(
                "{} ms exceeds the limit of {WAIT_MS_MAX} ms",
                req.wait_timeout_ms
            ),
        ));
    }
    let session = if req.session_id == 0 {
        if req.ttl_ms == 0 {
            return Err(ApiError::invalid(
                "session_id",
                "0 means a one-call lease, which needs ttl_ms",
            ));
        }
        if req.wait_timeout_ms > req.ttl_ms {
            // Nobody renews the private session while it waits, and the
            // holder counts its deadline from before the request: a
            // longer wait would expire the session under its own waiter.
            return Err(ApiError::invalid(
                "wait_timeout_ms",
                format!(
                    "{} ms exceeds the one-call lease's ttl_ms ({} ms); open a session \
                     (kept alive while it waits) to wait longer",
                    req.wait_timeout_ms, req.ttl_ms
                ),
            ));
        }
        validate_client_name(&req.client_name)?;
        validate_text("client_name", &req.client_name)?;
        state.config().check_ttl(req.ttl_ms)?;
        SessionTarget::Private {
            client_name: req.client_name.clone(),
            ttl_ms: req.ttl_ms,
            secret,
            request_id: req.request_id,
        }
    } else {
        SessionTarget::Existing(owned_session(state, req.session_id, &req.session_secret)?)
    };
    Ok(Acquire {
        session,
        resource: req.resource.clone(),
        mode,
        wait: req.wait_timeout_ms > 0,
        metadata: req.metadata.to_vec(),
    })
}

/// `Release`: the command to propose. Control characters are not refused
/// here: a holder must be able to release a name an older version accepted.
pub fn release(state: &LeaseState, req: &pb::ReleaseRequest) -> Result<Command, ApiError> {
    validate_resource(&req.resource)?;
    let session = owned_session(state, req.session_id, &req.session_secret)?;
    Ok(Command::Release {
        session,
        resource: req.resource.clone(),
    })
}

/// `Get`: the resource name is valid.
pub fn get(req: &pb::GetRequest) -> Result<(), ApiError> {
    validate_resource(&req.resource)?;
    Ok(validate_text("resource", &req.resource)?)
}

/// A `List` or `Watch` prefix: no longer than a resource name, no control
/// characters.
fn check_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.len() > limits::RESOURCE_NAME_BYTES_MAX {
        return Err(ApiError::invalid(
            "prefix",
            "longer than a resource name may be",
        ));
    }
    Ok(validate_text("prefix", prefix)?)
}

/// `List`: the page size to answer with.
pub fn list(req: &pb::ListRequest) -> Result<usize, ApiError> {
    check_prefix(&req.prefix)?;
    super::read::check_page_token(&req.prefix, &req.page_token)?;
    match usize::try_from(req.page_size).unwrap_or(usize::MAX) {
        0 => Ok(LIST_PAGE_DEFAULT),
        n if n > LIST_PAGE_MAX => Err(ApiError::invalid(
            "page_size",
            format!("{n} exceeds the limit of {LIST_PAGE_MAX}"),
        )),
        n => Ok(n),
    }
}

/// `ListSessions`: the page size, and the session id the page starts
/// after.
pub fn list_sessions(req: &pb::ListSessionsRequest) -> Result<(usize, SessionId), ApiError> {
    Ok((page_size(req.page_size)?, page_after(&req.page_token)?))
}

/// `Watch`: the prefix is valid.
pub fn watch(req: &pb::WatchRequest) -> Result<(), ApiError> {
    check_prefix(&req.prefix)
}

/// One `KeepAlive` message: the sessions it names with their secrets, in
/// order.
pub fn keepalive(msg: &pb::KeepAliveRequest) -> Result<Vec<(SessionId, SessionSecret)>, ApiError> {
    let ids = &msg.session_ids;
    if ids.len() > KEEPALIVE_SESSIONS_MAX {
        return Err(ApiError::invalid(
            "session_ids",
            format!("more than {KEEPALIVE_SESSIONS_MAX} sessions in one keepalive"),
        ));
    }
    if msg.session_secrets.len() != ids.len() {
        return Err(ApiError::invalid(
            "session_secrets",
            format!(
                "{} secrets for {} sessions; send one per session, in order",
                msg.session_secrets.len(),
                ids.len()
            ),
        ));
    }
    ids.iter()
        .zip(&msg.session_secrets)
        .map(|(id, secret)| Ok((*id, secret_from_proto(*id, secret)?)))
        .collect()
}

/// `Recall`: the command to propose.
pub fn recall(req: &pb::RecallRequest) -> Result<Command, ApiError> {
    validate_resource(&req.resource)?;
    validate_text("resource", &req.resource)?;
    validate_reason(&req.reason)?;
    validate_text("reason", &req.reason)?;
    Ok(Command::Recall {
        resource: req.resource.clone(),
        reason: req.reason.clone(),
    })
}

/// `SetConfig`: the configuration to propose. `current` is the applied
/// one, `election_timeout_ms_max` this leader's own (the largest vote
/// window it can vouch for).
pub fn set_config(
    req: &pb::SetConfigRequest,
    current: &LeaseConfig,
    election_timeout_ms_max: u64,
) -> Result<LeaseConfig, ApiError> {
    let c = req
        .config
        .as_ref()
        .ok_or_else(|| ApiError::invalid("config", "missing"))?;
    // 0 keeps the cluster's window (or, before the first leader set
    // one, takes this node's own).
    let vote_window_ms = match (c.vote_window_ms, current.vote_window_ms) {
        (0, 0) => election_timeout_ms_max,
        (0, w) => w,
        (w, _) => w,
    };
    if vote_window_ms > election_timeout_ms_max {
        // Followers must refuse votes for at least W: raising W is the
        // last step, after every node runs with a long enough window.
        return Err(ApiError::invalid(
            "vote_window_ms",
            format!(
                "{vote_window_ms} ms is above this leader's own election_timeout_ms_max \
                 ({election_timeout_ms_max} ms): restart every node with at least \
                 {vote_window_ms} ms first"
            ),
        ));
    }
    let config = LeaseConfig {
        ttl_ms_min: c.ttl_ms_min,
        ttl_ms_max: c.ttl_ms_max,
        drift_ppm: c.drift_ppm,
        grace_margin_ms: c.grace_margin_ms,
        vote_window_ms,
    };
    // Also checks ttl_ms_min ≥ 2 W against the cluster-wide W.
    config.validate()?;
    Ok(config)
}

/// `ChangeMembership`: the voters asked for, by node id, and the catch-up
/// bound (the handler in [`super::membership`] runs the same two checks).
pub fn change_membership(
    req: &pb::ChangeMembershipRequest,
) -> Result<(BTreeMap<NodeId, LeaseNode>, std::time::Duration), ApiError> {
    Ok((
        super::membership::parse_voters(&req.voters)?,
        super::membership::catch_up_timeout(req.catch_up_timeout_ms)?,
    ))
}

#[cfg(test)]
mod tests {
    use leasehold_core::Response;

    use super::*;

    const SECRET: SessionSecret = SessionSecret([4; 16]);

    /// A state with session 1 (secret [`SECRET`]).
    fn state() -> LeaseState {
        let mut state = LeaseState::new(LeaseConfig::default());
        let applied = state.apply(
            1,
            &Command::OpenSession {
                client_name: "w".into(),
                ttl_ms: 10_000,
                secret: SECRET,
                request_id: 0,
            },
        );
        assert!(matches!(applied.response, Response::SessionOpened { .. }));
        state
    }

    fn field(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidArgument { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn acquire_checks_name_the_field() {
        let state = state();
        let ok = pb::AcquireRequest {
            session_id: 1,
            resource: "a".into(),
            session_secret: SECRET.0.to_vec().into(),
            wait_timeout_ms: 5,
            ..Default::default()
        };
        let checked = acquire(&state, &ok, SessionSecret([9; 16])).expect("valid");
        assert!(checked.wait);
        assert_eq!(
            checked.session,
            SessionTarget::Existing(SessionRef {
                id: 1,
                secret: SECRET
            })
        );
        let bad = |f: fn(&mut pb::AcquireRequest)| {
            let mut req = ok.clone();
            f(&mut req);
            acquire(&state, &req, SessionSecret([9; 16]))
        };
        assert_eq!(field(bad(|r| r.resource.clear())), "resource");
        assert_eq!(field(bad(|r| r.mode = 7)), "mode");
        assert_eq!(
            field(bad(|r| r.wait_timeout_ms = WAIT_MS_MAX + 1)),
            "wait_timeout_ms"
        );
        assert_eq!(field(bad(|r| r.session_id = 0)), "session_id");
        assert_eq!(
            field(bad(|r| {
                r.session_id = 0;
                r.ttl_ms = 3_000;
                r.wait_timeout_ms = 3_001;
            })),
            "wait_timeout_ms"
        );
        assert!(matches!(
            bad(|r| r.session_secret = vec![0; 16].into()),
            Err(ApiError::PermissionDenied(1))
        ));
        assert!(matches!(
            bad(|r| r.session_id = 2),
            Err(ApiError::SessionNotFound(2))
        ));
    }

    #[test]
    fn set_config_keeps_or_takes_the_vote_window() {
        let req = |w| pb::SetConfigRequest {
            config: Some(pb::LeaseConfig {
                ttl_ms_min: 2_000,
                ttl_ms_max: 60_000,
                drift_ppm: 10_000,
                grace_margin_ms: 500,
                vote_window_ms: w,
            }),
        };
        let unset = LeaseConfig::default();
        let set = LeaseConfig {
            vote_window_ms: 700,
            ..unset
        };
        let window = |r, c: &LeaseConfig| set_config(&r, c, 800).map(|c| c.vote_window_ms);
        assert_eq!(window(req(0), &unset).ok(), Some(800));
        assert_eq!(window(req(0), &set).ok(), Some(700));
        assert_eq!(window(req(600), &set).ok(), Some(600));
        assert_eq!(field(window(req(900), &set)), "vote_window_ms");
        assert_eq!(
            field(set_config(
                &pb::SetConfigRequest { config: None },
                &set,
                800
            )),
            "config"
        );
    }

    #[test]
    fn keepalive_and_membership_checks() {
        let msg = pb::KeepAliveRequest {
            session_ids: vec![1, 2],
            session_secrets: vec![SECRET.0.to_vec().into()],
        };
        assert_eq!(field(keepalive(&msg)), "session_secrets");
        let member = |node_id| pb::Member {
            node_id,
            raft_addr: "r".into(),
            api_addr: "a".into(),
            learner: false,
        };
        let req = |voters| pb::ChangeMembershipRequest {
            voters,
            catch_up_timeout_ms: 0,
        };
        assert_eq!(
            change_membership(&req(vec![member(1), member(2)]))
                .map(|(v, _)| v.len())
                .ok(),
            Some(2)
        );
        assert_eq!(field(change_membership(&req(vec![]))), "voters");
        assert_eq!(field(change_membership(&req(vec![member(0)]))), "voters");
        assert_eq!(
            field(change_membership(&req(vec![member(3), member(3)]))),
            "voters"
        );
        assert_eq!(
            field(list(&pb::ListRequest {
                page_size: (LIST_PAGE_MAX + 1) as u32,
                ..Default::default()
            })),
            "page_size"
        );
    }
}
