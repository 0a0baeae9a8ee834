//! Which tests each VM runs: the list in `tests/vm/tests.txt`, and the
//! compiled integration test binaries of the tests crate that hold them.
//!
//! The list is a file so that whoever adds a kernel-dependent test adds one
//! line, without touching the harness. The binaries are the ones
//! `cargo test --release --no-run` builds on the host; their paths
//! come from cargo's JSON messages, since their names carry a hash.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use super::kernels::Line;

/// Where the list lives, relative to the workspace root.
pub const LIST: &str = "tests/vm/tests.txt";

/// One line of the list.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The test target, `tests/tests/BINARY.rs`.
    pub binary: String,
    /// The test's exact name.
    pub test: String,
    /// The kernel lines to run it on; `None` for all.
    pub kernels: Option<Vec<String>>,
}

impl Entry {
    /// `BINARY::TEST`, as reports and filters name it.
    pub fn name(&self) -> String {
        format!("{}::{}", self.binary, self.test)
    }

    pub fn runs_on(&self, line: &Line) -> bool {
        self.kernels
            .as_ref()
            .is_none_or(|lines| lines.iter().any(|l| l == line.label))
    }
}

/// Parses the list at `path`.
pub fn load(path: &Path) -> Result<Vec<Entry>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let Some((binary, test)) = name.split_once("::") else {
            bail!("{}: expected BINARY::TEST, found {name:?}", at());
        };
        let kernels = match words.next() {
            None => None,
            Some(list) => {
                let labels: Vec<String> = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = labels.iter().find(|l| Line::find(l).is_none()) {
                    bail!("{}: unknown kernel line {bad:?}", at());
                }
                Some(labels)
            }
        };
        if let Some(extra) = words.next() {
            bail!("{}: unexpected {extra:?} after the kernel list", at());
        }
        entries.push(Entry {
            binary: binary.to_owned(),
            test: test.to_owned(),
            kernels,
        });
    }
    Ok(entries)
}

/// The entries whose `BINARY::TEST` contains one of `filters` (all of them
/// when there is no filter).
pub fn select(entries: Vec<Entry>, filters: &[String]) -> Result<Vec<Entry>> {
    if filters.is_empty() {
        return Ok(entries);
    }
    let chosen: Vec<Entry> = entries
        .into_iter()
        .filter(|e| filters.iter().any(|f| e.name().contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        bail!("no test in {LIST} matches {filters:?}");
    }
    Ok(chosen)
}

/// Builds the workspace's tests (`cargo test --release --no-run`) and
/// returns each of the tests crate's test targets' executable by name.
pub fn build_test_binaries() -> Result<BTreeMap<String, PathBuf>> {
    // The whole workspace, as `cargo xtask test` builds it: with `-p tests`
    // cargo would unify features differently and rebuild crashtrace.
    println!("vm-test: building the integration tests (cargo test --release --no-run)");
    let mut cmd = crate::cargo();
    cmd.args([
        "test",
        "--release",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let manifest = crate::workspace_root().join("tests/Cargo.toml");
    let stdout = super::check_output(&mut cmd)?;
    let mut binaries = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).context("parsing cargo's JSON output")?;
        if message["reason"] != "compiler-artifact"
            || message["manifest_path"].as_str().map(Path::new) != Some(manifest.as_path())
        {
            continue;
        }
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            is_test,
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            binaries.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    if binaries.is_empty() {
        bail!("cargo built no integration test binaries for the tests crate");
    }
    Ok(binaries)
}
