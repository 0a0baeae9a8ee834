//! A scratch memory cgroup with a small limit, for OOM-kill tests.
//!
//! cgroup v2 is used when its hierarchy has the memory controller (enabled
//! in the root's `cgroup.subtree_control` if need be); otherwise the v1
//! memory hierarchy (hosts that mount cgroup v2 without controllers, with
//! the memory controller on v1). Either way the kernel enforces the limit
//! through the same `mem_cgroup`, and its OOM killer kills in it.

use std::path::{Path, PathBuf};

/// A memory cgroup removed on drop (once its processes are gone).
pub struct MemoryCgroup {
    dir: PathBuf,
    /// Path relative to the hierarchy's root, as the kernel names it.
    pub relative: String,
    procs: PathBuf,
}

fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 4).then(|| (PathBuf::from(f[1]), f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

impl MemoryCgroup {
    /// Creates `<name>-<pid>` under the hierarchy's root with `limit`
    /// bytes of memory and no swap. Panics, saying why, when no
    /// memory cgroup can be made.
    pub fn new(name: &str, limit: u64) -> Self {
        let leaf = format!("{name}-{}", std::process::id());
        let all = mounts();
        let v2 = all.iter().find(|(dir, fs, _)| {
            fs == "cgroup2"
                && std::fs::read_to_string(dir.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        });
        if let Some((root, _, _)) = v2 {
            let control = root.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "memory") {
                write(&control, "+memory").unwrap_or_else(|e| {
                    panic!(
                        "enabling the memory controller in {}: {e}",
                        control.display()
                    )
                });
            }
            let dir = root.join(&leaf);
            let _ = std::fs::create_dir(&dir);
            write(&dir.join("memory.max"), &limit.to_string())
                .unwrap_or_else(|e| panic!("setting memory.max in {}: {e}", dir.display()));
            let _ = write(&dir.join("memory.swap.max"), "0");
            return Self {
                procs: dir.join("cgroup.procs"),
                relative: format!("/{leaf}"),
                dir,
            };
        }
        let (root, _, _) = all
            .iter()
            .find(|(_, fs, opts)| fs == "cgroup" && opts.split(',').any(|o| o == "memory"))
            .unwrap_or_else(|| {
                panic!("no memory cgroup hierarchy is mounted (neither cgroup2 with the memory controller nor cgroup v1 memory)")
            });
        let dir = root.join(&leaf);
        let _ = std::fs::create_dir(&dir);
        write(&dir.join("memory.limit_in_bytes"), &limit.to_string())
            .unwrap_or_else(|e| panic!("setting memory.limit_in_bytes in {}: {e}", dir.display()));
        // Only present with swap accounting; must not be below the limit.
        let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &limit.to_string());
        Self {
            procs: dir.join("cgroup.procs"),
            relative: format!("/{leaf}"),
            dir,
        }
    }

    /// The file a process writes its pid to, to join the cgroup.
    pub fn procs_file(&self) -> &Path {
        &self.procs
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The killed process may take a moment to leave.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
