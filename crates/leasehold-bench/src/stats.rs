//! Closed-loop load and its figures: each worker runs one operation at a
//! time until the row's end; every successful call's latency is recorded.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pause after a failed call, so a refusing server is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Figures of one run of one row on one system.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Operations counted per second of the run (a keepalive message naming
    /// 1,000 sessions counts 1,000 renewals).
    pub ops_per_s: f64,
    /// Median latency of one call.
    pub p50_ms: f64,
    /// 99th percentile latency of one call.
    pub p99_ms: f64,
    /// 99.9th percentile latency of one call.
    pub p999_ms: f64,
    /// Calls that failed.
    pub errors: u64,
    /// Row-specific figures (failover gap, memory), printed as they are.
    pub note: String,
    /// The first failed call's error, if any call failed.
    pub first_error: Option<String>,
}

/// The `p` quantile (0..=1) of sorted latencies, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// A run's figures from its latencies, operation count, errors and length.
pub fn summarize(mut lat: Vec<Duration>, ops: u64, errors: u64, elapsed: Duration) -> Run {
    lat.sort_unstable();
    Run {
        ops_per_s: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: quantile_ms(&lat, 0.50),
        p99_ms: quantile_ms(&lat, 0.99),
        p999_ms: quantile_ms(&lat, 0.999),
        errors,
        note: String::new(),
        first_error: None,
    }
}

/// Runs `op` in a loop on every worker state for `duration`, one call at a
/// time per worker, all workers at once. `op(state, i)` gets the worker's
/// state and its call number and hands the state back with the number of
/// operations the call counts for (or the error). Returns the figures and
/// the states (for untimed cleanup).
pub async fn closed_loop<S, F, Fut>(states: Vec<S>, duration: Duration, op: F) -> (Run, Vec<S>)
where
    S: Send + 'static,
    F: Fn(S, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (S, anyhow::Result<u64>)> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(states.len());
    for state in states {
        let op = op.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut state = state;
            let mut lat = Vec::new();
            let (mut ops, mut errors, mut i) = (0u64, 0u64, 0u64);
            let mut first_error: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (s, r) = op(state, i).await;
                state = s;
                i += 1;
                match r {
                    Ok(n) => {
                        lat.push(t.elapsed());
                        ops += n;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            (state, lat, ops, errors, first_error)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut states = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((s, l, o, e, f)) => {
                states.push(s);
                lat.extend(l);
                ops += o;
                errors += e;
                first_error = first_error.or(f);
            }
            Err(e) => {
                errors += 1;
                first_error = first_error.or(Some(format!("worker panicked: {e}")));
            }
        }
    }
    // The calls in flight at the stop finished after it and counted:
    // measure to the last of them.
    let elapsed = started.elapsed();
    let mut run = summarize(lat, ops, errors, elapsed);
    run.first_error = first_error;
    (run, states)
}

/// Runs `op(state, i)` for every `i` in `0..n` exactly once, spread over
/// the worker states (each takes the next `i` when its call ends). Returns
/// the figures (operations per second over the whole batch) and the states.
pub async fn fixed_count<S, F, Fut>(states: Vec<S>, n: u64, op: F) -> (Run, Vec<S>)
where
    S: Send + 'static,
    F: Fn(S, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (S, anyhow::Result<u64>)> + Send + 'static,
{
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(states.len());
    for state in states {
        let op = op.clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut state = state;
            let mut lat = Vec::new();
            let (mut ops, mut errors) = (0u64, 0u64);
            let mut first_error: Option<String> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                let (s, r) = op(state, i).await;
                state = s;
                match r {
                    Ok(k) => {
                        lat.push(t.elapsed());
                        ops += k;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (state, lat, ops, errors, first_error)
        }));
    }
    let mut lat = Vec::new();
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut states = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((s, l, o, e, f)) => {
                states.push(s);
                lat.extend(l);
                ops += o;
                errors += e;
                first_error = first_error.or(f);
            }
            Err(e) => {
                errors += 1;
                first_error = first_error.or(Some(format!("worker panicked: {e}")));
            }
        }
    }
    let mut run = summarize(lat, ops, errors, started.elapsed());
    run.first_error = first_error;
    (run, states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let lat: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&lat, 0.5), 501.0);
        assert_eq!(quantile_ms(&lat, 0.99), 990.0);
        assert_eq!(quantile_ms(&lat, 0.999), 999.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }

    #[tokio::test]
    async fn closed_loop_counts_every_call_and_error_and_returns_the_states() {
        let states = vec![0u64, 100];
        let (run, states) = closed_loop(states, Duration::from_millis(200), |s, i| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            // Every fourth call fails; the others count 2 operations.
            if i % 4 == 3 {
                (s + 1, Err(anyhow::anyhow!("refused")))
            } else {
                (s + 1, Ok(2))
            }
        })
        .await;
        let calls: u64 = states.iter().map(|s| s % 100).sum();
        assert_eq!(states.len(), 2);
        assert!(calls > 0);
        assert!(run.errors > 0 && run.errors <= calls / 4 + 2);
        assert!(run.ops_per_s > 0.0);
        assert_eq!(run.first_error.as_deref(), Some("refused"));
        assert!(run.p50_ms >= 1.0 && run.p99_ms >= run.p50_ms && run.p999_ms >= run.p99_ms);
    }

    #[tokio::test]
    async fn fixed_count_runs_each_index_once() {
        let states: Vec<Vec<u64>> = vec![Vec::new(); 3];
        let (run, states) = fixed_count(states, 100, |mut s, i| async move {
            s.push(i);
            (
                s,
                if i == 7 {
                    Err(anyhow::anyhow!("no"))
                } else {
                    Ok(1)
                },
            )
        })
        .await;
        let mut seen: Vec<u64> = states.into_iter().flatten().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(run.errors, 1);
        assert_eq!(run.first_error.as_deref(), Some("no"));
    }
}
