//! The checker must catch real bugs: the same workload runs against a
//! correct cluster (no violation may be reported) and against one whose
//! lease clocks run 30% fast, far beyond the 1% drift bound, so the leader
//! expires silent holders while they still believe they hold their lease
//! (the checker must report overlapping holders).

use std::time::Duration;

use leasehold_chaos::{checker, workload};
use leasehold_tests::{ClusterOptions, TestCluster};

async fn run(clock_rate_ppm: i64, seed: u64) -> anyhow::Result<checker::Summary> {
    let c = TestCluster::start(ClusterOptions {
        clock_rate_ppm,
        ..ClusterOptions::default()
    })
    .await?;
    c.serving_leader().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.jsonl");
    let cfg = workload::WorkloadConfig {
        endpoints: c.api_endpoints(),
        clients: 6,
        resources: 2,
        duration: Duration::from_secs(10),
        ttl_ms: 2_000,
        drift_ppm: 10_000,
        margin_ms: 5,
        silent_probability: 0.35,
        seed,
        liveness_bound: Duration::from_secs(20),
        prefix: "t/".into(),
    };
    workload::run(cfg, std::io::BufWriter::new(std::fs::File::create(&path)?)).await?;
    if let Ok(keep) = std::env::var("LEASEHOLD_CHAOS_KEEP") {
        std::fs::copy(&path, format!("{keep}-{clock_rate_ppm}.jsonl"))?;
    }
    let records = checker::parse(&std::fs::read_to_string(&path)?)?;
    c.shutdown().await?;
    Ok(checker::check(&records))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn correct_cluster_has_no_violation_and_fast_clocks_are_caught() -> anyhow::Result<()> {
    let safe = run(0, 11).await?;
    assert!(
        safe.holds >= 8,
        "the workload did too little: {:?}",
        safe.ops
    );
    assert!(
        safe.violations.is_empty(),
        "violations on a correct cluster: {:#?}",
        safe.violations
    );
    assert!(safe.register_writes >= 4);

    let unsafe_run = run(300_000, 11).await?;
    let overlaps = unsafe_run
        .violations
        .iter()
        .filter(|v| v.rule == "overlap" || v.rule == "early expiry")
        .count();
    assert!(
        overlaps > 0,
        "a 30% fast leader clock went unnoticed: {:?}",
        unsafe_run.violations
    );
    Ok(())
}
