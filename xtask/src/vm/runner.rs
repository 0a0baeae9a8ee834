//! Booting a kernel with virtme-ng and waiting for its guest script.
//!
//! virtme-ng boots the kernel under QEMU with the host's root file system
//! shared read-only (9p), so the host-built `crashtrace` and test binaries
//! run unchanged in the guest; the directories the tests write into are
//! shared read-write (`--rwdir`), and the guest's `/tmp` is its own.
//!
//! virtme-ng's exit status is not used: without udev in the guest its
//! script ports are missing, it falls back to the serial console, and then
//! exits 255 whatever the script did. The guest script reports through files
//! in its output directory instead (see `tests/vm/guest.sh`); the console
//! (kernel log and script output) goes to a log file beside it.
//!
//! KVM or TCG: a `/dev/kvm` is not enough. On these machines it is served by
//! `kvm_pvm` (Pagetable-based Virtual Machine: nested virtualization without
//! the CPU's vmx/svm), which runs only kernels built as PVM guests; a stock
//! kernel's decompressor stops in KVM's instruction emulator ("KVM internal
//! error. Suberror: 1", emulation failure on a VEX-encoded instruction), and
//! `-cpu host` makes QEMU abort setting MSR 0x10a. So KVM is used only when
//! the CPU has vmx or svm and `kvm_pvm` is not loaded, else TCG.

use std::{
    env, fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{check_output, kernels::Kernel};

/// The virtme-ng release the harness was written against.
pub const VIRTME_NG: &str = "1.42";
/// Debian packages virtme-ng needs: QEMU, a static busybox for its
/// initramfs, kmod's `depmod`; `python3-venv` for its virtual environment.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "python3-venv",
    "file",
];
const MEMORY: &str = "2G";
const POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }

    /// KVM when it can run a stock kernel here, else TCG; with the reason.
    pub fn detect() -> (Accel, String) {
        if fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_err()
        {
            return (Accel::Tcg, "/dev/kvm cannot be opened".into());
        }
        if Path::new("/sys/module/kvm_pvm").exists() {
            return (
                Accel::Tcg,
                "/dev/kvm is kvm_pvm, which cannot boot stock kernels".into(),
            );
        }
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let hardware = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
        if !hardware {
            return (Accel::Tcg, "the CPU has no vmx or svm flag".into());
        }
        (Accel::Kvm, "/dev/kvm with hardware virtualization".into())
    }
}

/// virtme-ng in `VM_DIR/venv`, installed from PyPI if missing or another
/// version; returns the venv's `bin` directory.
pub fn ensure_virtme(vm_dir: &Path) -> Result<PathBuf> {
    let venv = vm_dir.join("venv");
    let bin = venv.join("bin");
    let want = format!("virtme-ng {VIRTME_NG}");
    let have = Command::new(bin.join("vng"))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if have.as_deref() == Some(want.as_str()) {
        println!("ok: {want} ({})", bin.display());
        return Ok(bin);
    }
    println!("installing: {want} into {}", venv.display());
    check_output(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    check_output(
        Command::new(bin.join("pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VIRTME_NG}")),
    )?;
    Ok(bin)
}

/// One VM: a kernel, the guest script and its directories.
pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    pub accel: Accel,
    pub venv_bin: &'a Path,
    /// The guest's working directory (the workspace root).
    pub cwd: &'a Path,
    /// The guest script, run as `sh SCRIPT OUT`.
    pub script: &'a Path,
    /// Shared read-write with the guest; the script's output directory.
    pub out: &'a Path,
    /// More directories shared read-write (they must exist).
    pub rwdirs: &'a [PathBuf],
    /// Where the console goes.
    pub console: &'a Path,
    pub timeout: Duration,
}

/// How a VM ended.
pub struct Ended {
    /// Host time from starting virtme-ng until the guest script began.
    pub boot: Option<Duration>,
    /// Host time from starting virtme-ng until it exited.
    pub total: Duration,
    /// Whether the guest script wrote its `finished` file.
    pub finished: bool,
    pub timed_out: bool,
    pub status: ExitStatus,
}

impl Boot<'_> {
    /// Boots, calling `tick` while the VM runs; returns when it has stopped.
    pub fn run(&self, tick: &mut dyn FnMut()) -> Result<Ended> {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.venv_bin.to_path_buf()];
        paths.extend(env::split_paths(&path));
        let path = env::join_paths(paths).context("joining PATH")?;

        let console = fs::File::create(self.console)
            .with_context(|| format!("creating {}", self.console.display()))?;
        let console2 = console
            .try_clone()
            .context("duplicating the console file")?;
        let mut cmd = Command::new(self.venv_bin.join("vng"));
        cmd.env("PATH", path)
            .arg("--verbose")
            .arg("--run")
            .arg(&self.kernel.image)
            .args(["--user", "root", "--force-9p", "--memory", MEMORY])
            .arg("--cpus")
            .arg(cpus().to_string())
            .arg("--cwd")
            .arg(self.cwd);
        if self.accel == Accel::Tcg {
            cmd.arg("--disable-kvm");
        }
        for dir in self.rwdirs.iter().map(PathBuf::as_path).chain([self.out]) {
            cmd.arg("--rwdir").arg(dir);
        }
        cmd.arg("--exec").arg(format!(
            "sh {} {}",
            self.script.display(),
            self.out.display()
        ));
        cmd.stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .process_group(0);

        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", super::describe(&cmd)))?;
        let started = self.out.join("started");
        let mut boot = None;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for vng")? {
                break status;
            }
            if boot.is_none() && started.exists() {
                boot = Some(start.elapsed());
            }
            tick();
            if !timed_out && start.elapsed() > self.timeout {
                timed_out = true;
                let group = i32::try_from(child.id()).context("vng's pid")?;
                // SAFETY: kill has no memory-safety preconditions; the group is
                // the one this process started for vng (process_group(0)).
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            thread::sleep(POLL);
        };
        tick();
        if boot.is_none() && started.exists() {
            boot = Some(start.elapsed());
        }
        Ok(Ended {
            boot,
            total: start.elapsed(),
            finished: self.out.join("finished").exists(),
            timed_out,
            status,
        })
    }
}

/// Guest CPUs: the host's, at most 2 (TCG runs one host thread per CPU).
fn cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails unless `dir` can be shared: virtme-ng passes paths on the kernel
/// command line, which splits on whitespace.
pub fn check_shareable(dir: &Path) -> Result<()> {
    if dir.to_string_lossy().contains(char::is_whitespace) {
        bail!(
            "{} contains whitespace, which virtme-ng cannot share",
            dir.display()
        );
    }
    Ok(())
}
