//! Finding separate debug files.
//!
//! Distributions strip binaries and ship their DWARF (and full symbol table)
//! in separate files, found the way gdb finds them: by GNU build-id under
//! `<root>/.build-id/xx/rest.debug`, or by the `.gnu_debuglink` name next to
//! the binary, in its `.debug/` directory, or under `/usr/lib/debug/<dir>`.
//! A candidate is only used if it provably belongs to the binary (same
//! build-id, or the CRC32 the debuglink records), since a stale debug file
//! would silently give wrong lines. dwz supplementary files
//! (`.gnu_debugaltlink`) are found by build-id the same way. When nothing
//! local fits, configured debuginfod servers are asked by build-id.

use std::{
    ffi::{OsStr, OsString},
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use super::{SymbolizeError, debuginfod::Debuginfod, elf::hex, module::ObjectFile};
use crate::support::elfimage::OpenError;

/// The distribution-wide debug directory.
pub(crate) const SYSTEM_DEBUG_DIR: &str = "/usr/lib/debug";

/// Where to look for debug files.
#[derive(Clone, Debug)]
pub(crate) struct Search {
    /// Directories given by the user, searched first.
    pub debug_dirs: Vec<PathBuf>,
    /// The distribution's debug directory.
    pub system_dir: PathBuf,
    /// Servers asked when no local file fits.
    pub debuginfod: Option<Arc<Debuginfod>>,
}

impl Search {
    pub fn new(debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            debug_dirs,
            system_dir: PathBuf::from(SYSTEM_DEBUG_DIR),
            debuginfod: None,
        }
    }

    /// User directories, then the system one unless the user listed it.
    fn roots(&self) -> impl Iterator<Item = &Path> {
        let system = (!self.debug_dirs.contains(&self.system_dir)).then_some(&self.system_dir);
        self.debug_dirs.iter().chain(system).map(PathBuf::as_path)
    }
}

/// How a candidate proves it belongs to the binary.
#[derive(Clone, Copy)]
enum Proof {
    /// The candidate's build-id must equal this one.
    BuildId,
    /// Build-ids must agree if both files have one; otherwise the debuglink
    /// CRC must match if there is one.
    Consistent,
    /// The CRC32 of the whole candidate must be this; build-ids, if both
    /// present, must agree too.
    Crc(u32),
}

fn build_id_path(root: &Path, build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let mut file = hex(rest);
    file.push_str(".debug");
    Some(root.join(".build-id").join(hex(&[*first])).join(file))
}

/// Opens `path` if it exists and is an ELF file; other failures are logged.
fn open_candidate(path: &Path) -> Option<ObjectFile> {
    match ObjectFile::open(path) {
        Ok(file) => Some(file),
        Err(SymbolizeError::File(OpenError::Stat { .. })) => None,
        Err(e) => {
            log::debug!("skipping debug file candidate: {e}");
            None
        }
    }
}

fn try_candidate(path: &Path, main: &ObjectFile, proof: Proof) -> Option<ObjectFile> {
    let candidate = open_candidate(path)?;
    if candidate.key.same_inode(&main.key) {
        return None;
    }
    let ids_agree = match (&main.info.build_id, &candidate.info.build_id) {
        (Some(a), Some(b)) => Some(a == b),
        _ => None,
    };
    let crc_ok = |crc: u32| crc32(&candidate.data) == crc;
    let belongs = match proof {
        Proof::BuildId => ids_agree == Some(true),
        Proof::Consistent => match (ids_agree, &main.info.debuglink) {
            (Some(agree), _) => agree,
            (None, Some((_, crc))) => crc_ok(*crc),
            (None, None) => true,
        },
        Proof::Crc(crc) => ids_agree != Some(false) && crc_ok(crc),
    };
    if !belongs {
        log::debug!("{} does not match {}", path.display(), main.path.display());
        return None;
    }
    Some(candidate)
}

/// A `.gnu_debuglink` name is a plain file name; anything that could walk
/// out of the searched directories is refused.
fn link_name(name: &[u8]) -> Option<&OsStr> {
    let name = OsStr::from_bytes(name);
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !name.as_bytes().contains(&b'/') => Some(name),
        _ => None,
    }
}

/// Finds the separate debug file of `main`: installed, or else from a
/// debuginfod server.
pub(crate) fn find_debug_file(main: &ObjectFile, search: &Search) -> Option<ObjectFile> {
    find_local_debug_file(main, search).or_else(|| {
        let debuginfod = search.debuginfod.as_ref()?;
        let found = debuginfod.find(main.info.build_id.as_deref()?)?;
        (!found.key.same_inode(&main.key)).then_some(found)
    })
}

fn find_local_debug_file(main: &ObjectFile, search: &Search) -> Option<ObjectFile> {
    if let Some(build_id) = &main.info.build_id {
        for root in search.roots() {
            let found = build_id_path(root, build_id)
                .and_then(|path| try_candidate(&path, main, Proof::BuildId));
            if found.is_some() {
                return found;
            }
        }
    }
    if let Some(base) = main.path.file_name() {
        let mut name = OsString::from(base);
        name.push(".debug");
        for dir in &search.debug_dirs {
            if let Some(found) = try_candidate(&dir.join(&name), main, Proof::Consistent) {
                return Some(found);
            }
        }
    }
    let (name, crc) = main.info.debuglink.as_ref()?;
    let name = link_name(name)?;
    let dir = main.path.parent().unwrap_or(Path::new(""));
    let relative_dir = dir.strip_prefix("/").unwrap_or(dir);
    search
        .debug_dirs
        .iter()
        .map(|d| d.join(name))
        .chain([
            dir.join(name),
            dir.join(".debug").join(name),
            search.system_dir.join(relative_dir).join(name),
        ])
        .find_map(|path| try_candidate(&path, main, Proof::Crc(*crc)))
}

/// Removes `.` and resolves `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Finds the dwz supplementary file named by `owner`'s `.gnu_debugaltlink`:
/// by build-id, or by the recorded name if that lies inside a debug root.
pub(crate) fn find_sup(
    owner: &ObjectFile,
    name: &[u8],
    build_id: &[u8],
    search: &Search,
) -> Option<ObjectFile> {
    let matches = |file: &ObjectFile| file.info.build_id.as_deref() == Some(build_id);
    let by_id = search
        .roots()
        .filter_map(|root| build_id_path(root, build_id))
        .filter_map(|path| open_candidate(&path))
        .find(|file| matches(file));
    if by_id.is_some() {
        return by_id;
    }
    let named = Path::new(OsStr::from_bytes(name));
    let dir = owner.path.parent().unwrap_or(Path::new(""));
    let path = normalize(&dir.join(named));
    let local = search
        .roots()
        .any(|root| path.starts_with(root))
        .then(|| open_candidate(&path).filter(|file| matches(file)))
        .flatten();
    local.or_else(|| search.debuginfod.as_ref()?.find(build_id))
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC-32 (IEEE, as in zlib) that `.gnu_debuglink` records.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn link_names_cannot_escape() {
        assert!(link_name(b"libc.so.6.debug").is_some());
        assert!(link_name(b"../etc/shadow").is_none());
        assert!(link_name(b"/etc/shadow").is_none());
        assert!(link_name(b"a/b").is_none());
        assert!(link_name(b"..").is_none());
        assert!(link_name(b"").is_none());
    }

    #[test]
    fn build_id_paths_split_first_byte() {
        assert_eq!(
            build_id_path(Path::new("/d"), &[0xab, 0xcd, 0xef]),
            Some(PathBuf::from("/d/.build-id/ab/cdef.debug"))
        );
        assert_eq!(build_id_path(Path::new("/d"), &[0xab]), None);
        assert_eq!(
            normalize(Path::new("/usr/lib/debug/.build-id/ab/../../.dwz/x")),
            PathBuf::from("/usr/lib/debug/.dwz/x")
        );
    }
}
