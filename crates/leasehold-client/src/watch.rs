//! [`WatchStream`]: lease events, resumed after node failures.

use std::time::Duration;

use futures::Stream;
use leasehold_proto::v1 as pb;

use crate::client::Client;
use crate::error::{is_connection_failure, ClientError};
use crate::transport::Backoff;
use crate::types::WatchEvent;

/// Lease events on resources with a prefix, from
/// [`Client::watch`](crate::Client::watch).
///
/// When the node serving the stream fails, the next call to
/// [`next`](Self::next) reopens it at another node from the revision after
/// the last event delivered (so nothing is repeated or skipped when the
/// history still reaches back; a stream that started with revision 0 and
/// delivered nothing yet resumes with "new events only").
#[derive(Debug)]
pub struct WatchStream {
    /// Where to reopen.
    client: Client,
    /// The prefix watched.
    prefix: String,
    /// Revision to resume from (0: only new events).
    next_revision: u64,
    /// The open stream, if any.
    inner: Option<tonic::Streaming<pb::WatchEvent>>,
    /// Pause before reopening after the stream ended.
    backoff: Backoff,
}

impl WatchStream {
    /// Opens the stream.
    pub(crate) async fn open(
        client: Client,
        prefix: String,
        from_revision: u64,
    ) -> Result<WatchStream, ClientError> {
        let mut s = WatchStream {
            client,
            prefix,
            next_revision: from_revision,
            inner: None,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        };
        s.reopen().await?;
        Ok(s)
    }

    async fn reopen(&mut self) -> Result<(), ClientError> {
        let request = pb::WatchRequest {
            prefix: self.prefix.clone(),
            start_revision: self.next_revision,
        };
        self.inner = Some(self.client.watch_raw(request).await?);
        Ok(())
    }

    /// The revision the stream would resume from.
    pub fn next_revision(&self) -> u64 {
        self.next_revision
    }

    /// The next event; `None` never (the stream reconnects, and resumes
    /// where it was when a node dropped events it owed), `Some(Err)` when it
    /// cannot go on (history gone: [`ClientError::OutOfRange`], or no node
    /// answered within the call timeout).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                tokio::time::sleep(self.backoff.next_pause()).await;
                if let Err(e) = self.reopen().await {
                    return Some(Err(e));
                }
                continue;
            };
            match inner.message().await {
                Ok(Some(e)) => {
                    self.backoff.reset(Duration::from_millis(50));
                    self.next_revision = self.next_revision.max(e.revision.saturating_add(1));
                    return Some(Ok(e.into()));
                }
                Ok(None) => {
                    tracing::debug!("watch stream ended; reopening");
                    self.inner = None;
                }
                Err(status) if is_connection_failure(&status) => {
                    tracing::debug!(message = status.message(), "watch stream failed; reopening");
                    self.inner = None;
                }
                // The node lost events this stream still owes (the stream fell
                // behind, or the node installed a snapshot): resume from the
                // next revision; if no node has it any more, that reopen
                // answers OutOfRange.
                Err(status) if status.code() == tonic::Code::DataLoss => {
                    tracing::debug!(
                        message = status.message(),
                        "watch stream lost events; resuming"
                    );
                    self.inner = None;
                }
                Err(status) => {
                    self.inner = None;
                    return Some(Err(status.into()));
                }
            }
        }
    }

    /// The events as a [`Stream`]; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut s = state?;
            match s.next().await {
                Some(Ok(e)) => Some((Ok(e), Some(s))),
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        })
    }
}
