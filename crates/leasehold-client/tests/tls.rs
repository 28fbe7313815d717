//! The client library against a TLS cluster: with the CA (and a client
//! certificate) it works, session keepalive included; without the CA, with
//! another CA, or plaintext against TLS (and TLS against plaintext) it
//! fails fast with one clear error.

use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_client::{AcquireOptions, ClientBuilder, ClientError, ClientTls};
use leasehold_tests::{ClusterOptions, TestCluster};

/// The call budget of the failing connects: a TLS mismatch must be
/// reported well before it runs out, not retried until it does.
const BUDGET: Duration = Duration::from_secs(20);

fn client_tls(dir: &std::path::Path) -> anyhow::Result<ClientTls> {
    Ok(ClientTls::load(
        &dir.join("ca.pem"),
        Some(&dir.join("client.pem")),
        Some(&dir.join("client-key.pem")),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_with_the_ca_holds_leases_over_tls() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await?;
    let dir = cluster.tls_dir().context("TLS cluster")?;
    let client = ClientBuilder::new(cluster.api_endpoints())
        .tls(client_tls(&dir)?)
        .connect()
        .await?;
    let session = client.open_session("tls", Duration::from_secs(3)).await?;
    let lease = session
        .acquire("tls/res", AcquireOptions::exclusive())
        .await?;
    // The keepalive stream runs over TLS too: renewals move the deadline.
    let first = lease.deadline();
    leasehold_tests::wait_until(
        "a keepalive renewal over TLS",
        leasehold_tests::WAIT,
        || async { (lease.deadline() > first).then_some(()) },
    )
    .await?;
    assert!(lease.is_valid(), "lease lost over TLS keepalive");
    assert_eq!(client.get("tls/res").await?.holders.len(), 1);
    session.close().await?;
    // The CA alone (no client certificate) is enough for the API.
    let anonymous = ClientBuilder::new(cluster.api_endpoints())
        .tls(ClientTls::new(std::fs::read(dir.join("ca.pem"))?))
        .connect()
        .await?;
    assert!(anonymous.status().await?.node_id > 0);
    cluster.shutdown().await
}

/// Connects with `builder` and returns the error, checking it came early.
async fn refused(what: &str, builder: ClientBuilder) -> anyhow::Result<ClientError> {
    let started = Instant::now();
    let e = match builder.call_timeout(BUDGET).connect().await {
        Ok(_) => anyhow::bail!("{what}: connected"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < BUDGET / 2,
        "{what}: took {:?} ({e})",
        started.elapsed()
    );
    let text = e.to_string();
    assert!(!text.contains('\n'), "{what}: one line: {text}");
    Ok(e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_mismatches_fail_fast_with_a_clear_error() -> anyhow::Result<()> {
    let tls = TestCluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await?;
    let plain = TestCluster::start(ClusterOptions::default()).await?;
    let dir = tls.tls_dir().context("TLS cluster")?;
    let other = tempfile::tempdir()?;
    leasehold_server::certs::init(other.path(), &[], &[], false)?;

    let e = refused(
        "plaintext client, TLS server",
        ClientBuilder::new(tls.api_endpoints()),
    )
    .await?;
    assert!(e.to_string().contains("requires TLS"), "{e}");

    let e = refused(
        "another CA",
        ClientBuilder::new(tls.api_endpoints())
            .tls(ClientTls::new(std::fs::read(other.path().join("ca.pem"))?)),
    )
    .await?;
    assert!(e.to_string().contains("certificate"), "{e}");

    let e = refused(
        "TLS client, plaintext server",
        ClientBuilder::new(plain.api_endpoints()).tls(client_tls(&dir)?),
    )
    .await?;
    assert!(e.to_string().contains("does not speak TLS"), "{e}");

    let e = ClientTls::load(&dir.join("ca.pem"), Some(&dir.join("client.pem")), None)
        .expect_err("certificate without key");
    assert!(matches!(e, ClientError::Config(_)), "{e}");
    let e = ClientTls::load(&dir.join("nope.pem"), None, None).expect_err("no CA file");
    assert!(e.to_string().contains("nope.pem"), "{e}");

    tls.shutdown().await?;
    plain.shutdown().await
}
