//! Client API figures over real gRPC: acquire+release latency and
//! throughput, keepalive renewals per second, and failover timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_tests::grpc::{acquire_req, client, keep_alive, keepalive_req, open, release_req};
use leasehold_tests::{wait_until, TestCluster, WAIT};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::inprocess::{ms, percentile};

/// Acquire+release pairs through the leader's API, one client.
pub async fn latency(c: &TestCluster, pairs: usize) -> anyhow::Result<()> {
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let s = open(&ep, "bench-latency", 60_000).await?;
    let mut api = client(&ep).await?;
    let mut samples = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let resource = format!("api-lat/{i}");
        let t = Instant::now();
        api.acquire(acquire_req(s, &resource, false, 0)).await?;
        api.release(release_req(s, &resource)).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "api acquire+release, 1 client, {pairs} pairs: p50 {}  p99 {}  max {}",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0))
    );
    Ok(())
}

/// Acquire+release pairs from many concurrent clients for `seconds`.
pub async fn throughput(c: &TestCluster, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let pairs = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let s = open(&ep, &format!("bench-tp-{k}"), 60_000).await?;
        let ep = ep.clone();
        let pairs = Arc::clone(&pairs);
        tasks.push(tokio::spawn(async move {
            let mut api = client(&ep).await?;
            let mut i = 0u64;
            while Instant::now() < stop_at {
                let resource = format!("api-tp/{k}/{i}");
                api.acquire(acquire_req(s, &resource, false, 0)).await?;
                api.release(release_req(s, &resource)).await?;
                pairs.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await??;
    }
    let n = pairs.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "api acquire+release, {clients} clients, {secs:.1} s: {n} pairs, {:.0} pairs/s ({:.0} replicated commands/s)",
        n as f64 / secs,
        2.0 * n as f64 / secs
    );
    Ok(())
}

/// Renewals per second with `sessions` sessions: one keepalive message per
/// session, sent back to back on `streams` streams.
pub async fn renewals(
    c: &TestCluster,
    sessions: usize,
    streams: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let ep = c.api_endpoint(c.serving_leader().await?)?;
    let mut ids = Vec::with_capacity(sessions);
    for i in 0..sessions {
        ids.push(open(&ep, &format!("bench-ka-{i}"), 60_000).await?);
    }
    let renewed = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for chunk in ids.chunks(sessions.div_ceil(streams)) {
        let chunk = chunk.to_vec();
        let ep = ep.clone();
        let renewed = Arc::clone(&renewed);
        tasks.push(tokio::spawn(async move {
            let mut api = client(&ep).await?;
            let (tx, rx) = mpsc::channel(64);
            // Keep a window of requests in flight, one session per message.
            for id in chunk.iter().cycle().take(32) {
                tx.send(keepalive_req(std::slice::from_ref(id))).await?;
            }
            let mut inbound = api.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
            let mut next = chunk.iter().cycle().skip(32);
            while let Some(reply) = inbound.message().await? {
                anyhow::ensure!(reply.sessions.iter().all(|s| s.alive), "a session died");
                renewed.fetch_add(reply.sessions.len() as u64, Ordering::Relaxed);
                if Instant::now() >= stop_at {
                    break;
                }
                if let Some(id) = next.next() {
                    tx.send(keepalive_req(std::slice::from_ref(id))).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await??;
    }
    let n = renewed.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "keepalive, {sessions} sessions, {streams} streams, one session per message: {n} renewals in {secs:.1} s = {:.0} renewals/s",
        n as f64 / secs
    );
    // And batched: one message renews all sessions.
    let mut api = client(&ep).await?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(keepalive_req(&ids)).await?;
    let mut inbound = api.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
    let started = Instant::now();
    let mut rounds = 0u64;
    while let Some(reply) = inbound.message().await? {
        anyhow::ensure!(reply.sessions.len() == ids.len());
        rounds += 1;
        if started.elapsed() >= Duration::from_secs(seconds.min(5)) {
            break;
        }
        tx.send(keepalive_req(&ids)).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "keepalive, {sessions} sessions in one message: {rounds} messages in {secs:.1} s = {:.0} renewals/s",
        (rounds as f64 * ids.len() as f64) / secs
    );
    Ok(())
}

/// Kills the leader and measures when renewals are served again and when
/// the first conflicting grant on a dead holder's resource happens.
pub async fn failover(c: &mut TestCluster, ttl_ms: u64) -> anyhow::Result<()> {
    let leader = c.serving_leader().await?;
    let ep = c.api_endpoint(leader)?;
    let live = open(&ep, "bench-live", ttl_ms).await?;
    let dead = open(&ep, "bench-dead", ttl_ms).await?;
    let contender = open(&ep, "bench-contender", ttl_ms).await?;
    let (view, _stop) = keep_alive(
        c.api_endpoints(),
        vec![live, contender],
        Duration::from_millis(ttl_ms / 6),
    );
    client(&ep)
        .await?
        .acquire(acquire_req(dead, "bench/orphan", false, 0))
        .await?;
    wait_until("a renewal", WAIT, || {
        let v = view.borrow().clone();
        async move { v.last_renewed_at }
    })
    .await?;
    c.stop(leader).await?;
    let killed = tokio::time::Instant::now();
    let new_leader = c.serving_leader().await?;
    let elected = killed.elapsed();
    let resumed = wait_until("renewals to resume", WAIT, || {
        let v = view.borrow().clone();
        async move { v.last_renewed_at.filter(|t| *t > killed) }
    })
    .await?
        - killed;
    let ep = c.api_endpoint(new_leader)?;
    client(&ep)
        .await?
        .acquire(acquire_req(contender, "bench/orphan", false, 60_000))
        .await?;
    let granted = killed.elapsed();
    println!(
        "failover (TTL {ttl_ms} ms): new leader serving after {}, renewals served again after {}, first conflicting grant after {}",
        ms(elected),
        ms(resumed),
        ms(granted)
    );
    Ok(())
}
