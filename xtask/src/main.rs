//! Developer tasks for crashtrace: `cargo xtask <command>`.

mod bench;
mod bpf_linker;
mod bpfstats;
mod go_toolchains;
mod layering;
mod membench;
mod setup;
mod soak;
mod storebench;
mod storm;
mod symbench;
mod tracer;
mod vm;

use std::{
    env,
    ffi::OsString,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for crashtrace"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check, and install when missing, the toolchains, bpf-linker and Debian
    /// packages that building and testing need; check the kernel prerequisites.
    Setup {
        /// Also install what `cargo xtask bench` needs (JDK, hyperfine,
        /// llvm-symbolizer).
        #[arg(long)]
        with_bench: bool,
    },
    /// Run setup, then `cargo build --release`.
    Build,
    /// Run setup and build, then `target/release/crashtrace watch ARGS...`.
    #[command(disable_help_flag = true)]
    Watch {
        /// Arguments for `crashtrace watch` (`--help` included).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run setup, build and lint, then `cargo test --release -- --test-threads=2`,
    /// then the two-minute daemon soak and the kernel VM matrix (`vm-test`)
    /// when no cargo or harness arguments were given.
    Test {
        /// Do not run the two-minute daemon soak (`cargo xtask soak --minutes 2`).
        #[arg(long)]
        no_soak: bool,
        /// Also run the kernel VM matrix when cargo or harness arguments
        /// are given (put it before them).
        #[arg(long, conflicts_with = "no_vm")]
        vm: bool,
        /// Do not run the kernel VM matrix.
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (for example `-p tests` or a test name filter).
        #[arg(allow_hyphen_values = true)]
        cargo_args: Vec<OsString>,
        /// Extra arguments for the test harness, after `--` (for example `--nocapture`).
        #[arg(last = true)]
        harness_args: Vec<OsString>,
    },
    /// Check the layering of tracer-user's modules, formatting, and run
    /// clippy on every crate, the BPF crate included.
    Lint,
    /// Measure crashtrace's overhead on signal- and syscall-heavy workloads,
    /// its symbolizer's speed and its memory.
    Bench(bench::BenchArgs),
    /// Fill a crash store with synthetic reports (100,000 by default) and
    /// time the queries on it (`list`, `show`, `groups`, `stats`).
    StoreBench(storebench::StoreBenchArgs),
    /// Run the daemon against a mixed crash workload for N minutes, with
    /// reloads, a SIGKILL and restart and a full store; check its memory,
    /// its accounting of every crash and its store.
    Soak(soak::SoakArgs),
    /// Boot stock Debian kernels (5.10, 6.1, 6.12) under QEMU and run the
    /// BPF integration tests of tests/vm/tests.txt inside each.
    VmTest(vm::VmTestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            if e.is::<setup::SetupError>() {
                eprintln!("{e}");
            } else {
                eprintln!("xtask: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Cmd) -> Result<ExitCode> {
    match command {
        Cmd::Setup { with_bench } => setup::run(with_bench)?,
        Cmd::Build => build(false)?,
        Cmd::Watch { args } => {
            build(false)?;
            let bin = crashtrace_bin();
            let err = Command::new(&bin).arg("watch").args(args).exec();
            bail!("cannot run {}: {err}", bin.display());
        }
        Cmd::Test {
            no_soak,
            vm,
            no_vm,
            cargo_args,
            harness_args,
        } => {
            let run_vm = !no_vm && (vm || (cargo_args.is_empty() && harness_args.is_empty()));
            let run_soak = !no_soak && cargo_args.is_empty() && harness_args.is_empty();
            build(false)?;
            lint()?;
            let mut cmd = cargo();
            cmd.args(["test", "--release"]).args(cargo_args).arg("--");
            if !harness_args
                .iter()
                .any(|a| a.to_string_lossy().starts_with("--test-threads"))
            {
                cmd.arg("--test-threads=2");
            }
            cmd.args(harness_args);
            let host = run_tests(cmd)?;
            let host = if run_soak {
                println!();
                println!("soak: the daemon for 2 minutes (`--no-soak` skips it)");
                let soak = soak::run(&soak::SoakArgs::short()).unwrap_or_else(|e| {
                    println!("soak: FAILED: {e:#}");
                    false
                });
                if soak::interrupted() {
                    return Ok(ExitCode::FAILURE);
                }
                if host == ExitCode::SUCCESS && !soak {
                    ExitCode::FAILURE
                } else {
                    host
                }
            } else {
                println!(
                    "soak: not run ({}; `cargo xtask soak --minutes 2` runs it)",
                    if no_soak {
                        "--no-soak"
                    } else {
                        "cargo test arguments were given"
                    }
                );
                host
            };
            if !run_vm {
                println!(
                    "vm-test: not run ({}; `cargo xtask test --vm ...` or `cargo xtask vm-test` runs it)",
                    if no_vm {
                        "--no-vm"
                    } else {
                        "cargo test arguments were given"
                    }
                );
                return Ok(host);
            }
            let vm = vm_test(&vm::VmTestArgs::default())?;
            return Ok(if host == ExitCode::SUCCESS { vm } else { host });
        }
        Cmd::Lint => {
            setup::run(false)?;
            lint()?;
        }
        Cmd::Bench(args) => bench::run(&args)?,
        Cmd::StoreBench(args) => storebench::run(&args)?,
        Cmd::Soak(args) => {
            build(false)?;
            if !soak::run(&args)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::VmTest(args) => return vm_test(&args),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the VM matrix and closes with its totals.
fn vm_test(args: &vm::VmTestArgs) -> Result<ExitCode> {
    let Some(totals) = vm::run(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    println!();
    println!(
        "vm-tests: {} passed, {} failed",
        totals.passed, totals.failed
    );
    Ok(if totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `cargo test`, passing its output through, and closes with the
/// totals over every test binary: cargo's own last line belongs to whichever
/// binary ran last (often a doc-test run with nothing in it).
fn run_tests(mut cmd: Command) -> Result<ExitCode> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next())
                    && let Ok(n) = n.parse::<u64>()
                {
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!();
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    Ok(exit_code(status))
}

/// `cargo fmt --check`, and clippy with warnings denied on the host crates
/// and on the BPF crate (for its own target, with the nightly toolchain).
fn lint() -> Result<()> {
    for (toolchain, components) in [
        ("stable", &["clippy", "rustfmt"][..]),
        ("nightly", &["clippy"][..]),
    ] {
        let status = Command::new("rustup")
            .args(["component", "add", "--toolchain", toolchain])
            .args(components)
            .status()
            .context("cannot run rustup")?;
        if !status.success() {
            bail!("cannot install {components:?} for the {toolchain} toolchain");
        }
    }
    eprintln!("lint: layering (tracer-user/src)");
    let violations =
        layering::check_dir(&workspace_root().join("tracer-user/src"), "tracer-user/src")?;
    if !violations.is_empty() {
        for v in &violations {
            eprintln!("{v}");
        }
        bail!(
            "lint failed: layering ({} violation(s); the layers are listed in xtask/src/layering.rs)",
            violations.len()
        );
    }
    let steps: [(&str, &[&str]); 3] = [
        ("formatting", &["fmt", "--all", "--check"]),
        (
            "clippy (host crates)",
            &[
                "clippy",
                "--release",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        (
            "clippy (BPF crate)",
            &[
                "+nightly",
                "clippy",
                "-p",
                "tracer-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    for (what, args) in steps {
        eprintln!("lint: {what}");
        let mut cmd = if args[0].starts_with('+') {
            Command::new("cargo")
        } else {
            cargo()
        };
        cmd.current_dir(workspace_root()).args(args);
        let status = cmd
            .status()
            .with_context(|| format!("cannot run cargo for {what}"))?;
        if !status.success() {
            bail!("lint failed: {what}");
        }
    }
    Ok(())
}

/// Setup, then a release build of the workspace's default members.
pub fn build(with_bench: bool) -> Result<()> {
    setup::run(with_bench)?;
    let status = cargo()
        .args(["build", "--release"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    Ok(())
}

/// A cargo command run from the workspace root.
fn cargo() -> Command {
    let mut cmd = Command::new(setup::cargo_program());
    cmd.current_dir(workspace_root());
    cmd
}

pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
}

pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

pub fn crashtrace_bin() -> PathBuf {
    target_dir().join("release/crashtrace")
}

/// The child's exit code, or 128 + signal number if a signal ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}
