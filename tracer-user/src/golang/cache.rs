//! Parsed Go tables, kept per file.
//!
//! The unwinder asks about the same few binaries for every frame of every
//! crash, and reading a Go binary's tables copies its data segments, so
//! results are kept, keyed by the file's identity (device, inode, size,
//! modification time) so that the same binary reached through different
//! paths is read once and a rebuilt one is read again. Answers that a file
//! is not Go, and failures, are kept too (they cost nothing), so nothing is
//! retried per frame. Bounded in files and in copied bytes.

use std::{os::unix::fs::MetadataExt, path::Path, sync::Arc};

use super::{GoBinary, go_info};

pub const MAX_FILES: usize = 32;
pub const MAX_BYTES: u64 = 1 << 30;

type Key = (u64, u64, u64, i64, i64);
type Entry = (Key, Result<Option<Arc<GoBinary>>, String>);

/// A bounded, least-recently-used map from files to their Go tables.
pub struct Cache {
    /// Least recently used first.
    entries: Vec<Entry>,
    max_files: usize,
    max_bytes: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new(MAX_FILES, MAX_BYTES)
    }
}

fn weight(entry: &Entry) -> u64 {
    match &entry.1 {
        Ok(Some(binary)) => binary.heap_bytes(),
        _ => 0,
    }
}

impl Cache {
    pub fn new(max_files: usize, max_bytes: u64) -> Self {
        Self {
            entries: Vec::new(),
            max_files: max_files.max(1),
            max_bytes,
        }
    }

    /// The Go tables of the file at `path`: `Ok(None)` when it is not a Go
    /// executable, an error (as text, kept) when it cannot be read.
    pub fn get(&mut self, path: &Path) -> Result<Option<Arc<GoBinary>>, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(pos) => {
                let entry = self.entries.remove(pos);
                self.entries.push(entry);
            }
            None => {
                let value = go_info(path)
                    .map(|b| b.map(Arc::new))
                    .map_err(|e| e.to_string());
                self.entries.push((key, value));
                self.evict();
            }
        }
        match self.entries.last() {
            Some((_, value)) => value.clone(),
            None => Err("go table cache is empty".into()),
        }
    }

    /// Drops least recently used entries until the limits hold; the newest
    /// entry always stays.
    fn evict(&mut self) {
        let excess = self.entries.len().saturating_sub(self.max_files);
        self.entries.drain(..excess);
        let mut total: u64 = self.entries.iter().map(weight).sum();
        while total > self.max_bytes && self.entries.len() > 1 {
            total = total.saturating_sub(weight(&self.entries.remove(0)));
        }
    }

    #[cfg(test)]
    fn files(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golang::tests::GoProgram;

    const SOURCE: &str = "package main\n\nfunc main() {}\n";

    #[test]
    fn keeps_files_by_identity_within_bounds() {
        let program = GoProgram::new("cache", SOURCE);
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
