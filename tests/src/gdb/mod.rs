//! Checking crashtrace's frames against gdb's backtrace of a core dump of
//! the very same crash.
//!
//! [`check_agreement`] runs `crashtrace record` on a program with the
//! program's core-size limit raised, in a fresh working directory, so the
//! kernel writes a core dump of the crash that crashtrace reports. It then
//! runs `gdb -batch ... -ex bt PROGRAM CORE`, and compares the two lists of
//! function names from the crashing frame down to a stop function (`main`,
//! or `start_thread` for a crash in a second thread), after normalizing
//! both sides the same way ([`normalize_function`]).
//!
//! The programs that only these tests use, and their build flags, are here
//! ([`build`]); the others come from [`crate::programs`].
//!
//! Nothing here changes system settings: the core pattern
//! (`/proc/sys/kernel/core_pattern`) must already name a file, relative
//! (written in the crashing process's working directory) or absolute.
//!
//! One job a submodule: `programs` builds the gdb-only programs, `run`
//! records a crash and finds its core (`core_file` knows where the kernel
//! writes it), `backtrace` runs gdb and parses `bt`, `normalize` and
//! `compare` turn both lists into comparable names and assert that they
//! agree; `process` has the child-process helpers they share.

mod backtrace;
mod compare;
mod core_file;
mod normalize;
mod process;
mod programs;
mod run;

use std::path::Path;

use crate::Harness;

pub use backtrace::{
    FrameKind, GdbBacktrace, GdbFrame, gdb_backtrace, gdb_bin, parse_backtrace, parse_frame_line,
};
pub use compare::assert_frames_agree;
pub use core_file::CorePattern;
pub use normalize::{SIGNAL_FRAME, normalize_function};
pub use programs::{Built, build, build_id};
pub use run::{CoreRecording, record_with_core};

/// The stop function for a crash on the main thread.
pub const MAIN: &str = "main";
/// The stop function for a crash on a thread made by `pthread_create`.
pub const THREAD_START: &str = "start_thread";

/// Records `program args...` with crashtrace (passing `debug_dir` as
/// `--debug-dir`), takes gdb's backtrace of the core of the same crash
/// (with `debug_dir` in its debug-file-directory), and asserts
/// [`assert_frames_agree`] down to `stop`. The run's working directory and
/// core are removed when the check passes.
pub fn check_agreement(
    harness: &Harness,
    program: &Path,
    args: &[&str],
    debug_dir: Option<&Path>,
    stop: &str,
) {
    let run = record_with_core(harness, program, args, debug_dir);
    let bt = gdb_backtrace(program, &run.core, debug_dir);
    let context = format!("core: {}\n{}", run.core.display(), run.recording.context());
    assert_frames_agree(&run.report, &bt, stop, &context);
    if run.core.starts_with(&run.workdir) {
        let _ = std::fs::remove_dir_all(&run.workdir);
    } else {
        let _ = std::fs::remove_file(&run.core);
        let _ = std::fs::remove_dir_all(&run.workdir);
    }
}
