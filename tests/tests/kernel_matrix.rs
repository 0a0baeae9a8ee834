//! What each kernel line must give, asserted per line. These run on the
//! host and inside every VM of `cargo xtask vm-test` (`tests/vm/tests.txt`),
//! so a kernel that cannot do something shows as an explicit expectation
//! here, never as a test that was quietly left out.
//!
//! - `crashtrace doctor` names where dying threads are captured: at
//!   `sched_process_exit` from Linux 6.16 (it runs before `exit_mm()`
//!   there), at `do_exit` (fentry) before that, and with the fallbacks for
//!   older kernels where `bpf_find_vma` and `bpf_loop` are missing (5.10 to
//!   5.16), where the uprobes (libc's abort message, Go and Rust) are not
//!   available and say so.
//! - A NULL dereference is reported with its symbolized frames under
//!   `record` (`native_crashes`) and under `watch` (here).

use std::process::{Command, Stdio};

use crashtrace_tests::report::{check_shape, describe_frames, expect_frame, str_at};
use crashtrace_tests::watch::Watch;
use crashtrace_tests::{Harness, crash_line, crashtrace_bin, require_bpf};
use serde_json::Value;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The running kernel's (major, minor).
fn release() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let mut parts = text.trim().split(['.', '-']);
    let mut number = || -> u32 {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected kernel release {text:?}"))
    };
    (number(), number())
}

fn doctor() -> Value {
    let out = Command::new(crashtrace_bin())
        .args(["doctor", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("running crashtrace doctor");
    assert!(
        out.status.success(),
        "crashtrace doctor failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let d = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "crashtrace doctor --json printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    // The VM matrix keeps it for its "Tested kernels" table.
    if let Some(path) = std::env::var_os("CRASHTRACE_DOCTOR_OUT") {
        std::fs::write(&path, &out.stdout)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.to_string_lossy()));
    }
    d
}

fn degraded_mentions(d: &Value, words: &str) -> bool {
    d["degraded"].as_array().is_some_and(|lines| {
        lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains(words)))
    })
}

#[test]
fn doctor_names_this_kernels_capture_path() {
    require_bpf!();
    let d = doctor();
    let context = format!("{d:#}");
    let version = release();
    assert_eq!(d["schema"], 1, "{context}");
    // Every line of the matrix has the OOM killer's tracepoint (with the
    // task from 6.x, the pid before).
    assert_eq!(d["oom_record"], true, "{context}");
    if version >= (6, 16) {
        assert_eq!(d["capture"], "sched_process_exit", "{context}");
        assert_eq!(d["fallbacks"], false, "{context}");
    } else if version >= (5, 17) {
        // Stock distribution kernels have ftrace, hence fentry.
        assert_eq!(d["capture"], "do_exit", "{context}");
        assert_eq!(d["fallbacks"], false, "{context}");
    } else {
        assert_eq!(d["fallbacks"], true, "{context}");
        let missing = d["missing_helpers"].to_string();
        assert!(
            missing.contains("bpf_find_vma") && missing.contains("bpf_loop"),
            "{context}"
        );
        // The capture programs for older kernels capture at do_exit.
        assert_eq!(d["capture"], "do_exit", "{context}");
        // The uprobes tell their sites apart by attach cookie (5.15) and
        // capture with bpf_loop: without them, said, with what is lost.
        assert!(
            degraded_mentions(&d, "the libc abort() probe needs")
                && degraded_mentions(&d, "Go panics and fatal errors")
                && degraded_mentions(&d, "are not reported"),
            "{context}"
        );
    }
    match d["last_words"].as_str() {
        Some("fentry") => {}
        // A kernel built without ftrace (this project's own host): said,
        // with the way out.
        Some("none") => assert!(
            degraded_mentions(&d, "no function hook on write(2)"),
            "{context}"
        ),
        other => panic!("unexpected last_words {other:?}\n{context}"),
    }
    if version < (6, 16) {
        assert_eq!(d["last_words"], "fentry", "{context}");
    }
}

#[test]
fn null_dereference_under_watch() {
    require_bpf!();
    let h = harness();
    let program = h.program("null_deref");
    let watch = Watch::start(h.root(), "kernel-matrix-null", &["null_deref"]);
    let mut child = Command::new(&program)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting null_deref");
    let pid = child.id();
    let _ = child.wait();
    let report = watch.wait_for_pid(pid);
    let context = format!("{}\n{report:#}", watch.context());
    check_shape(&report);
    assert_eq!(report["class"], "null-pointer-dereference", "{context}");
    assert_eq!(str_at(&report, "/signal/fault_address"), "0x0", "{context}");
    assert_eq!(
        report["exe"].as_str(),
        program.to_str(),
        "the executable is captured while the process exists\n{context}"
    );
    let (index, frame) = expect_frame(&report, "crash_null_deref");
    assert_eq!(index, 0, "{}", describe_frames(&report));
    assert_eq!(
        frame["line"].as_u64(),
        Some(crash_line("null_deref.c")),
        "{context}"
    );
    for caller in ["store_answer", "main"] {
        expect_frame(&report, caller);
    }
}
