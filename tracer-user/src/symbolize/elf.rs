//! ELF facts the symbolizer needs before touching DWARF: load segments (to
//! turn runtime addresses into the virtual addresses that DWARF and symbol
//! tables use), identification notes (to find separate debug files), and
//! symbol tables (the fallback when there is no DWARF at all).
//!
//! Everything is copied out of the parsed file into owned values so that the
//! cached state does not borrow the file's bytes.

use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind, SymbolSection};

use crate::support::elfimage;
pub(crate) use crate::support::elfimage::{Segment, TranslateError};

/// Identification and layout of one ELF file.
#[derive(Clone, Debug)]
pub(crate) struct ElfInfo {
    pub segments: Vec<Segment>,
    pub build_id: Option<Vec<u8>>,
    /// `build_id` as lowercase hex, made once for every answer to share.
    build_id_hex: Option<Arc<str>>,
    /// `.gnu_debuglink`: file name and CRC32 of the separate debug file.
    pub debuglink: Option<(Vec<u8>, u32)>,
    /// `.gnu_debugaltlink`: file name and build-id of the dwz supplementary file.
    pub altlink: Option<(Vec<u8>, Vec<u8>)>,
    pub has_dwarf: bool,
    pub has_symtab: bool,
    /// Whether there is a `.gnu_debugdata` section (MiniDebugInfo).
    pub has_minidebug: bool,
    pub endian: gimli::RunTimeEndian,
}

impl ElfInfo {
    pub fn parse(file: &object::File<'_>) -> Result<Self, object::Error> {
        let owned_pair = |(a, b): (&[u8], &[u8])| (a.to_vec(), b.to_vec());
        let has_data = |name: &str| {
            file.section_by_name(name)
                .is_some_and(|s| s.kind() != SectionKind::UninitializedData && s.size() > 0)
        };
        let build_id = file.build_id()?;
        Ok(Self {
            segments: elfimage::load_segments(file),
            build_id: build_id.map(<[u8]>::to_vec),
            build_id_hex: build_id.map(|id| hex(id).into()),
            debuglink: file
                .gnu_debuglink()?
                .map(|(name, crc)| (name.to_vec(), crc)),
            altlink: file.gnu_debugaltlink()?.map(owned_pair),
            has_dwarf: has_data(".debug_info"),
            has_symtab: file.symbol_table().is_some(),
            has_minidebug: has_data(super::minidebug::SECTION),
            endian: if file.is_little_endian() {
                gimli::RunTimeEndian::Little
            } else {
                gimli::RunTimeEndian::Big
            },
        })
    }

    /// Maps runtime address `addr`, inside a mapping that starts at
    /// `map_start` and maps the file from `map_offset`, to an ELF virtual
    /// address.
    pub fn file_address(
        &self,
        map_start: u64,
        map_offset: u64,
        addr: u64,
    ) -> Result<u64, TranslateError> {
        elfimage::file_address(&self.segments, map_start, map_offset, addr)
    }

    /// The build-id as lowercase hex.
    pub fn build_id_hex(&self) -> Option<Arc<str>> {
        self.build_id_hex.clone()
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[derive(Clone, Debug)]
struct Sym {
    addr: u64,
    size: u64,
    name: Box<str>,
}

/// Function symbols of one symbol table, sorted by address, one per address.
#[derive(Debug, Default)]
pub(crate) struct SymbolTable {
    syms: Vec<Sym>,
    heap_bytes: u64,
}

/// How far back to look for a sized symbol that contains an address.
const MAX_SCAN_BACK: usize = 64;

impl SymbolTable {
    /// Reads `.dynsym` if `dynamic`, else `.symtab`.
    pub fn read(file: &object::File<'_>, dynamic: bool) -> Self {
        // Rank aliases at one address: global beats weak beats local.
        let rank = |s: &object::Symbol<'_, '_>| {
            if s.is_global() && !s.is_weak() {
                2
            } else if s.is_weak() {
                1
            } else {
                0
            }
        };
        let symbols = if dynamic {
            file.dynamic_symbols()
        } else {
            file.symbols()
        };
        let mut ranked: Vec<(u64, u8, u64, Box<str>)> = symbols
            .filter(|s| {
                s.kind() == SymbolKind::Text
                    && s.is_definition()
                    && !matches!(s.section(), SymbolSection::Undefined | SymbolSection::None)
            })
            .filter_map(|s| {
                let name = s.name_bytes().ok().filter(|n| !n.is_empty())?;
                let name = String::from_utf8_lossy(name).into_owned().into_boxed_str();
                Some((s.address(), rank(&s), s.size(), name))
            })
            .collect();
        // Best alias first at each address, then keep only that one.
        ranked.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
        ranked.dedup_by_key(|s| s.0);
        let heap_bytes = ranked
            .iter()
            .map(|s| (std::mem::size_of::<Sym>() + s.3.len()) as u64)
            .sum();
        let syms = ranked
            .into_iter()
            .map(|(addr, _, size, name)| Sym { addr, size, name })
            .collect();
        Self { syms, heap_bytes }
    }

    pub fn heap_bytes(&self) -> u64 {
        self.heap_bytes
    }

    /// Name of the function symbol containing `addr`: a sized symbol whose
    /// range covers it, else the nearest preceding symbol if that one has no
    /// size.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let end = self.syms.partition_point(|s| s.addr <= addr);
        let nearest = self.syms.get(end.checked_sub(1)?)?;
        let covering = self.syms[..end]
            .iter()
            .rev()
            .take(MAX_SCAN_BACK)
            .find(|s| s.size > 0 && addr - s.addr < s.size);
        match covering {
            Some(sym) => Some(&sym.name),
            None if nearest.size == 0 => Some(&nearest.name),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_lookup_prefers_covering_then_unsized() {
        let table = SymbolTable {
            syms: vec![
                Sym {
                    addr: 0x100,
                    size: 0x100,
                    name: "big".into(),
                },
                Sym {
                    addr: 0x120,
                    size: 0x10,
                    name: "small".into(),
                },
                Sym {
                    addr: 0x300,
                    size: 0,
                    name: "asm".into(),
                },
            ],
            heap_bytes: 0,
        };
        assert_eq!(table.lookup(0x50), None);
        assert_eq!(table.lookup(0x125), Some("small"));
        assert_eq!(table.lookup(0x140), Some("big"));
        assert_eq!(table.lookup(0x250), None);
        assert_eq!(table.lookup(0x350), Some("asm"));
    }
}
