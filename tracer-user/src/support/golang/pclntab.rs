//! The layout of Go's pclntab: header, function table, per-function
//! records, and the name, file and pc-value tables they index.
//!
//! Three layouts are read, told apart by the header's magic:
//!
//! | magic        | Go        | function entries              | `_func` size |
//! |--------------|-----------|-------------------------------|-------------:|
//! | `0xfffffffa` | 1.16-1.17 | absolute pointers             | 36 + ptrsize |
//! | `0xfffffff0` | 1.18-1.19 | 32-bit offsets from textStart | 40           |
//! | `0xfffffff1` | 1.20-     | as 1.18, plus `startLine`     | 44           |
//!
//! Go 1.26 kept the 1.20 magic and layout but stopped storing the header's
//! `textStart` (the word is zero): the base of function entries then comes
//! from `moduledata` (see `moduledata`).
//!
//! The header holds the offsets of the function-name table, the
//! compilation-unit table (per-CU file indexes into the file-name table),
//! the pc-value tables and the function table, all from the header's own
//! address. Nothing here trusts them: every offset is checked against the
//! table's bytes and every string read is bounded, so a corrupt table gives
//! `None` or an error, never a panic or a huge allocation.

use super::{GoError, image::Memory, pcvalue};

/// Longest function or file name read.
const MAX_NAME: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    Go116,
    Go118,
    Go120,
}

impl Layout {
    fn from_magic(magic: u32) -> Result<Self, GoError> {
        match magic {
            0xffff_fffa => Ok(Layout::Go116),
            0xffff_fff0 => Ok(Layout::Go118),
            0xffff_fff1 => Ok(Layout::Go120),
            other => Err(GoError::UnsupportedMagic(other)),
        }
    }

    /// Whether a word is one of the magics read here.
    pub fn is_magic(magic: u32) -> bool {
        Self::from_magic(magic).is_ok()
    }
}

/// A parsed pclntab header: where everything is, as offsets from the
/// header's address.
#[derive(Clone, Debug)]
pub(crate) struct Pclntab {
    pub layout: Layout,
    /// Address of the header.
    pub vaddr: u64,
    /// Bytes of the table, from its header.
    pub len: usize,
    pub quantum: u8,
    pub ptr_size: u8,
    pub nfunc: usize,
    /// Base of function entry offsets (Go 1.18 and later). Zero in the
    /// header of Go 1.26 and later, until `moduledata` supplies it.
    pub text_start: u64,
    funcname: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

/// One function's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Func {
    pub entry: u64,
    /// Entry of the next function: the end of this one.
    pub end: u64,
    /// Offset of the `_func` record in the table.
    record: usize,
    name_off: u32,
    pcsp: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    nfuncdata: u8,
}

fn u32_at(tab: &[u8], at: usize) -> Option<u32> {
    let b = tab.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn word_at(tab: &[u8], at: usize, ptr_size: u8) -> Option<u64> {
    if ptr_size == 4 {
        return u32_at(tab, at).map(u64::from);
    }
    let b = tab.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// The NUL-terminated string at `at`, bounded.
fn c_str(tab: &[u8], at: usize) -> Option<&str> {
    let bytes = tab.get(at..)?;
    let bytes = &bytes[..bytes.len().min(MAX_NAME)];
    let len = bytes.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&bytes[..len]).ok()
}

impl Pclntab {
    /// Parses the header of the table whose bytes (to the end of whatever
    /// holds it) are `tab`, at address `vaddr`.
    pub fn parse(tab: &[u8], vaddr: u64) -> Result<Self, GoError> {
        let bad = GoError::Pclntab;
        if tab.len() < 8 {
            return Err(bad("truncated header"));
        }
        let layout = Layout::from_magic(u32_at(tab, 0).ok_or(bad("truncated header"))?)?;
        let (pad, quantum, ptr_size) = (&tab[4..6], tab[6], tab[7]);
        if pad != [0, 0] || !matches!(quantum, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
            return Err(bad("bad header"));
        }
        let word = |i: usize| {
            word_at(tab, 8 + i * usize::from(ptr_size), ptr_size).ok_or(bad("truncated header"))
        };
        let offset = |i: usize| {
            word(i).and_then(|w| {
                usize::try_from(w)
                    .ok()
                    .filter(|&o| o < tab.len())
                    .ok_or(bad("table offset out of range"))
            })
        };
        let nfunc = word(0)?;
        let (text_start, first) = match layout {
            Layout::Go116 => (0, 2),
            Layout::Go118 | Layout::Go120 => (word(2)?, 3),
        };
        let table = Self {
            layout,
            vaddr,
            len: tab.len(),
            quantum,
            ptr_size,
            nfunc: usize::try_from(nfunc).map_err(|_| bad("function count out of range"))?,
            text_start,
            funcname: offset(first)?,
            cutab: offset(first + 1)?,
            filetab: offset(first + 2)?,
            pctab: offset(first + 3)?,
            functab: offset(first + 4)?,
        };
        let entries = table
            .nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(table.functab_entry_size()))
            .and_then(|size| size.checked_add(table.functab))
            .ok_or(bad("function count out of range"))?;
        if table.nfunc == 0 || entries > tab.len() {
            return Err(bad("function table out of range"));
        }
        Ok(table)
    }

    /// Offset of the function-name table from the header.
    pub fn funcname_offset(&self) -> usize {
        self.funcname
    }

    /// Offset of the function table from the header.
    pub fn functab_offset(&self) -> usize {
        self.functab
    }

    /// The first function's entry, as an offset from the text start (Go
    /// 1.18 and later).
    pub fn first_entry_offset(&self, tab: &[u8]) -> Option<u32> {
        match self.layout {
            Layout::Go116 => None,
            Layout::Go118 | Layout::Go120 => u32_at(tab, self.functab),
        }
    }

    fn functab_entry_size(&self) -> usize {
        match self.layout {
            Layout::Go116 => 2 * usize::from(self.ptr_size),
            Layout::Go118 | Layout::Go120 => 8,
        }
    }

    fn record_size(&self) -> usize {
        match self.layout {
            Layout::Go116 => 36 + usize::from(self.ptr_size),
            Layout::Go118 => 40,
            Layout::Go120 => 44,
        }
    }

    /// Entry address and record offset of function-table entry `i`
    /// (`i == nfunc` is the end marker).
    fn entry(&self, tab: &[u8], i: usize) -> Option<(u64, usize)> {
        let at = self.functab + i * self.functab_entry_size();
        let (entry, funcoff) = match self.layout {
            Layout::Go116 => {
                let size = usize::from(self.ptr_size);
                (
                    word_at(tab, at, self.ptr_size)?,
                    word_at(tab, at + size, self.ptr_size)?,
                )
            }
            Layout::Go118 | Layout::Go120 => (
                self.text_start.checked_add(u64::from(u32_at(tab, at)?))?,
                u64::from(u32_at(tab, at + 4)?),
            ),
        };
        let record = self.functab.checked_add(usize::try_from(funcoff).ok()?)?;
        Some((entry, record))
    }

    /// Entry of the first function and end of the last.
    pub fn text_range(&self, tab: &[u8]) -> Option<(u64, u64)> {
        Some((self.entry(tab, 0)?.0, self.entry(tab, self.nfunc)?.0))
    }

    /// Function `i` of the table.
    pub fn func(&self, tab: &[u8], i: usize) -> Option<Func> {
        if i >= self.nfunc {
            return None;
        }
        let (entry, record) = self.entry(tab, i)?;
        let (end, _) = self.entry(tab, i + 1)?;
        let rec = tab.get(record..record.checked_add(self.record_size())?)?;
        let field = |i: usize| u32_at(rec, i);
        // Fields after the entry: nameoff, args, deferreturn, pcsp, pcfile,
        // pcln, npcdata, cuOffset.
        let base = match self.layout {
            Layout::Go116 => usize::from(self.ptr_size),
            Layout::Go118 | Layout::Go120 => 4,
        };
        let func = Func {
            entry,
            end,
            record,
            name_off: field(base)?,
            pcsp: field(base + 12)?,
            pcfile: field(base + 16)?,
            pcln: field(base + 20)?,
            npcdata: field(base + 24)?,
            cu_offset: field(base + 28)?,
            nfuncdata: rec[self.record_size() - 1],
        };
        if let Layout::Go118 | Layout::Go120 = self.layout {
            // The record repeats its entry offset: a cheap consistency check.
            if self.text_start.checked_add(u64::from(field(0)?)) != Some(entry) {
                return None;
            }
        }
        Some(func)
    }

    /// The function whose code holds `pc`.
    pub fn find(&self, tab: &[u8], pc: u64) -> Option<Func> {
        // Largest i with entry(i) <= pc, by bisection over [0, nfunc).
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.entry(tab, mid)?.0 <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let func = self.func(tab, lo)?;
        (func.entry <= pc && pc < func.end).then_some(func)
    }

    /// Name of the function at funcname-table offset `off`.
    pub fn name_at<'t>(&self, tab: &'t [u8], off: u32) -> Option<&'t str> {
        c_str(tab, self.funcname.checked_add(usize::try_from(off).ok()?)?)
    }

    pub fn name<'t>(&self, tab: &'t [u8], func: &Func) -> Option<&'t str> {
        self.name_at(tab, func.name_off)
    }

    /// Value of the pc-value table at `off` (an offset into the pc table) at
    /// `pc` of `func`; `None` where there is no table.
    fn value(&self, tab: &[u8], func: &Func, off: u32, pc: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let data = tab.get(self.pctab.checked_add(usize::try_from(off).ok()?)?..)?;
        pcvalue::value_at(data, func.entry, pc, self.quantum)
    }

    /// Bytes between the stack pointer and the return address at `pc`.
    pub fn sp_delta(&self, tab: &[u8], func: &Func, pc: u64) -> Option<i32> {
        self.value(tab, func, func.pcsp, pc)
    }

    pub fn line(&self, tab: &[u8], func: &Func, pc: u64) -> Option<u32> {
        let line = self.value(tab, func, func.pcln, pc)?;
        u32::try_from(line).ok().filter(|&l| l > 0)
    }

    pub fn file<'t>(&self, tab: &'t [u8], func: &Func, pc: u64) -> Option<&'t str> {
        let index = u32::try_from(self.value(tab, func, func.pcfile, pc)?).ok()?;
        let slot = func.cu_offset.checked_add(index)?;
        let at = self
            .cutab
            .checked_add(usize::try_from(slot).ok()?.checked_mul(4)?)?;
        let off = u32_at(tab, at).filter(|&o| o != u32::MAX)?;
        c_str(tab, self.filetab.checked_add(usize::try_from(off).ok()?)?)
    }

    /// Value of pc-data table `table` at `pc`.
    pub fn pcdata(&self, tab: &[u8], func: &Func, table: u32, pc: u64) -> Option<i32> {
        if table >= func.npcdata {
            return None;
        }
        let at = func.record + self.record_size() + 4 * usize::try_from(table).ok()?;
        self.value(tab, func, u32_at(tab, at)?, pc)
    }

    /// Address of funcdata `index` of `func`. From Go 1.18 funcdata are
    /// offsets from `moduledata.gofunc`, which the caller passes in; before,
    /// absolute pointers.
    pub fn funcdata(&self, tab: &[u8], func: &Func, index: u8, gofunc: Option<u64>) -> Option<u64> {
        if index >= func.nfuncdata {
            return None;
        }
        let npcdata = usize::try_from(func.npcdata).ok()?;
        let start = func
            .record
            .checked_add(self.record_size())?
            .checked_add(npcdata.checked_mul(4)?)?;
        match self.layout {
            Layout::Go116 => {
                let size = usize::from(self.ptr_size);
                // Pointers are aligned in memory, not within the table.
                let addr = self.vaddr.checked_add(start as u64)?;
                let pad = if size == 8 && !addr.is_multiple_of(8) {
                    4
                } else {
                    0
                };
                let at = start + pad + usize::from(index) * size;
                word_at(tab, at, self.ptr_size).filter(|&p| p != 0)
            }
            Layout::Go118 | Layout::Go120 => {
                let off = u32_at(tab, start + 4 * usize::from(index))?;
                if off == u32::MAX {
                    return None;
                }
                gofunc?.checked_add(u64::from(off))
            }
        }
    }

    /// Entry of the function named `name`; a linear scan, for the few names
    /// a caller needs (probe sites).
    pub fn lookup_name(&self, tab: &[u8], name: &str) -> Option<Func> {
        (0..self.nfunc)
            .filter_map(|i| self.func(tab, i))
            .find(|f| self.name(tab, f) == Some(name))
    }
}

/// Finds the pclntab of an image: in its section when there is one, else by
/// its magic at an 8-byte boundary anywhere in the copied segments, checked
/// by parsing the header there.
pub(crate) fn locate(
    memory: &Memory,
    section: Option<(u64, u64)>,
) -> Option<Result<Pclntab, GoError>> {
    if let Some((addr, size)) = section {
        let tab = memory.read(addr, size)?;
        return Some(Pclntab::parse(tab, addr));
    }
    for copy in &memory.copies {
        let data = &copy.data;
        for at in (0..data.len().saturating_sub(8)).step_by(8) {
            let magic = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            if !Layout::is_magic(magic) || data[at + 4..at + 6] != [0, 0] {
                continue;
            }
            let vaddr = copy.vaddr + at as u64;
            if let Ok(table) = Pclntab::parse(&data[at..], vaddr) {
                // A real table's functions are in the text; from Go 1.26 the
                // text start is only in the runtime's moduledata, which must
                // then point at this table.
                let tab = &data[at..];
                let plausible = if table.text_start == 0 && table.layout != Layout::Go116 {
                    table.func(tab, 0).is_some()
                        && super::moduledata::locate(memory, &table, tab).is_some()
                } else {
                    table.text_range(tab).is_some_and(|(lo, hi)| {
                        lo < hi && memory.is_text(lo) && table.func(tab, 0).is_some()
                    })
                };
                if plausible {
                    return Some(Ok(table));
                }
            }
        }
    }
    None
}
