//! `Acquire` (with its FIFO wait) and `Release`.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    Command, Grant, LogIndex, Response as CoreResponse, SessionId, SessionSecret,
};
use leasehold_proto::v1 as pb;
use leasehold_raft::store::AppliedEvents;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::convert::lease_to_proto;
use super::error::ApiError;
use super::request;
use super::service::LeaseApi;
use super::session::new_secret;
use super::withdraw::{AbandonedCall, Withdrawer};

/// How long a node shutting down tries to withdraw the waits of the calls
/// it ends (its Raft still runs meanwhile).
const SHUTDOWN_WITHDRAW_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait an acquire may ask for (10 minutes).
pub const WAIT_MS_MAX: u64 = 10 * 60 * 1000;

/// A wait the state machine queued: who waits, and the entry that queued it.
struct QueuedWait {
    /// The waiting session.
    session: SessionId,
    /// Its secret (echoed in the answer).
    secret: SessionSecret,
    /// Log index of the entry that queued the wait.
    queued_at: LogIndex,
}

impl LeaseApi {
    pub(super) async fn acquire_local(
        &self,
        req: pb::AcquireRequest,
    ) -> Result<pb::AcquireResponse, ApiError> {
        let received = Instant::now();
        let secret = new_secret();
        let acquire = self.state.read(|s| request::acquire(s, &req, secret))?;
        // A call that may wait holds a place under waiters_max from before
        // it proposes until it answers (taken even if the lease turns out
        // free: whether it must wait is known only once its entry applied).
        let _waiting = match acquire.wait {
            true => Some(self.quotas.waiters.take(None).map_err(|reached| {
                ApiError::limit("too many acquires waiting on this node", reached)
            })?),
            false => None,
        };
        let started = Instant::now();
        // Subscribe before proposing so a grant cannot slip past unseen.
        let mut events = self.state.subscribe();
        let proposed = self.propose(Command::Acquire(acquire)).await;
        // Granted, queued or refused: the entry answered (a queue wait is
        // not part of it).
        self.metrics.acquire_took(received.elapsed());
        let (_, resp) = proposed?;
        match resp {
            CoreResponse::Acquired {
                session,
                secret,
                grant,
                ..
            } => {
                self.metrics.granted();
                Ok(self.acquired(session, secret, &grant))
            }
            CoreResponse::Queued {
                session,
                secret,
                queued_at,
                ..
            } => {
                let deadline = started + Duration::from_millis(req.wait_timeout_ms);
                let wait = QueuedWait {
                    session,
                    secret,
                    queued_at,
                };
                self.wait_for_grant(wait, &req.resource, deadline, &mut events)
                    .await
            }
            other => Err(ApiError::refused(other)),
        }
    }

    fn acquired(
        &self,
        session: SessionId,
        secret: SessionSecret,
        grant: &Grant,
    ) -> pb::AcquireResponse {
        self.state.read(|s| pb::AcquireResponse {
            lease: Some(lease_to_proto(s, &self.lessor, grant)),
            session_id: session,
            ttl_ms: s.session(session).map(|x| x.ttl_ms).unwrap_or(0),
            session_secret: secret.as_bytes().to_vec().into(),
            drift_ppm: s.config().drift_ppm,
        })
    }

    /// The lease `session` holds on `resource`, if any.
    fn held(&self, session: SessionId, resource: &str) -> Option<Grant> {
        self.state.read(|s| {
            s.resource(resource)
                .and_then(|r| r.holders.get(&session))
                .map(|lease| Grant {
                    resource: resource.to_string(),
                    lease: lease.clone(),
                })
        })
    }

    /// Waits for a queued acquire to be granted, then cancels it on timeout.
    async fn wait_for_grant(
        &self,
        wait: QueuedWait,
        resource: &str,
        deadline: Instant,
        events: &mut broadcast::Receiver<Arc<AppliedEvents>>,
    ) -> Result<pb::AcquireResponse, ApiError> {
        let session = wait.session;
        // If the caller goes away mid-wait, withdraw the wait anyway, and
        // release the lease if the grant won that race: a lease its client
        // never learned of would block the resource for as long as the
        // session lives.
        let mut guard = AbandonOnDrop {
            withdrawer: Some(self.withdrawer.clone()),
            session,
            resource: resource.to_string(),
            queued_at: wait.queued_at,
        };
        loop {
            if let Some(grant) = self.held(session, resource) {
                guard.withdrawer = None;
                self.metrics.granted();
                return Ok(self.acquired(session, wait.secret, &grant));
            }
            if self.state.read(|s| s.session(session).is_none()) {
                guard.withdrawer = None;
                return Err(ApiError::SessionNotFound(session));
            }
            tokio::select! {
                got = next_relevant(events, session, resource) => match got {
                    Ok(()) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(self.shutting_down());
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.shutdown.clone().recv() => {
                    // The node is going away: end the call now rather than
                    // hold up the drain for the whole wait, and withdraw
                    // the wait first (Raft still runs), so the session is
                    // not granted a lease its client never learns of.
                    guard.withdrawer = None;
                    self.abandon_wait(&wait, resource).await;
                    return Err(self.shutting_down());
                }
            }
        }
        // Timed out: withdraw the wait. If the grant won the race, keep it:
        // this caller is still here to learn of it. The guard stays armed
        // until the withdrawal answers: if it fails, or this call is dropped
        // meanwhile, the wait is abandoned instead of left queued.
        let (_, resp) = self
            .propose(Command::CancelWait {
                session,
                resource: resource.to_string(),
            })
            .await?;
        guard.withdrawer = None;
        match resp {
            CoreResponse::Acquired { grant, .. } => {
                self.metrics.granted();
                Ok(self.acquired(session, wait.secret, &grant))
            }
            CoreResponse::WaitCancelled => Err(ApiError::WaitTimedOut {
                resource: resource.to_string(),
                waited_ms: deadline.elapsed().as_millis() as u64,
            }),
            other => Err(ApiError::refused(other)),
        }
    }

    /// Withdraws a queued wait this node will not answer (releasing its
    /// lease if the grant won the race), here or through the leader,
    /// within [`SHUTDOWN_WITHDRAW_TIMEOUT`].
    async fn abandon_wait(&self, wait: &QueuedWait, resource: &str) {
        let call = AbandonedCall {
            session: wait.session,
            resource: resource.to_string(),
            queued_at: wait.queued_at,
        };
        if let Err(error) = self
            .withdrawer
            .withdraw_within(&call, SHUTDOWN_WITHDRAW_TIMEOUT)
            .await
        {
            tracing::warn!(
                session = wait.session,
                resource,
                %error,
                "could not withdraw a wait at shutdown; it ends with its session"
            );
        }
    }

    pub(super) async fn release_local(
        &self,
        req: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, ApiError> {
        let command = self.state.read(|s| request::release(s, &req))?;
        let (_, resp) = self.propose(command).await?;
        match resp {
            CoreResponse::Released { grant } => {
                self.metrics.released();
                Ok(pb::ReleaseResponse {
                    fencing_token: grant.lease.token,
                })
            }
            other => Err(ApiError::refused(other)),
        }
    }
}

/// Whether an applied entry may have granted `session`'s wait on
/// `resource`, or ended the wait: it has an event on that resource (a grant
/// to this waiter is one), it ended the session, or a snapshot replaced
/// the state. Other entries leave the wait as it was.
fn concerns_wait(applied: &AppliedEvents, session: SessionId, resource: &str) -> bool {
    applied.snapshot_installed
        || applied.ended_sessions.contains(&session)
        || applied.events.iter().any(|e| e.resource == resource)
}

/// Returns once an applied entry concerns the wait (see [`concerns_wait`]),
/// or with the channel's error (lagged: messages were lost, so re-check).
async fn next_relevant(
    events: &mut broadcast::Receiver<Arc<AppliedEvents>>,
    session: SessionId,
    resource: &str,
) -> Result<(), broadcast::error::RecvError> {
    loop {
        let applied = events.recv().await?;
        if concerns_wait(&applied, session, resource) {
            return Ok(());
        }
    }
}

/// Withdraws a queued wait when dropped while armed (the waiting call was
/// abandoned by its caller), releasing the lease if it was granted to that
/// very wait in the meantime.
struct AbandonOnDrop {
    /// Set while the wait still needs withdrawing.
    withdrawer: Option<Withdrawer>,
    /// The waiting session.
    session: SessionId,
    /// The resource it waits for.
    resource: String,
    /// The entry that queued the wait (identifies it and its grant).
    queued_at: LogIndex,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(withdrawer) = self.withdrawer.take() {
            withdrawer.spawn(AbandonedCall {
                session: self.session,
                resource: std::mem::take(&mut self.resource),
                queued_at: self.queued_at,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use leasehold_core::{Event, EventKind, Mode};

    use super::*;

    fn applied(events: &[(&str, SessionId)], ended: &[SessionId]) -> AppliedEvents {
        AppliedEvents {
            index: 7,
            events: events
                .iter()
                .map(|(resource, session)| Event {
                    revision: 7,
                    kind: EventKind::Acquired,
                    resource: (*resource).to_string(),
                    session: *session,
                    mode: Mode::Exclusive,
                    token: 7,
                })
                .collect(),
            ended_sessions: ended.to_vec(),
            snapshot_installed: false,
        }
    }

    #[test]
    fn a_wait_wakes_only_for_entries_that_concern_it() {
        // Its resource changed, its session ended, or the state was replaced.
        assert!(concerns_wait(&applied(&[("r", 9)], &[]), 5, "r"));
        assert!(concerns_wait(&applied(&[], &[5]), 5, "r"));
        let mut snapshot = applied(&[], &[]);
        snapshot.snapshot_installed = true;
        assert!(concerns_wait(&snapshot, 5, "r"));
        // Anything else leaves it asleep.
        assert!(!concerns_wait(&applied(&[("other", 5)], &[6]), 5, "r"));
        assert!(!concerns_wait(
            &applied(&[("r2", 5), ("q", 9)], &[]),
            5,
            "r"
        ));
    }
}
