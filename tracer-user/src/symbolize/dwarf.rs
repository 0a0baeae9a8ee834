//! DWARF lookups: loading the sections addr2line needs and turning its frame
//! iterator into [`SymbolFrame`]s, innermost inlined function first.
//!
//! Only the sections that line and function lookups read are loaded, so that
//! location lists, macro tables and the like are never inflated for nothing.

use std::sync::Arc;

use gimli::SectionId;
use object::Object;

use super::{
    SymbolFrame,
    demangle::Names,
    file::{Backing, SectionBytes, section_bytes},
};

/// Reader over section bytes that stay alive as long as the reader does.
pub(crate) type Reader = gimli::EndianReader<gimli::RunTimeEndian, SectionBytes>;

/// Deepest inline chain reported for one address.
const MAX_INLINE_DEPTH: usize = 256;

/// A section failed to load; `section` names it.
#[derive(Debug)]
pub(crate) struct SectionError {
    pub section: String,
    pub reason: String,
}

fn wanted(id: SectionId) -> bool {
    matches!(
        id,
        SectionId::DebugAbbrev
            | SectionId::DebugAddr
            | SectionId::DebugAranges
            | SectionId::DebugInfo
            | SectionId::DebugLine
            | SectionId::DebugLineStr
            | SectionId::DebugRanges
            | SectionId::DebugRngLists
            | SectionId::DebugStr
            | SectionId::DebugStrOffsets
    )
}

fn load_section(
    file: &object::File<'_>,
    data: &Arc<Backing>,
    endian: gimli::RunTimeEndian,
    id: SectionId,
    budget: &mut u64,
) -> Result<Reader, SectionError> {
    let bytes = match file.section_by_name(id.name()) {
        Some(section) if wanted(id) => {
            section_bytes(data, &section, budget).map_err(|reason| SectionError {
                section: id.name().to_owned(),
                reason,
            })?
        }
        _ => SectionBytes::empty(),
    };
    Ok(gimli::EndianReader::new(bytes, endian))
}

/// Loads the DWARF sections of `file`, inflating at most `budget` bytes.
pub(crate) fn load_dwarf(
    file: &object::File<'_>,
    data: &Arc<Backing>,
    endian: gimli::RunTimeEndian,
    budget: &mut u64,
) -> Result<gimli::Dwarf<Reader>, SectionError> {
    gimli::Dwarf::load(|id| load_section(file, data, endian, id, budget))
}

/// Attaches the dwz supplementary file `sup` to `dwarf`.
pub(crate) fn load_sup(
    dwarf: &mut gimli::Dwarf<Reader>,
    sup: &object::File<'_>,
    data: &Arc<Backing>,
    endian: gimli::RunTimeEndian,
    budget: &mut u64,
) -> Result<(), SectionError> {
    dwarf.load_sup(|id| load_section(sup, data, endian, id, budget))
}

/// Frames for ELF virtual address `probe`: inlined functions innermost
/// first, then the function they were inlined into. Empty when no unit
/// covers the address. Names come from, and go into, `names`.
pub(crate) fn find_frames(
    ctx: &addr2line::Context<Reader>,
    probe: u64,
    names: &mut Names,
) -> Result<Vec<SymbolFrame>, gimli::Error> {
    let mut iter = ctx.find_frames(probe).skip_all_loads()?;
    let mut frames = Vec::new();
    while let Some(frame) = iter.next()? {
        if frames.len() >= MAX_INLINE_DEPTH {
            break;
        }
        let function = frame
            .function
            .as_ref()
            .map(|f| names.function(f.name.bytes(), f.language));
        let (file, line, column) = match frame.location {
            Some(loc) => (loc.file.map(Arc::from), loc.line, loc.column),
            None => (None, None, None),
        };
        frames.push(SymbolFrame {
            function,
            file,
            line,
            column,
            inlined: true,
        });
    }
    if let Some(last) = frames.last_mut() {
        last.inlined = false;
    }
    Ok(frames)
}
