//! Running `crashtrace watch` for a test: started with a comm or pid filter
//! and JSON output to a file, ready once it says it is watching, stopped
//! with SIGINT like a user's Ctrl-C.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{crashtrace_bin, record::timeout};

pub struct Watch {
    child: Option<Child>,
    output: PathBuf,
    stderr: String,
    /// Everything watch wrote to stderr after it started.
    later: Arc<Mutex<String>>,
}

impl Watch {
    /// Starts `crashtrace watch --json --comm COMM --output <root>/NAME`
    /// and waits until its probes are attached.
    pub fn start(root: &Path, name: &str, comms: &[&str]) -> Self {
        Self::start_with(root, name, comms, &[])
    }

    /// [`Watch::start`] with more of crashtrace's options.
    pub fn start_with(root: &Path, name: &str, comms: &[&str], options: &[&str]) -> Self {
        let output = root.join(format!("watch-{name}.jsonl"));
        let _ = std::fs::remove_file(&output);
        let mut command = Command::new(crashtrace_bin());
        command.args(["watch", "--json", "--output"]).arg(&output);
        command.args(options);
        for comm in comms {
            command.args(["--comm", comm]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting crashtrace watch: {e}"));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let mut stderr = String::new();
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + timeout();
        while !stderr.contains("crashtrace: watching") && Instant::now() < deadline {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => stderr.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        assert!(
            stderr.contains("crashtrace: watching"),
            "crashtrace watch did not start:\n{stderr}"
        );
        // Keep draining stderr so that watch never blocks on it, and keep
        // what it says (bounded) for `wait_for_stderr`.
        let later = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&later);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let Ok(mut text) = sink.lock() else { break };
                if text.len() < 1 << 20 {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Self {
            child: Some(child),
            output,
            stderr,
            later,
        }
    }

    /// Waits until watch has written `text` to stderr since it started (a
    /// probe attached, say); panics with its stderr after the timeout.
    pub fn wait_for_stderr(&self, text: &str) {
        let deadline = Instant::now() + timeout();
        while Instant::now() < deadline {
            if self.later.lock().unwrap().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let said = self.later.lock().map(|s| s.clone()).unwrap_or_default();
        panic!(
            "crashtrace watch never said {text:?}; after start it said:\n{said}\n{}",
            self.context()
        );
    }

    /// The output file and the start of watch's stderr, for failure
    /// messages.
    pub fn context(&self) -> String {
        format!(
            "crashtrace watch wrote {}; its stderr began:\n{}",
            self.output.display(),
            self.stderr
        )
    }

    /// The crash reports written so far.
    pub fn crashes(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "crash")
            .collect()
    }

    /// Waits until a crash report of process `pid` is written.
    pub fn wait_for_pid(&self, pid: u32) -> Value {
        let deadline = Instant::now() + timeout();
        while Instant::now() < deadline {
            if let Some(r) = self
                .crashes()
                .into_iter()
                .find(|r| r["pid"].as_u64() == Some(u64::from(pid)))
            {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no report for pid {pid} from crashtrace watch; its stderr began:\n{}",
            self.stderr
        );
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}
