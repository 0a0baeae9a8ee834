//! The memory figure of `cargo xtask bench`: how much resident memory a
//! long-running `crashtrace watch` holds after it has symbolized crashes in
//! [`BINARIES`] different binaries.
//!
//! `watch` is meant to run for weeks on a host, and every crash in a binary
//! it has not seen makes it parse that binary's symbols and DWARF and keep
//! them cached; what that costs in memory is measured here rather than
//! guessed. Each binary is a distinct small C program (its own function
//! names, so its own build-id and DWARF) that dies of a NULL dereference
//! three calls deep.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::tracer::{Tracer, TracerProcess};

/// Distinct crashing binaries.
pub const BINARIES: usize = 50;
/// How long the reports may take to arrive after the last crash.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Resident memory of the tracer, from `/proc/PID/status`, in KiB.
#[derive(Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub struct MemoryResult {
    /// Right after the tracer printed its ready line.
    pub start: Memory,
    /// Once every crash was reported (or the wait timed out).
    pub end: Memory,
    /// Crashes of the bench's processes reported.
    pub reports: usize,
    /// Reports whose frames name the crashing function of their binary.
    pub named: usize,
}

/// C source of crasher `i`: `main` calls `ct<i>_outer`, which calls
/// `ct<i>_middle`, which calls `ct<i>_inner`, which dereferences NULL.
fn crasher_source(i: usize) -> String {
    format!(
        r#"#include <stddef.h>
int *volatile ct{i:02}_target = NULL;
__attribute__((noinline)) int ct{i:02}_inner(int x) {{
    return *ct{i:02}_target + x;
}}
__attribute__((noinline)) int ct{i:02}_middle(int x) {{
    return ct{i:02}_inner(x + {i}) + 1;
}}
__attribute__((noinline)) int ct{i:02}_outer(int x) {{
    return ct{i:02}_middle(x * 2) + 2;
}}
int main(int argc, char **argv) {{
    (void)argv;
    return ct{i:02}_outer(argc);
}}
"#
    )
}

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn build_crashers(dir: &Path) -> Result<Vec<PathBuf>> {
    (0..BINARIES)
        .map(|i| {
            let source = dir.join(format!("crasher{i:02}.c"));
            fs::write(&source, crasher_source(i))
                .with_context(|| format!("cannot write {}", source.display()))?;
            let exe = dir.join(format!("crasher{i:02}"));
            let status = Command::new("cc")
                .args(["-g", "-O0", "-o"])
                .arg(&exe)
                .arg(&source)
                .status()
                .with_context(|| format!("cannot compile {}", source.display()))?;
            if !status.success() {
                bail!("compiling {} failed ({status})", source.display());
            }
            Ok(exe)
        })
        .collect()
}

/// VmRSS and VmHWM of process `pid`.
fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

pub fn run(out: &Path) -> Result<MemoryResult> {
    let dir =
        TempDir(std::env::temp_dir().join(format!("crashtrace-membench-{}", std::process::id())));
    let _ = fs::remove_dir_all(&dir.0);
    fs::create_dir_all(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
    eprintln!("bench: memory: building {BINARIES} crashing programs");
    let crashers = build_crashers(&dir.0)?;

    let reports = out.join("memory.jsonl");
    // crashtrace appends to its output file.
    match fs::remove_file(&reports) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", reports.display())),
    }
    let tracer = Tracer::crashtrace([
        OsString::from("watch"),
        "--json".into(),
        "--output".into(),
        reports.clone().into(),
    ]);
    let mut process = TracerProcess::start(&tracer)?;
    let start = memory(process.pid())?;

    eprintln!("bench: memory: running {BINARIES} crashing programs one after another");
    // pid -> the crashing function its report should name.
    let mut expected = Vec::with_capacity(BINARIES);
    for (i, exe) in crashers.iter().enumerate() {
        let mut child = Command::new(exe)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let status = child.wait().context("cannot wait for a crasher")?;
        if status.signal() != Some(libc::SIGSEGV) {
            bail!("{} ended with {status}, not SIGSEGV", exe.display());
        }
        expected.push((u64::from(child.id()), format!("ct{i:02}_inner")));
    }

    let deadline = Instant::now() + REPORT_TIMEOUT;
    let mut scan = Scan::default();
    loop {
        scan.update(&reports, &expected)?;
        if scan.reported.len() >= BINARIES || Instant::now() >= deadline {
            break;
        }
        process
            .ensure_running()
            .context("tracer died while reporting the crashes")?;
        thread::sleep(POLL_INTERVAL);
    }
    let end = memory(process.pid())?;
    process.stop();
    if scan.reported.len() < BINARIES {
        eprintln!(
            "bench: warning: only {}/{BINARIES} crashes reported within {REPORT_TIMEOUT:?}",
            scan.reported.len()
        );
    }
    Ok(MemoryResult {
        start,
        end,
        reports: scan.reported.len(),
        named: scan.named.len(),
    })
}

/// What the report file holds so far.
#[derive(Default)]
struct Scan {
    /// Bytes of the file already read: complete lines only.
    offset: u64,
    /// Crashers reported, and those whose report names their function.
    reported: BTreeSet<u64>,
    named: BTreeSet<u64>,
}

impl Scan {
    /// Reads the complete lines `path` gained since the last call; crash
    /// reports count when they are about one of `expected`'s pids.
    fn update(&mut self, path: &Path, expected: &[(u64, String)]) -> Result<()> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", path.display()))?;
        // The last line is being written until it ends in a newline.
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        self.offset += end as u64 + 1;
        for line in String::from_utf8_lossy(&bytes[..end]).lines() {
            if !line.contains(r#""type":"crash""#) {
                continue;
            }
            let record = serde_json::from_str::<Value>(line)
                .with_context(|| format!("bad JSON line in {}: {line}", path.display()))?;
            let Some(pid) = record.get("pid").and_then(Value::as_u64) else {
                continue;
            };
            let Some((_, function)) = expected.iter().find(|(p, _)| *p == pid) else {
                continue;
            };
            self.reported.insert(pid);
            let frames = record.get("frames").and_then(Value::as_array);
            if frames
                .into_iter()
                .flatten()
                .any(|f| f.get("function").and_then(Value::as_str) == Some(function.as_str()))
            {
                self.named.insert(pid);
            }
        }
        Ok(())
    }
}

pub fn print(result: &MemoryResult) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("\ncrashtrace watch memory, {BINARIES} crashes in {BINARIES} different binaries");
    let crashes = format!("after {BINARIES} crashes:");
    println!(
        "  {:<18}{}/{BINARIES} ({} name the crashing function)",
        "reports:", result.reports, result.named
    );
    for (label, memory) in [
        ("after start:", result.start),
        (crashes.as_str(), result.end),
    ] {
        println!(
            "  {label:<18}VmRSS {:6.1} MiB, VmHWM {:6.1} MiB",
            mib(memory.rss_kib),
            mib(memory.hwm_kib)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashers_differ_in_their_function_names() {
        let a = crasher_source(3);
        assert!(a.contains("ct03_inner") && a.contains("ct03_middle") && a.contains("ct03_outer"));
        assert_ne!(a, crasher_source(4));
    }
}
