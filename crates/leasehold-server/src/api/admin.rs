//! `Recall`, `SetConfig`, `ChangeMembership` and `Status`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leasehold_core::machine::{validate_reason, validate_resource};
use leasehold_core::{Command, LeaseConfig, Response as CoreResponse};
use leasehold_proto::v1 as pb;
use leasehold_raft::{LeaseNode, NodeId};
use openraft::ServerState;

use super::convert::config_to_proto;
use super::error::ApiError;
use super::forward::known_leader;
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
        validate_resource(&req.resource)?;
        validate_reason(&req.reason)?;
        let (_, resp) = self
            .propose(Command::Recall {
                resource: req.resource,
                reason: req.reason,
            })
            .await?;
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
        let c = req
            .config
            .ok_or_else(|| ApiError::invalid("config", "missing"))?;
        // 0 keeps the cluster's window (or, before the first leader set
        // one, takes this node's own).
        let current = self.state.read(|s| s.config().vote_window_ms);
        let vote_window_ms = match (c.vote_window_ms, current) {
            (0, 0) => self.election_timeout_ms_max,
            (0, w) => w,
            (w, _) => w,
        };
        if vote_window_ms > self.election_timeout_ms_max {
            // Followers must refuse votes for at least W: raising W is the
            // last step, after every node runs with a long enough window.
            return Err(ApiError::invalid(
                "vote_window_ms",
                format!(
                    "{vote_window_ms} ms is above this leader's own election_timeout_ms_max ({} \
                     ms): restart every node with at least {vote_window_ms} ms first",
                    self.election_timeout_ms_max
                ),
            ));
        }
        let config = LeaseConfig {
            ttl_ms_min: c.ttl_ms_min,
            ttl_ms_max: c.ttl_ms_max,
            drift_ppm: c.drift_ppm,
            grace_margin_ms: c.grace_margin_ms,
            vote_window_ms,
        };
        // Also checks ttl_ms_min ≥ 2 W against the cluster-wide W.
        config.validate()?;
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
        if req.voters.is_empty() || req.voters.len() > VOTERS_MAX {
            return Err(ApiError::invalid(
                "voters",
                format!(
                    "{} voters; between 1 and {VOTERS_MAX} are allowed",
                    req.voters.len()
                ),
            ));
        }
        let mut voters = BTreeMap::new();
        for m in &req.voters {
            if m.node_id == 0 || m.raft_addr.is_empty() || m.api_addr.is_empty() {
                return Err(ApiError::invalid(
                    "voters",
                    format!(
                        "member {} needs a non-zero id, raft_addr and api_addr",
                        m.node_id
                    ),
                ));
            }
            let node = LeaseNode {
                raft_addr: m.raft_addr.clone(),
                api_addr: m.api_addr.clone(),
            };
            if voters.insert(m.node_id, node).is_some() {
                return Err(ApiError::invalid(
                    "voters",
                    format!("node {} listed twice", m.node_id),
                ));
            }
        }
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
            Serving::ShuttingDown | Serving::StorageFailed => (pb::Serving::WaitingForQuorum, 0),
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
