//! The results file: a markdown table with both systems and the ratio, the
//! per-run figures, and an SVG plot of p50/p99 latency per row and system
//! (hand-written SVG, log scale).

use std::fmt::Write as _;
use std::path::Path;

use crate::compare::CompareArgs;
use crate::stats::Run;

/// One row's runs on both systems.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// A throughput row (in the main table with a ratio); otherwise its
    /// notes (failover gap, memory) are the result.
    pub throughput: bool,
    /// Workload column.
    pub label: String,
    /// Clients column.
    pub clients: String,
    /// etcd's runs (empty when etcd was skipped).
    pub etcd: Vec<Run>,
    /// Leasehold's runs.
    pub leasehold: Vec<Run>,
}

/// Mean of `f` over runs (0 for none).
fn mean(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    if runs.is_empty() {
        return 0.0;
    }
    runs.iter().map(f).sum::<f64>() / runs.len() as f64
}

/// "mean (run1, run2)" of ops/s, with thousands separators.
fn ops_cell(runs: &[Run]) -> String {
    if runs.is_empty() {
        return "skipped".into();
    }
    let each: Vec<String> = runs.iter().map(|r| thousands(r.ops_per_s)).collect();
    format!(
        "{} ({})",
        thousands(mean(runs, |r| r.ops_per_s)),
        each.join(", ")
    )
}

/// A count with `,` between thousands.
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "p50 / p99 / p99.9" in ms, means over runs.
fn lat_cell(runs: &[Run]) -> String {
    if runs.is_empty() {
        return "—".into();
    }
    format!(
        "{} / {} / {}",
        ms(mean(runs, |r| r.p50_ms)),
        ms(mean(runs, |r| r.p99_ms)),
        ms(mean(runs, |r| r.p999_ms))
    )
}

/// Milliseconds, 2 significant-ish digits.
fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Leasehold / etcd of mean ops/s.
fn ratio(row: &RowResult) -> Option<f64> {
    let e = mean(&row.etcd, |r| r.ops_per_s);
    let l = mean(&row.leasehold, |r| r.ops_per_s);
    (e > 0.0 && !row.leasehold.is_empty()).then(|| l / e)
}

/// The markdown document.
pub fn markdown(rows: &[RowResult], args: &CompareArgs, plot_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Leasehold vs etcd: bench results\n");
    let _ = writeln!(
        s,
        "Written by `cluster/bench.sh` (`leasehold-bench compare`). Both systems run as 3-node clusters \
         of separate processes on 127.0.0.1 on the same machine in the same run; every row runs etcd, \
         Leasehold, etcd, Leasehold ({} run(s) each, {} s per run; the memory row once each); the \
         client talks to the leader. Closed loop: each client has one call in flight. ops/s is the \
         mean with each run in brackets; latencies are means over runs of each run's percentile. \
         How the rows map onto etcd and what each measures: `docs/bench/README.md`.\n",
        args.repeats, args.seconds
    );
    if !args.machine.is_empty() {
        let _ = writeln!(s, "## Machine\n\n```\n{}\n```\n", args.machine.trim_end());
    }
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "| workload | clients | etcd ops/s | Leasehold ops/s | Leasehold / etcd | etcd p50 / p99 / p99.9 ms | Leasehold p50 / p99 / p99.9 ms |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.throughput) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.clients,
            ops_cell(&r.etcd),
            ops_cell(&r.leasehold),
            ratio(r).map_or("—".into(), |x| format!("{x:.2}")),
            lat_cell(&r.etcd),
            lat_cell(&r.leasehold),
        );
    }
    let special: Vec<&RowResult> = rows.iter().filter(|r| !r.throughput).collect();
    if !special.is_empty() {
        let _ = writeln!(s, "\n## Failover and memory\n");
        let _ = writeln!(s, "| row | sessions | system | run | result | renewals/s or creations/s | p50 / p99 / p99.9 ms | failed calls |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for r in special {
            for (name, runs) in [("etcd", &r.etcd), ("Leasehold", &r.leasehold)] {
                for (i, run) in runs.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {name} | {} | {} | {} | {} | {} |",
                        r.label,
                        r.clients,
                        i + 1,
                        run.note,
                        thousands(run.ops_per_s),
                        lat_cell(std::slice::from_ref(run)),
                        errors_cell(run),
                    );
                }
            }
        }
    }
    let mut notes = Vec::new();
    for r in rows.iter().filter(|r| r.throughput) {
        for (name, runs) in [("etcd", &r.etcd), ("Leasehold", &r.leasehold)] {
            for (i, run) in runs.iter().enumerate().filter(|(_, run)| run.errors > 0) {
                notes.push(format!(
                    "- {} [{}], {name} run {}: {}{}{}",
                    r.label,
                    r.clients,
                    i + 1,
                    errors_cell(run),
                    if run.note.is_empty() { "" } else { "; " },
                    run.note
                ));
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Failed calls in throughput rows\n");
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
    }
    let _ = writeln!(
        s,
        "\n## Latency plot\n\n![p50 and p99 latency per row]({plot_name})\n"
    );
    s
}

/// The SVG plot: per throughput row, bars of p50 (dark) and p99 (light)
/// for each system on a log axis from 0.1 ms to 10 s.
pub fn svg(rows: &[RowResult]) -> String {
    let rows: Vec<&RowResult> = rows.iter().filter(|r| r.throughput).collect();
    const W: f64 = 1100.0;
    const LEFT: f64 = 540.0;
    const ROW_H: f64 = 44.0;
    const TOP: f64 = 40.0;
    let (lo, hi) = (0.1f64.log10(), 10_000f64.log10());
    let x = |v: f64| LEFT + (v.max(0.1).log10() - lo) / (hi - lo) * (W - LEFT - 20.0);
    let h = TOP + ROW_H * rows.len() as f64 + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="13">Latency per call, ms (log scale): p50 dark, p99 light; etcd blue, Leasehold orange</text>"#
    );
    for t in [0.1, 1.0, 10.0, 100.0, 1000.0, 10_000.0] {
        let tx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{t}</text>"##,
            h - 30.0,
            h - 16.0
        );
    }
    for (k, r) in rows.iter().enumerate() {
        let y = TOP + ROW_H * k as f64;
        let label: String = format!("{} [{}]", r.label, r.clients)
            .chars()
            .take(90)
            .collect();
        let _ = writeln!(
            s,
            r#"<text x="10" y="{:.1}">{}</text>"#,
            y + ROW_H / 2.0 + 4.0,
            escape(&label)
        );
        let systems = [
            (&r.etcd, "#1f77b4", "#aec7e8"),
            (&r.leasehold, "#ff7f0e", "#ffbb78"),
        ];
        for (j, (runs, dark, light)) in systems.into_iter().enumerate() {
            if runs.is_empty() {
                continue;
            }
            let by = y + 6.0 + j as f64 * 16.0;
            let p50 = mean(runs, |r| r.p50_ms);
            let p99 = mean(runs, |r| r.p99_ms);
            let _ = writeln!(
                s,
                r#"<rect x="{LEFT}" y="{by:.1}" width="{:.1}" height="14" fill="{light}"/><rect x="{LEFT}" y="{by:.1}" width="{:.1}" height="14" fill="{dark}"/><text x="{:.1}" y="{:.1}">{} / {}</text>"#,
                x(p99) - LEFT,
                x(p50) - LEFT,
                x(p99) + 4.0,
                by + 11.0,
                ms(p50),
                ms(p99)
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}

/// Failed calls and the first one's error.
fn errors_cell(run: &Run) -> String {
    match &run.first_error {
        Some(e) if run.errors > 0 => format!("{} (first: {})", run.errors, e.replace('|', "/")),
        _ => run.errors.to_string(),
    }
}

/// XML text escaping.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes the markdown to `out` and the plot next to it (`<stem>.svg`).
pub fn write(out: &Path, rows: &[RowResult], args: &CompareArgs) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let plot = out.with_extension("svg");
    let plot_name = plot
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(&plot, svg(rows))?;
    std::fs::write(out, markdown(rows, args, &plot_name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ops: f64, p50: f64) -> Run {
        Run {
            ops_per_s: ops,
            p50_ms: p50,
            p99_ms: p50 * 4.0,
            p999_ms: p50 * 8.0,
            errors: 0,
            note: String::new(),
            first_error: None,
        }
    }

    #[test]
    fn table_has_both_systems_and_the_ratio_of_means() {
        let rows = vec![RowResult {
            throughput: true,
            label: "open session".into(),
            clients: "1".into(),
            etcd: vec![run(1000.0, 1.0), run(3000.0, 1.0)],
            leasehold: vec![run(1000.0, 2.0), run(1000.0, 2.0)],
        }];
        let args = <CompareArgs as clap::Args>::augment_args(clap::Command::new("t"))
            .try_get_matches_from(["t"])
            .and_then(|m| <CompareArgs as clap::FromArgMatches>::from_arg_matches(&m));
        let args = args.expect("defaults parse");
        let md = markdown(&rows, &args, "RESULTS.svg");
        assert!(
            md.contains("| open session | 1 | 2,000 (1,000, 3,000) | 1,000 (1,000, 1,000) | 0.50 | 1.00 / 4.00 / 8.00 | 2.00 / 8.00 / 16.0 |"),
            "{md}"
        );
        assert!(md.contains("![p50 and p99 latency per row](RESULTS.svg)"));
        assert!(!md.contains("## Failover and memory"));
        let svg = svg(&rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 4, "{svg}");
    }

    #[test]
    fn skipped_etcd_shows_as_skipped_without_ratio() {
        let row = RowResult {
            throughput: true,
            label: "x".into(),
            clients: "1".into(),
            etcd: Vec::new(),
            leasehold: vec![run(10.0, 1.0)],
        };
        assert_eq!(ops_cell(&row.etcd), "skipped");
        assert_eq!(ratio(&row), None);
        let mut failover = row.clone();
        failover.throughput = false;
        failover.label = "failover".into();
        failover.leasehold[0].note = "longest renewal gap 900 ms".into();
        failover.leasehold[0].errors = 2;
        failover.leasehold[0].first_error = Some("status: Unavailable".into());
        let args = <CompareArgs as clap::Args>::augment_args(clap::Command::new("t"))
            .try_get_matches_from(["t"])
            .and_then(|m| <CompareArgs as clap::FromArgMatches>::from_arg_matches(&m))
            .expect("defaults parse");
        let md = markdown(&[row, failover.clone()], &args, "p.svg");
        assert!(
            md.contains("| failover | 1 | Leasehold | 1 | longest renewal gap 900 ms |"),
            "{md}"
        );
        assert!(!md.contains("| failover | 1 | skipped"), "{md}");
        // Only throughput rows are plotted.
        assert_eq!(svg(&[failover]).matches("<rect x=").count(), 0);
        assert_eq!(thousands(1234567.4), "1,234,567");
    }
}
