//! The parts of a Go executable that its runtime tables live in.
//!
//! Go's tables (pclntab, the inline trees under `go:func.*`, buildinfo,
//! `runtime.firstmoduledata`) sit in the read-only and data segments, and
//! point at each other by virtual address. So rather than a handful of
//! sections, the file bytes of every non-executable `PT_LOAD` segment are
//! copied (the text segment, usually the largest, is left out), and every
//! read goes through [`Memory::read`] by virtual address, bounds-checked.
//! Copying, not mapping, means a file truncated by its owner while we read
//! it cannot kill crashtrace with `SIGBUS`, and section headers are
//! optional: a binary whose sections were removed still has segments.

use object::{Object, ObjectSection, ObjectSegment, ReadRef, SegmentFlags, elf};

use super::GoError;

/// Most bytes copied out of one file.
pub(crate) const MAX_COPY: u64 = 1 << 30;

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Load {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub executable: bool,
    pub writable: bool,
}

/// The file bytes of one segment, at its virtual address.
#[derive(Debug)]
pub(crate) struct Copied {
    pub vaddr: u64,
    pub writable: bool,
    pub data: Vec<u8>,
}

/// Copied segments, read by virtual address.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    pub loads: Vec<Load>,
    pub copies: Vec<Copied>,
}

impl Memory {
    /// `len` bytes at `vaddr`, if one copied segment holds all of them.
    pub fn read(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        self.copies.iter().find_map(|c| {
            let start = vaddr.checked_sub(c.vaddr)?;
            let end = start.checked_add(len)?;
            let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
            c.data.get(start..end)
        })
    }

    /// Every copied byte from `vaddr` to the end of its segment.
    pub fn rest(&self, vaddr: u64) -> Option<&[u8]> {
        self.copies.iter().find_map(|c| {
            let start = usize::try_from(vaddr.checked_sub(c.vaddr)?).ok()?;
            c.data.get(start..)
        })
    }

    /// File offset of virtual address `vaddr`, through the `PT_LOAD`
    /// segment that holds it. This is what a uprobe is attached at.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads.iter().find_map(|l| {
            let delta = vaddr.checked_sub(l.vaddr)?;
            (delta < l.filesz).then(|| l.offset.checked_add(delta))?
        })
    }

    /// Whether `vaddr` is in an executable segment.
    pub fn is_text(&self, vaddr: u64) -> bool {
        self.loads
            .iter()
            .any(|l| l.executable && vaddr >= l.vaddr && vaddr - l.vaddr < l.filesz)
    }

    pub fn heap_bytes(&self) -> u64 {
        self.copies.iter().map(|c| c.data.len() as u64).sum()
    }
}

/// What is read from the ELF file before the Go tables are looked at.
#[derive(Debug, Default)]
pub(crate) struct Image {
    pub memory: Memory,
    /// `.gopclntab` (`.data.rel.ro.gopclntab` in PIE builds): address, size.
    pub pclntab_section: Option<(u64, u64)>,
    /// `.go.buildinfo`: address.
    pub buildinfo_section: Option<u64>,
}

impl Image {
    /// Reads the segments of ELF file `data`; `None` when its section
    /// headers show it is not a Go executable (then nothing is copied). A
    /// file without section headers is read and searched.
    pub fn parse<'d, R: ReadRef<'d>>(data: R) -> Result<Option<Self>, GoError> {
        let total = data
            .len()
            .map_err(|()| GoError::Elf("cannot tell the file's size".into()))?;
        let file = object::File::parse(data).map_err(|e| GoError::Elf(e.to_string()))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(GoError::Elf("not an elf file".into()));
        }
        if !file.is_little_endian() {
            return Err(GoError::Elf("big-endian files are not supported".into()));
        }
        let pclntab_section = [".gopclntab", ".data.rel.ro.gopclntab"]
            .iter()
            .find_map(|name| file.section_by_name(name))
            .map(|s| (s.address(), s.size()));
        let buildinfo_section = file.section_by_name(".go.buildinfo").map(|s| s.address());
        let has_sections = file.sections().any(|s| s.size() > 0);
        let go_note = file.section_by_name(".note.go.buildid").is_some();
        if has_sections && pclntab_section.is_none() && buildinfo_section.is_none() && !go_note {
            return Ok(None);
        }
        let mut memory = Memory::default();
        let mut budget = MAX_COPY;
        for segment in file.segments() {
            let p_flags = match segment.flags() {
                SegmentFlags::Elf { p_flags } => p_flags,
                _ => 0,
            };
            let (offset, filesz) = segment.file_range();
            let load = Load {
                vaddr: segment.address(),
                offset,
                filesz,
                executable: p_flags & elf::PF_X != 0,
                writable: p_flags & elf::PF_W != 0,
            };
            memory.loads.push(load);
            // Text is only needed when the pclntab was linked into it.
            let holds_pclntab = pclntab_section
                .is_some_and(|(addr, _)| addr >= load.vaddr && addr - load.vaddr < load.filesz);
            if filesz == 0 || (load.executable && !holds_pclntab) {
                continue;
            }
            // A segment past the end of the file is refused before any
            // buffer of its claimed size is allocated.
            if offset.checked_add(filesz).is_none_or(|end| end > total) {
                return Err(GoError::Elf(format!(
                    "segment at {:#x} extends past the end of the file",
                    load.vaddr
                )));
            }
            if filesz > budget {
                return Err(GoError::Elf(format!(
                    "segments hold more than {MAX_COPY} bytes"
                )));
            }
            budget -= filesz;
            let bytes = segment
                .data()
                .map_err(|e| GoError::Elf(format!("segment at {:#x}: {e}", load.vaddr)))?;
            memory.copies.push(Copied {
                vaddr: load.vaddr,
                writable: load.writable,
                data: bytes.to_vec(),
            });
        }
        Ok(Some(Self {
            memory,
            pclntab_section,
            buildinfo_section,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_by_virtual_address_within_bounds() {
        let memory = Memory {
            loads: vec![Load {
                vaddr: 0x1000,
                offset: 0x200,
                filesz: 0x10,
                executable: true,
                writable: false,
            }],
            copies: vec![Copied {
                vaddr: 0x1000,
                writable: false,
                data: (0u8..16).collect(),
            }],
        };
        assert_eq!(memory.read(0x1002, 2), Some(&[2u8, 3][..]));
        assert_eq!(memory.read(0x100f, 2), None);
        assert_eq!(memory.read(u64::MAX, 2), None);
        assert_eq!(memory.read(0xfff, 1), None);
        assert_eq!(memory.rest(0x100e), Some(&[14u8, 15][..]));
        assert_eq!(memory.file_offset(0x1004), Some(0x204));
        assert_eq!(memory.file_offset(0x1010), None);
        assert!(memory.is_text(0x100f) && !memory.is_text(0x1010));
        assert!(Image::parse(&b"\x7fELF junk"[..]).is_err());
        assert!(Image::parse(&[][..]).is_err());
    }
}
