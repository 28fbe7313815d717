//! Closed-loop load and its figures: each worker runs one operation at a
//! time until the row's end; every successful call's latency is recorded.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    let tasks = spawn_workers(states, op, Calls::Until(Arc::clone(&stop)));
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    // The calls in flight at the stop finish after it and count: `gather`
    // measures to the last of them.
    gather(tasks, started).await
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
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks = spawn_workers(states, op, Calls::Count { next, n });
    gather(tasks, started).await
}

/// Which calls a worker makes.
#[derive(Clone)]
enum Calls {
    /// Numbered from 0 per worker, until the flag is set; a failed call is
    /// followed by [`ERROR_PAUSE`].
    Until(Arc<AtomicBool>),
    /// `0..n` shared by all workers, each number once; no pause.
    Count {
        /// The next number to hand out.
        next: Arc<AtomicU64>,
        /// One past the last number.
        n: u64,
    },
}

impl Calls {
    /// The number of this worker's next call (`made` so far), if any.
    fn next(&self, made: u64) -> Option<u64> {
        match self {
            Calls::Until(stop) => (!stop.load(Ordering::Relaxed)).then_some(made),
            Calls::Count { next, n } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                (i < *n).then_some(i)
            }
        }
    }
}

/// What one worker hands back: its state and its figures.
struct Worker<S> {
    /// The state, for cleanup.
    state: S,
    /// Latency of every successful call.
    lat: Vec<Duration>,
    /// Operations the successful calls counted for.
    ops: u64,
    /// Failed calls.
    errors: u64,
    /// Why the first failed call failed.
    first_error: Option<String>,
}

/// Spawns one task per state, each making the calls `calls` hands it.
fn spawn_workers<S, F, Fut>(
    states: Vec<S>,
    op: F,
    calls: Calls,
) -> Vec<tokio::task::JoinHandle<Worker<S>>>
where
    S: Send + 'static,
    F: Fn(S, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (S, anyhow::Result<u64>)> + Send + 'static,
{
    let pause_on_error = matches!(calls, Calls::Until(_));
    states
        .into_iter()
        .map(|state| {
            let (op, calls) = (op.clone(), calls.clone());
            tokio::spawn(async move {
                let mut w = Worker {
                    state,
                    lat: Vec::new(),
                    ops: 0,
                    errors: 0,
                    first_error: None,
                };
                let mut made = 0u64;
                while let Some(i) = calls.next(made) {
                    made += 1;
                    let t = Instant::now();
                    let (s, r) = op(w.state, i).await;
                    w.state = s;
                    match r {
                        Ok(k) => {
                            w.lat.push(t.elapsed());
                            w.ops += k;
                        }
                        Err(e) => {
                            w.errors += 1;
                            w.first_error.get_or_insert_with(|| format!("{e:#}"));
                            if pause_on_error {
                                tokio::time::sleep(ERROR_PAUSE).await;
                            }
                        }
                    }
                }
                w
            })
        })
        .collect()
}

/// Waits for every worker and sums their figures over the time since
/// `started` (a worker that panicked counts as one failed call).
async fn gather<S>(
    tasks: Vec<tokio::task::JoinHandle<Worker<S>>>,
    started: Instant,
) -> (Run, Vec<S>) {
    let mut lat = Vec::new();
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut states = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(w) => {
                states.push(w.state);
                lat.extend(w.lat);
                ops += w.ops;
                errors += w.errors;
                first_error = first_error.or(w.first_error);
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
