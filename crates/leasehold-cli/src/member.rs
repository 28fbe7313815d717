//! `leasehold member add | remove | list | replace`: membership one member
//! at a time (the client library's `add_member`, `remove_member`,
//! `replace_member`, `leader_status`).

use std::time::Duration;

use clap::{Args, Subcommand};
use leasehold_client::{Member, NodeStatus};
use serde_json::json;

use crate::commands::{default_holder, ConnArgs};
use crate::duration::parse_duration;
use crate::exit;
use crate::output;

/// Flags of `leasehold member`.
#[derive(Args, Debug)]
#[command(after_help = "\
A new member must be running with an empty data directory and --join (its \
Status shows admission \"awaiting_membership\"), or have been in this cluster \
before. It is probed (its Raft address must accept connections, its API must \
answer with the expected node id; asked again until the catch-up timeout), \
added as a learner, caught up, and only then made a voter by joint \
consensus. Refusals (a member that does not answer, another node or cluster \
at the address, an id listed with other addresses, a new voter set without a \
reachable majority) exit 3 and change nothing; a member that does not catch \
up in time is removed again and the command exits 5. Removing the leader \
works: it steps down once the change commits.")]
pub struct MemberArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: MemberCmd,
}

/// `leasehold member` subcommands.
#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Add a voter: ID=RAFT_ADDR,API_ADDR (caught up as a learner first).
    Add(AddArgs),
    /// Remove a member (voter or learner) by id.
    Remove(RemoveArgs),
    /// List voters and learners with their addresses, the leader marked.
    List,
    /// Replace voter OLD_ID by a new member ID=RAFT_ADDR,API_ADDR in one
    /// change (e.g. a failed node by a fresh one).
    Replace(ReplaceArgs),
}

/// Flags of `leasehold member add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The new member, ID=RAFT_ADDR,API_ADDR.
    pub member: leasehold_server::PeerSpec,
    /// How long it may take to catch up (default 30s, at most 10m).
    #[arg(long, value_parser = parse_duration)]
    pub catch_up_timeout: Option<Duration>,
}

/// Flags of `leasehold member remove`.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The member's node id.
    pub id: u64,
}

/// Flags of `leasehold member replace`.
#[derive(Args, Debug)]
pub struct ReplaceArgs {
    /// The voter to replace.
    pub old_id: u64,
    /// The new member, ID=RAFT_ADDR,API_ADDR (a new id).
    pub new: leasehold_server::PeerSpec,
    /// How long the new member may take to catch up (default 30s, at most
    /// 10m).
    #[arg(long, value_parser = parse_duration)]
    pub catch_up_timeout: Option<Duration>,
}

/// A client member from a `ID=RAFT,API` spec.
fn member(spec: &leasehold_server::PeerSpec) -> Member {
    Member {
        node_id: spec.id,
        raft_addr: spec.node.raft_addr.clone(),
        api_addr: spec.node.api_addr.clone(),
        learner: false,
    }
}

/// `leasehold member add|remove|list|replace`.
pub async fn member_command(args: MemberArgs, conn: &ConnArgs) -> anyhow::Result<u8> {
    let client = conn.connect(&default_holder()).await?;
    let voters = match args.command {
        MemberCmd::List => {
            let view = client.leader_status().await?;
            output::print(conn.output, MEMBER_HEADER, &records(&view))?;
            return Ok(exit::OK);
        }
        MemberCmd::Add(a) => {
            client
                .add_member(&member(&a.member), a.catch_up_timeout)
                .await?
        }
        MemberCmd::Remove(r) => client.remove_member(r.id).await?,
        MemberCmd::Replace(r) => {
            client
                .replace_member(r.old_id, &member(&r.new), r.catch_up_timeout)
                .await?
        }
    };
    let records: Vec<output::Record> = voters
        .iter()
        .map(|m| output::Record {
            cells: vec![
                m.node_id.to_string(),
                m.raft_addr.clone(),
                m.api_addr.clone(),
            ],
            json: json!({ "node_id": m.node_id, "raft_addr": m.raft_addr, "api_addr": m.api_addr }),
        })
        .collect();
    output::print(conn.output, &["VOTER", "RAFT", "API"], &records)?;
    Ok(exit::OK)
}

/// Header of `member list`.
const MEMBER_HEADER: &[&str] = &["ID", "ROLE", "RAFT", "API", "LEADER"];

/// The members of the leader's view, voters first, the leader marked.
fn records(view: &NodeStatus) -> Vec<output::Record> {
    let mut members = view.members.clone();
    members.sort_by_key(|m| (m.learner, m.node_id));
    members
        .iter()
        .map(|m| {
            let role = if m.learner { "learner" } else { "voter" };
            let leader = view.leader_id == Some(m.node_id);
            output::Record {
                cells: vec![
                    m.node_id.to_string(),
                    role.into(),
                    m.raft_addr.clone(),
                    m.api_addr.clone(),
                    if leader { "yes".into() } else { String::new() },
                ],
                json: json!({
                    "node_id": m.node_id,
                    "role": role,
                    "raft_addr": m.raft_addr,
                    "api_addr": m.api_addr,
                    "leader": leader,
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_puts_voters_first_and_marks_the_leader() {
        let m = |node_id, learner| Member {
            node_id,
            raft_addr: format!("r{node_id}"),
            api_addr: format!("a{node_id}"),
            learner,
        };
        let view = NodeStatus {
            endpoint: "http://a1".into(),
            node_id: 1,
            role: "leader".into(),
            leader_id: Some(1),
            leader_api_addr: Some("a1".into()),
            term: 2,
            commit_index: 5,
            applied_index: 5,
            members: vec![m(4, true), m(2, false), m(1, false)],
            serving: leasehold_client::Serving::Serving,
            grace_remaining: Duration::ZERO,
            sessions: 0,
            resources: 0,
            config: None,
            config_error: None,
        };
        let r = records(&view);
        assert_eq!(r[0].cells, ["1", "voter", "r1", "a1", "yes"]);
        assert_eq!(r[1].cells, ["2", "voter", "r2", "a2", ""]);
        assert_eq!(r[2].cells, ["4", "learner", "r4", "a4", ""]);
        assert_eq!(r[2].json["role"], "learner");
    }
}
