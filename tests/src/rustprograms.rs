//! Building the Rust programs in `tests/programs/rust/` with the `rustc`
//! that builds crashtrace, each at most once per test process, with
//! unwinding panics or with `-C panic=abort`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Where the Rust sources live.
pub const RUST_PROGRAMS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/programs/rust");

/// The source file of program `name`.
pub fn rust_source(name: &str) -> PathBuf {
    Path::new(RUST_PROGRAMS_DIR).join(format!("{name}.rs"))
}

/// Builds `tests/programs/rust/<name>.rs` into `<root>/rust/` with debug
/// info, and returns the executable's path.
pub fn build_rust(root: &Path, name: &str, panic_abort: bool) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let dir = root.join("rust");
    let output = dir.join(if panic_abort {
        format!("{name}-abort")
    } else {
        name.to_string()
    });
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    if built.contains(&output) || crate::fresh(&output, &[&rust_source(name)]) {
        return output;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let partial = output.with_extension("partial");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut command = Command::new(rustc);
    command
        .args(["--edition", "2021", "-g", "-C", "opt-level=1", "-o"])
        .arg(&partial);
    if panic_abort {
        command.args(["-C", "panic=abort"]);
    }
    command.arg(rust_source(name));
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
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
