//! `watch --goroutines`: the Go processes of the host by goroutine count and
//! growth, once a second, and a leak report for a process whose count keeps
//! growing.
//!
//! A sample costs one small read per Go process: the runtime's `allglen`,
//! eight bytes through `/proc/PID/mem`. That is the number of goroutines the
//! runtime has allocated (the live ones and the exited ones it keeps for
//! reuse), so it rises only when live goroutines reach a new high: exactly
//! the signal of goroutines piling up, at no cost to the process. When the
//! leak policy ([`crate::support::leak`]) says a process leaks, and only
//! then, its goroutines are read in full ([`crate::support::golang::live`])
//! to name where they were created and where they block.
//!
//! Nothing here needs BPF: processes are found in `/proc`, each executable
//! is parsed once (by device and inode), and per-process state is dropped
//! when the process is gone.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    frontends::{
        goroutines::{Frame, Names},
        session::open_output,
    },
    report::{SCHEMA, time},
    support::{
        golang::{
            self, GoBinary,
            live::{self, AllGs, GLayout},
            waitreasons,
        },
        leak::{Policy, Series, Verdict},
        procfs,
    },
};

/// Rows printed per second in text mode.
const TEXT_ROWS: usize = 20;
/// Executables remembered (Go or not) before the cache starts over.
const MAX_EXES: usize = 4096;
/// Sites listed in a leak report.
const TOP_SITES: usize = 5;
/// Goroutines read for a leak report.
const LEAK_DUMP_LIMIT: usize = 1_000_000;

/// What to watch, and how.
pub struct Options {
    pub json: bool,
    pub output: Option<PathBuf>,
    pub policy: Policy,
    /// Only these pids (empty: all).
    pub pids: Vec<u32>,
    /// Only these comms (empty: all).
    pub comms: Vec<String>,
}

/// A Go executable, parsed once.
struct Exe {
    path: PathBuf,
    binary: GoBinary,
    layout: GLayout,
    minor: Option<u32>,
    /// Found from the first process that runs it.
    allgs: Option<AllGs>,
    /// The goroutine list could not be found (said once).
    failed: bool,
}

/// One Go process being sampled.
struct Proc {
    start_time: Option<u64>,
    exe: Rc<RefCell<Exe>>,
    bias: u64,
    comm: String,
    goroutines: Series,
    threads: u32,
    /// A leak was reported and the count has not fallen since.
    reported: bool,
}

/// One row of the live view.
#[derive(Debug, Serialize)]
pub struct Row {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: u32,
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    /// `allglen`: goroutines allocated (live, and exited ones kept for reuse).
    pub goroutines: u64,
    /// Growth of `goroutines` per minute over the samples kept.
    pub per_minute: f64,
    pub threads: u32,
}

/// A creation or blocking site and how many goroutines it holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Site {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_reason: Option<String>,
    #[serde(flatten)]
    pub frame: Frame,
    pub count: u64,
}

/// A `{"type": "leak"}` record.
#[derive(Debug, Serialize, Deserialize)]
pub struct Leak {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: u32,
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub go_version: String,
    pub window_seconds: u64,
    /// `allglen` at the window's start and now, and its growth per minute.
    pub goroutines_first: u64,
    pub goroutines_last: u64,
    pub per_minute: f64,
    /// Goroutines alive when the process was read in full.
    pub live: u64,
    pub threads: u32,
    /// Where the live goroutines were created, most first.
    pub created_by: Vec<Site>,
    /// Where they block: the wait reason and the innermost frame outside
    /// the runtime and the standard library, most first.
    pub blocked: Vec<Site>,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<u8> {
    let mut out: Box<dyn Write> = match &opts.output {
        Some(path) => Box::new(open_output(path)?),
        None => Box::new(io::stdout()),
    };
    let mut state = Sampler::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = &mut shutdown => return r.map(|()| 0),
        }
        let at = started.elapsed().as_secs_f64();
        let leaks = state.sample(&opts, at);
        write_rows(&mut *out, &state, &opts)?;
        for pid in leaks {
            if let Some(leak) = state.leak(pid, &opts, LEAK_DUMP_LIMIT) {
                write_leak(&mut *out, &leak, opts.json)?;
            }
        }
        out.flush()?;
    }
}

#[derive(Default)]
pub struct Sampler {
    exes: HashMap<(u64, u64), Option<Rc<RefCell<Exe>>>>,
    procs: HashMap<u32, Proc>,
    /// Processes found not to be readable Go programs, by start time, and
    /// when: looked at again only every [`RECHECK`] seconds (one may exec
    /// a Go program under the same pid).
    skipped: HashMap<u32, (Option<u64>, f64)>,
}

/// Seconds before a process that was not a readable Go program is looked
/// at again.
const RECHECK: f64 = 10.0;

impl Sampler {
    /// Samples every Go process; returns the pids that now leak.
    pub fn sample(&mut self, opts: &Options, at: f64) -> Vec<u32> {
        let pids = if opts.pids.is_empty() {
            procfs::pids()
        } else {
            opts.pids.clone()
        };
        let seen: HashSet<u32> = pids.iter().copied().collect();
        self.procs.retain(|pid, _| seen.contains(pid));
        self.skipped.retain(|pid, _| seen.contains(pid));
        let mut leaking = Vec::new();
        for pid in pids {
            let Ok(stat) = procfs::stat(pid) else {
                self.procs.remove(&pid);
                continue;
            };
            if self
                .procs
                .get(&pid)
                .is_some_and(|p| p.start_time != stat.start_time)
            {
                self.procs.remove(&pid); // the pid was reused
            }
            if !self.procs.contains_key(&pid) {
                if let Some(&(start, when)) = self.skipped.get(&pid)
                    && start == stat.start_time
                    && at - when < RECHECK
                {
                    continue;
                }
                let Some(p) = self.adopt(pid, stat.start_time, opts) else {
                    self.skipped.insert(pid, (stat.start_time, at));
                    continue;
                };
                self.skipped.remove(&pid);
                self.procs.insert(pid, p);
            }
            let proc = self.procs.get_mut(&pid).expect("just inserted");
            let Some(count) = read_allglen(pid, proc) else {
                continue;
            };
            proc.threads = stat.threads.unwrap_or(0);
            proc.goroutines.push(at, count, &opts.policy);
            match proc.goroutines.verdict(&opts.policy) {
                Some(_) if !proc.reported => {
                    proc.reported = true;
                    leaking.push(pid);
                }
                Some(_) => {}
                None => proc.reported = false,
            }
        }
        leaking
    }

    /// A process to sample, when it runs a Go executable this can read.
    fn adopt(&mut self, pid: u32, start_time: Option<u64>, opts: &Options) -> Option<Proc> {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim_end()
            .to_owned();
        if !opts.comms.is_empty() && !opts.comms.contains(&comm) {
            return None;
        }
        let link = PathBuf::from(format!("/proc/{pid}/exe"));
        let meta = std::fs::metadata(&link).ok()?;
        let key = (meta.dev(), meta.ino());
        if self.exes.len() >= MAX_EXES {
            self.exes.clear();
        }
        let exe = self
            .exes
            .entry(key)
            .or_insert_with(|| {
                let binary = golang::go_info(&link).ok()??;
                let path = std::fs::read_link(&link).unwrap_or_default();
                let version = binary.go_version().unwrap_or("an unknown release");
                let minor = live::minor_of(version);
                let Some(layout) = minor.and_then(live::g_layout) else {
                    eprintln!(
                        "crashtrace: not sampling {} ({version}): Go 1.19 and 1.21 to 1.27 are read",
                        path.display()
                    );
                    return None;
                };
                Some(Rc::new(RefCell::new(Exe {
                    path,
                    binary,
                    layout,
                    minor,
                    allgs: None,
                    failed: false,
                })))
            })
            .clone()?;
        if exe.borrow().failed {
            return None;
        }
        let maps = procfs::maps(pid).ok()?;
        let bias = live::load_bias(&exe.borrow().binary, &maps, key.0, key.1)?;
        if exe.borrow().allgs.is_none() {
            let memory = procfs::ProcessMemory::open(pid).ok()?;
            let found = live::find_allgs(&exe.borrow().binary, &memory, bias);
            let mut exe = exe.borrow_mut();
            match found {
                Ok(found) => exe.allgs = Some(found),
                Err(e) => {
                    eprintln!("crashtrace: not sampling {}: {e}", exe.path.display());
                    exe.failed = true;
                    return None;
                }
            }
        }
        Some(Proc {
            start_time,
            exe,
            bias,
            comm,
            goroutines: Series::default(),
            threads: 0,
            reported: false,
        })
    }

    /// The latest count of each Go process: pid, executable, `allglen`.
    pub fn counts(&self) -> impl Iterator<Item = (u32, String, u64)> + '_ {
        self.procs.iter().filter_map(|(&pid, p)| {
            let exe = p.exe.borrow().path.display().to_string();
            Some((pid, exe, p.goroutines.latest()?))
        })
    }

    /// The leak record of `pid`, from a full read of at most `limit` of its
    /// goroutines.
    pub fn leak(&self, pid: u32, opts: &Options, limit: usize) -> Option<Leak> {
        let proc = self.procs.get(&pid)?;
        let verdict: Verdict = proc.goroutines.verdict(&opts.policy)?;
        let exe = proc.exe.borrow();
        let memory = procfs::ProcessMemory::open(pid).ok()?;
        let snap = live::snapshot(
            &exe.binary,
            &exe.layout,
            &memory,
            exe.allgs?,
            proc.bias,
            limit,
        )
        .ok()?;
        let mut names = Names::new(&exe.binary, proc.bias);
        let mut created: HashMap<u64, u64> = HashMap::new();
        let mut blocked: HashMap<(u8, u32), u64> = HashMap::new();
        for g in &snap.goroutines {
            if g.gopc != 0 && g.id != 1 {
                *created.entry(g.gopc).or_default() += 1;
            }
            let reason = if live::is_waiting(g.status) {
                g.wait_reason
            } else {
                0
            };
            *blocked.entry((reason, g.stack)).or_default() += 1;
        }
        let mut created: Vec<Site> = created
            .into_iter()
            .filter_map(|(gopc, count)| {
                let frame = names.frames(gopc, false).first()?.clone();
                Some(Site {
                    wait_reason: None,
                    frame,
                    count,
                })
            })
            .collect();
        merge_sites(&mut created);
        let mut sites: Vec<Site> = blocked
            .into_iter()
            .filter_map(|((reason, stack), count)| {
                let pcs = snap.stacks.get(stack as usize)?;
                let frame = pcs.iter().enumerate().find_map(|(i, &pc)| {
                    names
                        .frames(pc, i == 0)
                        .iter()
                        .find(|f| is_user_function(&f.function))
                        .cloned()
                })?;
                Some(Site {
                    wait_reason: waitreasons::name(exe.minor, reason),
                    frame,
                    count,
                })
            })
            .collect();
        merge_sites(&mut sites);
        Some(Leak {
            kind: "leak".into(),
            schema: SCHEMA,
            time: time::rfc3339(std::time::SystemTime::now()),
            pid,
            comm: proc.comm.clone(),
            exe: exe.path.display().to_string(),
            go_version: exe.binary.go_version().unwrap_or_default().to_owned(),
            window_seconds: opts.policy.window.as_secs(),
            goroutines_first: verdict.first,
            goroutines_last: verdict.last,
            per_minute: verdict.per_minute,
            live: snap.goroutines.len() as u64,
            threads: proc.threads,
            created_by: created,
            blocked: sites,
        })
    }
}

/// Adds up sites that name the same place, most first, and keeps the top.
fn merge_sites(sites: &mut Vec<Site>) {
    let mut merged: Vec<Site> = Vec::new();
    for site in sites.drain(..) {
        match merged
            .iter_mut()
            .find(|m| m.frame == site.frame && m.wait_reason == site.wait_reason)
        {
            Some(m) => m.count += site.count,
            None => merged.push(site),
        }
    }
    merged.sort_by_key(|m| std::cmp::Reverse(m.count));
    merged.truncate(TOP_SITES);
    *sites = merged;
}

/// A function of the program, not of the runtime or the standard library:
/// its package path's first element has a dot (`example.com/...`), or it
/// is in package `main`.
pub fn is_user_function(function: &str) -> bool {
    if function.starts_with("main.") {
        return true;
    }
    let package_end = function.find(".(").or_else(|| {
        let slash = function.rfind('/').map_or(0, |s| s + 1);
        function[slash..].find('.').map(|d| slash + d)
    });
    let package = package_end.map_or(function, |e| &function[..e]);
    package
        .split('/')
        .next()
        .is_some_and(|first| first.contains('.'))
}

fn read_allglen(pid: u32, proc: &Proc) -> Option<u64> {
    let allgs = proc.exe.borrow().allgs?;
    let memory = procfs::ProcessMemory::open(pid).ok()?;
    let mut word = [0u8; 8];
    memory
        .read(allgs.allglen.wrapping_add(proc.bias), &mut word)
        .then(|| u64::from_le_bytes(word))
}

fn rows(state: &Sampler) -> Vec<Row> {
    let now = time::rfc3339(std::time::SystemTime::now());
    let mut rows: Vec<Row> = state
        .procs
        .iter()
        .filter_map(|(&pid, p)| {
            Some(Row {
                kind: "goroutine-count",
                schema: SCHEMA,
                time: now.clone(),
                pid,
                comm: p.comm.clone(),
                exe: p.exe.borrow().path.display().to_string(),
                goroutines: p.goroutines.latest()?,
                per_minute: p.goroutines.per_minute().unwrap_or(0.0),
                threads: p.threads,
            })
        })
        .collect();
    rows.sort_by(|a, b| b.goroutines.cmp(&a.goroutines).then(a.pid.cmp(&b.pid)));
    rows
}

fn write_rows(out: &mut dyn Write, state: &Sampler, opts: &Options) -> io::Result<()> {
    let rows = rows(state);
    if opts.json {
        for row in &rows {
            serde_json::to_writer(&mut *out, row)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let leaking: HashSet<u32> = state
        .procs
        .iter()
        .filter(|(_, p)| p.reported)
        .map(|(&pid, _)| pid)
        .collect();
    writeln!(
        out,
        "\n{} Go processes  {:>8} {:<16} {:>11} {:>10} {:>8}",
        rows.len(),
        "PID",
        "COMM",
        "GOROUTINES",
        "PER MIN",
        "THREADS"
    )?;
    for row in rows.iter().take(TEXT_ROWS) {
        writeln!(
            out,
            "{:>22} {:<16} {:>11} {:>+10.0} {:>8}{}",
            row.pid,
            row.comm,
            row.goroutines,
            row.per_minute,
            row.threads,
            if leaking.contains(&row.pid) {
                "  LEAK"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

fn write_leak(out: &mut dyn Write, leak: &Leak, json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, leak)?;
        return writeln!(out);
    }
    write!(out, "\n{}", text(leak))
}

/// The leak in one line, as `list --type leak` shows it.
pub fn summary(leak: &Leak) -> String {
    let top = leak.created_by.first().map_or(String::new(), |s| {
        format!(
            "; {} of {} created by {}{}",
            s.count,
            leak.live,
            s.frame.function,
            at(&s.frame)
        )
    });
    format!(
        "goroutines {} -> {} over {} s ({:+.0}/min){top}",
        leak.goroutines_first, leak.goroutines_last, leak.window_seconds, leak.per_minute
    )
}

/// The leak as people read it.
pub fn text(leak: &Leak) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leak pid {} ({}) {}: goroutines {} -> {} over {} s ({:+.0}/min), {} live, {} threads",
        leak.pid,
        leak.comm,
        leak.exe,
        leak.goroutines_first,
        leak.goroutines_last,
        leak.window_seconds,
        leak.per_minute,
        leak.live,
        leak.threads
    );
    for s in &leak.created_by {
        let _ = writeln!(
            out,
            "  {:>9} created by {}{}",
            s.count,
            s.frame.function,
            at(&s.frame)
        );
    }
    for s in &leak.blocked {
        let _ = writeln!(
            out,
            "  {:>9} blocked in {} at {}{}",
            s.count,
            s.wait_reason.as_deref().unwrap_or("?"),
            s.frame.function,
            at(&s.frame)
        );
    }
    out
}

fn at(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!(" ({file}:{line})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_functions_are_told_from_the_standard_library() {
        for f in [
            "main.worker",
            "main.(*Server).fanOut",
            "example.com/app/pkg.Run",
            "github.com/x/y.(*T).M",
            "example.com/app.func1",
        ] {
            assert!(is_user_function(f), "{f}");
        }
        for f in [
            "runtime.gopark",
            "sync.(*Mutex).Lock",
            "internal/poll.(*FD).Read",
            "net/http.(*conn).serve",
            "time.Sleep",
        ] {
            assert!(!is_user_function(f), "{f}");
        }
    }
}
