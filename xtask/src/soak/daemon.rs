//! The daemon under soak: started as systemd would start it (a config file,
//! `NOTIFY_SOCKET`), its stderr read line by line with the time each line
//! arrived (an acknowledgement's time is the crash's "stored" time), its
//! metrics scraped, and its memory and file descriptors sampled, all across
//! the SIGKILL and restart in the middle of the run.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::interrupted;

/// How long the daemon may take to load and attach its probes on a busy
/// machine.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a SIGTERM'd daemon may take to drain and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// One line of the daemon's stderr.
pub struct Line {
    /// When the soak read it, in microseconds since the epoch.
    pub wall_us: i64,
    pub text: String,
}

/// Every line every daemon run logged, also appended to a file.
pub struct Log {
    lines: Mutex<Vec<Line>>,
    file: Mutex<File>,
}

impl Log {
    pub fn create(path: &Path) -> Result<Arc<Self>> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Arc::new(Self {
            lines: Mutex::new(Vec::new()),
            file: Mutex::new(file),
        }))
    }

    fn push(&self, run: u32, text: String) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "[run {run}] {text}");
        let line = Line {
            wall_us: now_us(),
            text,
        };
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// Runs `f` on the lines logged so far.
    pub fn with<T>(&self, f: impl FnOnce(&[Line]) -> T) -> T {
        f(&self.lines.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Lines containing `text`.
    pub fn count(&self, text: &str) -> usize {
        self.with(|lines| lines.iter().filter(|l| l.text.contains(text)).count())
    }
}

/// An acknowledgement: `crashtrace: stored crash id=N pid=P ... exe=E`.
pub struct Ack {
    /// The store row's id.
    pub id: i64,
    pub pid: u32,
    pub exe: String,
    pub wall_us: i64,
}

impl Ack {
    pub fn parse(line: &Line) -> Option<Self> {
        let rest = line.text.strip_prefix("crashtrace: stored crash ")?;
        let field = |name: &str| rest.split(' ').find_map(|kv| kv.strip_prefix(name));
        Some(Self {
            id: field("id=")?.parse().ok()?,
            pid: field("pid=")?.parse().ok()?,
            exe: rest.split_once(" exe=")?.1.to_string(),
            wall_us: line.wall_us,
        })
    }
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A running `crashtrace daemon`; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub run: u32,
    pub metrics_port: u16,
    notify: UnixDatagram,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Starts the daemon on `config` and returns once it sent `READY=1`.
    pub fn start(
        bin: &Path,
        config: &Path,
        socket: &Path,
        run: u32,
        log: &Arc<Log>,
    ) -> Result<Self> {
        let _ = fs::remove_file(socket);
        let notify = UnixDatagram::bind(socket)
            .with_context(|| format!("cannot bind {}", socket.display()))?;
        notify.set_read_timeout(Some(Duration::from_millis(200)))?;
        let metrics_port = crashtrace_tests::daemon::free_port();
        let mut child = Command::new(bin)
            .arg("daemon")
            .arg("--config")
            .arg(config)
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("NOTIFY_SOCKET", socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} daemon", bin.display()))?;
        let pipe = child.stderr.take().context("the daemon has no stderr")?;
        let sink = log.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.push(run, line);
            }
        });
        let mut daemon = Self {
            pid: child.id(),
            child: Some(child),
            run,
            metrics_port,
            notify,
            reader: Some(reader),
        };
        daemon.wait_notify("READY=1", READY_TIMEOUT)?;
        Ok(daemon)
    }

    /// Waits for a notification datagram holding `state`.
    pub fn wait_notify(&mut self, state: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == state)
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the daemon exited with {status} before {state}");
            }
            if interrupted() {
                bail!("interrupted");
            }
        }
        bail!("no {state} from the daemon in {timeout:?}")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.pid as i32, sig) };
    }

    /// SIGHUP, then waits for `RELOADING=1` and `READY=1`.
    pub fn reload(&mut self) -> Result<()> {
        self.signal(libc::SIGHUP);
        self.wait_notify("RELOADING=1", Duration::from_secs(60))?;
        self.wait_notify("READY=1", Duration::from_secs(60))
    }

    /// SIGKILL, then reaps it.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_exit()
    }

    /// SIGTERM, then waits for it to drain and exit.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("the daemon was already reaped")?;
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the daemon did not exit within {EXIT_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(50));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(status)
    }

    /// `crashtrace_events_lost_total` and `crashtrace_crashes_suppressed_total`
    /// by label value, from `/metrics`.
    pub fn scrape(&self) -> Result<Scrape> {
        let body = crashtrace_tests::daemon::http_get(self.metrics_port, "/metrics")
            .context("cannot read the daemon's /metrics")?;
        let mut scrape = Scrape::default();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                let start = series.find(&format!("{name}=\""))? + name.len() + 2;
                let end = series[start..].find('"')? + start;
                Some(series[start..end].to_string())
            };
            if series.starts_with("crashtrace_events_lost_total{") {
                if let Some(cause) = label("cause") {
                    scrape.lost.insert(cause, value as u64);
                }
            } else if series.starts_with("crashtrace_crashes_suppressed_total{")
                && let Some(key) = label("key")
            {
                scrape.suppressed.insert(key, value as u64);
            }
        }
        Ok(scrape)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// What one scrape of `/metrics` said (counters of the current run).
#[derive(Default, Clone)]
pub struct Scrape {
    pub lost: BTreeMap<String, u64>,
    pub suppressed: BTreeMap<String, u64>,
}

/// One sample of the daemon's resident memory and open files.
#[derive(Clone, Copy)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t: f64,
    pub run: u32,
    pub rss_kib: u64,
    pub fds: u64,
    /// Of those, BPF links and perf events: the probes on Go and Rust
    /// executables, one set per executable seen on the host (bounded by
    /// the daemon at 512 executables).
    pub probe_fds: u64,
}

/// Samples `/proc/PID/status` and `/proc/PID/fd` of whichever daemon runs.
pub struct Sampler {
    /// The daemon's pid and run, 0 while none runs.
    pub target: Arc<(AtomicU32, AtomicU32)>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(start: Instant, every: Duration) -> Self {
        let target = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (target, stop, samples) = (target.clone(), stop.clone(), samples.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let pid = target.0.load(Ordering::SeqCst);
                    if pid != 0
                        && let Some((rss_kib, fds, probe_fds)) = sample(pid)
                    {
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Sample {
                                t: start.elapsed().as_secs_f64(),
                                run: target.1.load(Ordering::SeqCst),
                                rss_kib,
                                fds,
                                probe_fds,
                            });
                    }
                    let until = Instant::now() + every;
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        };
        Self {
            target,
            stop,
            samples,
            thread: Some(thread),
        }
    }

    pub fn watch(&self, daemon: Option<&Daemon>) {
        let (pid, run) = daemon.map_or((0, 0), |d| (d.pid, d.run));
        self.target.1.store(run, Ordering::SeqCst);
        self.target.0.store(pid, Ordering::SeqCst);
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// VmRSS (KiB), the number of open file descriptors of `pid`, and how
/// many of them are BPF links or perf events.
fn sample(pid: u32) -> Option<(u64, u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let (mut fds, mut probes) = (0, 0);
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        fds += 1;
        let target = fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if target == "anon_inode:bpf_link" || target == "anon_inode:[perf_event]" {
            probes += 1;
        }
    }
    Some((rss, fds, probes))
}

/// The soak's config: every key at its default except the store, which
/// lives on the soak's tmpfs, and an include filter on the soak's own
/// directory, so that other processes crashing on the host (a test suite
/// running alongside) neither count nor share a rate-limit key.
pub fn write_config(path: &Path, store: &Path, programs: &Path) -> Result<()> {
    let text = format!(
        "# Written by `cargo xtask soak`.\n[store]\npath = \"{}\"\n\n[filter]\ninclude_exe = [\"{}/*\"]\n",
        store.display(),
        programs.display()
    );
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The store's `PRAGMA integrity_check` answer (`ok` when sound).
pub fn integrity_check(store: &Path) -> Result<String> {
    let conn = rusqlite::Connection::open_with_flags(
        store,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", store.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows.join("; "))
}

/// What the store holds: suppressed counts by rate-limit key, persistent
/// counters (`lost.*`), and the crash rows' times by id.
#[derive(Default, Clone)]
pub struct StoreCounts {
    pub suppressed: BTreeMap<String, u64>,
    pub counters: BTreeMap<String, u64>,
    pub rows: u64,
    /// The report time (the kernel's time of the crash), microseconds.
    pub times: std::collections::HashMap<i64, i64>,
}

impl StoreCounts {
    pub fn read(store: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            store,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open {}", store.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let pairs = |sql: &str| -> Result<BTreeMap<String, u64>> {
            let rows = conn
                .prepare(sql)?
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        };
        let times: std::collections::HashMap<i64, i64> = conn
            .prepare("SELECT id, time_us FROM crashes")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Self {
            suppressed: pairs("SELECT rate_key, sum(count) FROM suppressed GROUP BY rate_key")?,
            counters: pairs("SELECT name, value FROM counters")?,
            rows: times.len() as u64,
            times,
        })
    }

    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }

    /// `lost.CAUSE` counters, by cause.
    pub fn lost(&self) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("lost.")?.to_string(), *v)))
            .collect()
    }
}

/// The store file inside the tmpfs.
pub fn store_path(mount: &Path) -> PathBuf {
    mount.join("crashes.db")
}
