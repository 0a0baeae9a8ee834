//! CPython crashing in native code: ctypes reading address 0. The class
//! comes from the fault, and the frames run from libc through ctypes and
//! libffi into the interpreter, down to its `main`.

use crashtrace_tests::report::{check_shape, describe_frames, find_frame};
use crashtrace_tests::{Harness, require_bpf};

/// Debian's interpreter (package python3), which setup installs.
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn ctypes_reading_null() {
    require_bpf!();
    let harness = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let recording = harness.record(
        std::path::Path::new(PYTHON),
        &["-c", "import ctypes; ctypes.string_at(0)"],
    );
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(128 + 11), "{context}");
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "null-pointer-dereference", "{context}");
    assert_eq!(report["signal"]["fault_address"], "0x0", "{context}");
    for function in ["ffi_call", "_PyEval_EvalFrameDefault", "Py_BytesMain"] {
        assert!(
            find_frame(report, function).is_some(),
            "no {function} frame: {}",
            describe_frames(report)
        );
    }
}
