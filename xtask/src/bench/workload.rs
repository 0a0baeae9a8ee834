//! The workloads whose wall time is measured with and without a tracer:
//! building them, running them, and running them under a tracer with the
//! kernel's BPF statistics read around the run.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::median;
use crate::bpfstats::{Matched, PROGRAMS, ProgStats, StatsEnabled, TracerPrograms};
use crate::tracer::{Tracer, TracerProcess};

pub enum Lang {
    /// `<name>.c`, compiled with `cc -O2`.
    C,
    /// `<class>.java`, run with `java -cp <out> <class>`.
    Java { class: &'static str },
    /// `<name>.go`, built with Debian's Go 1.19.
    Go,
}

/// Debian's `golang-1.19-go` toolchain.
const GO: &str = "/usr/lib/go-1.19/bin/go";

pub struct Workload {
    pub name: &'static str,
    pub lang: Lang,
    /// Highest acceptable traced/untraced wall-time ratio.
    pub target: f64,
    /// Whether its stderr goes to /dev/null (otherwise it is shown).
    pub stderr_to_null: bool,
    /// For a loop of handled signals, how many it raises: the overhead is
    /// then also given per signal, and `signal_generate`'s cost is held to
    /// [`HANDLED_SIGNAL_TARGET_NS`] over an empty program's.
    pub signals: u64,
}

/// Highest acceptable run time of `signal_generate` for a handled signal,
/// in nanoseconds above that of an empty program on the same tracepoint.
pub const HANDLED_SIGNAL_TARGET_NS: f64 = 40.0;

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "segv_longjmp",
        lang: Lang::C,
        target: 1.05,
        stderr_to_null: false,
        signals: 200_000,
    },
    Workload {
        name: "sigusr1_kill",
        lang: Lang::C,
        target: 1.05,
        stderr_to_null: false,
        signals: 300_000,
    },
    Workload {
        name: "segv_recover",
        lang: Lang::C,
        target: 1.15,
        stderr_to_null: false,
        signals: 200_000,
    },
    Workload {
        name: "sigusr1_self",
        lang: Lang::C,
        target: 1.05,
        stderr_to_null: false,
        signals: 300_000,
    },
    Workload {
        name: "stderr_writes",
        lang: Lang::C,
        target: 1.15,
        stderr_to_null: true,
        signals: 0,
    },
    Workload {
        name: "syscall_loop",
        lang: Lang::C,
        target: 1.05,
        stderr_to_null: false,
        signals: 0,
    },
    Workload {
        name: "npe_loop",
        lang: Lang::Java { class: "NpeLoop" },
        target: 1.10,
        stderr_to_null: false,
        signals: 0,
    },
    Workload {
        name: "go_recover",
        lang: Lang::Go,
        target: 1.15,
        stderr_to_null: false,
        signals: 0,
    },
    Workload {
        name: "spawn_true",
        lang: Lang::C,
        target: 1.10,
        stderr_to_null: false,
        signals: 0,
    },
];

impl Workload {
    fn source(&self) -> PathBuf {
        let dir = crate::workspace_root().join("xtask/bench");
        match self.lang {
            Lang::C => dir.join(format!("{}.c", self.name)),
            Lang::Java { class } => dir.join(format!("{class}.java")),
            Lang::Go => dir.join(format!("{}.go", self.name)),
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
            Lang::Go => {
                let source = self.source();
                let mut cmd = Command::new(GO);
                cmd.arg("build")
                    .arg("-o")
                    .arg(out.join(self.name))
                    .arg(&source)
                    .env("GO111MODULE", "off")
                    .env("GOCACHE", out.join("go-cache"))
                    .env("GOPATH", out.join("go-path"));
                compile(&mut cmd, &source)
            }
        }
    }

    /// The command that runs the built workload, its output discarded.
    pub fn command(&self, out: &Path) -> Command {
        let mut cmd = match self.lang {
            Lang::C | Lang::Go => Command::new(out.join(self.name)),
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
    pub programs: [ProgStats; PROGRAMS.len()],
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
        let mut delta = [ProgStats::default(); PROGRAMS.len()];
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

/// Median wall time of `crashtrace record -- /bin/true`, whose stderr goes
/// to `out/record.stderr` and is shown if it fails.
pub(super) fn time_record_true(rounds: u32, out: &Path) -> Result<Duration> {
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
