//! The symbolizer on an arbitrary file: the input is written to a file
//! (one path per process, in a private directory) and a handful of
//! addresses derived from it are symbolized, as return addresses and not,
//! through several plausible mappings of it.
//!
//! A fresh `Symbolizer` is used for every input: the file is rewritten in
//! place, and a cache keyed on its metadata could otherwise answer for the
//! previous input.
#![no_main]

use std::{
    collections::HashSet, fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::PathBuf,
    sync::OnceLock,
};

use crashtrace::symbolize::{ModuleRef, Symbolizer};
use libfuzzer_sys::fuzz_target;
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _, SymbolKind};

/// Most addresses per mapping layout (each is symbolized twice).
const MAX_ADDRESSES: usize = 40;

static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(dir) = DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

fn dir() -> &'static PathBuf {
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("crashtrace-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the fuzzer's directory");
        // SAFETY: `remove_dir` is a plain function that only touches `DIR`.
        unsafe { libc::atexit(remove_dir) };
        dir
    })
}

fn word(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// `(start, file_offset)` of mappings to look addresses up through.
fn layouts(data: &[u8], file: Option<&object::File<'_>>) -> Vec<(u64, u64)> {
    // Loaded at zero: runtime addresses are file offsets.
    let mut out = vec![(0, 0)];
    // Loaded as the segments ask: runtime addresses are ELF addresses.
    if let Some(file) = file {
        for segment in file.segments().take(4) {
            let (offset, _) = segment.file_range();
            let page = offset & !0xfff;
            out.push((segment.address().wrapping_sub(offset - page), page));
        }
    }
    // Whatever the input's last two words say.
    let len = data.len();
    if let (Some(start), Some(offset)) = (
        word(data, len.saturating_sub(16)),
        word(data, len.saturating_sub(8)),
    ) {
        out.push((start, offset));
    }
    out
}

/// Runtime address of ELF address `vaddr` in a mapping that starts at
/// `start` and maps the file from `file_offset`.
fn runtime(file: &object::File<'_>, start: u64, file_offset: u64, vaddr: u64) -> Option<u64> {
    let segment = file
        .segments()
        .take(16)
        .find(|s| vaddr >= s.address() && vaddr - s.address() < s.size())?;
    let offset = segment
        .file_range()
        .0
        .wrapping_add(vaddr - segment.address());
    Some(start.wrapping_add(offset).wrapping_sub(file_offset))
}

/// Runtime addresses worth trying for a mapping that starts at `start` and
/// maps the file from `file_offset`, most promising first.
fn addresses(
    data: &[u8],
    file: Option<&object::File<'_>>,
    start: u64,
    file_offset: u64,
) -> Vec<u64> {
    let mut out = Vec::new();
    if let Some(file) = file {
        // Functions (start and middle) and the entry point.
        let functions = file
            .symbols()
            .chain(file.dynamic_symbols())
            .take(4096)
            .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
            .take(10);
        for symbol in functions {
            for vaddr in [
                symbol.address(),
                symbol.address().wrapping_add(symbol.size() / 2),
            ] {
                out.extend(runtime(file, start, file_offset, vaddr));
            }
        }
        out.extend(runtime(file, start, file_offset, file.entry()));
        // Into each loaded segment.
        let bias = start.wrapping_sub(file_offset);
        for segment in file.segments().take(4) {
            let (offset, size) = segment.file_range();
            for delta in [0, size / 2, size.saturating_sub(1)] {
                out.push(bias.wrapping_add(offset).wrapping_add(delta));
            }
        }
    }
    // Raw words of the header (for ELF: entry point, program and section
    // header offsets) and near the end of the input.
    for at in [24, 32, 40] {
        out.extend(word(data, at));
    }
    out.extend(word(data, data.len().saturating_sub(24)));
    // Small offsets into the mapping.
    for delta in [0u64, 1, 0x40, 0x1000, 0x1040] {
        out.push(start.wrapping_add(delta));
    }
    let mut seen = HashSet::new();
    out.retain(|a| seen.insert(*a));
    out.truncate(MAX_ADDRESSES);
    out
}

fuzz_target!(|data: &[u8]| {
    let path = dir().join("input.elf");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&path)
            .expect("opening the input file");
        f.write_all(data).expect("writing the input file");
    }
    let file = object::File::parse(data).ok();
    let mut symbolizer = Symbolizer::new(Vec::new()).with_debuginfod(None);
    let _ = symbolizer.build_id(&path);
    let mut layouts = layouts(data, file.as_ref());
    layouts.dedup();
    for (start, file_offset) in layouts {
        let module = ModuleRef {
            path: &path,
            start,
            file_offset,
        };
        for addr in addresses(data, file.as_ref(), start, file_offset) {
            for is_return in [false, true] {
                if let Ok(s) = symbolizer.symbolize(&module, addr, is_return) {
                    // Formatting walks every name and path returned.
                    let _ = format!("{s:?}");
                }
            }
        }
    }
});
