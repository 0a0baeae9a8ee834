//! `crashtrace goroutines PID`: a goroutine dump of a running Go process,
//! taken from outside.
//!
//! The slow deaths (goroutines that pile up blocked on a channel, a lock or
//! a timer until memory or threads run out, or a service that hangs with
//! every request stuck) leave no crash to report. Go's own answer,
//! `/debug/pprof/goroutine`, needs the service to have compiled pprof in
//! and exposed it. This command reads the runtime's goroutine list from the
//! process's memory instead ([`crate::support::golang::live`]), with no
//! signal to the process and no pause: any Go process, stripped or not.
//!
//! The text groups goroutines with the same stack, status and creator, as
//! pprof's `debug=1` does, biggest group first; `--json` gives every
//! goroutine with its frames. The process's threads, and the system call
//! each is blocked in, come from `/proc`.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    rc::Rc,
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    frontends::cli::GoroutinesArgs,
    support::{
        golang::{
            self, GoBinary,
            live::{self, LiveError, RawGoroutine, Snapshot},
            waitreasons,
        },
        procfs::{self, ThreadState},
    },
};

/// Version of the `--json` output's schema.
pub const SCHEMA_VERSION: u32 = 1;
/// Most threads listed.
const MAX_THREADS: usize = 100_000;

/// Exit status when the process is not a Go program, or its runtime could
/// not be read.
const EXIT_NOT_READABLE: u8 = 3;

/// One frame, named.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
}

/// One goroutine, named.
#[derive(Clone, Debug, Serialize)]
pub struct Goroutine {
    pub id: u64,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_reason: Option<String>,
    /// Seconds blocked, where the runtime recorded when it blocked (after
    /// a garbage collection); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_seconds: Option<u64>,
    /// A goroutine of the runtime itself (`runtime.Stack(all)` hides them).
    pub system: bool,
    pub frames: Vec<Frame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Frame>,
    /// Why its frames stop early, when they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One thread, as `/proc` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Thread {
    pub tid: u32,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
}

/// What was read, before it is named.
struct Taken {
    pid: u32,
    exe: PathBuf,
    go_version: String,
    minor: Option<u32>,
    binary: GoBinary,
    bias: u64,
    snap: Snapshot,
    threads: Vec<Thread>,
}

/// The head of the `--json` object; `goroutines` follows it, one at a time.
#[derive(Serialize)]
struct Head<'a> {
    schema_version: u32,
    pid: u32,
    exe: &'a Path,
    go_version: &'a str,
    /// Goroutines that exist (`allglen`, dead ones included).
    allglen: u64,
    /// Goroutines past `--limit`, not read.
    over_limit: u64,
    /// List entries that could not be read (the process changed them).
    unreadable: u64,
    threads: &'a [Thread],
}

/// `crashtrace goroutines`.
pub fn run(args: GoroutinesArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let taken = match take(&args) {
        Ok(taken) => taken,
        Err(e) if e.downcast_ref::<NotReadable>().is_some() => {
            eprintln!("crashtrace: error: {e:#}");
            return Ok(EXIT_NOT_READABLE);
        }
        Err(e) => return Err(e),
    };
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::new(stdout);
    if args.json {
        json(&taken, started, &mut out)?;
    } else {
        out.write_all(text(&taken, args.system, started).as_bytes())?;
    }
    out.flush()?;
    Ok(0)
}

/// The process is not one whose goroutines can be read; the message says
/// what was observed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotReadable(String);

fn take(args: &GoroutinesArgs) -> anyhow::Result<Taken> {
    let pid = args.pid;
    let exe_link = PathBuf::from(format!("/proc/{pid}/exe"));
    let exe = std::fs::read_link(&exe_link)
        .with_context(|| format!("cannot read {}", exe_link.display()))?;
    let meta = std::fs::metadata(&exe_link)
        .with_context(|| format!("cannot stat {}", exe_link.display()))?;
    let binary = golang::go_info(&exe_link)
        .with_context(|| format!("cannot read the executable of process {pid}"))?
        .ok_or_else(|| {
            NotReadable(format!(
                "process {pid} ({}) is not a Go program: its executable has no Go pclntab",
                exe.display()
            ))
        })?;
    let go_version = binary
        .go_version()
        .ok_or_else(|| NotReadable(LiveError::NoVersion.to_string()))?
        .to_owned();
    let minor = live::minor_of(&go_version);
    let layout = minor.and_then(live::g_layout).ok_or_else(|| {
        NotReadable(format!(
            "{}: releases read here are Go 1.19 and 1.21 to 1.27",
            LiveError::UnknownRelease(go_version.clone())
        ))
    })?;
    let maps = procfs::maps(pid).with_context(|| format!("cannot read the mappings of {pid}"))?;
    let bias = live::load_bias(&binary, &maps, meta.dev(), meta.ino()).ok_or_else(|| {
        NotReadable(format!(
            "process {pid} maps no part of its executable {}",
            exe.display()
        ))
    })?;
    let memory = procfs::ProcessMemory::open(pid)
        .with_context(|| format!("cannot open the memory of process {pid}"))?;
    let allgs = live::find_allgs(&binary, &memory, bias)
        .map_err(|e| NotReadable(format!("process {pid}: {e}")))?;
    let snap = live::snapshot(&binary, &layout, &memory, allgs, bias, args.limit)
        .map_err(|e| NotReadable(format!("process {pid}: {e}")))?;
    if snap.goroutines.is_empty() && snap.allglen > 0 && snap.unreadable == snap.allglen {
        bail!(NotReadable(format!(
            "process {pid}: none of its {} goroutines could be read",
            snap.allglen
        )));
    }
    let threads = procfs::threads(pid, MAX_THREADS)
        .with_context(|| format!("cannot list the threads of {pid}"))?
        .into_iter()
        .map(thread)
        .collect();
    Ok(Taken {
        pid,
        exe,
        go_version,
        minor,
        binary,
        bias,
        snap,
        threads,
    })
}

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Names pcs, each once: a million goroutines share a few hundred.
pub(crate) struct Names<'a> {
    binary: &'a GoBinary,
    bias: u64,
    cache: HashMap<(u64, bool), Rc<[Frame]>>,
}

impl<'a> Names<'a> {
    pub(crate) fn new(binary: &'a GoBinary, bias: u64) -> Self {
        Self {
            binary,
            bias,
            cache: HashMap::new(),
        }
    }

    /// The frames at process address `pc`, inlined calls first; a return
    /// address (`exact` false) is looked up inside its call.
    pub(crate) fn frames(&mut self, pc: u64, exact: bool) -> Rc<[Frame]> {
        let (binary, bias) = (self.binary, self.bias);
        self.cache
            .entry((pc, exact))
            .or_insert_with(|| {
                let at = pc.wrapping_sub(bias).wrapping_sub(u64::from(!exact));
                match binary.frames(at) {
                    Some(frames) if !frames.is_empty() => frames
                        .into_iter()
                        .map(|f| Frame {
                            function: f.function.unwrap_or_else(|| "?".into()),
                            file: f.file,
                            line: f.line,
                            inlined: f.inlined,
                        })
                        .collect(),
                    _ => Rc::from(vec![Frame {
                        function: format!("{pc:#x}"),
                        file: None,
                        line: None,
                        inlined: false,
                    }]),
                }
            })
            .clone()
    }

    fn goroutine(&mut self, g: &RawGoroutine, taken: &Taken, now: i64) -> Goroutine {
        let mut frames = Vec::new();
        for (i, &pc) in taken.snap.stacks[g.stack as usize].iter().enumerate() {
            frames.extend_from_slice(&self.frames(pc, i == 0));
        }
        let start = self
            .frames(g.startpc, true)
            .last()
            .map(|f| f.function.clone())
            .unwrap_or_default();
        // The main goroutine's creator is the runtime's start-up, which
        // Go's own traceback leaves out too.
        let created_by = (g.gopc != 0 && g.id != 1)
            .then(|| self.frames(g.gopc, false).first().cloned())
            .flatten();
        let waiting_seconds = (g.wait_since > 0 && now > g.wait_since)
            .then(|| ((now - g.wait_since) / 1_000_000_000) as u64);
        Goroutine {
            id: g.id,
            status: live::status_name(g.status),
            // The reason is left over from its last wait in any other state.
            wait_reason: live::is_waiting(g.status)
                .then(|| waitreasons::name(taken.minor, g.wait_reason))
                .flatten(),
            waiting_seconds,
            system: start.starts_with("runtime.") && start != "runtime.main",
            frames,
            created_by,
            error: g.error.clone(),
        }
    }
}

/// `--json`: the head, then each goroutine named as it is written, so
/// that memory holds the raw snapshot and the names, not a million
/// goroutines' frames.
fn json(taken: &Taken, started: Instant, out: &mut dyn Write) -> anyhow::Result<()> {
    let head = serde_json::to_string(&Head {
        schema_version: SCHEMA_VERSION,
        pid: taken.pid,
        exe: &taken.exe,
        go_version: &taken.go_version,
        allglen: taken.snap.allglen,
        over_limit: taken.snap.over_limit,
        unreadable: taken.snap.unreadable,
        threads: &taken.threads,
    })?;
    out.write_all(&head.as_bytes()[..head.len() - 1])?;
    out.write_all(b",\"goroutines\":[")?;
    let mut names = Names::new(&taken.binary, taken.bias);
    let now = monotonic_ns();
    for (i, g) in taken.snap.goroutines.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &names.goroutine(g, taken, now))?;
    }
    writeln!(out, "],\"elapsed_ms\":{}}}", started.elapsed().as_millis())?;
    Ok(())
}

fn thread(t: ThreadState) -> Thread {
    Thread {
        tid: t.tid,
        state: match t.state {
            'R' => "running",
            'S' => "sleeping",
            'D' => "uninterruptible",
            'T' | 't' => "stopped",
            'Z' => "zombie",
            _ => "other",
        }
        .into(),
        syscall: t.syscall.map(syscall_name),
    }
}

/// Names of the system calls Go threads are usually found in (x86-64).
fn syscall_name(nr: u64) -> String {
    match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        23 => "select",
        35 => "nanosleep",
        43 => "accept",
        45 => "recvfrom",
        47 => "recvmsg",
        61 => "wait4",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        441 => "epoll_pwait2",
        _ => return format!("syscall {nr}"),
    }
    .into()
}

/// The pprof-like text: groups of goroutines with the same stack, state
/// and creator, biggest first.
fn text(taken: &Taken, show_system: bool, started: Instant) -> String {
    let snap = &taken.snap;
    let mut names = Names::new(&taken.binary, taken.bias);
    let now = monotonic_ns();
    // Grouped on the raw values; only one goroutine of a group is named.
    type Key<'a> = (u32, u8, u32, u64, Option<&'a str>);
    let mut groups: HashMap<Key<'_>, (Vec<&RawGoroutine>, Option<i64>)> = HashMap::new();
    for g in &snap.goroutines {
        let status = g.status & !0x1000;
        let reason = if live::is_waiting(g.status) {
            g.wait_reason
        } else {
            0
        };
        let key = (status, reason, g.stack, g.gopc, g.error.as_deref());
        let entry = groups.entry(key).or_default();
        entry.0.push(g);
        if g.wait_since > 0 {
            entry.1 = Some(entry.1.map_or(g.wait_since, |w| w.min(g.wait_since)));
        }
    }
    let mut named: Vec<(usize, Goroutine, Option<i64>)> = groups
        .into_values()
        .map(|(members, oldest)| {
            (
                members.len(),
                names.goroutine(members[0], taken, now),
                oldest,
            )
        })
        .collect();
    let system: usize = named.iter().filter(|g| g.1.system).map(|g| g.0).sum();
    named.retain(|g| show_system || !g.1.system);
    named.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "process {} ({}, {}): {} goroutines{}, {} threads, read in {} ms",
        taken.pid,
        taken.exe.display(),
        taken.go_version,
        snap.goroutines.len(),
        if show_system || system == 0 {
            String::new()
        } else {
            format!(" ({system} of the runtime, not shown: --system)")
        },
        taken.threads.len(),
        started.elapsed().as_millis(),
    );
    if snap.over_limit > 0 {
        let _ = writeln!(
            out,
            "{} more goroutines were not read (past --limit)",
            snap.over_limit
        );
    }
    if snap.unreadable > 0 {
        let _ = writeln!(
            out,
            "{} entries of the goroutine list changed while being read",
            snap.unreadable
        );
    }
    for (count, g, oldest) in &named {
        let state = g.wait_reason.as_deref().unwrap_or(g.status);
        let _ = write!(out, "\n{count} goroutine{}: {state}", plural(*count));
        let minutes = oldest
            .filter(|&w| now > w)
            .map(|w| (now - w) / 60_000_000_000);
        if let Some(m) = minutes.filter(|&m| m >= 1) {
            let _ = write!(out, ", up to {m} minutes");
        }
        let _ = writeln!(out);
        for f in &g.frames {
            let _ = writeln!(out, "    {}{}", f.function, location(f));
        }
        if let Some(e) = &g.error {
            let _ = writeln!(out, "    ({e})");
        }
        if let Some(c) = &g.created_by {
            let _ = writeln!(out, "    created by {}{}", c.function, location(c));
        }
    }
    let mut by_state: Vec<(String, usize)> = Vec::new();
    for t in &taken.threads {
        let what = match &t.syscall {
            Some(s) => format!("{} in {s}", t.state),
            None => t.state.clone(),
        };
        match by_state.iter_mut().find(|(w, _)| *w == what) {
            Some((_, n)) => *n += 1,
            None => by_state.push((what, 1)),
        }
    }
    by_state.sort_by_key(|b| std::cmp::Reverse(b.1));
    let threads: Vec<String> = by_state.iter().map(|(w, n)| format!("{n} {w}")).collect();
    let _ = writeln!(out, "\nthreads: {}", threads.join(", "));
    out
}

fn location(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!(" at {file}:{line}"),
        (Some(file), None) => format!(" at {file}"),
        _ => String::new(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
