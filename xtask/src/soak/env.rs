//! What the soak sets up around the daemon and must undo on every exit
//! path, an error or Ctrl-C included: the small tmpfs that holds the store
//! (unmounted on drop), the memory cgroup of the OOM kills, and the
//! programs, built with the integration tests' own builders.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};
use crashtrace_tests::{Harness, cgroup::MemoryCgroup, go_programs, rustprograms};

use super::workload::Programs;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag that the soak polls, so that it
/// unwinds through its guards (daemon, workload, tmpfs) instead of dying.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A tmpfs mounted for the soak; unmounted on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size_mib: u64) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // A mount left by a soak that was killed outright.
        unmount(dir);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0755"))
            .arg("crashtrace-soak")
            .arg(dir)
            .status()
            .context("cannot run mount")?;
        if !status.success() {
            bail!(
                "cannot mount a tmpfs on {} ({status}); the soak runs as root",
                dir.display()
            );
        }
        Ok(Self { dir: dir.into() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills the file system with `file` until the kernel refuses more.
    pub fn fill(&self, file: &Path) -> Result<u64> {
        use std::io::Write;
        let mut f =
            fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
        let mut written = 0u64;
        for chunk in [1usize << 20, 4096, 512] {
            let buf = vec![0x5au8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => return Err(e).context("cannot fill the tmpfs"),
                }
            }
        }
        Ok(written)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount(&self.dir);
    }
}

/// Unmounts `dir` if something is mounted there; lazily when busy.
fn unmount(dir: &Path) {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2 on a NUL-terminated path.
    unsafe {
        if libc::umount2(c.as_ptr(), 0) != 0 {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// The OOM victims' memory limit.
const OOM_LIMIT: u64 = 32 << 20;

/// Builds the programs into `dir/programs` and makes the memory cgroup.
pub fn prepare(dir: &Path) -> Result<(Programs, MemoryCgroup)> {
    let root = dir.join("programs");
    let bins = root.join("bins");
    let _ = fs::remove_dir_all(&bins);
    fs::create_dir_all(&bins).with_context(|| format!("cannot create {}", bins.display()))?;
    // The builders panic with the compiler's output on failure.
    let built = std::panic::catch_unwind(|| {
        let h = Harness::new(&root);
        let natives = [
            "null_deref",
            "div_zero",
            "abort",
            "wild_pointer",
            "double_free",
            "trap",
        ]
        .map(|n| h.program(n))
        .to_vec();
        let go = go_programs::build(&root, "crashy", go_programs::GoBuild::Normal);
        let rust = rustprograms::build_rust(&root, "panicky", false);
        let cgroup = MemoryCgroup::new("crashtrace-soak", OOM_LIMIT);
        (
            natives,
            go,
            rust,
            h.program("memory_hog"),
            h.program("recover"),
            cgroup,
        )
    })
    .map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow::anyhow!("cannot build the soak's programs: {msg}")
    })?;
    let (natives, go, rust, hog, recover, cgroup) = built;
    let looping = bins.join("crash_loop");
    fs::copy(&natives[0], &looping).context("cannot copy the crash-loop program")?;
    Ok((
        Programs {
            natives,
            looping,
            go,
            rust,
            hog,
            recover,
            bins,
            oom_procs: cgroup.procs_file().to_path_buf(),
        },
        cgroup,
    ))
}

/// Whether systemd is PID 1 (then a crash-looping unit could be a real
/// `systemd-run` unit).
pub fn systemd_is_init() -> bool {
    fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}
