//! Compiling the C programs in `tests/programs/`: the one builder every
//! test uses (the gdb agreement tests add their own recipes and a step
//! after compiling, see `crate::gdb::programs`).
//!
//! Every artifact is compiled at most once per test process, at first use,
//! with `cc -g -O0 -fno-omit-frame-pointer` (`$CC` overrides `cc`; C++
//! sources use `c++`, or `$CXX`). Output
//! goes through a temporary name and a rename, so test binaries running at
//! the same time never see a half-written file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Where the C sources live.
pub const PROGRAMS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/programs");

/// Marker comment on the line each program faults at.
pub const CRASH_LINE_MARKER: &str = "// CRASH-LINE";

const COMMON_FLAGS: &[&str] = &["-g", "-O0", "-fno-omit-frame-pointer", "-Wall", "-Wextra"];
const SHARED: &[&str] = &["-shared", "-fPIC"];

/// How to build one artifact: `cc BASE before... -o output source after...`.
pub struct Recipe {
    pub output: &'static str,
    pub source: &'static str,
    pub before: &'static [&'static str],
    pub after: &'static [&'static str],
}

const fn exe(output: &'static str, source: &'static str) -> Recipe {
    Recipe {
        output,
        source,
        before: &[],
        after: &[],
    }
}

const RECIPES: &[Recipe] = &[
    exe("null_deref", "null_deref.c"),
    exe("wild_pointer", "wild_pointer.c"),
    exe("write_rodata", "write_rodata.c"),
    exe("stack_overflow", "stack_overflow.c"),
    exe("div_zero", "div_zero.c"),
    exe("sigbus", "sigbus.c"),
    exe("trap", "trap.c"),
    exe("abort", "abort.c"),
    Recipe {
        output: "thread_crash",
        source: "thread_crash.c",
        before: &["-pthread"],
        after: &["-pthread"],
    },
    Recipe {
        output: "mmap_storm",
        source: "mmap_storm.c",
        before: &["-pthread"],
        after: &["-pthread"],
    },
    Recipe {
        output: "dlopen_crash",
        source: "dlopen_crash.c",
        before: &[],
        after: &["-ldl"],
    },
    Recipe {
        output: "libcrashy.so",
        source: "libcrashy.c",
        before: SHARED,
        after: &[],
    },
    exe("sleeper", "sleeper.c"),
    exe("recover", "recover.c"),
    exe("signalfd_term", "signalfd_term.c"),
    exe("assert_fail", "assert_fail.c"),
    exe("giving_up", "giving_up.c"),
    exe("double_free", "double_free.c"),
    exe("heap_corruption", "heap_corruption.c"),
    Recipe {
        output: "stack_smash",
        source: "stack_smash.c",
        before: &["-fstack-protector-all"],
        after: &[],
    },
    Recipe {
        output: "fortify_overflow",
        source: "fortify_overflow.c",
        before: &["-O2", "-D_FORTIFY_SOURCE=2", "-Wno-stringop-overflow"],
        after: &[],
    },
    exe("exit_code", "exit_code.c"),
    exe("uncaught_exception", "uncaught_exception.cpp"),
    exe("fault_in_handler", "fault_in_handler.c"),
    Recipe {
        output: "plt_crash",
        source: "plt_crash.c",
        before: &[],
        after: &["-Wl,-z,lazy"],
    },
    exe("handler_crash", "handler_crash.c"),
    exe("profiled", "profiled.c"),
    exe("memory_hog", "memory_hog.c"),
    // Test support, not a crash program: see the comment in the source.
    // Bound at load time: its handler must not need the dynamic linker,
    // which may be unable to run in a crashing process (plt_crash makes
    // the executable's GOT and dynamic section unreadable).
    Recipe {
        output: "siginfo_probe.so",
        source: "siginfo_probe.c",
        before: SHARED,
        after: &["-Wl,-z,now"],
    },
];

/// Names of every buildable artifact.
pub fn names() -> impl Iterator<Item = &'static str> {
    RECIPES.iter().map(|r| r.output)
}

/// Full path of a source file in `tests/programs/`.
pub fn source_path(file: &str) -> PathBuf {
    Path::new(PROGRAMS_DIR).join(file)
}

/// Artifacts already built by this process.
static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Builds `name` (e.g. `"null_deref"`, `"libcrashy.so"`) under
/// `<scratch_dir>/crashtrace-programs/` unless this process already has,
/// and returns its absolute path. Panics with the compiler's output if the
/// build fails.
pub fn build(scratch_dir: &Path, name: &str) -> PathBuf {
    let recipe = RECIPES
        .iter()
        .find(|r| r.output == name)
        .unwrap_or_else(|| {
            panic!(
                "no program named {name:?}; known: {:?}",
                names().collect::<Vec<_>>()
            )
        });
    let dir = scratch_dir.join("crashtrace-programs");
    let output = absolute(&dir).join(recipe.output);
    if crate::fresh(&output, &[&source_path(recipe.source)]) {
        return output;
    }
    build_once(&dir, COMMON_FLAGS, recipe, |_| {})
}

/// Builds `recipe` into `dir` with `base` flags first, unless this process
/// already has, and returns the artifact's absolute path. `finish` runs on
/// the freshly compiled file before it takes its final name.
pub fn build_once(
    dir: &Path,
    base: &[&str],
    recipe: &Recipe,
    finish: impl FnOnce(&Path),
) -> PathBuf {
    let dir = absolute(dir);
    let output = dir.join(recipe.output);

    // Held across the compile: each artifact is built once, and concurrent
    // tests wait for it instead of racing. A panicking build poisons the
    // lock without leaving a wrong entry, so the poison is ignored.
    let mut guard = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = guard.get_or_insert_with(HashSet::new);
    if built.contains(&output) {
        return output;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let partial =
        output.with_file_name(format!(".{}.{}.partial", recipe.output, std::process::id()));
    compile(base, recipe, &partial);
    finish(&partial);
    std::fs::rename(&partial, &output).unwrap_or_else(|e| {
        panic!(
            "renaming {} to {}: {e}",
            partial.display(),
            output.display()
        )
    });
    built.insert(output.clone());
    output
}

fn compile(base: &[&str], recipe: &Recipe, partial: &Path) {
    let (variable, default) = if recipe.source.ends_with(".cpp") {
        ("CXX", "c++")
    } else {
        ("CC", "cc")
    };
    let cc = std::env::var_os(variable)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into());
    let source = source_path(recipe.source);
    let mut command = Command::new(&cc);
    command
        .args(base)
        .args(recipe.before)
        .arg("-o")
        .arg(partial)
        .arg(&source)
        .args(recipe.after);
    let result = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e} (is a C compiler installed?)"));
    if !result.status.success() {
        let _ = std::fs::remove_file(partial);
        panic!(
            "compiling {} failed ({}):\n{command:?}\n{}",
            source.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|e| panic!("resolving {}: {e}", path.display()))
}

/// The 1-based line of `source` (a file in `tests/programs/`) that carries
/// the `// CRASH-LINE` marker. Panics unless there is exactly one.
pub fn crash_line(source: &str) -> u64 {
    let path = source_path(source);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let lines: Vec<u64> = text
        .lines()
        .zip(1..)
        .filter(|(line, _)| line.contains(CRASH_LINE_MARKER))
        .map(|(_, number)| number)
        .collect();
    match lines[..] {
        [line] => line,
        _ => panic!(
            "{} must have exactly one {CRASH_LINE_MARKER:?} marker, found {} (lines {lines:?})",
            path.display(),
            lines.len()
        ),
    }
}
