//! The tracer that `cargo xtask bench` runs in the background during traced
//! runs, and the management of its process.

use std::{
    collections::VecDeque,
    ffi::OsString,
    io::{self, BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// The tracer process to run in the background during traced runs.
pub struct Tracer {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Environment variables set for the tracer, besides the inherited ones.
    pub env: Vec<(OsString, OsString)>,
    /// Whether the tracer is known to print a ready line ("watching" on
    /// stderr). If so, not printing it within [`READY_TIMEOUT`] is an error;
    /// otherwise the tracer is given [`UNKNOWN_READY_WAIT`] to attach.
    pub prints_ready: bool,
}

impl Tracer {
    pub fn crashtrace_watch() -> Self {
        Self::crashtrace(["watch", "--output", "/dev/null"].map(OsString::from))
    }

    /// `crashtrace ARGS...` from this workspace's release build.
    pub fn crashtrace(args: impl IntoIterator<Item = OsString>) -> Self {
        Tracer {
            program: crate::crashtrace_bin().into(),
            args: args.into_iter().collect(),
            env: Vec::new(),
            prints_ready: true,
        }
    }
}

/// How long a tracer that prints a ready line may take to print it. Loading
/// and attaching crashtrace's programs takes seconds on a busy host.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a tracer without a known ready line is given before the
/// workload starts (it may print "watching" sooner).
const UNKNOWN_READY_WAIT: Duration = Duration::from_secs(3);
/// How long a tracer may take to exit after SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Stderr lines kept to explain a tracer's failure.
const TAIL_LINES: usize = 20;

/// A running tracer. Dropping it stops it: SIGINT, then SIGKILL.
pub struct TracerProcess {
    child: Child,
    name: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stopped: bool,
}

impl TracerProcess {
    /// Starts the tracer and waits until it prints a stderr line containing
    /// "watching". A tracer that [`Tracer::prints_ready`] must do so within
    /// [`READY_TIMEOUT`]; any other is waited for at most
    /// [`UNKNOWN_READY_WAIT`].
    pub fn start(tracer: &Tracer) -> Result<Self> {
        let name = std::iter::once(&tracer.program)
            .chain(&tracer.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(&tracer.program);
        cmd.args(&tracer.args)
            .envs(tracer.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Should xtask itself die without running Drop, the tracer goes too.
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start tracer `{name}`"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut process = TracerProcess {
            child,
            name,
            stderr_tail: Arc::clone(&stderr_tail),
            stopped: false,
        };

        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            // Keeps reading to the end so the tracer never blocks on a full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("watching")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                let mut tail = stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let wait = if tracer.prints_ready {
            READY_TIMEOUT
        } else {
            UNKNOWN_READY_WAIT
        };
        match ready_rx.recv_timeout(wait) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) if !tracer.prints_ready => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                process.ensure_running()?;
                let tail = process.stderr_tail().join("\n");
                bail!(
                    "tracer `{}` printed no line containing \"watching\" within {wait:?}; \
                     its last stderr lines:\n{tail}",
                    process.name
                );
            }
            // The tracer closed its stderr, most likely by exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(50)),
        }
        process.ensure_running()?;
        Ok(process)
    }

    /// The tracer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tracer's last stderr lines, oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        let tail = self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect()
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .context("cannot wait for the tracer")?
        {
            self.stopped = true;
            let tail = self.stderr_tail();
            bail!(
                "tracer `{}` exited ({status}); its last stderr lines:\n{}",
                self.name,
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Sends SIGINT and waits up to [`STOP_TIMEOUT`]; then SIGKILL.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the child is
            // not yet reaped, so the pid still belongs to it.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => thread::sleep(Duration::from_millis(10)),
            }
        }
        eprintln!(
            "bench: tracer `{}` ignored SIGINT for {STOP_TIMEOUT:?}; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TracerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
