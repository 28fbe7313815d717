//! `ChangeMembership`, done safely (docs/adr/0004-membership-changes.md).
//!
//! 1. **Check** the request: 1 to [`VOTERS_MAX`] voters; a member already in
//!    the membership must be listed with the addresses it has (addresses
//!    never change in place). The leader may remove itself: openraft steps
//!    it down once the configuration without it is committed.
//! 2. **Probe** every voter of the new set: each existing voter must name
//!    this node as its leader in its `Status`; each new member must accept
//!    a connection on its Raft address and answer `Status` with the expected
//!    node id, as a pristine node waiting to be added or as a node that was
//!    in this cluster before; it is asked again until the catch-up deadline
//!    (it may be starting). A new member that does not answer is refused;
//!    so is a new voter set without a reachable majority.
//! 3. **Add** the new members as learners (one membership entry), then wait
//!    on the leader's replication metrics until each has matched the log up
//!    to that entry, until the catch-up deadline (counted from the start of
//!    the call). On timeout the learners are removed again and the call
//!    answers `DEADLINE_EXCEEDED`: the membership is as it was.
//! 4. **Change the voters** by joint consensus (openraft's
//!    `change_membership`); voters left out are removed, then learners left
//!    out. The answer lists the voters of the committed membership, with the
//!    addresses it records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leasehold_proto::raft::v1::raft_peer_client::RaftPeerClient;
use leasehold_proto::v1 as pb;
use leasehold_raft::network::PeerStatus;
use leasehold_raft::tls::NodeTls;
use leasehold_raft::{LeaseNode, NodeId};
use openraft::{ChangeMembers, Membership, RaftMetrics, ServerState};

use super::error::ApiError;
use super::service::LeaseApi;
use crate::error::ProposeError;

/// Most voters a membership may have.
pub const VOTERS_MAX: usize = 7;
/// How long new members may take to catch up when the request does not say.
pub const CATCH_UP_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// The longest catch-up a request may ask for.
pub const CATCH_UP_TIMEOUT_MS_MAX: u64 = 600_000;
/// How long one probe of a member (connect, then `Status`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two probes of a new member that does not answer yet (it
/// may be starting): there is no event to wait on for a remote node.
const PROBE_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// How long one membership entry (learners added or removed, the joint
/// and the final voter configuration) may take to commit.
const MEMBERSHIP_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a probe found out about one member.
#[derive(Debug)]
enum Probe {
    /// It answered as the request expects.
    Ready,
    /// It did not answer, or answered in a way that counts as not reachable
    /// (an existing voter that does not follow this leader).
    Unreachable(String),
    /// It answered, but is still deciding whether it may join (pristine,
    /// asking its `--peer` members): ready in a moment.
    NotYet(String),
    /// It answered, but must not be added (another node, another cluster,
    /// quarantined).
    Refused(String),
}

impl LeaseApi {
    pub(super) async fn change_membership_local(
        &self,
        req: pb::ChangeMembershipRequest,
    ) -> Result<pb::ChangeMembershipResponse, ApiError> {
        let voters = parse_voters(&req.voters)?;
        let catch_up = catch_up_timeout(req.catch_up_timeout_ms)?;
        let Ok(_one_at_a_time) = self.membership_lock.try_lock() else {
            return Err(ApiError::FailedPrecondition(
                "another membership change is under way on this leader; retry once it ended".into(),
            ));
        };
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return Err(ApiError::unavailable("this node is no longer the leader"));
        }
        let membership = metrics.membership_config.membership().clone();
        let plan = Plan::new(&membership, &voters)?;
        // New members must answer and catch up within this.
        let deadline = tokio::time::Instant::now() + catch_up;

        self.probe_all(&plan, &membership, &metrics, deadline)
            .await?;

        // Learners whose catch-up this change waits for.
        let mut catching_up: BTreeSet<NodeId> = plan.promoted.clone();
        let mut added: BTreeSet<NodeId> = BTreeSet::new();
        let mut wait_for = metrics.last_log_index.unwrap_or(0);
        if !plan.new.is_empty() {
            let written = commit(
                self.raft
                    .change_membership(ChangeMembers::AddNodes(plan.new.clone()), true),
                "adding the new members as learners",
            )
            .await?;
            added = plan.new.keys().copied().collect();
            catching_up.extend(added.iter().copied());
            wait_for = wait_for.max(written.log_id.index);
            tracing::info!(node_id = self.node_id, learners = ?added, log_index = written.log_id.index, "learners added");
        }
        if !catching_up.is_empty() {
            if let Err(e) = self
                .wait_caught_up(&catching_up, &voters, wait_for, deadline, catch_up)
                .await
            {
                self.undo_learners(&added).await;
                return Err(e);
            }
        }

        let ids: BTreeSet<NodeId> = voters.keys().copied().collect();
        let written = match commit(
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(ids), false),
            "changing the voters",
        )
        .await
        {
            Ok(w) => w,
            Err(e) => {
                self.undo_learners(&added).await;
                return Err(e);
            }
        };
        // Learners left out of the voter set go too: every member left out
        // is removed.
        // (A leader that removed itself stepped down once the change
        // committed: it cannot; the next change does it.)
        let written = if plan.dropped_learners.is_empty() {
            written
        } else {
            match commit(
                self.raft.change_membership(
                    ChangeMembers::RemoveNodes(plan.dropped_learners.clone()),
                    true,
                ),
                "removing the learners left out",
            )
            .await
            {
                Ok(w) => w,
                Err(error) => {
                    tracing::warn!(node_id = self.node_id, learners = ?plan.dropped_learners, %error, "the voters changed, but the learners left out are still members");
                    written
                }
            }
        };
        let now = written.membership.unwrap_or_else(|| {
            self.raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .clone()
        });
        let voters: Vec<pb::Member> = now
            .voter_ids()
            .filter_map(|id| now.get_node(&id).map(|n| member(id, n, false)))
            .collect();
        tracing::info!(
            node_id = self.node_id,
            voters = ?voters.iter().map(|m| m.node_id).collect::<Vec<_>>(),
            log_index = written.log_id.index,
            "membership changed"
        );
        Ok(pb::ChangeMembershipResponse {
            voters,
            log_index: written.log_id.index,
        })
    }

    /// Probes every voter of the new set (step 2 of the module docs).
    async fn probe_all(
        &self,
        plan: &Plan,
        membership: &Membership<NodeId, LeaseNode>,
        metrics: &RaftMetrics<NodeId, LeaseNode>,
        deadline: tokio::time::Instant,
    ) -> Result<(), ApiError> {
        let me = self.node_id;
        let term = metrics.current_term;
        let tls = self.forwarder.tls();
        let probes = plan
            .voters
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, node)| {
                let kind = if plan.new.contains_key(id) {
                    Kind::New
                } else if plan.promoted.contains(id) {
                    Kind::Learner
                } else {
                    Kind::Voter
                };
                async move {
                    loop {
                        let answer = probe(me, term, *id, node, kind, membership, tls).await;
                        // A new member may still be starting: ask again
                        // until the deadline. An existing voter answers now.
                        let retry = kind != Kind::Voter
                            && matches!(answer, Probe::Unreachable(_) | Probe::NotYet(_))
                            && tokio::time::Instant::now() + PROBE_RETRY_INTERVAL < deadline;
                        if !retry {
                            return (*id, node, kind, answer);
                        }
                        tokio::time::sleep(PROBE_RETRY_INTERVAL).await;
                    }
                }
            });
        let answers = futures::future::join_all(probes).await;
        let mut unreachable = Vec::new();
        for (id, node, kind, answer) in &answers {
            match answer {
                Probe::Ready => {}
                Probe::Refused(why) | Probe::NotYet(why) => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "node {id} (raft {}, api {}) cannot be added: {why}; nothing changed",
                        node.raft_addr, node.api_addr
                    )))
                }
                Probe::Unreachable(why) if *kind != Kind::Voter => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "node {id} (raft {}, api {}) does not answer (asked until the catch-up timeout): {why}; nothing changed",
                        node.raft_addr, node.api_addr
                    )))
                }
                Probe::Unreachable(why) => unreachable.push(format!("node {id} ({why})")),
            }
        }
        let reachable = plan.voters.len() - unreachable.len();
        let majority = plan.voters.len() / 2 + 1;
        if reachable < majority {
            return Err(ApiError::FailedPrecondition(format!(
                "the new voter set {:?} would have {reachable} reachable members, fewer than its \
                 majority of {majority}: {}; nothing changed",
                plan.voters.keys().collect::<Vec<_>>(),
                unreachable.join(", ")
            )));
        }
        Ok(())
    }

    /// Waits on the leader's replication metrics until every node of
    /// `learners` matched the log up to `index` (step 3).
    async fn wait_caught_up(
        &self,
        learners: &BTreeSet<NodeId>,
        voters: &BTreeMap<NodeId, LeaseNode>,
        index: u64,
        deadline: tokio::time::Instant,
        within: Duration,
    ) -> Result<(), ApiError> {
        let me = self.node_id;
        let caught_up = |m: &RaftMetrics<NodeId, LeaseNode>| {
            learners.iter().all(|id| matched(m, *id) >= Some(index))
        };
        let waited = self
            .raft
            .wait(Some(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            ))
            .metrics(
                |m| m.state != ServerState::Leader || caught_up(m),
                "new members caught up",
            )
            .await;
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(ApiError::unavailable(
                "leadership changed while the new members caught up; retry",
            ));
        }
        match waited {
            Ok(_) if caught_up(&m) => Ok(()),
            Ok(_) | Err(openraft::metrics::WaitError::Timeout(..)) => {
                let behind: Vec<String> = learners
                    .iter()
                    .filter(|id| matched(&m, **id) < Some(index))
                    .map(|id| {
                        let raft_addr = voters.get(id).map_or("?", |n| n.raft_addr.as_str());
                        format!(
                            "node {id} (raft {raft_addr}) matched index {} of {index}",
                            matched(&m, *id).unwrap_or(0)
                        )
                    })
                    .collect();
                tracing::warn!(
                    node_id = me,
                    ?behind,
                    within_ms = within.as_millis() as u64,
                    "new members did not catch up"
                );
                Err(ApiError::DeadlineExceeded(format!(
                    "new members did not catch up within {} ms: {}; the learners this change \
                     added were removed again, the membership is as it was",
                    within.as_millis(),
                    behind.join(", ")
                )))
            }
            Err(openraft::metrics::WaitError::ShuttingDown) => {
                Err(ApiError::unavailable("node stopping"))
            }
        }
    }

    /// Removes the learners this change added (after a failed catch-up or
    /// voter change), so the membership is as it was.
    async fn undo_learners(&self, added: &BTreeSet<NodeId>) {
        if added.is_empty() {
            return;
        }
        let result = commit(
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(added.clone()), true),
            "removing the learners again",
        )
        .await;
        match result {
            Ok(w) => {
                tracing::info!(node_id = self.node_id, learners = ?added, log_index = w.log_id.index, "learners removed again")
            }
            Err(error) => {
                tracing::error!(node_id = self.node_id, learners = ?added, %error, "could not remove the learners again; remove them by hand")
            }
        }
    }
}

/// How a member of the new voter set relates to the current membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A voter now.
    Voter,
    /// A learner now: promoted once caught up.
    Learner,
    /// Not in the membership: added as a learner first.
    New,
}

/// The change a request asks for, checked against the membership.
#[derive(Debug)]
struct Plan {
    /// The new voter set.
    voters: BTreeMap<NodeId, LeaseNode>,
    /// Members to add (not in the membership yet).
    new: BTreeMap<NodeId, LeaseNode>,
    /// Learners now that become voters.
    promoted: BTreeSet<NodeId>,
    /// Learners now that the request leaves out: removed.
    dropped_learners: BTreeSet<NodeId>,
}

impl Plan {
    /// Checks the request against `membership` (step 1).
    fn new(
        membership: &Membership<NodeId, LeaseNode>,
        voters: &BTreeMap<NodeId, LeaseNode>,
    ) -> Result<Plan, ApiError> {
        let current_voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut new = BTreeMap::new();
        let mut promoted = BTreeSet::new();
        for (id, node) in voters {
            match membership.get_node(id) {
                Some(known) if known != node => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "node {id} is a member at raft {}, api {}, not at raft {}, api {}: a \
                         member's addresses are not changed in place; remove it (`leasehold \
                         member remove {id}`), then add it at its new addresses; nothing changed",
                        known.raft_addr, known.api_addr, node.raft_addr, node.api_addr
                    )));
                }
                Some(_) if !current_voters.contains(id) => {
                    promoted.insert(*id);
                }
                Some(_) => {}
                None => {
                    new.insert(*id, node.clone());
                }
            }
        }
        let dropped_learners = membership
            .learner_ids()
            .filter(|id| !voters.contains_key(id))
            .collect();
        Ok(Plan {
            voters: voters.clone(),
            new,
            promoted,
            dropped_learners,
        })
    }
}

/// The request's voters, checked (count, ids, addresses, duplicates).
pub(super) fn parse_voters(
    members: &[pb::Member],
) -> Result<BTreeMap<NodeId, LeaseNode>, ApiError> {
    if members.is_empty() || members.len() > VOTERS_MAX {
        return Err(ApiError::invalid(
            "voters",
            format!(
                "{} voters; between 1 and {VOTERS_MAX} are allowed",
                members.len()
            ),
        ));
    }
    let mut voters = BTreeMap::new();
    for m in members {
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
    Ok(voters)
}

/// The catch-up bound of a request (0: the default).
pub(super) fn catch_up_timeout(ms: u64) -> Result<Duration, ApiError> {
    match ms {
        0 => Ok(Duration::from_millis(CATCH_UP_TIMEOUT_MS_DEFAULT)),
        ms if ms > CATCH_UP_TIMEOUT_MS_MAX => Err(ApiError::invalid(
            "catch_up_timeout_ms",
            format!("{ms} ms is above the limit of {CATCH_UP_TIMEOUT_MS_MAX} ms"),
        )),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// The log index the leader knows `id` to have matched.
fn matched(m: &RaftMetrics<NodeId, LeaseNode>, id: NodeId) -> Option<u64> {
    m.replication
        .as_ref()?
        .get(&id)?
        .as_ref()
        .map(|log_id| log_id.index)
}

/// A member as the wire names it.
pub(super) fn member(id: NodeId, node: &LeaseNode, learner: bool) -> pb::Member {
    pb::Member {
        node_id: id,
        raft_addr: node.raft_addr.clone(),
        api_addr: node.api_addr.clone(),
        learner,
    }
}

/// Commits one membership entry under [`MEMBERSHIP_COMMIT_TIMEOUT`].
async fn commit<F>(
    change: F,
    what: &str,
) -> Result<openraft::raft::ClientWriteResponse<leasehold_raft::TypeConfig>, ApiError>
where
    F: std::future::Future<
        Output = Result<
            openraft::raft::ClientWriteResponse<leasehold_raft::TypeConfig>,
            crate::error::RaftWriteError,
        >,
    >,
{
    tokio::time::timeout(MEMBERSHIP_COMMIT_TIMEOUT, change)
        .await
        .map_err(|_| {
            ApiError::unavailable(format!(
                "{what} did not commit within {} s (it may still); check Status and retry",
                MEMBERSHIP_COMMIT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| ApiError::from(ProposeError::from(e)))
}

/// Probes member `id` of the new voter set (step 2), on leader `me` in
/// `term`, over TLS with this node's certificate when `tls` is set.
async fn probe(
    me: NodeId,
    term: u64,
    id: NodeId,
    node: &LeaseNode,
    kind: Kind,
    membership: &Membership<NodeId, LeaseNode>,
    tls: Option<&NodeTls>,
) -> Probe {
    let status = match status_of(&node.raft_addr, tls).await {
        Ok(s) => s,
        Err(why) => return Probe::Unreachable(why),
    };
    if status.node_id != id {
        return Probe::Refused(format!(
            "the node at raft address {} is node {}, not node {id}",
            node.raft_addr, status.node_id
        ));
    }
    match kind {
        Kind::Voter => {
            if status.leader_id == Some(me) && status.term == term {
                Probe::Ready
            } else {
                Probe::Unreachable(format!(
                    "it does not follow this leader (it names leader {} in term {})",
                    status
                        .leader_id
                        .map_or("none".to_string(), |l| l.to_string()),
                    status.term
                ))
            }
        }
        Kind::Learner => Probe::Ready,
        Kind::New => admissible(&status, membership),
    }
}

/// Whether a node not in the membership may be added, from its `Status`.
fn admissible(status: &PeerStatus, membership: &Membership<NodeId, LeaseNode>) -> Probe {
    if status.members.is_empty() {
        return match status.admission.as_str() {
            "awaiting_membership" => Probe::Ready,
            "probing" => Probe::NotYet(
                "it is still asking its --peer members whether it may join (admission \
                 \"probing\"): can it reach them?"
                    .into(),
            ),
            "quarantined" => Probe::Refused(
                "it is quarantined: the cluster its --peer members form still lists its id".into(),
            ),
            other => Probe::Refused(format!(
                "it is not waiting to be added (admission {other:?}); start it with an empty \
                 data directory and --join"
            )),
        };
    }
    // A node with Raft state: only one that was in this cluster before
    // (its last membership shares a member, addresses and all, with ours).
    let ours = status.members.iter().any(|(id, m)| {
        membership.get_node(id).is_some_and(|n| {
            n.raft_addr == m.raft_addr && n.api_addr == m.api_addr && *id != status.node_id
        })
    });
    if ours {
        Probe::Ready
    } else {
        Probe::Refused(format!(
            "it already belongs to another cluster (members {:?}); wipe its data directory and \
             start it with --join",
            status.members.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        ))
    }
}

/// One peer `Status` call to `raft_addr` within [`PROBE_TIMEOUT`]: on the
/// peer port, cluster-internal, so it needs no client credentials.
async fn status_of(raft_addr: &str, tls: Option<&NodeTls>) -> Result<PeerStatus, String> {
    let endpoint = leasehold_raft::tls::endpoint(raft_addr, tls)
        .map_err(|e| format!("bad raft address {raft_addr:?}: {e}"))?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .tcp_nodelay(true);
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("refuses connections ({e})"))?;
        let request =
            leasehold_raft::network::encode("status request", &()).map_err(|e| e.to_string())?;
        let reply = RaftPeerClient::new(channel)
            .status(request)
            .await
            .map_err(|s| s.message().to_string())?;
        leasehold_raft::network::decode::<PeerStatus>("status reply", reply.get_ref())
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, call).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("no status from its raft address {raft_addr}: {e}")),
        Err(_) => Err(format!(
            "no status from its raft address {raft_addr} within {} ms",
            PROBE_TIMEOUT.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> LeaseNode {
        LeaseNode {
            raft_addr: format!("r{id}"),
            api_addr: format!("a{id}"),
        }
    }

    /// Voters 1, 2, 3 and learner 4.
    fn membership() -> Membership<NodeId, LeaseNode> {
        let nodes: BTreeMap<NodeId, LeaseNode> = (1..=4).map(|id| (id, node(id))).collect();
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    fn request(ids: &[NodeId]) -> BTreeMap<NodeId, LeaseNode> {
        ids.iter().map(|id| (*id, node(*id))).collect()
    }

    fn status(node_id: NodeId, admission: &str, members: &[NodeId]) -> PeerStatus {
        PeerStatus {
            node_id,
            term: 1,
            leader: false,
            leader_id: None,
            applied_index: 0,
            members: members.iter().map(|id| (*id, node(*id))).collect(),
            admission: admission.into(),
        }
    }

    #[test]
    fn a_plan_adds_promotes_and_drops() -> Result<(), ApiError> {
        let m = membership();
        let p = Plan::new(&m, &request(&[1, 2, 5]))?;
        assert_eq!(p.new.keys().copied().collect::<Vec<_>>(), [5]);
        assert!(p.promoted.is_empty());
        assert_eq!(p.dropped_learners, BTreeSet::from([4]));
        let p = Plan::new(&m, &request(&[1, 2, 3, 4]))?;
        assert!(p.new.is_empty());
        assert_eq!(p.promoted, BTreeSet::from([4]));
        assert!(p.dropped_learners.is_empty());
        Ok(())
    }

    #[test]
    fn an_address_change_is_refused() {
        let mut voters = request(&[1, 2, 3]);
        voters.insert(
            2,
            LeaseNode {
                raft_addr: "r2".into(),
                api_addr: "elsewhere".into(),
            },
        );
        match Plan::new(&membership(), &voters) {
            Err(ApiError::FailedPrecondition(m)) => {
                assert!(
                    m.contains("not changed in place") && m.contains("elsewhere"),
                    "{m}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn requests_are_checked() {
        assert!(parse_voters(&[]).is_err());
        let eight: Vec<pb::Member> = (1..=8).map(|id| member(id, &node(id), false)).collect();
        assert!(parse_voters(&eight).is_err());
        let twice = vec![member(1, &node(1), false), member(1, &node(1), false)];
        assert!(parse_voters(&twice).is_err());
        let mut no_addr = member(1, &node(1), false);
        no_addr.raft_addr.clear();
        assert!(parse_voters(&[no_addr]).is_err());
        assert_eq!(
            catch_up_timeout(0).ok(),
            Some(Duration::from_millis(CATCH_UP_TIMEOUT_MS_DEFAULT))
        );
        assert!(catch_up_timeout(CATCH_UP_TIMEOUT_MS_MAX).is_ok());
        assert!(catch_up_timeout(CATCH_UP_TIMEOUT_MS_MAX + 1).is_err());
    }

    #[test]
    fn who_may_be_added() {
        let m = membership();
        let ready = |p: Probe| matches!(p, Probe::Ready);
        assert!(ready(admissible(
            &status(5, "awaiting_membership", &[]),
            &m
        )));
        assert!(matches!(
            admissible(&status(5, "probing", &[]), &m),
            Probe::NotYet(_)
        ));
        assert!(matches!(
            admissible(&status(5, "quarantined", &[]), &m),
            Probe::Refused(_)
        ));
        assert!(matches!(
            admissible(&status(5, "restarted", &[]), &m),
            Probe::Refused(_)
        ));
        // Removed from this cluster without a wipe: its last membership
        // shares members with ours.
        assert!(ready(admissible(
            &status(5, "restarted", &[1, 2, 3, 5]),
            &m
        )));
        // Another cluster (only itself in common does not count).
        assert!(matches!(
            admissible(&status(5, "restarted", &[5, 8, 9]), &m),
            Probe::Refused(_)
        ));
    }
}
