//! Finding a dead process's files on this host.
//!
//! The kernel names each mapped file by its path in the crashed process's
//! own mount namespace, and by inode. By the time a report is built the
//! process is usually gone, so its `/proc/PID/root` is too; but a process
//! in a container rarely dies alone, and any live process that shares the
//! mount namespace (a sibling, the container's init) still exposes the same
//! tree. A file from an overlayfs layer is named by the kernel from the
//! layer's root, so each overlay mount is tried too. A candidate counts
//! only when its inode matches: a file replaced since the crash must not
//! be symbolized as if it were the crashed one.
//!
//! A found file is held open and handed out as `/proc/self/fd/N`: a path
//! through another process's root disappears with that process, the open
//! file does not.

use std::{
    collections::HashSet,
    fs::File,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use crate::events::Mapping;

/// Most processes looked at when searching other mount namespaces.
const MAX_PROCESSES: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocateError {
    #[error(
        "the kernel did not name the file, and no file in this host's library directories has its device and inode"
    )]
    NoPath,
    #[error("{0} was replaced after the crash (its inode differs)")]
    Replaced(PathBuf),
    #[error("{0} is not reachable from this host's mount namespace or any live process's")]
    Unreachable(PathBuf),
}

/// The file behind a mapping, open, with a path that stays valid while
/// this value lives.
#[derive(Debug)]
pub struct Located {
    file: File,
    /// Where the file was found.
    pub found_at: PathBuf,
}

impl Located {
    /// `/proc/self/fd/N`: opens the same file for as long as `self` lives.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Opens `candidate` if it is a regular file with the mapping's inode.
/// Sets `replaced` when a file is there but it is another one.
fn open_if_same(candidate: PathBuf, ino: u64, replaced: &mut bool) -> Option<Located> {
    let md = std::fs::metadata(&candidate).ok()?;
    if !md.is_file() || md.ino() != ino {
        *replaced = true;
        return None;
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&candidate)
        .ok()?;
    let same = file.metadata().is_ok_and(|m| m.ino() == ino && m.is_file());
    same.then_some(Located {
        file,
        found_at: candidate,
    })
}

/// The file behind `mapping`, which `pid` had mapped.
pub fn locate(pid: u32, mapping: &Mapping) -> Result<Located, LocateError> {
    let Some(path) = mapping.path.as_ref() else {
        return by_inode(mapping).ok_or(LocateError::NoPath);
    };
    let relative = path.strip_prefix("/").unwrap_or(path);
    let mut replaced = false;
    let mut check = |candidate: PathBuf| open_if_same(candidate, mapping.ino, &mut replaced);
    if let Some(found) = check(path.clone()) {
        return Ok(found);
    }
    if let Some(found) = check(proc_root(pid).join(relative)) {
        return Ok(found);
    }
    if let Some(found) = in_overlay("self", Path::new("/"), relative, mapping.ino) {
        return Ok(found);
    }
    let mut seen_namespaces = HashSet::new();
    if let Ok(own) = std::fs::metadata("/proc/self/ns/mnt") {
        seen_namespaces.insert(own.ino());
    }
    for other in crate::support::procfs::pids()
        .into_iter()
        .take(MAX_PROCESSES)
    {
        let Ok(ns) = std::fs::metadata(format!("/proc/{other}/ns/mnt")) else {
            continue;
        };
        if !seen_namespaces.insert(ns.ino()) {
            continue;
        }
        let root = proc_root(other);
        if let Some(found) = check(root.join(relative)) {
            return Ok(found);
        }
        if let Some(found) = in_overlay(&other.to_string(), &root, relative, mapping.ino) {
            return Ok(found);
        }
    }
    Err(if replaced {
        LocateError::Replaced(path.clone())
    } else {
        LocateError::Unreachable(path.clone())
    })
}

/// Most overlay mounts looked into per mount namespace.
const MAX_OVERLAYS: usize = 256;

/// The file at `relative` under one of the overlayfs mounts of `pid`'s
/// mount namespace (seen through `root`), with the mapping's inode.
///
/// A process that maps a file from an overlay (a container's image, a
/// file written into an overlaid directory) maps the layer's own file,
/// and the kernel names it from the layer's root, which is the overlay's
/// root: `/app/server` for the container's `/app/server`, whatever the
/// overlay's mount point. The overlay shows the layer's inode number.
fn in_overlay(pid: &str, root: &Path, relative: &Path, ino: u64) -> Option<Located> {
    let mounts = crate::support::procfs::overlay_mounts(pid, MAX_OVERLAYS).ok()?;
    mounts.into_iter().find_map(|mount_point| {
        let mount_point = mount_point.strip_prefix("/").unwrap_or(&mount_point);
        // Another overlay's file of that name is not "replaced".
        let mut unrelated = false;
        open_if_same(root.join(mount_point).join(relative), ino, &mut unrelated)
    })
}

/// Where shared libraries live, searched (not recursively) for a mapping
/// the kernel named by device and inode only: the capture programs for
/// kernels without `bpf_loop` walk no library paths.
const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];
/// Entries read at most per directory.
const LIBRARY_DIR_ENTRIES_MAX: usize = 50_000;

/// The file of [`LIBRARY_DIRS`] with the mapping's device and inode. The
/// identity is exact, so a match is the mapped file, never a look-alike.
/// One exception: a file seen through overlayfs (a container's image, a
/// VM's root) shows the overlay's device but keeps its layer's inode
/// number, while the kernel's mapping names the layer's own device; there
/// the inode alone decides.
fn by_inode(mapping: &Mapping) -> Option<Located> {
    if mapping.ino == 0 {
        return None;
    }
    for dir in LIBRARY_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten().take(LIBRARY_DIR_ENTRIES_MAX) {
            // The directory entry's inode needs no stat of its own.
            use std::os::unix::fs::DirEntryExt as _;
            if entry.ino() != mapping.ino {
                continue;
            }
            let path = entry.path();
            let same_dev = std::fs::metadata(&path).is_ok_and(|m| m.dev() == mapping.dev);
            if !same_dev && !on_overlayfs(&path) {
                continue;
            }
            let mut replaced = false;
            if let Some(found) = open_if_same(path, mapping.ino, &mut replaced) {
                return Some(found);
            }
        }
    }
    None
}

fn on_overlayfs(path: &Path) -> bool {
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type, which
    // is only read when the call succeeds.
    unsafe {
        libc::statfs(c_path.as_ptr(), fs.as_mut_ptr()) == 0
            && fs.assume_init().f_type == OVERLAYFS_SUPER_MAGIC
    }
}

fn proc_root(pid: u32) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join("root")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(path: &str, ino: u64) -> Mapping {
        Mapping {
            start: 0,
            end: 0,
            file_offset: 0,
            ino,
            dev: 0,
            path: Some(PathBuf::from(path)),
            path_truncated: false,
            executable: true,
            vdso: false,
        }
    }

    #[test]
    fn a_library_without_a_path_is_found_by_inode() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .iter()
        .find_map(|p| std::fs::metadata(p).ok())
        .expect("this host has glibc");
        let by_inode = Mapping {
            path: None,
            dev: libc.dev(),
            ..mapping("/unused", libc.ino())
        };
        let found = locate(1, &by_inode).expect("found by inode");
        assert!(
            found.found_at.ends_with("libc.so.6"),
            "{}",
            found.found_at.display()
        );
        let unknown = Mapping {
            path: None,
            ..mapping("/unused", u64::MAX - 1)
        };
        assert_eq!(locate(1, &unknown).unwrap_err(), LocateError::NoPath);
    }

    #[test]
    fn finds_a_file_by_path_and_inode() {
        let ino = std::fs::metadata("/bin/sh").unwrap().ino();
        let found = locate(u32::MAX, &mapping("/bin/sh", ino)).unwrap();
        assert_eq!(std::fs::metadata(found.path()).unwrap().ino(), ino);
    }

    #[test]
    fn a_different_inode_is_a_replaced_file() {
        let ino = std::fs::metadata("/bin/sh").unwrap().ino();
        assert_eq!(
            locate(u32::MAX, &mapping("/bin/sh", ino + 1)).map(|l| l.found_at),
            Err(LocateError::Replaced(PathBuf::from("/bin/sh")))
        );
        assert!(matches!(
            locate(u32::MAX, &mapping("/no/such/file", 1)),
            Err(LocateError::Unreachable(_))
        ));
    }
}
