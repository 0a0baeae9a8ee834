//! Reading the unwind tables of the binaries a crashed process had mapped.
//!
//! crashtrace runs as root and these paths come from processes owned by
//! anyone, so they are opened by the same rules as the symbolizer's (see
//! [`crate::support::elfimage`]). Unlike the symbolizer this module never maps a file:
//! unwinding needs only the program headers and two or three small sections,
//! so those are read into the heap and the file is closed again. A file
//! truncated under us then yields a read error, never a `SIGBUS`.
//!
//! The vDSO has no file. Every 64-bit process on a host gets the same image
//! from the kernel, so crashtrace's own copy stands in for the crashed
//! process's.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSection, ReadRef};

use crate::support::{
    elfimage::{self, FileKey, OpenError, Segment},
    procfs::{self, MapsPath},
};

/// Largest unwind section read (inflated size for compressed ones).
const MAX_SECTION_SIZE: u64 = 256 << 20;
/// Largest vDSO image accepted.
const MAX_VDSO_SIZE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] OpenError),
    #[error("cannot read unwind tables from {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
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
        let (file, _) = elfimage::open_checked(path, key)?;
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
        Ok(Self {
            segments: elfimage::load_segments(&file),
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
    /// address.
    pub fn file_address(&self, map_start: u64, map_offset: u64, addr: u64) -> Option<u64> {
        elfimage::file_address(&self.segments, map_start, map_offset, addr).ok()
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
    let (start, end) = procfs::own_maps()
        .ok()?
        .into_iter()
        .find(|m| m.path == MapsPath::Special("[vdso]".into()))
        .map(|m| (m.start, m.end))?;
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

    #[test]
    fn refuses_what_is_not_an_elf_file() {
        assert!(Image::parse(&b"\x7fELF garbage"[..]).is_err());
        assert!(Image::parse(&[][..]).is_err());
    }

    #[test]
    fn reads_own_executable_and_vdso() {
        let exe = std::env::current_exe().unwrap();
        let image = Image::load(&exe, elfimage::stat_regular(&exe).unwrap()).unwrap();
        assert!(image.eh_frame.is_some() && image.eh_frame_hdr.is_some());
        assert!(!image.segments.is_empty());
        let vdso = Image::vdso().expect("x86-64 Linux maps a vdso");
        assert!(vdso.eh_frame.is_some());
    }
}
