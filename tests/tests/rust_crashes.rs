//! Rust crashes: a panic that unwinds out of `main` (status 101), one with
//! `panic=abort` (SIGABRT), a panic something catches (no report), and a
//! stack overflow that the standard library's guard-page handler turns
//! into an abort (one report, `stack-overflow`).

use crashtrace_tests::report::{check_shape, describe_frames, find_frame};
use crashtrace_tests::rustprograms::{build_rust, rust_source};
use crashtrace_tests::{Harness, require_bpf};

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn crash_line() -> u64 {
    let text = std::fs::read_to_string(rust_source("panicky")).expect("reading panicky.rs");
    text.lines()
        .position(|l| l.contains("// CRASH-LINE"))
        .expect("a CRASH-LINE marker") as u64
        + 1
}

fn check_panic(panic_abort: bool) {
    require_bpf!();
    let program = build_rust(harness().root(), "panicky", panic_abort);
    let recording = harness().record(&program, &["panic"]);
    let context = recording.context();
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "rust-panic", "{context}");
    assert_eq!(report["runtime"], "rust", "{context}");
    if panic_abort {
        assert_eq!(recording.exit_code(), Some(128 + 6), "{context}");
        assert_eq!(report["outcome"]["signal"], 6, "{context}");
    } else {
        assert_eq!(recording.exit_code(), Some(101), "{context}");
        assert_eq!(report["outcome"]["exit_code"], 101, "{context}");
    }
    // The location (with its column) and the panic's own text, as the
    // panic hook printed them to stderr, kept by the kernel.
    let location = format!("panicky.rs:{}:", crash_line());
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("panicked at ")
            && message.contains(&location)
            && message.ends_with(": config missing: /etc/panicky.toml"),
        "message {message:?} names the panic's location {location} and its text\n{context}"
    );
    assert!(
        report["last_words"]
            .as_str()
            .is_some_and(|w| w.contains("panicked at") && w.contains("config missing")),
        "{context}"
    );
    let (_, frame) = find_frame(report, "panicky::load_config")
        .unwrap_or_else(|| panic!("no load_config frame: {}", describe_frames(report)));
    assert_eq!(frame["line"].as_u64(), Some(crash_line()), "{context}");
    assert!(
        report["summary"]
            .as_str()
            .is_some_and(|s| s.contains("panicky::load_config")),
        "{context}"
    );
}

#[test]
fn panic_unwinding_out_of_main() {
    check_panic(false);
}

#[test]
fn panic_with_panic_abort() {
    check_panic(true);
}

#[test]
fn caught_panic_is_not_a_crash() {
    require_bpf!();
    let program = build_rust(harness().root(), "panicky", false);
    let recording = harness().record(&program, &["caught"]);
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(0), "{context}");
    assert!(recording.stdout.contains("caught true"), "{context}");
    assert!(recording.crashes.is_empty(), "{context}");
}

#[test]
fn stack_overflow_is_one_report() {
    require_bpf!();
    let program = build_rust(harness().root(), "panicky", false);
    let recording = harness().record(&program, &["overflow"]);
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(128 + 6), "{context}");
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "stack-overflow", "{context}");
    assert_eq!(report["runtime"], "rust", "{context}");
    assert!(
        report["summary"]
            .as_str()
            .is_some_and(|s| s.contains("panicky::descend")),
        "the summary points at the recursing function\n{context}"
    );
}
