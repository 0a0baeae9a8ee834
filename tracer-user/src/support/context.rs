//! Where a crash happened beyond the process: the cgroup, the systemd
//! unit and container that cgroup belongs to, and the boot.
//!
//! The daemon reads the cgroup while a death is in flight
//! (`daemon::enrich`), the crash store keeps this context next to each
//! report, and the queries rebuild it from stored reports. The type and
//! the rules that derive a unit and a container from a cgroup path live
//! here, below all three, so that none of them reaches into another.

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
}
