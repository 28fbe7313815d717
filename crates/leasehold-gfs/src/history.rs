//! The JSONL events of a run, read by the [`checker`](crate::checker).
//!
//! Every event carries CLOCK_MONOTONIC nanoseconds (`t_ns`), the same clock
//! for every process on the host, so events of chunkservers and clients
//! compare directly (as in `crates/leasehold-chaos`).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Now on CLOCK_MONOTONIC, in nanoseconds.
pub fn mono_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A chunkserver became the accepting primary of a chunk.
    Primary {
        /// CLOCK_MONOTONIC ns (after the grant and the installs).
        t_ns: u64,
        /// Chunk.
        chunk: String,
        /// Its version (the lease's fencing token).
        version: u64,
        /// The chunkserver.
        server: String,
        /// The replica set (server ids, the primary first).
        replicas: Vec<String>,
    },
    /// A primary stopped accepting (deadline, loss, recall, give-up).
    Stepped {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// Chunk.
        chunk: String,
        /// Version of the ended term.
        version: u64,
        /// The chunkserver.
        server: String,
        /// Why.
        why: String,
    },
    /// A primary accepted a mutation (assigned it a serial number).
    Accept {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// Chunk.
        chunk: String,
        /// The primary's version.
        version: u64,
        /// The primary.
        server: String,
        /// Serial number.
        serial: u64,
        /// "write", "append" or "pad".
        kind: String,
    },
    /// A replica was stamped with a version (installed).
    Install {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// Chunk.
        chunk: String,
        /// The version.
        version: u64,
        /// The chunkserver.
        server: String,
    },
    /// The master assigned a primary.
    Assign {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// Chunk.
        chunk: String,
        /// Previous primary's server id (empty: none known).
        old: String,
        /// New primary's server id.
        new: String,
        /// New version.
        version: u64,
        /// The master.
        master: String,
    },
    /// A client's mutation was acknowledged.
    Ack {
        /// CLOCK_MONOTONIC ns.
        t_ns: u64,
        /// Workload client.
        client: u32,
        /// "write" or "append".
        kind: String,
        /// Chunk.
        chunk: String,
        /// Offset written.
        offset: u64,
        /// Length written.
        len: u64,
        /// FNV-1a 64 of the bytes.
        hash: u64,
        /// Version it was applied at.
        version: u64,
    },
}

/// FNV-1a, 64 bits: a content fingerprint for acknowledged bytes.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where events go: memory (tests) and/or an append-only JSONL file.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Shared sink.
    inner: Arc<Mutex<Sink>>,
}

/// The sink behind a [`History`].
#[derive(Debug, Default)]
struct Sink {
    /// Events kept in memory (only when asked).
    memory: Option<Vec<Event>>,
    /// The JSONL file, flushed per event.
    file: Option<std::fs::File>,
}

impl History {
    /// Records nowhere.
    pub fn none() -> Self {
        History::default()
    }

    /// Keeps events in memory ([`History::events`]).
    pub fn memory() -> Self {
        History {
            inner: Arc::new(Mutex::new(Sink {
                memory: Some(Vec::new()),
                file: None,
            })),
        }
    }

    /// Appends events to `path` as JSON lines.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(History {
            inner: Arc::new(Mutex::new(Sink {
                memory: None,
                file: Some(file),
            })),
        })
    }

    /// Records one event (a failed file write is logged, not fatal).
    pub fn record(&self, event: Event) {
        let mut sink = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = sink.file.as_mut() {
            let line = serde_json::to_string(&event).unwrap_or_default();
            if let Err(e) = writeln!(file, "{line}") {
                tracing::warn!(error = %e, "history write failed");
            }
        }
        if let Some(memory) = sink.memory.as_mut() {
            memory.push(event);
        }
    }

    /// The events kept in memory so far.
    pub fn events(&self) -> Vec<Event> {
        let sink = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        sink.memory.clone().unwrap_or_default()
    }
}

/// Reads every event of JSONL files (unparsable lines, e.g. a line cut by
/// kill -9, are skipped and counted).
pub fn read_files(paths: &[std::path::PathBuf]) -> std::io::Result<(Vec<Event>, usize)> {
    let mut events = Vec::new();
    let mut skipped = 0;
    for p in paths {
        let text = std::fs::read_to_string(p)?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Event>(line) {
                Ok(e) => events.push(e),
                Err(_) => skipped += 1,
            }
        }
    }
    Ok((events, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_fnv_is_stable() {
        let e = Event::Accept {
            t_ns: 5,
            chunk: "c".into(),
            version: 7,
            server: "cs1".into(),
            serial: 1,
            kind: "write".into(),
        };
        let line = serde_json::to_string(&e).expect("json");
        assert!(line.contains("\"type\":\"accept\""));
        assert_eq!(serde_json::from_str::<Event>(&line).expect("parse"), e);
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv64(b"a"), fnv64(b"b"));
        let h = History::memory();
        h.record(e.clone());
        assert_eq!(h.events(), vec![e]);
    }
}
