//! `cargo xtask setup`: checks, and installs when missing, everything the
//! build and the tests need. Prints one line per step.

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt, fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Instant,
};

/// Debian packages the tests use (and the Debian Go releases of
/// `tests/programs/go/versions.txt`).
const TEST_PACKAGES: &str = "gcc g++ libc6-dbg gdb bpftool elfutils binutils debuginfod xz-utils util-linux procps python3 python3-venv systemd prometheus";
/// Debian packages only the benchmarks use.
const BENCH_PACKAGES: &str = "openjdk-17-jdk-headless hyperfine llvm-14";

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// A setup step that could not be completed, with the command that fixes it.
#[derive(Debug)]
pub struct SetupError {
    what: String,
    reason: String,
    fix: String,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { what, reason, fix } = self;
        write!(
            f,
            "setup: cannot install {what}: {reason}; install it with: {fix}"
        )
    }
}

impl std::error::Error for SetupError {}

pub type Result<T> = std::result::Result<T, SetupError>;

pub fn fail<T>(
    what: impl Into<String>,
    reason: impl Into<String>,
    fix: impl Into<String>,
) -> Result<T> {
    let (what, reason, fix) = (what.into(), reason.into(), fix.into());
    Err(SetupError { what, reason, fix })
}

pub fn run(with_bench: bool) -> Result<()> {
    let start = Instant::now();
    nightly_toolchain()?;
    rust_src()?;
    crate::bpf_linker::ensure()?;
    let workspace = crate::workspace_root();
    let go_packages = crate::go_toolchains::debian_packages(workspace)?;
    let mut packages: Vec<&str> = TEST_PACKAGES.split(' ').collect();
    packages.extend(go_packages.iter().map(String::as_str));
    if with_bench {
        packages.extend(BENCH_PACKAGES.split(' '));
    }
    debian_packages(&packages)?;
    crate::go_toolchains::ensure(workspace, &crate::target_dir())?;
    kernel_prerequisites()?;
    println!("setup: complete in {:.2}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn nightly_toolchain() -> Result<()> {
    const WHAT: &str = "nightly toolchain";
    const FIX: &str = "rustup toolchain install nightly --profile minimal";
    let out = capture(&mut command("rustup", "toolchain list"))
        .or_else(|reason| fail(WHAT, reason, format!("https://rustup.rs, then {FIX}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut toolchains = stdout.lines().filter_map(|l| l.split_whitespace().next());
    if let Some(name) = toolchains.find(|t| t.starts_with("nightly")) {
        println!("ok: {WHAT} ({name})");
        return Ok(());
    }
    println!("installing: {WHAT} ({FIX})");
    run_visible(&mut command(
        "rustup",
        "toolchain install nightly --profile minimal",
    ))
    .or_else(|reason| fail(WHAT, reason, FIX))
}

fn rust_src() -> Result<()> {
    const WHAT: &str = "rust-src for nightly";
    const FIX: &str = "rustup component add rust-src --toolchain nightly";
    let out = capture(&mut command(
        "rustup",
        "component list --toolchain nightly --installed",
    ))
    .or_else(|reason| fail(WHAT, reason, FIX))?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "rust-src")
    {
        println!("ok: {WHAT}");
        return Ok(());
    }
    println!("installing: {WHAT} ({FIX})");
    run_visible(&mut command(
        "rustup",
        "component add rust-src --toolchain nightly",
    ))
    .or_else(|reason| fail(WHAT, reason, FIX))
}

pub fn debian_packages(packages: &[&str]) -> Result<()> {
    let sudo = if is_root() { "" } else { "sudo " };
    let fix = |list: &str| {
        format!("{sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends {list}")
    };
    let list = packages.join(" ");
    // dpkg-query exits 1 when some package is unknown; it still lists the others.
    let mut query = Command::new("dpkg-query");
    query
        .args(["-W", "-f=${Package} ${Status}\\n"])
        .args(packages);
    let out = capture_any_status(&mut query)
        .or_else(|reason| fail(format!("Debian packages ({list})"), reason, fix(&list)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed = |pkg: &str| {
        stdout.lines().any(|l| {
            l.split_whitespace().next() == Some(pkg) && l.ends_with("install ok installed")
        })
    };
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("ok: Debian packages ({list})");
        return Ok(());
    }

    let missing = missing.join(" ");
    let what = format!("Debian packages ({missing})");
    if !is_root() {
        return fail(what, "not running as root", fix(&missing));
    }
    println!("installing: {what}");
    let apt = |args: &str| {
        let mut cmd = command("apt-get", args);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        run_visible(&mut cmd)
    };
    apt("-q update").or_else(|reason| fail(&what, reason, fix(&missing)))?;
    apt(&format!("-q install -y --no-install-recommends {missing}"))
        .or_else(|reason| fail(&what, reason, fix(&missing)))
}

fn kernel_prerequisites() -> Result<()> {
    if !Path::new(BTF_PATH).exists() {
        return fail(
            format!("kernel BTF ({BTF_PATH})"),
            "the running kernel does not expose BTF type information",
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y \
             (Debian: apt-get install linux-image-amd64, then reboot into it)",
        );
    }
    println!("ok: kernel BTF ({BTF_PATH})");
    if !is_root() {
        return fail(
            "root privileges",
            format!("running as uid {}; loading BPF programs needs root", euid()),
            "sudo -E env \"PATH=$PATH\" cargo xtask <command>",
        );
    }
    println!("ok: running as root");
    Ok(())
}

fn euid() -> libc::uid_t {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn is_root() -> bool {
    euid() == 0
}

/// The cargo that started us (set by `cargo run`), else `cargo` from PATH.
pub fn cargo_program() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `program` with whitespace-separated `args`.
pub fn command(program: impl AsRef<OsStr>, args: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args.split_whitespace());
    cmd
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(OsStr::to_string_lossy).map(Into::into));
    words.join(" ")
}

fn capture_any_status(cmd: &mut Command) -> std::result::Result<Output, String> {
    let out = cmd.stdin(Stdio::null()).output();
    out.map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))
}

/// Runs `cmd` with its output captured; on failure, says why.
pub fn capture(cmd: &mut Command) -> std::result::Result<Output, String> {
    let out = capture_any_status(cmd)?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr.lines().map(str::trim).find(|l| !l.is_empty());
    let detail = detail.unwrap_or("no error output");
    Err(format!(
        "`{}` failed ({}): {detail}",
        describe(cmd),
        out.status
    ))
}

/// Runs `cmd` with its output shown; on failure, says why.
pub fn run_visible(cmd: &mut Command) -> std::result::Result<(), String> {
    let status = cmd.stdin(Stdio::null()).status();
    let status = status.map_err(|e| format!("cannot run `{}`: {e}", describe(cmd)))?;
    if status.success() {
        return Ok(());
    }
    Err(format!("`{}` failed ({status})", describe(cmd)))
}
