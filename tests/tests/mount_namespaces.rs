//! A crash in a private mount namespace: the program's file exists only in
//! that namespace (on a tmpfs the host never sees), and the crashed process
//! is gone when the report is built. crashtrace must still find and
//! symbolize the file, through a live process that shares the namespace.

use crashtrace_tests::report::{find_frame, frames};
use crashtrace_tests::{Harness, crash_line, require_bpf};

#[test]
fn crash_in_a_private_mount_namespace_is_symbolized() {
    require_bpf!();
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let program = harness.program("null_deref");
    // An empty directory on the host; inside the namespace a tmpfs covers it.
    let hidden = std::env::temp_dir().join(format!("crashtrace-ns-{}", std::process::id()));
    std::fs::create_dir_all(&hidden).expect("create the mount point");
    let inner = hidden.join("app/null_deref");
    let script = format!(
        "mount -t tmpfs none {dir} && mkdir {dir}/app && cp {program} {inner} && (sleep 5 &) && exec {inner}",
        dir = hidden.display(),
        program = program.display(),
        inner = inner.display(),
    );
    let recording = harness.record(
        std::path::Path::new("/usr/bin/unshare"),
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    let _ = std::fs::remove_dir(&hidden);
    assert!(
        !inner.exists(),
        "the program must not be visible on the host"
    );
    let report = recording.only_crash();
    assert_eq!(
        report["class"],
        "null-pointer-dereference",
        "{}",
        recording.context()
    );
    let (_, frame) = find_frame(report, "crash_null_deref")
        .unwrap_or_else(|| panic!("no crash_null_deref frame\n{}", recording.context()));
    assert_eq!(
        frame["module"],
        inner.display().to_string(),
        "{}",
        recording.context()
    );
    assert_eq!(
        frame["line"].as_u64(),
        Some(crash_line("null_deref.c")),
        "{}",
        recording.context()
    );
    assert!(
        frames(report).iter().any(|f| f["function"] == "main"),
        "frames reach main\n{}",
        recording.context()
    );
    assert_eq!(
        report["diagnostics"].as_array().map(Vec::len),
        Some(0),
        "{}",
        recording.context()
    );
}
