//! The programs for kernels without `bpf_find_vma`, `bpf_loop`,
//! `bpf_task_pt_regs` and `bpf_get_current_task_btf` (5.10 to 5.16), run
//! on a kernel that has them: `CRASHTRACE_KERNEL_FALLBACKS=1` makes
//! crashtrace choose them anyway, so every host proves they pass its
//! verifier and capture the crashing thread's registers. (The VM matrix
//! runs them on 5.10 for real, with full frames.)
//!
//! One test in this binary: it sets the variable for the whole process.

use crashtrace_tests::report::{check_shape, describe_frames, expect_frame, str_at};
use crashtrace_tests::{Harness, require_bpf};

#[test]
fn fallback_programs_load_and_capture_the_crashing_thread() {
    require_bpf!();
    // SAFETY: the only test of this binary; no other thread reads the
    // environment concurrently.
    unsafe { std::env::set_var("CRASHTRACE_KERNEL_FALLBACKS", "1") };
    let h = Harness::new(env!("CARGO_TARGET_TMPDIR"));
    let program = h.program("null_deref");
    let recording = h.record(&program, &[]);
    let context = recording.context();
    assert!(
        recording.stderr.contains("fallbacks for older kernels"),
        "the fallbacks are said at start\n{context}"
    );
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "null-pointer-dereference", "{context}");
    assert_eq!(str_at(report, "/signal/fault_address"), "0x0", "{context}");
    assert_eq!(report["exe"].as_str(), program.to_str(), "{context}");
    match report["unwind_error"].as_str() {
        // Kernels that keep VMAs in a list (before 6.1): full frames.
        None => {
            let (index, _) = expect_frame(report, "crash_null_deref");
            assert_eq!(index, 0, "{}", describe_frames(report));
        }
        // Maple-tree kernels (6.1 and later) have no list to walk: the
        // registers were captured (the walk starts at the faulting
        // instruction's address) but no mapping was.
        Some(why) => assert!(
            why.starts_with("no mapping captured for 0x"),
            "registers captured, mappings not: {why}\n{context}"
        ),
    }
}
