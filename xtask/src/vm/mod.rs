//! `cargo xtask vm-test`: the kernel matrix. Boots stock Debian kernels
//! (5.10, 6.1, 6.12) under QEMU with virtme-ng and runs the BPF integration
//! tests inside each, because crashtrace's capture depends on the running
//! kernel (its BTF, tracepoints and helpers) and the host has only one.
//!
//! One boot per kernel runs all of that kernel's tests (`tests/vm/tests.txt`)
//! through `tests/vm/guest.sh`, one at a time, with the host-built
//! `target/release/crashtrace` and test binaries. Each kernel's outcome is
//! printed, merged into `target/vm/results.json`, and can be turned into
//! `docs/kernels.md`'s table with `--write-docs`. The command fails if any
//! test failed or any VM did not finish; it never skips a kernel it was
//! asked for.

mod kernels;
mod plan;
mod results;
mod runner;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args};

use kernels::{Kernel, Line};
use plan::Entry;
use results::{KernelResult, Results, Status, TestResult};
use runner::{Accel, Boot};

#[derive(Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct VmTestArgs {
    /// Boot only this kernel line (5.10, 6.1 or 6.12); repeatable. Default:
    /// all three.
    #[arg(long = "kernel", value_name = "LINE", action = ArgAction::Append)]
    pub kernels: Vec<String>,
    /// Emulate the CPU with QEMU's TCG, even where KVM would work.
    #[arg(long, conflicts_with = "kvm")]
    pub tcg: bool,
    /// Use KVM, even where it looks unusable (see `--help`).
    #[arg(long)]
    pub kvm: bool,
    /// Ask Debian's archive for the newest package of each line, instead of
    /// reusing the newest one under target/vm/kernels/.
    #[arg(long)]
    pub refresh_kernels: bool,
    /// Run this shell command in each VM instead of the tests (its output is
    /// printed; it passes when it exits 0).
    #[arg(long, value_name = "COMMAND")]
    pub exec: Option<String>,
    /// Run `cargo xtask bench ARGS` in each VM instead of the tests, on
    /// crashtrace and workloads built by the host first (for example
    /// --bench "--only syscall_loop --rounds 5 --no-bpf-stats").
    #[arg(
        long,
        value_name = "ARGS",
        conflicts_with = "exec",
        allow_hyphen_values = true
    )]
    pub bench: Option<String>,
    /// Only rewrite the "Tested kernels" section of docs/kernels.md from
    /// target/vm/results.json (written by earlier runs); boot nothing.
    #[arg(long)]
    pub write_docs: bool,
    /// Stop a VM that runs longer than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = VM_TIMEOUT)]
    pub timeout: u64,
    /// Stop a test that runs longer than this many seconds (inside the VM).
    #[arg(long, value_name = "SECS", default_value_t = TEST_TIMEOUT)]
    pub test_timeout: u64,
    /// Run only the listed tests whose BINARY::TEST contains one of these.
    #[arg(value_name = "FILTER")]
    pub filters: Vec<String>,
}

const VM_TIMEOUT: u64 = 1800;
const TEST_TIMEOUT: u64 = 600;
/// Boots of one kernel before a boot that never reaches user space counts as
/// the VM stopping early.
const BOOT_ATTEMPTS: u32 = 3;

/// What `cargo xtask vm-test` with no arguments does (`cargo xtask test`'s step).
impl Default for VmTestArgs {
    fn default() -> Self {
        Self {
            kernels: Vec::new(),
            tcg: false,
            kvm: false,
            refresh_kernels: false,
            exec: None,
            bench: None,
            write_docs: false,
            timeout: VM_TIMEOUT,
            test_timeout: TEST_TIMEOUT,
            filters: Vec::new(),
        }
    }
}

const AFTER_HELP: &str = "\
Each kernel boots once, under QEMU through virtme-ng, with the host's root \
file system shared read-only, and runs its tests from tests/vm/tests.txt \
(one line per test: BINARY::TEST [KERNELS]) with the host-built \
target/release/crashtrace. Kernels are Debian's newest linux-image packages \
of each line, fetched with a private apt configuration and cached under \
target/vm/. Results go to target/vm/results.json; --write-docs turns them \
into docs/kernels.md's table.

KVM is used only when the CPU has vmx or svm and /dev/kvm is not kvm_pvm \
(which cannot boot stock kernels); otherwise TCG, which is slower.

The last line is `vm-tests: N passed, N failed`; the exit status is non-zero \
if any test failed or any VM did not finish.

Examples:
  cargo xtask vm-test
  cargo xtask vm-test --kernel 6.12 null_pointer
  cargo xtask vm-test --exec 'uname -r; ls /sys/kernel/btf/vmlinux'
  cargo xtask vm-test --write-docs";

/// Tests (or commands) that passed and failed over all VMs.
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
}

/// Runs `cargo xtask vm-test`; `Ok(None)` for `--write-docs`.
pub fn run(args: &VmTestArgs) -> Result<Option<Totals>> {
    let root = crate::workspace_root();
    let vm_dir = crate::target_dir().join("vm");
    let results_path = vm_dir.join("results.json");
    if args.write_docs {
        let results = Results::load(&results_path)?;
        let source = "target/vm/results.json";
        results::write_docs(&root.join(results::DOCS), &results, source)?;
        results::write_readme(&root.join("README.md"), &results)?;
        println!(
            "vm-test: wrote the tested-kernels table of {} ({} kernels) from {}",
            results::DOCS,
            results.kernels.len(),
            results_path.display()
        );
        return Ok(None);
    }

    let lines = selected_lines(&args.kernels)?;
    let entries = plan::select(plan::load(&root.join(plan::LIST))?, &args.filters)?;
    let (accel, why) = match (args.kvm, args.tcg) {
        (true, _) => (Accel::Kvm, "--kvm".to_owned()),
        (_, true) => (Accel::Tcg, "--tcg".to_owned()),
        _ => Accel::detect(),
    };

    crate::build(args.bench.is_some())?;
    crate::setup::debian_packages(runner::PACKAGES)?;
    let exec = match &args.bench {
        Some(bench) => Some(format!(
            "{} bench --prebuilt {bench}",
            std::env::current_exe()
                .context("finding the xtask binary")?
                .display()
        )),
        None => args.exec.clone(),
    };
    fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    runner::check_shareable(&vm_dir)?;
    let venv_bin = runner::ensure_virtme(&vm_dir)?;
    let mut fetcher = kernels::Fetcher::new(&vm_dir);
    let mut kernels = Vec::new();
    for line in &lines {
        let kernel = fetcher
            .kernel(line, args.refresh_kernels)
            .with_context(|| format!("cannot fetch the {} kernel", line.label))?;
        println!(
            "ok: kernel {} ({} {}, release {})",
            line.label, kernel.package, kernel.version, kernel.release
        );
        kernels.push(kernel);
    }
    let binaries = match exec {
        Some(_) => BTreeMap::new(),
        None => plan::build_test_binaries()?,
    };
    for entry in &entries {
        if exec.is_none() && !binaries.contains_key(&entry.binary) {
            bail!(
                "{} names test binary {:?}, which the tests crate does not build (it has {:?})",
                plan::LIST,
                entry.binary,
                binaries.keys().collect::<Vec<_>>()
            );
        }
    }
    println!("vm-test: accelerator {} ({why})", accel.name());

    let mut totals = Totals {
        passed: 0,
        failed: 0,
    };
    let mut outcomes = Vec::new();
    for kernel in &kernels {
        let vm = Vm {
            kernel,
            accel,
            args,
            venv_bin: &venv_bin,
            out: vm_dir.join("runs").join(kernel.line.label),
        };
        match &exec {
            Some(command) => {
                if vm.exec(command)? {
                    totals.passed += 1;
                } else {
                    totals.failed += 1;
                }
            }
            None => {
                let planned: Vec<Entry> = entries
                    .iter()
                    .filter(|e| e.runs_on(kernel.line))
                    .cloned()
                    .collect();
                let outcome = vm.tests(&planned, &binaries)?;
                totals.passed += outcome.count(Status::Passed);
                totals.failed += outcome.count(Status::Failed) + outcome.count(Status::NotRun);
                outcomes.push(outcome);
            }
        }
    }
    if !outcomes.is_empty() {
        let mut all = Results::load(&results_path)?;
        all.merge(outcomes);
        all.save(&results_path)?;
        println!("vm-test: results in {}", results_path.display());
    }
    Ok(Some(totals))
}

fn selected_lines(labels: &[String]) -> Result<Vec<&'static Line>> {
    if labels.is_empty() {
        return Ok(kernels::LINES.iter().collect());
    }
    let mut lines = Vec::new();
    for label in labels {
        let line = Line::find(label).with_context(|| {
            let known: Vec<&str> = kernels::LINES.iter().map(|l| l.label).collect();
            format!(
                "unknown kernel line {label:?} (known: {})",
                known.join(", ")
            )
        })?;
        if !lines.iter().any(|l: &&Line| l.label == line.label) {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// One kernel's VM and its output directory.
struct Vm<'a> {
    kernel: &'a Kernel,
    accel: Accel,
    args: &'a VmTestArgs,
    venv_bin: &'a Path,
    out: PathBuf,
}

impl Vm<'_> {
    fn label(&self) -> &'static str {
        self.kernel.line.label
    }

    /// Empties the output directory and writes the guest's environment.
    fn prepare(&self) -> Result<()> {
        if self.out.exists() {
            fs::remove_dir_all(&self.out)
                .with_context(|| format!("removing {}", self.out.display()))?;
        }
        fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let root = crate::workspace_root();
        let mut env = String::new();
        let mut set = |key: &str, value: &str| {
            env.push_str(&format!(
                "export {key}='{}'\n",
                value.replace('\'', "'\\''")
            ));
        };
        for key in [
            "PATH",
            "HOME",
            "CC",
            "CXX",
            "RUSTC",
            "RUSTUP_HOME",
            "CARGO_HOME",
        ] {
            if let Ok(value) = std::env::var(key) {
                set(key, &value);
            }
        }
        set("CRASHTRACE_BIN", &crate::crashtrace_bin().to_string_lossy());
        // `kernel_matrix`'s doctor test leaves crashtrace's own account of
        // the kernel here, for the "Tested kernels" table.
        set(
            "CRASHTRACE_DOCTOR_OUT",
            &self.out.join("doctor.json").to_string_lossy(),
        );
        // The guest runs the tests on a private copy of this directory.
        set(
            "CRASHTRACE_VM_TARGET_TMP",
            &crate::target_dir().join("tmp").to_string_lossy(),
        );
        // cargo runs integration tests in their package's directory.
        set(
            "CRASHTRACE_VM_TEST_CWD",
            &root.join("tests").to_string_lossy(),
        );
        set(
            "CRASHTRACE_VM_TEST_TIMEOUT",
            &self.args.test_timeout.to_string(),
        );
        write(&self.out.join("env"), &env)
    }

    /// Boots the kernel with the guest script; prints and returns how it ended.
    fn boot(&self, tick: &mut dyn FnMut()) -> Result<runner::Ended> {
        let target = crate::target_dir();
        // The tests build their C, Rust and Go programs and write their
        // reports under CARGO_TARGET_TMPDIR (target/tmp); Go's caches live
        // in target/go; `--bench` writes to target/xtask-bench. Everything
        // else they write goes to /tmp.
        let rwdirs = [
            target.join("tmp"),
            target.join("go"),
            target.join("xtask-bench"),
        ];
        for dir in &rwdirs {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            runner::check_shareable(dir)?;
        }
        let console = self
            .out
            .with_file_name(format!("{}.console.log", self.label()));
        println!(
            "vm-test: booting {} ({} {}, {})",
            self.label(),
            self.kernel.package,
            self.kernel.version,
            self.accel.name()
        );
        let root = crate::workspace_root();
        let boot = Boot {
            kernel: self.kernel,
            accel: self.accel,
            venv_bin: self.venv_bin,
            cwd: root,
            script: &root.join("tests/vm/guest.sh"),
            out: &self.out,
            rwdirs: &rwdirs,
            console: &console,
            timeout: Duration::from_secs(self.args.timeout),
        };
        let mut attempt = 1;
        let ended = loop {
            let ended = boot.run(tick)?;
            let boot_time = ended
                .boot
                .map_or("never reached the guest script".into(), |d| {
                    format!("guest script started after {:.1}s", d.as_secs_f64())
                });
            println!(
                "vm-test: {}: VM done in {:.1}s ({boot_time})",
                self.label(),
                ended.total.as_secs_f64()
            );
            // A kernel that dies before user space ran none of this
            // project's code. Under TCG, stock kernels occasionally oops
            // while patching their own text at boot (an int3 left behind
            // on the other CPU), so such a boot is tried again, and says so.
            if ended.boot.is_some() || ended.timed_out || attempt == BOOT_ATTEMPTS {
                break ended;
            }
            let kept =
                console.with_file_name(format!("{}.console.attempt{attempt}.log", self.label()));
            let _ = fs::rename(&console, &kept);
            println!(
                "vm-test: {}: the kernel stopped before user space (attempt {attempt} of {BOOT_ATTEMPTS}); booting again. Last console lines ({}):\n{}",
                self.label(),
                kept.display(),
                runner::tail(&kept, 12)
            );
            attempt += 1;
        };
        if !ended.finished {
            println!(
                "vm-test: {}: the VM stopped before its guest script finished; last console lines ({}):\n{}",
                self.label(),
                console.display(),
                runner::tail(&console, 25)
            );
        }
        Ok(ended)
    }

    /// `--exec`: runs `command` in the guest; whether it exited 0.
    fn exec(&self, command: &str) -> Result<bool> {
        self.prepare()?;
        write(&self.out.join("exec"), command)?;
        let ended = self.boot(&mut || {})?;
        let log = fs::read_to_string(self.out.join("exec.log")).unwrap_or_default();
        let status = fs::read_to_string(self.out.join("exec.status")).unwrap_or_default();
        let uname = read_trimmed(&self.out.join("uname"));
        println!(
            "vm-test: {}: uname -r {}, command exit status {}",
            self.label(),
            uname.as_deref().unwrap_or("(none)"),
            if status.trim().is_empty() {
                "(none)"
            } else {
                status.trim()
            }
        );
        for line in log.lines() {
            println!("  | {line}");
        }
        Ok(ended.finished && status.trim() == "0")
    }

    /// Runs `planned` in one boot and collects their results.
    fn tests(
        &self,
        planned: &[Entry],
        binaries: &BTreeMap<String, PathBuf>,
    ) -> Result<KernelResult> {
        self.prepare()?;
        let mut plan = String::new();
        for (i, entry) in planned.iter().enumerate() {
            let binary = &binaries[&entry.binary];
            plan.push_str(&format!("t{i} {} {}\n", binary.display(), entry.test));
        }
        write(&self.out.join("plan"), &plan)?;
        for entry in planned {
            println!("vm-test: {}: will run {}", self.label(), entry.name());
        }

        let results_file = self.out.join("results");
        let mut shown = 0;
        let label = self.label();
        let ended = self.boot(&mut || {
            let text = fs::read_to_string(&results_file).unwrap_or_default();
            for line in text
                .lines()
                .skip(shown)
                .filter(|l| l.ends_with(char::is_numeric))
            {
                if let Some((entry, status, secs)) = parse_result(line, planned) {
                    println!("vm-test: {label}: {} {status} in {secs:.1}s", entry.name());
                }
                shown += 1;
            }
        })?;

        let text = fs::read_to_string(&results_file).unwrap_or_default();
        let why_not_run = if ended.timed_out {
            format!("the VM was stopped after {}s", self.args.timeout)
        } else {
            format!("the VM stopped early ({})", ended.status)
        };
        let mut tests = Vec::new();
        for (i, entry) in planned.iter().enumerate() {
            let id = format!("t{i}");
            let found = text.lines().find_map(|l| {
                let (result, rest) = l.split_once(' ')?;
                (result == id).then_some(rest)
            });
            let log = fs::read_to_string(self.out.join(format!("{id}.log"))).unwrap_or_default();
            let (status, secs, detail) = match found.and_then(|r| r.split_once(' ')) {
                None => (Status::NotRun, None, Some(why_not_run.clone())),
                Some((status, ms)) => {
                    let secs = ms.trim().parse::<f64>().ok().map(|ms| ms / 1000.0);
                    if status == "passed" && log.contains("test result: ok. 1 passed") {
                        (Status::Passed, secs, None)
                    } else if status == "passed" {
                        let why = format!("{} ran no test named {:?}", entry.binary, entry.test);
                        (Status::Failed, secs, Some(why))
                    } else {
                        (Status::Failed, secs, Some(failure_excerpt(&log)))
                    }
                }
            };
            tests.push(TestResult {
                name: entry.name(),
                status,
                secs,
                detail,
            });
        }
        let tests_secs = tests.iter().filter_map(|t| t.secs).sum();
        let facts = fs::read_to_string(self.out.join("facts")).unwrap_or_default();
        let result = KernelResult {
            line: label.to_owned(),
            package: self.kernel.package.clone(),
            version: self.kernel.version.clone(),
            uname: read_trimmed(&self.out.join("uname")),
            accel: self.accel.name().to_owned(),
            date: results::today(),
            boot_secs: ended.boot.map(|d| d.as_secs_f64()),
            tests_secs,
            vm_secs: ended.total.as_secs_f64(),
            btf: facts
                .lines()
                .find_map(|l| l.strip_prefix("btf "))
                .map(|v| v == "yes"),
            error: (!ended.finished).then_some(why_not_run),
            doctor: fs::read(self.out.join("doctor.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
            tests,
        };
        print_kernel(&result, &self.out);
        Ok(result)
    }
}

fn parse_result<'a>(line: &str, planned: &'a [Entry]) -> Option<(&'a Entry, String, f64)> {
    let mut words = line.split_whitespace();
    let index: usize = words.next()?.strip_prefix('t')?.parse().ok()?;
    let status = words.next()?.to_owned();
    let ms: f64 = words.next()?.parse().ok()?;
    Some((planned.get(index)?, status, ms / 1000.0))
}

fn print_kernel(k: &KernelResult, out: &Path) {
    let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.1}s"));
    println!(
        "vm-test: {} summary: uname -r {}, {} {}, BTF {}, boot {}, tests {:.1}s, VM {:.1}s: {} passed, {} failed",
        k.line,
        k.uname.as_deref().unwrap_or("(guest script never ran)"),
        k.package,
        k.version,
        k.btf.map_or("unknown", |b| if b { "yes" } else { "no" }),
        secs(k.boot_secs),
        k.tests_secs,
        k.vm_secs,
        k.count(Status::Passed),
        k.count(Status::Failed) + k.count(Status::NotRun),
    );
    for t in &k.tests {
        println!("  {:<8} {} ({})", t.status.word(), t.name, secs(t.secs));
        if let Some(detail) = &t.detail {
            for line in detail.lines() {
                println!("           {line}");
            }
        }
    }
    if k.tests.iter().any(|t| t.status != Status::Passed) {
        println!("  logs: {}/t*.log", out.display());
    }
}

/// The panic message of a failed test's log (else its last lines), and
/// crashtrace's own error line if the log has one.
fn failure_excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .unwrap_or(lines.len().saturating_sub(4));
    let mut excerpt: Vec<&str> = lines[start..].iter().take(4).copied().collect();
    if let Some(error) = lines.iter().find(|l| l.starts_with("crashtrace: error:"))
        && !excerpt.contains(error)
    {
        excerpt.push(error);
    }
    excerpt
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `cmd` as a shell-like line, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs `cmd` (stdin closed) and returns its stdout; on failure the error
/// names the command, its status and the end of its stderr.
pub fn check_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        bail!("`{}` failed ({}):\n{tail}", describe(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
