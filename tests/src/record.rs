//! Running `crashtrace record` and collecting what it reports.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Environment variable overriding [`timeout`], in seconds.
pub const TIMEOUT_ENV: &str = "CRASHTRACE_TEST_TIMEOUT_SECS";

/// How long one crashtrace run may take before the test fails (default 120 s).
pub fn timeout() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// A fresh report path under `dir`, named after the current test.
pub(crate) fn output_path(dir: &Path) -> PathBuf {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let thread = std::thread::current();
    let test: String = thread
        .name()
        .unwrap_or("test")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{test}-{n}.jsonl"));
    let _ = std::fs::remove_file(&path);
    path
}

/// Lines of one of the child's pipes, read on a background thread.
struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (seen so far or arriving before `deadline`) that
    /// starts with `prefix`.
    fn wait_for(&mut self, prefix: &str, deadline: Instant) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return Some(line.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Everything, waiting until the pipe closes or `deadline` passes
    /// (a leftover grandchild could keep it open).
    fn drain(mut self, deadline: Instant) -> String {
        while let Ok(line) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        let mut text = self.seen.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }
}

/// A `crashtrace record` run in progress. Dropping it kills crashtrace and
/// the program it runs (they share a process group).
pub struct RunningRecord {
    child: Option<Child>,
    stdout: Option<Lines>,
    stderr: Option<Lines>,
    output: PathBuf,
    command: String,
    started: Instant,
}

impl RunningRecord {
    pub(crate) fn spawn(
        bin: &Path,
        options: &[&str],
        program: &Path,
        args: &[&str],
        output: PathBuf,
    ) -> Self {
        let mut command = Command::new(bin);
        command
            .args(["record", "--json", "--output"])
            .arg(&output)
            .args(options)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let description = format!("{command:?}");
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {description}: {e}"));
        let stdout = Lines::new(child.stdout.take().expect("piped stdout"));
        let stderr = Lines::new(child.stderr.take().expect("piped stderr"));
        Self {
            child: Some(child),
            stdout: Some(stdout),
            stderr: Some(stderr),
            output,
            command: description,
            started: Instant::now(),
        }
    }

    /// crashtrace's pid (also its process group).
    pub fn crashtrace_pid(&self) -> u32 {
        self.child.as_ref().expect("still running").id()
    }

    /// Waits for a line on stdout (where the recorded program's output
    /// goes) that starts with `prefix`, and returns the rest of it.
    /// Panics with crashtrace's stderr if none comes within [`timeout`].
    pub fn wait_for_stdout(&mut self, prefix: &str) -> String {
        let deadline = self.started + timeout();
        let stdout = self.stdout.as_mut().expect("stdout reader");
        if let Some(line) = stdout.wait_for(prefix, deadline) {
            return line[prefix.len()..].trim().to_owned();
        }
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.kill();
        let stderr = self
            .stderr
            .take()
            .map(|l| l.drain(Instant::now()))
            .unwrap_or_default();
        panic!(
            "no stdout line starting with {prefix:?} from {}\n(crashtrace status: {status:?})\n\
             stdout so far: {:?}\nstderr:\n{stderr}",
            self.command,
            self.stdout.as_ref().map(|l| &l.seen)
        );
    }

    /// Waits for crashtrace to exit (killing it after [`timeout`]) and
    /// collects everything it reported.
    pub fn finish(mut self) -> Recording {
        let deadline = self.started + timeout();
        let mut child = self.child.take().expect("finish called once");
        let crashtrace_pid = child.id();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for {}: {e}", self.command),
            }
        };
        if status.is_none() {
            kill_group(crashtrace_pid);
            let _ = child.wait();
        }
        let drain_until = Instant::now() + Duration::from_secs(5);
        let mut recording = Recording {
            status: status.unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL)),
            crashes: Vec::new(),
            records: Vec::new(),
            stdout: self
                .stdout
                .take()
                .map(|l| l.drain(drain_until))
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|l| l.drain(drain_until))
                .unwrap_or_default(),
            output: self.output.clone(),
            output_missing: false,
            command: self.command.clone(),
            crashtrace_pid,
        };
        if status.is_none() {
            panic!(
                "crashtrace did not exit within {:?}\n{}",
                timeout(),
                recording.context()
            );
        }
        recording.load_output();
        recording
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.wait();
        }
    }
}

impl Drop for RunningRecord {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(pgid: u32) {
    // SAFETY: plain syscall; the group is the one spawn() created.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// What one finished `crashtrace record` run produced.
#[derive(Debug)]
pub struct Recording {
    /// crashtrace's own exit status.
    pub status: ExitStatus,
    /// The `"type":"crash"` records, in order.
    pub crashes: Vec<Value>,
    /// Every JSON record, of any type.
    pub records: Vec<Value>,
    /// crashtrace's stdout, which includes the recorded program's stdout.
    pub stdout: String,
    pub stderr: String,
    /// The `--output` file.
    pub output: PathBuf,
    /// crashtrace did not create the `--output` file.
    pub output_missing: bool,
    pub command: String,
    pub crashtrace_pid: u32,
}

impl Recording {
    fn load_output(&mut self) {
        let text = match std::fs::read_to_string(&self.output) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.output_missing = true;
                return;
            }
            Err(e) => panic!("reading {}: {e}", self.output.display()),
        };
        for (number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let record: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "line {} of the report is not JSON ({e}): {line}\n{}",
                    number + 1,
                    self.context()
                )
            });
            if record.get("type").and_then(Value::as_str) == Some("crash") {
                self.crashes.push(record.clone());
            }
            self.records.push(record);
        }
    }

    /// crashtrace's exit code, `None` if a signal killed it.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The one crash report. Panics with [`Self::context`] unless there is
    /// exactly one.
    pub fn only_crash(&self) -> &Value {
        match &self.crashes[..] {
            [report] => report,
            _ => panic!(
                "expected exactly one crash report, got {}\n{}",
                self.crashes.len(),
                self.context()
            ),
        }
    }

    /// The rest of the first stdout line starting with `prefix`: the C
    /// programs print values as `key: value`.
    pub fn printed(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or_else(|| panic!("the program printed no {prefix:?} line\n{}", self.context()))
    }

    /// Everything useful for a failure message.
    pub fn context(&self) -> String {
        let records: Vec<String> = self.records.iter().map(Value::to_string).collect();
        format!(
            "command: {}\nstatus: {}\noutput file: {}{}\nstdout:\n{}stderr:\n{}records ({}):\n{}",
            self.command,
            self.status,
            self.output.display(),
            if self.output_missing {
                " (not created)"
            } else {
                ""
            },
            self.stdout,
            self.stderr,
            records.len(),
            records.join("\n")
        )
    }
}
