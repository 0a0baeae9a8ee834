//! Where the Go runtime keeps a thread's goroutine, release by release.
//!
//! When a Go program dies on the system or signal stack, the kernel side
//! follows `g.m.curg` to the goroutine and copies its saved context
//! (`g.sched`) and stack (see the BPF crate's `gostack`). Three of the
//! offsets it needs moved between releases: `m.curg` and `m.gsignal`
//! (Go 1.25 dropped a word from `gobuf`, which `m` embeds) and `gobuf.bp`.
//! They come from a table of the releases whose layout was checked (the
//! test suite checks it against the DWARF of every release of its
//! matrix), and from the binary's own DWARF for a release the table does
//! not know. The table comes first because reading DWARF costs time at the
//! moment it matters most: between a new executable's start and its
//! probes, while a program that crashes at once races them. For a release
//! not in the table and a binary without DWARF, the offsets are unknown:
//! the probes still work, and frames stop at the stack switch, which
//! start-up says.

use object::{Object as _, ObjectSection as _};
use tracer_common::go_cookie::Layout;

/// `m.curg`, `m.gsignal`, `gobuf.bp` through Go 1.24.
const GO_1_17: Layout = Layout {
    m_curg: 192,
    m_gsignal: 80,
    gobuf_bp: 48,
};
/// From Go 1.25 (`gobuf.ret` removed).
const GO_1_25: Layout = Layout {
    m_curg: 184,
    m_gsignal: 72,
    gobuf_bp: 40,
};

/// Most bytes of `.debug_info` and friends inflated to look for the
/// layout: enough for large services, not for a hostile file's bomb.
const DWARF_BUDGET: u64 = 128 << 20;

/// Where a [`Layout`] came from, for what start-up says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Dwarf,
    Table,
}

/// The layout for a Go executable: from the table for `version`
/// (`go1.25.5`), else from `elf`'s DWARF. `Err` says why neither answers.
pub fn layout(elf: &object::File<'_>, version: Option<&str>) -> Result<(Layout, Source), String> {
    if let Some(known) = version.and_then(from_table) {
        return Ok((known, Source::Table));
    }
    if let Some(found) = from_dwarf(elf) {
        return Ok((found, Source::Dwarf));
    }
    Err(match version {
        Some(v) => {
            format!(
                "the runtime's struct layout of {v} is not known here and the binary has no DWARF"
            )
        }
        None => "the binary has neither DWARF nor a Go version".into(),
    })
}

/// The table's layout for `version` (`go1.21.13`, `go1.27rc1`,
/// `go1.25.5 X:nodwarf5`).
pub fn from_table(version: &str) -> Option<Layout> {
    let rest = version.strip_prefix("go1.")?;
    let minor: u32 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    match minor {
        17..=24 => Some(GO_1_17),
        25..=27 => Some(GO_1_25),
        _ => None,
    }
}

/// The offsets as the binary's DWARF describes `runtime.m` and
/// `runtime.gobuf`, when it has DWARF and both types.
pub fn from_dwarf(elf: &object::File<'_>) -> Option<Layout> {
    let mut budget = DWARF_BUDGET;
    let mut load = |name: &str| -> Option<Vec<u8>> {
        let section = elf.section_by_name(name)?;
        let bytes = section.uncompressed_data().ok()?;
        budget = budget.checked_sub(bytes.len() as u64)?;
        Some(bytes.into_owned())
    };
    let info = load(".debug_info")?;
    let abbrev = load(".debug_abbrev")?;
    let strs = load(".debug_str").unwrap_or_default();
    let endian = gimli::LittleEndian;
    let dwarf = gimli::Dwarf {
        debug_info: gimli::DebugInfo::new(&info, endian),
        debug_abbrev: gimli::DebugAbbrev::new(&abbrev, endian),
        debug_str: gimli::DebugStr::new(&strs, endian),
        ..Default::default()
    };
    let mut curg = None;
    let mut gsignal = None;
    let mut bp = None;
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        // Entries only: a full unit would want the line tables too.
        let Ok(abbrevs) = dwarf.abbreviations(&header) else {
            continue;
        };
        let mut entries = header.entries(&abbrevs);
        // Which structure the members being read belong to.
        let mut inside: Option<(&str, isize)> = None;
        while let Ok(Some(entry)) = entries.next_dfs() {
            let depth = entry.depth();
            if inside.is_some_and(|(_, d)| depth <= d) {
                inside = None;
            }
            let name = || {
                entry.attr_value(gimli::DW_AT_name).and_then(|v| match v {
                    gimli::AttributeValue::String(r) => Some(r),
                    gimli::AttributeValue::DebugStrRef(o) => dwarf.debug_str.get_str(o).ok(),
                    _ => None,
                })
            };
            match entry.tag() {
                gimli::DW_TAG_structure_type => {
                    let Some(n) = name() else { continue };
                    inside = match n.slice() {
                        b"runtime.m" => Some(("m", depth)),
                        b"runtime.gobuf" => Some(("gobuf", depth)),
                        _ => None,
                    };
                }
                gimli::DW_TAG_member if inside.is_some() => {
                    let Some(n) = name() else { continue };
                    let offset = match entry.attr_value(gimli::DW_AT_data_member_location) {
                        Some(v) => v.udata_value().and_then(|o| u16::try_from(o).ok()),
                        _ => None,
                    };
                    let slot = match (inside.map(|(s, _)| s), n.slice()) {
                        (Some("m"), b"curg") => &mut curg,
                        (Some("m"), b"gsignal") => &mut gsignal,
                        (Some("gobuf"), b"bp") => &mut bp,
                        _ => continue,
                    };
                    *slot = offset;
                }
                _ => {}
            }
            if let (Some(m_curg), Some(m_gsignal), Some(gobuf_bp)) = (curg, gsignal, bp) {
                return Some(Layout {
                    m_curg,
                    m_gsignal,
                    gobuf_bp,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_map_to_their_layouts() {
        assert_eq!(from_table("go1.19.8"), Some(GO_1_17));
        assert_eq!(from_table("go1.24.11"), Some(GO_1_17));
        assert_eq!(from_table("go1.25.5"), Some(GO_1_25));
        assert_eq!(from_table("go1.27rc1"), Some(GO_1_25));
        assert_eq!(from_table("go1.16.15"), None);
        assert_eq!(from_table("go1.28"), None);
        assert_eq!(from_table("devel +abc"), None);
    }

    /// The table agrees with the DWARF of every release of the matrix, and
    /// a stripped binary falls back to it.
    #[test]
    fn the_table_matches_each_releases_dwarf() {
        use crate::support::golang::test_toolchains::{GoProgram, toolchains};
        for toolchain in toolchains() {
            let program = GoProgram::new(
                "layout",
                "package main\n\nfunc main() { println(\"hi\") }\n",
                &toolchain,
            );
            let plain = std::fs::read(program.build("plain", &[])).unwrap();
            let elf = object::File::parse(&*plain).unwrap();
            let from_dwarf = from_dwarf(&elf);
            assert!(
                from_dwarf.is_some(),
                "Go {}: no layout in DWARF",
                toolchain.version
            );
            let version = crate::support::golang::GoBinary::parse(&*plain)
                .unwrap()
                .unwrap()
                .go_version()
                .unwrap()
                .to_owned();
            assert_eq!(from_dwarf, from_table(&version), "Go {version}");
            let stripped = std::fs::read(program.build("stripped", &["-ldflags=-s -w"])).unwrap();
            let elf = object::File::parse(&*stripped).unwrap();
            assert_eq!(
                layout(&elf, Some(&version)),
                Ok((from_table(&version).unwrap(), Source::Table)),
                "Go {version} stripped"
            );
        }
    }
}
