//! `Recall`, `SetConfig`, `ChangeMembership` and `Status`.

use std::collections::BTreeSet;
use std::time::Duration;

use leasehold_core::{Command, Response as CoreResponse};
use leasehold_proto::v1 as pb;
use leasehold_raft::NodeId;
use openraft::ServerState;

use super::convert::config_to_proto;
use super::error::ApiError;
use super::forward::known_leader;
use super::request;
use super::service::LeaseApi;
use crate::error::ProposeError;
use crate::lessor::Serving;

/// Most voters a membership may have.
pub const VOTERS_MAX: usize = 7;
/// How long a membership change (catching a learner up included) may take.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

impl LeaseApi {
    pub(super) async fn recall_local(
        &self,
        req: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, ApiError> {
        let command = request::recall(&req)?;
        let (_, resp) = self.propose(command).await?;
        match resp {
            CoreResponse::Recalled { holders } => {
                self.metrics.recalled();
                Ok(pb::RecallResponse { holders })
            }
            other => Err(ApiError::refused(other)),
        }
    }

    pub(super) async fn set_config_local(
        &self,
        req: pb::SetConfigRequest,
    ) -> Result<pb::SetConfigResponse, ApiError> {
        let current = self.state.read(|s| *s.config());
        let config = request::set_config(&req, &current, self.election_timeout_ms_max)?;
        let (_, resp) = self.propose(Command::SetConfig(config)).await?;
        match resp {
            CoreResponse::ConfigSet(c) => Ok(pb::SetConfigResponse {
                config: Some(config_to_proto(&c)),
            }),
            other => Err(ApiError::refused(other)),
        }
    }

    pub(super) async fn change_membership_local(
        &self,
        req: pb::ChangeMembershipRequest,
    ) -> Result<pb::ChangeMembershipResponse, ApiError> {
        let voters = request::change_membership(&req)?;
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        for (id, node) in &voters {
            if known.get_node(id).is_none() {
                // Adds it as a learner and waits until it has caught up.
                tokio::time::timeout(
                    MEMBERSHIP_TIMEOUT,
                    self.raft.add_learner(*id, node.clone(), true),
                )
                .await
                .map_err(|_| ApiError::unavailable("the new member did not catch up in time"))?
                .map_err(ProposeError::from)?;
            }
        }
        let ids: BTreeSet<NodeId> = voters.keys().copied().collect();
        let written =
            tokio::time::timeout(MEMBERSHIP_TIMEOUT, self.raft.change_membership(ids, false))
                .await
                .map_err(|_| ApiError::unavailable("the membership change did not commit in time"))?
                .map_err(ProposeError::from)?;
        tracing::info!(node_id = self.node_id, voters = ?voters.keys().collect::<Vec<_>>(), "membership changed");
        Ok(pb::ChangeMembershipResponse {
            voters: voters
                .iter()
                .map(|(id, n)| pb::Member {
                    node_id: *id,
                    raft_addr: n.raft_addr.clone(),
                    api_addr: n.api_addr.clone(),
                })
                .collect(),
            log_index: written.log_id.index,
        })
    }

    pub(super) async fn status_local(&self) -> pb::StatusResponse {
        let committed = self.log_store.committed_index().await;
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let (serving, grace) = match self.lessor.serving() {
            Serving::Serving => (pb::Serving::Serving, 0),
            Serving::FailoverGrace { remaining } => {
                (pb::Serving::FailoverGrace, remaining.as_millis() as u64)
            }
            Serving::WaitingForQuorum => (pb::Serving::WaitingForQuorum, 0),
            Serving::Follower => (pb::Serving::Follower, 0),
            // Serves nothing, like a leader whose lease is not confirmed.
            Serving::ShuttingDown => (pb::Serving::WaitingForQuorum, 0),
        };
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| pb::Member {
                node_id: *id,
                raft_addr: n.raft_addr.clone(),
                api_addr: n.api_addr.clone(),
            })
            .collect();
        let (leader_id, leader_api_addr) = known_leader(&m).unwrap_or_default();
        let (sessions, resources, config) = self.state.read(|s| {
            (
                s.session_count() as u64,
                s.resources().count() as u64,
                config_to_proto(s.config()),
            )
        });
        pb::StatusResponse {
            node_id: self.node_id,
            role: role.into(),
            leader_id,
            leader_api_addr,
            term: m.current_term,
            commit_index: committed.max(m.last_applied.map(|l| l.index).unwrap_or(0)),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
            serving: serving as i32,
            grace_remaining_ms: grace,
            sessions,
            resources,
            config: Some(config),
            config_error: self.lessor.config_error().unwrap_or_default(),
        }
    }
}
