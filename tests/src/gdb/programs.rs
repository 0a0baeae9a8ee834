//! The C and C++ programs only the gdb agreement tests use, and how they
//! are built: the build flags that make unwinding hard (`-O2` without frame
//! pointers, frameless leaves) and the split of a stripped executable's
//! debug info into a `.build-id` directory. The crate's one program
//! builder (`crate::programs`) compiles them.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{absolute, run_tool};
use crate::programs::{self, Recipe};

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
    recipe: Recipe,
    /// Move the debug info into a separate file found by build-id, and
    /// strip the executable.
    split_debug: bool,
}

const fn recipe(
    output: &'static str,
    source: &'static str,
    flags: &'static [&'static str],
    split_debug: bool,
) -> GdbRecipe {
    GdbRecipe {
        recipe: Recipe {
            output,
            source,
            before: flags,
            after: &[],
        },
        split_debug,
    }
}

const GDB_RECIPES: &[GdbRecipe] = &[
    recipe(
        "o2_nofp",
        "o2_nofp.c",
        &["-g", "-O2", "-fomit-frame-pointer", "-Wall", "-Wextra"],
        false,
    ),
    recipe(
        "leaf_crash",
        "leaf_crash.c",
        &["-g", "-O2", "-Wall", "-Wextra"],
        false,
    ),
    recipe(
        "cpp_templates",
        "cpp_templates.cpp",
        &["-g", "-O0", "-Wall", "-Wextra"],
        false,
    ),
    recipe(
        "stripped",
        "stripped.c",
        &["-g", "-O0", "-Wall", "-Wextra", "-Wl,--build-id"],
        true,
    ),
];

/// Builds `name` (one of `o2_nofp`, `leaf_crash`, `cpp_templates`,
/// `stripped`) under `<scratch_dir>/crashtrace-programs/gdb/`, at most once
/// per process, with the one program builder. `$CC` and `$CXX` override
/// `cc` and `c++`.
pub fn build(scratch_dir: &Path, name: &str) -> Built {
    let GdbRecipe {
        recipe,
        split_debug: split,
    } = GDB_RECIPES
        .iter()
        .find(|r| r.recipe.output == name)
        .unwrap_or_else(|| {
            panic!(
                "no gdb-test program named {name:?}; known: {:?}",
                GDB_RECIPES
                    .iter()
                    .map(|r| r.recipe.output)
                    .collect::<Vec<_>>()
            )
        });
    let dir = absolute(&scratch_dir.join("crashtrace-programs").join("gdb"));
    let debug_dir = split.then(|| dir.join(format!("{}-debug", recipe.output)));
    let path = programs::build_once(&dir, &[], recipe, |partial| {
        if let Some(debug_dir) = &debug_dir {
            split_debug(partial, debug_dir);
        }
    });
    Built { path, debug_dir }
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
