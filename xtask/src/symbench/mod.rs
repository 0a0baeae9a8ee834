//! The symbolizer figure of `cargo xtask bench`: how many addresses per
//! second `crashtrace symbolize` turns into functions and source lines,
//! next to binutils' `addr2line`, elfutils' `eu-addr2line` and
//! `llvm-symbolizer`, on a binary with tens of megabytes of DWARF.
//!
//! The symbolizer is what stands between a crash and its report, and a
//! crash in a large binary is where it is slowest, so it is measured on a
//! large real binary (crashtrace's own dev build) rather than a toy one,
//! against the tools people would otherwise reach for. Two rates are kept
//! apart: cold (one process, all addresses once, parsing included), which
//! is what the first crash in a binary costs, and warm (the extra cost of
//! the same addresses again in the same process), which is what later
//! crashes cost once the file is parsed.

mod agreement;
mod elf;

use std::{
    ffi::OsString,
    fmt::Write as _,
    fs::{self, File},
    io,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use agreement::agreement;

/// Addresses symbolized per cold run.
pub const ADDRESSES: usize = 10_000;
/// Runs of each measurement; the median is kept.
const RUNS: usize = 3;
/// Seed of the address choice, so that every run of the bench asks the same.
const SEED: u64 = 0x5eed_c0de_2024;
/// Longest a single tool run may take before it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// One symbolizer under test.
struct Tool {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
}

/// What one tool achieved.
pub struct ToolResult {
    pub name: &'static str,
    /// Wall times of the runs with the addresses once and twice; empty
    /// when the tool is not installed or failed.
    once: Vec<Duration>,
    twice: Vec<Duration>,
    /// Why there are no times.
    pub missing: Option<String>,
}

/// A warm rate: from the extra time of the second pass over the
/// addresses, judged against the spread of the runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Warm {
    /// The extra time is larger than the spread.
    Rate(f64),
    /// The extra time is positive but within the spread: an estimate.
    Noisy(f64),
    /// The second pass took no measurable time (the median with the
    /// addresses twice is no longer than with them once): the rate is at
    /// least [`ADDRESSES`] over the spread.
    AtLeast(f64),
}

impl Warm {
    /// The rate, measured or estimated; `None` for a mere lower bound.
    pub fn estimate(self) -> Option<f64> {
        match self {
            Warm::Rate(rate) | Warm::Noisy(rate) => Some(rate),
            Warm::AtLeast(_) => None,
        }
    }

    fn noisy(self) -> bool {
        !matches!(self, Warm::Rate(_))
    }
}

impl std::fmt::Display for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warm::Rate(rate) => write!(f, "{rate:.0}"),
            Warm::Noisy(rate) => write!(f, "{rate:.0}?"),
            Warm::AtLeast(rate) => write!(f, "> {rate:.0}"),
        }
    }
}

fn median_of(times: &[Duration]) -> Option<Duration> {
    (!times.is_empty()).then(|| crate::bench::median(&mut times.to_vec()))
}

fn spread(times: &[Duration]) -> Duration {
    match (times.iter().min(), times.iter().max()) {
        (Some(min), Some(max)) => *max - *min,
        _ => Duration::ZERO,
    }
}

impl ToolResult {
    /// Median time with the addresses once.
    pub fn once(&self) -> Option<Duration> {
        median_of(&self.once)
    }

    /// Median time with the addresses twice.
    pub fn twice(&self) -> Option<Duration> {
        median_of(&self.twice)
    }

    pub fn cold_rate(&self) -> Option<f64> {
        Some(ADDRESSES as f64 / self.once()?.as_secs_f64())
    }

    /// Addresses per second once the file is parsed: [`ADDRESSES`] over
    /// the difference of the median times, marked as noisy when that
    /// difference is within the spread of the runs (the larger of the two
    /// sets' max - min). `None` when nothing can be said.
    pub fn warm(&self) -> Option<Warm> {
        let (once, twice) = (self.once()?, self.twice()?);
        let noise = spread(&self.once).max(spread(&self.twice));
        let extra = twice.saturating_sub(once);
        let rate = |d: Duration| ADDRESSES as f64 / d.as_secs_f64();
        if extra > noise {
            Some(Warm::Rate(rate(extra)))
        } else if !extra.is_zero() {
            Some(Warm::Noisy(rate(extra)))
        } else {
            (!noise.is_zero()).then(|| Warm::AtLeast(rate(noise)))
        }
    }
}

pub struct SymbenchResult {
    /// The binary symbolized, described for the table's heading.
    pub binary: String,
    /// Paths of the binary and of the addresses-twice input, to profile with.
    bin_path: String,
    twice_path: String,
    pub tools: Vec<ToolResult>,
    /// Addresses where crashtrace and addr2line name the same innermost
    /// function, and where their whole inline chains agree; out of
    /// `compared`.
    pub agree_innermost: usize,
    pub agree_chain: usize,
    pub compared: usize,
}

/// The large binary: crashtrace's dev build, built if missing.
fn dev_binary() -> Result<PathBuf> {
    let bin = crate::target_dir().join("debug/crashtrace");
    if !bin.exists() {
        eprintln!("bench: building the dev profile of crashtrace to symbolize");
        let status = crate::cargo()
            .args(["build", "-p", "tracer-user"])
            .status()
            .context("cannot run cargo build")?;
        if !status.success() {
            bail!("cargo build -p tracer-user failed ({status})");
        }
    }
    Ok(bin)
}

pub fn run(out: &Path) -> Result<SymbenchResult> {
    let bin = dev_binary()?;
    let data = fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))?;
    let elf = elf::parse(&data).with_context(|| format!("cannot parse {}", bin.display()))?;
    let addrs = choose_addresses(&elf.functions, ADDRESSES, SEED);
    let binary = format!(
        "{}: {:.0} MB, {:.0} MB of DWARF, {} functions",
        shown(&bin),
        data.len() as f64 / 1e6,
        elf.dwarf_bytes as f64 / 1e6,
        elf.functions.len()
    );
    drop(data);

    let once = out.join("symbench-addrs.txt");
    let twice = out.join("symbench-addrs-twice.txt");
    let mut text = String::new();
    for addr in &addrs {
        let _ = writeln!(text, "{addr:#x}");
    }
    fs::write(&once, &text).with_context(|| format!("cannot write {}", once.display()))?;
    fs::write(&twice, text.repeat(2))
        .with_context(|| format!("cannot write {}", twice.display()))?;

    let tools = tools(&bin);
    let mut times: Vec<[Vec<Duration>; 2]> = tools.iter().map(|_| Default::default()).collect();
    let mut missing: Vec<Option<String>> = tools
        .iter()
        .map(|t| (!t.program.exists()).then(|| format!("{} not found", t.program.display())))
        .collect();
    // Rounds go over every tool in turn so that a slow drift of the
    // machine spreads over all of them.
    for round in 1..=RUNS {
        for (i, tool) in tools.iter().enumerate() {
            if missing[i].is_some() {
                continue;
            }
            eprintln!("bench: symbolize {} round {round}/{RUNS}", tool.name);
            for (pass, input) in [&once, &twice].into_iter().enumerate() {
                let output = out.join(format!("symbench-{}.out", tool.name));
                match time_tool(tool, input, &output, out) {
                    Ok(elapsed) => times[i][pass].push(elapsed),
                    Err(e) => {
                        eprintln!("bench: warning: {} failed: {e:#}", tool.name);
                        missing[i] = Some(format!("failed: {e:#}"));
                        break;
                    }
                }
            }
        }
    }
    let results = tools
        .iter()
        .zip(times)
        .zip(missing)
        .map(|((tool, [once, twice]), missing)| match missing {
            Some(why) => ToolResult {
                name: tool.name,
                once: Vec::new(),
                twice: Vec::new(),
                missing: Some(why),
            },
            None => ToolResult {
                name: tool.name,
                once,
                twice,
                missing: None,
            },
        })
        .collect();

    eprintln!("bench: comparing crashtrace's function names with addr2line's");
    let (agree_innermost, agree_chain, compared) = agreement(&bin, &once, &addrs, out)?;
    Ok(SymbenchResult {
        binary,
        bin_path: shown(&bin),
        twice_path: shown(&twice),
        tools: results,
        agree_innermost,
        agree_chain,
        compared,
    })
}

/// `path` relative to the workspace when it is inside it.
fn shown(path: &Path) -> String {
    path.strip_prefix(crate::workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn tools(bin: &Path) -> Vec<Tool> {
    let exe = |flag: &str| [OsString::from(flag), bin.into()];
    let on_path = |name: &str| crate::setup::find_on_path(name).unwrap_or_else(|| name.into());
    let llvm = crate::setup::find_on_path("llvm-symbolizer-14")
        .or_else(|| {
            let p = PathBuf::from("/usr/lib/llvm-14/bin/llvm-symbolizer");
            p.exists().then_some(p)
        })
        .unwrap_or_else(|| "llvm-symbolizer-14".into());
    let mut obj = OsString::from("--obj=");
    obj.push(bin);
    vec![
        Tool {
            name: "crashtrace",
            program: crate::crashtrace_bin(),
            args: [OsString::from("symbolize")]
                .into_iter()
                .chain(exe("--exe"))
                .collect(),
        },
        Tool {
            name: "addr2line",
            program: on_path("addr2line"),
            args: ["-f", "-i"]
                .map(OsString::from)
                .into_iter()
                .chain(exe("-e"))
                .collect(),
        },
        Tool {
            name: "eu-addr2line",
            program: on_path("eu-addr2line"),
            args: ["-f", "-i"]
                .map(OsString::from)
                .into_iter()
                .chain(exe("-e"))
                .collect(),
        },
        Tool {
            name: "llvm-symbolizer-14",
            program: llvm,
            args: vec![obj],
        },
    ]
}

/// CPU time (user and system) of `tool` answering the addresses in
/// `input` (its stdin), its answers written to `output`. Every tool here is
/// single-threaded, so on an idle machine this is its wall time; on a busy
/// one it is far steadier, since time spent waiting for a core is left out.
fn time_tool(tool: &Tool, input: &Path, output: &Path, out: &Path) -> Result<Duration> {
    let stdin = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let stdout =
        File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
    let log = out.join(format!("symbench-{}.stderr", tool.name));
    let stderr = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = Command::new(&tool.program);
    cmd.args(&tool.args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", tool.program.display()))?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(wait_with_usage(pid));
    });
    let (status, cpu) = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(waited) => waited.context("cannot wait for the tool")?,
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the waiting
            // thread has not reaped the child, so the pid is still its.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv();
            bail!("no answer within {RUN_TIMEOUT:?}");
        }
    };
    if !status.success() {
        let stderr = fs::read_to_string(&log).unwrap_or_default();
        bail!("exited with {status}; its stderr:\n{}", stderr.trim_end());
    }
    Ok(cpu)
}

/// Reaps child `pid`: its exit status and the CPU time it used.
fn wait_with_usage(pid: libc::pid_t) -> io::Result<(ExitStatus, Duration)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok((
        ExitStatus::from_raw(status),
        time(usage.ru_utime) + time(usage.ru_stime),
    ))
}

/// `count` addresses inside the functions `(start, size)`, each chosen by
/// first picking a function (all equally likely, however large) and then
/// an offset inside it, from a generator seeded with `seed`.
fn choose_addresses(functions: &[(u64, u64)], count: usize, seed: u64) -> Vec<u64> {
    if functions.is_empty() {
        return Vec::new();
    }
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..count)
        .map(|_| {
            let (start, size) = functions[(next() % functions.len() as u64) as usize];
            start + next() % size
        })
        .collect()
}

pub fn print(result: &SymbenchResult) {
    println!(
        "\nsymbolizer throughput, {ADDRESSES} addresses in {} (CPU time, median of {RUNS})",
        result.binary
    );
    let crashtrace = result.tools.iter().find(|t| t.name == "crashtrace");
    let base_cold = crashtrace.and_then(ToolResult::cold_rate);
    let crashtrace_warm = crashtrace.and_then(ToolResult::warm);
    let base_warm = crashtrace_warm.and_then(Warm::estimate);
    let width = result
        .tools
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max("tool".len());
    println!(
        "{:<width$} |   10k ms |   20k ms | cold addr/s | warm addr/s | ratio cold | ratio warm",
        "tool"
    );
    println!(
        "{:-<width$}-+----------+----------+-------------+-------------+------------+-----------",
        ""
    );
    let fmt_ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3));
    let fmt_rate = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.0}"));
    let ratio = |base: Option<f64>, r: Option<f64>| match (base, r) {
        (Some(base), Some(r)) => format!("{:.2}", base / r),
        _ => "-".into(),
    };
    let base_noisy = crashtrace_warm.is_some_and(Warm::noisy);
    let warm_ratio = |w: Option<Warm>| match (base_warm, w) {
        (Some(base), Some(Warm::AtLeast(r))) => format!("< {:.2}", base / r),
        (Some(base), Some(w)) => {
            let mark = if base_noisy || w.noisy() { "?" } else { "" };
            format!("{:.2}{mark}", base / w.estimate().unwrap_or(f64::NAN))
        }
        _ => "-".into(),
    };
    for tool in &result.tools {
        if let Some(why) = &tool.missing {
            println!("{:<width$} | {why}", tool.name);
            continue;
        }
        println!(
            "{:<width$} | {:>8} | {:>8} | {:>11} | {:>11} | {:>10} | {:>10}",
            tool.name,
            fmt_ms(tool.once()),
            fmt_ms(tool.twice()),
            fmt_rate(tool.cold_rate()),
            tool.warm().map_or("-".into(), |w| w.to_string()),
            ratio(base_cold, tool.cold_rate()),
            warm_ratio(tool.warm()),
        );
    }
    println!("ratio: crashtrace's addr/s divided by the tool's (above 1: crashtrace is faster)");
    let warms: Vec<Warm> = result.tools.iter().filter_map(ToolResult::warm).collect();
    if warms.iter().any(|w| matches!(w, Warm::Noisy(_))) {
        println!(
            "N?: the second pass took less than the spread of the runs; an estimate (is the \
             machine busy?)"
        );
    }
    if warms.iter().any(|w| matches!(w, Warm::AtLeast(_))) {
        println!(
            "> N: the second pass took no measurable time; N is the addresses over the spread \
             of the runs"
        );
    }
    let pct = |n: usize| 100.0 * n as f64 / result.compared.max(1) as f64;
    println!(
        "agreement with addr2line -C: innermost function {:.1}%, whole inline chain {:.1}% of {} addresses",
        pct(result.agree_innermost),
        pct(result.agree_chain),
        result.compared
    );
    let Some(base) = base_warm else { return };
    let faster: Vec<String> = result
        .tools
        .iter()
        .filter(|t| t.name != "crashtrace")
        .filter_map(|t| Some((t.name, t.warm()?)))
        .filter(|&(_, warm)| match warm {
            Warm::Rate(rate) | Warm::Noisy(rate) | Warm::AtLeast(rate) => rate > base,
        })
        .map(|(name, warm)| format!("{name} ({warm} addr/s)"))
        .collect();
    if faster.is_empty() {
        return;
    }
    println!(
        "crashtrace ({base:.0} addr/s) is slower warm than {}; to see where its time goes:",
        faster.join(", ")
    );
    let record = format!(
        "perf record -g -o symbench.perf.data {} symbolize --exe {} < {} > /dev/null",
        shown(&crate::crashtrace_bin()),
        result.bin_path,
        result.twice_path
    );
    if crate::setup::find_on_path("perf").is_some() {
        println!("  {record}\n  perf report -i symbench.perf.data --no-children");
    } else {
        println!("  (perf is not installed: apt-get install linux-perf) {record}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_fall_inside_functions_and_repeat_with_the_seed() {
        let functions = [(0x1000, 0x10), (0x2000, 1), (0x3000, 0x400)];
        let addrs = choose_addresses(&functions, 1000, 7);
        assert_eq!(addrs, choose_addresses(&functions, 1000, 7));
        assert_ne!(addrs, choose_addresses(&functions, 1000, 8));
        for addr in &addrs {
            assert!(functions.iter().any(|&(s, n)| (s..s + n).contains(addr)));
        }
        for &(start, size) in &functions {
            let hits = addrs
                .iter()
                .filter(|&&a| (start..start + size).contains(&a))
                .count();
            assert!(hits > 250, "each function is picked about as often: {hits}");
        }
    }

    #[test]
    fn warm_rate_is_a_bound_when_lost_in_noise() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect();
        let tool = |once: &[u64], twice: &[u64]| ToolResult {
            name: "t",
            once: ms(once),
            twice: ms(twice),
            missing: None,
        };
        let clear = tool(&[1000, 1010, 1005], &[1100, 1105, 1110]);
        assert_eq!(clear.cold_rate(), Some(ADDRESSES as f64 / 1.005));
        assert_eq!(clear.warm(), Some(Warm::Rate(ADDRESSES as f64 / 0.1)));
        let noisy = tool(&[1000, 1500, 1005], &[1100, 1105, 1110]);
        assert_eq!(noisy.warm(), Some(Warm::Noisy(ADDRESSES as f64 / 0.1)));
        let unmeasurable = tool(&[3600, 3500, 3700], &[3550, 3560, 3540]);
        assert_eq!(
            unmeasurable.warm(),
            Some(Warm::AtLeast(ADDRESSES as f64 / 0.2))
        );
        assert_eq!(Warm::Noisy(5.0).to_string(), "5?");
        assert_eq!(tool(&[5], &[5]).warm(), None);
        assert_eq!(tool(&[], &[]).warm(), None);
    }
}
