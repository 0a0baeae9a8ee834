//! A process that faults again while its signal handler runs (a crash
//! handler that crashes) is one death and one coherent report: the class
//! of the fault that killed it, and the code the first fault interrupted.

use crashtrace_tests::report::{check_shape, describe_frames, find_frame};
use crashtrace_tests::{Harness, crash_line, require_bpf};

#[test]
fn fault_inside_a_signal_handler() {
    require_bpf!();
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let recording = harness.record(&harness.program("fault_in_handler"), &[]);
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(128 + 11), "{context}");
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "null-pointer-dereference", "{context}");
    assert_eq!(report["signal"]["fault_address"], "0x0", "{context}");
    let (handler, frame) = find_frame(report, "on_segv")
        .unwrap_or_else(|| panic!("no handler frame: {}", describe_frames(report)));
    assert_eq!(
        frame["line"].as_u64(),
        Some(crash_line("fault_in_handler.c")),
        "{context}"
    );
    let (interrupted, _) = find_frame(report, "write_wild")
        .unwrap_or_else(|| panic!("no interrupted frame: {}", describe_frames(report)));
    assert!(handler < interrupted, "{}", describe_frames(report));
    assert!(find_frame(report, "main").is_some(), "{context}");
    assert!(
        report["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e.as_str().is_some_and(|s| s
                .contains("inside a signal handler")
                && s.contains("write_wild")))),
        "{context}"
    );
}
