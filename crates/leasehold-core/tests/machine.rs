//! Example-based tests of the lease state machine: each names a behaviour a
//! user relies on, and checks both what must and what must not happen.

use leasehold_core::limits::{METADATA_BYTES_MAX, RESOURCE_NAME_BYTES_MAX};
use leasehold_core::{
    Acquire, Command, EventKind, LeaseConfig, LeaseState, Mode, Rejection, Response, SessionRef,
    SessionSecret, SessionTarget, SNAPSHOT_FORMAT_VERSION,
};

/// The secret every session in these tests is opened with.
const S: SessionSecret = SessionSecret([9; 16]);

/// Names session `id` with the right secret.
fn r(id: u64) -> SessionRef {
    SessionRef { id, secret: S }
}

struct Log {
    state: LeaseState,
    index: u64,
}

impl Log {
    fn new() -> Self {
        Log {
            state: LeaseState::new(LeaseConfig::default()),
            index: 0,
        }
    }

    fn apply(&mut self, cmd: Command) -> leasehold_core::Applied {
        self.index += 1;
        let out = self.state.apply(self.index, &cmd);
        self.state.check_invariants().expect("invariants hold");
        out
    }

    fn open(&mut self, name: &str) -> u64 {
        match self
            .apply(Command::OpenSession {
                client_name: name.into(),
                ttl_ms: 10_000,
                secret: S,
                request_id: 0,
            })
            .response
        {
            Response::SessionOpened { session, .. } => session,
            other => panic!("open failed: {other:?}"),
        }
    }

    fn acquire(&mut self, session: u64, resource: &str, mode: Mode, wait: bool) -> Response {
        self.apply(Command::Acquire(Acquire {
            session: SessionTarget::Existing(r(session)),
            resource: resource.into(),
            mode,
            wait,
            metadata: b"host:1".to_vec(),
        }))
        .response
    }
}

fn token_of(r: &Response) -> u64 {
    match r {
        Response::Acquired { grant, .. } => grant.lease.token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn session_id_and_token_are_log_indexes() {
    let mut log = Log::new();
    let s = log.open("a");
    assert_eq!(s, 1);
    let r = log.acquire(s, "db/primary", Mode::Exclusive, false);
    assert_eq!(token_of(&r), 2);
    let lease = &log.state.resource("db/primary").expect("held").holders[&s];
    assert_eq!(lease.metadata, b"host:1");
}

#[test]
fn exclusive_conflict_names_holder_and_token() {
    let mut log = Log::new();
    let a = log.open("alpha");
    let b = log.open("beta");
    let t = token_of(&log.acquire(a, "r", Mode::Exclusive, false));
    match log.acquire(b, "r", Mode::Exclusive, false) {
        Response::Rejected(Rejection::Conflict { holders, .. }) => {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].session, a);
            assert_eq!(holders[0].client_name, "alpha");
            assert_eq!(holders[0].token, t);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    // The conflicting request left no trace.
    assert!(log.state.session(b).expect("open").held.is_empty());
    assert!(log.state.session(b).expect("open").waiting.is_empty());
}

#[test]
fn shared_holders_coexist_and_block_exclusive() {
    let mut log = Log::new();
    let a = log.open("a");
    let b = log.open("b");
    let c = log.open("c");
    log.acquire(a, "r", Mode::Shared, false);
    log.acquire(b, "r", Mode::Shared, false);
    assert_eq!(log.state.resource("r").expect("held").holders.len(), 2);
    assert!(matches!(
        log.acquire(c, "r", Mode::Exclusive, false),
        Response::Rejected(Rejection::Conflict { .. })
    ));
}

#[test]
fn waiting_exclusive_blocks_new_shared_and_fifo_grants_on_release() {
    let mut log = Log::new();
    let a = log.open("a");
    let w = log.open("writer");
    let r1 = log.open("reader1");
    let r2 = log.open("reader2");
    log.acquire(a, "r", Mode::Shared, false);
    assert!(matches!(
        log.acquire(w, "r", Mode::Exclusive, true),
        Response::Queued { position: 0, .. }
    ));
    // A new shared request may not overtake the queued writer.
    assert!(matches!(
        log.acquire(r1, "r", Mode::Shared, false),
        Response::Rejected(Rejection::Conflict { .. })
    ));
    assert!(matches!(
        log.acquire(r1, "r", Mode::Shared, true),
        Response::Queued { position: 1, .. }
    ));
    assert!(matches!(
        log.acquire(r2, "r", Mode::Shared, true),
        Response::Queued { position: 2, .. }
    ));
    // Releasing the reader grants the writer in the same apply.
    let out = log.apply(Command::Release {
        session: r(a),
        resource: "r".into(),
    });
    let granted: Vec<_> = out
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Acquired)
        .map(|e| (e.session, e.token))
        .collect();
    assert_eq!(granted, vec![(w, out.index)]);
    // Releasing the writer grants both readers together, with one token.
    let out = log.apply(Command::Release {
        session: r(w),
        resource: "r".into(),
    });
    let granted: Vec<_> = out
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Acquired)
        .map(|e| e.session)
        .collect();
    assert_eq!(granted, vec![r1, r2]);
    assert!(log.state.resource("r").expect("held").waiters.is_empty());
}

#[test]
fn expiry_releases_everything_and_grants_waiter() {
    let mut log = Log::new();
    let a = log.open("a");
    let b = log.open("b");
    log.acquire(a, "x", Mode::Exclusive, false);
    log.acquire(a, "y", Mode::Exclusive, false);
    log.acquire(b, "x", Mode::Exclusive, true);
    let out = log.apply(Command::ExpireSessions {
        sessions: vec![a, 999],
    });
    assert_eq!(out.response, Response::Expired { sessions: vec![a] });
    assert!(log.state.session(a).is_none());
    assert!(log.state.resource("y").is_none());
    let x = log.state.resource("x").expect("granted to b");
    assert_eq!(x.holders[&b].token, out.index);
    assert_eq!(
        out.events
            .iter()
            .filter(|e| e.kind == EventKind::Expired)
            .count(),
        2
    );
}

#[test]
fn repeated_acquire_is_idempotent() {
    let mut log = Log::new();
    let a = log.open("a");
    let first = token_of(&log.acquire(a, "r", Mode::Exclusive, false));
    match log.acquire(a, "r", Mode::Exclusive, false) {
        Response::Acquired {
            grant,
            newly_granted,
            ..
        } => {
            assert!(!newly_granted);
            assert_eq!(grant.lease.token, first);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        log.acquire(a, "r", Mode::Shared, false),
        Response::Rejected(Rejection::ModeMismatch { .. })
    ));
}

#[test]
fn private_session_lives_and_dies_with_its_lease() {
    let mut log = Log::new();
    let out = log.apply(Command::Acquire(Acquire {
        session: SessionTarget::Private {
            client_name: "oneshot".into(),
            ttl_ms: 5_000,
            secret: S,
            request_id: 0,
        },
        resource: "job".into(),
        mode: Mode::Exclusive,
        wait: false,
        metadata: vec![],
    }));
    let Response::Acquired { session, grant, .. } = out.response else {
        panic!("{:?}", out.response)
    };
    assert_eq!(session, out.index);
    assert_eq!(grant.lease.token, out.index);
    assert!(log.state.session(session).expect("open").private);
    log.apply(Command::Release {
        session: r(session),
        resource: "job".into(),
    });
    assert!(log.state.session(session).is_none());

    // A rejected one-call acquire creates no session.
    let a = log.open("a");
    log.acquire(a, "busy", Mode::Exclusive, false);
    let before = log.state.session_count();
    let out = log.apply(Command::Acquire(Acquire {
        session: SessionTarget::Private {
            client_name: "x".into(),
            ttl_ms: 5_000,
            secret: S,
            request_id: 0,
        },
        resource: "busy".into(),
        mode: Mode::Exclusive,
        wait: false,
        metadata: vec![],
    }));
    assert!(matches!(
        out.response,
        Response::Rejected(Rejection::Conflict { .. })
    ));
    assert_eq!(log.state.session_count(), before);
    assert!(out.touched.is_empty());
}

#[test]
fn cancel_wait_after_grant_returns_the_grant() {
    let mut log = Log::new();
    let a = log.open("a");
    let b = log.open("b");
    log.acquire(a, "r", Mode::Exclusive, false);
    log.acquire(b, "r", Mode::Exclusive, true);
    log.apply(Command::Release {
        session: r(a),
        resource: "r".into(),
    });
    let out = log.apply(Command::CancelWait {
        session: b,
        resource: "r".into(),
    });
    assert!(matches!(out.response, Response::Acquired { session, .. } if session == b));
    // A real cancel removes the waiter.
    log.acquire(a, "r", Mode::Exclusive, true);
    let out = log.apply(Command::CancelWait {
        session: a,
        resource: "r".into(),
    });
    assert_eq!(out.response, Response::WaitCancelled);
    assert!(log.state.resource("r").expect("held").waiters.is_empty());
}

#[test]
fn invalid_inputs_are_rejected_without_effect() {
    let mut log = Log::new();
    let a = log.open("a");
    let before = log.state.encode();
    let cases = [
        (String::new(), vec![], "resource"),
        ("x".repeat(RESOURCE_NAME_BYTES_MAX + 1), vec![], "resource"),
        ("ok".into(), vec![0u8; METADATA_BYTES_MAX + 1], "metadata"),
    ];
    for (resource, metadata, field) in cases {
        let out = log.apply(Command::Acquire(Acquire {
            session: SessionTarget::Existing(r(a)),
            resource,
            mode: Mode::Exclusive,
            wait: false,
            metadata,
        }));
        match out.response {
            Response::Rejected(Rejection::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{other:?}"),
        }
    }
    let out = log.apply(Command::OpenSession {
        client_name: "t".into(),
        ttl_ms: 1,
        secret: S,
        request_id: 0,
    });
    assert!(matches!(
        out.response,
        Response::Rejected(Rejection::InvalidArgument { ref field, .. }) if field == "ttl"
    ));
    assert!(matches!(
        log.acquire(777, "r", Mode::Shared, false),
        Response::Rejected(Rejection::SessionNotFound(777))
    ));
    let bad = LeaseConfig {
        ttl_ms_min: 10_000,
        ttl_ms_max: 1_000,
        ..LeaseConfig::default()
    };
    assert!(matches!(
        log.apply(Command::SetConfig(bad)).response,
        Response::Rejected(Rejection::InvalidArgument { .. })
    ));
    assert_eq!(log.state.encode(), before, "rejections changed nothing");
}

#[test]
fn recall_marks_holders_only() {
    let mut log = Log::new();
    let a = log.open("a");
    let b = log.open("b");
    log.acquire(a, "r", Mode::Exclusive, false);
    log.acquire(b, "r", Mode::Exclusive, true);
    let out = log.apply(Command::Recall {
        resource: "r".into(),
        reason: "rebalance".into(),
    });
    assert_eq!(out.response, Response::Recalled { holders: vec![a] });
    let res = log.state.resource("r").expect("held");
    let notice = res.holders[&a].recall.as_ref().expect("recalled");
    assert_eq!(notice.reason, "rebalance");
    assert_eq!(notice.index, out.index);
    // Nothing is released by a recall.
    assert_eq!(res.holders.len(), 1);
    assert_eq!(res.waiters.len(), 1);
}

#[test]
fn snapshot_roundtrip_and_version_check() {
    let mut log = Log::new();
    let a = log.open("a");
    let b = log.open("b");
    log.acquire(a, "r", Mode::Shared, false);
    log.acquire(b, "q", Mode::Exclusive, false);
    log.acquire(a, "q", Mode::Exclusive, true);
    let bytes = log.state.encode();
    let back = LeaseState::decode(&bytes).expect("decodes");
    assert_eq!(back, log.state);
    assert_eq!(back.encode(), bytes);

    let mut wrong = bytes.clone();
    wrong[4..8].copy_from_slice(&(SNAPSHOT_FORMAT_VERSION + 1).to_be_bytes());
    assert!(matches!(
        LeaseState::decode(&wrong),
        Err(leasehold_core::SnapshotError::UnsupportedVersion(_))
    ));
    assert!(LeaseState::decode(b"nope").is_err());
    assert!(LeaseState::decode(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn only_the_secret_holder_can_use_a_session() {
    let mut log = Log::new();
    let a = log.open("a");
    log.acquire(a, "r", Mode::Exclusive, false);
    let before = log.state.encode();
    let thief = SessionRef {
        id: a,
        secret: SessionSecret([1; 16]),
    };
    let attempts = [
        Command::Release {
            session: thief,
            resource: "r".into(),
        },
        Command::CloseSession { session: thief },
        Command::Acquire(Acquire {
            session: SessionTarget::Existing(thief),
            resource: "other".into(),
            mode: Mode::Exclusive,
            wait: false,
            metadata: vec![],
        }),
    ];
    for cmd in attempts {
        let out = log.apply(cmd);
        assert_eq!(
            out.response,
            Response::Rejected(Rejection::PermissionDenied(a))
        );
        assert!(out.events.is_empty() && out.sessions.is_empty());
    }
    assert_eq!(log.state.encode(), before, "nothing changed");
    // The owner still can.
    let out = log.apply(Command::Release {
        session: r(a),
        resource: "r".into(),
    });
    assert!(matches!(out.response, Response::Released { .. }));
}

#[test]
fn a_retried_open_or_one_call_acquire_finds_the_first_attempts_session() {
    let mut log = Log::new();
    let open = |secret: u8| Command::OpenSession {
        client_name: "c".into(),
        ttl_ms: 10_000,
        secret: SessionSecret([secret; 16]),
        request_id: 77,
    };
    let first = log.apply(open(1)).response;
    let retry = log.apply(open(2)).response;
    assert_eq!(first, retry, "same session, same secret");
    assert_eq!(log.state.session_count(), 1);

    let one_call = |secret: u8| {
        Command::Acquire(Acquire {
            session: SessionTarget::Private {
                client_name: "one".into(),
                ttl_ms: 10_000,
                secret: SessionSecret([secret; 16]),
                request_id: 78,
            },
            resource: "job".into(),
            mode: Mode::Exclusive,
            wait: false,
            metadata: vec![],
        })
    };
    let first = log.apply(one_call(3));
    let Response::Acquired {
        session, secret, ..
    } = first.response
    else {
        panic!("{:?}", first.response)
    };
    let retry = log.apply(one_call(4));
    match retry.response {
        Response::Acquired {
            session: s,
            secret: x,
            newly_granted,
            ..
        } => {
            assert_eq!((s, x), (session, secret));
            assert!(!newly_granted);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.state.session_count(), 2, "no orphan private session");
    assert_eq!(
        log.state.resource("job").expect("held").holders.len(),
        1,
        "the retry does not hold the resource against its own first attempt"
    );
    // Once the session is gone, the id opens a new one.
    log.apply(Command::ExpireSessions {
        sessions: vec![session],
    });
    assert!(matches!(
        log.apply(one_call(5)).response,
        Response::Acquired {
            newly_granted: true,
            ..
        }
    ));
}

#[test]
fn an_abandoned_wait_that_lost_the_race_to_its_grant_releases_it() {
    let mut log = Log::new();
    let a = log.open("a");
    let b = log.open("b");
    log.acquire(a, "r", Mode::Exclusive, false);
    let Response::Queued { queued_at, .. } = log.acquire(b, "r", Mode::Exclusive, true) else {
        panic!("b should queue")
    };
    // The grant applies before the abandon does.
    log.apply(Command::Release {
        session: r(a),
        resource: "r".into(),
    });
    assert!(log
        .state
        .resource("r")
        .expect("b holds")
        .holders
        .contains_key(&b));
    // An abandon naming some other wait changes nothing.
    let out = log.apply(Command::AbandonWait {
        session: b,
        resource: "r".into(),
        queued_at: queued_at + 100,
    });
    assert_eq!(out.response, Response::WaitCancelled);
    assert!(log.state.resource("r").is_some());
    let out = log.apply(Command::AbandonWait {
        session: b,
        resource: "r".into(),
        queued_at,
    });
    assert!(
        matches!(out.response, Response::Released { .. }),
        "{:?}",
        out.response
    );
    assert!(
        log.state.resource("r").is_none(),
        "nobody holds a lease nobody knows of"
    );
    // Still queued: the wait is simply withdrawn.
    log.acquire(a, "r", Mode::Exclusive, false);
    let Response::Queued { queued_at, .. } = log.acquire(b, "r", Mode::Exclusive, true) else {
        panic!("b should queue")
    };
    let out = log.apply(Command::AbandonWait {
        session: b,
        resource: "r".into(),
        queued_at,
    });
    assert_eq!(out.response, Response::WaitCancelled);
    assert!(log.state.resource("r").expect("a holds").waiters.is_empty());
}

/// A client whose first acquire call went away (its wait is abandoned)
/// retried: the retry claims the wait, so the abandon of the first call,
/// applying after the grant, cannot release the lease the retry returned.
#[test]
fn an_abandon_from_an_earlier_call_cannot_release_what_a_retry_claimed() {
    for grant_before_retry in [false, true] {
        let mut log = Log::new();
        let a = log.open("a");
        let b = log.open("b");
        log.acquire(a, "r", Mode::Exclusive, false);
        let Response::Queued {
            queued_at: first, ..
        } = log.acquire(b, "r", Mode::Exclusive, true)
        else {
            panic!("b should queue")
        };
        let release_a = Command::Release {
            session: r(a),
            resource: "r".into(),
        };
        if grant_before_retry {
            log.apply(release_a.clone());
        }
        // The retry of the same call (same session, resource and mode).
        let retry = log.acquire(b, "r", Mode::Exclusive, true);
        match (&retry, grant_before_retry) {
            (Response::Acquired { .. }, true) => {}
            (Response::Queued { queued_at, .. }, false) => assert_ne!(*queued_at, first),
            other => panic!("{other:?}"),
        }
        if !grant_before_retry {
            log.apply(release_a);
        }
        // The first call's abandon applies last: it names the old wait.
        let out = log.apply(Command::AbandonWait {
            session: b,
            resource: "r".into(),
            queued_at: first,
        });
        assert_eq!(out.response, Response::WaitCancelled);
        assert!(
            log.state
                .resource("r")
                .expect("held")
                .holders
                .contains_key(&b),
            "the lease the retry returned is still held (grant before retry: {grant_before_retry})"
        );
    }
}

/// Found by the `snapshot_decode` fuzz target (CI, 2026-12-03): from a
/// state whose last position is near `u64::MAX`, the position saturated,
/// so two sessions opened one after the other both got id `u64::MAX` and
/// the second replaced the first (and its leases' bookkeeping broke). Once
/// the positions are used up, every command is refused and nothing changes.
#[test]
fn nothing_changes_once_the_positions_are_used_up() {
    let mut log = Log {
        state: LeaseState::from_parts(LeaseConfig::default(), 7, u64::MAX - 1, [], []),
        index: 7,
    };
    let first = log.open("last");
    assert_eq!(first, u64::MAX);
    let before = log.state.clone();
    let second = log.apply(Command::OpenSession {
        client_name: "one too many".into(),
        ttl_ms: 10_000,
        secret: S,
        request_id: 0,
    });
    assert!(
        matches!(
            second.response,
            Response::Rejected(Rejection::LimitExceeded {
                limit: u64::MAX,
                ..
            })
        ),
        "{:?}",
        second.response
    );
    assert!(second.touched.is_empty() && second.events.is_empty());
    assert_eq!(log.state, before, "the first session is intact");
    assert_eq!(log.state.session_count(), 1);
}
