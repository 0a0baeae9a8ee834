//! Building the Go programs in `tests/programs/go/` with Debian's Go 1.19.
//!
//! Each program is built at most once per test process, plain and
//! stripped (`-ldflags=-s -w`: no symbol table, no DWARF; pclntab stays).
//! The build cache lives under the scratch directory, so tests never touch
//! the user's.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Debian's `golang-1.19-go` puts the toolchain here, off `PATH`.
pub const GO: &str = "/usr/lib/go-1.19/bin/go";

/// Where the Go sources live, one directory per program.
pub const GO_PROGRAMS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/programs/go");

/// The source file of program `name`.
pub fn go_source(name: &str) -> PathBuf {
    Path::new(GO_PROGRAMS_DIR).join(name).join("main.go")
}

/// Builds `tests/programs/go/<name>/main.go` into `<root>/go/`, stripped
/// or not, and returns the executable's path.
pub fn build_go(root: &Path, name: &str, stripped: bool) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let dir = root.join("go");
    let output = dir.join(if stripped {
        format!("{name}-stripped")
    } else {
        name.to_string()
    });
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    if built.contains(&output) {
        return output;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    assert!(
        Path::new(GO).exists(),
        "{GO} is missing: install Debian's golang-1.19-go (`cargo xtask setup` does)"
    );
    let partial = output.with_extension("partial");
    let mut command = Command::new(GO);
    command
        .arg("build")
        .arg("-o")
        .arg(&partial)
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "1");
    if stripped {
        command.arg("-ldflags=-s -w");
    }
    command.arg(go_source(name));
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {GO}: {e}"));
    assert!(
        out.status.success(),
        "building {name}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&partial, &output)
        .unwrap_or_else(|e| panic!("renaming {}: {e}", partial.display()));
    built.insert(output.clone());
    output
}
