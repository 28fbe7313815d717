//! Withdrawing a wait whose acquire call went away (`AbandonWait`): what
//! is left of it, and the apply that withdraws it.

use super::{Apply, LeaseState};
use crate::outcome::Response;
use crate::resource::AbandonedWait;
use crate::types::{LogIndex, SessionId};

impl LeaseState {
    /// What an [`crate::Command::AbandonWait`] of the wait `session` queued on
    /// `resource` at `queued_at` would withdraw now: the lease granted from
    /// that very wait, the wait itself, or nothing (it was answered,
    /// withdrawn, claimed by a repeated acquire, or the session ended).
    pub fn abandoned_wait(
        &self,
        session: SessionId,
        resource: &str,
        queued_at: LogIndex,
    ) -> Option<AbandonedWait> {
        let res = self.resources.get(resource)?;
        if res
            .holders
            .get(&session)
            .is_some_and(|l| l.queued_at == Some(queued_at))
        {
            return Some(AbandonedWait::Granted);
        }
        res.waiters
            .iter()
            .find(|w| w.session == session)
            .is_some_and(|w| w.queued_at == queued_at)
            .then_some(AbandonedWait::Queued)
    }

    /// Applies [`crate::Command::AbandonWait`]: releases the lease granted from
    /// that wait, or cancels the wait, or (it is gone) does nothing.
    pub(super) fn abandon_wait(
        &mut self,
        cx: &mut Apply,
        session: SessionId,
        resource: &str,
        queued_at: LogIndex,
    ) -> Response {
        match self.abandoned_wait(session, resource, queued_at) {
            Some(AbandonedWait::Granted) => self.release(cx, session, resource),
            Some(AbandonedWait::Queued) => self.cancel_wait(cx, session, resource),
            None => Response::WaitCancelled,
        }
    }
}
