//! `Recall`, `SetConfig` and `Status` (`ChangeMembership`: [`super::membership`]).

use leasehold_core::{Command, Response as CoreResponse};
use leasehold_proto::v1 as pb;
use openraft::ServerState;

use super::convert::config_to_proto;
use super::error::ApiError;
use super::forward::known_leader;
use super::membership::member;
use super::request;
use super::service::LeaseApi;
use crate::admission::Admission;
use crate::lessor::Serving;

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
        let membership = m.membership_config.membership();
        let voters: Vec<_> = membership.voter_ids().collect();
        let members: Vec<pb::Member> = membership
            .nodes()
            .map(|(id, n)| member(*id, n, !voters.contains(id)))
            .collect();
        let admission = match *self.admission.borrow() {
            Admission::AwaitingMembership if !members.is_empty() => "joined",
            a => a.as_str(),
        };
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
            admission: admission.into(),
        }
    }
}
