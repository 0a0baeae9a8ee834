//! The crash storm of `cargo xtask bench`: [`CRASHES`] processes die of
//! SIGSEGV within about a second while `crashtrace watch --json` runs; how
//! many reports arrive, what was lost, and how long after the storm the last
//! report appears.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::tracer::{Tracer, TracerProcess};

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
    let mut scan = Scan::default();
    let latency = loop {
        scan.update(&reports, &pids)?;
        if scan.received.len() >= CRASHES {
            break Some(Instant::now().saturating_duration_since(storm_end));
        }
        if Instant::now() >= deadline {
            break None;
        }
        process
            .ensure_running()
            .context("tracer died during the crash storm")?;
        thread::sleep(POLL_INTERVAL);
    };
    let received = scan.received.len();
    process.stop();
    // A loss record may come as the tracer shuts down.
    scan.update(&reports, &pids)?;
    Ok(StormResult {
        received,
        storm,
        latency,
        loss_records: scan.loss_records,
        lost: scan.lost,
    })
}

/// What the report file holds so far.
#[derive(Default)]
struct Scan {
    /// Bytes of the file already read: complete lines only.
    offset: u64,
    /// Storm processes reported.
    received: BTreeSet<u64>,
    loss_records: usize,
    lost: BTreeMap<String, u64>,
}

impl Scan {
    /// Reads the complete lines that `path` gained since the last call.
    /// Crash reports count when they are about one of `pids` (other
    /// processes on the host may crash too).
    fn update(&mut self, path: &Path, pids: &BTreeSet<u64>) -> Result<()> {
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
        let text = String::from_utf8_lossy(&bytes[..end]);
        for line in text.lines() {
            let is_crash = line.contains(r#""type":"crash""#);
            let is_loss = line.contains(r#""type":"loss""#);
            if !is_crash && !is_loss {
                continue;
            }
            let record = serde_json::from_str::<Value>(line)
                .with_context(|| format!("bad JSON line in {}: {line}", path.display()))?;
            match record.get("type").and_then(Value::as_str) {
                Some("crash") => {
                    if let Some(pid) = record.get("pid").and_then(Value::as_u64)
                        && pids.contains(&pid)
                    {
                        self.received.insert(pid);
                    }
                }
                Some("loss") => {
                    self.loss_records += 1;
                    let counts = record.get("counts").and_then(Value::as_object);
                    self.lost = counts
                        .into_iter()
                        .flatten()
                        .filter_map(|(cause, n)| Some((cause.clone(), n.as_u64()?)))
                        .collect();
                }
                _ => {}
            }
        }
        Ok(())
    }
}
