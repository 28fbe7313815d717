//! Output: aligned plain-text tables, or one JSON object per line.

use std::io::Write;

use clap::ValueEnum;
use leasehold_client::{
    LeaseConfig, LeaseInfo, NodeStatus, ResourceState, SessionInfo, WatchEvent,
};
use serde_json::{json, Value};

use crate::duration::format_duration;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned plain-text columns with a header line.
    Table,
    /// One JSON object per line.
    Json,
}

/// One result: its table cells and its JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Cells, in header order.
    pub cells: Vec<String>,
    /// The same result as JSON.
    pub json: Value,
}

/// `text` with every control character (C0, DEL, C1: ESC, CSI, NUL,
/// newlines, …) escaped as `\u{..}`, so that no string a server sends can
/// write an escape sequence to the terminal. The server refuses such names
/// since they were allowed; this guards against old names and other
/// servers.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Renders `rows` under `header` as aligned columns (two spaces apart, the
/// last column unpadded), one line each, ending with a newline.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            } else {
                widths.push(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders records in `format`: a table with `header`, or JSON lines.
pub fn render(format: Format, header: &[&str], records: &[Record]) -> String {
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = records.iter().map(|r| r.cells.clone()).collect();
            render_table(header, &rows)
        }
        Format::Json => records.iter().map(|r| format!("{}\n", r.json)).collect(),
    }
}

/// Prints records to stdout (flushed: `watch` streams).
pub fn print(format: Format, header: &[&str], records: &[Record]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(render(format, header, records).as_bytes())?;
    out.flush()
}

/// Metadata as text (lossy UTF-8).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Header of [`acquired`].
pub const ACQUIRED_HEADER: &[&str] = &["RESOURCE", "MODE", "TOKEN", "TTL", "SESSION"];

/// A lease just acquired.
pub fn acquired(
    resource: &str,
    mode: leasehold_client::Mode,
    fencing_token: u64,
    ttl: std::time::Duration,
    session: &leasehold_client::SessionHandle,
) -> Record {
    Record {
        cells: vec![
            resource.to_string(),
            mode.to_string(),
            fencing_token.to_string(),
            format_duration(ttl),
            session.to_string(),
        ],
        json: json!({
            "resource": resource,
            "mode": mode.as_str(),
            "fencing_token": fencing_token,
            "ttl_ms": u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            "session_id": session.id,
            "session": session.to_string(),
        }),
    }
}

/// Header of [`holder`].
pub const HOLDER_HEADER: &[&str] = &[
    "RESOURCE",
    "MODE",
    "SESSION",
    "CLIENT",
    "TOKEN",
    "REMAINING",
    "RECALLED",
    "METADATA",
];

/// The JSON of one holder.
fn holder_json(l: &LeaseInfo) -> Value {
    json!({
        "resource": l.resource,
        "mode": l.mode.as_str(),
        "session_id": l.session_id,
        "client_name": l.client_name,
        "fencing_token": l.fencing_token,
        "remaining_ttl_ms": l.remaining_ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "recalled": l.recalled,
        "recall_reason": l.recall_reason,
        "metadata": text(&l.metadata),
    })
}

/// One holder of a resource.
pub fn holder(l: &LeaseInfo) -> Record {
    Record {
        cells: vec![
            l.resource.clone(),
            l.mode.to_string(),
            l.session_id.to_string(),
            l.client_name.clone(),
            l.fencing_token.to_string(),
            l.remaining_ttl.map_or("-".to_string(), format_duration),
            match (&l.recall_reason, l.recalled) {
                (Some(r), _) => format!("yes: {r}"),
                (None, true) => "yes".to_string(),
                (None, false) => "no".to_string(),
            },
            text(&l.metadata),
        ],
        json: holder_json(l),
    }
}

/// `get`'s answer as JSON (one object: the resource with its holders).
pub fn resource_json(s: &ResourceState) -> Value {
    json!({
        "resource": s.resource,
        "holders": s.holders.iter().map(holder_json).collect::<Vec<_>>(),
        "waiters": s.waiters,
        "revision": s.revision,
    })
}

/// Header of [`listed`].
pub const LIST_HEADER: &[&str] = &["RESOURCE", "MODE", "HOLDERS", "TOKEN", "WAITERS"];

/// One resource in `list`.
pub fn listed(s: &ResourceState) -> Record {
    let mode = s
        .holders
        .first()
        .map_or("-".to_string(), |h| h.mode.to_string());
    let holders = if s.holders.is_empty() {
        "-".to_string()
    } else {
        s.holders
            .iter()
            .map(|h| h.session_id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let token = s
        .holders
        .iter()
        .map(|h| h.fencing_token)
        .max()
        .map_or("-".to_string(), |t| t.to_string());
    Record {
        cells: vec![
            s.resource.clone(),
            mode,
            holders,
            token,
            s.waiters.to_string(),
        ],
        json: resource_json(s),
    }
}

/// Header of [`event`].
pub const EVENT_HEADER: &[&str] = &["REVISION", "KIND", "RESOURCE", "SESSION", "MODE", "TOKEN"];

/// One watch event.
pub fn event(e: &WatchEvent) -> Record {
    Record {
        cells: vec![
            e.revision.to_string(),
            e.kind.to_string(),
            e.resource.clone(),
            e.session_id.to_string(),
            e.mode.to_string(),
            e.fencing_token.to_string(),
        ],
        json: json!({
            "revision": e.revision,
            "kind": e.kind.as_str(),
            "resource": e.resource,
            "session_id": e.session_id,
            "mode": e.mode.as_str(),
            "fencing_token": e.fencing_token,
        }),
    }
}

/// Renders one watch event as a line with fixed-width columns (events
/// stream, so the table cannot be measured first).
pub fn event_line(format: Format, e: &WatchEvent) -> String {
    let r = event(e);
    match format {
        Format::Json => format!("{}\n", r.json),
        Format::Table => {
            let c: Vec<_> = r.cells.iter().map(|c| printable(c)).collect();
            format!(
                "{:<10}  {:<8}  {:<30}  {:<8}  {:<9}  {}\n",
                c[0], c[1], c[2], c[3], c[4], c[5]
            )
        }
    }
}

/// The fixed-width header of [`event_line`].
pub fn event_header() -> String {
    let h = EVENT_HEADER;
    format!(
        "{:<10}  {:<8}  {:<30}  {:<8}  {:<9}  {}\n",
        h[0], h[1], h[2], h[3], h[4], h[5]
    )
}

/// Header of [`node`].
pub const STATUS_HEADER: &[&str] = &[
    "ENDPOINT", "NODE", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "SERVING", "GRACE",
    "SESSIONS", "ERROR",
];

/// One endpoint's view of the cluster, or why it did not answer.
pub fn node(endpoint: &str, view: &Result<NodeStatus, leasehold_client::ClientError>) -> Record {
    let endpoint = endpoint.trim_start_matches("http://").to_string();
    match view {
        Ok(s) => Record {
            cells: vec![
                endpoint.clone(),
                s.node_id.to_string(),
                s.role.clone(),
                s.leader_id.map_or("-".to_string(), |l| l.to_string()),
                s.term.to_string(),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.serving.to_string(),
                format_duration(s.grace_remaining),
                s.sessions.to_string(),
                s.config_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("config: {e}")),
            ],
            json: json!({
                "endpoint": endpoint,
                "node_id": s.node_id,
                "role": s.role,
                "leader_id": s.leader_id,
                "leader_api_addr": s.leader_api_addr,
                "term": s.term,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "serving": s.serving.as_str(),
                "grace_remaining_ms": u64::try_from(s.grace_remaining.as_millis()).unwrap_or(u64::MAX),
                "sessions": s.sessions,
                "resources": s.resources,
                "members": s.members.iter().map(|m| member_json(m, s.leader_id)).collect::<Vec<_>>(),
                "config": s.config.as_ref().map(config_json),
                "config_error": s.config_error.as_deref().unwrap_or_default(),
            }),
        },
        Err(e) => Record {
            cells: vec![
                endpoint.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                e.to_string(),
            ],
            json: json!({ "endpoint": endpoint, "error": e.to_string(), "code": e.kind() }),
        },
    }
}

/// Milliseconds of a duration, saturating.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration given in milliseconds, as the CLI writes durations.
fn ms_text(ms: u64) -> String {
    format_duration(std::time::Duration::from_millis(ms))
}

/// Header of [`members`].
pub const MEMBER_HEADER: &[&str] = &["MEMBER", "RAFT", "API", "LEADER"];

/// The JSON of one member.
fn member_json(m: &leasehold_client::Member, leader: Option<u64>) -> Value {
    json!({
        "node_id": m.node_id,
        "raft_addr": m.raft_addr,
        "api_addr": m.api_addr,
        "leader": leader == Some(m.node_id),
    })
}

/// The members as `view` reports them, its leader marked.
pub fn members(view: &NodeStatus) -> Vec<Record> {
    view.members
        .iter()
        .map(|m| Record {
            cells: vec![
                m.node_id.to_string(),
                m.raft_addr.clone(),
                m.api_addr.clone(),
                if view.leader_id == Some(m.node_id) {
                    "yes".into()
                } else {
                    String::new()
                },
            ],
            json: member_json(m, view.leader_id),
        })
        .collect()
}

/// Header of [`config`].
pub const CONFIG_HEADER: &[&str] = &[
    "TTL_MIN",
    "TTL_MAX",
    "DRIFT_PPM",
    "GRACE_MARGIN",
    "VOTE_WINDOW",
];

/// The JSON of a lease configuration (the wire's field names).
fn config_json(c: &LeaseConfig) -> Value {
    json!({
        "ttl_ms_min": c.ttl_ms_min,
        "ttl_ms_max": c.ttl_ms_max,
        "drift_ppm": c.drift_ppm,
        "grace_margin_ms": c.grace_margin_ms,
        "vote_window_ms": c.vote_window_ms,
    })
}

/// The replicated lease configuration (a vote window of 0 is not set yet).
pub fn config(c: &LeaseConfig) -> Record {
    Record {
        cells: vec![
            ms_text(c.ttl_ms_min),
            ms_text(c.ttl_ms_max),
            c.drift_ppm.to_string(),
            ms_text(c.grace_margin_ms),
            if c.vote_window_ms == 0 {
                "unset".into()
            } else {
                ms_text(c.vote_window_ms)
            },
        ],
        json: config_json(c),
    }
}

/// Header of [`session`].
pub const SESSION_HEADER: &[&str] = &["SESSION", "CLIENT", "TTL", "REMAINING", "HOLDS", "WAITS"];

/// Names as one cell: comma separated, `-` when none.
fn names(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// One open session (never its secret).
pub fn session(s: &SessionInfo) -> Record {
    Record {
        cells: vec![
            s.session_id.to_string(),
            s.client_name.clone(),
            format_duration(s.ttl),
            s.remaining_ttl.map_or("-".to_string(), format_duration),
            names(&s.held),
            names(&s.waiting),
        ],
        json: json!({
            "session_id": s.session_id,
            "client_name": s.client_name,
            "ttl_ms": millis(s.ttl),
            "remaining_ttl_ms": s.remaining_ttl.map(millis),
            "held": s.held,
            "waiting": s.waiting,
            "private": s.private,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tables_align_columns() {
        let t = render_table(
            &["A", "LONGER", "C"],
            &[
                vec!["xxxx".into(), "1".into(), "end".into()],
                vec!["y".into(), "22".into(), "".into()],
            ],
        );
        assert_eq!(t, "A     LONGER  C\nxxxx  1       end\ny     22\n");
    }

    #[test]
    fn acquired_prints_as_table_and_json() {
        let r = acquired(
            "jobs/a",
            leasehold_client::Mode::Exclusive,
            42,
            Duration::from_secs(10),
            &leasehold_client::SessionHandle::new(7, leasehold_client::SessionSecret([1; 16])),
        );
        let t = render(Format::Table, ACQUIRED_HEADER, std::slice::from_ref(&r));
        let handle = format!("7.{}", "01".repeat(16));
        assert_eq!(
            t,
            format!(
                "RESOURCE  MODE       TOKEN  TTL  SESSION\njobs/a    exclusive  42     10s  {handle}\n"
            )
        );
        let j = render(Format::Json, ACQUIRED_HEADER, &[r.clone(), r]);
        let lines: Vec<&str> = j.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(v["fencing_token"], 42);
        assert_eq!(v["mode"], "exclusive");
        assert_eq!(v["ttl_ms"], 10_000);
        assert_eq!(v["session_id"], 7);
        assert_eq!(v["session"], handle);
    }

    #[test]
    fn listed_and_holders_render() {
        let h = LeaseInfo {
            resource: "r".into(),
            session_id: 3,
            mode: leasehold_client::Mode::Shared,
            fencing_token: 9,
            metadata: b"host-a".to_vec(),
            client_name: "cli".into(),
            remaining_ttl: Some(Duration::from_millis(1_500)),
            recalled: true,
            recall_reason: Some("drain".into()),
        };
        let s = ResourceState {
            resource: "r".into(),
            holders: vec![h.clone()],
            waiters: 2,
            revision: 11,
        };
        assert_eq!(listed(&s).cells, ["r", "shared", "3", "9", "2"]);
        let cells = holder(&h).cells;
        assert_eq!(cells[5], "1s500ms");
        assert_eq!(cells[6], "yes: drain");
        assert_eq!(resource_json(&s)["holders"][0]["client_name"], "cli");
        let free = ResourceState {
            resource: "f".into(),
            holders: vec![],
            waiters: 0,
            revision: 1,
        };
        assert_eq!(listed(&free).cells, ["f", "-", "-", "-", "0"]);
    }

    #[test]
    fn sessions_and_config_render() {
        let s = SessionInfo {
            session_id: 4,
            client_name: "web-1".into(),
            ttl: Duration::from_secs(10),
            remaining_ttl: Some(Duration::from_millis(9_250)),
            held: vec!["a".into(), "b".into()],
            waiting: vec![],
            private: false,
        };
        let r = session(&s);
        assert_eq!(r.cells, ["4", "web-1", "10s", "9s250ms", "a,b", "-"]);
        assert_eq!(r.json["held"][1], "b");
        assert_eq!(r.json["remaining_ttl_ms"], 9_250);
        assert!(r.json.get("secret").is_none() && r.json.get("session").is_none());
        let c = LeaseConfig {
            ttl_ms_min: 2_000,
            ttl_ms_max: 300_000,
            drift_ppm: 10_000,
            grace_margin_ms: 500,
            vote_window_ms: 0,
        };
        let r = config(&c);
        assert_eq!(r.cells, ["2s", "5m", "10000", "500ms", "unset"]);
        assert_eq!(r.json["ttl_ms_max"], 300_000);
        assert_eq!(r.json["vote_window_ms"], 0);
    }

    #[test]
    fn status_shows_members_config_and_config_errors() {
        let view = NodeStatus {
            endpoint: "http://127.0.0.1:1".into(),
            node_id: 2,
            role: "follower".into(),
            leader_id: Some(1),
            leader_api_addr: Some("127.0.0.1:1".into()),
            term: 3,
            commit_index: 9,
            applied_index: 9,
            members: vec![
                leasehold_client::Member {
                    node_id: 1,
                    raft_addr: "r1".into(),
                    api_addr: "a1".into(),
                    learner: false,
                },
                leasehold_client::Member {
                    node_id: 2,
                    raft_addr: "r2".into(),
                    api_addr: "a2".into(),
                    learner: false,
                },
            ],
            serving: leasehold_client::Serving::Follower,
            grace_remaining: Duration::ZERO,
            sessions: 0,
            resources: 0,
            config: Some(LeaseConfig::default()),
            config_error: Some("vote window too short".into()),
        };
        let m = members(&view);
        assert_eq!(m[0].cells, ["1", "r1", "a1", "yes"]);
        assert_eq!(m[1].cells, ["2", "r2", "a2", ""]);
        let n = node("http://127.0.0.1:1", &Ok(view));
        assert_eq!(
            n.cells.last().map(String::as_str),
            Some("config: vote window too short")
        );
        assert_eq!(n.json["members"][0]["leader"], true);
        assert_eq!(n.json["config"]["drift_ppm"], 10_000);
        assert_eq!(n.json["config_error"], "vote window too short");
    }

    #[test]
    fn event_lines_are_fixed_width() {
        let e = WatchEvent {
            revision: 5,
            kind: leasehold_client::EventKind::Acquired,
            resource: "a".into(),
            session_id: 2,
            mode: leasehold_client::Mode::Exclusive,
            fencing_token: 5,
        };
        let line = event_line(Format::Table, &e);
        assert_eq!(line.find("acquired"), event_header().find("KIND"));
        let v: Value = serde_json::from_str(&event_line(Format::Json, &e)).expect("json");
        assert_eq!(v["kind"], "acquired");
    }

    #[test]
    fn server_strings_never_reach_the_terminal_raw() {
        assert_eq!(printable("plain/name ✓"), "plain/name ✓");
        assert_eq!(
            printable("a\u{1b}[2Jb\0c\u{9b}d\n"),
            "a\\u{1b}[2Jb\\u{0}c\\u{9b}d\\u{a}"
        );
        let table = render_table(
            &["NAME", "X"],
            &[vec!["evil\u{1b}]0;title\u{7}".into(), "1".into()]],
        );
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(table.contains("evil\\u{1b}]0;title\\u{7}"), "{table}");
        let e = WatchEvent {
            revision: 5,
            kind: leasehold_client::EventKind::Acquired,
            resource: "x\u{1b}[31m".into(),
            session_id: 2,
            mode: leasehold_client::Mode::Exclusive,
            fencing_token: 5,
        };
        let line = event_line(Format::Table, &e);
        assert!(
            !line.trim_end_matches('\n').chars().any(char::is_control),
            "{line:?}"
        );
        assert!(line.contains("x\\u{1b}[31m"), "{line}");
    }
}
