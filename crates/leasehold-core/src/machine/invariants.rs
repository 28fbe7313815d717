//! The structural invariants of [`LeaseState`], checked after every apply in
//! tests (listed in the `machine` module's docs).

use super::LeaseState;

impl LeaseState {
    /// Verifies every structural invariant; returns a description of the
    /// first one broken. Cheap enough for tests, not for the hot path.
    pub fn check_invariants(&self) -> Result<(), String> {
        // Only `SetConfig` changes it, and only to a valid one; a decoded
        // snapshot or store must not bring in one apply would refuse.
        if let Err(r) = self.config.validate() {
            return Err(format!("configuration is not valid: {r}"));
        }
        for (name, res) in &self.resources {
            if res.is_idle() {
                return Err(format!("idle resource {name:?} stored"));
            }
            if res.exclusive_holder().is_some() && res.holders.len() > 1 {
                return Err(format!("exclusive holder beside others on {name:?}"));
            }
            for (sid, lease) in &res.holders {
                if lease.token > self.position {
                    return Err(format!(
                        "token {} on {name:?} beyond the last position {}",
                        lease.token, self.position
                    ));
                }
                if *sid != lease.session {
                    return Err(format!("holder key mismatch on {name:?}"));
                }
                let Some(s) = self.sessions.get(sid) else {
                    return Err(format!("holder {sid} of {name:?} has no session"));
                };
                if !s.held.contains(name) {
                    return Err(format!("session {sid} does not list held {name:?}"));
                }
            }
            for w in &res.waiters {
                if w.queued_at > self.position {
                    return Err(format!(
                        "wait queued at {} on {name:?} beyond the last position {}",
                        w.queued_at, self.position
                    ));
                }
                let Some(s) = self.sessions.get(&w.session) else {
                    return Err(format!("waiter {} of {name:?} has no session", w.session));
                };
                if !s.waiting.contains(name) {
                    return Err(format!("session {} does not list wait {name:?}", w.session));
                }
                if res.holders.contains_key(&w.session) {
                    return Err(format!(
                        "session {} both holds and waits {name:?}",
                        w.session
                    ));
                }
            }
            if let Some(head) = res.waiters.front() {
                if res.admits(head.mode) {
                    return Err(format!("grantable head waiter left on {name:?}"));
                }
            }
        }
        let mut recalled: std::collections::BTreeMap<u64, std::collections::BTreeSet<String>> =
            std::collections::BTreeMap::new();
        for (name, res) in &self.resources {
            for lease in res.holders.values().filter(|l| l.recall.is_some()) {
                recalled
                    .entry(lease.session)
                    .or_default()
                    .insert(name.clone());
            }
        }
        if recalled != self.recalled {
            return Err(format!(
                "recall index {:?} differs from the recalled leases {recalled:?}",
                self.recalled
            ));
        }
        // Request ids name one open session each: the index a retried open
        // looks in is derived from them, so a duplicate would let closing
        // one session make the other's retries open a second session.
        let mut by_request = std::collections::BTreeMap::new();
        for (id, s) in &self.sessions {
            if s.id != *id {
                return Err(format!("session {} stored under id {id}", s.id));
            }
            if s.request_id != 0 {
                if let Some(other) = by_request.insert(s.request_id, *id) {
                    return Err(format!(
                        "sessions {other} and {id} were opened by the same request id {}",
                        s.request_id
                    ));
                }
            }
        }
        if by_request != self.by_request {
            return Err(format!(
                "request-id index {:?} differs from the sessions' request ids {by_request:?}",
                self.by_request
            ));
        }
        for (id, s) in &self.sessions {
            if *id > self.position {
                return Err(format!(
                    "session {id} beyond the last position {}",
                    self.position
                ));
            }
            for name in &s.held {
                if !self
                    .resources
                    .get(name)
                    .is_some_and(|r| r.holders.contains_key(id))
                {
                    return Err(format!("session {id} lists {name:?} it does not hold"));
                }
            }
            for name in &s.waiting {
                if self
                    .resources
                    .get(name)
                    .and_then(|r| r.waiter_position(*id))
                    .is_none()
                {
                    return Err(format!("session {id} lists wait {name:?} not queued"));
                }
            }
        }
        Ok(())
    }
}
