//! Harness for crashtrace's integration tests.
//!
//! The tests in `tests/tests/` run the real `crashtrace` binary against the
//! small C programs in `tests/programs/`, which this crate compiles at test
//! time, and check the JSON reports against the schema-1 contract.
//!
//! * [`crashtrace_bin`] finds the binary under test (`CRASHTRACE_BIN`, else
//!   `target/release/crashtrace`, else `target/debug/crashtrace`).
//! * [`require_bpf!`] gates every test that loads BPF: it needs root, and a
//!   test run without it fails unless `CRASHTRACE_SKIP_BPF_TESTS=1` is set.
//! * [`Harness`] builds programs and runs `crashtrace record` on them.
//! * [`daemon`] runs `crashtrace daemon` as systemd would and reads its
//!   acknowledgements.
//! * [`expect`] holds what each crash program must produce; [`checks`] and
//!   [`report`] hold the assertions on a report.

pub mod cgroup;
pub mod checks;
pub mod daemon;
pub mod expect;
pub mod gdb;
pub mod go_cases;
pub mod go_programs;
pub mod go_testprog;
pub mod programs;
pub mod record;
pub mod report;
pub mod rustprograms;
pub mod watch;

#[cfg(test)]
mod selfcheck;

use std::path::{Path, PathBuf};

pub use programs::crash_line;
pub use record::{Recording, RunningRecord};
pub use report::{find_frame, frames};

/// Environment variable naming the crashtrace binary to test.
pub const BIN_ENV: &str = "CRASHTRACE_BIN";
/// Environment variable that, set to `1`, skips the tests that need BPF.
pub const SKIP_ENV: &str = "CRASHTRACE_SKIP_BPF_TESTS";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The crashtrace binary under test. Panics with instructions if there is
/// none: a missing binary is a test failure, never a skip.
pub fn crashtrace_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "{BIN_ENV}={} does not name an existing file",
            bin.display()
        );
        return bin;
    }
    let target = target_dir();
    let candidates = [
        target.join("release/crashtrace"),
        target.join("debug/crashtrace"),
    ];
    for candidate in &candidates {
        if candidate.is_file() {
            return candidate.clone();
        }
    }
    panic!(
        "crashtrace binary not found (looked for {} and {}). Build it with \
         `cargo build --release -p tracer-user`, or point {BIN_ENV} at it.",
        candidates[0].display(),
        candidates[1].display()
    );
}

/// Whether a BPF test should run; tests call it through [`require_bpf!`].
///
/// * `CRASHTRACE_SKIP_BPF_TESTS=1`: prints a skip notice, returns `false`.
///   This is the one explicit opt-out; CI never sets it.
/// * not root: panics, because crashtrace cannot load its BPF programs and
///   a silently skipped suite proves nothing.
/// * root: returns `true`.
#[must_use = "return from the test when this is false"]
pub fn require_bpf() -> bool {
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        println!("skipped: {SKIP_ENV}=1");
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "crashtrace's integration tests load BPF programs and must run as root \
         (effective uid is {euid}). Run them with sudo (e.g. \
         `sudo -E cargo test -p tests`), or set {SKIP_ENV}=1 to skip them explicitly."
    );
    true
}

/// The first line of every test that loads BPF: returns from the test
/// (with `$ret`, if given) when [`require_bpf()`] says to skip, and fails
/// it when not root.
///
/// ```text
/// #[test]
/// fn null_deref() {
///     require_bpf!();
///     ...
/// }
/// ```
#[macro_export]
macro_rules! require_bpf {
    () => {
        if !$crate::require_bpf() {
            return;
        }
    };
    ($ret:expr) => {
        if !$crate::require_bpf() {
            return $ret;
        }
    };
}

/// Builds programs into, and writes reports under, one scratch directory:
/// integration tests pass `env!("CARGO_TARGET_TMPDIR")`.
#[derive(Clone, Debug)]
pub struct Harness {
    root: PathBuf,
}

impl Harness {
    pub fn new(scratch_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: scratch_dir.into(),
        }
    }

    /// The scratch directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a built program (see [`programs::build`]).
    pub fn program(&self, name: &str) -> PathBuf {
        programs::build(&self.root, name)
    }

    /// Runs `crashtrace record --json --output FILE -- program args...` to
    /// completion.
    pub fn record(&self, program: &Path, args: &[&str]) -> Recording {
        self.spawn_record(program, args).finish()
    }

    /// [`Harness::record`] with more of crashtrace's options (before `--`).
    pub fn record_with(&self, options: &[&str], program: &Path, args: &[&str]) -> Recording {
        let output = record::output_path(&self.root.join("crashtrace-reports"));
        RunningRecord::spawn(&crashtrace_bin(), options, program, args, output).finish()
    }

    /// Starts `crashtrace record` and returns while it runs.
    pub fn spawn_record(&self, program: &Path, args: &[&str]) -> RunningRecord {
        let output = record::output_path(&self.root.join("crashtrace-reports"));
        RunningRecord::spawn(&crashtrace_bin(), &[], program, args, output)
    }
}

/// Whether `output` was built after its `sources` and after this test
/// binary (which holds the build flags): then a program built by an
/// earlier test process, on the host or in a VM, is used as it is. Under
/// emulation a `rustc` run takes most of a minute.
pub fn fresh(output: &Path, sources: &[&Path]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(output) else {
        return false;
    };
    let exe = std::env::current_exe().ok();
    sources
        .iter()
        .copied()
        .chain(exe.as_deref())
        .all(|input| modified(input).is_some_and(|m| m <= built))
}
