//! Run counts and run times of crashtrace's BPF programs, from the kernel's
//! BPF statistics (`/proc/sys/kernel/bpf_stats_enabled`) as `bpftool prog
//! show --json` reports them.

use std::{
    collections::BTreeSet,
    ffi::CStr,
    fs, mem,
    process::Command,
    sync::atomic::{AtomicU8, Ordering},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// crashtrace's BPF programs, by the names the kernel knows them by. The
/// last, [`EMPTY_PROGRAM`], is there only when the bench asked for it.
pub const PROGRAMS: [&str; 4] = [
    "signal_generate",
    "sched_process_exit",
    "sched_process_fork",
    "signal_empty",
];

/// The index in [`PROGRAMS`] of `signal_empty`: a program that does
/// nothing, on the same tracepoint as `signal_generate`, which
/// `crashtrace` attaches only when [`EMPTY_PROGRAM_ENV`] is set. Its run
/// time is the price of any BPF program there (and of the statistics
/// themselves), so `signal_generate`'s minus it is what crashtrace's own
/// code costs per signal.
pub const EMPTY_PROGRAM: usize = 3;

/// The environment variable that makes `crashtrace` attach `signal_empty`
/// (tracer-user's loader reads the same name).
pub const EMPTY_PROGRAM_ENV: &str = "CRASHTRACE_EMPTY_SIGNAL_PROGRAM";

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const STATS_SYSCTL_C: &CStr = c"/proc/sys/kernel/bpf_stats_enabled";

/// Signals after which the sysctl is restored before the process dies.
const FATAL_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The sysctl's value to restore from a signal handler; [`NOTHING_SAVED`]
/// when no [`StatsEnabled`] is alive.
static SAVED: AtomicU8 = AtomicU8::new(NOTHING_SAVED);
const NOTHING_SAVED: u8 = 0;

/// Kernel BPF statistics switched on; dropping it restores the previous
/// setting. Should SIGINT, SIGTERM or SIGHUP end the process meanwhile, a
/// signal handler restores it first.
pub struct StatsEnabled {
    previous: u8,
    old_actions: Vec<(libc::c_int, libc::sigaction)>,
}

impl StatsEnabled {
    pub fn enable() -> Result<Self> {
        let text = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("cannot read {STATS_SYSCTL}"))?;
        let previous = match text.trim().as_bytes() {
            [digit @ b'0'..=b'9'] => *digit,
            _ => bail!("unexpected value {:?} in {STATS_SYSCTL}", text.trim()),
        };
        if SAVED
            .compare_exchange(NOTHING_SAVED, previous, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            bail!("BPF statistics are already enabled by this process");
        }
        let mut guard = StatsEnabled {
            previous,
            old_actions: Vec::new(),
        };
        for signal in FATAL_SIGNALS {
            // SAFETY: the handler only calls async-signal-safe functions
            // (open, write, close, raise) and reads an atomic.
            unsafe {
                let mut action: libc::sigaction = mem::zeroed();
                action.sa_sigaction = restore_and_die as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESETHAND;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) == 0 {
                    guard.old_actions.push((signal, old));
                }
            }
        }
        fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("cannot write 1 to {STATS_SYSCTL}"))?;
        Ok(guard)
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(STATS_SYSCTL, [self.previous]) {
            eprintln!(
                "bench: cannot restore {STATS_SYSCTL} to {}: {e}",
                char::from(self.previous)
            );
        }
        for (signal, old) in self.old_actions.drain(..) {
            // SAFETY: reinstates the action that sigaction reported.
            unsafe { libc::sigaction(signal, &old, std::ptr::null_mut()) };
        }
        SAVED.store(NOTHING_SAVED, Ordering::SeqCst);
    }
}

extern "C" fn restore_and_die(signal: libc::c_int) {
    let value = SAVED.load(Ordering::SeqCst);
    if value != NOTHING_SAVED {
        // SAFETY: open, write, close and raise are async-signal-safe; the
        // path is a static C string.
        unsafe {
            let fd = libc::open(STATS_SYSCTL_C.as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, (&value as *const u8).cast(), 1);
                libc::close(fd);
            }
        }
    }
    // SA_RESETHAND has put back the default action: this ends the process
    // once the handler returns.
    // SAFETY: raise has no preconditions.
    unsafe { libc::raise(signal) };
}

/// Cumulative counters of one program since it was loaded (while statistics
/// were enabled).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgStats {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl ProgStats {
    pub fn saturating_sub(self, earlier: Self) -> Self {
        ProgStats {
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
        }
    }

    pub fn add(&mut self, other: Self) {
        self.run_cnt += other.run_cnt;
        self.run_time_ns += other.run_time_ns;
    }

    pub fn mean_ns(self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// How the programs of one tracer process were told apart from others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// By the `pids` bpftool lists for each program.
    BpftoolPids,
    /// By the `prog_id` of the tracer's file descriptors in /proc.
    FdInfo,
    /// By name alone: the only loaded programs with these names.
    Name,
}

/// The kernel ids of one tracer process's programs, in [`PROGRAMS`] order
/// (0: not loaded, which only [`EMPTY_PROGRAM`] may be).
#[derive(Clone, Debug)]
pub struct TracerPrograms {
    pub ids: [u64; PROGRAMS.len()],
    pub matched: Matched,
}

impl TracerPrograms {
    /// Finds the programs that the process `pid` loaded.
    pub fn find(pid: u32) -> Result<Self> {
        let progs = bpftool_progs()?;
        let fd_ids = fdinfo_prog_ids(pid);
        let mut ids = [0; PROGRAMS.len()];
        let mut matched = Matched::Name;
        for (index, (slot, name)) in ids.iter_mut().zip(PROGRAMS).enumerate() {
            let named: Vec<&Prog> = progs.iter().filter(|p| p.name == name).collect();
            let by_pids: Vec<&Prog> = named
                .iter()
                .copied()
                .filter(|p| p.pids.as_ref().is_some_and(|pids| pids.contains(&pid)))
                .collect();
            let by_fd: Vec<&Prog> = named
                .iter()
                .copied()
                .filter(|p| fd_ids.contains(&p.id))
                .collect();
            let (found, how) = if named.iter().any(|p| p.pids.is_some()) {
                (by_pids, Matched::BpftoolPids)
            } else if !fd_ids.is_empty() {
                (by_fd, Matched::FdInfo)
            } else {
                (named, Matched::Name)
            };
            match found.as_slice() {
                [prog] => *slot = prog.id,
                [] if index == EMPTY_PROGRAM => continue,
                [] => bail!("no BPF program {name} loaded by pid {pid}"),
                _ => bail!(
                    "{} BPF programs named {name} and no way to tell which pid {pid} loaded",
                    found.len()
                ),
            }
            matched = how;
        }
        Ok(TracerPrograms { ids, matched })
    }

    /// The programs' current counters, in [`PROGRAMS`] order.
    pub fn read(&self) -> Result<[ProgStats; PROGRAMS.len()]> {
        let progs = bpftool_progs()?;
        let mut stats = [ProgStats::default(); PROGRAMS.len()];
        for ((slot, id), name) in stats.iter_mut().zip(self.ids).zip(PROGRAMS) {
            if id == 0 {
                continue;
            }
            let prog = progs
                .iter()
                .find(|p| p.id == id)
                .with_context(|| format!("BPF program {name} (id {id}) is gone"))?;
            *slot = prog.stats;
        }
        Ok(stats)
    }
}

struct Prog {
    id: u64,
    name: String,
    pids: Option<Vec<u32>>,
    stats: ProgStats,
}

fn bpftool_progs() -> Result<Vec<Prog>> {
    let output = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("cannot run bpftool")?;
    if !output.status.success() {
        bail!(
            "bpftool prog show failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let value: Value = serde_json::from_str(&text)
        .context("cannot parse the output of bpftool prog show --json")?;
    let Value::Array(items) = value else {
        bail!("bpftool prog show --json printed no array");
    };
    let mut progs = Vec::new();
    for item in &items {
        let (Some(id), Some(name)) = (
            item.get("id").and_then(Value::as_u64),
            item.get("name").and_then(Value::as_str),
        ) else {
            continue;
        };
        let pids = item.get("pids").and_then(Value::as_array).map(|pids| {
            pids.iter()
                .filter_map(|p| p.get("pid")?.as_u64()?.try_into().ok())
                .collect()
        });
        let counter = |key| item.get(key).and_then(Value::as_u64).unwrap_or(0);
        progs.push(Prog {
            id,
            name: name.to_owned(),
            pids,
            stats: ProgStats {
                run_cnt: counter("run_cnt"),
                run_time_ns: counter("run_time_ns"),
            },
        });
    }
    Ok(progs)
}

/// The ids of the BPF programs that process `pid` holds file descriptors of
/// (programs and the links that attach them); empty if /proc cannot tell.
fn fdinfo_prog_ids(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in entries.flatten() {
        let Ok(info) = fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(id) = line
                .strip_prefix("prog_id:")
                .and_then(|v| v.trim().parse().ok())
            {
                ids.insert(id);
            }
        }
    }
    ids
}

/// Whether `bpftool` can be run.
pub fn bpftool_available() -> bool {
    Command::new("bpftool")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success())
}
