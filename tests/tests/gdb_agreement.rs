//! crashtrace against gdb: each test records one crash program with
//! `crashtrace record`, lets the same crash leave a core dump (RLIMIT_CORE
//! raised for the program only, in a fresh working directory), and asserts
//! that crashtrace's frames name the same functions as gdb's `bt` of that
//! core, from the crashing frame down to `main` (or `start_thread` for a
//! crash in a second thread), and that crashtrace's frames get there fully
//! symbolized. A signal frame (gdb's `<signal handler called>`) compares
//! as the sigreturn trampoline crashtrace names. On a mismatch the failure shows both lists side by side.
//!
//! These tests load BPF, so they need root; see
//! `crashtrace_tests::require_bpf`. They also need gdb (`$GDB`, else
//! `/usr/bin/gdb`), libc's debug info, binutils, and a core pattern that
//! names a file (`/proc/sys/kernel/core_pattern`, which they never change).

use std::path::Path;

use crashtrace_tests::gdb::{self, MAIN, THREAD_START};
use crashtrace_tests::{Harness, require_bpf};

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// A program from `tests/programs/` built by the common recipes.
fn check_common(name: &str, arg_artifact: Option<&str>, stop: &str) {
    let harness = harness();
    let program = harness.program(name);
    let arg = arg_artifact.map(|a| harness.program(a));
    let args: Vec<&str> = arg
        .iter()
        .map(|p| p.to_str().expect("UTF-8 path"))
        .collect();
    gdb::check_agreement(&harness, &program, &args, None, stop);
}

/// A program built for these tests only, with its own flags.
fn check_special(name: &str, stop: &str) {
    let harness = harness();
    let built = gdb::build(harness.root(), name);
    gdb::check_agreement(
        &harness,
        &built.path,
        &[],
        built.debug_dir.as_deref().map(Path::new),
        stop,
    );
}

#[test]
fn null_deref_matches_gdb() {
    require_bpf!();
    check_common("null_deref", None, MAIN);
}

#[test]
fn abort_matches_gdb() {
    require_bpf!();
    check_common("abort", None, MAIN);
}

#[test]
fn thread_crash_matches_gdb() {
    require_bpf!();
    check_common("thread_crash", None, THREAD_START);
}

#[test]
fn dlopen_crash_matches_gdb() {
    require_bpf!();
    check_common("dlopen_crash", Some("libcrashy.so"), MAIN);
}

#[test]
fn plt_stub_crash_matches_gdb() {
    require_bpf!();
    check_common("plt_crash", None, MAIN);
}

#[test]
fn crash_in_signal_handler_matches_gdb() {
    require_bpf!();
    check_common("handler_crash", None, MAIN);
}

#[test]
fn o2_without_frame_pointers_matches_gdb() {
    require_bpf!();
    check_special("o2_nofp", MAIN);
}

#[test]
fn frameless_leaf_matches_gdb() {
    require_bpf!();
    check_special("leaf_crash", MAIN);
}

#[test]
fn cpp_templates_match_gdb() {
    require_bpf!();
    check_special("cpp_templates", MAIN);
}

#[test]
fn stripped_with_build_id_debug_dir_matches_gdb() {
    require_bpf!();
    check_special("stripped", MAIN);
}
