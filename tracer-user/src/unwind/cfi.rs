//! Finding the DWARF call-frame information (CFI) row for an address.
//!
//! Compilers describe, for every instruction, where a function's caller's
//! registers are: the canonical frame address (CFA) and a rule per saved
//! register. That is what makes stacks walkable when code keeps no frame
//! pointer, which is the default for optimized x86-64 code and for
//! distribution libraries such as glibc.
//!
//! `.eh_frame` is always loaded with the code and is what runtime unwinders
//! use, so it is tried first, through the binary-search table in
//! `.eh_frame_hdr` when the linker wrote one, else through an index built
//! once per file. `.debug_frame` is the fallback for code that only has
//! debug-time CFI. Rows are copied out of gimli into [`Row`] so the walker
//! does not depend on which section they came from.

use std::collections::HashMap;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EhFrameHdr, Expression,
    FrameDescriptionEntry, ParsedEhFrameHdr, RegisterRule, RunTimeEndian, UnwindContext,
    UnwindOffset, UnwindSection, UnwindTableRow,
};

use super::image::Image;

/// The reader CFI is parsed with; sections are shared, not borrowed.
pub type R = gimli::EndianArcSlice<RunTimeEndian>;
/// Reusable scratch space for evaluating CFI programs.
pub type Context = UnwindContext<usize>;

/// Most FDEs indexed per section; real binaries have a few hundred thousand
/// at most.
const MAX_FDES: usize = 1 << 22;
/// How many preceding FDEs a lookup checks for one that covers an address
/// (FDEs do not normally overlap).
const SCAN_BACK: usize = 8;

/// How to compute the canonical frame address.
#[derive(Clone, Debug)]
pub enum Cfa {
    RegisterOffset { register: u16, offset: i64 },
    Expression(Expression<R>),
}

/// How to recover one register of the caller.
#[derive(Clone, Debug)]
pub enum Rule {
    Undefined,
    SameValue,
    Offset(i64),
    ValOffset(i64),
    Register(u16),
    Expression(Expression<R>),
    ValExpression(Expression<R>),
    Constant(u64),
    /// A rule defined by an augmentation this unwinder does not know.
    Unknown,
}

/// The CFI row covering one address.
#[derive(Clone, Debug)]
pub struct Row {
    pub cfa: Cfa,
    /// Registers with a rule other than the default.
    pub rules: Vec<(u16, Rule)>,
    /// The register column holding the return address.
    pub return_register: u16,
    /// Whether the FDE describes a signal trampoline (augmentation `S`).
    pub signal: bool,
    pub encoding: gimli::Encoding,
}

impl Row {
    pub fn rule(&self, register: u16) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|(r, _)| *r == register)
            .map(|(_, rule)| rule)
    }
}

/// The address range of one FDE and where it starts in its section.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    end: u64,
    offset: usize,
}

/// The unwind tables of one ELF image.
pub struct Cfi {
    image: Image,
    bases: BaseAddresses,
    eh_frame: Option<EhFrame<R>>,
    hdr: Option<ParsedEhFrameHdr<R>>,
    /// FDEs of `.eh_frame`, sorted, when there is no search table.
    eh_index: Vec<Span>,
    debug_frame: Option<DebugFrame<R>>,
    debug_index: Vec<Span>,
    index_bytes: u64,
}

fn reader(data: &std::sync::Arc<[u8]>) -> R {
    R::new(data.clone(), RunTimeEndian::Little)
}

impl Cfi {
    pub fn new(image: Image) -> Self {
        let mut bases = BaseAddresses::default();
        if let Some(hdr) = &image.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr.addr);
        }
        if let Some(eh) = &image.eh_frame {
            bases = bases.set_eh_frame(eh.addr);
        }
        if let Some(text) = image.text {
            bases = bases.set_text(text);
        }
        if let Some(got) = image.got {
            bases = bases.set_got(got);
        }
        let eh_frame = image.eh_frame.as_ref().map(|s| {
            let mut section = EhFrame::from(reader(&s.data));
            section.set_address_size(8);
            section
        });
        let hdr = eh_frame
            .as_ref()
            .and(image.eh_frame_hdr.as_ref())
            .and_then(|s| {
                EhFrameHdr::from(reader(&s.data))
                    .parse(&bases, 8)
                    .inspect_err(|e| log::debug!("ignoring .eh_frame_hdr: {e}"))
                    .ok()
                    .filter(|h| h.table().is_some())
            });
        let eh_index = match (&eh_frame, &hdr) {
            (Some(section), None) => index(section, &bases),
            _ => Vec::new(),
        };
        let debug_frame = image.debug_frame.as_ref().map(|s| {
            let mut section = DebugFrame::from(reader(&s.data));
            section.set_address_size(8);
            section
        });
        let debug_index = debug_frame
            .as_ref()
            .map(|s| index(s, &bases))
            .unwrap_or_default();
        let index_bytes = ((eh_index.len() + debug_index.len()) * size_of::<Span>()) as u64;
        Self {
            image,
            bases,
            eh_frame,
            hdr,
            eh_index,
            debug_frame,
            debug_index,
            index_bytes,
        }
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    pub fn heap_bytes(&self) -> u64 {
        self.image.heap_bytes() + self.index_bytes
    }

    /// The row covering ELF virtual address `addr`: `Ok(None)` when no FDE
    /// covers it; an error when the tables that should cover it are corrupt.
    pub fn row(&self, ctx: &mut Context, addr: u64) -> Result<Option<Row>, gimli::Error> {
        let mut failure = None;
        if let Some(section) = &self.eh_frame {
            match self.eh_fde(section, addr) {
                Ok(Some(fde)) => match row_for(section, &self.bases, ctx, &fde, addr) {
                    Ok(row) => return Ok(row),
                    Err(e) => failure = Some(e),
                },
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        if let Some(section) = &self.debug_frame {
            let fde = find(&self.debug_index, addr).map(|offset| {
                section.fde_from_offset(&self.bases, offset.into(), DebugFrame::cie_from_offset)
            });
            match fde {
                Some(Ok(fde)) => match row_for(section, &self.bases, ctx, &fde, addr) {
                    Ok(Some(row)) => return Ok(Some(row)),
                    Ok(None) => {}
                    Err(e) => failure = failure.or(Some(e)),
                },
                Some(Err(e)) => failure = failure.or(Some(e)),
                None => {}
            }
        }
        failure.map_or(Ok(None), Err)
    }

    fn eh_fde(
        &self,
        section: &EhFrame<R>,
        addr: u64,
    ) -> Result<Option<FrameDescriptionEntry<R>>, gimli::Error> {
        let result = match self.hdr.as_ref().and_then(|h| h.table()) {
            Some(table) => {
                table.fde_for_address(section, &self.bases, addr, EhFrame::cie_from_offset)
            }
            None => match find(&self.eh_index, addr) {
                Some(offset) => {
                    section.fde_from_offset(&self.bases, offset.into(), EhFrame::cie_from_offset)
                }
                None => return Ok(None),
            },
        };
        match result {
            Ok(fde) if fde.contains(addr) => Ok(Some(fde)),
            Ok(_) | Err(gimli::Error::NoUnwindInfoForAddress) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Offset of the FDE covering `addr` in a sorted index.
fn find(index: &[Span], addr: u64) -> Option<usize> {
    let end = index.partition_point(|s| s.start <= addr);
    index[..end]
        .iter()
        .rev()
        .take(SCAN_BACK)
        .find(|s| addr < s.end)
        .map(|s| s.offset)
}

/// Every FDE of `section` with a non-empty range, sorted by start. Parsing
/// stops at the first malformed entry, since its length cannot be trusted
/// to find the next one.
fn index<S: UnwindSection<R>>(section: &S, bases: &BaseAddresses) -> Vec<Span> {
    let mut cies = HashMap::new();
    let mut spans = Vec::new();
    let mut entries = section.entries(bases);
    while spans.len() < MAX_FDES {
        let partial = match entries.next() {
            Ok(Some(CieOrFde::Fde(partial))) => partial,
            Ok(Some(CieOrFde::Cie(_))) => continue,
            Ok(None) => break,
            Err(e) => {
                log::debug!("unwind table ends early: {e}");
                break;
            }
        };
        let offset = partial.offset();
        let fde = partial.parse(|s, b, o| {
            cies.entry(UnwindOffset::into(o))
                .or_insert_with(|| s.cie_from_offset(b, o))
                .clone()
        });
        if let Ok(fde) = fde
            && fde.initial_address() < fde.end_address()
        {
            spans.push(Span {
                start: fde.initial_address(),
                end: fde.end_address(),
                offset,
            });
        }
    }
    spans.sort_unstable_by_key(|s| s.start);
    spans
}

fn row_for<S: UnwindSection<R>>(
    section: &S,
    bases: &BaseAddresses,
    ctx: &mut Context,
    fde: &FrameDescriptionEntry<R>,
    addr: u64,
) -> Result<Option<Row>, gimli::Error> {
    match fde.unwind_info_for_address(section, bases, ctx, addr) {
        Ok(row) => convert(section, fde, row).map(Some),
        Err(gimli::Error::NoUnwindInfoForAddress) => Ok(None),
        Err(e) => Err(e),
    }
}

fn convert<S: UnwindSection<R>>(
    section: &S,
    fde: &FrameDescriptionEntry<R>,
    row: &UnwindTableRow<usize>,
) -> Result<Row, gimli::Error> {
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => Cfa::RegisterOffset {
            register: register.0,
            offset: *offset,
        },
        CfaRule::Expression(e) => Cfa::Expression(e.get(section)?),
    };
    let mut rules = Vec::new();
    for (register, rule) in row.registers() {
        let rule = match rule {
            RegisterRule::Undefined => Rule::Undefined,
            RegisterRule::SameValue => Rule::SameValue,
            RegisterRule::Offset(n) => Rule::Offset(*n),
            RegisterRule::ValOffset(n) => Rule::ValOffset(*n),
            RegisterRule::Register(r) => Rule::Register(r.0),
            RegisterRule::Expression(e) => Rule::Expression(e.get(section)?),
            RegisterRule::ValExpression(e) => Rule::ValExpression(e.get(section)?),
            RegisterRule::Constant(c) => Rule::Constant(*c),
            RegisterRule::Architectural => Rule::Unknown,
        };
        rules.push((register.0, rule));
    }
    Ok(Row {
        cfa,
        rules,
        return_register: fde.cie().return_address_register().0,
        signal: fde.is_signal_trampoline(),
        encoding: fde.cie().encoding(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{support::elfimage::Segment, unwind::image::Section};

    /// A minimal `.eh_frame`: one CIE (RA in r16, CFA = rsp + 8, RA at
    /// CFA - 8) and one FDE for [0x1000, 0x1010) that pushes rbp at +1.
    fn eh_frame() -> Vec<u8> {
        let cie: &[u8] = &[
            0x14, 0, 0, 0, // length
            0, 0, 0, 0, // CIE id
            1, b'z', b'R', 0, // version, augmentation
            1, 0x78, 16, // code align 1, data align -8, RA column 16
            1, 0x03, // augmentation data: FDE pointers are udata4, absolute
            0x0c, 7, 8, // def_cfa rsp+8
            0x90, 1, // offset r16 at cfa-8
            0, 0, // padding
        ];
        let fde: &[u8] = &[
            0x14, 0, 0, 0, // length
            0x1c, 0, 0, 0, // CIE pointer (back to offset 0)
            0x00, 0x10, 0, 0, // initial location 0x1000
            0x10, 0, 0, 0,    // range 0x10
            0,    // augmentation data length
            0x41, // advance_loc 1
            0x0e, 16, // def_cfa_offset 16
            0x86, 2, // offset rbp at cfa-16
            0, 0, // padding
        ];
        [cie, fde, &[0, 0, 0, 0]].concat()
    }

    fn cfi(eh: Vec<u8>) -> Cfi {
        Cfi::new(Image {
            segments: vec![Segment {
                offset: 0,
                filesz: 0x2000,
                vaddr: 0,
            }],
            eh_frame: Some(Section {
                addr: 0x2000,
                data: eh.into(),
            }),
            ..Image::default()
        })
    }

    #[test]
    fn indexes_eh_frame_without_a_search_table() {
        let cfi = cfi(eh_frame());
        let mut ctx = Context::new();
        let row = cfi.row(&mut ctx, 0x1000).unwrap().unwrap();
        assert!(matches!(
            row.cfa,
            Cfa::RegisterOffset {
                register: 7,
                offset: 8
            }
        ));
        assert!(matches!(row.rule(16), Some(Rule::Offset(-8))));
        assert!(row.rule(6).is_none());
        let row = cfi.row(&mut ctx, 0x1005).unwrap().unwrap();
        assert!(matches!(
            row.cfa,
            Cfa::RegisterOffset {
                register: 7,
                offset: 16
            }
        ));
        assert!(matches!(row.rule(6), Some(Rule::Offset(-16))));
        assert!(!row.signal);
        assert!(cfi.row(&mut ctx, 0x1010).unwrap().is_none());
        assert!(cfi.row(&mut ctx, 0xfff).unwrap().is_none());
    }

    #[test]
    fn corrupt_tables_do_not_panic() {
        let mut ctx = Context::new();
        let good = eh_frame();
        for cut in 0..good.len() {
            let cfi = cfi(good[..cut].to_vec());
            let _ = cfi.row(&mut ctx, 0x1004);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = cfi(bad).row(&mut ctx, 0x1004);
        }
    }
}
