//! The tables `cargo xtask bench` prints: overhead per workload, BPF
//! program run times, the crash storm, and the summary against targets.

use std::time::Duration;

use anyhow::Result;

use super::{
    ms,
    workload::{HANDLED_SIGNAL_TARGET_NS, Workload},
};
use crate::bpfstats::{EMPTY_PROGRAM, Matched, PROGRAMS, ProgStats};
use crate::storm::{self, StormResult};

/// The figures of one workload.
pub(super) struct Row<'a> {
    pub(super) workload: &'a Workload,
    pub(super) untraced: Option<Duration>,
    pub(super) traced: Option<Duration>,
    /// BPF program counters per traced run, summed over `stats_runs` runs.
    pub(super) stats: [ProgStats; PROGRAMS.len()],
    pub(super) stats_runs: u32,
}

impl Row<'_> {
    pub(super) fn ratio(&self) -> Option<f64> {
        Some(self.traced?.as_secs_f64() / self.untraced?.as_secs_f64())
    }

    /// Wall time the tracer added per signal of a signal loop, in ns.
    fn added_per_signal(&self) -> Option<f64> {
        let signals = self.workload.signals;
        let added = self.traced?.as_secs_f64() - self.untraced?.as_secs_f64();
        (signals > 0).then(|| added * 1e9 / signals as f64)
    }

    /// For a signal loop measured with the empty program beside
    /// `signal_generate`: (signal_generate's mean ns, the empty program's,
    /// the difference).
    fn handled_signal_cost(&self) -> Option<(f64, f64, f64)> {
        if self.workload.signals == 0 || self.stats_runs == 0 {
            return None;
        }
        let ours = self.stats[0].mean_ns()?;
        let empty = self.stats[EMPTY_PROGRAM].mean_ns()?;
        Some((ours, empty, ours - empty))
    }
}

pub(super) fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.workload.name.len())
        .max()
        .unwrap_or(0)
        .max("workload".len());
    println!(
        "{:<width$} | untraced ms | traced ms | ratio | target | ns/signal",
        "workload"
    );
    println!(
        "{:-<width$}-+-------------+-----------+-------+--------+----------",
        ""
    );
    let mut within = 0;
    for row in rows {
        let (traced_ms, ratio) = match (row.traced, row.ratio()) {
            (Some(traced), Some(ratio)) => {
                within += usize::from(ratio <= row.workload.target);
                (format!("{:.1}", ms(traced)), format!("{ratio:.3}"))
            }
            _ => ("-".into(), "-".into()),
        };
        let untraced_ms = row.untraced.map_or("-".into(), |d| format!("{:.1}", ms(d)));
        let per_signal = row
            .added_per_signal()
            .map_or("-".into(), |ns| format!("{ns:+.0}"));
        println!(
            "{:<width$} | {untraced_ms:>11} | {traced_ms:>9} | {ratio:>5} | {:>6.2} | {per_signal:>9}",
            row.workload.name, row.workload.target
        );
    }
    if rows.iter().any(|r| r.traced.is_some()) {
        println!("{within} of {} workloads within target", rows.len());
    }
}

/// Per workload and program: runs and mean run time per traced run.
pub(super) fn print_bpf_table(rows: &[Row], matched: Matched) {
    let width = rows
        .iter()
        .map(|r| r.workload.name.len())
        .max()
        .unwrap_or(0)
        .max("workload".len());
    let prog_width = PROGRAMS.iter().map(|p| p.len()).max().unwrap_or(0);
    let how = match matched {
        Matched::BpftoolPids => "the pids bpftool lists",
        Matched::FdInfo => "the tracer's /proc/PID/fdinfo",
        Matched::Name => "name alone",
    };
    println!("\nBPF programs, per traced run (kernel BPF statistics; programs found by {how})");
    println!(
        "{:<width$} | {:<prog_width$} |     runs | mean ns | total ms",
        "workload", "program"
    );
    println!(
        "{:-<width$}-+-{:-<prog_width$}-+----------+---------+---------",
        "", ""
    );
    for row in rows.iter().filter(|r| r.stats_runs > 0) {
        for (index, (program, stats)) in PROGRAMS.iter().zip(row.stats).enumerate() {
            if index == EMPTY_PROGRAM && stats.run_cnt == 0 {
                continue;
            }
            let runs = stats.run_cnt as f64 / f64::from(row.stats_runs);
            let total_ms = stats.run_time_ns as f64 / 1e6 / f64::from(row.stats_runs);
            let mean = stats.mean_ns().map_or("-".into(), |ns| format!("{ns:.0}"));
            println!(
                "{:<width$} | {program:<prog_width$} | {runs:>8.0} | {mean:>7} | {total_ms:>8.1}",
                row.workload.name
            );
        }
    }
}

/// Per signal loop: `signal_generate`'s mean run time next to the empty
/// program's on the same tracepoint, in the same runs, and the difference:
/// what crashtrace's code costs per handled signal.
pub(super) fn print_handled_signal_table(rows: &[Row]) {
    let costs: Vec<_> = rows
        .iter()
        .filter_map(|r| Some((r.workload.name, r.handled_signal_cost()?)))
        .collect();
    if costs.is_empty() {
        return;
    }
    let width = costs
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0)
        .max("workload".len());
    println!("\nsignal_generate per handled signal, next to an empty program (mean ns per run)");
    println!(
        "{:<width$} | signal_generate | signal_empty | added | target",
        "workload"
    );
    println!(
        "{:-<width$}-+-----------------+--------------+-------+-------",
        ""
    );
    for (name, (ours, empty, added)) in costs {
        println!(
            "{name:<width$} | {ours:>15.1} | {empty:>12.1} | {added:>5.1} | {HANDLED_SIGNAL_TARGET_NS:>6.0}"
        );
    }
}

pub(super) fn print_storm(result: &StormResult) {
    println!(
        "\ncrash storm: {} processes died of SIGSEGV within {:.0} ms",
        storm::CRASHES,
        ms(result.storm)
    );
    println!("  reports received: {}/{}", result.received, storm::CRASHES);
    println!(
        "  loss records:     {}{}",
        result.loss_records,
        lost_counts(result)
    );
    match result.latency {
        Some(latency) => println!(
            "  latency:          {:.1} ms from the storm's end to report {}",
            ms(latency),
            storm::CRASHES
        ),
        None => println!("  latency:          - (not all reports arrived)"),
    }
}

/// `" (cause n, ...)"`, or nothing when nothing was lost.
fn lost_counts(result: &StormResult) -> String {
    if result.lost.is_empty() {
        return String::new();
    }
    let counts: Vec<String> = result
        .lost
        .iter()
        .map(|(cause, n)| format!("{cause} {n}"))
        .collect();
    format!(" ({})", counts.join(", "))
}

/// Every figure with its target; `extra` holds (figure, value) lines
/// without a target.
pub(super) fn print_summary(
    rows: &[Row],
    record: Option<Duration>,
    storm: Option<&Result<StormResult>>,
    extra: &[(String, String)],
) {
    // (figure, value, target, met)
    let mut lines: Vec<(String, String, String, Option<bool>)> = Vec::new();
    for row in rows {
        if let Some(ratio) = row.ratio() {
            lines.push((
                format!("{} ratio", row.workload.name),
                format!("{ratio:.3}"),
                format!("<= {:.2}", row.workload.target),
                Some(ratio <= row.workload.target),
            ));
        }
        if let Some((_, _, added)) = row.handled_signal_cost() {
            lines.push((
                format!("{} BPF ns/signal over empty", row.workload.name),
                format!("{added:.1}"),
                format!("<= {HANDLED_SIGNAL_TARGET_NS:.0}"),
                Some(added <= HANDLED_SIGNAL_TARGET_NS),
            ));
        }
    }
    match storm {
        Some(Ok(result)) => {
            lines.push((
                "storm reports".into(),
                format!("{}/{}", result.received, storm::CRASHES),
                format!("{0}/{0}", storm::CRASHES),
                Some(result.received == storm::CRASHES),
            ));
            lines.push((
                "storm lost events".into(),
                result.lost_total().to_string(),
                "0".into(),
                Some(result.lost_total() == 0),
            ));
            lines.push((
                "storm loss records".into(),
                result.loss_records.to_string(),
                "0".into(),
                Some(result.loss_records == 0),
            ));
            lines.push((
                "storm latency ms".into(),
                result
                    .latency
                    .map_or("-".into(), |l| format!("{:.1}", ms(l))),
                "-".into(),
                None,
            ));
        }
        Some(Err(_)) => lines.push((
            "storm".into(),
            "failed (error below)".into(),
            format!("{0}/{0}, 0 lost", storm::CRASHES),
            Some(false),
        )),
        None => {}
    }
    if let Some(record) = record {
        lines.push((
            "record -- /bin/true ms".into(),
            format!("{:.1}", ms(record)),
            "-".into(),
            None,
        ));
    }
    for (figure, value) in extra {
        lines.push((figure.clone(), value.clone(), "-".into(), None));
    }
    if lines.is_empty() {
        return;
    }
    let width = lines
        .iter()
        .map(|l| l.0.len())
        .max()
        .unwrap_or(0)
        .max("figure".len());
    let value_width = lines
        .iter()
        .map(|l| l.1.len())
        .max()
        .unwrap_or(0)
        .max("value".len());
    let target_width = lines
        .iter()
        .map(|l| l.2.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    println!("\nsummary");
    println!(
        "{:<width$} | {:>value_width$} | {:<target_width$} | met",
        "figure", "value", "target"
    );
    println!(
        "{:-<width$}-+-{:-<value_width$}-+-{:-<target_width$}-+----",
        "", "", ""
    );
    for (figure, value, target, met) in &lines {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("{figure:<width$} | {value:>value_width$} | {target:<target_width$} | {met}");
    }
    let judged: Vec<bool> = lines.iter().filter_map(|l| l.3).collect();
    println!(
        "{} of {} targets met",
        judged.iter().filter(|&&m| m).count(),
        judged.len()
    );
}
