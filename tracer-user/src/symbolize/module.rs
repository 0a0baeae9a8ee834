//! Per-file state: the bytes of a binary plus whatever has been parsed out of
//! it so far, and the pairing of a binary with its separate debug file.
//!
//! Parsing is lazy because most crash stacks touch only a few addresses per
//! library: a symbol table is read only when DWARF cannot name a function,
//! and a separate debug file is searched for only when the binary itself
//! lacks DWARF or a symbol table. Damaged DWARF or symbol data degrades the
//! answer (fewer frames, no line) instead of failing the lookup; only a file
//! that cannot be read or is not ELF at all is an error.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::support::golang::GoBinary;

use super::{
    SymbolFrame, SymbolizeError,
    debuglink::{self, Search},
    demangle::Names,
    dwarf::{self, Reader},
    elf::{ElfInfo, SymbolTable},
    file::{self, Backing, FileKey},
    minidebug,
    plt::{PltName, PltTable},
};
use crate::support::lru::Weigh;

/// Most bytes inflated from compressed sections of one file.
const MAX_INFLATE_PER_FILE: u64 = 1 << 30;

/// Parsed-on-demand state.
enum Lazy<T> {
    Unloaded,
    Loaded(T),
    Unavailable,
}

impl<T> Lazy<T> {
    /// Loads the value with `load` on first use; a failed load is not retried.
    fn force(&mut self, load: impl FnOnce() -> Option<T>) -> Option<&mut T> {
        if matches!(self, Lazy::Unloaded) {
            *self = load().map_or(Lazy::Unavailable, Lazy::Loaded);
        }
        match self {
            Lazy::Loaded(value) => Some(value),
            Lazy::Unloaded | Lazy::Unavailable => None,
        }
    }

    fn get(&self) -> Option<&T> {
        match self {
            Lazy::Loaded(value) => Some(value),
            Lazy::Unloaded | Lazy::Unavailable => None,
        }
    }
}

/// One ELF file on disk.
pub(crate) struct ObjectFile {
    pub path: PathBuf,
    pub key: FileKey,
    pub data: Arc<Backing>,
    pub info: ElfInfo,
    /// Bytes still allowed to be inflated from compressed sections.
    inflate_budget: u64,
    /// Heap bytes held by DWARF state (inflated sections, a dwz file).
    dwarf_bytes: u64,
    dwarf: Lazy<addr2line::Context<Reader>>,
    symtab: Lazy<SymbolTable>,
    dynsym: Lazy<SymbolTable>,
    /// `.symtab` of the MiniDebugInfo in `.gnu_debugdata`.
    minidebug: Lazy<SymbolTable>,
    /// The Go runtime's tables, for a Go executable.
    go: Lazy<GoBinary>,
    plt: Lazy<PltTable>,
    /// Names found so far, demangled.
    names: Names,
}

fn parse_elf<'d>(path: &Path, data: &'d [u8]) -> Result<object::File<'d>, SymbolizeError> {
    let file = object::File::parse(data).map_err(|source| SymbolizeError::Elf {
        path: path.to_owned(),
        source,
    })?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(SymbolizeError::NotElf {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

impl ObjectFile {
    /// Opens and parses `path`, which must be the file `key` describes.
    pub fn open_as(path: &Path, key: FileKey) -> Result<Self, SymbolizeError> {
        let loaded = file::load(path, key)?;
        let info = {
            let elf = parse_elf(path, &loaded.data)?;
            ElfInfo::parse(&elf).map_err(|source| SymbolizeError::Elf {
                path: path.to_owned(),
                source,
            })?
        };
        Ok(Self {
            path: path.to_owned(),
            key: loaded.key,
            data: loaded.data,
            info,
            inflate_budget: MAX_INFLATE_PER_FILE,
            dwarf_bytes: 0,
            dwarf: Lazy::Unloaded,
            symtab: Lazy::Unloaded,
            dynsym: Lazy::Unloaded,
            minidebug: Lazy::Unloaded,
            go: Lazy::Unloaded,
            plt: Lazy::Unloaded,
            names: Names::default(),
        })
    }

    /// Opens and parses `path`.
    pub fn open(path: &Path) -> Result<Self, SymbolizeError> {
        Self::open_as(path, file::stat_regular(path)?)
    }

    fn load_context(
        &mut self,
        search: &Search,
    ) -> Result<addr2line::Context<Reader>, SymbolizeError> {
        let data = Arc::clone(&self.data);
        let elf = parse_elf(&self.path, &data)?;
        let mut budget = self.inflate_budget;
        let section_err = |path: &Path, e: dwarf::SectionError| SymbolizeError::Section {
            path: path.to_owned(),
            section: e.section,
            reason: e.reason,
        };
        let mut dwarf = dwarf::load_dwarf(&elf, &data, self.info.endian, &mut budget)
            .map_err(|e| section_err(&self.path, e))?;
        if let Some((name, build_id)) = &self.info.altlink {
            match debuglink::find_sup(self, name, build_id, search) {
                Some(sup) => {
                    let sup_elf = parse_elf(&sup.path, &sup.data)?;
                    dwarf::load_sup(
                        &mut dwarf,
                        &sup_elf,
                        &sup.data,
                        sup.info.endian,
                        &mut budget,
                    )
                    .map_err(|e| section_err(&sup.path, e))?;
                    self.dwarf_bytes += sup.data.heap_bytes();
                }
                None => log::debug!(
                    "no supplementary debug file {} for {}",
                    String::from_utf8_lossy(name),
                    self.path.display()
                ),
            }
        }
        self.dwarf_bytes += self.inflate_budget - budget;
        self.inflate_budget = budget;
        addr2line::Context::from_dwarf(dwarf).map_err(|source| SymbolizeError::Dwarf {
            path: self.path.clone(),
            source,
        })
    }

    /// DWARF frames for `probe`; empty when there is no usable DWARF.
    fn frames(&mut self, probe: u64, search: &Search) -> Vec<SymbolFrame> {
        if !self.info.has_dwarf {
            return Vec::new();
        }
        if matches!(self.dwarf, Lazy::Unloaded) {
            self.dwarf = match self.load_context(search) {
                Ok(ctx) => Lazy::Loaded(ctx),
                Err(e) => {
                    log::warn!("ignoring debug info: {e}");
                    Lazy::Unavailable
                }
            };
        }
        let Some(ctx) = self.dwarf.get() else {
            return Vec::new();
        };
        dwarf::find_frames(ctx, probe, &mut self.names).unwrap_or_else(|source| {
            let e = SymbolizeError::Dwarf {
                path: self.path.clone(),
                source,
            };
            log::debug!("no frames for {probe:#x}: {e}");
            Vec::new()
        })
    }

    /// Name of the function symbol covering `addr` in `.symtab`, or in
    /// `.dynsym` if `dynamic`.
    fn symbol(&mut self, addr: u64, dynamic: bool) -> Option<Arc<str>> {
        let (data, path) = (&self.data, &self.path);
        let load = || match parse_elf(path, data) {
            Ok(elf) => Some(SymbolTable::read(&elf, dynamic)),
            Err(e) => {
                log::warn!("ignoring symbol table: {e}");
                None
            }
        };
        let table = if dynamic {
            self.dynsym.force(load)
        } else {
            self.symtab.force(load)
        };
        let name = table?.lookup(addr)?;
        Some(self.names.function(name.as_bytes(), None))
    }

    /// The name of the PLT stub holding `addr`: `None` outside the PLT,
    /// `Some(None)` in a part of it that calls no named function.
    fn plt_name(&mut self, addr: u64) -> Option<Option<Arc<str>>> {
        let (data, path) = (&self.data, &self.path);
        let table = self.plt.force(|| match parse_elf(path, data) {
            Ok(elf) => Some(PltTable::read(&elf)),
            Err(e) => {
                log::warn!("ignoring the plt: {e}");
                None
            }
        })?;
        match table.lookup(addr) {
            PltName::Outside => None,
            PltName::Unnamed => Some(None),
            PltName::Stub(name) => Some(Some(self.names.function(name.as_bytes(), None))),
        }
    }

    /// Name of the function symbol covering `addr` in the MiniDebugInfo.
    fn mini_symbol(&mut self, addr: u64) -> Option<Arc<str>> {
        if !self.info.has_minidebug {
            return None;
        }
        let (data, path) = (&self.data, &self.path);
        let table = self.minidebug.force(|| match parse_elf(path, data) {
            Ok(elf) => minidebug::symbols(&elf, path),
            Err(e) => {
                log::warn!("ignoring {}: {e}", minidebug::SECTION);
                None
            }
        });
        let name = table?.lookup(addr)?;
        Some(self.names.function(name.as_bytes(), None))
    }
}

impl ObjectFile {
    /// Frames for `probe` from the Go runtime's pclntab, when this is a Go
    /// executable and a Go function holds `probe`. The pclntab is what Go's
    /// own tracebacks print and survives `-ldflags=-s -w`, so for Go code it
    /// is preferred to DWARF; C code in a cgo binary is not in it.
    fn go_frames(&mut self, probe: u64) -> Option<Vec<SymbolFrame>> {
        let (data, path) = (&self.data, &self.path);
        let go = self.go.force(|| match GoBinary::parse(&***data) {
            Ok(go) => go,
            Err(e) => {
                log::warn!("ignoring go tables of {}: {e}", path.display());
                None
            }
        })?;
        let frames = go.frames(probe)?;
        Some(
            frames
                .into_iter()
                .map(|f| SymbolFrame {
                    function: f.function.map(Into::into),
                    file: f.file.map(Into::into),
                    line: f.line,
                    column: None,
                    inlined: f.inlined,
                })
                .collect(),
        )
    }
}

impl Weigh for ObjectFile {
    fn heap_bytes(&self) -> u64 {
        let table = |t: &Lazy<SymbolTable>| t.get().map_or(0, SymbolTable::heap_bytes);
        self.data.heap_bytes()
            + self.dwarf_bytes
            + table(&self.symtab)
            + table(&self.dynsym)
            + table(&self.minidebug)
            + self.go.get().map_or(0, GoBinary::heap_bytes)
            + self.plt.get().map_or(0, PltTable::heap_bytes)
            + self.names.heap_bytes()
    }
}

/// A binary and, once looked for, its separate debug file.
pub(crate) struct Module {
    pub main: ObjectFile,
    debug: Lazy<ObjectFile>,
}

impl Module {
    pub fn new(main: ObjectFile) -> Self {
        Self {
            main,
            debug: Lazy::Unloaded,
        }
    }

    /// Frames for ELF virtual address `probe`, innermost first. Uses DWARF
    /// where there is some, and names the outermost frame from a symbol table
    /// when DWARF cannot. Empty when nothing is known about the address.
    pub fn lookup(&mut self, probe: u64, search: &Search) -> Vec<SymbolFrame> {
        if let Some(frames) = self.main.go_frames(probe) {
            return frames;
        }
        let Self { main, debug } = self;
        if !main.info.has_dwarf || !main.info.has_symtab {
            debug.force(|| debuglink::find_debug_file(main, search));
        }
        let mut debug = match debug {
            Lazy::Loaded(file) => Some(file),
            Lazy::Unloaded | Lazy::Unavailable => None,
        };
        let mut frames = if main.info.has_dwarf {
            main.frames(probe, search)
        } else {
            debug
                .as_mut()
                .map(|d| d.frames(probe, search))
                .unwrap_or_default()
        };
        if frames.is_empty()
            && let Some(stub) = main.plt_name(probe)
        {
            // Symbol tables do not cover PLT stubs: the nearest symbol
            // before one is some other function.
            if let Some(name) = stub {
                frames.push(SymbolFrame::named(name));
            }
            return frames;
        }
        if frames.last().is_none_or(|f| f.function.is_none()) {
            let name = main
                .symbol(probe, false)
                .or_else(|| debug.and_then(|d| d.symbol(probe, false)))
                .or_else(|| main.mini_symbol(probe))
                .or_else(|| main.symbol(probe, true));
            match frames.last_mut() {
                Some(last) => last.function = name,
                None => frames.extend(name.map(SymbolFrame::named)),
            }
        }
        frames
    }
}

impl Weigh for Module {
    fn heap_bytes(&self) -> u64 {
        self.main.heap_bytes() + self.debug.get().map_or(0, Weigh::heap_bytes)
    }
}
