//! Go executables: recognizing them, and reading the runtime's own tables
//! to name functions, find probe sites and unwind Go frames.
//!
//! Go binaries are this tool's main users, and the usual way they ship,
//! built with `-ldflags="-s -w"`, has neither a symbol table nor DWARF. What
//! every Go binary keeps is what the Go runtime needs for its own
//! tracebacks and garbage collector: the pclntab, which maps every
//! instruction to its function, file, line, stack-pointer offset and
//! inlining, and the buildinfo blob with the Go version. This module reads
//! those, and only those, so that:
//!
//! * the loader can place uprobes on runtime functions (`runtime.fatalpanic`,
//!   `runtime.fatalthrow`, ...) in stripped binaries: [`go_info`], then
//!   [`symbol_file_offset`] or [`symbol_file_offsets`];
//! * the symbolizer names Go frames with Go's own answer, inlined calls
//!   included ([`GoBinary::frames`]);
//! * the unwinder steps Go frames exactly, even at a function's first
//!   instruction where no frame pointer is set up yet ([`step`]);
//! * `crashtrace goroutines` reads a live process's goroutines ([`live`],
//!   with the runtime's wait reasons from [`waitreasons`]).
//!
//! Everything is read from a copy of the file's data segments (see
//! `image`), every offset is checked, and every loop is bounded by the
//! bytes it reads, because the files belong to whoever ran the process.
//!
//! Layouts: Go 1.16-1.17, 1.18-1.19 and 1.20 and later (see `pclntab`),
//! with the text start and funcdata base from the runtime's `moduledata`
//! (1.18 to 1.27, see `moduledata`; Go 1.26 stopped putting the text start
//! in the pclntab header); buildinfo in both its pre-1.18 and current forms
//! (see `buildinfo`). A layout not known here is an error that names the
//! Go version and what is missing, never a binary silently taken as not Go.

mod buildinfo;
mod cache;
mod error;
mod image;
pub mod live;
mod moduledata;
mod pclntab;
mod pcvalue;
mod symtab;
#[cfg(test)]
mod synthetic_tests;
#[cfg(test)]
pub(crate) mod test_toolchains;
#[cfg(test)]
mod tests;
mod unwind;
pub mod waitreasons;

use std::{
    fs::OpenOptions,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

use object::ReadRef;

pub use buildinfo::BuildInfo;
pub use cache::Cache;
pub use error::GoError;
pub use symtab::{Function, GoFrame};
pub use unwind::{FrameKind, GoCaller, StepError, UnwindRow, step};

use image::{Image, Memory};
use pclntab::Pclntab;

/// Largest file read.
pub const MAX_FILE_SIZE: u64 = 2 << 30;

/// A Go executable's runtime tables.
#[derive(Debug)]
pub struct GoBinary {
    /// Go version and main module; `None` when the buildinfo blob is
    /// missing or damaged (the tables still work).
    pub build: Option<BuildInfo>,
    memory: Memory,
    table: Pclntab,
    /// `moduledata.gofunc`, the base of funcdata offsets (Go 1.18 and
    /// later); without it there are no inlined frames.
    gofunc: Option<u64>,
    /// What could not be read although the binary works without it (the
    /// funcdata base of a moduledata layout not known here), to be said
    /// once where the binary is first met.
    incomplete: Option<GoError>,
}

impl GoBinary {
    /// Reads the Go tables of the ELF file in `data`. `Ok(None)` when it is
    /// not a Go executable; an error when it is ELF that claims to be Go
    /// but whose tables cannot be read.
    pub fn parse<'d, R: ReadRef<'d>>(data: R) -> Result<Option<Self>, GoError> {
        match Image::parse(data)? {
            Some(image) => Self::from_image(image),
            None => Ok(None),
        }
    }

    fn from_image(image: Image) -> Result<Option<Self>, GoError> {
        let build = buildinfo::read(&image);
        let version = build.as_ref().map(|b| b.go_version.as_str());
        let mut table = match pclntab::locate(&image.memory, image.pclntab_section) {
            Some(table) => table.map_err(|e| e.for_version(version))?,
            None if build.is_some() || image.pclntab_section.is_some() => {
                return Err(GoError::Pclntab("no pclntab found").for_version(version));
            }
            None => return Ok(None),
        };
        let (mut gofunc, mut incomplete) = (None, None);
        if table.layout != pclntab::Layout::Go116 {
            let tab = image
                .memory
                .read(table.vaddr, table.len as u64)
                .unwrap_or_default();
            match moduledata::find(&image.memory, &table, tab, version) {
                Ok(module) => {
                    table.text_start = module.text;
                    gofunc = Some(module.gofunc);
                }
                // Go 1.26 and later: without moduledata no function has an
                // address.
                Err(e) if table.text_start == 0 => return Err(e),
                Err(e) => incomplete = Some(e),
            }
        }
        Ok(Some(Self {
            build,
            memory: image.memory,
            table,
            gofunc,
            incomplete,
        }))
    }

    /// What was not understood in a binary that still works, for example
    /// the moduledata of a Go release newer than this reader (no inlined
    /// frames then). Worth a warning where the binary is first met.
    pub fn incomplete(&self) -> Option<&GoError> {
        self.incomplete.as_ref()
    }

    /// Tables from a bare pclntab at address `vaddr`, with no ELF file
    /// around it (no buildinfo, no inline trees): lets the table reader be
    /// fuzzed without an ELF wrapper.
    #[doc(hidden)]
    pub fn from_pclntab(bytes: Vec<u8>, vaddr: u64) -> Result<Self, GoError> {
        let len = bytes.len() as u64;
        let memory = Memory {
            loads: vec![image::Load {
                vaddr,
                offset: 0,
                filesz: len,
                executable: false,
                writable: false,
            }],
            copies: vec![image::Copied {
                vaddr,
                writable: false,
                data: bytes,
            }],
        };
        let table = match pclntab::locate(&memory, Some((vaddr, len))) {
            Some(table) => table?,
            None => return Err(GoError::Pclntab("no pclntab found")),
        };
        Ok(Self {
            build: None,
            memory,
            table,
            gofunc: None,
            incomplete: None,
        })
    }

    /// Entry of the first function and end of the last, as the function
    /// table says.
    pub fn text_range(&self) -> Option<(u64, u64)> {
        self.table.text_range(self.tab())
    }

    /// The Go version (`go1.19.8`), when the buildinfo says.
    pub fn go_version(&self) -> Option<&str> {
        self.build.as_ref().map(|b| b.go_version.as_str())
    }

    /// The bytes of the pclntab.
    fn tab(&self) -> &[u8] {
        self.memory
            .read(self.table.vaddr, self.table.len as u64)
            .unwrap_or_default()
    }

    /// Number of functions in the pclntab.
    pub fn function_count(&self) -> usize {
        self.table.nfunc
    }

    /// Entry address (ELF virtual address) of the function named `name`
    /// (`runtime.fatalpanic`, `main.main`, `main.(*Server).handle`).
    pub fn entry_of(&self, name: &str) -> Option<u64> {
        self.table.lookup_name(self.tab(), name).map(|f| f.entry)
    }

    /// Entry addresses of the functions named `names`, in one pass.
    pub fn entries_of(&self, names: &[&str]) -> Vec<Option<u64>> {
        let (table, tab) = (&self.table, self.tab());
        let mut found = vec![None; names.len()];
        let mut left = names.len();
        for func in (0..table.nfunc).filter_map(|i| table.func(tab, i)) {
            if left == 0 {
                break;
            }
            let Some(name) = table.name(tab, &func) else {
                continue;
            };
            for (slot, wanted) in found.iter_mut().zip(names) {
                if slot.is_none() && *wanted == name {
                    *slot = Some(func.entry);
                    left -= 1;
                }
            }
        }
        found
    }

    /// File offset of ELF virtual address `vaddr`, through its `PT_LOAD`
    /// segment.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.memory.file_offset(vaddr)
    }

    /// ELF virtual address of runtime address `addr`, in a mapping that
    /// starts at `map_start` and maps the file from `map_offset`.
    pub fn file_address(&self, map_start: u64, map_offset: u64, addr: u64) -> Option<u64> {
        let offset = addr.checked_sub(map_start)?.checked_add(map_offset)?;
        self.memory.loads.iter().find_map(|l| {
            let delta = offset.checked_sub(l.offset)?;
            (delta < l.filesz).then(|| l.vaddr.checked_add(delta))?
        })
    }

    /// Heap bytes held (the copied segments).
    pub fn heap_bytes(&self) -> u64 {
        self.memory.heap_bytes()
    }
}

/// Opens `path` as hostile input (a regular file of bounded size, opened
/// without blocking, still the file that was checked) and reads its Go
/// tables. `Ok(None)` when it is not a Go executable.
///
/// Costs one read of the file's data segments for a Go binary and only its
/// headers for any other ELF file; callers that ask often should keep the
/// result (see [`Cache`]).
pub fn go_info(path: &Path) -> Result<Option<GoBinary>, GoError> {
    let meta = std::fs::metadata(path).map_err(|source| GoError::Stat {
        path: path.to_owned(),
        source,
    })?;
    check(path, &meta)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| GoError::Open {
            path: path.to_owned(),
            source,
        })?;
    let opened = file.metadata().map_err(|source| GoError::Stat {
        path: path.to_owned(),
        source,
    })?;
    if (opened.dev(), opened.ino(), opened.size()) != (meta.dev(), meta.ino(), meta.size()) {
        return Err(GoError::Changed {
            path: path.to_owned(),
        });
    }
    let cache = object::ReadCache::new(file);
    GoBinary::parse(&cache).map_err(|e| e.in_file(path))
}

fn check(path: &Path, meta: &std::fs::Metadata) -> Result<(), GoError> {
    if !meta.file_type().is_file() {
        return Err(GoError::NotRegular {
            path: path.to_owned(),
        });
    }
    if meta.size() > MAX_FILE_SIZE {
        return Err(GoError::TooLarge {
            path: path.to_owned(),
            size: meta.size(),
            limit: MAX_FILE_SIZE,
        });
    }
    Ok(())
}

/// Whether Go function `name` belongs to the runtime's own machinery
/// (`runtime.throw`, and from Go 1.24 the runtime's internal packages such
/// as `internal/runtime/maps.fatal`, which throws "concurrent map writes"),
/// so that a crash's frames can start at the goroutine's own code.
pub fn is_runtime_function(name: &str) -> bool {
    name.starts_with("runtime.") || name.starts_with("internal/runtime/")
}

/// File offset of the entry of function `name`: where a uprobe on it
/// attaches. Works without a symbol table (the name comes from pclntab).
/// `None` when there is no such function, for example `runtime.throw` when
/// the compiler inlined every call to it.
pub fn symbol_file_offset(binary: &GoBinary, name: &str) -> Option<u64> {
    binary.file_offset(binary.entry_of(name)?)
}

/// [`symbol_file_offset`] for several names in one pass over the function
/// table: `result[i]` is the offset of `names[i]`.
pub fn symbol_file_offsets(binary: &GoBinary, names: &[&str]) -> Vec<Option<u64>> {
    binary
        .entries_of(names)
        .into_iter()
        .map(|entry| binary.file_offset(entry?))
        .collect()
}
