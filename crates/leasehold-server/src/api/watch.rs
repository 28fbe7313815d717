//! The `Watch` stream: replay from this node's history, then live events.

use std::sync::Arc;

use leasehold_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::event_to_proto;
use super::error::ApiError;
use super::forward::SHUTTING_DOWN;
use super::history::Feed;
use super::service::{BoxStream, LeaseApi};

/// Starts a watch of `req.prefix` from `req.start_revision`.
pub(super) fn serve(
    api: Arc<LeaseApi>,
    req: pb::WatchRequest,
) -> Result<BoxStream<pb::WatchEvent>, ApiError> {
    if api.lessor.storage_failure().is_some() {
        return Err(api.shutting_down());
    }
    if req.prefix.len() > leasehold_core::limits::RESOURCE_NAME_BYTES_MAX {
        return Err(ApiError::invalid(
            "prefix",
            "longer than a resource name may be",
        ));
    }
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
    let (tx, rx) = mpsc::channel(256);
    let prefix = req.prefix;
    let stop = api.shutdown.clone();
    let failed = api.lessor.failed_signal();
    tokio::spawn(async move {
        // Live batches may repeat what the replay already sent.
        let replayed_to = kept.last().map(|e| e.revision).unwrap_or(0);
        let mut last = replayed_to.max(floor);
        for e in kept.iter().filter(|e| e.resource.starts_with(&prefix)) {
            if tx.send(Ok(event_to_proto(e))).await.is_err() {
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
                _ = tx.closed() => return,
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
                        if e.resource.starts_with(&prefix)
                            && tx.send(Ok(event_to_proto(e))).await.is_err()
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
    Ok(Box::pin(ReceiverStream::new(rx)))
}
