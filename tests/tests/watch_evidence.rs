//! `watch` reports with the same evidence as `record`: libc's abort
//! message, an uncaught C++ exception, a Rust panic (whose executable is
//! probed as it starts).

use std::process::{Command, Stdio};

use crashtrace_tests::report::{check_shape, find_frame};
use crashtrace_tests::rustprograms::build_rust;
use crashtrace_tests::watch::Watch;
use crashtrace_tests::{Harness, require_bpf};

fn run(program: &std::path::Path, args: &[&str]) -> u32 {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let pid = child.id();
    let _ = child.wait();
    pid
}

#[test]
fn watch_reports_libc_cxx_and_rust_evidence() {
    require_bpf!();
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let double_free = harness.program("double_free");
    let uncaught = harness.program("uncaught_exception");
    let panicky = build_rust(harness.root(), "panicky", false);
    let watch = Watch::start(
        harness.root(),
        "evidence",
        &["double_free", "uncaught_except", "panicky"],
    );

    let report = watch.wait_for_pid(run(&double_free, &[]));
    check_shape(&report);
    assert_eq!(report["class"], "double-free", "{report:#}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("double free")),
        "{report:#}"
    );

    let report = watch.wait_for_pid(run(&uncaught, &[]));
    assert_eq!(report["class"], "uncaught-exception", "{report:#}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("std::runtime_error: config missing")),
        "{report:#}"
    );

    // The delay lets watch probe the new executable before it panics.
    let report = watch.wait_for_pid(run(&panicky, &["panic", "300"]));
    assert_eq!(report["class"], "rust-panic", "{report:#}");
    assert_eq!(report["outcome"]["exit_code"], 101, "{report:#}");
    assert!(
        find_frame(&report, "panicky::load_config").is_some(),
        "{report:#}"
    );
}
