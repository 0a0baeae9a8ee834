//! Running `crashtrace record` on a crash so that the kernel also writes a
//! core dump of it, and reading back both the report and the core's path.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use serde_json::Value;

use super::core_file::{CorePattern, find_core, raise_core_limit};
use super::process::{absolute, wait_output};
use crate::record::{self, Recording};
use crate::{Harness, crashtrace_bin};

/// A `crashtrace record` run whose program left a core dump.
#[derive(Debug)]
pub struct CoreRecording {
    pub recording: Recording,
    /// The one crash report.
    pub report: Value,
    pub core: PathBuf,
    /// The program's (fresh) working directory.
    pub workdir: PathBuf,
}

/// A fresh, empty directory for one run.
fn fresh_workdir(harness: &Harness) -> PathBuf {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    let thread = std::thread::current();
    let test: String = thread
        .name()
        .unwrap_or("test")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let dir = absolute(
        &harness
            .root()
            .join("crashtrace-cores")
            .join(format!("{test}-{}-{n}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Runs `crashtrace record --json --output FILE [--debug-dir DIR] --
/// program args...` in a fresh working directory with RLIMIT_CORE raised
/// for crashtrace and so for the program, and finds the core file the
/// crash left.
pub fn record_with_core(
    harness: &Harness,
    program: &Path,
    args: &[&str],
    debug_dir: Option<&Path>,
) -> CoreRecording {
    let pattern = CorePattern::system();
    let workdir = fresh_workdir(harness);
    let output = record::output_path(&harness.root().join("crashtrace-reports"));

    let mut command = Command::new(crashtrace_bin());
    command.args(["record", "--json", "--output"]).arg(&output);
    if let Some(dir) = debug_dir {
        command.arg("--debug-dir").arg(dir);
    }
    command
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: raise_core_limit only makes async-signal-safe syscalls.
    unsafe {
        command.pre_exec(raise_core_limit);
    }
    let description = format!("{command:?}");
    let started = SystemTime::now();
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {description}: {e}"));
    let crashtrace_pid = child.id();
    let (status, stdout, stderr) = wait_output(child, record::timeout(), &description);

    let mut recording = Recording {
        status,
        crashes: Vec::new(),
        records: Vec::new(),
        stdout,
        stderr,
        output: output.clone(),
        output_missing: false,
        command: description,
        crashtrace_pid,
    };
    match std::fs::read_to_string(&output) {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let record: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!(
                        "report line is not JSON ({e}): {line}\n{}",
                        recording.context()
                    )
                });
                if record.get("type").and_then(Value::as_str) == Some("crash") {
                    recording.crashes.push(record.clone());
                }
                recording.records.push(record);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => recording.output_missing = true,
        Err(e) => panic!("reading {}: {e}", output.display()),
    }
    let report = recording.only_crash().clone();
    let pid = report
        .get("pid")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("the report has no pid\n{}", recording.context()));
    let core = find_core(&pattern, &workdir, pid, started).unwrap_or_else(|why| {
        panic!(
            "{why}\noutcome.core_dumped = {}\n{}",
            report
                .pointer("/outcome/core_dumped")
                .unwrap_or(&Value::Null),
            recording.context()
        )
    });
    CoreRecording {
        recording,
        report,
        core,
        workdir,
    }
}
