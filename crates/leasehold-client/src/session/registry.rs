//! [`Registry`]: every session the client keeps alive, for the keepalive
//! task (ids, secrets, the shortest TTL).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use leasehold_proto::v1 as pb;
use tokio::sync::Notify;

use super::{watchdog, SessionCore};

/// The sessions kept alive, and how many of them have each TTL (so that
/// the shortest is known without a scan: a client may keep many).
#[derive(Debug, Default)]
struct Kept {
    /// Sessions by id.
    by_id: HashMap<u64, Arc<SessionCore>>,
    /// Number of sessions kept with each TTL (in ms).
    ttls_ms: BTreeMap<u64, usize>,
}

impl Kept {
    /// Counts one session fewer with TTL `ttl_ms`.
    fn forget_ttl(&mut self, ttl_ms: u64) {
        if let Some(n) = self.ttls_ms.get_mut(&ttl_ms) {
            *n -= 1;
            if *n == 0 {
                self.ttls_ms.remove(&ttl_ms);
            }
        }
    }
}

/// Every session the client keeps alive, for the keepalive task.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Sessions, with their TTLs counted.
    sessions: Mutex<Kept>,
    /// Woken when a session is added (the renewal period may shrink).
    pub(crate) changed: Notify,
}

impl Registry {
    fn sessions(&self) -> MutexGuard<'_, Kept> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts keeping `core` alive and arms its watchdog.
    pub(crate) fn add(&self, core: Arc<SessionCore>) {
        {
            let mut kept = self.sessions();
            *kept.ttls_ms.entry(core.ttl_ms).or_insert(0) += 1;
            if let Some(old) = kept.by_id.insert(core.id, Arc::clone(&core)) {
                kept.forget_ttl(old.ttl_ms);
            }
        }
        tokio::spawn(watchdog(core));
        self.changed.notify_one();
    }

    /// Stops keeping session `id` alive.
    pub(crate) fn remove(&self, id: u64) {
        let mut kept = self.sessions();
        if let Some(old) = kept.by_id.remove(&id) {
            kept.forget_ttl(old.ttl_ms);
        }
    }

    /// The session `id`, if kept alive.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<SessionCore>> {
        self.sessions().by_id.get(&id).cloned()
    }

    /// A keepalive message renewing `ids`, each with its secret (a
    /// session removed meanwhile goes with an empty secret: the service
    /// answers it as not alive).
    pub(crate) fn request(&self, ids: Vec<u64>) -> pb::KeepAliveRequest {
        let sessions = self.sessions();
        let session_secrets = ids
            .iter()
            .map(|id| {
                sessions
                    .by_id
                    .get(id)
                    .map(|c| c.secret.as_bytes().to_vec().into())
                    .unwrap_or_default()
            })
            .collect();
        pb::KeepAliveRequest {
            session_ids: ids,
            session_secrets,
        }
    }

    /// Ids of every session kept alive, ascending.
    pub(crate) fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.sessions().by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Whether no session is kept alive.
    pub(crate) fn is_empty(&self) -> bool {
        self.sessions().by_id.is_empty()
    }

    /// How often to renew: a third of the shortest TTL (at least 10 ms);
    /// `None` when there is nothing to renew.
    pub(crate) fn renew_interval(&self) -> Option<Duration> {
        self.sessions()
            .ttls_ms
            .keys()
            .next()
            .map(|ttl| Duration::from_millis(ttl / 3).max(Duration::from_millis(10)))
    }
}
