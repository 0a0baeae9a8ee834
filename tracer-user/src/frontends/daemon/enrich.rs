//! Reading where a crash happened from the live system: the dying
//! process's cgroup and the boot id (the [`crate::support::context`] they make).
//!
//! The kernel records carry no cgroup, so the daemon reads
//! `/proc/PID/cgroup` as soon as the first record of a death arrives. A
//! parent that reaps its child at once often wins that race (on a busy
//! machine, nearly always). Then the parent's cgroup is taken instead,
//! labelled `cgroup_source: "parent"`, but only from a parent that is not a
//! supervisor: PID 1, a user's service manager and container shims live in
//! other cgroups than the processes they start, so for their children the
//! context stays unknown rather than wrong. Capturing the cgroup id in the
//! kernel at exit would remove the race.

/// This boot's id, as `journalctl` and `coredumpctl` show it.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().replace('-', ""))
        .filter(|s| !s.is_empty())
}

/// The cgroup v2 path of a live (or not yet reaped) process.
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    // cgroup v2 is the `0::PATH` line; on a hybrid host fall back to the
    // systemd named hierarchy, which follows the same layout.
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::"));
    let named = || {
        text.lines()
            .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
    };
    v2.or_else(named).map(|p| p.trim_end().to_string())
}

/// Processes that start others in cgroups other than their own: their
/// children's cgroup cannot be inferred from theirs.
const SUPERVISORS: &[&str] = &[
    "systemd",
    "init",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "conmon",
    "runc",
    "crun",
    "dockerd",
    "containerd",
];

/// The cgroup of `pid`, else of its parent `ppid` when that says something
/// about `pid` (see the module docs).
pub fn cgroup_of_death(pid: u32, ppid: u32) -> (Option<String>, Option<&'static str>) {
    if let Some(c) = cgroup_of(pid) {
        return (Some(c), Some("process"));
    }
    if ppid <= 1 {
        return (None, None);
    }
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
    let comm = comm.trim_end();
    if comm.is_empty() || SUPERVISORS.iter().any(|s| comm.starts_with(s)) {
        return (None, None);
    }
    match cgroup_of(ppid) {
        Some(c) => (Some(c), Some("parent")),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_and_boot_id_are_readable() {
        let me = std::process::id();
        assert!(cgroup_of(me).is_some_and(|c| c.starts_with('/')));
        assert!(boot_id().is_some_and(|b| b.len() == 32));
        // A reaped child: its parent's cgroup, labelled as such.
        let child = std::process::Command::new("true").spawn().unwrap().wait();
        assert!(child.is_ok());
        let (cgroup, source) = cgroup_of_death(u32::MAX - 1, me);
        assert_eq!((cgroup, source), (cgroup_of(me), Some("parent")));
        assert_eq!(cgroup_of_death(u32::MAX - 1, 1), (None, None));
    }
}
