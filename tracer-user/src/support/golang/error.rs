//! Why a file could not be read as a Go executable.
//!
//! A file that is simply not Go is not an error (`go_info` answers `None`);
//! these are the cases where reading failed or where the file claims to be
//! Go but its tables are damaged, which a report should say rather than
//! silently dropping Go frames.

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("cannot stat {}: {source}", path.display())]
    Stat { path: PathBuf, source: io::Error },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("{} is {size} bytes, more than the {limit}-byte limit", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{} changed while it was being opened", path.display())]
    Changed { path: PathBuf },
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// The ELF headers or segments cannot be read.
    #[error("bad elf file: {0}")]
    Elf(String),
    /// The pclntab header or tables are damaged.
    #[error("corrupt pclntab: {0}")]
    Pclntab(&'static str),
    /// A pclntab layout this reader does not know.
    #[error("unsupported pclntab magic {0:#x}")]
    UnsupportedMagic(u32),
    /// The runtime's tables of a release whose layout is not known here.
    #[error("{version}: unknown go runtime layout, missing {missing}")]
    UnknownLayout { version: String, missing: String },
    /// Any other error, in a binary whose buildinfo names its Go version.
    #[error("{version}: {source}")]
    InVersion {
        version: String,
        source: Box<GoError>,
    },
}

impl GoError {
    /// The same error, naming the Go version the buildinfo gave, if any.
    pub(crate) fn for_version(self, version: Option<&str>) -> Self {
        match (version, self) {
            (Some(version), e @ (GoError::Pclntab(_) | GoError::UnsupportedMagic(_))) => {
                GoError::InVersion {
                    version: version.to_owned(),
                    source: Box::new(e),
                }
            }
            (_, e) => e,
        }
    }

    /// The same error, naming the file it came from where it does not yet.
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            GoError::Elf(reason) => GoError::Read {
                path: path.to_owned(),
                reason: format!("bad elf file: {reason}"),
            },
            e @ (GoError::Pclntab(_)
            | GoError::UnsupportedMagic(_)
            | GoError::UnknownLayout { .. }
            | GoError::InVersion { .. }) => GoError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            },
            other => other,
        }
    }
}
