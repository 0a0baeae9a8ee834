//! Running `crashtrace watch` for a test: started with a comm or pid filter
//! and JSON output to a file, ready once it says it is watching, stopped
//! with SIGINT like a user's Ctrl-C.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{crashtrace_bin, record::timeout};

pub struct Watch {
    child: Option<Child>,
    output: PathBuf,
    stderr: String,
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
        // Keep draining stderr so that watch never blocks on it.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        });
        Self {
            child: Some(child),
            output,
            stderr,
        }
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
