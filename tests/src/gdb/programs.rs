//! The C and C++ programs only the gdb agreement tests use, and how they
//! are built: the build flags that make unwinding hard (`-O2` without frame
//! pointers, frameless leaves) and the split of a stripped executable's
//! debug info into a `.build-id` directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::process::{absolute, run_tool};
use crate::programs::source_path;

/// A program built for these tests.
#[derive(Clone, Debug)]
pub struct Built {
    /// The executable.
    pub path: PathBuf,
    /// The directory its separate debug file is in, under
    /// `.build-id/xx/rest.debug`, when it was stripped.
    pub debug_dir: Option<PathBuf>,
}

struct GdbRecipe {
    output: &'static str,
    source: &'static str,
    cxx: bool,
    flags: &'static [&'static str],
    /// Move the debug info into a separate file found by build-id, and
    /// strip the executable.
    split_debug: bool,
}

const GDB_RECIPES: &[GdbRecipe] = &[
    GdbRecipe {
        output: "o2_nofp",
        source: "o2_nofp.c",
        cxx: false,
        flags: &["-g", "-O2", "-fomit-frame-pointer", "-Wall", "-Wextra"],
        split_debug: false,
    },
    GdbRecipe {
        output: "leaf_crash",
        source: "leaf_crash.c",
        cxx: false,
        flags: &["-g", "-O2", "-Wall", "-Wextra"],
        split_debug: false,
    },
    GdbRecipe {
        output: "cpp_templates",
        source: "cpp_templates.cpp",
        cxx: true,
        flags: &["-g", "-O0", "-Wall", "-Wextra"],
        split_debug: false,
    },
    GdbRecipe {
        output: "stripped",
        source: "stripped.c",
        cxx: false,
        flags: &["-g", "-O0", "-Wall", "-Wextra", "-Wl,--build-id"],
        split_debug: true,
    },
];

static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Builds `name` (one of `o2_nofp`, `leaf_crash`, `cpp_templates`,
/// `stripped`) under `<scratch_dir>/crashtrace-programs/gdb/`, at most once
/// per process. `$CC` and `$CXX` override `cc` and `c++`.
pub fn build(scratch_dir: &Path, name: &str) -> Built {
    let recipe = GDB_RECIPES
        .iter()
        .find(|r| r.output == name)
        .unwrap_or_else(|| {
            panic!(
                "no gdb-test program named {name:?}; known: {:?}",
                GDB_RECIPES.iter().map(|r| r.output).collect::<Vec<_>>()
            )
        });
    let dir = absolute(&scratch_dir.join("crashtrace-programs").join("gdb"));
    let output = dir.join(recipe.output);
    let debug_dir = recipe
        .split_debug
        .then(|| dir.join(format!("{}-debug", recipe.output)));
    let built = Built {
        path: output.clone(),
        debug_dir: debug_dir.clone(),
    };

    let mut guard = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let done = guard.get_or_insert_with(HashSet::new);
    if done.contains(&output) {
        return built;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let partial = dir.join(format!(".{}.{}.partial", recipe.output, std::process::id()));
    compile(recipe, &partial);
    if let Some(debug_dir) = &debug_dir {
        split_debug(&partial, debug_dir);
    }
    std::fs::rename(&partial, &output).unwrap_or_else(|e| {
        panic!(
            "renaming {} to {}: {e}",
            partial.display(),
            output.display()
        )
    });
    done.insert(output);
    built
}

fn compile(recipe: &GdbRecipe, output: &Path) {
    let (var, default) = if recipe.cxx {
        ("CXX", "c++")
    } else {
        ("CC", "cc")
    };
    let compiler = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into());
    let source = source_path(recipe.source);
    let mut command = Command::new(&compiler);
    command
        .args(recipe.flags)
        .arg("-o")
        .arg(output)
        .arg(&source);
    run_tool(&mut command, "is a C/C++ compiler installed?");
}

/// `objcopy --only-keep-debug`, then `strip --strip-debug
/// --strip-unneeded`, and the debug file goes to
/// `debug_dir/.build-id/xx/rest.debug`.
fn split_debug(program: &Path, debug_dir: &Path) {
    let debug_file = program.with_extension("debug");
    run_tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(program)
            .arg(&debug_file),
        "is binutils installed?",
    );
    run_tool(
        Command::new("strip")
            .args(["--strip-debug", "--strip-unneeded"])
            .arg(program),
        "is binutils installed?",
    );

    let id = build_id(program)
        .unwrap_or_else(|| panic!("{} has no GNU build-id note", program.display()));
    assert_eq!(
        build_id(&debug_file).as_deref(),
        Some(id.as_str()),
        "{} and its debug file {} disagree on the build-id",
        program.display(),
        debug_file.display()
    );
    let (symbols, dwarf) = symbols_and_dwarf(program);
    assert!(
        !symbols && !dwarf,
        "{} still has a symbol table ({symbols}) or DWARF ({dwarf}) after strip",
        program.display()
    );

    let (head, rest) = id.split_at(2);
    let target_dir = debug_dir.join(".build-id").join(head);
    std::fs::create_dir_all(&target_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", target_dir.display()));
    let target = target_dir.join(format!("{rest}.debug"));
    std::fs::rename(&debug_file, &target).unwrap_or_else(|e| {
        panic!(
            "renaming {} to {}: {e}",
            debug_file.display(),
            target.display()
        )
    });
}

/// The GNU build-id of the ELF file at `path`, as lowercase hex.
pub fn build_id(path: &Path) -> Option<String> {
    use object::Object;
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file =
        object::File::parse(&*data).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let id = file
        .build_id()
        .unwrap_or_else(|e| panic!("reading the build-id of {}: {e}", path.display()))?;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the ELF file at `path` has a symbol table, and DWARF.
fn symbols_and_dwarf(path: &Path) -> (bool, bool) {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file =
        object::File::parse(&*data).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let symbols = file.symbol_table().is_some();
    let dwarf = file
        .sections()
        .any(|s| s.name().is_ok_and(|n| n.starts_with(".debug_")));
    (symbols, dwarf)
}
