//! The soak's mixed, looping workload: one thread per kind of crash or
//! churn, each recording every process it caused to crash (pid, executable,
//! when it was spawned and when `waitpid` saw it die) so that the
//! accounting can find each one in the daemon's acknowledgements.
//!
//! The kinds that a rate limit can suppress (the crash loop, Go, Rust, OOM)
//! can be held: before the SIGKILL the soak holds them and waits until the
//! daemon has stored or counted every one, because a killed daemon loses
//! the suppressed counts it has not written yet. Native crashes in fresh
//! binaries never hit a rate limit and keep going through the kill, so the
//! crashes missed while the daemon is down are real.

use std::{
    fs,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// What kind of crash a process was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A C program copied to a new file (a new inode) and crashed once.
    Native,
    /// The one program crashing in a loop, past its rate limit.
    Loop,
    /// A Go panic or fatal signal (exit status 2).
    Go,
    /// A Rust panic (exit status 101).
    Rust,
    /// Killed by the OOM killer in a small memory cgroup.
    Oom,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Native, Kind::Loop, Kind::Go, Kind::Rust, Kind::Oom];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Native => "native",
            Kind::Loop => "crash loop",
            Kind::Go => "go panic",
            Kind::Rust => "rust panic",
            Kind::Oom => "oom kill",
        }
    }

    /// Whether the soak holds this kind around the SIGKILL.
    pub fn held(self) -> bool {
        self != Kind::Native
    }
}

/// One process the soak made crash.
#[derive(Clone)]
pub struct Crash {
    pub kind: Kind,
    pub pid: u32,
    pub exe: String,
    pub spawned: Instant,
    /// The same moment in microseconds since the epoch, to compare with
    /// the acknowledgements' times.
    pub spawned_us: i64,
    pub died: Instant,
}

/// The built programs the workload runs.
pub struct Programs {
    /// C crash programs, copied to a fresh name for each native crash.
    pub natives: Vec<PathBuf>,
    /// A copy of a C crash program that crashes in a loop.
    pub looping: PathBuf,
    pub go: PathBuf,
    pub rust: PathBuf,
    pub hog: PathBuf,
    /// Recovers from 200 SIGSEGVs it raises, then exits 0.
    pub recover: PathBuf,
    /// Where native copies go.
    pub bins: PathBuf,
    /// `cgroup.procs` of the small memory cgroup.
    pub oom_procs: PathBuf,
}

/// Counters of the churn that is not a crash.
#[derive(Default)]
pub struct Churn {
    /// Short-lived processes that exited 0.
    pub short_lived: AtomicU64,
    /// Processes that raised and handled a storm of SIGSEGVs.
    pub storms: AtomicU64,
    /// Processes that ended otherwise than their kind should (not counted
    /// as crashes).
    pub unexpected: AtomicU64,
    /// SIGHUP reloads answered with `READY=1`.
    pub reloads: AtomicU64,
}

/// State shared by the workload's threads and the soak.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    pub hold: AtomicBool,
    /// Held threads that are waiting.
    held: AtomicUsize,
    pub crashes: Mutex<Vec<Crash>>,
    pub churn: Churn,
    /// The first error a worker met.
    pub error: Mutex<Option<String>>,
}

impl Shared {
    pub fn crashes(&self) -> Vec<Crash> {
        self.crashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, crash: Crash) {
        self.crashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(crash);
    }

    fn fail(&self, e: anyhow::Error) {
        let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        error.get_or_insert_with(|| format!("{e:#}"));
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Sleeps up to `d`, returning early when stopping.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20).min(d));
        }
    }

    /// For held kinds: waits while the soak holds them.
    fn gate(&self) {
        if !self.hold.load(Ordering::SeqCst) {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        while self.hold.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
        self.held.fetch_sub(1, Ordering::SeqCst);
    }

    /// Holds the held kinds; returns once every one of their threads waits
    /// (none is in the middle of a crash).
    pub fn hold_all(&self, threads: usize) {
        self.hold.store(true, Ordering::SeqCst);
        while self.held.load(Ordering::SeqCst) < threads && !self.stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How often each kind runs; the soak's load.
pub struct Pace {
    pub native: Duration,
    pub looping: Duration,
    pub go: Duration,
    pub rust: Duration,
    pub oom: Duration,
    pub storm: Duration,
    pub short_lived: Duration,
}

impl Pace {
    pub const DEFAULT: Pace = Pace {
        native: Duration::from_millis(500),
        looping: Duration::from_millis(100),
        go: Duration::from_secs(4),
        rust: Duration::from_secs(4),
        oom: Duration::from_secs(15),
        storm: Duration::from_secs(5),
        short_lived: Duration::from_millis(50),
    };
}

/// The workload's threads; stopped and joined on drop.
pub struct Workload {
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// One workload thread's loop.
type Worker = dyn Fn(&Shared, &Programs) -> Result<()> + Send;

/// How many threads run held kinds.
pub const HELD_THREADS: usize = 4;

/// Native copies kept on disk: the daemon may still read a binary after
/// its process died; older copies are removed.
const KEEP_COPIES: u64 = 64;

impl Workload {
    pub fn start(programs: Arc<Programs>, pace: &'static Pace) -> Self {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        let mut spawn = |f: Box<Worker>| {
            let (shared, programs) = (shared.clone(), programs.clone());
            threads.push(thread::spawn(move || {
                if let Err(e) = f(&shared, &programs) {
                    shared.fail(e);
                }
            }));
        };
        spawn(Box::new(|s, p| native_loop(s, p, pace.native)));
        spawn(Box::new(|s, p| {
            held_loop(s, pace.looping, || {
                crash_once(s, Kind::Loop, Command::new(&p.looping), &p.looping, |st| {
                    st.signal().is_some()
                })
            })
        }));
        spawn(Box::new(|s, p| {
            let modes = ["panic", "nil-deref", "nil-map", "index"];
            let mut i = 0;
            held_loop(s, pace.go, || {
                i += 1;
                let mut cmd = Command::new(&p.go);
                cmd.arg(modes[i % modes.len()]);
                crash_once(s, Kind::Go, cmd, &p.go, |st| st.code() == Some(2))
            })
        }));
        spawn(Box::new(|s, p| {
            held_loop(s, pace.rust, || {
                let mut cmd = Command::new(&p.rust);
                cmd.arg("panic");
                crash_once(s, Kind::Rust, cmd, &p.rust, |st| st.code() == Some(101))
            })
        }));
        spawn(Box::new(|s, p| {
            held_loop(s, pace.oom, || {
                let script = format!(
                    "echo $$ > '{}' && exec '{}'",
                    p.oom_procs.display(),
                    p.hog.display()
                );
                let mut cmd = Command::new("/bin/sh");
                cmd.args(["-c", &script]);
                crash_once(s, Kind::Oom, cmd, &p.hog, |st| {
                    st.signal() == Some(libc::SIGKILL)
                })
            })
        }));
        spawn(Box::new(|s, p| {
            churn_loop(s, pace.storm, &p.recover, &s.churn.storms)
        }));
        spawn(Box::new(|s, _| {
            churn_loop(
                s,
                pace.short_lived,
                Path::new("/bin/true"),
                &s.churn.short_lived,
            )
        }));
        Self { shared, threads }
    }

    /// Stops every thread and waits for it: every process it started has
    /// been reaped when this returns.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the Go and Rust programs once each without crashing, alive for
/// two seconds, so that a daemon that just started has probed them before
/// the workload's first panic: a panic in the first run of an executable
/// the daemon has not probed yet is not seen (it ends in `exit`, with no
/// signal), a limit of runtime probing that the soak does not measure.
pub fn warm_up(p: &Programs) -> Result<()> {
    let children = [(&p.go, "recovered"), (&p.rust, "caught")]
        .into_iter()
        .map(|(exe, mode)| {
            Command::new(exe)
                .args([mode, "2000"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot run {}", exe.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    for mut child in children {
        child.wait().context("cannot wait for a warm-up process")?;
    }
    Ok(())
}

/// Runs `step` every `every` until stopped, waiting while held.
fn held_loop(s: &Shared, every: Duration, mut step: impl FnMut() -> Result<()>) -> Result<()> {
    while !s.stop.load(Ordering::SeqCst) {
        s.gate();
        if s.stop.load(Ordering::SeqCst) {
            break;
        }
        step()?;
        s.pause(every);
    }
    Ok(())
}

/// Runs `cmd` to its end; records it as a crash of `kind` when `crashed`
/// says its status is the expected one.
fn crash_once(
    s: &Shared,
    kind: Kind,
    mut cmd: Command,
    exe: &Path,
    crashed: impl Fn(&ExitStatus) -> bool,
) -> Result<()> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut attempts = 0;
    let (spawned, mut child) = loop {
        let spawned = (Instant::now(), super::daemon::now_us());
        match cmd.spawn() {
            Ok(child) => break (spawned, child),
            // A fresh copy is briefly open for writing in a child that
            // another thread forked before the copy was closed.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot run {}", exe.display())),
        }
    };
    let pid = child.id();
    let status = child.wait().context("cannot wait for a crashing process")?;
    let died = Instant::now();
    if crashed(&status) {
        s.record(Crash {
            kind,
            pid,
            exe: exe.display().to_string(),
            spawned: spawned.0,
            spawned_us: spawned.1,
            died,
        });
    } else {
        s.churn.unexpected.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// Copies the next C crash program to a new file and crashes it once.
fn native_loop(s: &Shared, p: &Programs, every: Duration) -> Result<()> {
    let mut n: u64 = 0;
    while !s.stop.load(Ordering::SeqCst) {
        let source = &p.natives[n as usize % p.natives.len()];
        let name = source.file_name().context("a program without a name")?;
        let copy = p.bins.join(format!("{}-{n}", name.to_string_lossy()));
        fs::copy(source, &copy).with_context(|| format!("cannot copy to {}", copy.display()))?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
        crash_once(s, Kind::Native, Command::new(&copy), &copy, |st| {
            st.signal().is_some()
        })?;
        if let Some(old) = n.checked_sub(KEEP_COPIES) {
            let source = &p.natives[old as usize % p.natives.len()];
            let name = source.file_name().unwrap_or_default().to_string_lossy();
            let _ = fs::remove_file(p.bins.join(format!("{name}-{old}")));
        }
        n += 1;
        s.pause(every);
    }
    Ok(())
}

/// Runs `program` (which exits 0) every `every`, counting it.
fn churn_loop(s: &Shared, every: Duration, program: &Path, count: &AtomicU64) -> Result<()> {
    while !s.stop.load(Ordering::SeqCst) {
        let status = Command::new(program)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if status.success() {
            count.fetch_add(1, Ordering::SeqCst);
        } else {
            s.churn.unexpected.fetch_add(1, Ordering::SeqCst);
        }
        s.pause(every);
    }
    Ok(())
}
