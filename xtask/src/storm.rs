//! The crash storm of `cargo xtask bench`: [`CRASHES`] processes die of
//! SIGSEGV within about a second while `crashtrace watch --json` runs; how
//! many reports arrive, what was lost, and how long after the storm the last
//! report appears.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    fs,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    bpfstats::json,
    tracer::{Tracer, TracerProcess},
};

/// Processes that crash in the storm.
pub const CRASHES: usize = 200;
/// How long after the storm reports may take to arrive.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// The crashing program, `xtask/bench/<CRASHER>.c`.
const CRASHER: &str = "storm_crash";

pub struct StormResult {
    /// Reports of the storm's processes that arrived in time.
    pub received: usize,
    /// From the first spawn to the last child reaped.
    pub storm: Duration,
    /// From the last child reaped to the [`CRASHES`]th report; `None` if it
    /// never came.
    pub latency: Option<Duration>,
    /// `"type":"loss"` records seen.
    pub loss_records: usize,
    /// The totals of the last loss record, by cause.
    pub lost: BTreeMap<String, u64>,
}

impl StormResult {
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }
}

pub fn run(out: &Path) -> Result<StormResult> {
    crate::bench::compile_c(CRASHER, out)?;
    let reports = out.join("storm.jsonl");
    // crashtrace appends to its output file.
    match fs::remove_file(&reports) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", reports.display())),
    }
    let tracer = Tracer::crashtrace([
        OsString::from("watch"),
        "--json".into(),
        "--output".into(),
        reports.clone().into(),
    ]);
    let mut process = TracerProcess::start(&tracer)?;

    let crasher = out.join(CRASHER);
    let start = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(CRASHES);
    for _ in 0..CRASHES {
        let child = Command::new(&crasher)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", crasher.display()))?;
        children.push(child);
    }
    let pids: BTreeSet<u64> = children.iter().map(|c| u64::from(c.id())).collect();
    for mut child in children {
        let status = child.wait().context("cannot wait for a storm process")?;
        if status.signal() != Some(libc::SIGSEGV) {
            bail!(
                "storm process {} ended with {status}, not SIGSEGV",
                child.id()
            );
        }
    }
    let storm_end = Instant::now();
    let storm = storm_end - start;

    let deadline = storm_end + REPORT_TIMEOUT;
    let (scan, latency) = loop {
        let scan = Scan::read(&reports, &pids)?;
        if scan.received.len() >= CRASHES {
            break (
                scan,
                Some(Instant::now().saturating_duration_since(storm_end)),
            );
        }
        if Instant::now() >= deadline {
            break (scan, None);
        }
        process
            .ensure_running()
            .context("tracer died during the crash storm")?;
        thread::sleep(POLL_INTERVAL);
    };
    process.stop();
    // A loss record may come as the tracer shuts down.
    let last = Scan::read(&reports, &pids)?;
    Ok(StormResult {
        received: scan.received.len(),
        storm,
        latency,
        loss_records: last.loss_records,
        lost: last.lost,
    })
}

/// What the report file holds so far.
#[derive(Default)]
struct Scan {
    /// Storm processes reported.
    received: BTreeSet<u64>,
    loss_records: usize,
    lost: BTreeMap<String, u64>,
}

impl Scan {
    /// Reads the complete lines of `path`; crash reports count when they are
    /// about one of `pids` (other processes on the host may crash too).
    fn read(path: &Path, pids: &BTreeSet<u64>) -> Result<Self> {
        let mut scan = Scan::default();
        let text = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let text = String::from_utf8_lossy(&text);
        // The last line is being written until it ends in a newline.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in complete.lines() {
            let is_crash = line.contains(r#""type":"crash""#);
            let is_loss = line.contains(r#""type":"loss""#);
            if !is_crash && !is_loss {
                continue;
            }
            let record = json::parse(line)
                .with_context(|| format!("bad JSON line in {}: {line}", path.display()))?;
            match record.get("type").and_then(json::Value::as_str) {
                Some("crash") => {
                    if let Some(pid) = record.get("pid").and_then(json::Value::as_u64)
                        && pids.contains(&pid)
                    {
                        scan.received.insert(pid);
                    }
                }
                Some("loss") => {
                    scan.loss_records += 1;
                    let counts = record.get("counts").and_then(json::Value::as_object);
                    scan.lost = counts
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|(cause, n)| Some((cause.clone(), n.as_u64()?)))
                        .collect();
                }
                _ => {}
            }
        }
        Ok(scan)
    }
}
