//! Last words of native programs: what a C program wrote to stderr before
//! `abort()` becomes the report's `message` (and `last_words`), kept in the
//! kernel even when stderr went to /dev/null. These kernels lack fentry, so
//! the tests ask for the write system call's tracepoint
//! (`--last-words syscalls`); the default mode must say what it does here.

use std::process::{Command, Stdio};

use crashtrace_tests::record::Recording;
use crashtrace_tests::report::{check_shape, find_frame};
use crashtrace_tests::watch::Watch;
use crashtrace_tests::{Harness, crash_line, require_bpf};
use serde_json::Value;

const SAID: &str = "giving up: config missing";

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// `crashtrace record --last-words MODE -- PROGRAM ARGS`.
fn record(mode: &str, program: &str, args: &[&str]) -> Recording {
    let h = harness();
    h.record_with(&["--last-words", mode], &h.program(program), args)
}

fn last_words(report: &Value) -> &str {
    report["last_words"].as_str().unwrap_or_default()
}

/// The report of a bare `abort()` explained by the line before it.
fn check_explained(report: &Value, context: &str) {
    check_shape(report);
    assert_eq!(report["class"], "abort", "{context}");
    assert_eq!(report["message"], SAID, "{context}");
    assert!(
        report["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|f| f
                .as_str()
                .is_some_and(|f| f.contains("before abort()") && f.contains(SAID)))),
        "the evidence quotes the words\n{context}"
    );
    let (_, frame) =
        find_frame(report, "load_config").unwrap_or_else(|| panic!("no load_config\n{context}"));
    assert_eq!(
        frame["line"].as_u64(),
        Some(crash_line("giving_up.c")),
        "{context}"
    );
}

#[test]
fn words_written_before_abort_explain_it() {
    require_bpf!();
    let recording = record("syscalls", "giving_up", &["quiet"]);
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(128 + 6), "{context}");
    let report = recording.only_crash();
    check_explained(report, &context);
    assert_eq!(
        last_words(report),
        format!("loading /etc/app.conf\n{SAID}\n"),
        "{context}"
    );
    assert!(
        !recording.stderr.contains("no function hook"),
        "the requested hook is in place\n{context}"
    );
}

#[test]
fn only_the_latest_writes_are_kept_and_a_long_one_by_its_end() {
    require_bpf!();
    let recording = record("syscalls", "giving_up", &["chatty"]);
    let context = recording.context();
    let report = recording.only_crash();
    check_explained(report, &context);
    let words = last_words(report);
    // Eight slots of 128 bytes, small writes that follow each other
    // sharing one: the 64-byte lines two to a slot (the last six slots of
    // them: lines 19 to 30), the last 128 bytes of the 300-byte line, then
    // "loading ..." and the last line together.
    let lines: String = (19..=30)
        .map(|i| format!("line {i:02} {:<55}\n", "of start-up chatter"))
        .collect();
    let kept_of_long = format!("…{}\n", "x".repeat(127));
    assert_eq!(
        words,
        format!("{lines}{kept_of_long}loading /etc/app.conf\n{SAID}\n"),
        "{context}"
    );
}

#[test]
fn watch_keeps_native_last_words() {
    require_bpf!();
    let h = harness();
    let program = h.program("giving_up");
    let watch = Watch::start_with(
        h.root(),
        "last-words",
        &["giving_up"],
        &["--last-words", "syscalls"],
    );
    let mut child = Command::new(&program)
        .arg("quiet")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting giving_up");
    let pid = child.id();
    let _ = child.wait();
    let report = watch.wait_for_pid(pid);
    let context = format!("{report:#}");
    check_explained(&report, &context);
    assert!(
        last_words(&report).ends_with(&format!("{SAID}\n")),
        "{context}"
    );
}

#[test]
fn the_default_mode_keeps_them_or_says_how_to() {
    require_bpf!();
    let h = harness();
    let recording = h.record(&h.program("giving_up"), &["quiet"]);
    let context = recording.context();
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "abort", "{context}");
    if recording.stderr.contains("no function hook on write(2)") {
        // A kernel without fentry: said once, with the way out, and no
        // words pretended.
        assert!(
            recording.stderr.contains("--last-words syscalls"),
            "{context}"
        );
        assert!(report["message"].is_null(), "{context}");
        assert_eq!(last_words(report), "", "{context}");
    } else {
        check_explained(report, &context);
    }
}

#[test]
fn runtime_mode_hooks_no_write() {
    require_bpf!();
    let recording = record("runtime", "giving_up", &["quiet"]);
    let context = recording.context();
    let report = recording.only_crash();
    assert_eq!(report["class"], "abort", "{context}");
    assert!(report["message"].is_null(), "{context}");
    assert_eq!(last_words(report), "", "{context}");
    assert!(
        !recording.stderr.contains("write(2)"),
        "nothing to warn about in the mode asked for\n{context}"
    );
}

/// A C++ exception whose class overrides `what()`: the probe does not call
/// it, but libstdc++'s terminate handler printed it before `abort()`.
#[test]
fn the_terminate_handler_s_words_complete_an_exception() {
    require_bpf!();
    let recording = record("syscalls", "uncaught_exception", &["loud"]);
    let context = recording.context();
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "uncaught-exception", "{context}");
    assert_eq!(
        report["message"], "inventory::LoudError: LOUD: read nothing",
        "{context}"
    );
    assert!(
        report["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|f| f
                .as_str()
                .is_some_and(|f| f.contains("terminate handler printed what()")))),
        "{context}"
    );
}
