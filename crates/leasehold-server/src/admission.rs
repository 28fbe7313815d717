//! The join rule: what a node whose store is **pristine** (no vote, no log)
//! does at start.
//!
//! A pristine node cannot tell on its own whether it is a founding member of
//! a cluster that does not exist yet, a new member about to be added, or a
//! member whose data directory was wiped. The last one is dangerous: the
//! cluster may still count it as a voter (its empty log would vote for a
//! candidate that lacks committed entries) and the leader may remember how
//! far its old log went (openraft treats a follower log going backwards as a
//! bug). So a pristine node starts **quarantined** — its peer service refuses
//! every Raft RPC — and asks every `--peer` member for its status (the
//! `Status` RPC of the peer service, on the Raft port: cluster-internal,
//! so it needs none of the client API's credentials):
//!
//! 1. If some member has committed entries (the cluster is formed), the node
//!    never initializes. It follows the view of the member that answers as
//!    leader (the highest term if several do):
//!    - that membership lists this node id → it stays
//!      [`Admission::Quarantined`] and keeps asking: the operator must first
//!      remove the id (`leasehold membership` without it);
//!    - it does not → [`Admission::AwaitingMembership`]: the quarantine
//!      ends and the node waits to be added (ChangeMembership adds it as a
//!      learner, it catches up from a snapshot, then becomes a voter). The
//!      leader dropped its progress for the id when the id left the
//!      membership, so it starts from scratch and sees no log reversion.
//! 2. Otherwise, once **every** other member has answered (none formed), a
//!    node allowed to found (not `--join`) initializes the cluster with the
//!    `--peer` list, as the others do: [`Admission::Founded`].
//! 3. Otherwise it keeps asking (some member unreachable, or no leader yet).
//!
//! A node whose store is not pristine at start is [`Admission::Restarted`]
//! and none of this applies.

use std::collections::BTreeMap;
use std::time::Duration;

use leasehold_proto::raft::v1::raft_peer_client::RaftPeerClient;
use leasehold_raft::network::PeerStatus;
use leasehold_raft::{LeaseNode, NodeId, Raft};
use openraft::error::{InitializeError, RaftError};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::config::NodeConfig;
use crate::shutdown::ShutdownSignal;

/// Pause between two rounds of questions to the peers.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long one Status question may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a node stands with the cluster, as decided at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Its store held a vote or log entries at start: an ordinary restart.
    Restarted,
    /// Pristine; still asking its `--peer` members (quarantined meanwhile).
    Probing,
    /// Pristine, and the cluster's leader still lists this node id as a
    /// member: its earlier incarnation's log is gone, so it refuses every
    /// Raft RPC until the id is removed from the membership.
    Quarantined,
    /// Pristine, not a member: answers Raft RPCs and waits to be added.
    AwaitingMembership,
    /// Pristine, and no member had formed a cluster: it initialized one
    /// with the `--peer` list.
    Founded,
}

impl Admission {
    /// Its name in `Status` (`admission`).
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Restarted => "restarted",
            Admission::Probing => "probing",
            Admission::Quarantined => "quarantined",
            Admission::AwaitingMembership => "awaiting_membership",
            Admission::Founded => "founded",
        }
    }

    /// Whether the node's peer service refuses every Raft RPC in this state.
    pub fn quarantined(self) -> bool {
        matches!(self, Admission::Probing | Admission::Quarantined)
    }
}

/// What one member answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerView {
    /// No answer in time.
    Unreachable,
    /// Its store is pristine too (no membership).
    Pristine,
    /// Initialized, but nothing committed yet (a founding member ahead of us).
    Forming,
    /// A cluster that has committed entries.
    Formed {
        /// Whether it answered as leader.
        leader: bool,
        /// Its term.
        term: u64,
        /// Every node id of its membership (voters and learners).
        members: Vec<NodeId>,
    },
}

impl PeerView {
    /// Classifies a peer's status answer.
    pub(crate) fn from_status(s: &PeerStatus) -> PeerView {
        if s.members.is_empty() {
            PeerView::Pristine
        } else if s.applied_index == 0 {
            PeerView::Forming
        } else {
            PeerView::Formed {
                leader: s.leader,
                term: s.term,
                members: s.members.iter().map(|(id, _)| *id).collect(),
            }
        }
    }
}

/// What to do after a round of questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Ask again later.
    Wait,
    /// Initialize the cluster with the `--peer` list.
    Found,
    /// The leader lists this id: stay out.
    Quarantine,
    /// A formed cluster without this id: answer peers, wait to be added.
    AwaitMembership,
}

/// The join rule (module docs) for node `me` given every other member's
/// answer; `may_found` is false for `--join`.
pub(crate) fn decide(me: NodeId, may_found: bool, views: &[PeerView]) -> Decision {
    let formed: Vec<(u64, bool, &Vec<NodeId>)> = views
        .iter()
        .filter_map(|v| match v {
            PeerView::Formed {
                leader,
                term,
                members,
            } => Some((*term, *leader, members)),
            _ => None,
        })
        .collect();
    if !formed.is_empty() {
        // Follow a leader only of the highest term any member reports (a
        // partitioned old leader answering with an older view must not let
        // this node out), and stay out while any view that recent still
        // lists this id.
        let newest = formed.iter().map(|(t, _, _)| *t).max().unwrap_or(0);
        let leader_is_newest = formed
            .iter()
            .any(|(term, leader, _)| *leader && *term == newest);
        if !leader_is_newest {
            return Decision::Wait;
        }
        let listed = formed
            .iter()
            .any(|(term, _, members)| *term >= newest && members.contains(&me));
        return if listed {
            Decision::Quarantine
        } else {
            Decision::AwaitMembership
        };
    }
    if views.contains(&PeerView::Unreachable) || !may_found {
        return Decision::Wait;
    }
    Decision::Found
}

/// Asks one member for its status on its peer port.
async fn probe(client: &mut RaftPeerClient<Channel>) -> PeerView {
    let Ok(request) = leasehold_raft::network::encode("status request", &()) else {
        return PeerView::Unreachable;
    };
    match tokio::time::timeout(PROBE_TIMEOUT, client.status(request)).await {
        Ok(Ok(reply)) => {
            match leasehold_raft::network::decode::<PeerStatus>("status reply", reply.get_ref()) {
                Ok(status) => PeerView::from_status(&status),
                Err(_) => PeerView::Unreachable,
            }
        }
        _ => PeerView::Unreachable,
    }
}

/// Runs the join rule for a pristine node until it is decided (or shutdown),
/// turning `quarantine` off when the node may answer its peers and
/// publishing each state on `state`.
pub(crate) async fn admit(
    config: NodeConfig,
    tls: Option<leasehold_raft::tls::NodeTls>,
    raft: Raft,
    quarantine: leasehold_raft::network::Isolation,
    state: watch::Sender<Admission>,
    shutdown: ShutdownSignal,
) {
    let node_id = config.node_id;
    let mut clients: Vec<RaftPeerClient<Channel>> = Vec::new();
    let mut unusable = 0usize;
    for p in config.peers.iter().filter(|p| p.id != node_id) {
        match leasehold_raft::tls::endpoint(&p.node.raft_addr, tls.as_ref()) {
            Ok(e) => clients.push(RaftPeerClient::new(
                e.connect_timeout(PROBE_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy(),
            )),
            Err(error) => {
                tracing::error!(node_id, peer = p.id, %error, "bad peer Raft address; it counts as unreachable");
                unusable += 1;
            }
        }
    }
    loop {
        let mut views: Vec<PeerView> =
            futures::future::join_all(clients.iter_mut().map(probe)).await;
        views.extend((0..unusable).map(|_| PeerView::Unreachable));
        match decide(node_id, config.bootstrap, &views) {
            Decision::Found => {
                found(&config, &raft).await;
                quarantine.set(false);
                state.send_replace(Admission::Founded);
                return;
            }
            Decision::AwaitMembership => {
                quarantine.set(false);
                state.send_replace(Admission::AwaitingMembership);
                tracing::info!(
                    node_id,
                    "pristine store and not a member of the cluster: waiting to be added"
                );
                return;
            }
            Decision::Quarantine => {
                if state.send_replace(Admission::Quarantined) != Admission::Quarantined {
                    tracing::error!(
                        node_id,
                        "this node's store is pristine but the cluster's leader still lists \
                         node {node_id} as a member (its data was lost): refusing all Raft \
                         traffic; remove {node_id} from the membership, then add it back"
                    );
                }
            }
            Decision::Wait => {}
        }
        let signal = shutdown.clone();
        tokio::select! {
            _ = signal.recv() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// Initializes the cluster with the `--peer` list.
async fn found(config: &NodeConfig, raft: &Raft) {
    let node_id = config.node_id;
    let members: BTreeMap<NodeId, LeaseNode> = config
        .peers
        .iter()
        .map(|p| (p.id, p.node.clone()))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(node_id, "cluster initialized"),
        // Another founding member's identical initialization reached us first.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
        Err(error) => tracing::error!(node_id, %error, "initializing the cluster failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formed(leader: bool, term: u64, members: &[NodeId]) -> PeerView {
        PeerView::Formed {
            leader,
            term,
            members: members.to_vec(),
        }
    }

    #[test]
    fn founds_only_when_every_member_answered_and_none_formed() {
        use PeerView::*;
        assert_eq!(decide(1, true, &[Pristine, Pristine]), Decision::Found);
        assert_eq!(decide(1, true, &[Forming, Pristine]), Decision::Found);
        assert_eq!(
            decide(1, true, &[]),
            Decision::Found,
            "a single-node cluster"
        );
        assert_eq!(decide(1, true, &[Pristine, Unreachable]), Decision::Wait);
        assert_eq!(
            decide(1, false, &[Pristine, Pristine]),
            Decision::Wait,
            "--join"
        );
    }

    #[test]
    fn a_formed_cluster_is_never_founded_again() {
        use PeerView::*;
        let in_it = formed(true, 4, &[1, 2, 3]);
        let without = formed(true, 4, &[2, 3]);
        assert_eq!(
            decide(1, true, &[in_it.clone(), Pristine]),
            Decision::Quarantine
        );
        assert_eq!(
            decide(1, true, &[without.clone(), Unreachable]),
            Decision::AwaitMembership
        );
        assert_eq!(
            decide(1, false, &[without, Unreachable]),
            Decision::AwaitMembership
        );
        // No leader among the answers: wait, even if a follower omits us.
        assert_eq!(
            decide(1, true, &[formed(false, 4, &[2, 3]), Pristine]),
            Decision::Wait
        );
        // A stale leader loses to the one with the higher term.
        assert_eq!(
            decide(
                1,
                true,
                &[formed(true, 3, &[2, 3]), formed(true, 5, &[1, 2, 3])]
            ),
            Decision::Quarantine
        );
        // A partitioned old leader (term 3, without us) while a follower of
        // the newer term 4 still lists us: stay out, never trust the old view.
        assert_eq!(
            decide(
                1,
                true,
                &[formed(true, 3, &[2, 3]), formed(false, 4, &[1, 2, 3])]
            ),
            Decision::Wait
        );
        // The newest leader without us, but a follower of that term still
        // listing us (it has not applied the removal yet): stay out too.
        assert_eq!(
            decide(
                1,
                true,
                &[formed(true, 4, &[2, 3]), formed(false, 4, &[1, 2, 3])]
            ),
            Decision::Quarantine
        );
    }

    #[test]
    fn status_answers_classify() {
        let mut s = PeerStatus {
            node_id: 1,
            term: 1,
            leader: false,
            leader_id: None,
            applied_index: 0,
            members: Vec::new(),
            admission: "probing".into(),
        };
        assert_eq!(PeerView::from_status(&s), PeerView::Pristine);
        s.members.push((
            2,
            LeaseNode {
                raft_addr: "r2".into(),
                api_addr: "a2".into(),
            },
        ));
        assert_eq!(PeerView::from_status(&s), PeerView::Forming);
        s.applied_index = 7;
        s.leader = true;
        s.term = 3;
        assert_eq!(PeerView::from_status(&s), formed(true, 3, &[2]));
    }
}
