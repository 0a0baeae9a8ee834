//! Per-process signal activity: counted in the kernel, shown as a rate by
//! `watch --signals` and in a crash report, against a program whose SIGPROF
//! rate is known (a 100 Hz `setitimer(ITIMER_PROF)`, as CPU profilers use).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crashtrace_tests::report::{at, check_shape, str_at};
use crashtrace_tests::{Harness, crashtrace_bin, require_bpf};
use serde_json::Value;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The number the program printed after `prefix`.
fn printed(stdout: &str, prefix: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout:?}"))
}

#[test]
fn watch_signals_prints_a_profilers_rate() {
    require_bpf!();
    let harness = harness();
    let program = harness.program("profiled");
    let out = harness.root().join("signal-activity.jsonl");
    let _ = std::fs::remove_file(&out);
    let mut watch = Command::new(crashtrace_bin())
        .args(["watch", "--signals", "SIGPROF,SIGURG", "--json", "--output"])
        .arg(&out)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("starting crashtrace watch");
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !line.contains("counting") {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            let _ = watch.kill();
            panic!("crashtrace watch did not start: {line:?}");
        }
    }

    // Two CPU seconds at 100 Hz: about 200 SIGPROFs, at most ~100 a second.
    let run = Command::new(&program)
        .arg("2")
        .output()
        .expect("running profiled");
    assert!(run.status.success(), "{run:?}");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let pid = printed(&stdout, "pid:");
    let handled = printed(&stdout, "sigprof:");
    // Let the last second complete and be printed.
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: plain kill(2) on the child we started.
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    let status = watch.wait().expect("waiting for crashtrace watch");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let context = format!("status {status}\nprogram: {stdout}\nstderr: {rest}\noutput:\n{text}");
    assert!(status.success(), "{context}");

    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert!(
        rows.iter()
            .all(|r| r["type"] == "signal-activity" && r["schema"] == 1),
        "{context}"
    );
    let mine: Vec<&Value> = rows.iter().filter(|r| r["pid"] == pid).collect();
    assert!(!mine.is_empty(), "no row for pid {pid}\n{context}");
    let rates: Vec<u64> = mine
        .iter()
        .map(|r| r["rates"]["SIGPROF"].as_u64().unwrap_or(0))
        .collect();
    assert!(mine.iter().all(|r| r["comm"] == "profiled"), "{context}");
    assert!(
        mine.iter().all(|r| r["rates"].get("SIGURG").is_none()),
        "{context}"
    );
    // A 10 ms timer on one thread: never much above 100 a second.
    assert!(rates.iter().all(|&r| r <= 105), "{rates:?}\n{context}");
    // Every second of the run was shown: the rates add up to the signals
    // the kernel generated, which the handler counted (two SIGPROFs can
    // merge while one is pending, so the handler may count a few fewer).
    let total: u64 = rates.iter().sum();
    assert!(
        total >= handled && total <= handled + handled / 10 + 2,
        "rates {rates:?} (total {total}) vs {handled} handled\n{context}"
    );
    // Two CPU seconds at 100 Hz; a loaded host merges some expiries.
    assert!(handled >= 100, "{context}");
}

#[test]
fn crash_report_shows_profiling_activity() {
    require_bpf!();
    let harness = harness();
    // Half a CPU second: well inside the 8-second window even on a busy host.
    let recording = harness.record(&harness.program("profiled"), &["0.5", "crash"]);
    let report = recording.only_crash();
    let context = || format!("{report:#}\n{}", recording.context());
    check_shape(report);
    assert_eq!(
        str_at(report, "/class"),
        "null-pointer-dereference",
        "{}",
        context()
    );
    let handled = printed(&recording.stdout, "sigprof:");
    let activity = at(report, "/signal_activity");
    let prof = activity["signals"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["signal"] == "SIGPROF"))
        .unwrap_or_else(|| panic!("no SIGPROF activity\n{}", context()));
    let total = prof["total"].as_u64().unwrap();
    assert!(
        total >= handled && total <= handled + handled / 10 + 2,
        "{total} vs {handled}\n{}",
        context()
    );
    assert_eq!(prof["per_second"].as_array().map(Vec::len), Some(8));
    assert!(prof["peak_per_second"].as_u64().unwrap() <= 105);
    assert!(handled >= 20, "{}", context());
    let notes = activity["notes"].to_string();
    assert!(notes.contains("CPU profiling was active"), "{}", context());
}
