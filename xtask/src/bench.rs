//! `cargo xtask bench`: wall time of signal- and syscall-heavy workloads with
//! and without `crashtrace watch` running, the run time of crashtrace's BPF
//! programs during the traced runs, the cost of `crashtrace record`, how
//! `crashtrace watch` copes with a storm of crashes, how fast the symbolizer
//! is next to addr2line and llvm-symbolizer, and how much memory `watch`
//! keeps after crashes in many binaries.
//!
//! To measure something new, add a row to [`WORKLOADS`] (its source goes in
//! `xtask/bench/`); to trace with other options, pass another [`Tracer`] to
//! [`run_traced`]. The crash storm lives in [`crate::storm`], the reading of
//! BPF statistics in [`crate::bpfstats`], the symbolizer comparison in
//! [`crate::symbench`] and the memory figure in [`crate::membench`].

use std::{
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::builder::PossibleValuesParser;

use crate::bpfstats::{self, Matched, PROGRAMS, ProgStats, StatsEnabled, TracerPrograms};
use crate::storm::{self, StormResult};
pub use crate::tracer::Tracer;
use crate::tracer::TracerProcess;
use crate::{membench, symbench};

/// What each figure of `cargo xtask bench` means; shown by `--help`.
const FIGURES: &str = "\
Figures:
  Overhead table      Per workload, the median wall time of its untraced and
                      traced runs (traced: `crashtrace watch --output
                      /dev/null` running, started and ready before the clock
                      starts), their ratio traced/untraced, and the target:
                      the highest acceptable ratio. Workloads (sources in
                      xtask/bench/):
                        segv_recover   200,000 SIGSEGVs, each recovered with
                                       siglongjmp
                        sigusr1_self   300,000 handled SIGUSR1s sent to itself
                        stderr_writes  1,000,000 write(2) calls to /dev/null
                        npe_loop       60,000 Java NullPointerExceptions, each
                                       from a SIGSEGV that HotSpot handles
                        spawn_true     1,000 fork+exec+wait of /bin/true
  BPF program table   Per workload and per BPF program (signal_generate,
                      sched_process_exit, sched_process_fork), per traced run
                      (mean over the rounds): how often it ran (runs), its
                      mean run time (mean ns) and their product (total ms),
                      from the kernel's BPF statistics (run_cnt and
                      run_time_ns from `bpftool prog show --json`). Only
                      the programs of the tracer the bench started are read,
                      and only while the workload runs; the programs see the
                      whole host, so other activity adds to the counts.
                      Statistics are switched on
                      (/proc/sys/kernel/bpf_stats_enabled) only during traced
                      runs, which adds some nanoseconds to each program run
                      and so to the traced wall time; the previous setting is
                      restored afterwards, also on Ctrl-C. --no-bpf-stats
                      leaves them off.
  record /bin/true    Median wall time of `crashtrace record -- /bin/true`:
                      the fixed cost of tracing one command, loading and
                      attaching included.
  Crash storm         With `crashtrace watch --json --output FILE` ready, 200
                      processes die of SIGSEGV at once (xtask/bench/
                      storm_crash.c). Reports: the storm's processes reported
                      within 30 s (target 200/200). Lost: the totals of the
                      last \"type\":\"loss\" record, and how many loss records
                      there were (target 0). Latency: from the last storm
                      process reaped until its 200th report was in FILE.
  Symbolizer table    10,000 addresses inside the functions (FUNC symbols
                      with a size, each equally likely, fixed seed) of
                      target/debug/crashtrace (built with `cargo build -p
                      tracer-user` if missing: tens of MB of DWARF),
                      answered by `crashtrace symbolize --exe BIN`,
                      `addr2line -f -i -e BIN`, `eu-addr2line -f -i -e BIN`
                      and `llvm-symbolizer-14 --obj=BIN`, addresses on
                      stdin. 10k ms / 20k ms: median wall time (of 3) of one
                      process given the addresses once / twice. Cold addr/s:
                      10,000 / 10k time (parsing included). Warm addr/s:
                      10,000 / (20k time - 10k time), the steady state once
                      the file is parsed; marked \"N?\" when the difference
                      is within the spread of the runs (max - min), \"> N\"
                      (a lower bound: 10,000 / spread) when it is not
                      positive. Ratio: crashtrace's addr/s divided by
                      the tool's (above 1: crashtrace is faster).
                      Agreement: addresses where crashtrace and `addr2line
                      -a -f -i -C` name the same innermost function (and
                      the same whole inline chain). eu-addr2line takes
                      minutes here, so this figure does too.
  Memory              `crashtrace watch --json --output FILE` sees 50
                      distinct small C programs (built with -g) die one
                      after another of a NULL dereference three calls deep.
                      Reports: how many arrived within 60 s and how many
                      name the crashing function. VmRSS and VmHWM of the
                      tracer from /proc/PID/status right after it is ready
                      and once the 50 reports are in FILE.
  Summary             Every figure with its target, and whether it was met.

--only NAME runs a single workload (plus the record figure), `bpfstats` (the
traced runs of every workload and the BPF program table, no untraced runs),
`record`, `storm`, `symbolize` or `memory`.";

/// `--only` values besides the workload names.
const ONLY_BPFSTATS: &str = "bpfstats";
const ONLY_RECORD: &str = "record";
const ONLY_STORM: &str = "storm";
const ONLY_SYMBOLIZE: &str = "symbolize";
const ONLY_MEMORY: &str = "memory";

#[derive(clap::Args)]
#[command(after_help = FIGURES)]
pub struct BenchArgs {
    /// Rounds per workload; each round is one untraced and one traced run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Run only this workload or figure (see below).
    #[arg(
        long,
        value_name = "NAME",
        value_parser = PossibleValuesParser::new(
            WORKLOADS
                .iter()
                .map(|w| w.name)
                .chain([
                    ONLY_BPFSTATS,
                    ONLY_RECORD,
                    ONLY_STORM,
                    ONLY_SYMBOLIZE,
                    ONLY_MEMORY,
                ]),
        ),
    )]
    only: Option<String>,
    /// Only measure the untraced runs (needs no crashtrace build).
    #[arg(long)]
    untraced: bool,
    /// Trace with this command instead of `crashtrace watch --output /dev/null`
    /// (split on whitespace); skips the `crashtrace record` figure and the
    /// crash storm.
    #[arg(long, value_name = "COMMAND", conflicts_with = "untraced")]
    tracer_cmd: Option<String>,
    /// Leave kernel BPF statistics off: no BPF program table, and traced
    /// runs without the statistics' own overhead.
    #[arg(long, conflicts_with = "untraced")]
    no_bpf_stats: bool,
}

/// What `--only` selected.
#[derive(Clone, Copy)]
enum Selection<'a> {
    All,
    Workload(&'a Workload),
    BpfStats,
    Record,
    Storm,
    Symbolize,
    Memory,
}

impl<'a> Selection<'a> {
    fn from_only(only: Option<&str>) -> Self {
        match only {
            None => Selection::All,
            Some(ONLY_BPFSTATS) => Selection::BpfStats,
            Some(ONLY_RECORD) => Selection::Record,
            Some(ONLY_STORM) => Selection::Storm,
            Some(ONLY_SYMBOLIZE) => Selection::Symbolize,
            Some(ONLY_MEMORY) => Selection::Memory,
            Some(name) => Selection::Workload(
                WORKLOADS
                    .iter()
                    .find(|w| w.name == name)
                    .expect("clap accepts only known names"),
            ),
        }
    }

    fn workloads(self) -> Vec<&'a Workload> {
        match self {
            Selection::All | Selection::BpfStats => WORKLOADS.iter().collect(),
            Selection::Workload(w) => vec![w],
            Selection::Record | Selection::Storm | Selection::Symbolize | Selection::Memory => {
                Vec::new()
            }
        }
    }

    fn untraced_runs(self) -> bool {
        matches!(self, Selection::All | Selection::Workload(_))
    }

    fn record(self) -> bool {
        matches!(
            self,
            Selection::All | Selection::Workload(_) | Selection::Record
        )
    }

    fn storm(self) -> bool {
        matches!(self, Selection::All | Selection::Storm)
    }

    fn symbolize(self) -> bool {
        matches!(self, Selection::All | Selection::Symbolize)
    }

    fn memory(self) -> bool {
        matches!(self, Selection::All | Selection::Memory)
    }
}

pub enum Lang {
    /// `<name>.c`, compiled with `cc -O2`.
    C,
    /// `<class>.java`, run with `java -cp <out> <class>`.
    Java { class: &'static str },
}

pub struct Workload {
    pub name: &'static str,
    pub lang: Lang,
    /// Highest acceptable traced/untraced wall-time ratio.
    pub target: f64,
    /// Whether its stderr goes to /dev/null (otherwise it is shown).
    pub stderr_to_null: bool,
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "segv_recover",
        lang: Lang::C,
        target: 1.15,
        stderr_to_null: false,
    },
    Workload {
        name: "sigusr1_self",
        lang: Lang::C,
        target: 1.05,
        stderr_to_null: false,
    },
    Workload {
        name: "stderr_writes",
        lang: Lang::C,
        target: 1.15,
        stderr_to_null: true,
    },
    Workload {
        name: "npe_loop",
        lang: Lang::Java { class: "NpeLoop" },
        target: 1.10,
        stderr_to_null: false,
    },
    Workload {
        name: "spawn_true",
        lang: Lang::C,
        target: 1.10,
        stderr_to_null: false,
    },
];

impl Workload {
    fn source(&self) -> PathBuf {
        let dir = crate::workspace_root().join("xtask/bench");
        match self.lang {
            Lang::C => dir.join(format!("{}.c", self.name)),
            Lang::Java { class } => dir.join(format!("{class}.java")),
        }
    }

    /// Compiles the workload into `out`.
    pub fn build(&self, out: &Path) -> Result<()> {
        match self.lang {
            Lang::C => compile_c(self.name, out),
            Lang::Java { .. } => {
                let source = self.source();
                let mut cmd = Command::new("javac");
                cmd.arg("-d").arg(out).arg(&source);
                compile(&mut cmd, &source)
            }
        }
    }

    /// The command that runs the built workload, its output discarded.
    pub fn command(&self, out: &Path) -> Command {
        let mut cmd = match self.lang {
            Lang::C => Command::new(out.join(self.name)),
            Lang::Java { class } => {
                let mut cmd = Command::new("java");
                cmd.arg("-cp").arg(out).arg(class);
                cmd
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(if self.stderr_to_null {
            Stdio::null()
        } else {
            Stdio::inherit()
        });
        cmd
    }
}

/// Compiles `xtask/bench/<name>.c` into `out/<name>` with `cc -O2`.
pub fn compile_c(name: &str, out: &Path) -> Result<()> {
    let source = crate::workspace_root()
        .join("xtask/bench")
        .join(format!("{name}.c"));
    let mut cmd = Command::new("cc");
    cmd.args(["-O2", "-Wall", "-o"])
        .arg(out.join(name))
        .arg(&source);
    compile(&mut cmd, &source)
}

fn compile(cmd: &mut Command, source: &Path) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot compile {}", source.display()))?;
    if !status.success() {
        bail!("compiling {} failed ({status})", source.display());
    }
    Ok(())
}

/// The figures of one workload.
struct Row<'a> {
    workload: &'a Workload,
    untraced: Option<Duration>,
    traced: Option<Duration>,
    /// BPF program counters per traced run, summed over `stats_runs` runs.
    stats: [ProgStats; 3],
    stats_runs: u32,
}

impl Row<'_> {
    fn ratio(&self) -> Option<f64> {
        Some(self.traced?.as_secs_f64() / self.untraced?.as_secs_f64())
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let tracer = match (&args.tracer_cmd, args.untraced) {
        (Some(line), _) => {
            let mut words = line.split_whitespace().map(OsString::from);
            let program = words.next().context("--tracer-cmd is empty")?;
            Some(Tracer {
                program,
                args: words.collect(),
                prints_ready: false,
            })
        }
        (None, true) => None,
        (None, false) => Some(Tracer::crashtrace_watch()),
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
    if uses_crashtrace {
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

/// Median wall time of `crashtrace record -- /bin/true`, whose stderr goes
/// to `out/record.stderr` and is shown if it fails.
fn time_record_true(rounds: u32, out: &Path) -> Result<Duration> {
    const NAME: &str = "crashtrace record -- /bin/true";
    let log = out.join("record.stderr");
    let mut times = Vec::new();
    for _ in 0..rounds {
        let stderr =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(crate::crashtrace_bin());
        cmd.args(["record", "--", "/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        match time_command(&mut cmd, NAME) {
            Ok(elapsed) => times.push(elapsed),
            Err(e) => {
                let stderr = fs::read_to_string(&log).unwrap_or_default();
                bail!("{e:#}; its stderr:\n{}", stderr.trim_end());
            }
        }
    }
    Ok(median(&mut times))
}

fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.workload.name.len())
        .max()
        .unwrap_or(0)
        .max("workload".len());
    println!(
        "{:<width$} | untraced ms | traced ms | ratio | target",
        "workload"
    );
    println!("{:-<width$}-+-------------+-----------+-------+-------", "");
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
        println!(
            "{:<width$} | {untraced_ms:>11} | {traced_ms:>9} | {ratio:>5} | {:>6.2}",
            row.workload.name, row.workload.target
        );
    }
    if rows.iter().any(|r| r.traced.is_some()) {
        println!("{within} of {} workloads within target", rows.len());
    }
}

/// Per workload and program: runs and mean run time per traced run.
fn print_bpf_table(rows: &[Row], matched: Matched) {
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
        for (program, stats) in PROGRAMS.iter().zip(row.stats) {
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

fn print_storm(result: &StormResult) {
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
fn print_summary(
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

/// Wall time of one run of `workload`, nothing else running.
pub fn run_untraced(workload: &Workload, out: &Path) -> Result<Duration> {
    time_command(&mut workload.command(out), workload.name)
}

/// Wall time of one run of `workload` while `tracer` runs in the background.
/// The tracer is started and ready before the clock starts, and stopped
/// with SIGINT afterwards. With `stats`, also the run counts and run times
/// of the tracer's BPF programs while the workload ran (kernel BPF
/// statistics are on only for that while); failing to get them is not an
/// error of the run.
pub fn run_traced(
    workload: &Workload,
    out: &Path,
    tracer: &Tracer,
    stats: bool,
) -> Result<(Duration, Option<Result<TracerStats>>)> {
    let mut process = TracerProcess::start(tracer)?;
    let (elapsed, stats) = if stats {
        let (elapsed, stats) = measure_with_stats(process.pid(), || run_untraced(workload, out))?;
        (elapsed, Some(stats))
    } else {
        (run_untraced(workload, out)?, None)
    };
    process
        .ensure_running()
        .with_context(|| format!("tracer died during {}", workload.name))?;
    process.stop();
    Ok((elapsed, stats))
}

/// What a tracer's BPF programs did, in [`PROGRAMS`] order.
pub struct TracerStats {
    pub programs: [ProgStats; 3],
    /// How the tracer's programs were told apart from others.
    pub matched: Matched,
}

/// Runs `f` with kernel BPF statistics on, and returns what the programs of
/// the tracer `pid` did meanwhile.
fn measure_with_stats<T>(
    pid: u32,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Result<TracerStats>)> {
    let setup = TracerPrograms::find(pid)
        .and_then(|programs| Ok((StatsEnabled::enable()?, programs)))
        .and_then(|(enabled, programs)| {
            let before = programs.read()?;
            Ok((enabled, programs, before))
        });
    let (enabled, programs, before) = match setup {
        Ok(setup) => setup,
        Err(e) => return Ok((f()?, Err(e))),
    };
    let value = f()?;
    let after = programs.read();
    drop(enabled);
    let stats = after.map(|after| {
        let mut delta = [ProgStats::default(); 3];
        for ((d, a), b) in delta.iter_mut().zip(after).zip(before) {
            *d = a.saturating_sub(b);
        }
        TracerStats {
            programs: delta,
            matched: programs.matched,
        }
    });
    Ok((value, stats))
}

fn time_command(cmd: &mut Command, name: &str) -> Result<Duration> {
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("cannot run {name}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(elapsed)
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
