//! The matrix's results: `target/vm/results.json`, and the "Tested kernels"
//! section of `docs/kernels.md` generated from it.
//!
//! The documentation's table is generated so that it can only say what a
//! run measured: `cargo xtask vm-test` records each kernel's outcome here
//! (merging with the other kernels' last outcomes), and
//! `cargo xtask vm-test --write-docs` rewrites the text between the markers.

use std::{
    fs,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::kernels::LINES;

pub const DOCS: &str = "docs/kernels.md";
const BEGIN: &str = "<!-- tested-kernels:begin";
const END: &str = "<!-- tested-kernels:end -->";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    /// The VM stopped (or timed out) before the test ran.
    NotRun,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "FAILED",
            Status::NotRun => "NOT RUN",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestResult {
    /// `BINARY::TEST`.
    pub name: String,
    pub status: Status,
    /// Wall time in the guest.
    pub secs: Option<f64>,
    /// Why it failed: the panic message, or what stopped the VM.
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelResult {
    /// The kernel line, e.g. `6.12`.
    pub line: String,
    pub package: String,
    pub version: String,
    /// `uname -r` in the guest; `None` if the guest script never ran.
    pub uname: Option<String>,
    /// `KVM` or `TCG`.
    pub accel: String,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// Host seconds from starting the VM to the guest script's start.
    pub boot_secs: Option<f64>,
    /// Seconds the tests took in the guest.
    pub tests_secs: f64,
    /// Host seconds from starting the VM until it stopped.
    pub vm_secs: f64,
    /// Whether the guest has `/sys/kernel/btf/vmlinux`.
    pub btf: Option<bool>,
    /// Set when the VM did not finish its script.
    pub error: Option<String>,
    /// What `crashtrace doctor --json` said in the guest: capture path,
    /// fallbacks, last-words hook, OOM record.
    #[serde(default)]
    pub doctor: Option<Doctor>,
    pub tests: Vec<TestResult>,
}

/// The part of `crashtrace doctor --json` the table shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Doctor {
    pub capture: String,
    pub fallbacks: bool,
    pub last_words: String,
    pub oom_record: bool,
}

impl KernelResult {
    pub fn count(&self, status: Status) -> usize {
        self.tests.iter().filter(|t| t.status == status).count()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub kernels: Vec<KernelResult>,
}

impl Results {
    pub fn load(path: &Path) -> Result<Self> {
        match fs::read_to_string(path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Replaces the results of the kernel lines in `new`, keeps the others.
    /// Takes a run's kernels. A kernel's tests that the run did not run
    /// (a filtered run) keep their earlier results: each test shows its
    /// latest result.
    pub fn merge(&mut self, new: Vec<KernelResult>) {
        let mut new = new;
        for k in &mut new {
            if let Some(old) = self.kernels.iter().find(|old| old.line == k.line) {
                // In the earlier order, the run's results in place.
                let mut tests: Vec<TestResult> = old
                    .tests
                    .iter()
                    .map(|t| {
                        let newer = k.tests.iter().find(|n| n.name == t.name);
                        newer.unwrap_or(t).clone()
                    })
                    .collect();
                let added = k
                    .tests
                    .iter()
                    .filter(|n| !tests.iter().any(|t| t.name == n.name));
                let added: Vec<TestResult> = added.cloned().collect();
                tests.extend(added);
                k.tests = tests;
            }
        }
        self.kernels
            .retain(|old| !new.iter().any(|k| k.line == old.line));
        self.kernels.extend(new);
        let order = |line: &str| LINES.iter().position(|l| l.label == line);
        self.kernels.sort_by_key(|k| order(&k.line));
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("serializing the results")?;
        fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// Rewrites the generated section of `docs` from `results`.
pub fn write_docs(docs: &Path, results: &Results, source: &str) -> Result<()> {
    replace_between_markers(docs, &table(results, source))
}

/// The README's short form: each kernel line, what it uses, how its tests
/// went.
pub fn write_readme(readme: &Path, results: &Results) -> Result<()> {
    replace_between_markers(readme, &short_table(results))
}

fn short_table(results: &Results) -> String {
    let mut s = String::from(
        "\n| Kernel | Shipped by | Capture at | Helpers | Last words | Tests in the VM matrix |\n\
         |---|---|---|---|---|---|\n",
    );
    for k in &results.kernels {
        let shipped = LINES
            .iter()
            .find(|l| l.label == k.line)
            .map_or("", |l| l.shipped_by);
        let (capture, helpers, words) = match &k.doctor {
            Some(d) => (
                format!("`{}`", d.capture),
                if d.fallbacks { "fallbacks" } else { "all" },
                d.last_words.clone(),
            ),
            None => ("-".into(), "-", "-".into()),
        };
        let result = match &k.error {
            Some(_) => "**VM failed**".to_string(),
            None => format!(
                "{} of {} passed ({})",
                k.count(Status::Passed),
                k.tests.len(),
                k.date
            ),
        };
        s.push_str(&format!(
            "| {} (`{}`) | {shipped} | {capture} | {helpers} | {words} | {result} |\n",
            k.line,
            k.uname.as_deref().unwrap_or("-"),
        ));
    }
    s.push('\n');
    s
}

fn replace_between_markers(docs: &Path, table: &str) -> Result<()> {
    let text = fs::read_to_string(docs).with_context(|| format!("reading {}", docs.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!(
            "{} lacks the markers `{BEGIN} ... -->` and `{END}`",
            docs.display()
        );
    };
    let begin_end = begin
        + text[begin..]
            .find("-->")
            .context("unterminated begin marker")?
        + 3;
    if begin_end > end {
        bail!(
            "{}: the end marker comes before the begin marker",
            docs.display()
        );
    }
    let new = format!("{}\n{table}{}", &text[..begin_end], &text[end..]);
    fs::write(docs, new).with_context(|| format!("writing {}", docs.display()))
}

fn table(results: &Results, source: &str) -> String {
    if results.kernels.is_empty() {
        return format!("\nNo results in {source} yet: run `cargo xtask vm-test`.\n\n");
    }
    let mut s = String::from(
        "\n| Kernel line | Shipped by | Package (version) | `uname -r` | BTF | Capture at | Helpers | Last words | OOM record | Run on | Boot | Tests | Result |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for k in &results.kernels {
        let shipped = LINES
            .iter()
            .find(|l| l.label == k.line)
            .map_or("", |l| l.shipped_by);
        let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.0} s"));
        let btf = match k.btf {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let result = match &k.error {
            Some(e) => format!("**VM failed**: {e}"),
            None => format!(
                "{} passed, {} failed",
                k.count(Status::Passed),
                k.count(Status::Failed) + k.count(Status::NotRun)
            ),
        };
        let (capture, helpers, words, oom) = match &k.doctor {
            Some(d) => (
                match d.capture.as_str() {
                    "none" => "**none** (no stacks)".to_string(),
                    c => format!("`{c}`"),
                },
                if d.fallbacks { "fallbacks" } else { "all" }.to_string(),
                match d.last_words.as_str() {
                    "none" => "**none**".to_string(),
                    w => w.to_string(),
                },
                if d.oom_record { "yes" } else { "**no**" }.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        s.push_str(&format!(
            "| {} | {shipped} | `{}` ({}) | `{}` | {btf} | {capture} | {helpers} | {words} | {oom} | {} {} | {} | {} | {result} |\n",
            k.line,
            k.package,
            k.version,
            k.uname.as_deref().unwrap_or("-"),
            k.date,
            k.accel,
            secs(k.boot_secs),
            secs(Some(k.tests_secs)),
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for k in &results.kernels {
        for t in &k.tests {
            if !names.contains(&t.name.as_str()) {
                names.push(&t.name);
            }
        }
    }
    s.push_str("\n| Test |");
    for k in &results.kernels {
        s.push_str(&format!(" {} |", k.line));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(results.kernels.len()));
    s.push('\n');
    for name in names {
        s.push_str(&format!("| `{name}` |"));
        for k in &results.kernels {
            let cell = match k.tests.iter().find(|t| t.name == name) {
                Some(t) => match (t.status, t.secs) {
                    (Status::Passed, Some(secs)) => format!("passed ({secs:.0} s)"),
                    (Status::Failed, Some(secs)) => format!("**failed** ({secs:.0} s)"),
                    (status, _) => status.word().to_lowercase(),
                },
                None => "not in the list".into(),
            };
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    let mut failures = String::new();
    for k in &results.kernels {
        for t in k.tests.iter().filter(|t| t.status != Status::Passed) {
            let why = reason(t.detail.as_deref().unwrap_or_default());
            failures.push_str(&format!(
                "- {} `{}`: {}\n",
                k.line,
                t.name,
                why.replace('|', "\\|")
            ));
        }
    }
    if !failures.is_empty() {
        s.push_str(&format!("\nWhy tests failed:\n\n{failures}"));
    }
    s.push_str(&format!(
        "\nGenerated by `cargo xtask vm-test --write-docs` from {source}.\n\n"
    ));
    s
}

/// One line saying why a test failed: its panic message (continued on the
/// next line when it ends with a colon) and crashtrace's own error, if any.
fn reason(detail: &str) -> String {
    let lines: Vec<&str> = detail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("panicked at"))
        .collect();
    let mut why = lines.first().copied().unwrap_or("no detail").to_owned();
    if why.ends_with(':')
        && let Some(next) = lines.get(1)
    {
        why = format!("{why} {next}");
    }
    if let Some(error) = lines.iter().find(|l| l.starts_with("crashtrace: error:"))
        && !why.contains(error)
    {
        why = format!("{why} ({error})");
    }
    why.chars().take(300).collect()
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
