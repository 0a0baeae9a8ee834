//! Errors returned by the symbolizer.
//!
//! Every variant names the file it is about: the symbolizer reads binaries
//! belonging to arbitrary processes, and "cannot parse ELF" without a path is
//! useless when it shows up in a crash report.

use std::{io, path::PathBuf};

use crate::support::elfimage::OpenError;

/// Why an address could not be symbolized.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    /// The file could not be opened, or is not one the symbolizer reads
    /// (see [`crate::support::elfimage`]).
    #[error(transparent)]
    File(#[from] OpenError),
    /// Reading or mapping the file failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a well-formed ELF object.
    #[error("cannot parse {} as ELF: {source}", path.display())]
    Elf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    /// The file parsed, but is not an ELF object.
    #[error("{} is not an ELF file", path.display())]
    NotElf { path: PathBuf },
    /// A section could not be read or decompressed.
    #[error("cannot read section {section} of {}: {reason}", path.display())]
    Section {
        path: PathBuf,
        section: String,
        reason: String,
    },
    /// The DWARF data is malformed.
    #[error("cannot parse DWARF in {}: {source}", path.display())]
    Dwarf {
        path: PathBuf,
        #[source]
        source: gimli::Error,
    },
    /// The runtime address lies before the start of the given mapping.
    #[error("address {addr:#x} is below mapping start {start:#x} of {}", path.display())]
    BelowMapping {
        path: PathBuf,
        addr: u64,
        start: u64,
    },
    /// Translating the runtime address into a file offset overflowed.
    #[error("address {addr:#x} with mapping start {start:#x} and offset {file_offset:#x} overflows for {}", path.display())]
    AddressOverflow {
        path: PathBuf,
        addr: u64,
        start: u64,
        file_offset: u64,
    },
    /// No `PT_LOAD` segment covers the file offset the address maps to.
    #[error("file offset {file_offset:#x} (address {addr:#x}) is in no loadable segment of {}", path.display())]
    NoSegment {
        path: PathBuf,
        addr: u64,
        file_offset: u64,
    },
}
