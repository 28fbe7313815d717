//! The `Watch` stream: replay from this node's history, then live events.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use leasehold_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;

use super::convert::event_to_proto;
use super::error::ApiError;
use super::forward::SHUTTING_DOWN;
use super::history::Feed;
use super::request;
use super::service::{BoxStream, LeaseApi};
use crate::limits::WATCH_BUFFER_EVENTS;
use crate::metrics::IdleLabel;

/// Starts a watch of `req.prefix` from `req.start_revision`.
pub(super) fn serve(
    api: Arc<LeaseApi>,
    client: Option<IpAddr>,
    req: pb::WatchRequest,
) -> Result<BoxStream<pb::WatchEvent>, ApiError> {
    if api.lessor.storage_failure().is_some() {
        return Err(api.shutting_down());
    }
    request::watch(&req)?;
    let (kept, covered_from, mut live) = api.history.replay_and_subscribe(req.start_revision);
    if req.start_revision > 0 && req.start_revision < covered_from {
        return Err(ApiError::OutOfRange {
            asked: req.start_revision,
            oldest: covered_from,
        });
    }
    // Revisions up to here are delivered or not wanted: a watch of new
    // events only starts at what this node has applied.
    let floor = match req.start_revision {
        0 => api.state.last_applied().map_or(0, |l| l.index),
        from => from - 1,
    };
    let slot = api.quotas.watch.take(client).map_err(|reached| {
        ApiError::limit(
            match client {
                Some(ip) => format!("too many Watch streams open (this one from {ip})"),
                None => "too many Watch streams open".to_string(),
            },
            reached,
        )
    })?;
    let (events, rx) = mpsc::channel(WATCH_BUFFER_EVENTS);
    let (end, ended) = oneshot::channel();
    let mut tx = Outlet {
        events,
        end: Some(end),
        stall: api.limits.watch_stall_timeout(),
        metrics: Arc::clone(&api.metrics),
    };
    let prefix = req.prefix;
    let stop = api.shutdown.clone();
    let failed = api.lessor.failed_signal();
    tokio::spawn(async move {
        // Counted as open until this task ends.
        let _slot = slot;
        // Live batches may repeat what the replay already sent.
        let replayed_to = kept.last().map(|e| e.revision).unwrap_or(0);
        let mut last = replayed_to.max(floor);
        for e in kept.iter().filter(|e| e.resource.starts_with(&prefix)) {
            if !tx.send(Ok(event_to_proto(e))).await {
                return;
            }
        }
        let stop = stop.recv();
        tokio::pin!(stop);
        let failed = failed.recv();
        tokio::pin!(failed);
        loop {
            let batch = tokio::select! {
                _ = &mut stop => {
                    // Not a clean end: the client resumes on another node.
                    let _ = tx.send(Err(Status::unavailable(SHUTTING_DOWN))).await;
                    return;
                }
                _ = &mut failed => {
                    // Fail-stop: no more events from a state that may
                    // have missed writes; the client resumes elsewhere.
                    let _ = tx.send(Err(Status::from(api.shutting_down()))).await;
                    return;
                }
                _ = tx.events.closed() => return,
                b = live.recv() => b,
            };
            match batch {
                Ok(Feed::Gap { complete_from }) if complete_from > last + 1 => {
                    let _ = tx
                        .send(Err(Status::data_loss(format!(
                            "this node did not see the events of revisions {} to {} (it \
                             installed a snapshot, or its history fell behind apply); resume \
                             from revision {} on another node, or re-read the state and \
                             watch from revision {complete_from}",
                            last + 1,
                            complete_from - 1,
                            last + 1
                        ))))
                        .await;
                    return;
                }
                Ok(Feed::Gap { .. }) => {}
                Ok(Feed::Events(events)) => {
                    for e in events.iter() {
                        if e.revision <= replayed_to {
                            continue;
                        }
                        last = last.max(e.revision);
                        if e.resource.starts_with(&prefix) && !tx.send(Ok(event_to_proto(e))).await
                        {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let _ = tx
                        .send(Err(Status::data_loss(format!(
                            "watcher fell behind by {n} event batches; resume from revision {}",
                            last + 1
                        ))))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Box::pin(Outbound {
        events: rx,
        ended: Some(ended),
    }))
}

/// The sending side of a Watch stream: a bounded buffer, and the status
/// that ends the stream at once when its reader stopped reading.
struct Outlet {
    /// The buffer ([`WATCH_BUFFER_EVENTS`] events).
    events: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    /// Ends the stream ahead of the buffer (used once).
    end: Option<oneshot::Sender<Status>>,
    /// How long a send may wait for room (`watch_stall_timeout_ms`).
    stall: Duration,
    /// Counts stalled readers.
    metrics: Arc<crate::metrics::Metrics>,
}

impl Outlet {
    /// Buffers `item`; false when the stream is over (the reader left, or
    /// it stalled and the stream was ended with `RESOURCE_EXHAUSTED`).
    async fn send(&mut self, item: Result<pb::WatchEvent, Status>) -> bool {
        match tokio::time::timeout(self.stall, self.events.send(item)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.metrics.idle_closed(IdleLabel::watch_stream);
                let stall_ms = u64::try_from(self.stall.as_millis()).unwrap_or(u64::MAX);
                let status = Status::from(ApiError::LimitReached {
                    what: format!(
                        "watch stream ended: its reader took no event for {stall_ms} ms with \
                         {WATCH_BUFFER_EVENTS} events buffered; resume from the revision after \
                         the last event received"
                    ),
                    limit: "watch_stall_timeout_ms",
                    max: stall_ms,
                });
                if let Some(end) = self.end.take() {
                    let _ = end.send(status);
                }
                false
            }
        }
    }
}

/// The Watch response stream: the buffered events, unless the stream was
/// ended for a stalled reader: then that status comes first (trailers are
/// not held back by HTTP/2 flow control the way events are).
struct Outbound {
    /// Buffered events.
    events: mpsc::Receiver<Result<pb::WatchEvent, Status>>,
    /// The status that ends the stream ahead of the buffer.
    ended: Option<oneshot::Receiver<Status>>,
}

impl Stream for Outbound {
    type Item = Result<pb::WatchEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(ended) = self.ended.as_mut() {
            match Pin::new(ended).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.ended = None;
                    self.events.close();
                    return Poll::Ready(Some(Err(status)));
                }
                // The task ended without a stall: only the buffer is left.
                Poll::Ready(Err(_)) => self.ended = None,
                Poll::Pending => {}
            }
        }
        self.events.poll_recv(cx)
    }
}
