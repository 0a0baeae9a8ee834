//! `cargo xtask bench`: wall time of signal- and syscall-heavy workloads with
//! and without `crashtrace watch` running, the run time of crashtrace's BPF
//! programs during the traced runs, the cost of `crashtrace record`, how
//! `crashtrace watch` copes with a storm of crashes, how fast the symbolizer
//! is next to addr2line and llvm-symbolizer, and how much memory `watch`
//! keeps after crashes in many binaries.
//!
//! This module runs the figures in turn; `args` is the command line,
//! `workload` builds and times the workloads (traced or not), `tables`
//! prints the results. To measure something new, add a row to
//! [`workload::WORKLOADS`] (its source goes in `xtask/bench/`); to trace
//! with other options, pass another [`Tracer`] to [`run_traced`]. The crash storm lives in [`crate::storm`], the reading of
//! BPF statistics in [`crate::bpfstats`], the symbolizer comparison in
//! [`crate::symbench`] and the memory figure in [`crate::membench`].

mod args;
mod tables;
mod workload;

use std::{ffi::OsString, fs, time::Duration};

use anyhow::{Context, Result, bail};

pub use args::BenchArgs;
use args::Selection;
use tables::{
    Row, print_bpf_table, print_handled_signal_table, print_storm, print_summary, print_table,
};
pub use workload::compile_c;
use workload::{run_traced, run_untraced, time_record_true};

use crate::bpfstats;
use crate::storm;
pub use crate::tracer::Tracer;
use crate::{membench, symbench};

pub fn run(args: &BenchArgs) -> Result<()> {
    let mut tracer = match (&args.tracer_cmd, args.untraced) {
        (Some(line), _) => {
            let mut words = line.split_whitespace().map(OsString::from);
            let program = words.next().context("--tracer-cmd is empty")?;
            Some(Tracer {
                program,
                args: words.collect(),
                env: Vec::new(),
                prints_ready: false,
            })
        }
        (None, true) => None,
        (None, false) => Some(match &args.last_words {
            Some(mode) => Tracer::crashtrace(
                ["watch", "--output", "/dev/null", "--last-words", mode].map(OsString::from),
            ),
            None => Tracer::crashtrace_watch(),
        }),
    };
    let uses_crashtrace = args.tracer_cmd.is_none() && !args.untraced;
    let selection = Selection::from_only(args.only.as_deref());
    match selection {
        Selection::Record | Selection::Storm | Selection::Symbolize | Selection::Memory
            if !uses_crashtrace =>
        {
            bail!(
                "--only {} measures crashtrace itself; it cannot be combined with --untraced or --tracer-cmd",
                args.only.as_deref().unwrap_or_default()
            )
        }
        Selection::BpfStats if tracer.is_none() || args.no_bpf_stats => {
            bail!("--only bpfstats needs traced runs with BPF statistics")
        }
        _ => {}
    }
    if args.prebuilt {
        // Built by the host before the VM booted.
    } else if uses_crashtrace {
        crate::build(true)?;
    } else {
        crate::setup::run(true)?;
    }

    let out = crate::target_dir().join("xtask-bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let selected = selection.workloads();
    for workload in &selected {
        workload.build(&out)?;
    }

    let mut collect_stats = tracer.is_some() && !args.no_bpf_stats && !selected.is_empty();
    if collect_stats && !bpfstats::bpftool_available() {
        if matches!(selection, Selection::BpfStats) {
            bail!("--only bpfstats needs bpftool (cargo xtask setup installs it)");
        }
        eprintln!("bench: warning: bpftool cannot be run; no BPF program table");
        collect_stats = false;
    }
    // With statistics on, crashtrace also attaches an empty program to
    // `signal_generate`, whose run time is read in the same runs.
    if let Some(tracer) = tracer.as_mut().filter(|_| collect_stats && uses_crashtrace) {
        tracer
            .env
            .push((bpfstats::EMPTY_PROGRAM_ENV.into(), "1".into()));
    }

    let mut rows = Vec::new();
    let mut matched = None;
    for &workload in &selected {
        // One unmeasured run to warm caches.
        run_untraced(workload, &out)?;
        let (mut untraced, mut traced) = (Vec::new(), Vec::new());
        let mut row = Row {
            workload,
            untraced: None,
            traced: None,
            stats: Default::default(),
            stats_runs: 0,
        };
        for round in 1..=args.rounds {
            eprintln!("bench: {} round {round}/{}", workload.name, args.rounds);
            if selection.untraced_runs() {
                untraced.push(run_untraced(workload, &out)?);
            }
            if let Some(tracer) = &tracer {
                let (elapsed, stats) = run_traced(workload, &out, tracer, collect_stats)?;
                traced.push(elapsed);
                match stats {
                    Some(Ok(stats)) => {
                        for (sum, run) in row.stats.iter_mut().zip(stats.programs) {
                            sum.add(run);
                        }
                        row.stats_runs += 1;
                        matched = Some(stats.matched);
                    }
                    Some(Err(e)) => {
                        if matches!(selection, Selection::BpfStats) {
                            return Err(e.context("cannot read BPF statistics"));
                        }
                        eprintln!("bench: warning: no BPF program table: {e:#}");
                        collect_stats = false;
                    }
                    None => {}
                }
            }
        }
        row.untraced = (!untraced.is_empty()).then(|| median(&mut untraced));
        row.traced = (!traced.is_empty()).then(|| median(&mut traced));
        rows.push(row);
    }
    if selection.untraced_runs() {
        print_table(&rows);
    }
    if let Some(matched) = matched {
        print_bpf_table(&rows, matched);
        print_handled_signal_table(&rows);
    }

    let mut record = None;
    if uses_crashtrace && selection.record() {
        let median = time_record_true(args.rounds, &out)?;
        println!(
            "\ncrashtrace record -- /bin/true: {:.1} ms (median of {})",
            ms(median),
            args.rounds
        );
        record = Some(median);
    }

    let mut storm = None;
    if uses_crashtrace && selection.storm() {
        eprintln!("bench: crash storm of {} processes", storm::CRASHES);
        let result = storm::run(&out);
        if let Ok(result) = &result {
            print_storm(result);
        }
        storm = Some(result);
    }

    let mut symbolize = None;
    if uses_crashtrace && selection.symbolize() {
        let result = symbench::run(&out);
        if let Ok(result) = &result {
            symbench::print(result);
        }
        symbolize = Some(result);
    }

    let mut memory = None;
    if uses_crashtrace && selection.memory() {
        let result = membench::run(&out);
        if let Ok(result) = &result {
            membench::print(result);
        }
        memory = Some(result);
    }

    let mut extra = Vec::new();
    if let Some(Ok(result)) = &symbolize {
        let crashtrace = result.tools.iter().find(|t| t.name == "crashtrace");
        let rate = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.0}"));
        extra.push((
            "symbolize cold addr/s".into(),
            rate(crashtrace.and_then(symbench::ToolResult::cold_rate)),
        ));
        extra.push((
            "symbolize warm addr/s".into(),
            crashtrace
                .and_then(symbench::ToolResult::warm)
                .map_or("-".into(), |w| w.to_string()),
        ));
    }
    if let Some(Ok(result)) = &memory {
        extra.push((
            "watch VmHWM MiB, 50 binaries".into(),
            format!("{:.1}", result.end.hwm_kib as f64 / 1024.0),
        ));
    }
    print_summary(&rows, record, storm.as_ref(), &extra);
    match (storm, symbolize, memory) {
        (Some(Err(e)), _, _) => Err(e.context("crash storm failed")),
        (_, Some(Err(e)), _) => Err(e.context("symbolizer comparison failed")),
        (_, _, Some(Err(e))) => Err(e.context("memory figure failed")),
        _ => Ok(()),
    }
}

pub(crate) fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    let mid = times.len() / 2;
    if times.len().is_multiple_of(2) {
        (times[mid - 1] + times[mid]) / 2
    } else {
        times[mid]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
