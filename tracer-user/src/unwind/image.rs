//! Reading the unwind tables of the binaries a crashed process had mapped.
//!
//! crashtrace runs as root and these paths come from processes owned by
//! anyone, so they are treated like the symbolizer treats them: the path is
//! `stat`ed and must be a regular file of bounded size (a FIFO or a device is
//! never opened), it is opened with `O_NONBLOCK` and must still be the file
//! that was checked. Unlike the symbolizer this module never maps a file:
//! unwinding needs only the program headers and two or three small sections,
//! so those are read into the heap and the file is closed again. A file
//! truncated under us then yields a read error, never a `SIGBUS`.
//!
//! The vDSO has no file. Every 64-bit process on a host gets the same image
//! from the kernel, so crashtrace's own copy stands in for the crashed
//! process's.

use std::{
    fs::{Metadata, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSection, ObjectSegment, ReadRef};

/// Largest file whose tables are read.
const MAX_FILE_SIZE: u64 = 2 << 30;
/// Largest unwind section read (inflated size for compressed ones).
const MAX_SECTION_SIZE: u64 = 256 << 20;
/// Largest vDSO image accepted.
const MAX_VDSO_SIZE: u64 = 1 << 20;
const PAGE_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot stat {}: {source}", path.display())]
    Stat { path: PathBuf, source: io::Error },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("{} is {size} bytes, more than the {MAX_FILE_SIZE}-byte limit", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{} changed while it was being opened", path.display())]
    Changed { path: PathBuf },
    #[error("cannot read unwind tables from {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
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

fn check(path: &Path, meta: &Metadata) -> Result<FileKey, LoadError> {
    if !meta.file_type().is_file() {
        return Err(LoadError::NotRegular {
            path: path.to_owned(),
        });
    }
    if meta.size() > MAX_FILE_SIZE {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: meta.size(),
        });
    }
    Ok(FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    })
}

/// `stat`s `path` (following symlinks) and checks it is a regular file of
/// acceptable size.
pub fn stat_regular(path: &Path) -> Result<FileKey, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError::Stat {
        path: path.to_owned(),
        source,
    })?;
    check(path, &meta)
}

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub filesz: u64,
    pub vaddr: u64,
}

/// A section's load address and contents.
#[derive(Clone, Debug)]
pub struct Section {
    pub addr: u64,
    pub data: Arc<[u8]>,
}

/// What unwinding needs from one ELF image.
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub segments: Vec<Segment>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub debug_frame: Option<Section>,
    pub text: Option<u64>,
    pub got: Option<u64>,
}

impl Image {
    /// Opens `path`, which must still be the file `key` describes, and reads
    /// its unwind tables.
    pub fn load(path: &Path, key: FileKey) -> Result<Self, LoadError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(|source| LoadError::Open {
                path: path.to_owned(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| LoadError::Stat {
            path: path.to_owned(),
            source,
        })?;
        if check(path, &meta)? != key {
            return Err(LoadError::Changed {
                path: path.to_owned(),
            });
        }
        let cache = object::ReadCache::new(file);
        Self::parse(&cache).map_err(|reason| LoadError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Reads the tables of the ELF image in `data`.
    pub fn parse<'d, R: ReadRef<'d>>(data: R) -> Result<Self, String> {
        let file = object::File::parse(data).map_err(|e| e.to_string())?;
        if file.format() != object::BinaryFormat::Elf
            || file.architecture() != object::Architecture::X86_64
            || !file.is_little_endian()
        {
            return Err("not an x86-64 ELF file".into());
        }
        let segments = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                Segment {
                    offset,
                    filesz,
                    vaddr: s.address(),
                }
            })
            .collect();
        Ok(Self {
            segments,
            eh_frame: section(&file, ".eh_frame"),
            eh_frame_hdr: section(&file, ".eh_frame_hdr"),
            debug_frame: section(&file, ".debug_frame"),
            text: file.section_by_name(".text").map(|s| s.address()),
            got: file.section_by_name(".got").map(|s| s.address()),
        })
    }

    /// crashtrace's own vDSO image, if the kernel gave it one.
    pub fn vdso() -> Option<Self> {
        let bytes = own_vdso()?;
        Self::parse(&bytes[..])
            .inspect_err(|e| log::debug!("cannot read the vdso image: {e}"))
            .ok()
    }

    /// Heap bytes this image holds.
    pub fn heap_bytes(&self) -> u64 {
        [&self.eh_frame, &self.eh_frame_hdr, &self.debug_frame]
            .iter()
            .filter_map(|s| s.as_ref())
            .map(|s| s.data.len() as u64)
            .sum()
    }

    /// Maps runtime address `addr`, inside a mapping that starts at
    /// `map_start` and maps the file from `map_offset`, to an ELF virtual
    /// address through the `PT_LOAD` segment holding that file offset.
    pub fn file_address(&self, map_start: u64, map_offset: u64, addr: u64) -> Option<u64> {
        let file_offset = addr.checked_sub(map_start)?.checked_add(map_offset)?;
        let contains = |s: &&Segment| file_offset >= s.offset && file_offset - s.offset < s.filesz;
        // Segments' file ranges do not normally overlap; if they do, prefer
        // the one whose pages actually start the given mapping.
        let segment = self
            .segments
            .iter()
            .filter(contains)
            .find(|s| map_offset >= s.offset & !(PAGE_SIZE - 1))
            .or_else(|| self.segments.iter().find(contains))?;
        segment.vaddr.checked_add(file_offset - segment.offset)
    }
}

/// The (inflated) contents of section `name`, unless absent, empty, too
/// large or unreadable.
fn section<'d, R: ReadRef<'d>>(file: &object::File<'d, R>, name: &str) -> Option<Section> {
    let s = file.section_by_name(name)?;
    if s.size() > MAX_SECTION_SIZE {
        log::debug!("ignoring {name}: {} bytes", s.size());
        return None;
    }
    let compressed = s.compressed_data().ok()?;
    if compressed.uncompressed_size > MAX_SECTION_SIZE {
        log::debug!("ignoring {name}: {} bytes", compressed.uncompressed_size);
        return None;
    }
    let data = match compressed.format {
        object::CompressionFormat::None => compressed.data.to_vec(),
        // Inflating zlib writes into a buffer of exactly the declared size;
        // other formats are not bounded that way and are not inflated.
        object::CompressionFormat::Zlib => compressed
            .decompress()
            .inspect_err(|e| log::debug!("ignoring {name}: {e}"))
            .ok()?
            .into_owned(),
        other => {
            log::debug!("ignoring {name}: {other:?} compression");
            return None;
        }
    };
    (!data.is_empty()).then(|| Section {
        addr: s.address(),
        data: Arc::from(data),
    })
}

/// A copy of this process's vDSO, located through `AT_SYSINFO_EHDR` and
/// bounded by its `[vdso]` line in `/proc/self/maps`.
fn own_vdso() -> Option<Vec<u8>> {
    // SAFETY: getauxval only reads the auxiliary vector.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if base == 0 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let (start, end) = maps
        .lines()
        .filter(|l| l.ends_with("[vdso]"))
        .find_map(|line| {
            let range = line.split_whitespace().next()?;
            let (start, end) = range.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })?;
    if start != base || end <= start || end - start > MAX_VDSO_SIZE {
        return None;
    }
    let len = usize::try_from(end - start).ok()?;
    // SAFETY: the kernel maps the vDSO readable at `start..end` for the life
    // of the process, as /proc/self/maps just confirmed, and never unmaps it.
    let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
    Some(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(segments: Vec<Segment>) -> Image {
        Image {
            segments,
            ..Image::default()
        }
    }

    #[test]
    fn translates_through_load_segments() {
        let elf = image(vec![
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
        ]);
        let base = 0x5555_5555_4000;
        assert_eq!(
            elf.file_address(base + 0x1000, 0x1000, base + 0x1123),
            Some(0x1123)
        );
        assert_eq!(
            elf.file_address(base + 0x3000, 0x2000, base + 0x3e00),
            Some(0x3e00)
        );
        assert_eq!(elf.file_address(base + 0x1000, 0x1000, base + 0x1fff), None);
        assert_eq!(elf.file_address(base, 0, base - 1), None);
        assert_eq!(elf.file_address(0, u64::MAX, 1), None);
    }

    #[test]
    fn refuses_what_is_not_a_regular_elf_file() {
        assert!(matches!(
            stat_regular(Path::new("/dev/null")),
            Err(LoadError::NotRegular { .. })
        ));
        assert!(matches!(
            stat_regular(Path::new("/nonexistent/x")),
            Err(LoadError::Stat { .. })
        ));
        assert!(Image::parse(&b"\x7fELF garbage"[..]).is_err());
        assert!(Image::parse(&[][..]).is_err());
    }

    #[test]
    fn reads_own_executable_and_vdso() {
        let exe = std::env::current_exe().unwrap();
        let image = Image::load(&exe, stat_regular(&exe).unwrap()).unwrap();
        assert!(image.eh_frame.is_some() && image.eh_frame_hdr.is_some());
        assert!(!image.segments.is_empty());
        let vdso = Image::vdso().expect("x86-64 Linux maps a vdso");
        assert!(vdso.eh_frame.is_some());
    }
}
