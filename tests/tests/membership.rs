//! Membership changes done safely (docs/adr/0004-membership-changes.md):
//! new members are probed and caught up as learners before they vote, a
//! member that cannot catch up is removed again, dangerous changes are
//! refused with the membership untouched, five-node clusters and replacing
//! a failed node work. Every assertion reads `Status` (what an operator
//! sees).

use leasehold_proto::v1 as pb;
use leasehold_raft::NodeId;
use leasehold_server::Admission;
use leasehold_tests::grpc::{acquire_req, client, open, release_req};
use leasehold_tests::{wait_until, ClusterOptions, TestCluster, WAIT};
use tonic::Code;

async fn start() -> anyhow::Result<TestCluster> {
    let c = TestCluster::start(ClusterOptions::default()).await?;
    c.serving_leader().await?;
    Ok(c)
}

/// `(id, learner)` of every member a `Status` lists, in id order.
fn roles(s: &pb::StatusResponse) -> Vec<(NodeId, bool)> {
    let mut r: Vec<_> = s.members.iter().map(|m| (m.node_id, m.learner)).collect();
    r.sort();
    r
}

/// `ids` as voters.
fn voters(ids: &[NodeId]) -> Vec<(NodeId, bool)> {
    ids.iter().map(|id| (*id, false)).collect()
}

/// Members of the cluster for `ids`.
fn members(c: &TestCluster, ids: &[NodeId]) -> anyhow::Result<Vec<pb::Member>> {
    ids.iter().map(|id| c.member(*id)).collect()
}

/// Waits until every running node in `on` reports exactly `want` as its
/// members.
async fn members_become(
    c: &TestCluster,
    on: &[NodeId],
    want: &[(NodeId, bool)],
) -> anyhow::Result<()> {
    for id in on {
        wait_until(
            &format!("node {id} to report members {want:?}"),
            WAIT,
            || async { c.status(*id).await.ok().filter(|s| roles(s) == want) },
        )
        .await?;
    }
    Ok(())
}

/// A loopback address nothing listens on (bound, then closed).
async fn dead_addr() -> anyhow::Result<String> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.to_string())
}

/// Acquires and releases a lease through the serving leader.
async fn acquire_and_release(c: &TestCluster, resource: &str) -> anyhow::Result<u64> {
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let s = open(&ep, "member-test", 10_000).await?;
    let mut api = client(&ep).await?;
    let lease = api
        .acquire(acquire_req(s, resource, false, 0))
        .await?
        .into_inner()
        .lease
        .ok_or_else(|| anyhow::anyhow!("no lease in the answer"))?;
    api.release(release_req(s, resource)).await?;
    Ok(lease.fencing_token)
}

/// The attack from issue 9: voters at addresses nothing answers on. Such
/// members were voters at once (with two, pausing one real follower lost
/// the quorum); now they are refused and nothing changes. So is a node
/// that answers under another id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_that_do_not_answer_are_refused_and_nothing_changes() -> anyhow::Result<()> {
    let mut c = start().await?;
    let leader = c.serving_leader().await?;
    let before = c.status(leader).await?;
    assert_eq!(roles(&before), voters(&[1, 2, 3]));

    let fake = |id, raft: &str, api: &str| pb::Member {
        node_id: id,
        raft_addr: raft.into(),
        api_addr: api.into(),
        learner: false,
    };
    let (raft4, api4) = (dead_addr().await?, dead_addr().await?);
    let mut request = members(&c, &[1, 2, 3])?;
    request.push(fake(4, &raft4, &api4));
    // (A new member is asked again until the catch-up deadline: it may be
    // starting. Half a second here.)
    let e = c
        .change_membership(request.clone(), 500)
        .await?
        .expect_err("a member at a dead address");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("node 4") && e.message().contains(&raft4),
        "the refusal names the member and its address: {}",
        e.message()
    );
    // Two fake voters at once.
    let (raft5, api5) = (dead_addr().await?, dead_addr().await?);
    request.push(fake(5, &raft5, &api5));
    let e = c
        .change_membership(request, 500)
        .await?
        .expect_err("two members at dead addresses");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // A real node that answers as node 4, asked for as node 5.
    c.start_new_node(4).await?;
    c.wait_admission(4, Admission::AwaitingMembership).await?;
    let real4 = c.member(4)?;
    let mut request = members(&c, &[1, 2, 3])?;
    request.push(fake(5, &real4.raft_addr, &real4.api_addr));
    let e = c
        .change_membership(request, 0)
        .await?
        .expect_err("a node answering under another id");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("is node 4, not node 5"),
        "{}",
        e.message()
    );

    // Nothing changed: no voter, no learner left behind, on any node.
    members_become(&c, &[1, 2, 3], &voters(&[1, 2, 3])).await?;
    let after = c.status(leader).await?;
    assert_eq!(after.members, before.members);
    acquire_and_release(&c, "m/still-serving").await?;
    c.shutdown().await
}

/// A new member cut off from its peers cannot catch up: the change times
/// out with DEADLINE_EXCEEDED, the learner it added is removed again, and
/// once reconnected the same node is added normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_cannot_catch_up_is_removed_again() -> anyhow::Result<()> {
    let mut c = start().await?;
    c.start_new_node(4).await?;
    c.wait_admission(4, Admission::AwaitingMembership).await?;
    assert_eq!(c.status(4).await?.admission, "awaiting_membership");
    c.isolate(4, true)?;
    let e = c
        .change_membership(members(&c, &[1, 2, 3, 4])?, 1_000)
        .await?
        .expect_err("an isolated member cannot catch up");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains("did not catch up") && e.message().contains("node 4"),
        "{}",
        e.message()
    );
    // Answered only after the learner was removed: no lingering learner.
    let leader = c.serving_leader().await?;
    assert_eq!(roles(&c.status(leader).await?), voters(&[1, 2, 3]));
    members_become(&c, &[1, 2, 3], &voters(&[1, 2, 3])).await?;

    // Reconnected, it catches up and becomes a voter.
    c.isolate(4, false)?;
    let r = c
        .change_membership(members(&c, &[1, 2, 3, 4])?, 0)
        .await?
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert_eq!(
        r.voters.iter().map(|m| m.node_id).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    members_become(&c, &[1, 2, 3, 4], &voters(&[1, 2, 3, 4])).await?;
    assert_eq!(c.status(4).await?.admission, "joined");
    // Bounds of the catch-up timeout.
    let e = c
        .change_membership(members(&c, &[1, 2, 3, 4])?, 600_001)
        .await?
        .expect_err("above the limit");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("catch_up_timeout_ms"),
        "{}",
        e.message()
    );
    c.shutdown().await
}

/// Two fresh nodes added to reach five voters (asked for right after they
/// started): the cluster then serves with any two of them down (here the
/// leader and one more).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_node_cluster_serves_with_two_nodes_down() -> anyhow::Result<()> {
    let mut c = start().await?;
    // Asked for at once after their start, while they still ask their
    // peers whether they may join: the leader asks them again until they
    // are ready (what a script adding a node it just started does).
    for id in [4, 5] {
        c.start_new_node(id).await?;
    }
    let r = c
        .change_membership(members(&c, &[1, 2, 3, 4, 5])?, 0)
        .await?
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert_eq!(r.voters.len(), 5);
    members_become(&c, &[1, 2, 3, 4, 5], &voters(&[1, 2, 3, 4, 5])).await?;
    let before = acquire_and_release(&c, "m/five").await?;

    let leader = c.serving_leader().await?;
    let other = [1, 2, 3, 4, 5]
        .into_iter()
        .find(|id| *id != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    c.stop(leader).await?;
    c.stop(other).await?;
    let after = acquire_and_release(&c, "m/five").await?;
    assert!(after > before, "tokens grow across the failover");
    let new_leader = c.serving_leader().await?;
    assert!(![leader, other].contains(&new_leader));
    assert_eq!(
        roles(&c.status(new_leader).await?),
        voters(&[1, 2, 3, 4, 5])
    );
    c.shutdown().await
}

/// A failed follower replaced by a fresh node in one change (the new one
/// caught up as a learner, then one joint change swaps the voters): the
/// cluster serves, Status lists the new node and not the old, and leases
/// granted before are still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_node_is_replaced_by_a_fresh_one() -> anyhow::Result<()> {
    let mut c = start().await?;
    let leader = c.serving_leader().await?;
    let ep = c.api_endpoint(leader)?;
    let holder = open(&ep, "holder", 60_000).await?;
    let held = client(&ep)
        .await?
        .acquire(acquire_req(holder, "m/held", false, 0))
        .await?
        .into_inner()
        .lease
        .ok_or_else(|| anyhow::anyhow!("no lease"))?;
    let failed = c.other_than(leader)?;
    c.stop(failed).await?;
    c.start_new_node(4).await?;
    c.wait_admission(4, Admission::AwaitingMembership).await?;

    let keep: Vec<NodeId> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != failed)
        .collect();
    let r = c
        .change_membership(members(&c, &keep)?, 0)
        .await?
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert_eq!(r.voters.iter().map(|m| m.node_id).collect::<Vec<_>>(), keep);
    members_become(&c, &keep, &voters(&keep)).await?;
    let s = c.status(4).await?;
    assert!(s.members.iter().all(|m| m.node_id != failed));
    c.wait_applied(4, r.log_index).await?;
    let g = client(&c.api_endpoint(4)?)
        .await?
        .get(pb::GetRequest {
            resource: "m/held".into(),
        })
        .await?
        .into_inner();
    let holders = g.state.map(|s| s.holders).unwrap_or_default();
    assert_eq!(holders.len(), 1, "the lease granted before is still held");
    assert_eq!(holders[0].fencing_token, held.fencing_token);
    let token = acquire_and_release(&c, "m/after-replace").await?;
    assert!(token > held.fencing_token);
    c.shutdown().await
}

/// Addresses never change in place and a new voter set without a
/// reachable majority is refused: each answers
/// FAILED_PRECONDITION saying why, and Status keeps the membership as it
/// was (old addresses included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dangerous_changes_are_refused_and_status_keeps_the_membership() -> anyhow::Result<()> {
    let mut c = start().await?;
    let leader = c.serving_leader().await?;
    let before = c.status(leader).await?;
    let follower = c.other_than(leader)?;

    // An existing member listed at other addresses.
    let mut moved = members(&c, &[1, 2, 3])?;
    let new_api = dead_addr().await?;
    for m in &mut moved {
        if m.node_id == follower {
            m.api_addr = new_api.clone();
        }
    }
    let e = c
        .change_membership(moved, 0)
        .await?
        .expect_err("an address change");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("not changed in place") && e.message().contains(&new_api),
        "{}",
        e.message()
    );
    assert_eq!(c.status(leader).await?.members, before.members);

    // A follower down, and a new voter set of the leader and that follower:
    // one reachable of two is no majority.
    c.stop(follower).await?;
    let e = c
        .change_membership(members(&c, &[leader, follower])?, 0)
        .await?
        .expect_err("no reachable majority");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("reachable") && e.message().contains(&format!("node {follower}")),
        "{}",
        e.message()
    );
    assert_eq!(c.status(leader).await?.members, before.members);
    acquire_and_release(&c, "m/after-refusals").await?;
    c.shutdown().await
}

/// The leader may remove itself (e.g. `member replace` of the node that
/// happens to lead): openraft steps it down once the configuration without
/// it is committed, another node takes over, and leases keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_removes_itself_and_another_takes_over() -> anyhow::Result<()> {
    let c = start().await?;
    let leader = c.serving_leader().await?;
    let before = acquire_and_release(&c, "m/before").await?;
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let r = c
        .change_membership(members(&c, &rest)?, 0)
        .await?
        .map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert_eq!(r.voters.iter().map(|m| m.node_id).collect::<Vec<_>>(), rest);
    members_become(&c, &rest, &voters(&rest)).await?;
    let new_leader = wait_until("another node to serve", WAIT, || async {
        c.running()
            .find(|n| n.id() != leader && n.serving().may_serve())
            .map(|n| n.id())
    })
    .await?;
    assert!(rest.contains(&new_leader));
    assert!(
        !c.node(leader)?.serving().may_serve(),
        "the removed leader still serves"
    );
    let after = acquire_and_release(&c, "m/after").await?;
    assert!(after > before);
    c.shutdown().await
}
