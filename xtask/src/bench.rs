//! `cargo xtask bench`: wall time of signal- and syscall-heavy workloads with
//! and without `crashtrace watch` running, plus the cost of `crashtrace record`.
//!
//! To measure something new, add a row to [`WORKLOADS`] (its source goes in
//! `xtask/bench/`); to trace with other options, pass another [`Tracer`] to
//! [`run_traced`].

use std::{
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::builder::PossibleValuesParser;

pub use crate::tracer::Tracer;
use crate::tracer::TracerProcess;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds per workload; each round is one untraced and one traced run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Run only this workload.
    #[arg(long, value_name = "NAME", value_parser = PossibleValuesParser::new(WORKLOADS.iter().map(|w| w.name)))]
    only: Option<String>,
    /// Only measure the untraced runs (needs no crashtrace build).
    #[arg(long)]
    untraced: bool,
    /// Trace with this command instead of `crashtrace watch --output /dev/null`
    /// (split on whitespace); skips the `crashtrace record` figure.
    #[arg(long, value_name = "COMMAND", conflicts_with = "untraced")]
    tracer_cmd: Option<String>,
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
        target: 1.10,
        stderr_to_null: true,
    },
    Workload {
        name: "npe_loop",
        lang: Lang::Java { class: "NpeLoop" },
        target: 1.15,
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
        let source = self.source();
        let mut cmd = match self.lang {
            Lang::C => {
                let mut cmd = Command::new("cc");
                cmd.args(["-O2", "-Wall", "-o"])
                    .arg(out.join(self.name))
                    .arg(&source);
                cmd
            }
            Lang::Java { .. } => {
                let mut cmd = Command::new("javac");
                cmd.arg("-d").arg(out).arg(&source);
                cmd
            }
        };
        let status = cmd
            .status()
            .with_context(|| format!("cannot compile {}", source.display()))?;
        if !status.success() {
            bail!("compiling {} failed ({status})", source.display());
        }
        Ok(())
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

pub fn run(args: &BenchArgs) -> Result<()> {
    let tracer = match (&args.tracer_cmd, args.untraced) {
        (Some(line), _) => {
            let mut words = line.split_whitespace().map(OsString::from);
            let program = words.next().context("--tracer-cmd is empty")?;
            Some(Tracer {
                program,
                args: words.collect(),
            })
        }
        (None, true) => None,
        (None, false) => Some(Tracer::crashtrace_watch()),
    };
    let uses_crashtrace = args.tracer_cmd.is_none() && !args.untraced;
    if uses_crashtrace {
        crate::build(true)?;
    } else {
        crate::setup::run(true)?;
    }

    let out = crate::target_dir().join("xtask-bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let selected: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| args.only.as_deref().is_none_or(|only| only == w.name))
        .collect();
    for workload in &selected {
        workload.build(&out)?;
    }

    let mut rows = Vec::new();
    for &workload in &selected {
        // One unmeasured run to warm caches.
        run_untraced(workload, &out)?;
        let (mut untraced, mut traced) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            eprintln!("bench: {} round {round}/{}", workload.name, args.rounds);
            untraced.push(run_untraced(workload, &out)?);
            if let Some(tracer) = &tracer {
                traced.push(run_traced(workload, &out, tracer)?);
            }
        }
        rows.push((
            workload,
            median(&mut untraced),
            (!traced.is_empty()).then(|| median(&mut traced)),
        ));
    }
    print_table(&rows);

    if uses_crashtrace {
        let median = time_record_true(args.rounds, &out)?;
        println!(
            "\ncrashtrace record -- /bin/true: {:.1} ms (median of {})",
            ms(median),
            args.rounds
        );
    }
    Ok(())
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

fn print_table(rows: &[(&Workload, Duration, Option<Duration>)]) {
    let width = rows
        .iter()
        .map(|(w, ..)| w.name.len())
        .max()
        .unwrap_or(0)
        .max("workload".len());
    println!(
        "{:<width$} | untraced ms | traced ms | ratio | target",
        "workload"
    );
    println!("{:-<width$}-+-------------+-----------+-------+-------", "");
    let mut within = 0;
    for (workload, untraced, traced) in rows {
        let (traced_ms, ratio) = match traced {
            Some(traced) => {
                let ratio = traced.as_secs_f64() / untraced.as_secs_f64();
                within += usize::from(ratio <= workload.target);
                (format!("{:.1}", ms(*traced)), format!("{ratio:.3}"))
            }
            None => ("-".into(), "-".into()),
        };
        let untraced_ms = format!("{:.1}", ms(*untraced));
        println!(
            "{:<width$} | {untraced_ms:>11} | {traced_ms:>9} | {ratio:>5} | {:>6.2}",
            workload.name, workload.target
        );
    }
    if rows.iter().any(|(_, _, traced)| traced.is_some()) {
        println!("{within} of {} workloads within target", rows.len());
    }
}

/// Wall time of one run of `workload`, nothing else running.
pub fn run_untraced(workload: &Workload, out: &Path) -> Result<Duration> {
    time_command(&mut workload.command(out), workload.name)
}

/// Wall time of one run of `workload` while `tracer` runs in the background.
/// The tracer is started and ready before the clock starts, and stopped
/// with SIGINT afterwards.
pub fn run_traced(workload: &Workload, out: &Path, tracer: &Tracer) -> Result<Duration> {
    let mut process = TracerProcess::start(tracer)?;
    let elapsed = run_untraced(workload, out)?;
    process
        .ensure_running()
        .with_context(|| format!("tracer died during {}", workload.name))?;
    process.stop();
    Ok(elapsed)
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

fn median(times: &mut [Duration]) -> Duration {
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
