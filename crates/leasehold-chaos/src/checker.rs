//! Checks a history for violations of what a lease service promises.
//!
//! - **overlap**: two intervals on one resource, at least one exclusive,
//!   overlapping in time (from different grants);
//! - **token order**: a grant acknowledged before another was even asked
//!   for carries a token that is not lower;
//! - **lost ack**: two acknowledged commands with the same log index
//!   (session ids and exclusive tokens are log indexes, so an acknowledged
//!   entry that was lost and overwritten shows up as a reused index); a
//!   session whose close was acknowledged still holding a resource at the
//!   end;
//! - **lost update**: a fenced register write that was accepted although
//!   another write landed between its read and its write;
//! - **early expiry**: a session declared dead while its holder's deadline
//!   from acknowledged renewals was still ahead;
//! - **liveness**: a client that could not acquire again after the faults.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Outcome, Record};

/// One violation, with the instants that show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Violation {
    /// Which rule.
    pub rule: String,
    /// What happened.
    pub detail: String,
    /// Where on the timeline (CLOCK_MONOTONIC ns): start and end.
    pub from_ns: u64,
    /// End of the window.
    pub to_ns: u64,
    /// The resource, if any.
    pub resource: Option<String>,
}

/// Counts and violations of one history.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Operations by `op/outcome`.
    pub ops: BTreeMap<String, u64>,
    /// Faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Intervals checked.
    pub holds: u64,
    /// Accepted register writes.
    pub register_writes: u64,
    /// Everything found.
    pub violations: Vec<Violation>,
}

/// What an acknowledged log index was used for.
#[derive(Debug, Clone, PartialEq)]
enum Claim {
    /// The opening of this session.
    Open(u64),
    /// A grant: resource, mode, session.
    Grant(String, String, u64),
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::Open(id) => write!(f, "open of session {id}"),
            Claim::Grant(r, m, s) => write!(f, "{m} grant on {r} to session {s}"),
        }
    }
}

/// Parses JSONL: workload records and nemesis fault lines.
pub fn parse(text: &str) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("line {}: not JSON: {e}", i + 1))?;
        let rec = if v.get("type").is_none() && v.get("fault").is_some() {
            Record::Fault {
                t_ns: v.get("t_ns").and_then(|x| x.as_u64()).unwrap_or(0),
                fault: v
                    .get("fault")
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string(),
                node: v.get("node").cloned(),
                detail: v.get("detail").cloned(),
            }
        } else {
            serde_json::from_value(v).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?
        };
        out.push(rec);
    }
    Ok(out)
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Invoke => "invoke",
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Unknown => "unknown",
    }
}

/// Runs every check.
pub fn check(records: &[Record]) -> Summary {
    let mut s = Summary::default();
    let mut holds: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    let mut grants: Vec<GrantSeen> = Vec::new();
    // Earliest invoke of an acquire on (session, resource) whose outcome is
    // unknown: it may have been granted then, so a later acquire can be
    // answered with that earlier grant.
    let mut pending: HashMap<(u64, String), u64> = HashMap::new();
    // Grants already acknowledged, by (session, token): a later acquire
    // answered with one of them (its release was lost or unknown, so the
    // session still held it) is the same grant delivered again.
    let mut delivered: std::collections::HashSet<(u64, u64)> = Default::default();
    let mut indexes: HashMap<u64, Vec<(Claim, u64)>> = HashMap::new();
    let mut closed: HashMap<u64, u64> = HashMap::new();
    let mut writes = Vec::new();
    let mut liveness: BTreeMap<u32, bool> = BTreeMap::new();

    // What each acknowledged log index was: an open (session id) or grants
    // (one entry may grant several resources, e.g. an expiry freeing them).
    let mut claim = |s: &mut Summary, index: u64, what: Claim, t_ns: u64| {
        let prev = indexes.entry(index).or_default();
        for (p, p_t) in prev.iter() {
            let clash = match (p, &what) {
                (Claim::Open(_), _) | (_, Claim::Open(_)) => true,
                (Claim::Grant(r1, m1, s1), Claim::Grant(r2, m2, s2)) => {
                    r1 == r2 && s1 != s2 && (m1 == "exclusive" || m2 == "exclusive")
                }
            };
            if clash {
                s.violations.push(Violation {
                    rule: "lost ack".into(),
                    detail: format!(
                        "log index {index} acknowledged for two different entries: {p} and {what}"
                    ),
                    from_ns: (*p_t).min(t_ns),
                    to_ns: (*p_t).max(t_ns),
                    resource: None,
                });
                return;
            }
        }
        prev.push((what, t_ns));
    };

    for r in records {
        match r {
            Record::Op {
                t_ns,
                client,
                op,
                outcome,
                resource,
                session,
                token,
                mode,
                latency_ns,
                ..
            } => {
                if *outcome != Outcome::Invoke {
                    *s.ops.entry(format!("{op}/{}", outcome_name(*outcome))).or_default() += 1;
                }
                match (op.as_str(), outcome) {
                    ("open", Outcome::Ok) => {
                        if let Some(id) = session {
                            claim(&mut s, *id, Claim::Open(*id), *t_ns);
                        }
                    }
                    ("acquire", Outcome::Unknown) => {
                        if let (Some(sess), Some(res)) = (session, resource) {
                            let invoke = t_ns.saturating_sub(latency_ns.unwrap_or(0));
                            pending.entry((*sess, res.clone())).or_insert(invoke);
                        }
                    }
                    ("acquire", Outcome::Ok) => {
                        if let (Some(tok), Some(res), Some(m)) = (token, resource, mode) {
                            let sess = session.unwrap_or(0);
                            if !delivered.insert((sess, *tok)) {
                                continue;
                            }
                            claim(&mut s, *tok, Claim::Grant(res.clone(), m.clone(), sess), *t_ns);
                            let mut invoke = t_ns.saturating_sub(latency_ns.unwrap_or(0));
                            if let Some(p) = pending.remove(&(sess, res.clone())) {
                                invoke = invoke.min(p);
                            }
                            grants.push(GrantSeen {
                                token: *tok,
                                resource: res,
                                shared: m == "shared",
                                ok_ns: *t_ns,
                                invoke_ns: invoke,
                                session: sess,
                            });
                        }
                    }
                    ("close", Outcome::Ok) => {
                        if let Some(id) = session {
                            closed.insert(*id, *t_ns);
                        }
                    }
                    ("liveness", Outcome::Ok) => {
                        liveness.insert(*client, true);
                    }
                    ("liveness", Outcome::Fail) => {
                        liveness.entry(*client).or_insert(false);
                    }
                    ("final_holder", Outcome::Ok) => {
                        if let (Some(id), Some(res)) = (session, resource) {
                            if let Some(at) = closed.get(id) {
                                s.violations.push(Violation {
                                    rule: "lost ack".into(),
                                    detail: format!(
                                        "session {id} still holds {res} after its close was acknowledged"
                                    ),
                                    from_ns: *at,
                                    to_ns: *t_ns,
                                    resource: Some(res.clone()),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            Record::Hold { resource, .. } => {
                s.holds += 1;
                holds.entry(resource.as_str()).or_default().push(r);
            }
            Record::EarlyExpiry {
                client,
                session,
                t_ns,
                holder_deadline_ns,
            } => s.violations.push(Violation {
                rule: "early expiry".into(),
                detail: format!(
                    "client {client}: session {session} declared dead {} ms before the holder's deadline",
                    (holder_deadline_ns - t_ns) / 1_000_000
                ),
                from_ns: *t_ns,
                to_ns: *holder_deadline_ns,
                resource: None,
            }),
            Record::RegisterWrite { .. } => {
                s.register_writes += 1;
                writes.push(r);
            }
            Record::Fault { fault, .. } => {
                *s.faults.entry(fault.clone()).or_default() += 1;
            }
        }
    }

    check_overlaps(&mut s, &holds);
    check_token_order(&mut s, &grants);
    for w in writes {
        if let Record::RegisterWrite {
            t_ns,
            resource,
            client,
            token,
            read_value,
            before,
            ..
        } = w
        {
            if read_value != before {
                s.violations.push(Violation {
                    rule: "lost update".into(),
                    detail: format!(
                        "client {client} (token {token}) wrote from value {read_value} but the register held {before}: an update was lost"
                    ),
                    from_ns: *t_ns,
                    to_ns: *t_ns,
                    resource: Some(resource.clone()),
                });
            }
        }
    }
    for (client, ok) in liveness {
        if !ok {
            s.violations.push(Violation {
                rule: "liveness".into(),
                detail: format!("client {client} could not acquire after the faults healed"),
                from_ns: 0,
                to_ns: 0,
                resource: None,
            });
        }
    }
    s
}

fn check_overlaps(s: &mut Summary, holds: &BTreeMap<&str, Vec<&Record>>) {
    for (resource, list) in holds {
        let mut iv: Vec<(u64, u64, &str, u64, u64)> = list
            .iter()
            .filter_map(|r| match r {
                Record::Hold {
                    start_ns,
                    end_ns,
                    mode,
                    token,
                    session,
                    ..
                } => Some((*start_ns, *end_ns, mode.as_str(), *token, *session)),
                _ => None,
            })
            .collect();
        iv.sort_by_key(|x| x.0);
        for i in 0..iv.len() {
            for j in (i + 1)..iv.len() {
                let (a, b) = (iv[i], iv[j]);
                if b.0 >= a.1 {
                    break;
                }
                let same = a.3 == b.3 && a.4 == b.4;
                let conflict = a.2 == "exclusive" || b.2 == "exclusive";
                if conflict && !same {
                    s.violations.push(Violation {
                        rule: "overlap".into(),
                        detail: format!(
                            "{resource}: {} (session {}, token {}) and {} (session {}, token {}) overlap for {:.1} ms",
                            a.2, a.4, a.3, b.2, b.4, b.3,
                            (a.1.min(b.1) - b.0) as f64 / 1e6
                        ),
                        from_ns: b.0,
                        to_ns: a.1.min(b.1),
                        resource: Some((*resource).to_string()),
                    });
                }
            }
        }
    }
}

/// One acknowledged grant, for the token-order rule.
#[derive(Debug, Clone, Copy)]
struct GrantSeen<'a> {
    /// Its fencing token.
    token: u64,
    /// The resource.
    resource: &'a str,
    /// Shared mode.
    shared: bool,
    /// When the grant was acknowledged.
    ok_ns: u64,
    /// When it was asked for (the earliest attempt that may have made it).
    invoke_ns: u64,
    /// The session holding it.
    session: u64,
}

fn check_token_order(s: &mut Summary, grants: &[GrantSeen<'_>]) {
    let mut by_res: BTreeMap<&str, Vec<GrantSeen<'_>>> = BTreeMap::new();
    for g in grants {
        by_res.entry(g.resource).or_default().push(*g);
    }
    for (res, mut by_ok) in by_res {
        // Every grant acknowledged before another was asked for must carry
        // a lower token; equal tokens are one entry: the same lease
        // answered again to its session, or shared leases granted together.
        by_ok.sort_by_key(|g| g.ok_ns);
        let mut by_invoke = by_ok.clone();
        by_invoke.sort_by_key(|g| g.invoke_ns);
        let mut k = 0;
        let mut max_before: Option<GrantSeen<'_>> = None;
        for y in &by_invoke {
            while k < by_ok.len() && by_ok[k].ok_ns < y.invoke_ns {
                if max_before.is_none_or(|m| by_ok[k].token > m.token) {
                    max_before = Some(by_ok[k]);
                }
                k += 1;
            }
            let Some(m) = max_before else { continue };
            let same_entry_ok =
                y.token == m.token && (y.session == m.session || (y.shared && m.shared));
            if y.token < m.token || (y.token == m.token && !same_entry_ok) {
                s.violations.push(Violation {
                    rule: "token order".into(),
                    detail: format!(
                        "{res}: session {} got token {} although token {} (session {}) was acknowledged before it asked",
                        y.session, y.token, m.token, m.session
                    ),
                    from_ns: y.invoke_ns,
                    to_ns: y.ok_ns,
                    resource: Some(res.to_string()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(client: u32, session: u64, token: u64, mode: &str, start: u64, end: u64) -> Record {
        Record::Hold {
            client,
            session,
            resource: "r".into(),
            mode: mode.into(),
            token,
            start_ns: start,
            end_ns: end,
            ended_by: "released".into(),
        }
    }

    fn grant(client: u32, token: u64, mode: &str, invoke: u64, ok: u64) -> Record {
        Record::Op {
            t_ns: ok,
            client,
            op: "acquire".into(),
            outcome: Outcome::Ok,
            resource: Some("r".into()),
            session: Some(client as u64 + 1000),
            token: Some(token),
            mode: Some(mode.into()),
            detail: None,
            latency_ns: Some(ok - invoke),
        }
    }

    #[test]
    fn clean_history_has_no_violation() {
        let h = vec![
            grant(1, 10, "exclusive", 0, 5),
            hold(1, 1, 10, "exclusive", 5, 100),
            grant(2, 20, "shared", 50, 120),
            grant(3, 20, "shared", 60, 121),
            hold(2, 2, 20, "shared", 120, 200),
            hold(3, 3, 20, "shared", 121, 210),
        ];
        let s = check(&h);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.holds, 3);
    }

    #[test]
    fn catches_overlap_token_order_lost_update_and_early_expiry() {
        let h = vec![
            hold(1, 1, 10, "exclusive", 0, 100),
            hold(2, 2, 20, "shared", 90, 150),
            grant(1, 30, "exclusive", 0, 10),
            grant(2, 25, "exclusive", 20, 30),
            Record::RegisterWrite {
                t_ns: 5,
                resource: "r".into(),
                client: 1,
                token: 10,
                read_value: 3,
                before: 4,
                value: 4,
            },
            Record::EarlyExpiry {
                client: 1,
                session: 1,
                t_ns: 1_000_000,
                holder_deadline_ns: 3_000_000,
            },
        ];
        let rules: Vec<String> = check(&h).violations.into_iter().map(|v| v.rule).collect();
        for r in ["overlap", "token order", "lost update", "early expiry"] {
            assert!(rules.iter().any(|x| x == r), "{r} not caught: {rules:?}");
        }
    }

    #[test]
    fn a_grant_delivered_again_is_not_out_of_order() {
        // Session 1001 holds r shared (token 5); its release was lost, so a
        // later acquire is answered with the same grant, after session 1002
        // got token 9 beside it.
        let h = vec![
            grant(1, 5, "shared", 0, 10),
            grant(2, 9, "shared", 20, 30),
            grant(1, 5, "shared", 40, 50),
        ];
        let s = check(&h);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        // A different session answered with an older token is a violation.
        let h = vec![
            grant(1, 9, "exclusive", 0, 10),
            grant(2, 5, "exclusive", 20, 30),
        ];
        assert_eq!(check(&h).violations.len(), 1);
    }

    #[test]
    fn catches_reused_log_index_and_parses_fault_lines() {
        let text = r#"{"t_ns":1,"fault":"kill","node":1}
{"type":"op","t_ns":2,"client":0,"op":"open","outcome":"ok","session":7}
{"type":"op","t_ns":3,"client":1,"op":"acquire","outcome":"ok","resource":"r","session":9,"token":7,"mode":"exclusive","latency_ns":1}"#;
        let recs = parse(text).expect("parses");
        let s = check(&recs);
        assert_eq!(s.faults.get("kill"), Some(&1));
        assert_eq!(s.violations.len(), 1);
        assert_eq!(s.violations[0].rule, "lost ack");
    }
}
