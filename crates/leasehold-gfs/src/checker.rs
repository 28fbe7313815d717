//! The rules a run must satisfy, checked over its events (CLOCK_MONOTONIC)
//! and the replicas left on disk at the end:
//!
//! 1. `two_primaries`: no two primaries accept writes for one chunk at the
//!    same instant. Each primary term (chunk, version) accepts mutations
//!    over an interval [first accept, last accept]; the intervals of one
//!    chunk must not overlap, and one term has one server.
//! 2. `versions_not_increasing`: ordered by time, a chunk's terms carry
//!    strictly increasing versions, and every replica is stamped with
//!    strictly increasing versions.
//! 3. `acked_missing`: every acknowledged write or append is, byte for byte
//!    (by fingerprint), at its offset on every up-to-date replica at the end
//!    (up to date: the chunk's highest version on disk).
//! 4. `replicas_differ`: up-to-date replicas of a chunk are identical.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::error::GfsError;
use crate::history::{fnv64, Event};
use crate::store::Store;

/// One replica left on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFile {
    /// The chunkserver.
    pub server: String,
    /// The chunk.
    pub chunk: String,
    /// Its version.
    pub version: u64,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Reads every replica under the given chunkserver data directories.
pub fn read_replicas(dirs: &[(String, PathBuf)]) -> Result<Vec<ReplicaFile>, GfsError> {
    let mut out = Vec::new();
    for (server, dir) in dirs {
        let store = Store::open(dir)?;
        for (chunk, (meta, _)) in store.scan()? {
            let data = store.read_all(&chunk)?;
            out.push(ReplicaFile {
                server: server.clone(),
                chunk,
                version: meta.version,
                data,
            });
        }
    }
    Ok(out)
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The rule.
    pub rule: String,
    /// What broke it.
    pub detail: String,
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Chunks with at least one replica on disk or one primary term.
    pub chunks: usize,
    /// Primary terms (grants that became accepting primaries).
    pub primary_terms: usize,
    /// Terms that followed an earlier term of the same chunk.
    pub reassignments: usize,
    /// Terms that ended by a recall.
    pub recalls: usize,
    /// Mutations accepted by primaries.
    pub accepts: usize,
    /// Acknowledged writes.
    pub acknowledged_writes: usize,
    /// Acknowledged record appends.
    pub appends: usize,
    /// Replicas checked at the end (up to date / all).
    pub replicas_up_to_date: usize,
    /// All replicas on disk.
    pub replicas: usize,
    /// Broken rules.
    pub violations: Vec<Violation>,
}

/// Checks a run.
pub fn check(events: &[Event], replicas: &[ReplicaFile]) -> Summary {
    let mut s = Summary::default();
    let mut chunks: BTreeSet<String> = replicas.iter().map(|r| r.chunk.clone()).collect();
    // Terms: (chunk, version) → servers, first and last accept.
    let mut terms: BTreeMap<(String, u64), (BTreeSet<String>, u64, u64)> = BTreeMap::new();
    let mut installs: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();
    let mut grants: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events {
        match e {
            Event::Accept {
                t_ns,
                chunk,
                version,
                server,
                ..
            } => {
                s.accepts += 1;
                let t = terms
                    .entry((chunk.clone(), *version))
                    .or_insert_with(|| (BTreeSet::new(), *t_ns, *t_ns));
                t.0.insert(server.clone());
                t.1 = t.1.min(*t_ns);
                t.2 = t.2.max(*t_ns);
            }
            Event::Primary { chunk, version, .. } => {
                chunks.insert(chunk.clone());
                grants.entry(chunk.clone()).or_default().push(*version);
            }
            Event::Stepped { why, .. } if why.starts_with("recalled") => s.recalls += 1,
            Event::Install {
                t_ns,
                chunk,
                version,
                server,
            } => installs
                .entry((server.clone(), chunk.clone()))
                .or_default()
                .push((*t_ns, *version)),
            Event::Ack { kind, .. } => {
                if kind == "append" {
                    s.appends += 1;
                } else {
                    s.acknowledged_writes += 1;
                }
            }
            _ => {}
        }
    }
    s.chunks = chunks.len();
    for versions in grants.values_mut() {
        versions.sort_unstable();
        versions.dedup();
        s.primary_terms += versions.len();
        s.reassignments += versions.len().saturating_sub(1);
    }
    check_terms(&terms, &mut s.violations);
    for ((server, chunk), mut list) in installs {
        list.sort_unstable();
        for w in list.windows(2) {
            if w[1].1 <= w[0].1 {
                s.violations.push(Violation {
                    rule: "versions_not_increasing".into(),
                    detail: format!(
                        "replica {server}/{chunk} stamped version {} after {}",
                        w[1].1, w[0].1
                    ),
                });
            }
        }
    }
    check_replicas(events, replicas, &mut s);
    s
}

/// Rules 1 and 2 over the accepting intervals of each chunk's terms.
fn check_terms(
    terms: &BTreeMap<(String, u64), (BTreeSet<String>, u64, u64)>,
    out: &mut Vec<Violation>,
) {
    let mut by_chunk: BTreeMap<&str, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for ((chunk, version), (servers, first, last)) in terms {
        if servers.len() > 1 {
            out.push(Violation {
                rule: "two_primaries".into(),
                detail: format!("{chunk} version {version} accepted on {servers:?}"),
            });
        }
        by_chunk
            .entry(chunk)
            .or_default()
            .push((*first, *last, *version));
    }
    for (chunk, mut list) in by_chunk {
        list.sort_unstable();
        // The term reaching furthest so far (last accept, version), and the
        // version of the term that started last.
        let mut reach: Option<(u64, u64)> = None;
        let mut prev_version: Option<u64> = None;
        for (first, last, version) in list {
            if let Some((r_last, r_version)) = reach {
                if first <= r_last {
                    out.push(Violation {
                        rule: "two_primaries".into(),
                        detail: format!(
                            "{chunk}: version {version} accepted from t={first} ns while version {r_version} accepted until t={r_last} ns ({} ms overlap)",
                            (r_last - first) / 1_000_000
                        ),
                    });
                }
            }
            if let Some(p) = prev_version {
                if version <= p {
                    out.push(Violation {
                        rule: "versions_not_increasing".into(),
                        detail: format!("{chunk}: version {version} accepted after version {p}"),
                    });
                }
            }
            match reach {
                Some((r_last, _)) if r_last >= last => {}
                _ => reach = Some((last, version)),
            }
            prev_version = Some(version);
        }
    }
}

/// Rules 3 and 4 over the final replicas.
fn check_replicas(events: &[Event], replicas: &[ReplicaFile], s: &mut Summary) {
    s.replicas = replicas.len();
    let mut newest: BTreeMap<&str, Vec<&ReplicaFile>> = BTreeMap::new();
    for r in replicas {
        let list = newest.entry(&r.chunk).or_default();
        match list.first() {
            Some(f) if f.version > r.version => {}
            Some(f) if f.version < r.version => *list = vec![r],
            _ => list.push(r),
        }
    }
    for (chunk, list) in &newest {
        s.replicas_up_to_date += list.len();
        if let Some((first, rest)) = list.split_first() {
            for r in rest {
                if r.data != first.data {
                    let at = first
                        .data
                        .iter()
                        .zip(&r.data)
                        .position(|(a, b)| a != b)
                        .unwrap_or(first.data.len().min(r.data.len()));
                    s.violations.push(Violation {
                        rule: "replicas_differ".into(),
                        detail: format!(
                            "{chunk} version {}: {} ({} bytes) and {} ({} bytes) differ from byte {at}",
                            first.version,
                            first.server,
                            first.data.len(),
                            r.server,
                            r.data.len()
                        ),
                    });
                }
            }
        }
    }
    for e in events {
        let Event::Ack {
            chunk,
            offset,
            len,
            hash,
            kind,
            client,
            version,
            ..
        } = e
        else {
            continue;
        };
        let Some(list) = newest.get(chunk.as_str()) else {
            s.violations.push(Violation {
                rule: "acked_missing".into(),
                detail: format!(
                    "{kind} of client {client} on {chunk}: no replica of the chunk at the end"
                ),
            });
            continue;
        };
        for r in list {
            let start = usize::try_from(*offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(*len).unwrap_or(usize::MAX));
            let found = r.data.get(start..end).map(fnv64);
            if found != Some(*hash) {
                s.violations.push(Violation {
                    rule: "acked_missing".into(),
                    detail: format!(
                        "{kind} of client {client} at {chunk}[{offset}..{end}] (version {version}) is not on {} (version {})",
                        r.server, r.version
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(t_ns: u64, version: u64, server: &str) -> Event {
        Event::Accept {
            t_ns,
            chunk: "c".into(),
            version,
            server: server.into(),
            serial: 1,
            kind: "write".into(),
        }
    }

    fn replica(server: &str, version: u64, data: &[u8]) -> ReplicaFile {
        ReplicaFile {
            server: server.into(),
            chunk: "c".into(),
            version,
            data: data.to_vec(),
        }
    }

    #[test]
    fn overlapping_terms_and_decreasing_versions_are_caught() {
        let ok = check(
            &[accept(1, 5, "a"), accept(3, 5, "a"), accept(4, 9, "b")],
            &[],
        );
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);
        let overlap = check(
            &[accept(1, 5, "a"), accept(3, 9, "b"), accept(4, 5, "a")],
            &[],
        );
        assert_eq!(overlap.violations.len(), 1, "{:?}", overlap.violations);
        assert_eq!(overlap.violations[0].rule, "two_primaries");
        let backwards = check(&[accept(1, 9, "a"), accept(3, 5, "b")], &[]);
        assert_eq!(backwards.violations[0].rule, "versions_not_increasing");
    }

    #[test]
    fn missing_acks_and_differing_replicas_are_caught() {
        let ack = Event::Ack {
            t_ns: 1,
            client: 0,
            kind: "append".into(),
            chunk: "c".into(),
            offset: 2,
            len: 2,
            hash: fnv64(b"xy"),
            version: 7,
        };
        let good = check(
            std::slice::from_ref(&ack),
            &[
                replica("a", 7, b"..xy"),
                replica("b", 7, b"..xy"),
                replica("s", 3, b""),
            ],
        );
        assert!(good.violations.is_empty(), "{:?}", good.violations);
        assert_eq!(good.appends, 1);
        let bad = check(
            &[ack],
            &[replica("a", 7, b"..xy"), replica("b", 7, b"..xz")],
        );
        let rules: Vec<_> = bad.violations.iter().map(|v| v.rule.as_str()).collect();
        assert_eq!(rules, vec!["replicas_differ", "acked_missing"]);
    }
}
