//! Sessions and leases as the holder sees them: the holder deadline, the
//! "lost or recalled" signal, release on close and (best effort) on drop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use leasehold_core::Mode;
use leasehold_proto::v1 as pb;
use tokio::sync::watch;

use crate::client::Client;
use crate::deadline::SharedClock;
use crate::error::ClientError;
use crate::types::{check_resource, mode_to_pb, AcquireOptions};

mod registry;
pub(crate) use registry::Registry;

/// Why a session or lease is no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// The holder deadline passed without a renewal: the service may
    /// already have expired the session (it cannot have granted the lease
    /// to anyone else yet: the holder deadline comes first).
    DeadlinePassed,
    /// The service said the session is gone (expired or closed elsewhere).
    SessionGone,
    /// This holder released the lease.
    Released,
    /// This holder closed the session (or dropped its last handle).
    Closed,
}

impl LostReason {
    /// A short description.
    pub fn as_str(&self) -> &'static str {
        match self {
            LostReason::DeadlinePassed => "holder deadline passed without renewal",
            LostReason::SessionGone => "the service says the session is gone",
            LostReason::Released => "released",
            LostReason::Closed => "session closed",
        }
    }
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a lease stands, as its holder knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Held, as long as [`Lease::is_valid`] says so.
    Held,
    /// Still held, but someone asked the holder to give it up
    /// (`Recall`): finish up, then release.
    Recalled {
        /// The reason given with the recall.
        reason: String,
    },
    /// No longer held: stop using the resource.
    Lost {
        /// Why.
        why: LostReason,
    },
}

impl LeaseStatus {
    /// Whether the lease is held (possibly recalled).
    pub fn is_held(&self) -> bool {
        !matches!(self, LeaseStatus::Lost { .. })
    }
}

/// Where a session stands, as its holder knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Alive until [`Session::deadline`], unless renewed.
    Alive,
    /// Gone, with all its leases.
    Lost {
        /// Why.
        why: LostReason,
    },
}

/// What the holder deadline rests on, and whether it was given up, under
/// one lock so that "renew" and "the deadline passed" cannot both win.
///
/// The deadline itself is not stored: it is computed from the renewal it
/// rests on with the client's drift bound in force at the moment it is
/// read, so a raised bound applies to every session at once
/// (docs/adr/0001-time-model.md §5a).
#[derive(Debug)]
struct Belief {
    /// Instant read before sending the request whose answer the deadline
    /// rests on (the latest-reaching grant or renewal).
    t_send: Instant,
    /// TTL that answer granted.
    ttl_ms: u64,
    /// Set once; a lost session never comes back.
    lost: Option<LostReason>,
}

/// Shared state of one session: the registry, the keepalive task, the
/// session's watchdog and every handle read it.
#[derive(Debug)]
pub(crate) struct SessionCore {
    /// The session id (the log index of the entry that opened it).
    pub(crate) id: u64,
    /// What every call naming the session presents.
    pub(crate) secret: leasehold_core::SessionSecret,
    /// The client name it was opened with.
    pub(crate) name: String,
    /// The TTL the service granted.
    pub(crate) ttl_ms: u64,
    /// A one-call lease's private session (lives and dies with the lease).
    pub(crate) private: bool,
    /// Drift and margin rules, shared by the client's sessions (the drift
    /// bound is raised to the cluster's when an answer reports a larger one).
    clock: Arc<SharedClock>,
    /// Deadline and loss.
    belief: Mutex<Belief>,
    /// Session status, for [`Session::lost`].
    status: watch::Sender<SessionStatus>,
    /// Status of each lease held, by resource.
    leases: Mutex<HashMap<String, watch::Sender<LeaseStatus>>>,
}

impl SessionCore {
    /// A session granted for `ttl_ms` by a reply to a request sent after
    /// `t_send`.
    pub(crate) fn new(
        handle: crate::SessionHandle,
        name: String,
        ttl_ms: u64,
        private: bool,
        clock: Arc<SharedClock>,
        t_send: Instant,
    ) -> Arc<Self> {
        let (status, _) = watch::channel(SessionStatus::Alive);
        Arc::new(SessionCore {
            id: handle.id,
            secret: handle.secret,
            name,
            ttl_ms,
            private,
            clock,
            belief: Mutex::new(Belief {
                t_send,
                ttl_ms,
                lost: None,
            }),
            status,
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// The id and secret.
    pub(crate) fn handle(&self) -> crate::SessionHandle {
        crate::SessionHandle::new(self.id, self.secret)
    }

    fn belief(&self) -> MutexGuard<'_, Belief> {
        self.belief.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<LeaseStatus>>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The holder deadline: `t_send + validity(ttl_ms)` of the renewal it
    /// rests on, with the drift bound in force now.
    pub(crate) fn deadline(&self) -> Instant {
        let b = self.belief();
        self.deadline_of(&b)
    }

    /// The deadline `b` supports with the drift bound in force now.
    fn deadline_of(&self, b: &Belief) -> Instant {
        self.clock.current().deadline(b.t_send, b.ttl_ms)
    }

    /// Why the session is lost, if it is.
    pub(crate) fn lost(&self) -> Option<LostReason> {
        self.belief().lost
    }

    /// Whether the holder may believe the session now.
    pub(crate) fn is_valid_at(&self, now: Instant) -> bool {
        let b = self.belief();
        b.lost.is_none() && now < self.deadline_of(&b)
    }

    /// A reply "alive for `ttl_ms`" to a request sent after `t_send`.
    /// Extends the deadline unless the session is already lost or its
    /// deadline already passed (then it is lost now: a holder never
    /// believes again after it stopped believing). Returns whether the
    /// session is still alive.
    pub(crate) fn renewed(&self, t_send: Instant, ttl_ms: u64) -> bool {
        let now = Instant::now();
        {
            let mut b = self.belief();
            if b.lost.is_some() {
                return false;
            }
            // Both deadlines with the same rules (read once, after any
            // raise the answer carried was adopted).
            let clock = self.clock.current();
            let current = clock.deadline(b.t_send, b.ttl_ms);
            if now < current {
                // Never moves the deadline back: a reply to an older
                // request, or a duplicate, changes nothing.
                if clock.deadline(t_send, ttl_ms) > current {
                    b.t_send = t_send;
                    b.ttl_ms = ttl_ms;
                }
                return true;
            }
        }
        self.lose(LostReason::DeadlinePassed);
        false
    }

    /// Gives up the session if its deadline passed; returns whether it is
    /// lost (for whatever reason).
    pub(crate) fn check_deadline(&self, now: Instant) -> bool {
        let expired = {
            let b = self.belief();
            if b.lost.is_some() {
                return true;
            }
            now >= self.deadline_of(&b)
        };
        if expired {
            self.lose(LostReason::DeadlinePassed);
        }
        expired
    }

    /// Marks the session and every lease it holds lost (first reason wins).
    pub(crate) fn lose(&self, why: LostReason) {
        let first = {
            let mut b = self.belief();
            if b.lost.is_some() {
                false
            } else {
                b.lost = Some(why);
                true
            }
        };
        if !first {
            return;
        }
        tracing::info!(session = self.id, %why, "session lost");
        self.status.send_replace(SessionStatus::Lost { why });
        for (_, tx) in self.leases().drain() {
            tx.send_if_modified(|s| set_lost(s, why));
        }
    }

    /// A recall notice for `resource` arrived.
    pub(crate) fn recall(&self, resource: &str, reason: String) {
        if let Some(tx) = self.leases().get(resource) {
            tx.send_if_modified(|s| match s {
                LeaseStatus::Held => {
                    tracing::info!(session = self.id, resource, %reason, "lease recalled");
                    *s = LeaseStatus::Recalled { reason };
                    true
                }
                _ => false,
            });
        }
    }

    /// The lease on `resource` was granted: its status channel (shared with
    /// earlier handles of the same lease). Lost at once if the session is.
    pub(crate) fn lease_granted(&self, resource: &str) -> watch::Receiver<LeaseStatus> {
        if let Some(why) = self.lost() {
            return watch::channel(LeaseStatus::Lost { why }).1;
        }
        let mut leases = self.leases();
        let rx = leases
            .entry(resource.to_string())
            .or_insert_with(|| watch::channel(LeaseStatus::Held).0)
            .subscribe();
        drop(leases);
        // The session may have been lost between the check and the insert.
        if let Some(why) = self.lost() {
            self.lease_ended(resource, why);
        }
        rx
    }

    /// The lease on `resource` ended (released, or refused as not held).
    pub(crate) fn lease_ended(&self, resource: &str, why: LostReason) {
        if let Some(tx) = self.leases().remove(resource) {
            tx.send_if_modified(|s| set_lost(s, why));
        }
    }

    /// A receiver of the session status.
    pub(crate) fn subscribe(&self) -> watch::Receiver<SessionStatus> {
        self.status.subscribe()
    }
}

/// Sets `s` to lost unless it already is; whether it changed.
fn set_lost(s: &mut LeaseStatus, why: LostReason) -> bool {
    if matches!(s, LeaseStatus::Lost { .. }) {
        false
    } else {
        *s = LeaseStatus::Lost { why };
        true
    }
}

/// Fires the session's loss at its holder deadline (re-armed whenever the
/// deadline moved: later by a renewal, earlier by a raised drift bound), so
/// that "lost" is signalled by a local timer before the service could grant
/// the lease to anyone else. Ends when the session is lost.
pub(crate) async fn watchdog(core: Arc<SessionCore>) {
    let mut status = core.subscribe();
    let mut raised = core.clock.subscribe();
    loop {
        // Mark the bound seen *before* reading the deadline: a raise after
        // this wakes the select below.
        raised.borrow_and_update();
        let deadline = core.deadline();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                if core.check_deadline(Instant::now()) {
                    return;
                }
            }
            changed = status.changed() => {
                if changed.is_err() || matches!(*status.borrow(), SessionStatus::Lost { .. }) {
                    return;
                }
            }
            // The drift bound was raised: the deadline moved earlier.
            Ok(()) = raised.changed() => {}
        }
    }
}

/// What the handles of one session share: closing on the last drop.
#[derive(Debug)]
pub(crate) struct SessionOwner {
    /// The session.
    pub(crate) core: Arc<SessionCore>,
    /// The client it was opened by (keeps the keepalive task running).
    pub(crate) client: Client,
    /// Neither close nor release on drop (detached, or already closed).
    detached: AtomicBool,
}

impl SessionOwner {
    /// Owner of a session just opened, registered for keepalive.
    pub(crate) fn start(core: Arc<SessionCore>, client: Client) -> Arc<Self> {
        client.registry().add(Arc::clone(&core));
        Arc::new(SessionOwner {
            core,
            client,
            detached: AtomicBool::new(false),
        })
    }

    /// Stops renewing and marks the session ended for `why`.
    fn end(&self, why: LostReason) {
        self.detached.store(true, Ordering::SeqCst);
        self.client.registry().remove(self.core.id);
        self.core.lose(why);
    }

    /// Closes the session on the service.
    async fn close(&self) -> Result<Vec<String>, ClientError> {
        let r = self.client.close_session(&self.core.handle()).await;
        match &r {
            Err(ClientError::NotFound(_)) => self.end(LostReason::SessionGone),
            _ => self.end(LostReason::Closed),
        }
        r
    }

    /// Releases `resource` on the service and ends that lease locally.
    async fn release(&self, resource: &str) -> Result<u64, ClientError> {
        let r = self.client.release(&self.core.handle(), resource).await;
        match &r {
            Ok(_) | Err(ClientError::Conflict(_)) => {
                self.core.lease_ended(resource, LostReason::Released)
            }
            Err(ClientError::NotFound(_)) => self.end(LostReason::SessionGone),
            Err(_) => {}
        }
        if self.core.private && r.is_ok() {
            // A private session dies with its lease.
            self.end(LostReason::Released);
        }
        r
    }
}

impl Drop for SessionOwner {
    fn drop(&mut self) {
        if self.detached.load(Ordering::SeqCst) {
            return;
        }
        let alive = self.core.lost().is_none();
        self.client.registry().remove(self.core.id);
        self.core.lose(LostReason::Closed);
        if !alive {
            return;
        }
        // Best effort: only if a runtime is still there to run it.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let session = self.core.handle();
            let id = session.id;
            handle.spawn(async move {
                if let Err(e) = client.close_session(&session).await {
                    tracing::debug!(session = id, error = %e, "close on drop failed");
                }
            });
        }
    }
}

/// An open session: the holder's heartbeat. All its leases die with it.
///
/// The client's keepalive task renews it every TTL/3; [`Session::deadline`]
/// is how long the holder may believe it without another renewal, and
/// [`Session::lost`] resolves when that deadline passes unrenewed or the
/// service says the session is gone.
///
/// Dropping the last handle of a session (the `Session` and every [`Lease`]
/// acquired through it) closes it, best effort; [`Session::close`] does so
/// and reports the outcome.
///
/// ```
/// # use std::time::Duration;
/// # use leasehold_client::{AcquireOptions, Client, LeaseStatus};
/// # #[tokio::main]
/// # async fn main() -> anyhow::Result<()> {
/// # let cluster = leasehold_tests::TestCluster::start(Default::default()).await?;
/// # let client = Client::connect(cluster.api_endpoints()).await?;
/// let session = client.open_session("worker-1", Duration::from_secs(10)).await?;
/// let lease = session.acquire("jobs/nightly", AcquireOptions::exclusive()).await?;
/// assert!(lease.is_valid());
/// // Someone asks the holder to give the lease up:
/// client.recall("jobs/nightly", "deploy").await?;
/// let status = lease.lost().await;
/// assert_eq!(status, LeaseStatus::Recalled { reason: "deploy".into() });
/// session.release("jobs/nightly").await?;
/// session.close().await?;
/// # cluster.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    /// Shared with the session's leases.
    owner: Arc<SessionOwner>,
}

impl Session {
    /// Wraps a started owner.
    pub(crate) fn from_owner(owner: Arc<SessionOwner>) -> Self {
        Session { owner }
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.owner.core.id
    }

    /// The session's id and owner secret, printable as one string: whoever
    /// has it can release or close this session (treat it as a password).
    pub fn handle(&self) -> crate::SessionHandle {
        self.owner.core.handle()
    }

    /// The client name it was opened with (empty for a session adopted
    /// with [`Client::adopt_session`]).
    pub fn name(&self) -> &str {
        &self.owner.core.name
    }

    /// The TTL the service granted.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.owner.core.ttl_ms)
    }

    /// The holder deadline: until when this holder may believe the session
    /// (and its leases) without another renewal. Computed with the client's
    /// drift bound in force now: a raise reported by the cluster moves it
    /// earlier at once.
    pub fn deadline(&self) -> Instant {
        self.owner.core.deadline()
    }

    /// Whether the session is alive by the holder's clock now.
    pub fn is_alive(&self) -> bool {
        self.owner.core.is_valid_at(Instant::now())
    }

    /// The session's status.
    pub fn status(&self) -> SessionStatus {
        match self.owner.core.lost() {
            None => SessionStatus::Alive,
            Some(why) => SessionStatus::Lost { why },
        }
    }

    /// A receiver of the session's status changes.
    pub fn subscribe(&self) -> watch::Receiver<SessionStatus> {
        self.owner.core.subscribe()
    }

    /// Resolves when the session is lost: its holder deadline passed
    /// without renewal (a local timer), the service said it is gone, or it
    /// was closed.
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.owner.core.subscribe();
        loop {
            if let Some(why) = self.owner.core.lost() {
                return why;
            }
            if rx.changed().await.is_err() {
                return self.owner.core.lost().unwrap_or(LostReason::Closed);
            }
        }
    }

    /// Acquires `resource` in this session. With `options.wait`, queues for
    /// at most that long; otherwise a conflicting holder gives
    /// [`ClientError::Conflict`] naming it. Acquiring a lease the session
    /// already holds (same mode) answers that lease again.
    pub async fn acquire(
        &self,
        resource: &str,
        options: AcquireOptions,
    ) -> Result<Lease, ClientError> {
        check_resource(resource)?;
        options.validate()?;
        let core = &self.owner.core;
        if let Some(why) = core.lost() {
            return Err(ClientError::NotFound(format!(
                "session {} is lost ({why})",
                core.id
            )));
        }
        let request = pb::AcquireRequest {
            session_id: core.id,
            resource: resource.to_string(),
            mode: mode_to_pb(options.mode),
            wait_timeout_ms: options.wait_timeout_ms(),
            metadata: options.metadata.clone().into(),
            ttl_ms: 0,
            client_name: String::new(),
            session_secret: core.secret.as_bytes().to_vec().into(),
            request_id: 0,
        };
        let (t_send, reply) = match self
            .owner
            .client
            .acquire_raw(request, options.wait.unwrap_or_default())
            .await
        {
            Ok(r) => r,
            Err(e @ ClientError::NotFound(_)) => {
                self.owner.end(LostReason::SessionGone);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let lease = reply
            .lease
            .ok_or_else(|| ClientError::Protocol("acquire reply without a lease".into()))?;
        // An acquire on an existing session renews nothing on the service
        // (only keepalives do), so it must not move the holder's deadline:
        // the lease shares the session's deadline from its last renewal.
        let _ = t_send;
        Ok(Lease::new(Arc::clone(&self.owner), lease))
    }

    /// Releases this session's lease on `resource`; returns its fencing
    /// token. Handles of that lease then report
    /// [`LostReason::Released`].
    pub async fn release(&self, resource: &str) -> Result<u64, ClientError> {
        check_resource(resource)?;
        self.owner.release(resource).await
    }

    /// Closes the session: releases every lease it holds, drops its waits
    /// and stops renewing it. Returns the resources released.
    pub async fn close(self) -> Result<Vec<String>, ClientError> {
        self.owner.close().await
    }

    /// Stops renewing the session without closing it: it (and its leases)
    /// expire on the service after the TTL. Leases acquired through it are
    /// not released on drop once they are [`Lease::detach`]ed.
    pub fn detach(self) {
        self.owner.detached.store(true, Ordering::SeqCst);
        self.owner.client.registry().remove(self.owner.core.id);
    }
}

/// A lease held by a session: resource, mode and fencing token.
///
/// Use the resource only while [`Lease::is_valid`] is true, and pass
/// [`Lease::fencing_token`] to whatever the lease protects so that it can
/// reject a stale holder. [`Lease::lost`] resolves when the lease is
/// recalled or lost.
///
/// Dropping a lease releases it (best effort, in the background);
/// [`Lease::release`] does so and reports the outcome.
#[derive(Debug)]
pub struct Lease {
    /// The session (kept open while the lease exists).
    owner: Arc<SessionOwner>,
    /// The resource.
    resource: String,
    /// Exclusive or shared.
    mode: Mode,
    /// The fencing token (log index of the granting entry).
    fencing_token: u64,
    /// The metadata stored with it.
    metadata: Vec<u8>,
    /// Its status.
    status: watch::Receiver<LeaseStatus>,
    /// Released or detached: nothing to do on drop.
    done: bool,
}

impl Lease {
    /// A handle of the lease `granted` in the owner's session.
    pub(crate) fn new(owner: Arc<SessionOwner>, granted: pb::Lease) -> Self {
        let status = owner.core.lease_granted(&granted.resource);
        Lease {
            owner,
            resource: granted.resource,
            mode: crate::types::mode_from_pb(granted.mode),
            fencing_token: granted.fencing_token,
            metadata: granted.metadata.to_vec(),
            status,
            done: false,
        }
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Exclusive or shared.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The fencing token: strictly greater than that of every earlier grant
    /// of the resource. Send it with every use of the protected resource.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The metadata stored with the lease.
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    /// The holding session's id.
    pub fn session_id(&self) -> u64 {
        self.owner.core.id
    }

    /// The TTL of the holding session.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.owner.core.ttl_ms)
    }

    /// The holder deadline of the lease's session (with the client's drift
    /// bound in force now: a raise reported by the cluster moves it earlier
    /// at once).
    pub fn deadline(&self) -> Instant {
        self.owner.core.deadline()
    }

    /// Whether the holder may use the resource now: not lost, and the
    /// holder deadline not passed. A recalled lease is still valid (give it
    /// up soon).
    pub fn is_valid(&self) -> bool {
        self.status.borrow().is_held() && self.owner.core.is_valid_at(Instant::now())
    }

    /// Whether the holder may *begin* a new use of the resource now: held,
    /// not recalled, and the holder deadline not passed. A recalled lease
    /// stays [valid](Lease::is_valid) so that work in flight can finish,
    /// but takes no new work (a GFS primary stops accepting writes).
    pub fn is_usable(&self) -> bool {
        *self.status.borrow() == LeaseStatus::Held && self.owner.core.is_valid_at(Instant::now())
    }

    /// The lease's status.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// A receiver of the lease's status changes.
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Resolves when the lease is recalled ([`LeaseStatus::Recalled`]) or
    /// lost ([`LeaseStatus::Lost`]): the holder deadline passed without
    /// renewal (a local timer, so this fires before the service could grant
    /// the lease to anyone else), the service said the session is gone, or
    /// the lease was released. Resolves at once if that already happened.
    pub async fn lost(&self) -> LeaseStatus {
        let mut rx = self.status.clone();
        loop {
            let s = rx.borrow_and_update().clone();
            if s != LeaseStatus::Held {
                return s;
            }
            if rx.changed().await.is_err() {
                let s = rx.borrow().clone();
                return match s {
                    LeaseStatus::Held => LeaseStatus::Lost {
                        why: self.owner.core.lost().unwrap_or(LostReason::Released),
                    },
                    other => other,
                };
            }
        }
    }

    /// Resolves only when the lease is lost (not merely recalled).
    pub async fn gone(&self) -> LostReason {
        let mut rx = self.status.clone();
        loop {
            if let LeaseStatus::Lost { why } = &*rx.borrow_and_update() {
                return *why;
            }
            if rx.changed().await.is_err() {
                if let LeaseStatus::Lost { why } = &*rx.borrow() {
                    return *why;
                }
                return self.owner.core.lost().unwrap_or(LostReason::Released);
            }
        }
    }

    /// Releases the lease; returns its fencing token. A one-call lease's
    /// private session ends with it.
    pub async fn release(mut self) -> Result<u64, ClientError> {
        self.done = true;
        self.owner.release(&self.resource).await
    }

    /// Forgets the lease without releasing it: it lives as long as its
    /// session (for a one-call lease, until its TTL passes unrenewed).
    pub fn detach(mut self) {
        self.done = true;
        if self.owner.core.private {
            self.owner.detached.store(true, Ordering::SeqCst);
            self.owner.client.registry().remove(self.owner.core.id);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.done || !self.status.borrow().is_held() {
            return;
        }
        if self.owner.core.private {
            // The session owner's drop closes the private session, which
            // releases the lease.
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let owner = Arc::clone(&self.owner);
            let resource = self.resource.clone();
            handle.spawn(async move {
                if let Err(e) = owner.release(&resource).await {
                    tracing::debug!(session = owner.core.id, resource, error = %e,
                        "release on drop failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::HolderClock;

    fn exact_clock() -> Arc<SharedClock> {
        Arc::new(SharedClock::new(HolderClock::new(0, Duration::ZERO)))
    }

    fn core(ttl_ms: u64) -> Arc<SessionCore> {
        SessionCore::new(
            crate::SessionHandle::new(7, leasehold_core::SessionSecret([0; 16])),
            "t".into(),
            ttl_ms,
            false,
            exact_clock(),
            Instant::now(),
        )
    }

    #[test]
    fn renewal_extends_and_loss_is_final() {
        let c = core(1_000);
        let d0 = c.deadline();
        let later = Instant::now() + Duration::from_millis(10);
        assert!(c.renewed(later, 1_000));
        assert!(c.deadline() >= d0);
        let rx = c.lease_granted("r");
        assert_eq!(*rx.borrow(), LeaseStatus::Held);
        c.recall("r", "maintenance".into());
        assert_eq!(
            *rx.borrow(),
            LeaseStatus::Recalled {
                reason: "maintenance".into()
            }
        );
        c.lose(LostReason::SessionGone);
        assert_eq!(
            *rx.borrow(),
            LeaseStatus::Lost {
                why: LostReason::SessionGone
            }
        );
        // No renewal resurrects it; the first reason stays.
        assert!(!c.renewed(Instant::now(), 10_000));
        c.lose(LostReason::Closed);
        assert_eq!(c.lost(), Some(LostReason::SessionGone));
        // A lease granted after the loss is lost at once.
        let rx = c.lease_granted("s");
        assert!(!rx.borrow().is_held());
    }

    #[test]
    fn a_renewal_after_the_deadline_does_not_extend() {
        let c = SessionCore::new(
            crate::SessionHandle::new(1, leasehold_core::SessionSecret([0; 16])),
            "t".into(),
            10,
            false,
            exact_clock(),
            Instant::now() - Duration::from_millis(100),
        );
        assert!(!c.renewed(Instant::now(), 10_000));
        assert_eq!(c.lost(), Some(LostReason::DeadlinePassed));
    }

    #[tokio::test]
    async fn watchdog_fires_at_the_deadline() {
        let c = core(50);
        let rx = c.lease_granted("r");
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), watchdog(Arc::clone(&c)))
            .await
            .expect("watchdog ends");
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(c.lost(), Some(LostReason::DeadlinePassed));
        assert_eq!(
            *rx.borrow(),
            LeaseStatus::Lost {
                why: LostReason::DeadlinePassed
            }
        );
    }

    #[tokio::test]
    async fn watchdog_rearms_when_renewed() {
        let c = core(100);
        let dog = tokio::spawn(watchdog(Arc::clone(&c)));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(c.renewed(Instant::now(), 100));
        tokio::time::sleep(Duration::from_millis(60)).await;
        // 120 ms after the open, past the first deadline, still alive.
        assert_eq!(c.lost(), None);
        tokio::time::timeout(Duration::from_secs(5), dog)
            .await
            .expect("watchdog ends")
            .expect("no panic");
        assert_eq!(c.lost(), Some(LostReason::DeadlinePassed));
    }

    #[tokio::test]
    async fn registry_renews_at_a_third_of_the_shortest_ttl() {
        let r = Registry::default();
        assert_eq!(r.renew_interval(), None);
        r.add(core(9_000));
        r.add(SessionCore::new(
            crate::SessionHandle::new(3, leasehold_core::SessionSecret([0; 16])),
            "u".into(),
            3_000,
            false,
            Arc::new(SharedClock::new(HolderClock::default())),
            Instant::now(),
        ));
        assert_eq!(r.renew_interval(), Some(Duration::from_millis(1_000)));
        assert_eq!(r.ids(), [3, 7]);
        r.remove(3);
        assert_eq!(r.renew_interval(), Some(Duration::from_millis(3_000)));
        // Removing twice, or an unknown id, counts nothing twice.
        r.remove(3);
        r.remove(99);
        assert_eq!(r.renew_interval(), Some(Duration::from_millis(3_000)));
        r.remove(7);
        assert_eq!(r.renew_interval(), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_raised_drift_bound_recomputes_deadlines_from_their_send_instant() {
        let clock = Arc::new(SharedClock::new(HolderClock::new(
            10_000,
            Duration::from_millis(5),
        )));
        let t_send = Instant::now();
        let c = SessionCore::new(
            crate::SessionHandle::new(1, leasehold_core::SessionSecret([0; 16])),
            "t".into(),
            10_000,
            false,
            Arc::clone(&clock),
            t_send,
        );
        let other = SessionCore::new(
            crate::SessionHandle::new(2, leasehold_core::SessionSecret([0; 16])),
            "u".into(),
            20_000,
            false,
            Arc::clone(&clock),
            t_send,
        );
        // 10 s × 0.99 / 1.01 − 5 ms.
        assert_eq!(c.deadline(), t_send + Duration::from_millis(9_796));
        assert!(!clock.observe(10_000));
        assert_eq!(c.deadline(), t_send + Duration::from_millis(9_796));

        // The cluster reports 10%: every session's deadline is recomputed
        // from the same t_send, 10 s × 0.9 / 1.1 − 5 ms, at once.
        assert!(clock.observe(100_000));
        assert_eq!(c.deadline(), t_send + Duration::from_millis(8_176));
        assert_eq!(other.deadline(), t_send + Duration::from_millis(16_358));
        assert!(c.is_valid_at(t_send + Duration::from_millis(8_175)));
        assert!(!c.is_valid_at(t_send + Duration::from_millis(8_176)));

        // Renewals count with the raised bound too; an older one moves
        // nothing back.
        let t1 = t_send + Duration::from_millis(1_000);
        assert!(c.renewed(t1, 10_000));
        assert_eq!(c.deadline(), t1 + Duration::from_millis(8_176));
        assert!(c.renewed(t_send, 10_000));
        assert_eq!(c.deadline(), t1 + Duration::from_millis(8_176));

        // A raise that puts the deadline in the past: the next renewal
        // finds it passed and the session is lost.
        let old = SessionCore::new(
            crate::SessionHandle::new(3, leasehold_core::SessionSecret([0; 16])),
            "v".into(),
            1_000,
            false,
            Arc::new(SharedClock::new(HolderClock::new(0, Duration::ZERO))),
            Instant::now() - Duration::from_millis(950),
        );
        old.clock.observe(100_000);
        assert!(!old.renewed(Instant::now(), 1_000));
        assert_eq!(old.lost(), Some(LostReason::DeadlinePassed));
    }

    #[tokio::test]
    async fn the_watchdog_fires_when_a_raise_moves_the_deadline_into_the_past() {
        let clock = exact_clock();
        // Believed for another second with ρ = 0; with ρ = 10% the
        // deadline (8.18 s after t_send) is already past.
        let t_send = Instant::now() - Duration::from_millis(9_000);
        let c = SessionCore::new(
            crate::SessionHandle::new(1, leasehold_core::SessionSecret([0; 16])),
            "t".into(),
            10_000,
            false,
            Arc::clone(&clock),
            t_send,
        );
        let old_deadline = c.deadline();
        let rx = c.lease_granted("r");
        let dog = tokio::spawn(watchdog(Arc::clone(&c)));
        // Let the watchdog arm at the old deadline.
        tokio::task::yield_now().await;
        assert_eq!(c.lost(), None);
        assert!(clock.observe(100_000));
        tokio::time::timeout(Duration::from_secs(5), dog)
            .await
            .expect("watchdog ends")
            .expect("no panic");
        assert!(
            Instant::now() < old_deadline,
            "fired at the raised deadline, not the old one"
        );
        assert_eq!(
            *rx.borrow(),
            LeaseStatus::Lost {
                why: LostReason::DeadlinePassed
            }
        );
    }
}
