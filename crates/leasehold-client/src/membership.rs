//! Membership one member at a time (`leasehold member add | remove |
//! replace | list`), on top of `Status` and `ChangeMembership`: each reads
//! the leader's membership, computes the new voter set and asks for it in
//! one `ChangeMembership` (new members caught up as learners first, then
//! one joint-consensus change of the voters). The service refuses what is
//! unsafe; see `docs/adr/0004-membership-changes.md`.

use std::time::Duration;

use crate::client::Client;
use crate::error::ClientError;
use crate::types::{Member, NodeStatus};

impl Client {
    /// The leader's view of the cluster (its members, voters and learners):
    /// asks the leader the client knows, or the node some endpoint names
    /// as leader. Fails with `UNAVAILABLE` when no leader answers.
    pub async fn leader_status(&self) -> Result<NodeStatus, ClientError> {
        let view = self.status().await?;
        if view.is_leader() {
            return Ok(view);
        }
        let Some(leader) = view.leader_api_addr.clone() else {
            return Err(ClientError::Unavailable {
                message: format!(
                    "node {} knows no leader (election under way?); retry",
                    view.node_id
                ),
                after: Duration::ZERO,
            });
        };
        let view = self.status_of(&leader).await?;
        if view.is_leader() {
            Ok(view)
        } else {
            Err(ClientError::Unavailable {
                message: format!("{leader} is no longer the leader; retry"),
                after: Duration::ZERO,
            })
        }
    }

    /// Adds `member` as a voter: it is probed, added as a learner, caught
    /// up (within `catch_up`, or the service's default), then made a voter
    /// by joint consensus. Returns the new voters. Refused when the id is
    /// already a member (`INVALID_ARGUMENT`).
    pub async fn add_member(
        &self,
        member: &Member,
        catch_up: Option<Duration>,
    ) -> Result<Vec<Member>, ClientError> {
        let view = self.leader_status().await?;
        if let Some(known) = view.members.iter().find(|m| m.node_id == member.node_id) {
            if known.learner && same_addresses(known, member) {
                // A learner left behind: promote it.
            } else {
                return Err(ClientError::InvalidArgument(format!(
                    "node {} is already a {} at raft {}, api {}",
                    member.node_id,
                    if known.learner { "learner" } else { "voter" },
                    known.raft_addr,
                    known.api_addr
                )));
            }
        }
        let mut voters = voters(&view);
        voters.push(member.clone());
        self.change_membership_with(&voters, catch_up).await
    }

    /// Removes node `id` from the cluster (a voter or a learner); returns
    /// the voters left. Refused when `id` is not a member
    /// (`INVALID_ARGUMENT`) or the service refuses (e.g. no reachable majority
    /// would be left). Removing the leader works: it steps down.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>, ClientError> {
        let view = self.leader_status().await?;
        if !view.members.iter().any(|m| m.node_id == id) {
            return Err(ClientError::InvalidArgument(format!(
                "node {id} is not a member (members: {})",
                ids(&view.members)
            )));
        }
        let voters: Vec<Member> = voters(&view)
            .into_iter()
            .filter(|m| m.node_id != id)
            .collect();
        if voters.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "node {id} is the last voter; a cluster needs at least one"
            )));
        }
        self.change_membership_with(&voters, None).await
    }

    /// Replaces voter `old` by the new member `new` in one change: `new` is
    /// probed, added as a learner and caught up, then one joint-consensus
    /// change swaps the voters and removes `old`. Returns the new voters.
    pub async fn replace_member(
        &self,
        old: u64,
        new: &Member,
        catch_up: Option<Duration>,
    ) -> Result<Vec<Member>, ClientError> {
        let view = self.leader_status().await?;
        if !view.members.iter().any(|m| m.node_id == old && !m.learner) {
            return Err(ClientError::InvalidArgument(format!(
                "node {old} is not a voter (voters: {})",
                ids(&voters(&view))
            )));
        }
        if old == new.node_id {
            return Err(ClientError::InvalidArgument(format!(
                "replacing node {old} by itself: a member's addresses are not changed in place; \
                 remove it, then add it at its new addresses"
            )));
        }
        if view.members.iter().any(|m| m.node_id == new.node_id) {
            return Err(ClientError::InvalidArgument(format!(
                "node {} is already a member; replace by a new id",
                new.node_id
            )));
        }
        let mut voters: Vec<Member> = voters(&view)
            .into_iter()
            .filter(|m| m.node_id != old)
            .collect();
        voters.push(new.clone());
        self.change_membership_with(&voters, catch_up).await
    }
}

/// The voters of a status.
fn voters(view: &NodeStatus) -> Vec<Member> {
    view.members
        .iter()
        .filter(|m| !m.learner)
        .cloned()
        .collect()
}

/// Whether two members have the same addresses.
fn same_addresses(a: &Member, b: &Member) -> bool {
    a.raft_addr == b.raft_addr && a.api_addr == b.api_addr
}

/// Ids as a comma-separated list.
fn ids(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| m.node_id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
