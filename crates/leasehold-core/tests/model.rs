//! Property tests: random command logs applied to the real state machine and
//! to a deliberately naive model (flat vectors, no indexes), compared after
//! every step. Also checks the safety properties directly on the event
//! history, and that replaying one log on two replicas gives identical bytes.

use std::collections::BTreeMap;

use leasehold_core::{
    Acquire, Command, EventKind, LeaseConfig, LeaseState, Mode, Rejection, Response, SessionRef,
    SessionSecret, SessionTarget,
};
use proptest::prelude::*;

const RESOURCES: [&str; 3] = ["a", "b", "c"];

/// Operations in terms of small indexes, resolved against live sessions.
#[derive(Debug, Clone)]
enum Op {
    Open,
    OneShot {
        res: usize,
        mode: Mode,
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
    Expire {
        who: Vec<usize>,
    },
    Recall {
        res: usize,
    },
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Open),
        1 => (0..3usize, mode(), any::<bool>()).prop_map(|(res, mode, wait)| Op::OneShot { res, mode, wait }),
        1 => (0..8usize).prop_map(|who| Op::Close { who }),
        6 => (0..8usize, 0..3usize, mode(), any::<bool>())
            .prop_map(|(who, res, mode, wait)| Op::Acquire { who, res, mode, wait }),
        4 => (0..8usize, 0..3usize).prop_map(|(who, res)| Op::Release { who, res }),
        1 => (0..8usize, 0..3usize).prop_map(|(who, res)| Op::Cancel { who, res }),
        1 => prop::collection::vec(0..8usize, 0..3).prop_map(|who| Op::Expire { who }),
        1 => (0..3usize).prop_map(|res| Op::Recall { res }),
    ]
}

/// The naive model: a flat list of holders and one global FIFO list of waits.
/// The secret every session in these tests is opened with.
const S: SessionSecret = SessionSecret([9; 16]);

/// Names session `id` with the right secret.
fn r(id: u64) -> SessionRef {
    SessionRef { id, secret: S }
}

#[derive(Default, Debug)]
struct Model {
    /// (session id, private)
    sessions: Vec<(u64, bool)>,
    /// (resource, session, mode, token)
    holders: Vec<(String, u64, Mode, u64)>,
    /// (resource, session, mode) in arrival order
    waits: Vec<(String, u64, Mode)>,
}

impl Model {
    fn alive(&self, s: u64) -> bool {
        self.sessions.iter().any(|(id, _)| *id == s)
    }
    fn fits(&self, res: &str, mode: Mode) -> bool {
        self.holders
            .iter()
            .filter(|h| h.0 == res)
            .all(|h| mode == Mode::Shared && h.2 == Mode::Shared)
    }
    fn grant_waiters(&mut self, res: &str, token: u64) {
        loop {
            let Some(pos) = self.waits.iter().position(|w| w.0 == res) else {
                return;
            };
            let (r, s, m) = self.waits[pos].clone();
            if !self.fits(&r, m) {
                return;
            }
            self.waits.remove(pos);
            self.holders.push((r, s, m, token));
        }
    }
    fn drop_session(&mut self, s: u64, token: u64) {
        self.sessions.retain(|(id, _)| *id != s);
        let touched: Vec<String> = self
            .holders
            .iter()
            .filter(|h| h.1 == s)
            .map(|h| h.0.clone())
            .chain(self.waits.iter().filter(|w| w.1 == s).map(|w| w.0.clone()))
            .collect();
        self.holders.retain(|h| h.1 != s);
        self.waits.retain(|w| w.1 != s);
        for r in RESOURCES {
            if touched.iter().any(|t| t == r) {
                self.grant_waiters(r, token);
            }
        }
    }
    fn close_private_if_empty(&mut self, s: u64, token: u64) {
        let private = self.sessions.iter().any(|(id, p)| *id == s && *p);
        let empty = !self.holders.iter().any(|h| h.1 == s) && !self.waits.iter().any(|w| w.1 == s);
        if private && empty {
            self.drop_session(s, token);
        }
    }

    /// Applies and returns the expected response class.
    fn apply(&mut self, index: u64, cmd: &Command) -> &'static str {
        match cmd {
            Command::OpenSession { .. } => {
                self.sessions.push((index, false));
                "opened"
            }
            Command::CloseSession { session } => {
                if !self.alive(session.id) {
                    return "not_found";
                }
                self.drop_session(session.id, index);
                "closed"
            }
            Command::Acquire(a) => {
                let (sid, private) = match a.session {
                    SessionTarget::Existing(s) => (s.id, false),
                    SessionTarget::Private { .. } => (index, true),
                };
                if !private && !self.alive(sid) {
                    return "not_found";
                }
                if let Some(h) = self
                    .holders
                    .iter()
                    .find(|h| h.0 == a.resource && h.1 == sid)
                {
                    return if h.2 == a.mode { "held" } else { "mismatch" };
                }
                if let Some(w) = self.waits.iter().find(|w| w.0 == a.resource && w.1 == sid) {
                    return if w.2 == a.mode { "queued" } else { "mismatch" };
                }
                let queue_empty = !self.waits.iter().any(|w| w.0 == a.resource);
                let free = queue_empty && self.fits(&a.resource, a.mode);
                if !free && !a.wait {
                    return "conflict";
                }
                if private {
                    self.sessions.push((sid, true));
                }
                if free {
                    self.holders.push((a.resource.clone(), sid, a.mode, index));
                    "granted"
                } else {
                    self.waits.push((a.resource.clone(), sid, a.mode));
                    "queued"
                }
            }
            Command::Release { session, resource } => {
                let session = &session.id;
                if !self.alive(*session) {
                    return "not_found";
                }
                let before = self.holders.len();
                self.holders
                    .retain(|h| !(h.0 == *resource && h.1 == *session));
                if self.holders.len() == before {
                    return "not_holder";
                }
                self.grant_waiters(resource, index);
                self.close_private_if_empty(*session, index);
                "released"
            }
            Command::AbandonWait { .. } => unreachable!("not generated"),
            Command::CancelWait { session, resource } => {
                if !self.alive(*session) {
                    return "not_found";
                }
                if self
                    .holders
                    .iter()
                    .any(|h| h.0 == *resource && h.1 == *session)
                {
                    return "held";
                }
                let before = self.waits.len();
                self.waits
                    .retain(|w| !(w.0 == *resource && w.1 == *session));
                if self.waits.len() != before {
                    self.grant_waiters(resource, index);
                    self.close_private_if_empty(*session, index);
                }
                "cancelled"
            }
            Command::ExpireSessions { sessions } => {
                for s in sessions {
                    if self.alive(*s) {
                        self.drop_session(*s, index);
                    }
                }
                "expired"
            }
            Command::Recall { .. } => "recalled",
            Command::SetConfig(_) => "config",
            // Never generated here (tests/batch.rs covers batches).
            Command::Batch(_) => "batch",
        }
    }

    fn holder_set(&self) -> Vec<(String, u64, Mode, u64)> {
        let mut v = self.holders.clone();
        v.sort();
        v
    }
}

fn class(r: &Response) -> &'static str {
    match r {
        Response::SessionOpened { .. } => "opened",
        Response::SessionClosed { .. } => "closed",
        Response::Acquired {
            newly_granted: true,
            ..
        } => "granted",
        Response::Acquired {
            newly_granted: false,
            ..
        } => "held",
        Response::Queued { .. } => "queued",
        Response::WaitCancelled => "cancelled",
        Response::Released { .. } => "released",
        Response::Expired { .. } => "expired",
        Response::Recalled { .. } => "recalled",
        Response::ConfigSet(_) => "config",
        Response::Noop => "noop",
        Response::Batch(_) => "batch",
        Response::Rejected(Rejection::SessionNotFound(_)) => "not_found",
        Response::Rejected(Rejection::Conflict { .. }) => "conflict",
        Response::Rejected(Rejection::NotHolder { .. }) => "not_holder",
        Response::Rejected(Rejection::ModeMismatch { .. }) => "mismatch",
        Response::Rejected(_) => "rejected",
    }
}

fn real_holders(state: &LeaseState) -> Vec<(String, u64, Mode, u64)> {
    let mut v: Vec<_> = state
        .resources()
        .flat_map(|(name, r)| {
            r.holders
                .values()
                .map(move |l| (name.clone(), l.session, l.mode, l.token))
        })
        .collect();
    v.sort();
    v
}

/// Turns index-based ops into concrete commands against the sessions known so far.
fn to_commands(ops: &[Op]) -> Vec<Command> {
    let mut known: Vec<u64> = Vec::new();
    let mut out = Vec::new();
    let pick = |known: &Vec<u64>, who: usize| {
        known
            .get(who % known.len().max(1))
            .copied()
            .unwrap_or(424242)
    };
    for op in ops {
        let index = out.len() as u64 + 1;
        let cmd = match op {
            Op::Open => {
                known.push(index);
                Command::OpenSession {
                    client_name: format!("c{index}"),
                    ttl_ms: 10_000,
                    secret: S,
                    request_id: 0,
                }
            }
            Op::OneShot { res, mode, wait } => {
                known.push(index);
                Command::Acquire(Acquire {
                    session: SessionTarget::Private {
                        client_name: "one".into(),
                        ttl_ms: 10_000,
                        secret: S,
                        request_id: 0,
                    },
                    resource: RESOURCES[*res].into(),
                    mode: *mode,
                    wait: *wait,
                    metadata: vec![],
                })
            }
            Op::Close { who } => Command::CloseSession {
                session: r(pick(&known, *who)),
            },
            Op::Acquire {
                who,
                res,
                mode,
                wait,
            } => Command::Acquire(Acquire {
                session: SessionTarget::Existing(r(pick(&known, *who))),
                resource: RESOURCES[*res].into(),
                mode: *mode,
                wait: *wait,
                metadata: vec![*who as u8],
            }),
            Op::Release { who, res } => Command::Release {
                session: r(pick(&known, *who)),
                resource: RESOURCES[*res].into(),
            },
            Op::Cancel { who, res } => Command::CancelWait {
                session: pick(&known, *who),
                resource: RESOURCES[*res].into(),
            },
            Op::Expire { who } => Command::ExpireSessions {
                sessions: who.iter().map(|w| pick(&known, *w)).collect(),
            },
            Op::Recall { res } => Command::Recall {
                resource: RESOURCES[*res].into(),
                reason: "test".into(),
            },
        };
        out.push(cmd);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn state_machine_matches_naive_model(ops in prop::collection::vec(op(), 1..120)) {
        let cmds = to_commands(&ops);
        let mut state = LeaseState::new(LeaseConfig::default());
        let mut model = Model::default();
        // Per resource: last granted token, and the order waiters queued in.
        let mut last_token: BTreeMap<String, u64> = BTreeMap::new();
        let mut queued: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let index = i as u64 + 1;
            let out = state.apply(index, cmd);
            let expected = model.apply(index, cmd);
            prop_assert_eq!(class(&out.response), expected, "step {} {:?}", index, cmd);
            prop_assert_eq!(state.check_invariants(), Ok(()));
            prop_assert_eq!(real_holders(&state), model.holder_set(), "holders after {:?}", cmd);

            // Never an exclusive holder beside any other holder.
            for (name, res) in state.resources() {
                if res.holders.values().any(|l| l.mode == Mode::Exclusive) {
                    prop_assert_eq!(res.holders.len(), 1, "exclusive shared on {}", name);
                }
            }
            if let Response::Queued { session, resource, .. } = &out.response {
                let q = queued.entry(resource.clone()).or_default();
                if !q.contains(session) {
                    q.push(*session);
                }
            }
            let mut granted: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for ev in &out.events {
                prop_assert_eq!(ev.revision, index);
                if ev.kind == EventKind::Acquired {
                    // Tokens strictly increase per resource across entries.
                    let last = last_token.entry(ev.resource.clone()).or_insert(0);
                    prop_assert!(ev.token == index && ev.token >= *last);
                    *last = ev.token;
                    granted.entry(ev.resource.clone()).or_default().push(ev.session);
                }
            }
            // FIFO: of the waiters queued before this step, those granted now
            // are the oldest ones, in order, and the rest keep their order.
            for (name, q) in queued.iter_mut() {
                let live: Vec<u64> = state
                    .resource(name)
                    .map(|r| r.waiters.iter().map(|w| w.session).collect())
                    .unwrap_or_default();
                let now = granted.get(name).cloned().unwrap_or_default();
                // Drop waiters that left without a grant (cancel, close, expiry).
                q.retain(|s| live.contains(s) || now.contains(s));
                let from_queue: Vec<u64> = now.iter().copied().filter(|s| q.contains(s)).collect();
                prop_assert_eq!(&q[..from_queue.len()], &from_queue[..], "grant order on {}", name);
                q.drain(..from_queue.len());
                prop_assert_eq!(&*q, &live, "queue order of {}", name);
            }
        }
    }

    #[test]
    fn replicas_replaying_one_log_have_identical_bytes(ops in prop::collection::vec(op(), 1..150)) {
        let cmds = to_commands(&ops);
        let mut r1 = LeaseState::new(LeaseConfig::default());
        let mut r2 = LeaseState::new(LeaseConfig::default());
        for (i, cmd) in cmds.iter().enumerate() {
            let a = r1.apply(i as u64 + 1, cmd);
            let b = r2.apply(i as u64 + 1, cmd);
            prop_assert_eq!(a, b);
        }
        let bytes = r1.encode();
        prop_assert_eq!(&bytes, &r2.encode());
        // A replica restored from a snapshot mid-way and fed the rest agrees too.
        let mid = cmds.len() / 2;
        let mut r3 = LeaseState::new(LeaseConfig::default());
        for (i, cmd) in cmds[..mid].iter().enumerate() {
            r3.apply(i as u64 + 1, cmd);
        }
        let mut r3 = LeaseState::decode(&r3.encode()).expect("decodes");
        for (i, cmd) in cmds.iter().enumerate().skip(mid) {
            r3.apply(i as u64 + 1, cmd);
        }
        prop_assert_eq!(r3.encode(), bytes);
    }
}
