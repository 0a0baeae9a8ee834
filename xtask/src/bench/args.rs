//! The command line of `cargo xtask bench`: its options, what `--help`
//! says each figure means, and which figures `--only` selects.

use clap::builder::PossibleValuesParser;

use super::workload::{WORKLOADS, Workload};

/// What each figure of `cargo xtask bench` means; shown by `--help`.
const FIGURES: &str = "\
Figures:
  Overhead table      Per workload, the median wall time of its untraced and
                      traced runs (traced: `crashtrace watch --output
                      /dev/null` running, started and ready before the clock
                      starts), their ratio traced/untraced, and the target:
                      the highest acceptable ratio. Workloads (sources in
                      xtask/bench/), and for signal loops the wall time
                      added per signal (ns/signal):
                        segv_longjmp   200,000 SIGSEGVs left with siglongjmp,
                                       SA_NODEFER and no mask to restore: the
                                       cheapest handled SIGSEGV
                        sigusr1_kill   300,000 kill(getpid(), SIGUSR1), empty
                                       SA_NODEFER handler: the cheapest
                                       handled SIGUSR1
                        segv_recover   200,000 SIGSEGVs, each recovered with
                                       siglongjmp (the mask restored each time)
                        sigusr1_self   300,000 handled SIGUSR1s sent to itself
                        stderr_writes  1,000,000 write(2) calls to /dev/null
                        syscall_loop   2,000,000 getppid() system calls
                        npe_loop       60,000 Java NullPointerExceptions, each
                                       from a SIGSEGV that HotSpot handles
                        go_recover     100,000 Go nil dereferences, each a
                                       SIGSEGV the runtime turns into a
                                       recovered panic (built with Go 1.19,
                                       runtime probes in place)
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
                      leaves them off. With statistics on, crashtrace also
                      attaches signal_empty, a program that does nothing,
                      to signal_generate's tracepoint
                      (CRASHTRACE_EMPTY_SIGNAL_PROGRAM=1), which adds its
                      own cost to the traced wall time: take wall-time
                      ratios from --no-bpf-stats runs.
  Handled signals     For the signal loops: signal_generate's mean run time
                      next to signal_empty's, both from the same traced
                      runs, and the difference (added): what crashtrace's
                      own code costs per handled signal, target 40 ns.
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
                      stdin. 10k ms / 20k ms: median CPU time (user +
                      system, of 3 runs; steadier than wall time on a busy
                      machine, and the same on an idle one, as every tool
                      is single-threaded) of one process given the
                      addresses once / twice. Cold addr/s:
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
    pub(super) rounds: u32,
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
    pub(super) only: Option<String>,
    /// Only measure the untraced runs (needs no crashtrace build).
    #[arg(long)]
    pub(super) untraced: bool,
    /// Trace with this command instead of `crashtrace watch --output /dev/null`
    /// (split on whitespace); skips the `crashtrace record` figure and the
    /// crash storm.
    #[arg(long, value_name = "COMMAND", conflicts_with = "untraced")]
    pub(super) tracer_cmd: Option<String>,
    /// Leave kernel BPF statistics off: no BPF program table, and traced
    /// runs without the statistics' own overhead.
    #[arg(long, conflicts_with = "untraced")]
    pub(super) no_bpf_stats: bool,
    /// Run `crashtrace watch` with `--last-words MODE` (auto, syscalls or
    /// runtime): `syscalls` measures the write system call's tracepoint.
    #[arg(long, value_name = "MODE", conflicts_with_all = ["untraced", "tracer_cmd"])]
    pub(super) last_words: Option<String>,
    /// Use the crashtrace build that exists: no setup, no cargo (for runs
    /// inside `cargo xtask vm-test --bench`, whose target/ is read-only).
    #[arg(long, hide = true)]
    pub(super) prebuilt: bool,
}

/// What `--only` selected.
#[derive(Clone, Copy)]
pub(super) enum Selection<'a> {
    All,
    Workload(&'a Workload),
    BpfStats,
    Record,
    Storm,
    Symbolize,
    Memory,
}

impl<'a> Selection<'a> {
    pub(super) fn from_only(only: Option<&str>) -> Self {
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

    pub(super) fn workloads(self) -> Vec<&'a Workload> {
        match self {
            Selection::All | Selection::BpfStats => WORKLOADS.iter().collect(),
            Selection::Workload(w) => vec![w],
            Selection::Record | Selection::Storm | Selection::Symbolize | Selection::Memory => {
                Vec::new()
            }
        }
    }

    pub(super) fn untraced_runs(self) -> bool {
        matches!(self, Selection::All | Selection::Workload(_))
    }

    pub(super) fn record(self) -> bool {
        matches!(
            self,
            Selection::All | Selection::Workload(_) | Selection::Record
        )
    }

    pub(super) fn storm(self) -> bool {
        matches!(self, Selection::All | Selection::Storm)
    }

    pub(super) fn symbolize(self) -> bool {
        matches!(self, Selection::All | Selection::Symbolize)
    }

    pub(super) fn memory(self) -> bool {
        matches!(self, Selection::All | Selection::Memory)
    }
}
