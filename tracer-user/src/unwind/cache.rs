//! Parsed unwind tables, kept per file.
//!
//! Crash stacks pass through the same few libraries (libc, the language
//! runtime) over and over, and indexing a file's CFI costs far more than
//! one lookup, so parsed tables are kept, keyed by the file's identity
//! (device, inode, size, modification time) rather than its path: the same
//! library reached through `/proc/PID/root` or `/proc/PID/map_files` is
//! parsed once, and a rebuilt binary at the same path is parsed again.
//! Failures are kept too, so an unreadable file is not retried for every
//! frame. The cache is bounded in files and in heap bytes. A path's identity
//! is checked once per unwind, not once per frame.

use std::path::Path;

use super::{cfi::Cfi, image::Image};
use crate::support::{
    elfimage::{FileKey, Identities},
    lru::{Lru, Weigh},
};

pub const MAX_FILES: usize = 64;
pub const MAX_BYTES: u64 = 512 << 20;

/// A file's parsed tables, or why there are none.
struct Entry(Result<Cfi, String>);

impl Weigh for Entry {
    fn heap_bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, Cfi::heap_bytes)
    }
}

pub struct Cache {
    entries: Lru<FileKey, Entry>,
    /// Identities of the paths asked for, kept during one unwind.
    pub identities: Identities,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new(MAX_FILES, MAX_BYTES)
    }
}

impl Cache {
    pub fn new(max_files: usize, max_bytes: u64) -> Self {
        Self {
            entries: Lru::new(max_files, max_bytes),
            identities: Identities::default(),
        }
    }

    /// The tables of the file at `path`, parsed on first use.
    pub fn get(&mut self, path: &Path) -> Result<&Cfi, String> {
        let key = self.identities.key(path).map_err(|e| e.to_string())?;
        let Entry(cfi) = self.entries.get_or_insert_with(key, || {
            Entry(
                Image::load(path, key)
                    .map(Cfi::new)
                    .map_err(|e| e.to_string()),
            )
        });
        cfi.as_ref().map_err(Clone::clone)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_files_by_identity_within_bounds() {
        let dir =
            std::env::temp_dir().join(format!("crashtrace-unwind-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = std::env::current_exe().unwrap();
        let copy = dir.join("copy");
        std::fs::copy(&exe, &copy).unwrap();
        let junk = dir.join("junk");
        std::fs::write(&junk, b"not elf").unwrap();
        let mut cache = Cache::new(2, u64::MAX);
        assert!(cache.get(&exe).is_ok());
        assert!(cache.get(&exe).is_ok());
        assert_eq!(cache.len(), 1, "same file, one entry");
        assert!(cache.get(&junk).is_err());
        assert!(cache.get(&junk).is_err());
        assert_eq!(cache.len(), 2, "failures are kept");
        assert!(cache.get(&copy).is_ok());
        assert_eq!(cache.len(), 2, "bounded in files");
        let mut small = Cache::new(8, 1);
        assert!(small.get(&exe).is_ok() && small.get(&copy).is_ok());
        assert_eq!(small.len(), 1, "bounded in bytes, newest kept");
        assert!(cache.get(&dir).is_err(), "directories are refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
