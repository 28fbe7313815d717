//! A report a person can look at: one HTML file with an SVG timeline
//! (resources on the y axis, holder intervals as bars, fault windows
//! shaded, violations in red), latency over time, and summary tables.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::checker::Summary;
use crate::history::{Outcome, Record};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Pairs a fault with the fault that ends it.
fn closes(fault: &str) -> Option<&'static str> {
    match fault {
        "kill" => Some("restart"),
        "pause" => Some("resume"),
        "partition" | "isolate" | "split" => Some("heal"),
        "wipe" => Some("restart"),
        "clock" => Some("clock-reset"),
        "membership" => Some("membership-restore"),
        _ => None,
    }
}

/// Renders the report.
pub fn render(title: &str, records: &[Record], summary: &Summary) -> String {
    let times = records.iter().map(|r| match r {
        Record::Op { t_ns, .. }
        | Record::Fault { t_ns, .. }
        | Record::RegisterWrite { t_ns, .. }
        | Record::EarlyExpiry { t_ns, .. } => *t_ns,
        Record::Hold { start_ns, .. } => *start_ns,
    });
    let t0 = times.clone().min().unwrap_or(0);
    let t1 = times.max().unwrap_or(1).max(t0 + 1);
    let width = 1200.0;
    let left = 140.0;
    let x =
        |t: u64| left + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * (width - left - 10.0);

    let mut resources: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Hold { resource, .. } => Some(resource.as_str()),
            _ => None,
        })
        .collect();
    resources.sort_unstable();
    resources.dedup();
    let row_h = 28.0;
    let top = 30.0;
    let height = top + row_h * resources.len().max(1) as f64 + 30.0;
    let row = |res: &str| resources.iter().position(|r| *r == res).unwrap_or(0) as f64;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"##
    );
    // Fault windows.
    let mut open: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut windows = Vec::new();
    for r in records {
        if let Record::Fault {
            t_ns,
            fault,
            node,
            detail,
            ..
        } = r
        {
            let node = node.as_ref().map(|n| n.to_string()).unwrap_or_default();
            // A clock fault back to rate 1 is the reset of an earlier one.
            let rate_one = detail
                .as_ref()
                .and_then(|d| d.get("rate"))
                .is_some_and(|r| r.as_f64() == Some(1.0) || r.as_str() == Some("1"));
            let closing = if fault == "clock" && rate_one {
                "clock-reset"
            } else {
                fault.as_str()
            };
            let node_free = matches!(closing, "heal" | "membership-restore");
            if closing == fault.as_str() && closes(fault).is_some() {
                open.insert((fault.clone(), node), *t_ns);
            } else if let Some(((f, n), start)) = open
                .iter()
                .find(|((f, n), _)| closes(f) == Some(closing) && (n == &node || node_free))
                .map(|(k, v)| (k.clone(), *v))
            {
                open.remove(&(f.clone(), n.clone()));
                windows.push((f, n, start, *t_ns));
            } else {
                windows.push((fault.clone(), node, *t_ns, *t_ns));
            }
        }
    }
    for ((f, n), start) in open {
        windows.push((f, n, start, t1));
    }
    for (i, (f, n, a, b)) in windows.iter().enumerate() {
        let (xa, xb) = (x(*a), x(*b).max(x(*a) + 2.0));
        let _ = write!(
            svg,
            r##"<rect x="{xa:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#f0c040" fill-opacity="0.25"><title>{} node {} ({:.1}s–{:.1}s)</title></rect><text x="{xa:.1}" y="{:.1}" fill="#806000">{}</text>"##,
            xb - xa,
            height - top - 30.0,
            esc(f),
            esc(n),
            (*a - t0) as f64 / 1e9,
            (*b - t0) as f64 / 1e9,
            10.0 + (i % 3) as f64 * 9.0,
            esc(f)
        );
    }
    // Time axis: a tick every "nice" number of seconds.
    let span_s = (t1 - t0) as f64 / 1e9;
    let step_s = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|st| span_s / st <= 20.0)
        .unwrap_or(600.0);
    let mut tick = 0.0;
    while tick <= span_s {
        let tx = x(t0 + (tick * 1e9) as u64);
        let _ = write!(
            svg,
            r##"<line x1="{tx:.1}" x2="{tx:.1}" y1="{top}" y2="{:.1}" stroke="#eee"/><text x="{tx:.1}" y="{:.1}" fill="#666">{tick}s</text>"##,
            height - 28.0,
            height - 14.0
        );
        tick += step_s;
    }
    for (i, res) in resources.iter().enumerate() {
        let y = top + row_h * i as f64;
        let _ = write!(
            svg,
            r##"<text x="4" y="{:.1}">{}</text><line x1="{left}" x2="{width}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            y + row_h * 0.6,
            esc(res),
            y + row_h,
            y + row_h
        );
    }
    for r in records {
        if let Record::Hold {
            client,
            resource,
            mode,
            token,
            start_ns,
            end_ns,
            session,
            ended_by,
        } = r
        {
            let y = top + row_h * row(resource) + if mode == "shared" { row_h * 0.5 } else { 2.0 };
            let h = if mode == "shared" {
                row_h * 0.4
            } else {
                row_h * 0.45
            };
            let hue = (*client as u64 * 67) % 360;
            let (xa, xb) = (x(*start_ns), x(*end_ns).max(x(*start_ns) + 1.0));
            let _ = write!(
                svg,
                r##"<rect x="{xa:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="hsl({hue},60%,{}%)"><title>client {client} session {session} {mode} token {token}: {:.3}s–{:.3}s ({ended_by})</title></rect>"##,
                xb - xa,
                if mode == "shared" { 70 } else { 45 },
                (*start_ns - t0) as f64 / 1e9,
                (*end_ns - t0) as f64 / 1e9
            );
        }
    }
    for v in &summary.violations {
        let y = v
            .resource
            .as_deref()
            .map(|r| top + row_h * row(r))
            .unwrap_or(top);
        let (xa, xb) = (x(v.from_ns), x(v.to_ns).max(x(v.from_ns) + 3.0));
        let _ = write!(
            svg,
            r##"<rect x="{xa:.1}" y="{y:.1}" width="{:.1}" height="{row_h}" fill="none" stroke="red" stroke-width="2"><title>{}</title></rect>"##,
            xb - xa,
            esc(&v.detail)
        );
    }
    svg.push_str("</svg>");

    // Latency over time.
    let lat_h = 160.0;
    let mut lat = String::new();
    let samples: Vec<(u64, u64, &str, Outcome)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Op {
                t_ns,
                op,
                outcome,
                latency_ns: Some(l),
                ..
            } if op != "renew" => Some((*t_ns, *l, op.as_str(), *outcome)),
            _ => None,
        })
        .collect();
    let max_l = samples.iter().map(|s| s.1).max().unwrap_or(1).max(1);
    let _ = write!(
        lat,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" font-family="monospace" font-size="11"><text x="4" y="12">latency (max {:.0} ms)</text>"##,
        lat_h + 20.0,
        max_l as f64 / 1e6
    );
    for (a, b) in windows.iter().map(|w| (w.2, w.3)) {
        let _ = write!(
            lat,
            r##"<rect x="{:.1}" y="16" width="{:.1}" height="{lat_h}" fill="#f0c040" fill-opacity="0.25"/>"##,
            x(a),
            (x(b) - x(a)).max(2.0)
        );
    }
    for (t, l, op, o) in samples {
        let color = match (op, o) {
            (_, Outcome::Fail) => "#c08000",
            (_, Outcome::Unknown) => "#c00000",
            ("acquire", _) => "#2060c0",
            ("release", _) => "#20a040",
            _ => "#808080",
        };
        let y = 16.0 + lat_h - (l as f64 / max_l as f64).sqrt() * lat_h;
        let _ = write!(
            lat,
            r##"<circle cx="{:.1}" cy="{y:.1}" r="1.5" fill="{color}"/>"##,
            x(t)
        );
    }
    lat.push_str("</svg>");

    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}.bad{{color:#c00;font-weight:bold}}.good{{color:#080;font-weight:bold}}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    let verdict = if summary.violations.is_empty() {
        "<p class=\"good\">0 violations</p>".to_string()
    } else {
        format!(
            "<p class=\"bad\">{} violation(s)</p>",
            summary.violations.len()
        )
    };
    html.push_str(&verdict);
    let _ = write!(
        html,
        "<p>{:.1} s of history; {} lease intervals; {} fenced register writes. Bars: holder beliefs (dark = exclusive, light = shared, colour = client); yellow: fault windows; red boxes: violations. Hover for details.</p>",
        (t1 - t0) as f64 / 1e9,
        summary.holds,
        summary.register_writes
    );
    html.push_str("<h2>Timeline</h2>");
    html.push_str(&svg);
    html.push_str("<h2>Latency over time</h2><p>blue: acquire, green: release, orange: failed, red: outcome unknown (square-root scale)</p>");
    html.push_str(&lat);
    html.push_str("<h2>Operations</h2><table><tr><th>operation/outcome</th><th>count</th></tr>");
    for (k, v) in &summary.ops {
        let _ = write!(html, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    html.push_str("</table><h2>Faults</h2><table><tr><th>fault</th><th>count</th></tr>");
    for (k, v) in &summary.faults {
        let _ = write!(html, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    html.push_str("</table><h2>Violations</h2>");
    if summary.violations.is_empty() {
        html.push_str("<p>none</p>");
    } else {
        html.push_str("<table><tr><th>rule</th><th>at (s)</th><th>detail</th></tr>");
        for v in &summary.violations {
            let _ = write!(
                html,
                "<tr class=\"bad\"><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
                esc(&v.rule),
                v.from_ns.saturating_sub(t0) as f64 / 1e9,
                esc(&v.detail)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    html
}
