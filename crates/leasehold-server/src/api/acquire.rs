//! `Acquire` (with its FIFO wait) and `Release`.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::machine::{validate_client_name, validate_metadata, validate_resource};
use leasehold_core::{
    Acquire, Command, Grant, LogIndex, Response as CoreResponse, SessionId, SessionSecret,
    SessionTarget,
};
use leasehold_proto::v1 as pb;
use leasehold_raft::store::AppliedEvents;
use leasehold_raft::Raft;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::convert::lease_to_proto;
use super::error::{mode_from_proto, ApiError};
use super::service::LeaseApi;
use super::session::new_secret;

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
        validate_resource(&req.resource)?;
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
            self.state.read(|s| s.config().check_ttl(req.ttl_ms))?;
            SessionTarget::Private {
                client_name: req.client_name.clone(),
                ttl_ms: req.ttl_ms,
                secret: new_secret(),
                request_id: req.request_id,
            }
        } else {
            SessionTarget::Existing(self.owned_session(req.session_id, &req.session_secret)?)
        };
        let wait = req.wait_timeout_ms > 0;
        let started = Instant::now();
        // Subscribe before proposing so a grant cannot slip past unseen.
        let mut events = self.state.subscribe();
        let proposed = self
            .propose(Command::Acquire(Acquire {
                session,
                resource: req.resource.clone(),
                mode,
                wait,
                metadata: req.metadata.to_vec(),
            }))
            .await;
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
            raft: Some(self.raft.clone()),
            session,
            resource: resource.to_string(),
            queued_at: wait.queued_at,
        };
        loop {
            if let Some(grant) = self.held(session, resource) {
                guard.raft = None;
                self.metrics.granted();
                return Ok(self.acquired(session, wait.secret, &grant));
            }
            if self.state.read(|s| s.session(session).is_none()) {
                guard.raft = None;
                return Err(ApiError::SessionNotFound(session));
            }
            tokio::select! {
                got = events.recv() => match got {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(self.shutting_down());
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.shutdown.clone().recv() => {
                    // The node is going away: end the call now rather than
                    // hold up the drain for the whole wait, and withdraw
                    // the wait first (Raft still runs), so the session is
                    // not granted a lease its client never learns of.
                    guard.raft = None;
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
        guard.raft = None;
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
    /// lease if the grant won the race), within the commit timeout.
    async fn abandon_wait(&self, wait: &QueuedWait, resource: &str) {
        let command = Command::AbandonWait {
            session: wait.session,
            resource: resource.to_string(),
            queued_at: wait.queued_at,
        };
        if let Err(error) = self.propose(command).await {
            tracing::warn!(
                session = wait.session,
                resource,
                %error,
                "could not withdraw a wait at shutdown"
            );
        }
    }

    pub(super) async fn release_local(
        &self,
        req: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse, ApiError> {
        validate_resource(&req.resource)?;
        let session = self.owned_session(req.session_id, &req.session_secret)?;
        let (_, resp) = self
            .propose(Command::Release {
                session,
                resource: req.resource,
            })
            .await?;
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

/// Withdraws a queued wait when dropped while armed (the waiting call was
/// abandoned by its caller), releasing the lease if it was granted to that
/// very wait in the meantime.
struct AbandonOnDrop {
    /// Set while the wait still needs withdrawing.
    raft: Option<Raft>,
    /// The waiting session.
    session: SessionId,
    /// The resource it waits for.
    resource: String,
    /// The entry that queued the wait (identifies it and its grant).
    queued_at: LogIndex,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(raft) = self.raft.take() {
            let command = Command::AbandonWait {
                session: self.session,
                resource: std::mem::take(&mut self.resource),
                queued_at: self.queued_at,
            };
            tokio::spawn(async move {
                if let Err(error) = raft.client_write(command).await {
                    tracing::warn!(%error, "could not withdraw an abandoned wait");
                }
            });
        }
    }
}
