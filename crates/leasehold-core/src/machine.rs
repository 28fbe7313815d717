//! The lease state machine: deterministic apply of [`Command`]s.
//!
//! Invariants kept after every apply (checked by [`LeaseState::check_invariants`]
//! in tests):
//! - a resource with an exclusive holder has no other holder;
//! - every holder and waiter names a live session, and that session lists
//!   the resource in `held` / `waiting` (and nothing else does);
//! - a waiter's session does not also hold the resource;
//! - the head of a non-empty queue cannot be granted (else it would have been);
//! - no idle resource is stored;
//! - no session id, fencing token or queue place exceeds the last position;
//! - the recall index lists exactly the leases under a recall notice;
//! - the configuration is valid ([`LeaseConfig::validate`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{Acquire, Command, SessionRef, SessionTarget};
use crate::config::LeaseConfig;
use crate::event::{Event, EventKind};
use crate::limits;
use crate::outcome::{Applied, Grant, Response, SessionChange, Touched};
use crate::rejection::{HolderRef, Rejection};
use crate::resource::{Lease, RecallNotice, Resource, Waiter};
use crate::session::Session;
use crate::types::{LogIndex, RequestId, SessionId, SessionSecret};

mod abandon;
mod batch;
mod invariants;
mod recalls;
mod validate;

pub use validate::{
    validate_client_name, validate_metadata, validate_reason, validate_resource, validate_text,
};

/// The whole replicated lease state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// Replicated configuration.
    config: LeaseConfig,
    /// Open sessions by id.
    sessions: BTreeMap<SessionId, Box<Session>>,
    /// Resources with a holder or a waiter, by name.
    resources: BTreeMap<String, Box<Resource>>,
    /// Log index of the last applied command that changed state (the watch
    /// revision).
    revision: LogIndex,
    /// The last position handed out: every session id, fencing token and
    /// queue place is the position of the command that made it. A command
    /// that changes state takes `max(position + 1, its entry's index)`, so
    /// with one command per entry the position is the entry's index, and
    /// the commands of a [`Command::Batch`] take consecutive positions.
    position: u64,
    /// Open sessions by the client's request id that opened them (derived
    /// from `sessions`, never encoded), so a retried open finds its session.
    by_request: BTreeMap<RequestId, SessionId>,
    /// The resources each session holds under a recall notice (derived
    /// from `resources`, never encoded), so a keepalive finds a session's
    /// notices without walking every lease it holds.
    recalled: BTreeMap<SessionId, BTreeSet<String>>,
}

/// Collects the side outputs of one apply.
struct Apply {
    /// The entry's log index (the revision of its events).
    index: LogIndex,
    /// This command's position: its session id, token or queue place.
    position: u64,
    events: Vec<Event>,
    touched: Touched,
    sessions: Vec<SessionChange>,
}

impl Apply {
    fn event(&mut self, kind: EventKind, resource: &str, lease: &Lease) {
        self.events.push(Event {
            revision: self.index,
            kind,
            resource: resource.to_string(),
            session: lease.session,
            mode: lease.mode,
            token: lease.token,
        });
    }
}

impl LeaseState {
    /// An empty state with the given configuration.
    pub fn new(config: LeaseConfig) -> Self {
        LeaseState {
            config,
            ..LeaseState::default()
        }
    }

    /// Rebuilds a state from persisted parts (storage load path).
    ///
    /// `position` is the last position handed out; stores written before
    /// batches existed pass their revision (every id and token they issued
    /// is an index no greater than it).
    pub fn from_parts(
        config: LeaseConfig,
        revision: LogIndex,
        position: u64,
        sessions: impl IntoIterator<Item = Session>,
        resources: impl IntoIterator<Item = (String, Resource)>,
    ) -> Self {
        let sessions: BTreeMap<SessionId, Box<Session>> =
            sessions.into_iter().map(|s| (s.id, Box::new(s))).collect();
        let by_request = sessions
            .values()
            .filter(|s| s.request_id != 0)
            .map(|s| (s.request_id, s.id))
            .collect();
        let resources: BTreeMap<String, Box<Resource>> = resources
            .into_iter()
            .map(|(name, res)| (name, Box::new(res)))
            .collect();
        let mut recalled: BTreeMap<SessionId, BTreeSet<String>> = BTreeMap::new();
        for (name, res) in &resources {
            for lease in res.holders.values().filter(|l| l.recall.is_some()) {
                recalled
                    .entry(lease.session)
                    .or_default()
                    .insert(name.clone());
            }
        }
        LeaseState {
            config,
            sessions,
            resources,
            revision,
            position,
            by_request,
            recalled,
        }
    }

    /// The replicated configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Index of the last command that changed state.
    pub fn revision(&self) -> LogIndex {
        self.revision
    }

    /// The last position handed out (see [`Command::Batch`]).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// One session.
    pub fn session(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id).map(|s| &**s)
    }

    /// All sessions, ordered by id.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().map(|s| &**s)
    }

    /// Sessions with ids greater than `after`, ordered by id (a page of
    /// sessions starts after the last id of the previous one).
    pub fn sessions_after(&self, after: SessionId) -> impl Iterator<Item = &Session> {
        self.sessions
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .map(|(_, s)| &**s)
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// One resource (None when idle).
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name).map(|r| &**r)
    }

    /// Resources in name order, starting at `from` (inclusive).
    pub fn resources_from<'a>(
        &'a self,
        from: &str,
    ) -> impl Iterator<Item = (&'a String, &'a Resource)> + 'a {
        self.resources
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .map(|(name, res)| (name, &**res))
    }

    /// All stored resources in name order.
    pub fn resources(&self) -> impl Iterator<Item = (&String, &Resource)> {
        self.resources.iter().map(|(name, res)| (name, &**res))
    }

    /// Applies one command at `index`. Never fails: a refused command is a
    /// [`Response::Rejected`] and leaves the state untouched.
    pub fn apply(&mut self, index: LogIndex, command: &Command) -> Applied {
        match command {
            Command::Batch(commands) => self.apply_batch(index, commands),
            single => self.apply_one(index, single),
        }
    }

    /// Applies one command that is not a batch.
    fn apply_one(&mut self, index: LogIndex, command: &Command) -> Applied {
        // Every position is handed out once: past the last one there is no
        // new session id, token or queue place, so nothing may change (a
        // saturating position would give two sessions one id).
        let Some(next) = self.position.checked_add(1) else {
            let what = "positions (session ids, fencing tokens, queue places)";
            let limit = u64::MAX;
            return Applied::rejected(
                index,
                Rejection::LimitExceeded {
                    what: what.into(),
                    limit,
                },
            );
        };
        let mut cx = Apply {
            position: next.max(index),
            index,
            events: Vec::new(),
            touched: Touched::default(),
            sessions: Vec::new(),
        };
        let response = match command {
            Command::OpenSession {
                client_name,
                ttl_ms,
                secret,
                request_id,
            } => self.open_session(&mut cx, client_name, *ttl_ms, *secret, *request_id),
            Command::CloseSession { session } => self.close_session(&mut cx, *session),
            Command::Acquire(req) => self.acquire(&mut cx, req),
            Command::CancelWait { session, resource } => {
                self.cancel_wait(&mut cx, *session, resource)
            }
            Command::AbandonWait {
                session,
                resource,
                queued_at,
            } => self.abandon_wait(&mut cx, *session, resource, *queued_at),
            Command::Release { session, resource } => match self.owned(*session) {
                Ok(()) => self.release(&mut cx, session.id, resource),
                Err(r) => Response::Rejected(r),
            },
            Command::ExpireSessions { sessions } => self.expire(&mut cx, sessions),
            Command::Recall { resource, reason } => self.recall(&mut cx, resource, reason),
            Command::SetConfig(config) => match config.validate() {
                Ok(()) => {
                    self.config = *config;
                    cx.touched.config = true;
                    Response::ConfigSet(*config)
                }
                Err(r) => Response::Rejected(r),
            },
            Command::Batch(_) => {
                Response::Rejected(Rejection::invalid("batch", "must not contain a batch"))
            }
        };
        if !cx.touched.is_empty() {
            self.revision = index;
            self.position = cx.position;
        }
        Applied {
            index,
            response,
            events: cx.events,
            touched: cx.touched,
            sessions: cx.sessions,
        }
    }

    /// Checks that `session` exists and its secret is the one presented.
    fn owned(&self, session: SessionRef) -> Result<(), Rejection> {
        match self.sessions.get(&session.id) {
            None => Err(Rejection::SessionNotFound(session.id)),
            Some(s) if !s.secret.matches(session.secret.as_bytes()) => {
                Err(Rejection::PermissionDenied(session.id))
            }
            Some(_) => Ok(()),
        }
    }

    /// The open session a client request id opened, if any.
    pub fn session_by_request(&self, request_id: RequestId) -> Option<&Session> {
        if request_id == 0 {
            return None;
        }
        self.by_request
            .get(&request_id)
            .and_then(|id| self.sessions.get(id))
            .map(|s| &**s)
    }

    /// Records an entry that carries no command (blank, membership): nothing
    /// changes, but callers keep one code path.
    pub fn apply_noop(&mut self, index: LogIndex) -> Applied {
        Applied {
            index,
            response: Response::Noop,
            events: Vec::new(),
            touched: Touched::default(),
            sessions: Vec::new(),
        }
    }

    fn open_session(
        &mut self,
        cx: &mut Apply,
        client_name: &str,
        ttl_ms: u64,
        secret: SessionSecret,
        request_id: RequestId,
    ) -> Response {
        if let Some(s) = self.session_by_request(request_id) {
            // A retry of the request that opened it: the same answer.
            return Response::SessionOpened {
                session: s.id,
                ttl_ms: s.ttl_ms,
                secret: s.secret,
            };
        }
        if let Err(r) = self.check_new_session(client_name, ttl_ms) {
            return Response::Rejected(r);
        }
        let session = self.insert_session(cx, client_name, ttl_ms, false, secret, request_id);
        Response::SessionOpened {
            session,
            ttl_ms,
            secret,
        }
    }

    /// Checks that a session with these parameters may be opened.
    fn check_new_session(&self, client_name: &str, ttl_ms: u64) -> Result<(), Rejection> {
        validate_client_name(client_name)?;
        self.config.check_ttl(ttl_ms)?;
        if self.sessions.len() >= limits::SESSIONS_MAX {
            return Err(Rejection::LimitExceeded {
                what: "open sessions".into(),
                limit: limits::SESSIONS_MAX as u64,
            });
        }
        Ok(())
    }

    /// Inserts a checked session with id = this entry's index.
    fn insert_session(
        &mut self,
        cx: &mut Apply,
        client_name: &str,
        ttl_ms: u64,
        private: bool,
        secret: SessionSecret,
        request_id: RequestId,
    ) -> SessionId {
        let id = cx.position;
        self.sessions.insert(
            id,
            Box::new(Session {
                id,
                client_name: client_name.into(),
                ttl_ms,
                private,
                secret,
                request_id,
                held: Default::default(),
                waiting: Default::default(),
            }),
        );
        if request_id != 0 {
            self.by_request.insert(request_id, id);
        }
        cx.touched.sessions.insert(id);
        cx.sessions.push(SessionChange::Opened {
            session: id,
            ttl_ms,
            secret,
        });
        id
    }

    fn close_session(&mut self, cx: &mut Apply, session: SessionRef) -> Response {
        if let Err(r) = self.owned(session) {
            return Response::Rejected(r);
        }
        match self.remove_session(cx, session.id, EventKind::Released) {
            Some(released) => Response::SessionClosed { released },
            None => Response::Rejected(Rejection::SessionNotFound(session.id)),
        }
    }

    fn expire(&mut self, cx: &mut Apply, sessions: &[SessionId]) -> Response {
        if sessions.len() > limits::EXPIRE_BATCH_MAX {
            return Response::Rejected(Rejection::LimitExceeded {
                what: "sessions per expire command".into(),
                limit: limits::EXPIRE_BATCH_MAX as u64,
            });
        }
        let mut expired = Vec::new();
        for &id in sessions {
            if self.remove_session(cx, id, EventKind::Expired).is_some() {
                expired.push(id);
            }
        }
        Response::Expired { sessions: expired }
    }

    /// Removes a session with all its leases and waits, then grants whoever
    /// can go next on the freed resources. Returns the resources it held.
    fn remove_session(
        &mut self,
        cx: &mut Apply,
        id: SessionId,
        kind: EventKind,
    ) -> Option<Vec<String>> {
        let session = self.sessions.remove(&id)?;
        if session.request_id != 0 {
            self.by_request.remove(&session.request_id);
        }
        cx.touched.sessions.insert(id);
        cx.sessions.push(SessionChange::Ended { session: id });
        for name in &session.waiting {
            if let Some(res) = self.resources.get_mut(name) {
                res.waiters.retain(|w| w.session != id);
            }
            // Removing a waiter from the head may unblock the ones behind it.
            self.settle(cx, name);
        }
        let mut released = Vec::with_capacity(session.held.len());
        for name in &session.held {
            if let Some(res) = self.resources.get_mut(name) {
                if let Some(lease) = res.holders.remove(&id) {
                    cx.event(kind, name, &lease);
                }
            }
            self.forget_recall(id, name);
            self.settle(cx, name);
            released.push(name.clone());
        }
        Some(released)
    }

    /// Grants queued waiters of `name` in FIFO order while the head fits,
    /// then drops the resource if idle. Marks it touched.
    fn settle(&mut self, cx: &mut Apply, name: &str) {
        cx.touched.resources.insert(name.to_string());
        let Some(res) = self.resources.get_mut(name) else {
            return;
        };
        while let Some(head) = res.waiters.front() {
            if !res.admits(head.mode) {
                break;
            }
            let Some(w) = res.waiters.pop_front() else {
                break;
            };
            let lease = Lease {
                session: w.session,
                mode: w.mode,
                token: cx.position,
                metadata: w.metadata,
                recall: None,
                queued_at: Some(w.queued_at),
            };
            cx.event(EventKind::Acquired, name, &lease);
            res.holders.insert(w.session, lease);
            if let Some(s) = self.sessions.get_mut(&w.session) {
                s.waiting.remove(name);
                s.held.insert(name.to_string());
                cx.touched.sessions.insert(w.session);
            }
        }
        if res.is_idle() {
            self.resources.remove(name);
        }
    }

    fn holders_of(&self, res: &Resource) -> Vec<HolderRef> {
        res.holders
            .values()
            .map(|l| HolderRef {
                session: l.session,
                client_name: self
                    .sessions
                    .get(&l.session)
                    .map(|s| s.client_name.to_string())
                    .unwrap_or_default(),
                mode: l.mode,
                token: l.token,
            })
            .collect()
    }

    fn acquire(&mut self, cx: &mut Apply, req: &Acquire) -> Response {
        if let Err(r) = validate_resource(&req.resource).and(validate_metadata(&req.metadata)) {
            return Response::Rejected(r);
        }
        let (session_id, secret) = match &req.session {
            SessionTarget::Existing(named) => {
                if let Err(r) = self.owned(*named) {
                    return Response::Rejected(r);
                }
                let Some(session) = self.sessions.get(&named.id) else {
                    return Response::Rejected(Rejection::SessionNotFound(named.id));
                };
                let (secret, lease_count) = (session.secret, session.lease_count());
                if let Some(done) = self.repeat_acquire(cx, named.id, secret, req) {
                    return done;
                }
                if lease_count >= limits::LEASES_PER_SESSION_MAX {
                    return Response::Rejected(Rejection::LimitExceeded {
                        what: "leases per session".into(),
                        limit: limits::LEASES_PER_SESSION_MAX as u64,
                    });
                }
                (named.id, secret)
            }
            SessionTarget::Private {
                client_name,
                ttl_ms,
                secret,
                request_id,
            } => {
                if let Some(session) = self.session_by_request(*request_id) {
                    // A retry of the one-call acquire that made this private
                    // session: answer what the first attempt got.
                    let (id, secret) = (session.id, session.secret);
                    return self.repeat_acquire(cx, id, secret, req).unwrap_or_else(|| {
                        Response::Rejected(Rejection::invalid(
                            "request_id",
                            "already used by a request for another resource",
                        ))
                    });
                }
                if let Err(r) = self.check_new_session(client_name, *ttl_ms) {
                    return Response::Rejected(r);
                }
                (cx.position, *secret)
            }
        };

        let mut free_now = true;
        if let Some(res) = self.resources.get(&req.resource) {
            free_now = res.waiters.is_empty() && res.admits(req.mode);
            if !free_now && !req.wait {
                return Response::Rejected(Rejection::Conflict {
                    resource: req.resource.clone(),
                    holders: self.holders_of(res),
                    waiters: res.waiters.len(),
                });
            }
            if !free_now && res.waiters.len() >= limits::WAITERS_PER_RESOURCE_MAX {
                return Response::Rejected(Rejection::LimitExceeded {
                    what: "waiters per resource".into(),
                    limit: limits::WAITERS_PER_RESOURCE_MAX as u64,
                });
            }
        }

        // Every check passed: from here on the command takes effect.
        if let SessionTarget::Private {
            client_name,
            ttl_ms,
            secret,
            request_id,
        } = &req.session
        {
            self.insert_session(cx, client_name, *ttl_ms, true, *secret, *request_id);
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Response::Rejected(Rejection::SessionNotFound(session_id));
        };
        cx.touched.sessions.insert(session_id);
        cx.touched.resources.insert(req.resource.clone());
        let res = self.resources.entry(req.resource.clone()).or_default();
        if free_now {
            let lease = Lease {
                session: session_id,
                mode: req.mode,
                token: cx.position,
                metadata: req.metadata.clone(),
                recall: None,
                queued_at: None,
            };
            cx.event(EventKind::Acquired, &req.resource, &lease);
            res.holders.insert(session_id, lease.clone());
            session.held.insert(req.resource.clone());
            Response::Acquired {
                session: session_id,
                secret,
                grant: Grant {
                    resource: req.resource.clone(),
                    lease,
                },
                newly_granted: true,
            }
        } else {
            res.waiters.push_back(Waiter {
                session: session_id,
                mode: req.mode,
                metadata: req.metadata.clone(),
                queued_at: cx.position,
            });
            session.waiting.insert(req.resource.clone());
            Response::Queued {
                session: session_id,
                secret,
                queued_at: cx.position,
                resource: req.resource.clone(),
                position: res.waiters.len() - 1,
            }
        }
    }

    /// Answers an acquire by a session that already holds or waits for the
    /// resource (a retried request): the same lease or place in the queue.
    /// The repeat also *claims* them for the call that asks now: a waiter's
    /// `queued_at` becomes this entry's index and a lease's `queued_at` is
    /// cleared, so an `AbandonWait` from an earlier call of the same client
    /// that went away (it names the older entry) no longer matches and
    /// cannot release what this call is about to return.
    fn repeat_acquire(
        &mut self,
        cx: &mut Apply,
        session: SessionId,
        secret: SessionSecret,
        req: &Acquire,
    ) -> Option<Response> {
        let res = self.resources.get_mut(&req.resource)?;
        if let Some(lease) = res.holders.get_mut(&session) {
            if lease.mode != req.mode {
                return Some(Response::Rejected(Rejection::ModeMismatch {
                    session,
                    resource: req.resource.clone(),
                    held: lease.mode,
                }));
            }
            if lease.queued_at.take().is_some() {
                cx.touched.resources.insert(req.resource.clone());
            }
            return Some(Response::Acquired {
                session,
                secret,
                grant: Grant {
                    resource: req.resource.clone(),
                    lease: lease.clone(),
                },
                newly_granted: false,
            });
        }
        let position = res.waiter_position(session)?;
        let waiter = &mut res.waiters[position];
        if waiter.mode != req.mode {
            return Some(Response::Rejected(Rejection::ModeMismatch {
                session,
                resource: req.resource.clone(),
                held: waiter.mode,
            }));
        }
        waiter.queued_at = cx.position;
        cx.touched.resources.insert(req.resource.clone());
        Some(Response::Queued {
            session,
            secret,
            queued_at: cx.position,
            resource: req.resource.clone(),
            position,
        })
    }

    fn cancel_wait(&mut self, cx: &mut Apply, session: SessionId, resource: &str) -> Response {
        let Some(s) = self.sessions.get_mut(&session) else {
            return Response::Rejected(Rejection::SessionNotFound(session));
        };
        if let Some(lease) = self
            .resources
            .get_mut(resource)
            .and_then(|r| r.holders.get_mut(&session))
        {
            // The grant won the race with the timeout: the live call that
            // cancels takes it (as a repeat acquire would claim it).
            if lease.queued_at.take().is_some() {
                cx.touched.resources.insert(resource.to_string());
            }
            return Response::Acquired {
                session,
                secret: s.secret,
                grant: Grant {
                    resource: resource.to_string(),
                    lease: lease.clone(),
                },
                newly_granted: false,
            };
        }
        if !s.waiting.remove(resource) {
            return Response::WaitCancelled;
        }
        let private_and_empty = s.private && s.lease_count() == 0;
        cx.touched.sessions.insert(session);
        if let Some(res) = self.resources.get_mut(resource) {
            res.waiters.retain(|w| w.session != session);
        }
        self.settle(cx, resource);
        if private_and_empty {
            self.remove_session(cx, session, EventKind::Released);
        }
        Response::WaitCancelled
    }

    fn release(&mut self, cx: &mut Apply, session: SessionId, resource: &str) -> Response {
        let Some(s) = self.sessions.get_mut(&session) else {
            return Response::Rejected(Rejection::SessionNotFound(session));
        };
        let Some(lease) = self
            .resources
            .get_mut(resource)
            .and_then(|r| r.holders.remove(&session))
        else {
            return Response::Rejected(Rejection::NotHolder {
                session,
                resource: resource.to_string(),
            });
        };
        s.held.remove(resource);
        let private_and_empty = s.private && s.lease_count() == 0;
        self.forget_recall(session, resource);
        cx.touched.sessions.insert(session);
        cx.event(EventKind::Released, resource, &lease);
        self.settle(cx, resource);
        if private_and_empty {
            self.remove_session(cx, session, EventKind::Released);
        }
        Response::Released {
            grant: Grant {
                resource: resource.to_string(),
                lease,
            },
        }
    }

    fn recall(&mut self, cx: &mut Apply, resource: &str, reason: &str) -> Response {
        if let Err(r) = validate_resource(resource).and(validate_reason(reason)) {
            return Response::Rejected(r);
        }
        let Some(res) = self.resources.get_mut(resource) else {
            return Response::Recalled {
                holders: Vec::new(),
            };
        };
        let mut holders = Vec::new();
        for lease in res.holders.values_mut() {
            lease.recall = Some(Box::new(RecallNotice {
                index: cx.index,
                reason: reason.to_string(),
            }));
            holders.push(lease.session);
            self.recalled
                .entry(lease.session)
                .or_default()
                .insert(resource.to_string());
            cx.events.push(Event {
                revision: cx.index,
                kind: EventKind::Recalled,
                resource: resource.to_string(),
                session: lease.session,
                mode: lease.mode,
                token: lease.token,
            });
        }
        if !holders.is_empty() {
            cx.touched.resources.insert(resource.to_string());
        }
        Response::Recalled { holders }
    }
}
