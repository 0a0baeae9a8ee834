//! What the unwinder and the symbolizer both need from a binary a crashed
//! process had mapped: opening it without trusting it, knowing whether it
//! is still the file that was parsed, and translating runtime addresses
//! into the ELF virtual addresses its tables use.
//!
//! Both read the same files (the executable and libraries of a dead
//! process) for different tables, and both must apply the same rules, so
//! the rules live here once:
//!
//! * A path is `stat`ed first and refused unless it is a regular file below
//!   [`MAX_FILE_SIZE`]: crashtrace runs as root over paths that processes of
//!   any user chose, so a path may name a FIFO (opening it would block) or a
//!   device (reading `/dev/zero` never ends).
//! * It is opened with `O_NONBLOCK` (a FIFO swapped in after the `stat`
//!   cannot block the open) and the descriptor must be the very file that
//!   was checked ([`open_checked`]).
//! * Parsed state is keyed by [`FileKey`] (device, inode, size, modification
//!   time), not by path: the same library reached through two paths is
//!   parsed once, and a binary rebuilt at the same path is parsed again.
//!   Checking a path's identity costs a `stat`; [`Identities`] lets a batch
//!   of lookups (one crash report, one buffer of addresses) share one
//!   `stat` per path instead of paying it per address.
//! * A runtime address becomes a file offset through its mapping, and a file
//!   offset becomes a virtual address through the `PT_LOAD` segment that
//!   holds it ([`file_address`]), which is what makes PIE executables,
//!   fixed-address executables and shared libraries all work.

use std::{
    ffi::OsString,
    fs::{File, Metadata, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use object::{Object, ObjectSegment};

/// Largest file read.
pub const MAX_FILE_SIZE: u64 = 2 << 30;
const PAGE_SIZE: u64 = 4096;

/// Why a file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `stat` failed (missing file, permission, ...).
    #[error("cannot stat {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The path is a FIFO, device, socket or directory.
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    /// The file is larger than crashtrace is willing to read.
    #[error("{} is {size} bytes, over the {MAX_FILE_SIZE}-byte limit", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    /// Opening the file failed.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was replaced or modified between `stat` and `open`.
    #[error("{} changed while it was being opened", path.display())]
    Changed { path: PathBuf },
}

/// Identity of a file's contents, as far as metadata can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

impl FileKey {
    /// The identity `meta` describes.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// Whether both keys name the same inode, whatever its contents.
    pub fn same_inode(&self, other: &FileKey) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

fn check(path: &Path, meta: &Metadata) -> Result<FileKey, OpenError> {
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular {
            path: path.to_owned(),
        });
    }
    if meta.size() > MAX_FILE_SIZE {
        return Err(OpenError::TooLarge {
            path: path.to_owned(),
            size: meta.size(),
        });
    }
    Ok(FileKey::of(meta))
}

/// `stat`s `path` (following symlinks) and checks it is a regular file of
/// acceptable size.
pub fn stat_regular(path: &Path) -> Result<FileKey, OpenError> {
    let meta = std::fs::metadata(path).map_err(|source| OpenError::Stat {
        path: path.to_owned(),
        source,
    })?;
    check(path, &meta)
}

/// Opens `path` without blocking and checks that the descriptor is still
/// the file `expected` describes.
pub fn open_checked(path: &Path, expected: FileKey) -> Result<(File, Metadata), OpenError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| OpenError::Open {
            path: path.to_owned(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| OpenError::Stat {
        path: path.to_owned(),
        source,
    })?;
    if check(path, &meta)? != expected {
        return Err(OpenError::Changed {
            path: path.to_owned(),
        });
    }
    Ok((file, meta))
}

/// Identities of paths, each `stat`ed at most once per batch.
///
/// Outside a batch every question `stat`s the path, so a file replaced on
/// disk is noticed at once. Inside one (from [`Identities::start_batch`] to
/// [`Identities::end_batch`]) the first answer for a path stands: a batch
/// is a set of lookups made together, such as the frames of one crash, for
/// which one look at the file is as good as many. Failures are not kept.
#[derive(Debug, Default)]
pub struct Identities {
    /// `Some` during a batch: the paths seen so far.
    batch: Option<Vec<(OsString, FileKey)>>,
}

impl Identities {
    /// Keeps the answers given from now until [`Identities::end_batch`].
    pub fn start_batch(&mut self) {
        self.batch = Some(Vec::new());
    }

    /// Forgets every kept answer: the next question `stat`s again.
    pub fn end_batch(&mut self) {
        self.batch = None;
    }

    /// The identity of the regular file at `path`.
    pub fn key(&mut self, path: &Path) -> Result<FileKey, OpenError> {
        let Some(seen) = &mut self.batch else {
            return stat_regular(path);
        };
        if let Some((_, key)) = seen.iter().find(|(p, _)| p == path.as_os_str()) {
            return Ok(*key);
        }
        let key = stat_regular(path)?;
        seen.push((path.as_os_str().to_owned(), key));
        Ok(key)
    }
}

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub filesz: u64,
    pub vaddr: u64,
}

/// The `PT_LOAD` segments of `file`.
pub fn load_segments<'d, R: object::ReadRef<'d>>(file: &object::File<'d, R>) -> Vec<Segment> {
    file.segments()
        .map(|s| {
            let (offset, filesz) = s.file_range();
            Segment {
                offset,
                filesz,
                vaddr: s.address(),
            }
        })
        .collect()
}

/// Why a runtime address has no ELF virtual address.
#[derive(Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// The address is below the start of its mapping.
    BelowMapping,
    /// Mapping start, offset and address add up past 2^64.
    Overflow,
    /// No segment holds the file offset the address maps to.
    NoSegment { file_offset: u64 },
}

/// Maps runtime address `addr`, inside a mapping that starts at `map_start`
/// and maps the file from `map_offset`, to an ELF virtual address through
/// the segment of `segments` that holds that file offset.
pub fn file_address(
    segments: &[Segment],
    map_start: u64,
    map_offset: u64,
    addr: u64,
) -> Result<u64, TranslateError> {
    let delta = addr
        .checked_sub(map_start)
        .ok_or(TranslateError::BelowMapping)?;
    let file_offset = delta
        .checked_add(map_offset)
        .ok_or(TranslateError::Overflow)?;
    let contains = |s: &&Segment| file_offset >= s.offset && file_offset - s.offset < s.filesz;
    // Segments' file ranges do not normally overlap; if they do, prefer the
    // one whose pages actually start the given mapping.
    let segment = segments
        .iter()
        .filter(contains)
        .find(|s| map_offset >= s.offset & !(PAGE_SIZE - 1))
        .or_else(|| segments.iter().find(contains))
        .ok_or(TranslateError::NoSegment { file_offset })?;
    segment
        .vaddr
        .checked_add(file_offset - segment.offset)
        .ok_or(TranslateError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_through_load_segments() {
        // Typical PIE: r-- at 0, r-x at 0x1000, rw- with offset/vaddr skew.
        let segments = [
            Segment {
                offset: 0,
                filesz: 0x600,
                vaddr: 0,
            },
            Segment {
                offset: 0x1000,
                filesz: 0x200,
                vaddr: 0x1000,
            },
            Segment {
                offset: 0x2df0,
                filesz: 0x230,
                vaddr: 0x3df0,
            },
        ];
        let base = 0x5555_5555_4000;
        let at = |start, offset, addr| file_address(&segments, start, offset, addr);
        assert_eq!(at(base + 0x1000, 0x1000, base + 0x1123), Ok(0x1123));
        assert_eq!(at(base + 0x3000, 0x2000, base + 0x3e00), Ok(0x3e00));
        assert_eq!(
            at(base + 0x1000, 0x1000, base + 0x1fff),
            Err(TranslateError::NoSegment {
                file_offset: 0x1fff
            })
        );
        assert_eq!(at(base, 0, base - 1), Err(TranslateError::BelowMapping));
        assert_eq!(at(0, u64::MAX, 1), Err(TranslateError::Overflow));
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        assert!(matches!(
            stat_regular(Path::new("/dev/null")),
            Err(OpenError::NotRegular { .. })
        ));
        assert!(matches!(
            stat_regular(Path::new("/nonexistent/x")),
            Err(OpenError::Stat { .. })
        ));
    }

    #[test]
    fn a_batch_stats_each_path_once() {
        let dir = std::env::temp_dir().join(format!("crashtrace-elfimage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        std::fs::write(&path, b"first").unwrap();
        let mut ids = Identities::default();
        let first = ids.key(&path).unwrap();

        // Outside a batch a replaced file is seen at once.
        let other = dir.join("other");
        std::fs::write(&other, b"second contents").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let second = ids.key(&path).unwrap();
        assert_ne!(first, second);

        // Inside one the first answer stands until the batch ends.
        ids.start_batch();
        assert_eq!(ids.key(&path).unwrap(), second);
        std::fs::write(&other, b"third").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(ids.key(&path).unwrap(), second);
        assert!(ids.key(&dir.join("missing")).is_err());
        ids.end_batch();
        let third = ids.key(&path).unwrap();
        assert_ne!(third, second);
        assert_eq!(third.size, 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
