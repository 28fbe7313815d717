//! `Command::Batch`: many commands in one entry behave exactly as the same
//! commands one entry each (property-tested), take distinct increasing
//! positions, and malformed batches change nothing.

use leasehold_core::limits::BATCH_COMMANDS_MAX;
use leasehold_core::{
    Acquire, Command, Event, EventKind, LeaseConfig, LeaseState, Mode, Rejection, Response,
    SessionRef, SessionSecret, SessionTarget,
};
use proptest::prelude::*;

const RESOURCES: [&str; 3] = ["a", "b", "c"];
const S: SessionSecret = SessionSecret([7; 16]);

/// What a generated step does, resolved against the live sessions.
#[derive(Debug, Clone)]
enum Op {
    Open,
    OneShot {
        res: usize,
        wait: bool,
    },
    Close {
        who: usize,
    },
    Acquire {
        who: usize,
        res: usize,
        mode: Mode,
        wait: bool,
    },
    Release {
        who: usize,
        res: usize,
    },
    Cancel {
        who: usize,
        res: usize,
    },
    Abandon {
        who: usize,
        res: usize,
    },
    Expire {
        who: usize,
    },
    Recall {
        res: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)];
    prop_oneof![
        3 => Just(Op::Open),
        1 => (0..3usize, any::<bool>()).prop_map(|(res, wait)| Op::OneShot { res, wait }),
        1 => (0..8usize).prop_map(|who| Op::Close { who }),
        6 => (0..8usize, 0..3usize, mode, any::<bool>())
            .prop_map(|(who, res, mode, wait)| Op::Acquire { who, res, mode, wait }),
        4 => (0..8usize, 0..3usize).prop_map(|(who, res)| Op::Release { who, res }),
        1 => (0..8usize, 0..3usize).prop_map(|(who, res)| Op::Cancel { who, res }),
        1 => (0..8usize, 0..3usize).prop_map(|(who, res)| Op::Abandon { who, res }),
        1 => (0..8usize).prop_map(|who| Op::Expire { who }),
        1 => (0..3usize).prop_map(|res| Op::Recall { res }),
    ]
}

fn owned(id: u64) -> SessionRef {
    SessionRef { id, secret: S }
}

/// The command `op` stands for on `state` (sessions picked among the live
/// ones, so most commands act on something).
fn resolve(state: &LeaseState, op: &Op) -> Command {
    let live: Vec<u64> = state.sessions().map(|s| s.id).collect();
    let pick = |who: usize| live.get(who % live.len().max(1)).copied().unwrap_or(999);
    let queued_at = |who: usize, res: usize| {
        state
            .resource(RESOURCES[res])
            .and_then(|r| r.waiters.iter().find(|w| w.session == pick(who)))
            .map_or(1, |w| w.queued_at)
    };
    match op {
        Op::Open => Command::OpenSession {
            client_name: "c".into(),
            ttl_ms: 10_000,
            secret: S,
            request_id: 0,
        },
        Op::OneShot { res, wait } => Command::Acquire(Acquire {
            session: SessionTarget::Private {
                client_name: "one".into(),
                ttl_ms: 10_000,
                secret: S,
                request_id: 0,
            },
            resource: RESOURCES[*res].into(),
            mode: Mode::Exclusive,
            wait: *wait,
            metadata: vec![],
        }),
        Op::Close { who } => Command::CloseSession {
            session: owned(pick(*who)),
        },
        Op::Acquire {
            who,
            res,
            mode,
            wait,
        } => Command::Acquire(Acquire {
            session: SessionTarget::Existing(owned(pick(*who))),
            resource: RESOURCES[*res].into(),
            mode: *mode,
            wait: *wait,
            metadata: vec![],
        }),
        Op::Release { who, res } => Command::Release {
            session: owned(pick(*who)),
            resource: RESOURCES[*res].into(),
        },
        Op::Cancel { who, res } => Command::CancelWait {
            session: pick(*who),
            resource: RESOURCES[*res].into(),
        },
        Op::Abandon { who, res } => Command::AbandonWait {
            session: pick(*who),
            resource: RESOURCES[*res].into(),
            queued_at: queued_at(*who, *res),
        },
        Op::Expire { who } => Command::ExpireSessions {
            sessions: vec![pick(*who)],
        },
        Op::Recall { res } => Command::Recall {
            resource: RESOURCES[*res].into(),
            reason: "test".into(),
        },
    }
}

/// An event without its revision (the entry index, which differs between a
/// batch and separate entries by construction).
fn unrevised(e: &Event) -> (EventKind, String, u64, Mode, u64) {
    (e.kind, e.resource.clone(), e.session, e.mode, e.token)
}

/// The resources with recall notices stripped of their index (the entry's,
/// a revision like an event's).
fn unrevised_resources(state: &LeaseState) -> Vec<(String, leasehold_core::Resource)> {
    state
        .resources()
        .map(|(name, r)| {
            let mut r = r.clone();
            for lease in r.holders.values_mut() {
                if let Some(notice) = &mut lease.recall {
                    notice.index = 0;
                }
            }
            (name.clone(), r)
        })
        .collect()
}

/// A response with any recall notice stripped of its index.
fn unrevised_response(r: &Response) -> Response {
    let mut r = r.clone();
    if let Response::Acquired { grant, .. } | Response::Released { grant } = &mut r {
        if let Some(notice) = &mut grant.lease.recall {
            notice.index = 0;
        }
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, .. ProptestConfig::default() })]

    /// The same commands, one entry each or grouped into batches, give the
    /// same answers, events and state; grants' tokens never go back and
    /// exceed those of earlier entries, and session ids are never reused.
    #[test]
    fn a_batch_applies_as_its_commands_one_entry_each(
        ops in prop::collection::vec(op(), 1..150),
        cuts in prop::collection::vec(1..12usize, 1..60),
    ) {
        // Reference: one command per entry. Each entry's index is the next
        // position, as when every earlier entry took exactly one.
        let mut single = LeaseState::new(LeaseConfig::default());
        let mut commands = Vec::new();
        let mut answers = Vec::new();
        let mut events = Vec::new();
        for op in &ops {
            let command = resolve(&single, op);
            let out = single.apply(single.position() + 1, &command);
            answers.push(unrevised_response(&out.response));
            events.extend(out.events.iter().map(unrevised));
            commands.push(command);
        }

        // The same commands cut into batches, one entry per batch.
        let mut batched = LeaseState::new(LeaseConfig::default());
        let mut b_answers = Vec::new();
        let mut b_events = Vec::new();
        let mut index;
        let mut last_token = 0;
        let mut opened = std::collections::BTreeSet::new();
        let mut rest = &commands[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().expect("cycle")).min(rest.len());
            let (group, tail) = rest.split_at(n);
            rest = tail;
            // Each entry's index is the next position, as in the reference
            // (an index ahead of the positions makes them jump to it; the
            // unit tests below cover that).
            index = batched.position() + 1;
            let out = batched.apply(index, &Command::Batch(group.to_vec()));
            prop_assert_eq!(batched.check_invariants(), Ok(()));
            let Response::Batch(responses) = out.response else {
                return Err(TestCaseError::fail(format!("not a batch answer: {:?}", out.response)));
            };
            prop_assert_eq!(responses.len(), group.len());
            // Grants never go back, and every grant of this entry is above
            // every grant of earlier entries (waiters granted together by
            // one command share its token).
            let before = last_token;
            for e in &out.events {
                prop_assert_eq!(e.revision, index);
                if e.kind == EventKind::Acquired {
                    prop_assert!(e.token > before && e.token >= last_token, "token {} after {}", e.token, last_token);
                    last_token = e.token;
                }
            }
            for r in &responses {
                if let Response::SessionOpened { session, .. } = r {
                    prop_assert!(opened.insert(*session), "session id {} reused", session);
                }
            }
            b_answers.extend(responses.iter().map(unrevised_response));
            b_events.extend(out.events.iter().map(unrevised));
        }
        prop_assert_eq!(&b_answers, &answers);
        prop_assert_eq!(&b_events, &events);
        prop_assert_eq!(batched.position(), single.position());
        prop_assert_eq!(batched.sessions().collect::<Vec<_>>(), single.sessions().collect::<Vec<_>>());
        prop_assert_eq!(unrevised_resources(&batched), unrevised_resources(&single));
        // A snapshot keeps the position.
        prop_assert_eq!(LeaseState::decode(&batched.encode()).expect("decodes").position(), batched.position());
    }
}

fn open() -> Command {
    Command::OpenSession {
        client_name: "c".into(),
        ttl_ms: 10_000,
        secret: S,
        request_id: 0,
    }
}

fn acquire(session: u64, resource: &str) -> Command {
    Command::Acquire(Acquire {
        session: SessionTarget::Existing(owned(session)),
        resource: resource.into(),
        mode: Mode::Exclusive,
        wait: true,
        metadata: vec![],
    })
}

#[test]
fn commands_of_one_batch_take_consecutive_positions_and_the_next_entry_follows() {
    let mut state = LeaseState::new(LeaseConfig::default());
    let out = state.apply(5, &Command::Batch(vec![open(), open(), open()]));
    let ids: Vec<u64> = match out.response {
        Response::Batch(rs) => rs
            .into_iter()
            .map(|r| match r {
                Response::SessionOpened { session, .. } => session,
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ids, vec![5, 6, 7]);
    assert_eq!(state.position(), 7);
    assert_eq!(state.revision(), 5);
    // The next entry (index 6) is behind the positions: it takes 8.
    let out = state.apply(6, &acquire(5, "r"));
    match out.response {
        Response::Acquired { grant, .. } => assert_eq!(grant.lease.token, 8),
        other => panic!("{other:?}"),
    }
    // A queued wait and a grant in one batch: positions 9 and 10; releasing
    // in the same batch grants the wait with a larger token.
    let out = state.apply(
        7,
        &Command::Batch(vec![
            acquire(6, "r"),
            Command::Release {
                session: owned(5),
                resource: "r".into(),
            },
        ]),
    );
    let grants: Vec<u64> = out
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Acquired)
        .map(|e| e.token)
        .collect();
    assert_eq!(grants, vec![10]);
    assert_eq!(state.resource("r").expect("held").holders[&6].token, 10);
    assert_eq!(state.check_invariants(), Ok(()));
}

#[test]
fn a_malformed_batch_is_refused_whole_and_changes_nothing() {
    let mut state = LeaseState::new(LeaseConfig::default());
    state.apply(1, &open());
    let before = state.clone();
    let nested = Command::Batch(vec![open(), Command::Batch(vec![open()])]);
    let too_many = Command::Batch(vec![open(); BATCH_COMMANDS_MAX + 1]);
    for (i, bad) in [Command::Batch(vec![]), nested, too_many]
        .iter()
        .enumerate()
    {
        let out = state.apply(2 + i as u64, bad);
        assert!(
            matches!(
                out.response,
                Response::Rejected(
                    Rejection::InvalidArgument { .. } | Rejection::LimitExceeded { .. }
                )
            ),
            "{:?}",
            out.response
        );
        assert!(out.touched.is_empty() && out.events.is_empty() && out.sessions.is_empty());
        assert_eq!(state, before);
    }
    // The largest batch allowed applies.
    let out = state.apply(9, &Command::Batch(vec![open(); BATCH_COMMANDS_MAX]));
    assert!(matches!(out.response, Response::Batch(ref rs) if rs.len() == BATCH_COMMANDS_MAX));
    assert_eq!(state.session_count(), 1 + BATCH_COMMANDS_MAX);
}

#[test]
fn a_version_2_snapshot_reads_with_its_revision_as_position() {
    let mut state = LeaseState::new(LeaseConfig::default());
    state.apply(3, &open());
    state.apply(4, &acquire(3, "x"));
    let v3 = state.encode();
    // Re-encode as version 2: the same body without the position field.
    // Layout: magic, version, then postcard (config, revision, position, ...).
    let decoded = LeaseState::decode(&v3).expect("v3 decodes");
    assert_eq!(decoded.position(), 4);
    let mut v2 = Vec::new();
    v2.extend_from_slice(b"LHSM");
    v2.extend_from_slice(&2u32.to_be_bytes());
    let body = &v3[8..];
    // postcard: config first (its encoding is self-delimiting), then the
    // revision and the position as varints; drop the position.
    let config_len = postcard::to_stdvec(state.config()).expect("encodes").len();
    let revision_len = postcard::to_stdvec(&state.revision())
        .expect("encodes")
        .len();
    let position_len = postcard::to_stdvec(&state.position())
        .expect("encodes")
        .len();
    v2.extend_from_slice(&body[..config_len + revision_len]);
    v2.extend_from_slice(&body[config_len + revision_len + position_len..]);
    let old = LeaseState::decode(&v2).expect("v2 decodes");
    assert_eq!(old.position(), old.revision());
    assert_eq!(old.sessions().count(), 1);
    assert_eq!(old.resource("x").expect("held").holders[&3].token, 4);
}
