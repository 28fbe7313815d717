//! Prompt elections: a follower stands as soon as its leader's vote window
//! has run out, instead of waiting for openraft's own election timer.
//!
//! openraft 0.9 lets a follower whose vote is committed stand only
//! `election_timeout_max` (its leader lease, our `W`) **plus** a random
//! election timeout after it last heard from the leader: 900–1,200 ms with
//! the defaults, on top of which the new leader confirms its lease and
//! clients find it. Nothing in the time model needs that second wait.
//! Safety rests on voters: each refuses other candidates for `W` after it
//! last accepted the leader (openraft's lease, our restart window and the
//! leader's own vote gate, docs/adr/0001-time-model.md §4), whenever a
//! candidate stands. So once `W × (1 + ρ)` has passed since this node last
//! accepted the leader's AppendEntries (every voter that heard from it no
//! later has then let its window run out), plus a jitter that staggers the
//! followers by id so they do not split the vote ([`stagger_ms`]), this
//! task asks
//! openraft to elect (`Raft::trigger().elect()`). If that election fails
//! (a split vote, a voter that heard from the leader later), openraft's
//! own timer stands again as before: this task stands once per contact.
//!
//! It never stands while the node shuts down, after its store failed, when
//! its own vote window is shorter than the cluster's (it may not lead), or
//! when it is not a voter. The instant is computed by the core
//! ([`leasehold_core::time::prompt_election_at_ms`]).

use std::sync::Arc;
use std::time::Duration;

use leasehold_raft::network::LeaderContact;
use leasehold_raft::store::StateMachineStore;
use leasehold_raft::{NodeId, Raft};
use openraft::ServerState;
use rand::Rng;
use tokio::time::Instant;

use crate::config::RaftTiming;
use crate::lessor::{Lessor, Serving};
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;

/// What the prompt-election task reads and drives.
pub struct Prompter {
    /// This node (whether it is a voter).
    pub node_id: NodeId,
    /// Its role, and the election trigger.
    pub raft: Raft,
    /// When it last accepted a leader's AppendEntries (the peer service
    /// records it).
    pub contact: LeaderContact,
    /// Whether it may stand at all (shutting down, store failed, window
    /// shorter than the cluster's).
    pub lessor: Arc<Lessor>,
    /// The replicated drift bound ρ.
    pub state: StateMachineStore,
    /// Its own vote window (`election_timeout_ms_max`) and heartbeat (the
    /// jitter's bound and the idle poll period).
    pub timing: RaftTiming,
    /// `leasehold_prompt_elections_total`.
    pub metrics: Arc<Metrics>,
}

impl Prompter {
    /// Runs until shutdown.
    pub async fn run(self, shutdown: ShutdownSignal) {
        let stop = shutdown.recv();
        tokio::pin!(stop);
        let poll = Duration::from_millis(self.timing.heartbeat_ms.max(1));
        // The contact this node already stood after (once per contact).
        let mut stood_after: Option<Instant> = None;
        loop {
            let due = match self.contact.last() {
                Some(heard) if Some(heard) != stood_after => Some((heard, self.due(heard))),
                _ => None,
            };
            let wake = due.map_or_else(|| Instant::now() + poll, |(_, at)| at);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let Some((heard, _)) = due else { continue };
            // A newer contact moved the deadline: compute it again.
            if self.contact.last() != Some(heard) {
                continue;
            }
            stood_after = Some(heard);
            if let Some(why) = self.may_not_stand() {
                tracing::debug!(node_id = self.node_id, why, "not standing early");
                continue;
            }
            let silent_ms = heard.elapsed().as_millis() as u64;
            tracing::info!(
                node_id = self.node_id,
                silent_ms,
                "leader silent past its vote window; standing for election"
            );
            self.metrics.prompt_election();
            if let Err(error) = self.raft.trigger().elect().await {
                tracing::debug!(node_id = self.node_id, %error, "election trigger refused");
                return;
            }
        }
    }

    /// When to stand after a contact at `heard`: the core's instant, with a
    /// jitter that staggers the followers (see [`stagger_ms`]).
    fn due(&self, heard: Instant) -> Instant {
        let drift_ppm = self.state.read(|s| s.config().drift_ppm);
        let rank = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let mut others: Vec<NodeId> = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|id| Some(*id) != m.current_leader)
                .collect();
            others.sort_unstable();
            others
                .iter()
                .position(|id| *id == self.node_id)
                .unwrap_or(0)
        };
        let quarter_ms = self.timing.heartbeat_ms / 4;
        let jitter_ms = stagger_ms(
            rank,
            self.timing.heartbeat_ms,
            rand::thread_rng().gen_range(0..=quarter_ms),
        );
        let after_ms = leasehold_core::time::prompt_election_at_ms(
            0,
            self.timing.election_timeout_ms_max,
            drift_ppm,
            jitter_ms,
        );
        heard + Duration::from_millis(after_ms)
    }

    /// Why this node must not stand now, if so.
    fn may_not_stand(&self) -> Option<&'static str> {
        match self.lessor.serving() {
            Serving::ShuttingDown => return Some("shutting down"),
            Serving::StorageFailed => return Some("store failed"),
            _ => {}
        }
        if self.lessor.config_error().is_some() {
            return Some("vote window shorter than the cluster's");
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Follower {
            return Some("not a follower");
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.node_id)
        {
            return Some("not a voter");
        }
        None
    }
}

/// The jitter of the follower of rank `rank` (its place, by id, among the
/// voters other than the silent leader): half a heartbeat per rank, plus
/// `random_ms` (up to a quarter heartbeat). Followers that heard the same
/// last heartbeat would otherwise stand within a few milliseconds of each
/// other and split the vote (seen in the failover bench: both stood 4 ms
/// apart, and the election waited for openraft's timer, 600 ms more);
/// staggered, the first one's election has normally reached the second
/// (a new leader's first AppendEntries moves its contact) before it stands.
pub fn stagger_ms(rank: usize, heartbeat_ms: u64, random_ms: u64) -> u64 {
    (rank as u64)
        .saturating_mul(heartbeat_ms / 2)
        .saturating_add(random_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_stand_half_a_heartbeat_apart() {
        assert_eq!(stagger_ms(0, 100, 0), 0);
        assert_eq!(stagger_ms(0, 100, 25), 25);
        assert_eq!(stagger_ms(1, 100, 0), 50);
        // The latest the first may stand is before the earliest the
        // second does.
        assert!(stagger_ms(0, 100, 100 / 4) < stagger_ms(1, 100, 0));
        assert_eq!(stagger_ms(usize::MAX, u64::MAX, 1), u64::MAX);
    }
}
