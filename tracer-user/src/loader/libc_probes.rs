//! Attaching the libc fatal-path uprobes.
//!
//! Uprobes attach to a file, not a process: every process that maps that
//! libc is covered, and one that never calls `abort()` pays for one
//! breakpoint page. A host has several libcs: its own, and one in each
//! container image (a different file, seen through the process's root).
//! So the probe goes on every libc file, each once by inode: at start,
//! crashtrace's own and the usual multiarch locations; then, for each
//! process whose executable the kernel reports (and each running at
//! start), the libcs it maps and those at the usual locations under its
//! root. The number of files is bounded: each probe is a kernel object.

use std::{
    collections::HashSet,
    fs::File,
    io::Read as _,
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
    let own = mapped_libcs(crate::support::procfs::own_maps().unwrap_or_default());
    let mut seen = HashSet::new();
    own.into_iter()
        .chain(USUAL_PATHS.iter().map(PathBuf::from))
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && seen.insert((m.dev(), m.ino())))
        })
        .collect()
}

/// Most libc files probed at once.
pub const MAX_LIBC_FILES: usize = 64;
/// A libc is a few MiB; anything far larger is not read.
const MAX_LIBC_BYTES: u64 = 64 << 20;

/// The libcs of process `pid`: those it maps, and those at the usual
/// locations under its root (a container's image), as paths through
/// `/proc/PID/root`, so that they name the files the process sees.
pub fn libcs_of(pid: u32) -> Vec<PathBuf> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mapped = mapped_libcs(crate::support::procfs::maps(pid).unwrap_or_default());
    let mut seen = HashSet::new();
    mapped
        .into_iter()
        .chain(USUAL_PATHS.iter().map(PathBuf::from))
        .filter(|p| seen.insert(p.clone()))
        .map(|p| root.join(p.strip_prefix("/").unwrap_or(&p)))
        .collect()
}

/// The libc files among `maps`, each path once, in order.
fn mapped_libcs(maps: Vec<crate::support::procfs::MapsEntry>) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    maps.into_iter()
        .filter_map(|m| m.file().map(Path::to_path_buf))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so"))
        })
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// The libc files probed, by identity.
#[derive(Default)]
pub struct LibcProbes {
    probed: HashSet<(u64, u64)>,
    /// Files that failed once, not tried again.
    failed: HashSet<(u64, u64)>,
    /// The limit was reached and said.
    full: bool,
}

impl LibcProbes {
    /// Attaches `abort` to the libc at `path` unless that file is probed
    /// (or failed) already. An error says why, once per file.
    pub fn probe(&mut self, abort: &mut UProbe, path: &Path) -> Result<(), String> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        let key = (meta.dev(), meta.ino());
        if !meta.is_file() || self.probed.contains(&key) || self.failed.contains(&key) {
            return Ok(());
        }
        if self.probed.len() >= MAX_LIBC_FILES {
            if std::mem::replace(&mut self.full, true) {
                return Ok(());
            }
            return Err(format!(
                "{MAX_LIBC_FILES} libc files are probed already; {} and later ones are not",
                path.display()
            ));
        }
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::Symbol("abort"),
            cookie: Some(abort_msg_delta(path, meta.len())),
        };
        match abort.attach(point, path, UProbeScope::AllProcesses) {
            Ok(_) => {
                self.probed.insert(key);
                Ok(())
            }
            Err(e) => {
                self.failed.insert(key);
                Err(format!("uprobe abort in {}: {e}", path.display()))
            }
        }
    }
}

/// Address distance from `abort` to `__abort_msg` in the libc at `path`
/// (0 when either is missing: the probe then reports the call only).
fn abort_msg_delta(path: &Path, len: u64) -> u64 {
    if len > MAX_LIBC_BYTES {
        return 0;
    }
    let mut data = Vec::new();
    let read = File::open(path).and_then(|f| f.take(MAX_LIBC_BYTES).read_to_end(&mut data));
    if read.is_err() {
        return 0;
    }
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

/// Attaches the `abort` probe to this host's libcs; returns one line per
/// failure.
///
/// One probe only: a uprobe puts a breakpoint into the text page of every
/// process that maps the file, so each probed function costs every new
/// process a private copy of a page. `abort` alone sees all of glibc's
/// fatal checks, whose messages it reads from `__abort_msg`.
pub fn attach(probes: &mut LibcProbes, abort: &mut UProbe) -> Vec<String> {
    libc_files()
        .iter()
        .filter_map(|path| probes.probe(abort, path).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_hosts_libc_with_its_abort_message() {
        let files = libc_files();
        assert!(!files.is_empty(), "crashtrace itself maps a libc");
        let len = std::fs::metadata(&files[0]).unwrap().len();
        assert_ne!(
            abort_msg_delta(&files[0], len),
            0,
            "glibc exports abort and __abort_msg"
        );
    }

    #[test]
    fn a_process_s_libcs_are_seen_through_its_root() {
        let me = std::process::id();
        let found = libcs_of(me);
        let root = format!("/proc/{me}/root/");
        assert!(found.iter().all(|p| p.starts_with(&root)), "{found:?}");
        assert!(
            found
                .iter()
                .any(|p| p.exists() && p.to_string_lossy().contains("libc.so")),
            "this process maps a libc: {found:?}"
        );
        let unique: HashSet<_> = found.iter().collect();
        assert_eq!(unique.len(), found.len(), "each path once: {found:?}");
    }
}
