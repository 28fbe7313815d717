//! The `KeepAlive` stream: renewals answered by the leader's rules, with
//! recall notices.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use leasehold_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::error::ApiError;
use super::request;
use super::service::{BoxStream, LeaseApi};
use crate::lessor::{KeepAlive, Serving};
use crate::limits::KEEPALIVE_BUFFER_MESSAGES;
use crate::metrics::IdleLabel;

/// Most sessions one keepalive message may renew.
pub const KEEPALIVE_SESSIONS_MAX: usize = 10_000;

/// Starts answering a keepalive stream (leader only).
pub(super) fn serve(
    api: Arc<LeaseApi>,
    client: Option<IpAddr>,
    mut inbound: Streaming<pb::KeepAliveRequest>,
) -> Result<BoxStream<pb::KeepAliveResponse>, ApiError> {
    match api.lessor.serving() {
        Serving::Serving | Serving::FailoverGrace { .. } => {}
        Serving::WaitingForQuorum => {
            return Err(ApiError::unavailable("leader lease not valid; retry"))
        }
        Serving::Follower => {
            return Err(ApiError::Unavailable {
                reason: "keepalives are served by the leader only".into(),
                leader_api_addr: api.forwarder.leader_api_addr(),
            })
        }
        Serving::ShuttingDown | Serving::StorageFailed => return Err(api.shutting_down()),
    }
    let slot = api.quotas.keepalive.take(client).map_err(|reached| {
        ApiError::limit(
            match client {
                Some(ip) => format!("too many KeepAlive streams open (this one from {ip})"),
                None => "too many KeepAlive streams open".to_string(),
            },
            reached,
        )
    })?;
    let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER_MESSAGES);
    let stop = api.shutdown.clone();
    let failed = api.lessor.failed_signal();
    tokio::spawn(async move {
        // Counted as open until this task ends.
        let _slot = slot;
        let stop = stop.recv();
        tokio::pin!(stop);
        let failed = failed.recv();
        tokio::pin!(failed);
        loop {
            // A stream silent for longer than the longest TTL renews
            // nothing: every session it could keep alive has expired.
            let idle_ms = api.state.read(|s| s.config().ttl_ms_max);
            let msg = tokio::select! {
                _ = &mut stop => {
                    let _ = tx.send(Err(Status::from(api.shutting_down()))).await;
                    return;
                }
                _ = &mut failed => {
                    let _ = tx.send(Err(Status::from(api.shutting_down()))).await;
                    return;
                }
                m = tokio::time::timeout(Duration::from_millis(idle_ms), inbound.message()) => m,
            };
            let msg = match msg {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => return,
                Ok(Err(status)) => {
                    // Undecodable or oversize messages get our codes; a
                    // broken connection has nobody left to answer.
                    if let Some(e) = super::error::transport_status(&status) {
                        let _ = tx.try_send(Err(Status::from(e)));
                    }
                    return;
                }
                Err(_) => {
                    api.metrics.idle_closed(IdleLabel::keepalive_stream);
                    let _ = tx.try_send(Err(Status::from(ApiError::Idle(format!(
                        "keepalive stream idle for longer than the longest session TTL \
                         (ttl_ms_max = {idle_ms} ms): every session it could renew has \
                         expired; open a new stream when needed"
                    )))));
                    return;
                }
            };
            let received = tokio::time::Instant::now();
            let reply = api.keepalive_reply(&msg).map_err(Status::from);
            api.metrics.keepalive_took(received.elapsed());
            let end = reply.is_err();
            if tx.send(reply).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

impl LeaseApi {
    /// Answers one keepalive message: every session renewed (or reported
    /// not alive), or an error that ends the stream and renews nothing.
    fn keepalive_reply(
        &self,
        msg: &pb::KeepAliveRequest,
    ) -> Result<pb::KeepAliveResponse, ApiError> {
        let ids = &msg.session_ids;
        let named = request::keepalive(msg)?;
        let renewed = match self.lessor.renew(&named) {
            KeepAlive::Renewed(r) => r,
            KeepAlive::Denied(id) => return Err(ApiError::PermissionDenied(id)),
            KeepAlive::ShuttingDown => return Err(self.shutting_down()),
            KeepAlive::NotServing => {
                return Err(ApiError::Unavailable {
                    reason: "this node no longer holds a valid leader lease".into(),
                    leader_api_addr: self.forwarder.leader_api_addr(),
                })
            }
        };
        let (sessions, drift_ppm) = self.state.read(|s| {
            let sessions = ids
                .iter()
                .zip(renewed)
                .map(|(id, ttl)| {
                    let notices = match ttl {
                        Some(_) => s
                            .recalled_leases(*id)
                            .filter_map(|(name, lease)| {
                                let recall = lease.recall.as_ref()?;
                                Some(pb::Notice {
                                    resource: name.clone(),
                                    fencing_token: lease.token,
                                    reason: recall.reason.clone(),
                                    revision: recall.index,
                                })
                            })
                            .collect(),
                        None => Vec::new(),
                    };
                    pb::SessionStatus {
                        session_id: *id,
                        alive: ttl.is_some(),
                        ttl_ms: ttl.unwrap_or(0),
                        notices,
                    }
                })
                .collect();
            (sessions, s.config().drift_ppm)
        });
        Ok(pb::KeepAliveResponse {
            sessions,
            drift_ppm,
        })
    }
}
