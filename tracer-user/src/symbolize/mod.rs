//! Symbolization of crash addresses: runtime instruction pointers from a dead
//! process become function names and `file:line:column` locations.
//!
//! The kernel only tells us addresses. Turning them into something a person
//! can act on means translating each address from the process's memory
//! layout into the ELF file's own virtual addresses (mapping start and file
//! offset in, `PT_LOAD` segment out, which is what makes PIE executables,
//! fixed-address executables and shared libraries all work), then asking the
//! DWARF line and inline tables, and, failing those, the symbol tables.
//! Stripped distribution binaries are handled by looking up their separate
//! debug files (see the `debuglink` submodule), fetching them from
//! debuginfod servers when they are not installed (`debuginfod`), and, for
//! function names only, by the MiniDebugInfo some distributions embed
//! (`minidebug`).
//!
//! The symbolizer runs as root over files owned by anyone, so every input is
//! hostile: files are checked before they are opened (see the `file` submodule), all
//! parsing is bounds-checked, inflation of compressed sections is capped, and
//! parsed state lives in a cache bounded in both files and bytes.
//!
//! Lookups are cheap once a file is parsed, so what each one costs besides
//! the DWARF search matters: a file's identity is checked against the disk
//! once per batch of lookups rather than per address ([`Symbolizer::batch`]),
//! demangled names are kept per file (`demangle::Names`), and names are
//! shared strings rather than copies.

mod debuginfod;
mod debuglink;
mod demangle;
mod dwarf;
mod elf;
mod error;
mod file;
mod minidebug;
mod module;
mod plt;
#[cfg(test)]
mod tests;

use std::{
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    sync::Arc,
};

pub use debuginfod::{DEFAULT_MAX_SIZE, DEFAULT_MISS_TTL, DEFAULT_TIMEOUT, DebuginfodConfig};
pub use error::SymbolizeError;

use crate::support::lru::Lru;
use debuglink::Search;
use elf::{ElfInfo, TranslateError};
use file::FileKey;

use crate::support::elfimage::Identities;
use module::{Module, ObjectFile};

/// Most files kept parsed by default.
pub const DEFAULT_CACHE_FILES: usize = 64;
/// Most heap bytes (inflated debug sections, copied files, symbol tables)
/// kept by the cache by default; the most recently used file always stays.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// One mapping of a file in the crashed process.
#[derive(Clone, Copy, Debug)]
pub struct ModuleRef<'a> {
    /// A path readable now on this host (for example through
    /// `/proc/PID/root` or `/proc/PID/map_files`).
    pub path: &'a Path,
    /// Runtime address where the mapping starts.
    pub start: u64,
    /// File offset that `start` maps (`vm_pgoff * 4096`).
    pub file_offset: u64,
}

/// One source-level frame for an address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SymbolFrame {
    /// Demangled function name (Rust and C++; C names unchanged).
    pub function: Option<Arc<str>>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// True for every frame but the last (outermost) of an address's inline
    /// chain.
    pub inlined: bool,
}

impl SymbolFrame {
    /// A frame known only by its function's name (from a symbol table).
    pub fn named(function: Arc<str>) -> Self {
        Self {
            function: Some(function),
            file: None,
            line: None,
            column: None,
            inlined: false,
        }
    }
}

/// Everything known about one address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Symbolization {
    /// Innermost inlined function first, then the real function. Empty when
    /// neither DWARF nor a symbol table covers the address.
    pub frames: Vec<SymbolFrame>,
    /// The ELF virtual address that was looked up.
    pub file_address: u64,
    /// GNU build-id of the file, as hex.
    pub build_id: Option<Arc<str>>,
}

/// Turns runtime addresses into [`Symbolization`]s, keeping parsed files.
pub struct Symbolizer {
    search: Search,
    cache: Lru<FileKey, Module>,
    /// Identities of the paths asked about; kept during a [`Batch`].
    identities: Identities,
}

impl Symbolizer {
    /// A symbolizer that looks for separate debug files in `debug_dirs`,
    /// then in `/usr/lib/debug`, then on the debuginfod servers configured
    /// in the environment ([`DebuginfodConfig::from_env`]).
    pub fn new(debug_dirs: Vec<PathBuf>) -> Self {
        Self::with_cache_limits(debug_dirs, DEFAULT_CACHE_FILES, DEFAULT_CACHE_BYTES)
    }

    /// Like [`Symbolizer::new`], with explicit cache bounds.
    pub fn with_cache_limits(debug_dirs: Vec<PathBuf>, max_files: usize, max_bytes: u64) -> Self {
        Self {
            search: Search::new(debug_dirs),
            cache: Lru::new(max_files, max_bytes),
            identities: Identities::default(),
        }
        .with_debuginfod(DebuginfodConfig::from_env())
    }

    /// Replaces the debuginfod configuration taken from the environment;
    /// `None` never asks a server.
    pub fn with_debuginfod(mut self, config: Option<DebuginfodConfig>) -> Self {
        self.search.debuginfod = config.map(|c| Arc::new(debuginfod::Debuginfod::new(c)));
        self
    }

    /// Starts a batch of lookups made together (the frames of one crash,
    /// the addresses one read brought in): until the returned guard is
    /// dropped, each file is checked against the disk once, at its first
    /// use, instead of at every lookup. Outside a batch every lookup checks
    /// that the file at its path is still the one that was parsed.
    pub fn batch(&mut self) -> Batch<'_> {
        self.identities.start_batch();
        Batch { symbolizer: self }
    }

    fn module<'c>(
        cache: &'c mut Lru<FileKey, Module>,
        identities: &mut Identities,
        path: &Path,
    ) -> Result<&'c mut Module, SymbolizeError> {
        let key = identities.key(path)?;
        cache.get_or_try_insert_with(key, || ObjectFile::open_as(path, key).map(Module::new))
    }

    /// Symbolizes runtime address `addr` inside `module`.
    ///
    /// With `is_return_address` the address is a return address from an
    /// unwound stack, and `addr - 1` (inside the call instruction) is looked
    /// up so that the call site, not the next statement, is reported.
    pub fn symbolize(
        &mut self,
        module: &ModuleRef<'_>,
        addr: u64,
        is_return_address: bool,
    ) -> Result<Symbolization, SymbolizeError> {
        let probe = if is_return_address {
            addr.checked_sub(1)
                .ok_or_else(|| SymbolizeError::BelowMapping {
                    path: module.path.to_owned(),
                    addr,
                    start: module.start,
                })?
        } else {
            addr
        };
        self.lookup(module.path, |info| {
            info.file_address(module.start, module.file_offset, probe)
                .map_err(|e| {
                    let path = module.path.to_owned();
                    match e {
                        TranslateError::BelowMapping => SymbolizeError::BelowMapping {
                            path,
                            addr: probe,
                            start: module.start,
                        },
                        TranslateError::Overflow => SymbolizeError::AddressOverflow {
                            path,
                            addr: probe,
                            start: module.start,
                            file_offset: module.file_offset,
                        },
                        TranslateError::NoSegment { file_offset } => SymbolizeError::NoSegment {
                            path,
                            addr: probe,
                            file_offset,
                        },
                    }
                })
        })
    }

    /// Symbolizes `vaddr`, an ELF virtual address of the file at `path` (as
    /// in its symbol table and DWARF, what `addr2line -e` takes), with no
    /// translation from a process's layout. Parsed files are shared with
    /// [`Symbolizer::symbolize`].
    pub fn symbolize_file_address(
        &mut self,
        path: &Path,
        vaddr: u64,
    ) -> Result<Symbolization, SymbolizeError> {
        self.lookup(path, |_| Ok(vaddr))
    }

    /// Looks up, in the file at `path`, the ELF virtual address that
    /// `file_address` gives for it.
    fn lookup(
        &mut self,
        path: &Path,
        file_address: impl FnOnce(&ElfInfo) -> Result<u64, SymbolizeError>,
    ) -> Result<Symbolization, SymbolizeError> {
        let Self {
            search,
            cache,
            identities,
        } = self;
        let entry = Self::module(cache, identities, path)?;
        let file_address = file_address(&entry.main.info)?;
        let frames = entry.lookup(file_address, search);
        let build_id = entry.main.info.build_id_hex();
        cache.evict();
        Ok(Symbolization {
            frames,
            file_address,
            build_id,
        })
    }

    /// GNU build-id of the ELF file at `path`, as hex.
    pub fn build_id(&mut self, path: &Path) -> Result<Option<String>, SymbolizeError> {
        let module = Self::module(&mut self.cache, &mut self.identities, path)?;
        Ok(module.main.info.build_id_hex().map(|id| id.to_string()))
    }
}

/// A [`Symbolizer`] in a batch (see [`Symbolizer::batch`]); the batch ends
/// when this is dropped.
pub struct Batch<'s> {
    symbolizer: &'s mut Symbolizer,
}

impl Deref for Batch<'_> {
    type Target = Symbolizer;

    fn deref(&self) -> &Symbolizer {
        self.symbolizer
    }
}

impl DerefMut for Batch<'_> {
    fn deref_mut(&mut self) -> &mut Symbolizer {
        self.symbolizer
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.symbolizer.identities.end_batch();
    }
}

#[cfg(test)]
mod file_address_tests {
    use super::{
        Symbolizer,
        tests::{TempDir, compile, marker_line, symbol_address, symbolize_placed},
    };

    const SOURCE: &str = r#"volatile int counter;
__attribute__((noinline)) void sink(void) { counter++; }
static inline __attribute__((always_inline)) void helper(int x) {
    sink(); /* MARK:helper_call */
    counter += x;
}
__attribute__((noinline)) int outer_fn(int x) { /* MARK:outer_fn */
    helper(x); /* MARK:outer_call */
    return counter;
}
int main(int argc, char **argv) { (void)argv; return outer_fn(argc); }
"#;

    /// The ELF address itself is looked up, for PIE and fixed-address
    /// executables alike, and the answer is what a mapped lookup of the
    /// same instruction gives.
    #[test]
    fn looks_up_elf_virtual_addresses() {
        let dir = TempDir::new("file-address");
        let mut symbolizer = Symbolizer::new(Vec::new()).with_debuginfod(None);
        for (name, flags) in [
            ("pie", &["-fPIE", "-pie"][..]),
            ("nopie", &["-fno-pie", "-no-pie"][..]),
        ] {
            let mut args = vec!["-g", "-O1"];
            args.extend(flags);
            let exe = compile(&dir, "cc", &format!("{name}.c"), SOURCE, &args, name);
            let vaddr = symbol_address(&exe, "outer_fn");
            let entry = symbolizer
                .symbolize_file_address(&exe, vaddr)
                .expect("symbolize");
            assert_eq!(entry.file_address, vaddr);
            let frame = entry.frames.last().expect("a frame");
            assert_eq!(frame.function.as_deref(), Some("outer_fn"), "{entry:?}");
            assert_eq!(frame.line, Some(marker_line(SOURCE, "MARK:outer_fn")));
            assert_eq!(
                entry.build_id.as_deref().map(str::to_owned),
                symbolizer.build_id(&exe).expect("build id")
            );

            // Somewhere inside the inlined helper: an inline chain, the
            // same one a mapped lookup finds.
            let inlined = (vaddr..vaddr + 64)
                .map(|a| (a, symbolizer.symbolize_file_address(&exe, a).unwrap()))
                .find(|(_, s)| s.frames.len() == 2)
                .unwrap_or_else(|| panic!("no inlined frames in outer_fn of {name}"));
            let (addr, chain) = inlined;
            assert_eq!(chain.frames[0].function.as_deref(), Some("helper"));
            assert!(chain.frames[0].inlined);
            assert_eq!(chain.frames[1].function.as_deref(), Some("outer_fn"));
            assert_eq!(
                chain.frames[1].line,
                Some(marker_line(SOURCE, "MARK:outer_call"))
            );
            let base = if name == "pie" { 0x5555_5555_0000 } else { 0 };
            let mapped = symbolize_placed(&mut symbolizer, &exe, base, addr);
            assert_eq!(mapped, chain);
        }
        let missing = dir.join("missing");
        assert!(symbolizer.symbolize_file_address(&missing, 0x1000).is_err());
    }
}
