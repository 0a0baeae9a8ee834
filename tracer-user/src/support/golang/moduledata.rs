//! `runtime.firstmoduledata`: where a Go binary's code starts and where its
//! funcdata live, for the releases whose pclntab does not say.
//!
//! Function entries in the pclntab are 32-bit offsets from the start of the
//! module's text. Up to Go 1.25 the pclntab header carried that base
//! (`textStart`); Go 1.26 stopped storing it ("it requires a relocation")
//! and left the word zero, so the base must come from the runtime's own
//! `moduledata.text`. Reading the header alone, every entry of a 1.26 or
//! 1.27 binary lands near address zero, outside every segment, and no
//! function can be probed: this was the cause of "a Go executable without
//! runtime.fatalpanic or runtime.fatalthrow" for Go 1.27.
//!
//! `moduledata` is found as the runtime finds it: it starts with a pointer
//! to the pclntab header, followed by the funcnametab, cutab, filetab,
//! pctab, pclntable and ftab slices, all pointing into the pclntab. A
//! candidate must match all of them and its `minpc` must be the first
//! function's entry, so a stray word cannot pass. Its later fields moved
//! across releases, which is what [`ModuleLayout`] records:
//!
//! | Go        | `text` | `gofunc` | `epclntab` | change                          |
//! |-----------|-------:|---------:|-----------:|---------------------------------|
//! | 1.18-1.19 | 22     | 38       | -          |                                 |
//! | 1.20-1.25 | 22     | 40       | -          | `covctrs`, `ecovctrs` added     |
//! | 1.26      | 22     | 40       | 41         | `epclntab`; header `textStart` 0 |
//! | 1.27      | 22     | 43       | 44         | `typedesclen`, `itaboffset`, `itabsize` |
//!
//! (word indexes, 64-bit). The release comes from the buildinfo; without
//! one (a damaged blob) the layouts with an `epclntab` word are recognized
//! by it pointing at the end of the pclntab.

use super::{
    GoError,
    image::Memory,
    pclntab::{Layout, Pclntab},
};

/// Word index of `moduledata.text`, the same in every release read here.
const TEXT: usize = 22;
/// Word index of `moduledata.minpc`.
const MINPC: usize = 20;
/// Newest Go minor release whose moduledata layout is known.
pub(crate) const NEWEST_KNOWN_MINOR: u32 = 27;

/// Field positions of `moduledata` in one range of releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ModuleLayout {
    Go118,
    Go120,
    Go126,
    Go127,
}

impl ModuleLayout {
    fn gofunc(self) -> usize {
        match self {
            ModuleLayout::Go118 => 38,
            ModuleLayout::Go120 | ModuleLayout::Go126 => 40,
            ModuleLayout::Go127 => 43,
        }
    }

    fn epclntab(self) -> Option<usize> {
        match self {
            ModuleLayout::Go118 | ModuleLayout::Go120 => None,
            ModuleLayout::Go126 => Some(41),
            ModuleLayout::Go127 => Some(44),
        }
    }

    /// Words read from the structure's start.
    fn words(self) -> usize {
        self.epclntab().unwrap_or(self.gofunc()) + 1
    }

    /// The layout of Go 1.`minor`, if known.
    pub fn for_minor(minor: u32) -> Option<Self> {
        match minor {
            18..=19 => Some(ModuleLayout::Go118),
            20..=25 => Some(ModuleLayout::Go120),
            26 => Some(ModuleLayout::Go126),
            27 => Some(ModuleLayout::Go127),
            _ => None,
        }
    }
}

/// What is read from `moduledata`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModuleData {
    pub layout: ModuleLayout,
    /// Address of the structure.
    pub vaddr: u64,
    /// `moduledata.text`: the base of function entry offsets.
    pub text: u64,
    /// `moduledata.gofunc`: the base of funcdata offsets.
    pub gofunc: u64,
}

/// The minor release of a Go version string (`go1.27.3`, `go1.26rc1`,
/// `devel go1.28-abc`): 27, 26, 28.
pub(crate) fn minor_of(version: &str) -> Option<u32> {
    let rest = &version[version.find("go1.")? + 4..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Finds `firstmoduledata` for `table`, of Go `version` when the buildinfo
/// says. Errors name the version and what is missing.
pub(crate) fn find(
    memory: &Memory,
    table: &Pclntab,
    tab: &[u8],
    version: Option<&str>,
) -> Result<ModuleData, GoError> {
    let shown = version.unwrap_or("an unknown Go version").to_owned();
    let missing = |what: &str| GoError::UnknownLayout {
        version: shown.clone(),
        missing: what.to_owned(),
    };
    if table.layout == Layout::Go116 || table.ptr_size != 8 {
        return Err(missing("moduledata of a pre-1.18 or 32-bit binary"));
    }
    let known = version.and_then(minor_of).map(|minor| {
        (
            minor,
            ModuleLayout::for_minor(minor)
                .filter(|l| (*l == ModuleLayout::Go118) == (table.layout == Layout::Go118)),
        )
    });
    let candidates = match known {
        Some((_, Some(layout))) => vec![layout],
        // Newer than this reader, or no version: recognize by structure.
        _ if table.layout == Layout::Go118 => vec![ModuleLayout::Go118],
        _ => vec![
            ModuleLayout::Go127,
            ModuleLayout::Go126,
            ModuleLayout::Go120,
        ],
    };
    let Some(at) = locate(memory, table, tab) else {
        return Err(missing(
            "runtime.firstmoduledata (no structure points at the pclntab)",
        ));
    };
    let data = memory
        .rest(at)
        .ok_or_else(|| missing("runtime.firstmoduledata"))?;
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            data.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    let table_end = table.vaddr + table.len as u64;
    for layout in candidates {
        if data.len() < layout.words() * 8 {
            continue;
        }
        if let Some(e) = layout.epclntab() {
            // The end of the pclntab: past its header, within its bytes.
            let ok = word(e).is_some_and(|end| end > table.vaddr && end <= table_end);
            if !ok {
                continue;
            }
        } else if table.text_start == 0 && !matches!(known, Some((_, Some(_)))) {
            // Before 1.26 the header has the text start; a zero one with
            // no version is a newer layout not known here.
            continue;
        }
        let (Some(text), Some(gofunc)) = (word(TEXT), word(layout.gofunc())) else {
            continue;
        };
        if !memory.is_text(text) || memory.read(gofunc, 1).is_none() {
            continue;
        }
        return Ok(ModuleData {
            layout,
            vaddr: at,
            text,
            gofunc,
        });
    }
    Err(match known {
        Some((minor, None)) if minor > NEWEST_KNOWN_MINOR => missing(&format!(
            "the moduledata layout of Go 1.{minor} (known up to 1.{NEWEST_KNOWN_MINOR}): \
             text start and funcdata base"
        )),
        _ => missing("a moduledata layout that matches (text start and funcdata base)"),
    })
}

/// Address of the structure whose first words are the pclntab's address
/// and its tables' slices, and whose `minpc` is `text` plus the first
/// function's entry offset.
pub(crate) fn locate(memory: &Memory, table: &Pclntab, tab: &[u8]) -> Option<u64> {
    let at_offset = |off: usize| table.vaddr.checked_add(off as u64);
    let funcnametab = at_offset(table.funcname_offset())?;
    let ftab = at_offset(table.functab_offset())?;
    let first_entry = u64::from(table.first_entry_offset(tab)?);
    for copy in memory.copies.iter().filter(|c| c.writable) {
        let data = &copy.data;
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
        };
        for at in (0..data.len().saturating_sub(8 * (TEXT + 1))).step_by(8) {
            if word(at) != Some(table.vaddr)
                || word(at + 8) != Some(funcnametab)
                || word(at + 16 * 8) != Some(ftab)
            {
                continue;
            }
            let (Some(minpc), Some(text)) = (word(at + MINPC * 8), word(at + TEXT * 8)) else {
                continue;
            };
            if text.checked_add(first_entry) != Some(minpc) {
                continue;
            }
            if table.text_start != 0 && table.text_start != text {
                continue;
            }
            return copy.vaddr.checked_add(at as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_releases_of_version_strings() {
        assert_eq!(minor_of("go1.27.3"), Some(27));
        assert_eq!(minor_of("go1.26rc1"), Some(26));
        assert_eq!(minor_of("devel go1.28-abcdef Mon"), Some(28));
        assert_eq!(minor_of("go1.19.8"), Some(19));
        assert_eq!(minor_of("gccgo"), None);
        assert_eq!(ModuleLayout::for_minor(28), None);
        assert_eq!(ModuleLayout::for_minor(25), Some(ModuleLayout::Go120));
        assert_eq!(ModuleLayout::Go127.words(), 45);
    }
}
