//! Each Go release's own crash programs: `runtime/testdata/testprog` of its
//! GOROOT, run under `crashtrace watch` and held to the output that the
//! same release's `runtime/crash_test.go` expects of them. The expected
//! words are read from that file, not written here, so a release that
//! changes what its runtime prints is checked against its own authors'
//! expectations.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Harness;
use crate::go_programs::{Toolchain, go_command_of};
use crate::report::check_shape;
use crate::require_bpf;
use crate::watch::Watch;

/// How `crash_test.go` compares the program's output with its `want`.
#[derive(Clone, Copy, Debug)]
pub enum Match {
    Prefix,
    Contains,
}

/// One testprog function and what its report must say.
pub struct TestprogCase {
    /// The argument naming the function to run (`register("NAME", ...)`).
    pub function: &'static str,
    /// The function of `crash_test.go` whose first `want` string the output
    /// is compared with, and how.
    pub go_test: &'static str,
    pub matching: Match,
    pub class: &'static str,
}

pub const TESTPROG_CASES: &[TestprogCase] = &[
    TestprogCase {
        function: "SimpleDeadlock",
        go_test: "testDeadlock",
        matching: Match::Prefix,
        class: "deadlock",
    },
    TestprogCase {
        function: "StackOverflow",
        go_test: "TestStackOverflow",
        matching: Match::Prefix,
        class: "stack-overflow",
    },
    TestprogCase {
        function: "ThreadExhaustion",
        go_test: "TestThreadExhaustion",
        matching: Match::Prefix,
        class: "go-fatal-error",
    },
    TestprogCase {
        function: "MainGoroutineID",
        go_test: "TestMainGoroutineID",
        matching: Match::Prefix,
        class: "go-panic",
    },
    TestprogCase {
        function: "Breakpoint",
        go_test: "TestBreakpoint",
        matching: Match::Contains,
        class: "breakpoint",
    },
];

/// The GOROOT of `toolchain` (`GOROOT/bin/go`).
fn goroot(toolchain: &Toolchain) -> PathBuf {
    let go = std::fs::canonicalize(&toolchain.go).unwrap_or_else(|_| toolchain.go.clone());
    go.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("no GOROOT above {}", toolchain.go.display()))
}

/// Builds the release's testprog into the scratch directory.
pub fn build_testprog(scratch_dir: &Path, toolchain: &Toolchain) -> PathBuf {
    let dir = std::path::absolute(scratch_dir.join("crashtrace-go-programs"))
        .unwrap()
        .join(toolchain.label());
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("testprog");
    let source = goroot(toolchain).join("src/runtime/testdata/testprog");
    let result = go_command_of(toolchain)
        .current_dir(&source)
        .args(["build", "-o"])
        .arg(&output)
        .arg(".")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", toolchain.go.display()));
    assert!(
        result.status.success(),
        "building {} with Go {}:\n{}",
        source.display(),
        toolchain.version,
        String::from_utf8_lossy(&result.stderr)
    );
    output
}

/// The first string literal after `want` in function `go_test` of the
/// release's `crash_test.go`, unescaped.
pub fn expected_output(toolchain: &Toolchain, go_test: &str) -> String {
    let path = goroot(toolchain).join("src/runtime/crash_test.go");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let body = text
        .find(&format!("func {go_test}("))
        .map(|at| &text[at..])
        .unwrap_or_else(|| panic!("no func {go_test} in {}", path.display()));
    let after_want = body
        .find("want")
        .map(|at| &body[at..])
        .unwrap_or_else(|| panic!("no want in {go_test} of {}", path.display()));
    let open = after_want.find('"').expect("a string literal after want");
    let mut out = String::new();
    let mut chars = after_want[open + 1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    panic!(
        "unterminated string after want in {go_test} of {}",
        path.display()
    )
}

/// Runs every case of [`TESTPROG_CASES`] on the release's testprog under
/// one `crashtrace watch`, checking class, exit and last words.
pub fn check_testprog_under_watch(harness: &Harness, toolchain: &Toolchain) {
    require_bpf!();
    let program = build_testprog(harness.root(), toolchain);
    let label = format!("testprog-{}", toolchain.version);
    let watch = Watch::start(harness.root(), &label, &["testprog"]);
    // A first run that ends well, so that watch probes the file before
    // the crashes: testprog prints "unknown function" and exits 0.
    let warm = Command::new(&program)
        .arg("NoSuchFunction")
        .output()
        .expect("running testprog");
    assert!(warm.status.success(), "{warm:?}");
    // Only testprog passes the comm filter: the first probe is its.
    watch.wait_for_stderr("probing the Go runtime of");
    for case in TESTPROG_CASES {
        let want = expected_output(toolchain, case.go_test);
        let mut child = Command::new(&program)
            .arg(case.function)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running testprog");
        let pid = child.id();
        let code = child.wait().ok().and_then(|s| s.code());
        let report = watch.wait_for_pid(pid);
        let context = format!(
            "go {} testprog {} (pid {pid}): {report:#}\n{}",
            toolchain.version,
            case.function,
            watch.context()
        );
        assert_eq!(code, Some(2), "{context}");
        check_shape(&report);
        assert_eq!(report["runtime"], "go", "{context}");
        assert_eq!(report["class"], case.class, "{context}");
        let words = report["last_words"].as_str().unwrap_or_default();
        let matched = match case.matching {
            Match::Prefix => words.starts_with(&want),
            Match::Contains => words.contains(&want),
        };
        assert!(
            matched,
            "the last words do not match {:?} {want:?} ({} expects it)\n{context}",
            case.matching, case.go_test
        );
    }
}
