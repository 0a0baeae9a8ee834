//! Crashes that libc catches and turns into `abort()`: the report names
//! the cause from libc's own evidence (the function called on the fatal
//! path, the message glibc left in `__abort_msg`), not just "SIGABRT".

use crashtrace_tests::report::{check_shape, find_frame};
use crashtrace_tests::{Harness, crash_line, require_bpf};

struct Case {
    program: &'static str,
    class: &'static str,
    /// Text the report's `message` must contain.
    message: &'static str,
    /// The user function the report must show, with its CRASH-LINE.
    function: &'static str,
    check_line: bool,
}

fn check(case: &Case) {
    require_bpf!();
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let recording = harness.record(&harness.program(case.program), &[]);
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(128 + 6), "{context}");
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], case.class, "{context}");
    assert_eq!(report["signal"]["name"], "SIGABRT", "{context}");
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(case.message),
        "message {message:?} lacks {:?}\n{context}",
        case.message
    );
    assert!(
        report["evidence"].as_array().is_some_and(|e| !e.is_empty()),
        "{context}"
    );
    let (_, frame) = find_frame(report, case.function)
        .unwrap_or_else(|| panic!("no {} frame\n{context}", case.function));
    if case.check_line {
        let source = if case.program == "uncaught_exception" {
            format!("{}.cpp", case.program)
        } else {
            format!("{}.c", case.program)
        };
        assert_eq!(
            frame["line"].as_u64(),
            Some(crash_line(&source)),
            "{context}"
        );
    }
    assert!(
        report["summary"]
            .as_str()
            .is_some_and(|s| s.contains(case.function)),
        "the summary points at the user's function\n{context}"
    );
}

#[test]
fn failed_assertion() {
    check(&Case {
        program: "assert_fail",
        class: "assertion-failure",
        message: "Assertion `loaded > 0 && \"config loaded\"' failed",
        function: "check_config",
        check_line: true,
    });
}

#[test]
fn double_free() {
    check(&Case {
        program: "double_free",
        class: "double-free",
        message: "double free detected",
        function: "release",
        check_line: true,
    });
}

#[test]
fn heap_corruption() {
    check(&Case {
        program: "heap_corruption",
        class: "heap-corruption",
        message: "malloc(): corrupted top size",
        function: "allocate_more",
        check_line: true,
    });
}

#[test]
fn stack_smashing() {
    check(&Case {
        program: "stack_smash",
        class: "stack-smashing",
        message: "stack smashing detected",
        function: "copy_name",
        check_line: false,
    });
}

#[test]
fn fortified_buffer_overflow() {
    check(&Case {
        program: "fortify_overflow",
        class: "buffer-overflow",
        message: "buffer overflow detected",
        function: "fill",
        check_line: true,
    });
}

#[test]
fn uncaught_standard_exception() {
    check(&Case {
        program: "uncaught_exception",
        class: "uncaught-exception",
        message: "std::runtime_error: config missing: /etc/inventory.toml",
        function: "inventory::load_config(char const*)",
        check_line: true,
    });
}

/// A type of the program's own: its name, but no guess at `what()`.
#[test]
fn uncaught_exception_of_own_type() {
    require_bpf!();
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let recording = harness.record(&harness.program("uncaught_exception"), &["own"]);
    let context = recording.context();
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "uncaught-exception", "{context}");
    assert_eq!(report["message"], "inventory::StockError", "{context}");
    assert!(
        find_frame(report, "inventory::reserve(int)").is_some(),
        "{context}"
    );
}

/// Runs `uncaught_exception` with `mode` and checks the class, the message
/// and that the thrower is in the frames; returns the evidence lines.
fn uncaught(mode: &str, message: &str, thrower: &str) -> Option<Vec<String>> {
    require_bpf!(None);
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let recording = harness.record(&harness.program("uncaught_exception"), &[mode]);
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(128 + 6), "{context}");
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "uncaught-exception", "{context}");
    assert_eq!(report["message"], message, "{context}");
    assert!(find_frame(report, thrower).is_some(), "{context}");
    assert!(
        report["summary"]
            .as_str()
            .is_some_and(|s| s.contains(thrower)),
        "the summary points at the thrower\n{context}"
    );
    let evidence = report["evidence"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|l| l.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(evidence)
}

/// A class of the program's own derived from `std::runtime_error` that
/// keeps its `what()`: the message is read, because the function in the
/// `what()` slot of its vtable is the standard one.
#[test]
fn uncaught_runtime_error_subclass() {
    let Some(evidence) = uncaught(
        "config",
        "inventory::ConfigError: bad setting in /etc/inventory.toml",
        "inventory::parse_settings(char const*)",
    ) else {
        return;
    };
    assert!(
        evidence.iter().any(
            |l| l.starts_with("what() of inventory::ConfigError is std::")
                && l.contains("::what() const")
                && l.ends_with("which returns the message stored in the exception")
        ),
        "{evidence:#?}"
    );
}

/// A class that overrides `what()`: the text after its vtable pointer is
/// not its `what()`, so only the type is reported, with the reason.
#[test]
fn uncaught_exception_overriding_what() {
    let Some(evidence) = uncaught(
        "loud",
        "inventory::LoudError",
        "inventory::shout(char const*)",
    ) else {
        return;
    };
    assert!(
        evidence.iter().any(|l| l
            == "inventory::LoudError overrides what() (inventory::LoudError::what() const); its text is not read"),
        "{evidence:#?}"
    );
    assert!(
        !evidence.iter().any(|l| l.contains("quiet text")),
        "{evidence:#?}"
    );
}

/// A `std::exception` subclass keeping `std::exception::what`: its first
/// field is a path, not a message, and is not reported.
#[test]
fn uncaught_exception_with_exceptions_own_what() {
    let Some(evidence) = uncaught(
        "plain",
        "inventory::PlainError",
        "inventory::complain(char const*)",
    ) else {
        return;
    };
    assert!(
        evidence
            .iter()
            .any(|l| l.contains("is std::exception::what() const")),
        "{evidence:#?}"
    );
    assert!(
        !evidence.iter().any(|l| l.contains("/etc/inventory.toml")),
        "{evidence:#?}"
    );
}

/// A libc of a container image is a different file from the host's: a
/// program chrooted into a root with its own copy of libc (a new inode),
/// started after crashtrace, still gets glibc's abort message, because
/// the libc it sees is probed when its executable starts.
#[test]
fn a_libc_in_another_root_is_probed() {
    require_bpf!();
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let program = harness.program("double_free");
    let root = harness.root().join("libc-root");
    let _ = std::fs::remove_dir_all(&root);
    let copy = |from: &str, to: &str| {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // A copy, not a link: a new inode, as in a container image.
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {from}: {e}"));
    };
    copy(
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
    );
    copy("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2");
    copy(program.to_str().unwrap(), "double_free");
    // Its executable is reported as it starts; 300 ms later it frees twice.
    let recording = harness.record(
        std::path::Path::new("/usr/sbin/chroot"),
        &[root.to_str().unwrap(), "/double_free", "300"],
    );
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(128 + 6), "{context}");
    let report = recording.only_crash();
    assert_eq!(report["class"], "double-free", "{context}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("double free detected")),
        "{context}"
    );
    assert!(
        !recording.stderr.contains("lose their evidence"),
        "{context}"
    );
}
