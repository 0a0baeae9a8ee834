//! Names for PLT stubs (`getppid@plt`), which no symbol table has.
//!
//! A call into a shared library goes through a stub in the caller's
//! procedure linkage table, and a crash can stop inside one (a corrupted
//! or unmapped GOT, a stack that overflows during lazy binding). Symbol
//! tables have no entries for stubs, so the nearest preceding symbol (often
//! `_init`) would be reported instead, which is wrong. This module names
//! each x86-64 stub the way gdb and objdump do: the stub jumps through a GOT
//! slot (`jmp *disp(%rip)`), and the dynamic relocation that fills that
//! slot names the function. An address inside a PLT section but in no
//! named stub (the lazy-binding entry PLT0) gets no name at all.

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget, elf};

/// Sections that hold stubs.
const SECTIONS: &[&str] = &[".plt", ".plt.sec", ".plt.got"];
/// Most stubs named per file.
const MAX_STUBS: usize = 1 << 16;
/// `endbr64`, which starts stubs built for indirect branch tracking.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

#[derive(Debug)]
struct Stub {
    start: u64,
    end: u64,
    name: Box<str>,
}

/// The PLT sections of one file and the stubs in them, by address.
#[derive(Debug, Default)]
pub(crate) struct PltTable {
    sections: Vec<(u64, u64)>,
    stubs: Vec<Stub>,
}

/// What a PLT knows about an address.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PltName<'a> {
    /// Not in a PLT section.
    Outside,
    /// In a PLT section, in no stub that can be named.
    Unnamed,
    /// In the stub that calls this function.
    Stub(&'a str),
}

impl PltTable {
    /// Reads the stubs of an x86-64 ELF file; empty for other files.
    pub fn read(file: &object::File<'_>) -> Self {
        let mut table = Self::default();
        if file.architecture() != object::Architecture::X86_64 {
            return table;
        }
        let slots = slot_names(file);
        for name in SECTIONS {
            let Some(section) = file.section_by_name(name) else {
                continue;
            };
            let Ok(data) = section.data() else { continue };
            let start = section.address();
            let Some(end) = start.checked_add(data.len() as u64) else {
                continue;
            };
            table.sections.push((start, end));
            // `.plt.got` stubs are 8 bytes, 16 with `endbr64`; the others 16.
            let size = if *name == ".plt.got" && !data.starts_with(&ENDBR64) {
                8
            } else {
                16
            };
            for (i, stub) in data.chunks_exact(size).enumerate() {
                if table.stubs.len() >= MAX_STUBS {
                    break;
                }
                let stub_start = start + (i * size) as u64;
                let Some(slot) = jump_slot(stub, stub_start) else {
                    continue;
                };
                if let Some(function) = slots.get(&slot) {
                    table.stubs.push(Stub {
                        start: stub_start,
                        end: stub_start + size as u64,
                        name: format!("{function}@plt").into(),
                    });
                }
            }
        }
        table.stubs.sort_unstable_by_key(|s| s.start);
        table
    }

    /// What is known of `addr`.
    pub fn lookup(&self, addr: u64) -> PltName<'_> {
        if !self.sections.iter().any(|&(s, e)| addr >= s && addr < e) {
            return PltName::Outside;
        }
        let after = self.stubs.partition_point(|s| s.start <= addr);
        match after.checked_sub(1).map(|i| &self.stubs[i]) {
            Some(stub) if addr < stub.end => PltName::Stub(&stub.name),
            _ => PltName::Unnamed,
        }
    }

    pub fn heap_bytes(&self) -> u64 {
        self.stubs
            .iter()
            .map(|s| (std::mem::size_of::<Stub>() + s.name.len()) as u64)
            .sum()
    }
}

/// The GOT slot a stub at `addr` jumps through: the target of its first
/// `jmp *disp32(%rip)` (`ff 25`, also behind a `bnd` prefix).
fn jump_slot(stub: &[u8], addr: u64) -> Option<u64> {
    let at = stub.windows(2).position(|w| w == [0xff, 0x25])?;
    let disp = stub.get(at + 2..at + 6)?;
    let disp = i32::from_le_bytes(disp.try_into().ok()?);
    let next = addr.checked_add(at as u64 + 6)?;
    next.checked_add_signed(i64::from(disp))
}

/// The function each GOT slot is filled with, from the jump-slot and
/// GOT relocations against the dynamic symbol table.
fn slot_names(file: &object::File<'_>) -> HashMap<u64, String> {
    let mut names = HashMap::new();
    let (Some(relocations), Some(symbols)) =
        (file.dynamic_relocations(), file.dynamic_symbol_table())
    else {
        return names;
    };
    for (slot, relocation) in relocations.take(MAX_STUBS) {
        let object::RelocationFlags::Elf { r_type } = relocation.flags() else {
            continue;
        };
        if r_type != elf::R_X86_64_JUMP_SLOT && r_type != elf::R_X86_64_GLOB_DAT {
            continue;
        }
        let RelocationTarget::Symbol(index) = relocation.target() else {
            continue;
        };
        let Some(name) = symbols
            .symbol_by_index(index)
            .ok()
            .and_then(|s| s.name().ok().map(str::to_owned))
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        names.insert(slot, name);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_slot_of_plain_and_ibt_stubs() {
        // jmp *0x2fca(%rip); push $0; jmp PLT0
        let plain = [
            0xff, 0x25, 0xca, 0x2f, 0, 0, 0x68, 0, 0, 0, 0, 0xe9, 0xe0, 0xff, 0xff, 0xff,
        ];
        assert_eq!(jump_slot(&plain, 0x1030), Some(0x1030 + 6 + 0x2fca));
        // endbr64; bnd jmp *-0x10(%rip); nop
        let ibt = [
            0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25, 0xf0, 0xff, 0xff, 0xff, 0x0f, 0x1f, 0x44, 0,
            0,
        ];
        assert_eq!(jump_slot(&ibt, 0x2000), Some(0x2000 + 11 - 0x10));
        assert_eq!(jump_slot(&[0x90; 16], 0x1000), None);
        assert_eq!(jump_slot(&[0xff, 0x25, 1], 0x1000), None);
        assert_eq!(jump_slot(&plain, u64::MAX - 2), None);
    }

    #[test]
    fn looks_addresses_up() {
        let table = PltTable {
            sections: vec![(0x1020, 0x1070)],
            stubs: vec![
                Stub {
                    start: 0x1030,
                    end: 0x1040,
                    name: "_exit@plt".into(),
                },
                Stub {
                    start: 0x1060,
                    end: 0x1070,
                    name: "getppid@plt".into(),
                },
            ],
        };
        assert_eq!(table.lookup(0x1000), PltName::Outside);
        assert_eq!(table.lookup(0x1020), PltName::Unnamed, "PLT0");
        assert_eq!(table.lookup(0x103b), PltName::Stub("_exit@plt"));
        assert_eq!(table.lookup(0x1045), PltName::Unnamed);
        assert_eq!(table.lookup(0x1060), PltName::Stub("getppid@plt"));
        assert_eq!(table.lookup(0x1070), PltName::Outside);
    }
}
