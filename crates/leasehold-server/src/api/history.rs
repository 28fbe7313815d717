//! Recent lease events on this node, for resumable watches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use leasehold_core::Event;
use leasehold_raft::store::StateMachineStore;
use tokio::sync::broadcast;

use crate::shutdown::ShutdownSignal;

/// Events kept for watches that resume from a revision.
pub const HISTORY_EVENTS_MAX: usize = 10_000;

/// The kept events.
struct Kept {
    /// Oldest first.
    events: VecDeque<Event>,
    /// Every event with revision >= this is in `events` (or still to come).
    complete_from: u64,
}

/// What live watchers receive.
#[derive(Debug, Clone)]
pub enum Feed {
    /// Events of applied entries, in order.
    Events(Arc<Vec<Event>>),
    /// This node did not see the events of revisions before `complete_from`
    /// (it installed a snapshot, or its history fell behind): a watcher that
    /// has not delivered everything up to there cannot go on here.
    Gap {
        /// The history is complete again from this revision.
        complete_from: u64,
    },
}

/// A bounded history of applied events plus a live feed.
pub struct History {
    /// Oldest first, and the first revision from which they are complete.
    events: Mutex<Kept>,
    /// Live events, fanned out to watchers after they are in `events`.
    live: broadcast::Sender<Feed>,
}

impl History {
    /// Starts recording the state machine's events until shutdown.
    pub fn start(state: &StateMachineStore, shutdown: ShutdownSignal) -> Arc<History> {
        let (live, _) = broadcast::channel(1024);
        let complete_from = state.last_applied().map(|l| l.index + 1).unwrap_or(1);
        let history = Arc::new(History {
            events: Mutex::new(Kept {
                events: VecDeque::new(),
                complete_from,
            }),
            live,
        });
        let mut rx = state.subscribe();
        let h = Arc::clone(&history);
        tokio::spawn(async move {
            let stop = shutdown.recv();
            tokio::pin!(stop);
            // Set when messages were lost: the next one starts a new history.
            let mut lagged = false;
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    got = rx.recv() => match got {
                        Ok(applied) if applied.snapshot_installed => {
                            h.gap(applied.index + 1);
                            lagged = false;
                        }
                        Ok(applied) => {
                            if std::mem::take(&mut lagged) {
                                h.gap(applied.index);
                            }
                            h.push(applied.events.clone());
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "watch history lagged behind apply");
                            lagged = true;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        history
    }

    /// Forgets every kept event: the history is complete only from
    /// `complete_from` on. Live watchers are told.
    fn gap(&self, complete_from: u64) {
        {
            let mut k = self.events.lock().unwrap_or_else(|p| p.into_inner());
            k.events.clear();
            k.complete_from = k.complete_from.max(complete_from);
        }
        tracing::info!(
            complete_from,
            "watch history restarts (events were not seen here)"
        );
        let _ = self.live.send(Feed::Gap { complete_from });
    }

    fn push(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        {
            let mut k = self.events.lock().unwrap_or_else(|p| p.into_inner());
            k.events.extend(events.iter().cloned());
            while k.events.len() > HISTORY_EVENTS_MAX {
                if let Some(e) = k.events.pop_front() {
                    k.complete_from = k.complete_from.max(e.revision + 1);
                }
            }
        }
        let _ = self.live.send(Feed::Events(Arc::new(events)));
    }

    /// Subscribes to live events, then returns the kept events with
    /// revision ≥ `from` and the revision from which the history is
    /// complete. Subscribing first means no event falls between the two.
    pub fn replay_and_subscribe(&self, from: u64) -> (Vec<Event>, u64, broadcast::Receiver<Feed>) {
        let rx = self.live.subscribe();
        let k = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let kept = if from == 0 {
            Vec::new()
        } else {
            k.events
                .iter()
                .filter(|e| e.revision >= from)
                .cloned()
                .collect()
        };
        (kept, k.complete_from, rx)
    }
}
