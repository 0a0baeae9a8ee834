//! Putting language runtimes' fatal-path probes into the executables that
//! carry them: Go's runtime, and Rust's standard library.
//!
//! A Go or Rust executable carries its own runtime, so each one needs its own
//! probes (uprobes attach to a file, and then cover every process that runs
//! it). The functions probed are the ones only a dying Go process enters:
//! `runtime.fatalpanic` (an unrecovered panic), `runtime.fatalthrow` (a
//! fatal runtime error) and, where the linker kept them out of line,
//! `runtime.throw` and `runtime.fatal`, whose argument is the message;
//! and `runtime.gwrite`, the runtime's print output, which is kept only
//! for a process already dying (its panic text and goroutine trace).
//!
//! In a Rust executable the probe goes on the panic handler,
//! `rust_begin_unwind`, which every panic passes, caught or not: the
//! process is then watched until it either exits (status 101 for a panic
//! that unwound out of `main`) or is seen to live on. The standard
//! library's raw stderr writer, which the panic hook prints the message
//! through, is probed too: kept only for a process that panicked.
//!
//! Files are probed once, by identity (device and inode), and the number
//! of probed files is bounded: each probe is a kernel object, and a host
//! that builds thousands of Go binaries must not pin thousands of them.

use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use aya::programs::{
    UProbe,
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
use tracer_common::{go_cookie, go_probe};

/// Most executables probed at once.
pub const MAX_PROBED_FILES: usize = 512;
/// Larger files are not inspected.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The runtime functions probed, with the cookie that names each.
pub const TARGETS: &[(&str, u64)] = &[
    ("runtime.fatalpanic", go_probe::FATALPANIC),
    ("runtime.fatalthrow", go_probe::FATALTHROW),
    ("runtime.throw", go_probe::THROW),
    ("runtime.fatal", go_probe::THROW),
    ("runtime.gwrite", go_probe::GWRITE),
    ("runtime.startpanic_m", go_probe::STARTPANIC),
];

/// Rust's panic handler: `rust_begin_unwind`, a plain or a v0-mangled
/// name (`_RNv...7___rustc17rust_begin_unwind`).
const RUST_PANIC_HANDLER: &str = "rust_begin_unwind";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeProbeError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a readable ELF file: {reason}", path.display())]
    Elf { path: PathBuf, reason: String },
    #[error("cannot read the go runtime tables of {}: {source}", path.display())]
    Go {
        path: PathBuf,
        source: crate::support::golang::GoError,
    },
    #[error("{} is a Go executable ({version}) whose runtime.fatalpanic and runtime.fatalthrow cannot be probed: {detail}", path.display())]
    NoFatalPath {
        path: PathBuf,
        version: String,
        detail: String,
    },
    #[error("cannot attach a uprobe to {function} in {}: {reason}", path.display())]
    Attach {
        path: PathBuf,
        function: &'static str,
        reason: String,
    },
    #[error("{MAX_PROBED_FILES} executables are probed already; {} is not", path.display())]
    TooMany { path: PathBuf },
}

/// A runtime function's location in a Go executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub function: &'static str,
    pub cookie: u64,
    /// Offset of the function's first instruction in the file.
    pub file_offset: u64,
}

/// What was found in one executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeExecutable {
    /// `"go"` or `"rust"`.
    pub runtime: &'static str,
    /// From the Go build information, when present (`go1.19.8`).
    pub version: Option<String>,
    /// The file's device (userspace encoding) and inode.
    pub dev: u64,
    pub ino: u64,
    pub targets: Vec<Target>,
    /// What was not understood although the probes work (a Go release's
    /// moduledata layout unknown here: no inlined frames), to be shown.
    pub warning: Option<String>,
}

/// The probed executables and their probe links.
#[derive(Default)]
pub struct RuntimeProbes {
    /// By (device, inode): `None` for files that are not Go.
    files: HashMap<(u64, u64), Option<Vec<UProbeLinkId>>>,
    probed: usize,
}

impl RuntimeProbes {
    /// Probes `path` if it is a Go executable not probed yet. Returns the
    /// executable found (None when not Go, or seen before).
    pub fn probe(
        &mut self,
        program: &mut UProbe,
        path: &Path,
    ) -> Result<Option<RuntimeExecutable>, RuntimeProbeError> {
        let open = |source| RuntimeProbeError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open)?;
        let meta = file.metadata().map_err(open)?;
        let key = (meta.dev(), meta.ino());
        if self.files.contains_key(&key) {
            return Ok(None);
        }
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            self.files.insert(key, None);
            return Ok(None);
        }
        // A file that cannot be read is said once, not at every exec.
        let inspected = inspect(&file, path);
        let Some(mut found) = inspected.inspect_err(|_| {
            self.files.insert(key, None);
        })?
        else {
            self.files.insert(key, None);
            return Ok(None);
        };
        (found.dev, found.ino) = key;
        if self.probed >= MAX_PROBED_FILES {
            return Err(RuntimeProbeError::TooMany {
                path: path.to_path_buf(),
            });
        }
        // Attach through our own descriptor: `path` may be a process's
        // `/proc/PID/exe`, gone as soon as that process dies.
        let held = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let mut links = Vec::new();
        for target in &found.targets {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(target.file_offset),
                cookie: Some(target.cookie),
            };
            match program.attach(point, &held, UProbeScope::AllProcesses) {
                Ok(link) => links.push(link),
                Err(e) => {
                    for link in links {
                        let _ = program.detach(link);
                    }
                    return Err(RuntimeProbeError::Attach {
                        path: path.to_path_buf(),
                        function: target.function,
                        reason: error_chain(&e),
                    });
                }
            }
        }
        self.files.insert(key, Some(links));
        self.probed += 1;
        Ok(Some(found))
    }

    /// Number of Go executables probed.
    pub fn probed(&self) -> usize {
        self.probed
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads an executable and, when it is Go, finds the probe targets.
pub fn inspect(file: &File, path: &Path) -> Result<Option<RuntimeExecutable>, RuntimeProbeError> {
    let elf_error = |reason: String| RuntimeProbeError::Elf {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: read-only private mapping; a file truncated under us can
    // fault, which is why only regular files below the size limit get here.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| elf_error(e.to_string()))?;
    let go =
        crate::support::golang::GoBinary::parse(&*map).map_err(|source| RuntimeProbeError::Go {
            path: path.to_path_buf(),
            source,
        })?;
    let Some(go) = go else {
        let Ok(elf) = object::File::parse(&*map) else {
            return Ok(None);
        };
        return Ok(rust_targets(&elf).map(|targets| RuntimeExecutable {
            runtime: "rust",
            version: None,
            dev: 0,
            ino: 0,
            targets,
            warning: None,
        }));
    };
    // pclntab names every function, with or without a symbol table.
    let names: Vec<&str> = TARGETS.iter().map(|&(name, _)| name).collect();
    let entries = go.entries_of(&names);
    // Where the runtime keeps the goroutine, for frames past a stack
    // switch; unknown only costs those frames.
    let layout = match object::File::parse(&*map) {
        Ok(elf) => super::go_layout::layout(&elf, go.go_version()),
        Err(e) => Err(e.to_string()),
    };
    let targets: Vec<Target> = TARGETS
        .iter()
        .zip(&entries)
        .filter_map(|(&(function, which), entry)| {
            let runtime = layout.as_ref().map(|(l, _)| *l).unwrap_or_default();
            Some(Target {
                function,
                cookie: go_cookie::encode(which, runtime),
                file_offset: go.file_offset((*entry)?)?,
            })
        })
        .collect();
    let fatal = |cookie| {
        let which = go_cookie::which(cookie);
        which == go_probe::FATALPANIC || which == go_probe::FATALTHROW
    };
    if !targets.iter().any(|t| fatal(t.cookie)) {
        // Say whether the names are missing or their addresses are wrong
        // (a table layout misread), never just skip the binary.
        let detail = TARGETS
            .iter()
            .zip(&entries)
            .filter(|((_, cookie), _)| fatal(*cookie))
            .map(|((name, _), entry)| match entry {
                None => format!("{name} is not in the function table"),
                Some(addr) => format!("{name} is at {addr:#x}, outside every loadable segment"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(RuntimeProbeError::NoFatalPath {
            path: path.to_path_buf(),
            version: go.go_version().unwrap_or("unknown Go version").to_owned(),
            detail,
        });
    }
    Ok(Some(RuntimeExecutable {
        runtime: "go",
        version: go.go_version().map(str::to_string),
        dev: 0,
        ino: 0,
        targets,
        warning: {
            let mut said = Vec::new();
            if let Some(e) = go.incomplete() {
                said.push(format!(
                    "Go frames of {} lack inlined calls: {e}",
                    path.display()
                ));
            }
            if let Err(e) = &layout {
                said.push(format!(
                    "frames of {} stop where its runtime switches stacks: {e}",
                    path.display()
                ));
            }
            (!said.is_empty()).then(|| said.join("; "))
        },
    }))
}

/// The Rust standard library functions probed, from the symbol table:
/// the panic handler (without it, nothing), and the raw stderr writer the
/// panic hook prints through (`write_all`, and the `fmt::Write` adapter
/// that inlines its own write loop), wherever the compiler kept them.
fn rust_targets(elf: &object::File) -> Option<Vec<Target>> {
    let mut handler = None;
    let mut writers: Vec<Target> = Vec::new();
    for symbol in elf.symbols() {
        let (Ok(name), address) = (symbol.name(), symbol.address()) else {
            continue;
        };
        if address == 0 {
            continue;
        }
        if handler.is_none()
            && (name == RUST_PANIC_HANDLER || name.ends_with("17rust_begin_unwind"))
        {
            handler = file_offset_of(elf, address);
        } else if name.contains("6Stderr")
            && let Some(function) = rust_stderr_writer(name)
            && !writers.iter().any(|w| w.function == function)
            && let Some(file_offset) = file_offset_of(elf, address)
        {
            writers.push(Target {
                function,
                cookie: go_probe::RUST_STDERR,
                file_offset,
            });
        }
    }
    let mut targets = vec![Target {
        function: RUST_PANIC_HANDLER,
        cookie: go_probe::RUST_PANIC,
        file_offset: handler?,
    }];
    targets.extend(writers);
    Some(targets)
}

/// Which raw stderr writer of the standard library a mangled name is, if
/// one (`std::sys::..::Stderr`, not the buffered `std::io::Stderr`).
fn rust_stderr_writer(mangled: &str) -> Option<&'static str> {
    let name = format!("{:#}", rustc_demangle::try_demangle(mangled).ok()?);
    if name.starts_with("<std::sys::") && name.ends_with("::Stderr as std::io::Write>::write_all") {
        Some("<std::sys::..::Stderr as std::io::Write>::write_all")
    } else if name.contains("Adapter<std::sys::")
        && name.ends_with("::Stderr> as core::fmt::Write>::write_str")
    {
        Some("<Adapter<std::sys::..::Stderr> as core::fmt::Write>::write_str")
    } else {
        None
    }
}

/// The file offset holding virtual address `vaddr`, through the loadable
/// segments.
fn file_offset_of(elf: &object::File, vaddr: u64) -> Option<u64> {
    elf.segments().find_map(|seg| {
        let (offset, size) = seg.file_range();
        let start = seg.address();
        (vaddr >= start && vaddr < start + size).then(|| offset + (vaddr - start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_rust_test_binary_has_a_panic_handler() {
        let exe = std::env::current_exe().unwrap();
        let file = File::open(&exe).unwrap();
        let found = inspect(&file, &exe).unwrap().expect("a Rust executable");
        assert_eq!(found.runtime, "rust");
        assert_eq!(found.targets[0].cookie, go_probe::RUST_PANIC);
        let writers: Vec<_> = found.targets[1..].iter().map(|t| t.function).collect();
        assert!(
            writers.iter().any(|w| w.ends_with("::write_str")) && writers.len() == 2,
            "the raw stderr writers: {writers:?}"
        );
        assert!(
            found.targets[1..]
                .iter()
                .all(|t| t.cookie == go_probe::RUST_STDERR)
        );
    }

    #[test]
    fn a_c_program_has_no_runtime_probes() {
        let file = File::open("/bin/true").unwrap();
        assert_eq!(inspect(&file, Path::new("/bin/true")).unwrap(), None);
    }
}
