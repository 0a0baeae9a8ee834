//! Where a crash happened, beyond the process: its cgroup, the systemd
//! unit and container that cgroup belongs to, and the boot.
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

use serde::Serialize;

/// Context added to a stored report (as extra top-level JSON fields).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Context {
    pub boot_id: Option<String>,
    pub cgroup: Option<String>,
    /// `process` (read from the crashed process) or `parent`.
    pub cgroup_source: Option<&'static str>,
    pub unit: Option<String>,
    pub container: Option<Container>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`, or null when the layout
    /// names only the id (a plain `kubepods` path).
    pub runtime: Option<&'static str>,
}

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

/// The context of a cgroup path.
pub fn describe(boot_id: Option<String>, cgroup: Option<String>) -> Context {
    let unit = cgroup.as_deref().and_then(unit_of);
    let container = cgroup.as_deref().and_then(container_of);
    Context {
        boot_id,
        cgroup_source: cgroup.as_ref().map(|_| "process"),
        cgroup,
        unit,
        container,
    }
}

/// The innermost systemd unit in a cgroup path: a `.service` or `.scope`
/// component (slices only group units). A service's own sub-cgroups
/// (`foo.service/worker`) belong to the service.
pub fn unit_of(cgroup: &str) -> Option<String> {
    cgroup
        .split('/')
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_string)
}

/// The container id and runtime from the cgroup layouts of docker,
/// containerd (CRI and plain), CRI-O and podman, with the systemd and the
/// cgroupfs drivers.
pub fn container_of(cgroup: &str) -> Option<Container> {
    const PREFIXES: &[(&str, &str)] = &[
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    const PARENTS: &[(&str, &str)] = &[
        ("docker", "docker"),
        ("libpod_parent", "podman"),
        ("containerd", "containerd"),
    ];
    let parts: Vec<&str> = cgroup.split('/').filter(|c| !c.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        for (prefix, runtime) in PREFIXES {
            if let Some(id) = name.strip_prefix(prefix)
                && is_container_id(id)
            {
                return Some(Container {
                    id: id.to_string(),
                    runtime: Some(runtime),
                });
            }
        }
        if is_container_id(name) {
            let parent = i.checked_sub(1).map(|p| parts[p]);
            let runtime =
                parent.and_then(|p| PARENTS.iter().find(|(name, _)| *name == p).map(|(_, r)| *r));
            let in_kubepods = parts[..i].iter().any(|p| p.starts_with("kubepods"));
            if runtime.is_some() || in_kubepods {
                return Some(Container {
                    id: name.to_string(),
                    runtime,
                });
            }
        }
    }
    None
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    #[test]
    fn units_from_cgroup_paths() {
        assert_eq!(
            unit_of("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            unit_of("/system.slice/foo.service/worker").as_deref(),
            Some("foo.service")
        );
        assert_eq!(
            unit_of("/user.slice/user-1000.slice/user@1000.service/app.slice/bar.service")
                .as_deref(),
            Some("bar.service")
        );
        assert_eq!(
            unit_of("/user.slice/user-0.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(unit_of("/"), None);
        assert_eq!(unit_of("/init.scope").as_deref(), Some("init.scope"));
    }

    #[test]
    fn containers_from_every_layout() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Some("docker")),
            (format!("/docker/{ID}"), Some("docker")),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
                ),
                Some("containerd"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
                Some("cri-o"),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some("podman"),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                Some("podman"),
            ),
            (format!("/kubepods/burstable/pod1/{ID}"), None),
        ];
        for (path, runtime) in cases {
            let c = container_of(&path).unwrap_or_else(|| panic!("no container in {path}"));
            assert_eq!((c.id.as_str(), c.runtime), (ID, runtime), "{path}");
        }
        assert_eq!(container_of("/system.slice/nginx.service"), None);
        assert_eq!(container_of(&format!("/somewhere/{ID}")), None);
        assert_eq!(container_of("/system.slice/docker-abc.scope"), None);
    }

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
