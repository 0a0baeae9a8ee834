//! Attaching the libc fatal-path uprobes.
//!
//! Uprobes attach to a file, not a process: every process that maps that
//! libc is covered, and one that never calls `abort()` pays for one
//! breakpoint page. The
//! libcs probed are the ones this host's processes map from its own root:
//! crashtrace's own libc and the usual multiarch locations, each once by
//! inode. A libc inside a container image is a different file and is not
//! probed (its crashes are still reported, without this evidence).

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::programs::{
    UProbe,
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};
use object::{Object as _, ObjectSymbol as _};

/// Where Debian, Fedora and others keep libc, besides crashtrace's own.
const USUAL_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/lib64/libc.so.6",
];

/// The distinct libc files to probe.
pub fn libc_files() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let own = own
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so"))
        });
    let mut seen = HashSet::new();
    own.map(PathBuf::from)
        .chain(USUAL_PATHS.iter().map(PathBuf::from))
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && seen.insert((m.dev(), m.ino())))
        })
        .collect()
}

/// Address distance from `abort` to `__abort_msg` in the libc at `path`
/// (0 when either is missing: the probe then reports the call only).
fn abort_msg_delta(path: &Path) -> u64 {
    let Ok(data) = std::fs::read(path) else {
        return 0;
    };
    let Ok(file) = object::File::parse(&*data) else {
        return 0;
    };
    let find = |name: &str| {
        file.dynamic_symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
    };
    match (find("abort"), find("__abort_msg")) {
        (Some(abort), Some(msg)) => msg.wrapping_sub(abort),
        _ => 0,
    }
}

/// Attaches the `abort` probe to every libc; returns one line per failure.
///
/// One probe only: a uprobe puts a breakpoint into the text page of every
/// process that maps the file, so each probed function costs every new
/// process a private copy of a page. `abort` alone sees all of glibc's
/// fatal checks, whose messages it reads from `__abort_msg`.
pub fn attach(abort: &mut UProbe) -> Vec<String> {
    let mut failures = Vec::new();
    for path in libc_files() {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::Symbol("abort"),
            cookie: Some(abort_msg_delta(&path)),
        };
        if let Err(e) = abort.attach(point, &path, UProbeScope::AllProcesses) {
            failures.push(format!("uprobe abort in {}: {e}", path.display()));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_hosts_libc_with_its_abort_message() {
        let files = libc_files();
        assert!(!files.is_empty(), "crashtrace itself maps a libc");
        assert_ne!(
            abort_msg_delta(&files[0]),
            0,
            "glibc exports abort and __abort_msg"
        );
    }
}
