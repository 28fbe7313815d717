//! Group commit: concurrent proposals on the leader share log entries
//! (`Command::Batch`), each caller still gets its own answer, every replica
//! applies the same, and positions survive a whole-cluster restart.

use std::collections::BTreeSet;
use std::sync::Arc;

use leasehold_core::{Command, Response, SessionSecret};
use leasehold_tests::{ClusterOptions, TestCluster};

/// Concurrent proposals in this test.
const PROPOSALS: u8 = 64;

fn open(i: u8) -> Command {
    Command::OpenSession {
        client_name: format!("c{i}"),
        ttl_ms: 60_000,
        secret: SessionSecret([i; 16]),
        request_id: 1_000 + u64::from(i),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_entries_and_each_gets_its_own_answer() -> anyhow::Result<()> {
    let cluster = Arc::new(TestCluster::start(ClusterOptions::default()).await?);
    let leader = cluster.leader().await?;

    let mut tasks = Vec::new();
    for i in 0..PROPOSALS {
        let cluster = Arc::clone(&cluster);
        tasks.push(tokio::spawn(async move {
            let answer = match cluster.node(leader) {
                Ok(node) => node.propose(open(i)).await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            (i, answer)
        }));
    }
    let mut indexes = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut last_index = 0;
    for task in tasks {
        let (i, answer) = task.await?;
        let (index, response) = answer?;
        match response {
            Response::SessionOpened {
                session, secret, ..
            } => {
                // Each caller's own session: its secret, not a neighbour's.
                assert_eq!(secret, SessionSecret([i; 16]), "proposal {i}");
                assert!(ids.insert(session), "session id {session} answered twice");
            }
            other => anyhow::bail!("proposal {i}: {other:?}"),
        }
        indexes.insert(index);
        last_index = last_index.max(index);
    }
    assert_eq!(ids.len(), usize::from(PROPOSALS));
    // Fewer entries than commands: they were grouped (one entry each
    // before group commit: 64 distinct indexes).
    assert!(
        indexes.len() < usize::from(PROPOSALS),
        "{} entries for {PROPOSALS} proposals",
        indexes.len()
    );

    // Every replica applied the same state.
    cluster.wait_all_applied(last_index).await?;
    let bytes = cluster.state_bytes(leader)?;
    for id in cluster.ids() {
        assert_eq!(cluster.state_bytes(id)?, bytes, "replica {id} differs");
    }
    let position = cluster.node(leader)?.state_machine().read(|s| s.position());
    assert!(position >= *ids.last().expect("ids"));

    // A whole-cluster restart keeps the position: new ids and tokens only grow.
    let Ok(mut cluster) = Arc::try_unwrap(cluster) else {
        anyhow::bail!("the cluster is still shared");
    };
    for id in cluster.ids() {
        cluster.stop(id).await?;
    }
    for id in cluster.ids() {
        cluster.restart(id).await?;
    }
    let (_, response) = cluster.propose(open(200)).await?;
    match response {
        Response::SessionOpened { session, .. } => {
            assert!(
                session > position,
                "session {session} after position {position}"
            )
        }
        other => anyhow::bail!("{other:?}"),
    }
    cluster.shutdown().await
}
