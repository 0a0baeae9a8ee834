//! Which executables get language-runtime probes, and when.
//!
//! Go's fatal paths and Rust's panic handler live inside each executable,
//! so crashtrace probes every such executable it sees run: the command `record` starts (before it
//! starts), every executable a watched process executes (reported by the
//! kernel once per file), and the executables of processes already running
//! when crashtrace starts. The same moments find the libcs those processes
//! see (a container's own), which get libc's `abort` probe.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::{events::ExecRecord, loader::Tracer};

/// Probes the executable `path` (a command about to be started). Prints a
/// warning when it is a Go executable that cannot be probed.
pub fn probe_command(tracer: &mut Tracer, path: &Path) {
    probe(tracer, path, None);
}

/// Probes the file a process just executed, found through `/proc` and
/// checked to be the file the kernel reported; when the process is gone,
/// asks the kernel to report that file's next exec.
pub fn probe_exec(tracer: &mut Tracer, exec: &ExecRecord) {
    let path = PathBuf::from(format!("/proc/{}/exe", exec.pid));
    let same = std::fs::metadata(&path).is_ok_and(|m| m.ino() == exec.ino && m.dev() == exec.dev);
    if same {
        probe(tracer, &path, Some(exec.pid));
        probe_libcs(tracer, exec.pid);
    } else {
        // Gone already (a short-lived process on a busy host): without
        // this the file would never be reported, nor probed, again.
        tracer.forget_exec(exec.ino, exec.dev);
    }
}

/// Puts the libc probe on the libcs `pid` sees that are not probed yet
/// (a container's own, say). Prints a warning per file that fails.
fn probe_libcs(tracer: &mut Tracer, pid: u32) {
    for failure in tracer.probe_libcs_of(pid) {
        eprintln!(
            "crashtrace: warning: aborts in programs using that libc lose their evidence: {failure}"
        );
    }
}

/// Probes the executables of running processes (`pids`, or all when
/// `None`), each file once.
pub fn probe_running(tracer: &mut Tracer, pids: Option<&[u32]>) {
    let all: Vec<u32>;
    let pids = match pids {
        Some(p) => p,
        None => {
            all = crate::support::procfs::pids();
            &all
        }
    };
    let mut seen = HashSet::new();
    for &pid in pids {
        let path = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            probe(tracer, &path, Some(pid));
        }
        probe_libcs(tracer, pid);
    }
}

fn probe(tracer: &mut Tracer, path: &Path, pid: Option<u32>) {
    let shown = || match pid {
        Some(pid) => std::fs::read_link(path)
            .map(|p| format!("{} (pid {pid})", p.display()))
            .unwrap_or_else(|_| format!("pid {pid}")),
        None => path.display().to_string(),
    };
    match tracer.probe_executable(path) {
        Ok(Some(found)) if found.runtime == "go" => {
            let version = found.version.as_deref().unwrap_or("unknown Go version");
            eprintln!(
                "crashtrace: probing the Go runtime of {} ({version}, {} probes)",
                shown(),
                found.targets.len()
            );
            if let Some(warning) = &found.warning {
                eprintln!("crashtrace: warning: {warning}");
            }
        }
        Ok(Some(_)) => {}
        Ok(None) => {}
        Err(e) => eprintln!(
            "crashtrace: warning: runtime crashes (Go, Rust panics) of {} lose their evidence: {e}",
            shown()
        ),
    }
}
