//! Writers for demos and chaos runs: each writer appends records to its own
//! sequence of chunks (`PREFIX-aW-K`, the next one when a chunk is full)
//! and every fourth operation writes a fresh slot of its own write chunks
//! (`PREFIX-wW-K`), so an acknowledged write is never overwritten by
//! another. Every acknowledgement is recorded ([`Event::Ack`]) for the
//! [`checker`](crate::checker).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::GfsClient;
use crate::error::GfsError;
use crate::history::{fnv64, mono_ns, Event, History};

/// Settings of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent writers.
    pub writers: u32,
    /// Run this long.
    pub duration: Duration,
    /// Bytes per record and per write.
    pub record_bytes: u64,
    /// The chunk size the chunkservers use.
    pub chunk_bytes: u64,
    /// Chunk name prefix.
    pub prefix: String,
    /// Id of the first writer (several workload processes: disjoint ranges).
    pub first_writer: u32,
}

/// What a workload did.
#[derive(Debug, Default)]
pub struct WorkloadStats {
    /// Acknowledged writes.
    pub acked_writes: AtomicU64,
    /// Acknowledged appends.
    pub acked_appends: AtomicU64,
    /// Operations that failed after their retries (outcome unknown).
    pub failed: AtomicU64,
    /// Chunks created.
    pub chunks: AtomicU64,
}

/// The bytes writer `w` sends in its operation `seq`: a readable header,
/// then filler derived from both (each operation's bytes are distinct).
pub fn payload(w: u32, seq: u64, len: u64) -> Vec<u8> {
    let mut out = format!("[w{w} s{seq}]").into_bytes();
    let mut x = (u64::from(w) << 40) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    while (out.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.truncate(usize::try_from(len).unwrap_or(usize::MAX));
    out
}

/// Runs the writers until the duration passed or `stop` is set.
pub async fn run(
    client: GfsClient,
    config: WorkloadConfig,
    history: History,
    stop: Arc<AtomicBool>,
) -> Arc<WorkloadStats> {
    let stats = Arc::new(WorkloadStats::default());
    let deadline = Instant::now() + config.duration;
    let mut tasks = Vec::new();
    for i in 0..config.writers {
        let w = config.first_writer + i;
        tasks.push(tokio::spawn(writer(
            client.clone(),
            config.clone(),
            history.clone(),
            Arc::clone(&stats),
            Arc::clone(&stop),
            w,
            deadline,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    stats
}

/// One writer.
async fn writer(
    client: GfsClient,
    config: WorkloadConfig,
    history: History,
    stats: Arc<WorkloadStats>,
    stop: Arc<AtomicBool>,
    w: u32,
    deadline: Instant,
) {
    let slots_per_chunk = (config.chunk_bytes / config.record_bytes.max(1)).max(1);
    let (mut append_k, mut write_k, mut slot) = (0u64, 0u64, 0u64);
    let mut created_append = None;
    let mut created_write = None;
    let mut seq = 0u64;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        seq += 1;
        let data = payload(w, seq, config.record_bytes);
        let is_write = seq.is_multiple_of(4);
        let chunk = if is_write {
            format!("{}-w{w}-{write_k}", config.prefix)
        } else {
            format!("{}-a{w}-{append_k}", config.prefix)
        };
        let created = if is_write {
            &mut created_write
        } else {
            &mut created_append
        };
        if created.as_ref() != Some(&chunk) {
            match client.create(&chunk, 0).await {
                Ok(_) => {
                    stats.chunks.fetch_add(1, Ordering::Relaxed);
                    *created = Some(chunk.clone());
                }
                Err(e) => {
                    tracing::warn!(w, chunk, error = %e, "create failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let result = if is_write {
            let offset = slot * config.record_bytes;
            slot += 1;
            if slot >= slots_per_chunk {
                slot = 0;
                write_k += 1;
            }
            client.write(&chunk, offset, &data).await
        } else {
            client.append(&chunk, &data).await
        };
        match result {
            Ok(a) => {
                let kind = if is_write { "write" } else { "append" };
                if is_write {
                    stats.acked_writes.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.acked_appends.fetch_add(1, Ordering::Relaxed);
                }
                history.record(Event::Ack {
                    t_ns: mono_ns(),
                    client: w,
                    kind: kind.to_string(),
                    chunk,
                    offset: a.offset,
                    len: data.len() as u64,
                    hash: fnv64(&data),
                    version: a.version,
                });
            }
            Err(GfsError::ChunkFull(_)) if !is_write => append_k += 1,
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(w, chunk, error = %e, "operation failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_distinct_and_sized() {
        let a = payload(1, 1, 100);
        assert_eq!(a.len(), 100);
        assert!(a.starts_with(b"[w1 s1]"));
        assert_ne!(a, payload(1, 2, 100));
        assert_ne!(a, payload(2, 1, 100));
        assert_eq!(payload(3, 4, 4).len(), 4);
    }
}
