//! The Go crash classes on every Go release of the test matrix
//! (`tests/programs/go/versions.txt`), built normal, stripped
//! (`-ldflags=-s -w`) and stripped PIE, held to the same answers as Go 1.19
//! in `go_crashes.rs` (the checks are shared, in `go_cases`).
//!
//! Each release changes something a reader of Go binaries depends on (Go
//! 1.26 dropped the text start from the pclntab header, 1.27 moved
//! `moduledata.gofunc`, 1.24 moved map code to `internal/runtime/maps`), so
//! each is run for real. On each release: every class, built normal and
//! stripped, under one `crashtrace watch` (one BPF load for all of them),
//! and under `record` a panic (`nil-map`), a fatal error thrown by the
//! runtime (`concurrent-map`), a stripped build and a stripped PIE build
//! of a panic raised from a signal (`nil-deref`, through
//! `runtime.sigpanic`). Go 1.19 also has every class under `record` in
//! `go_crashes.rs`. And each release's own `runtime/testdata/testprog`
//! crash programs, with the words its `crash_test.go` expects
//! (`go_testprog`).

use crashtrace_tests::Harness;
use crashtrace_tests::go_cases::{case, check_case_with, check_every_case_under_watch};
use crashtrace_tests::go_programs::{GoBuild, toolchain};
use crashtrace_tests::go_testprog::check_testprog_under_watch;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The representative cases: (mode, build).
const REPRESENTATIVE: &[(&str, GoBuild)] = &[
    ("nil-map", GoBuild::Normal),
    ("concurrent-map", GoBuild::Normal),
    ("nil-map", GoBuild::Stripped),
    ("nil-deref", GoBuild::StrippedPie),
];

fn release(version: &str) {
    let toolchain = toolchain(version);
    for &(mode, build) in REPRESENTATIVE {
        check_case_with(&harness(), case(mode), &toolchain, build);
    }
    check_every_case_under_watch(
        &harness(),
        &toolchain,
        &[GoBuild::Normal, GoBuild::Stripped],
    );
    check_testprog_under_watch(&harness(), &toolchain);
}

macro_rules! releases {
    ($($test:ident: $version:literal;)*) => {
        $(
            #[test]
            fn $test() {
                release($version);
            }
        )*
    };
}

releases! {
    go_1_19: "1.19";
    go_1_21: "1.21.13";
    go_1_22: "1.22.10";
    go_1_23: "1.23.9";
    go_1_24: "1.24.11";
    go_1_25: "1.25.5";
    go_1_26: "1.26.6";
    go_1_27: "1.27.3";
}

/// Every release of the list has a test here: a release added to
/// versions.txt without one fails rather than going untested.
#[test]
fn every_release_of_the_matrix_is_tested() {
    let tested = [
        "1.19", "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
    ];
    let listed: Vec<&str> = crashtrace_tests::go_programs::toolchains()
        .iter()
        .map(|t| t.version)
        .collect();
    assert_eq!(listed, tested);
}
