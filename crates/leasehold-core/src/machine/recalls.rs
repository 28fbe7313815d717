//! The derived index of recalled leases per session (kept by apply, read
//! by keepalives).

use super::LeaseState;
use crate::resource::Lease;
use crate::types::SessionId;

impl LeaseState {
    /// The resources `session` holds under a recall notice, with their
    /// leases (a keepalive reports them). Empty for most sessions; costs a
    /// lookup per recalled lease, not per lease held.
    pub fn recalled_leases(&self, session: SessionId) -> impl Iterator<Item = (&String, &Lease)> {
        self.recalled
            .get(&session)
            .into_iter()
            .flatten()
            .filter_map(move |name| {
                let (name, res) = self.resources.get_key_value(name)?;
                Some((name, res.holders.get(&session)?))
            })
    }

    /// Forgets that `session`'s lease on `name` was recalled (it is gone).
    pub(super) fn forget_recall(&mut self, session: SessionId, name: &str) {
        if let Some(names) = self.recalled.get_mut(&session) {
            names.remove(name);
            if names.is_empty() {
                self.recalled.remove(&session);
            }
        }
    }
}
