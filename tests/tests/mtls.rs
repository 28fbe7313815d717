//! Client-certificate (mTLS) identities through real gRPC and real TLS on
//! a three-node cluster: a principal known by its certificate's subject CN
//! gets its role's calls under its prefixes, on the leader and through a
//! follower (which forwards the principal's name over its node
//! certificate); refused calls are PERMISSION_DENIED, an unknown CN is
//! UNAUTHENTICATED naming it; a client that sends the forwarded-principal
//! metadata itself is UNAUTHENTICATED. After each refusal nothing changed
//! (read back with the admin's token).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use leasehold_proto::v1 as pb;
use leasehold_proto::v1::leasehold_client::LeaseholdClient;
use leasehold_server::{AuthConfig, Principal, Role};
use leasehold_tests::grpc::{acquire_req, assert_refused, Observed, Sess};
use leasehold_tests::{ClusterOptions, TestCluster};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};

const ADMIN: &str = "admin-token-0123456789";
const TTL_MS: u64 = 120_000;
/// The metadata key a follower names a forwarded principal in.
const PRINCIPAL_KEY: &str = "x-leasehold-principal-bin";

/// An admin known by token (to read state back), a chunkserver known by
/// its certificate `cs` limited to `chunk/`, a reader known by its
/// certificate `dash`; the CA also signed `stranger`, whom no principal
/// names.
async fn start() -> anyhow::Result<TestCluster> {
    let c = TestCluster::start(ClusterOptions {
        tls: true,
        tls_clients: vec!["cs".into(), "dash".into(), "stranger".into()],
        auth: AuthConfig {
            principals: vec![
                Principal::with_token("ops", ADMIN, Role::Admin, &[]),
                Principal::with_cert_cn("chunkserver", "cs", Role::Client, &["chunk/"]),
                Principal::with_cert_cn("dashboard", "dash", Role::Reader, &[""]),
            ],
            open: false,
        },
        ..ClusterOptions::default()
    })
    .await?;
    c.serving_leader().await?;
    Ok(c)
}

fn read(dir: &Path, file: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(dir.join(file)).with_context(|| format!("reading {file}"))
}

/// A TLS client of node `id`'s API trusting the cluster CA, presenting the
/// certificate `cert` of the cluster's TLS directory (`cs`, `node-1`, …).
async fn api(
    cluster: &TestCluster,
    id: u64,
    cert: Option<&str>,
) -> anyhow::Result<LeaseholdClient<Channel>> {
    let dir = cluster.tls_dir().context("TLS cluster")?;
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&dir, "ca.pem")?));
    if let Some(name) = cert {
        tls = tls.identity(Identity::from_pem(
            read(&dir, &format!("{name}.pem"))?,
            read(&dir, &format!("{name}-key.pem"))?,
        ));
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", cluster.api_endpoint(id)?))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5));
    Ok(LeaseholdClient::new(endpoint.connect_lazy()))
}

/// `message` claiming to be forwarded for `principal`.
fn claiming<T>(principal: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert_bin(
        PRINCIPAL_KEY,
        MetadataValue::from_bytes(principal.as_bytes()),
    );
    r
}

/// What a refused call could have changed, read by the admin on the leader.
async fn observe(cluster: &TestCluster) -> anyhow::Result<Observed> {
    let leader = cluster.serving_leader().await?;
    let mut api = api(cluster, leader, None).await?;
    leasehold_tests::grpc::observe(&mut api, ADMIN).await
}

async fn open(api: &mut LeaseholdClient<Channel>, name: &str) -> anyhow::Result<Sess> {
    let r = api
        .open_session(pb::OpenSessionRequest {
            client_name: name.into(),
            ttl_ms: TTL_MS,
            request_id: 0,
        })
        .await?
        .into_inner();
    Ok(Sess {
        id: r.session_id,
        secret: r.session_secret.as_ref().try_into()?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_principal_known_by_its_certificate_gets_its_rights_on_leader_and_followers(
) -> anyhow::Result<()> {
    let cluster = start().await?;
    let leader = cluster.serving_leader().await?;
    let follower = cluster.other_than(leader)?;
    for (i, node) in [leader, follower].into_iter().enumerate() {
        let where_ = if node == leader { "leader" } else { "follower" };
        let mut cs = api(&cluster, node, Some("cs")).await?;
        let mut dash = api(&cluster, node, Some("dash")).await?;

        // Allowed: the chunkserver opens a session and takes a lease under
        // chunk/; the reader reads it.
        let session = open(&mut cs, "cs").await.context(where_)?;
        let resource = format!("chunk/{i}");
        let granted = cs
            .acquire(acquire_req(session, &resource, false, 0))
            .await
            .context(where_)?
            .into_inner();
        assert_eq!(
            granted.lease.as_ref().map(|l| l.session_id),
            Some(session.id),
            "{where_}: {granted:?}"
        );
        let got = dash
            .get(pb::GetRequest {
                resource: resource.clone(),
            })
            .await
            .context(where_)?
            .into_inner();
        assert_eq!(
            got.state
                .map(|s| s.holders.iter().map(|h| h.session_id).collect::<Vec<_>>())
                .unwrap_or_default(),
            [session.id],
            "{where_}"
        );
        let before = observe(&cluster).await?;

        // Refused by prefix and by role: PERMISSION_DENIED naming the
        // principal (not the CN).
        assert_refused(
            cs.acquire(acquire_req(session, "jobs/1", false, 0)).await,
            Code::PermissionDenied,
            &["\"chunkserver\"", "Acquire", "jobs/1"],
        );
        assert_refused(
            cs.recall(pb::RecallRequest {
                resource: resource.clone(),
                reason: "not mine".into(),
            })
            .await,
            Code::PermissionDenied,
            &["\"chunkserver\"", "Recall", "admin"],
        );
        assert_refused(
            dash.acquire(acquire_req(session, &resource, true, 0)).await,
            Code::PermissionDenied,
            &["\"dashboard\"", "Acquire", "client"],
        );
        assert_refused(
            dash.open_session(pb::OpenSessionRequest {
                client_name: "dash".into(),
                ttl_ms: TTL_MS,
                request_id: 0,
            })
            .await,
            Code::PermissionDenied,
            &["\"dashboard\"", "OpenSession"],
        );

        // A certificate of the CA whose CN names no principal, and no
        // certificate at all: UNAUTHENTICATED.
        let mut stranger = api(&cluster, node, Some("stranger")).await?;
        assert_refused(
            stranger
                .get(pb::GetRequest {
                    resource: resource.clone(),
                })
                .await,
            Code::Unauthenticated,
            &["client certificate", "\"stranger\""],
        );
        assert_refused(
            stranger
                .acquire(acquire_req(session, &resource, false, 0))
                .await,
            Code::Unauthenticated,
            &["\"stranger\""],
        );
        let mut anonymous = api(&cluster, node, None).await?;
        assert_refused(
            anonymous
                .release(pb::ReleaseRequest {
                    session_id: session.id,
                    resource: resource.clone(),
                    session_secret: session.secret(),
                })
                .await,
            Code::Unauthenticated,
            &["missing"],
        );
        // A node's own certificate names no principal either.
        let mut node_cert = api(&cluster, node, Some(&format!("node-{node}"))).await?;
        assert_refused(
            node_cert
                .release(pb::ReleaseRequest {
                    session_id: session.id,
                    resource: resource.clone(),
                    session_secret: session.secret(),
                })
                .await,
            Code::Unauthenticated,
            &["\"leasehold node"],
        );
        assert_eq!(
            observe(&cluster).await?,
            before,
            "{where_}: refusals changed state"
        );

        // Allowed again: the chunkserver releases its lease.
        cs.release(pb::ReleaseRequest {
            session_id: session.id,
            resource: resource.clone(),
            session_secret: session.secret(),
        })
        .await
        .context(where_)?;
        let resources = observe(&cluster).await?.resources;
        assert!(
            resources
                .iter()
                .all(|(r, holders)| r != &resource || holders.is_empty()),
            "{where_}: {resources:?}"
        );
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_cannot_claim_a_forwarded_principal() -> anyhow::Result<()> {
    let cluster = start().await?;
    let leader = cluster.serving_leader().await?;
    let follower = cluster.other_than(leader)?;
    let mut cs = api(&cluster, leader, Some("cs")).await?;
    let session = open(&mut cs, "cs").await?;
    cs.acquire(acquire_req(session, "chunk/1", false, 0))
        .await?;
    let before = observe(&cluster).await?;

    for node in [leader, follower] {
        // A client certificate, no certificate, and a CA-signed client
        // certificate with a token as well: each claims to be forwarded
        // for the admin, then for itself.
        for cert in [Some("cs"), Some("stranger"), None] {
            let what = format!("node {node}, certificate {cert:?}");
            let mut client = api(&cluster, node, cert).await?;
            assert_refused(
                client
                    .recall(claiming(
                        "ops",
                        pb::RecallRequest {
                            resource: "chunk/1".into(),
                            reason: "forged".into(),
                        },
                    ))
                    .await,
                Code::Unauthenticated,
                &[PRINCIPAL_KEY, "node"],
            );
            assert_refused(
                client
                    .release(claiming(
                        "chunkserver",
                        pb::ReleaseRequest {
                            session_id: session.id,
                            resource: "chunk/1".into(),
                            session_secret: session.secret(),
                        },
                    ))
                    .await,
                Code::Unauthenticated,
                &[PRINCIPAL_KEY],
            );
            let set = pb::SetConfigRequest {
                config: Some(pb::LeaseConfig {
                    ttl_ms_min: 60_000,
                    ttl_ms_max: 600_000,
                    ..Default::default()
                }),
            };
            let mut with_token = claiming("ops", set);
            let value = format!("Bearer {ADMIN}").parse()?;
            with_token.metadata_mut().insert("authorization", value);
            assert_refused(
                client.set_config(with_token).await,
                Code::Unauthenticated,
                &[PRINCIPAL_KEY],
            );
            assert_eq!(observe(&cluster).await?, before, "{what}: state changed");
        }
    }
    cluster.shutdown().await
}
