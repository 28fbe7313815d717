//! Transport security: a TLS cluster works end to end; peers without a
//! certificate of the cluster CA cannot send Raft messages, nor can holders
//! of a client certificate the CA signed (the peer port takes node
//! certificates only); clients without the CA cannot use the API; a node
//! refuses to start without an explicit choice between TLS and plaintext.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use leasehold_proto::raft::v1::raft_peer_client::RaftPeerClient;
use leasehold_proto::raft::v1::RaftPayload;
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::leasehold_client::LeaseholdClient;
use leasehold_server::certs::{self, NodeCert};
use leasehold_server::{Node, NodeConfig, PeerSpec};
use leasehold_tests::{ClusterOptions, TestCluster};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

/// Bound on one raw call in these tests.
const CALL: Duration = Duration::from_secs(5);

fn tls_options() -> ClusterOptions {
    ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    }
}

fn read(dir: &Path, file: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(dir.join(file)).with_context(|| format!("reading {file}"))
}

/// A channel to `addr`: `https://` with `tls`, else `http://`.
async fn channel(addr: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<Channel> {
    let endpoint = match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint.connect_timeout(CALL).connect_lazy())
}

/// Trusts the CA in `dir` and presents `identity` (certificate, key files).
fn tls_config(ca_dir: &Path, identity: Option<(&Path, &str)>) -> anyhow::Result<ClientTlsConfig> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca_dir, "ca.pem")?));
    if let Some((dir, name)) = identity {
        tls = tls.identity(Identity::from_pem(
            read(dir, &format!("{name}.pem"))?,
            read(dir, &format!("{name}-key.pem"))?,
        ));
    }
    Ok(tls)
}

/// One AppendEntries call with an undecodable payload: a caller that gets
/// through TLS reaches the service, which refuses it as INVALID_ARGUMENT;
/// one stopped by TLS never reaches it.
async fn append_entries(channel: Channel) -> tonic::Status {
    let mut client = RaftPeerClient::new(channel);
    let call = client.append_entries(RaftPayload {
        data: vec![0xff; 8].into(),
    });
    match tokio::time::timeout(CALL, call).await {
        Ok(Ok(_)) => tonic::Status::ok("answered"),
        Ok(Err(status)) => status,
        Err(_) => tonic::Status::deadline_exceeded("no answer"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_elects_a_leader_and_serves_a_client_with_the_ca() -> anyhow::Result<()> {
    let cluster = TestCluster::start(tls_options()).await?;
    let dir = cluster.tls_dir().context("TLS cluster")?;
    let leader = cluster.serving_leader().await?;
    // Through a follower: the request is forwarded to the leader over TLS.
    let follower = cluster.other_than(leader)?;
    let addr = cluster.api_endpoint(follower)?;
    for identity in [None, Some((dir.as_path(), certs::DEFAULT_CLIENT))] {
        let mut client =
            LeaseholdClient::new(channel(&addr, Some(tls_config(&dir, identity)?)).await?);
        let opened = client
            .open_session(pb::OpenSessionRequest {
                client_name: "tls-test".into(),
                ttl_ms: 5_000,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(opened.session_id > 0, "{opened:?}");
        let status = client
            .status(pb::StatusRequest::default())
            .await?
            .into_inner();
        assert_eq!(status.node_id, follower);
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_cluster_certificate_cannot_send_raft_messages() -> anyhow::Result<()> {
    let cluster = TestCluster::start(tls_options()).await?;
    let dir = cluster.tls_dir().context("TLS cluster")?;
    let leader = cluster.serving_leader().await?;
    let raft_addr = cluster.node(leader)?.raft_addr().to_string();
    let rogue = tempfile::tempdir()?;
    certs::init(
        rogue.path(),
        &["9=127.0.0.1"
            .parse::<NodeCert>()
            .map_err(anyhow::Error::msg)?],
        &[],
        false,
    )?;
    let before = cluster.node(leader)?.raft().metrics().borrow().clone();

    // The control: the leader's own certificate gets through TLS, and the
    // service itself refuses the undecodable payload.
    let own =
        append_entries(channel(&raft_addr, Some(tls_config(&dir, Some((&dir, "node-1")))?)).await?)
            .await;
    assert_eq!(own.code(), Code::InvalidArgument, "{own:?}");

    let refused = [
        ("plaintext", None),
        (
            "TLS without a client certificate",
            Some(tls_config(&dir, None)?),
        ),
        (
            "a certificate of another CA",
            Some(tls_config(&dir, None)?.identity(Identity::from_pem(
                read(rogue.path(), "node-9.pem")?,
                read(rogue.path(), "node-9-key.pem")?,
            ))),
        ),
        (
            "a client certificate of the cluster CA presented to the wrong CA's server",
            Some(tls_config(rogue.path(), Some((&dir, "node-1")))?),
        ),
    ];
    for (what, tls) in refused {
        let status = append_entries(channel(&raft_addr, tls).await?).await;
        assert!(
            !matches!(status.code(), Code::Ok | Code::InvalidArgument),
            "{what}: reached the peer service: {status:?}"
        );
    }
    // Nothing reached Raft: same term, same log, same leader.
    let after = cluster.node(leader)?.raft().metrics().borrow().clone();
    assert_eq!(after.current_term, before.current_term);
    assert_eq!(after.current_leader, Some(leader));
    cluster.shutdown().await
}

/// One peer RPC of each kind, as `identity` (cluster TLS directory file
/// name) would send them: AppendEntries and Vote carrying a term well
/// above the cluster's and a leader that does not exist (what a rogue
/// peer would send to take over), and Status.
async fn peer_rpcs(
    addr: &str,
    tls: ClientTlsConfig,
    term: u64,
) -> anyhow::Result<Vec<(&'static str, tonic::Status)>> {
    use leasehold_raft::network::payload::{self, AppendEntriesRequest, VoteRpc};
    use openraft::Vote;
    let mut client = RaftPeerClient::new(channel(addr, Some(tls)).await?);
    let rogue: u64 = 9;
    let append = payload::encode(
        "append_entries",
        &AppendEntriesRequest {
            vote: Vote::new_committed(term + 10, rogue),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        },
    )?;
    let vote = payload::encode("vote", &VoteRpc::new(Vote::new(term + 20, rogue), None))?;
    let answer = |r: Result<tonic::Response<RaftPayload>, tonic::Status>| match r {
        Ok(_) => tonic::Status::ok("answered"),
        Err(status) => status,
    };
    let mut out = Vec::new();
    let r = tokio::time::timeout(CALL, client.append_entries(append)).await?;
    out.push(("append_entries", answer(r)));
    let r = tokio::time::timeout(CALL, client.vote(vote)).await?;
    out.push(("vote", answer(r)));
    let r = tokio::time::timeout(CALL, client.status(RaftPayload::default())).await?;
    out.push(("status", answer(r)));
    // A withdrawal would release a lease: never from a client's certificate.
    let withdraw = payload::encode(
        "withdraw",
        &payload::Withdrawal {
            session: 1,
            resource: "r".into(),
            queued_at: 1,
        },
    )?;
    let r = tokio::time::timeout(CALL, client.withdraw(withdraw)).await?;
    out.push(("withdraw", answer(r)));
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_signed_client_certificate_cannot_talk_to_the_peer_port() -> anyhow::Result<()> {
    let cluster = TestCluster::start(tls_options()).await?;
    let dir = cluster.tls_dir().context("TLS cluster")?;
    let leader = cluster.serving_leader().await?;
    let follower = cluster.other_than(leader)?;
    let before: Vec<_> = cluster
        .ids()
        .into_iter()
        .map(|id| Ok(cluster.node(id)?.raft().metrics().borrow().current_term))
        .collect::<anyhow::Result<_>>()?;
    let term = before.iter().copied().max().unwrap_or(0);

    // The control: a node certificate reaches the service (Status answers).
    let node_cert = format!("node-{leader}");
    let follower_addr = cluster.node(follower)?.raft_addr().to_string();
    let mut own = RaftPeerClient::new(
        channel(
            &follower_addr,
            Some(tls_config(&dir, Some((&dir, &node_cert)))?),
        )
        .await?,
    );
    tokio::time::timeout(CALL, own.status(RaftPayload::default())).await??;

    // The client certificate `client` of the same CA gets through the TLS
    // handshake, and every RPC is refused before it reaches Raft.
    for id in [leader, follower] {
        let addr = cluster.node(id)?.raft_addr().to_string();
        let answers = peer_rpcs(
            &addr,
            tls_config(&dir, Some((&dir, certs::DEFAULT_CLIENT)))?,
            term,
        )
        .await?;
        for (rpc, status) in answers {
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "node {id} {rpc}: {status:?}"
            );
            assert!(
                status.message().contains("node certificates only")
                    && status.message().contains("\"client\""),
                "node {id} {rpc}: {status:?}"
            );
        }
    }
    // Nothing reached Raft: same terms, same leader everywhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, term) in cluster.ids().into_iter().zip(before) {
        let m = cluster.node(id)?.raft().metrics().borrow().clone();
        assert_eq!(m.current_term, term, "node {id}");
        assert_eq!(m.current_leader, Some(leader), "node {id}");
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_ca_cannot_use_a_tls_api() -> anyhow::Result<()> {
    let cluster = TestCluster::start(tls_options()).await?;
    let leader = cluster.serving_leader().await?;
    let addr = cluster.api_endpoint(leader)?;
    let other = tempfile::tempdir()?;
    certs::init(other.path(), &[], &[], false)?;
    for (what, tls) in [
        ("plaintext", None),
        ("another CA", Some(tls_config(other.path(), None)?)),
    ] {
        let mut client = LeaseholdClient::new(channel(&addr, tls).await?);
        let call = client.status(pb::StatusRequest::default());
        let outcome = tokio::time::timeout(CALL, call).await.context(what)?;
        let status = outcome.expect_err(what);
        assert_ne!(status.code(), Code::Ok, "{what}");
    }
    cluster.shutdown().await
}

/// A single-node config on free ports in `dir`.
async fn lone_node(
    dir: &Path,
) -> anyhow::Result<(NodeConfig, tokio::net::TcpListener, tokio::net::TcpListener)> {
    let raft = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer: PeerSpec = format!("1={},{}", raft.local_addr()?, api.local_addr()?)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let mut config = NodeConfig::new(
        1,
        raft.local_addr()?,
        api.local_addr()?,
        vec![peer],
        dir.join("data"),
    );
    // What is under test is transport security, not auth.
    config.auth = leasehold_tests::AuthConfig::open();
    Ok((config, raft, api))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_without_tls_or_explicit_plaintext() -> anyhow::Result<()> {
    leasehold_tests::init_tracing();
    let dir = tempfile::tempdir()?;
    let (config, raft, api) = lone_node(dir.path()).await?;
    let e = match Node::start_with_listeners(config, raft, api).await {
        Ok(node) => {
            node.shutdown().await?;
            anyhow::bail!("started with neither TLS nor plaintext");
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains("tls") && e.contains("plaintext"), "{e}");
    assert!(!dir.path().join("data").exists(), "nothing created: {e}");

    // Unreadable TLS files: the error names the file.
    let (mut config, raft, api) = lone_node(dir.path()).await?;
    config.tls = Some(certs::node_files(&dir.path().join("missing"), 1));
    let e = match Node::start_with_listeners(config, raft, api).await {
        Ok(node) => {
            node.shutdown().await?;
            anyhow::bail!("started without its certificate files");
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains("tls.ca_cert") && e.contains("missing"), "{e}");

    // A certificate of the CA that is not this node's: a client's, or
    // another node's. Its peers would refuse it; it refuses to start.
    let tls = dir.path().join("tls");
    certs::init(
        &tls,
        &["2=127.0.0.1"
            .parse::<NodeCert>()
            .map_err(anyhow::Error::msg)?],
        &[certs::DEFAULT_CLIENT.into()],
        false,
    )?;
    for (cert, found) in [
        (certs::DEFAULT_CLIENT, "its subject CN is \"client\""),
        ("node-2", "it is node 2's"),
    ] {
        let (mut config, raft, api) = lone_node(dir.path()).await?;
        config.tls = Some(leasehold_server::TlsFiles {
            ca_cert: tls.join("ca.pem"),
            cert: tls.join(format!("{cert}.pem")),
            key: tls.join(format!("{cert}-key.pem")),
        });
        let e = match Node::start_with_listeners(config, raft, api).await {
            Ok(node) => {
                node.shutdown().await?;
                anyhow::bail!("started with {cert}'s certificate");
            }
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("not this node's certificate")
                && e.contains(found)
                && e.contains("\"leasehold node 1\""),
            "{e}"
        );
        assert!(!dir.path().join("data").exists(), "nothing created: {e}");
    }
    Ok(())
}
