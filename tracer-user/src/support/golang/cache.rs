//! Parsed Go tables, kept per file.
//!
//! The unwinder asks about the same few binaries for every frame of every
//! crash, and reading a Go binary's tables copies its data segments, so
//! results are kept, keyed by the file's identity (device, inode, size,
//! modification time) so that the same binary reached through different
//! paths is read once and a rebuilt one is read again. Answers that a file
//! is not Go, and failures, are kept too (they cost nothing), so nothing is
//! retried per frame. Bounded in files and in copied bytes.

use std::{path::Path, sync::Arc};

use super::{GoBinary, go_info};
use crate::support::{
    elfimage::FileKey,
    lru::{Lru, Weigh},
};

pub const MAX_FILES: usize = 32;
pub const MAX_BYTES: u64 = 1 << 30;

/// A file's Go tables, `None` when it is not Go, or why it could not be read.
struct Entry(Result<Option<Arc<GoBinary>>, String>);

impl Weigh for Entry {
    fn heap_bytes(&self) -> u64 {
        match &self.0 {
            Ok(Some(binary)) => binary.heap_bytes(),
            _ => 0,
        }
    }
}

/// A bounded, least-recently-used map from files to their Go tables.
pub struct Cache {
    entries: Lru<FileKey, Entry>,
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
        }
    }

    /// The Go tables of the file at `path`: `Ok(None)` when it is not a Go
    /// executable, an error (as text, kept) when it cannot be read.
    pub fn get(&mut self, path: &Path) -> Result<Option<Arc<GoBinary>>, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        let Entry(value) = self.entries.get_or_insert_with(FileKey::of(&meta), || {
            Entry(
                go_info(path)
                    .map(|b| b.map(Arc::new))
                    .map_err(|e| e.to_string()),
            )
        });
        value.clone()
    }

    #[cfg(test)]
    fn files(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::golang::test_toolchains::{GoProgram, toolchains};

    const SOURCE: &str = "package main\n\nfunc main() {}\n";

    #[test]
    fn keeps_files_by_identity_within_bounds() {
        let newest = toolchains().pop().expect("a Go release");
        let program = GoProgram::new("cache", SOURCE, &newest);
        let exe = program.build("exe", &["-ldflags=-s -w"]);
        let copy = program.dir.join("copy");
        std::fs::copy(&exe, &copy).unwrap();
        let junk = program.dir.join("junk");
        std::fs::write(&junk, b"not elf").unwrap();
        let me = std::env::current_exe().unwrap();

        let mut cache = Cache::new(3, u64::MAX);
        let first = cache.get(&exe).unwrap().expect("go");
        let again = cache.get(&exe).unwrap().expect("go");
        assert!(Arc::ptr_eq(&first, &again), "read once");
        assert_eq!(cache.files(), 1);
        assert!(cache.get(&me).unwrap().is_none(), "not go");
        assert!(cache.get(&junk).is_err() && cache.get(&junk).is_err());
        assert_eq!(cache.files(), 3, "answers and failures are kept");
        assert!(cache.get(&copy).unwrap().is_some());
        assert_eq!(cache.files(), 3, "bounded in files");

        let mut small = Cache::new(8, 1);
        assert!(small.get(&exe).unwrap().is_some() && small.get(&copy).unwrap().is_some());
        assert_eq!(small.files(), 1, "bounded in bytes, newest kept");
        assert!(cache.get(&program.dir).is_err(), "directories are refused");
    }
}
