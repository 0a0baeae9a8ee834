//! Getting the bytes of a binary into memory without trusting the binary.
//!
//! The symbolizer runs as root and is pointed at whatever files crashed
//! processes had mapped, so a path may name a FIFO (opening it would block), a
//! device (reading `/dev/zero` never ends), a multi-gigabyte file, or a file
//! its owner truncates while we read it. This module only ever hands out the
//! contents of a regular file of bounded size:
//!
//! * the path is checked and opened by the rules of [`crate::support::elfimage`]
//!   (regular files of bounded size only, never blocking, and still the
//!   file that was checked);
//! * files only root can write are mapped read-only; files someone else can
//!   write are copied onto the heap instead, because that someone could
//!   truncate a mapped file and kill us with `SIGBUS` on the next access.
//!
//! Section data handed to gimli stays zero-copy for mapped, uncompressed
//! sections; compressed sections are inflated with a hard cap on the output.

use std::{fmt, io::Read, ops::Deref, os::unix::fs::MetadataExt, path::Path, sync::Arc};

use memmap2::{Mmap, MmapOptions};
use object::{CompressionFormat, ObjectSection};

use super::SymbolizeError;
use crate::support::elfimage;

pub(crate) use crate::support::elfimage::{FileKey, MAX_FILE_SIZE, stat_regular};

/// The whole contents of one file.
pub(crate) enum Backing {
    Mapped(Mmap),
    Heap(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mapped(map) => map,
            Backing::Heap(bytes) => bytes,
        }
    }
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Backing::Mapped(_) => "mapped",
            Backing::Heap(_) => "heap",
        };
        f.debug_struct("Backing")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

impl Backing {
    /// Bytes this backing holds on the heap (mapped pages are page cache).
    pub fn heap_bytes(&self) -> u64 {
        match self {
            Backing::Mapped(_) => 0,
            Backing::Heap(bytes) => bytes.len() as u64,
        }
    }
}

/// An opened, checked file and its contents.
pub(crate) struct LoadedBytes {
    pub key: FileKey,
    pub data: Arc<Backing>,
}

/// Opens `path`, checks that it is still the file `expected` describes, and
/// returns its contents.
pub(crate) fn load(path: &Path, expected: FileKey) -> Result<LoadedBytes, SymbolizeError> {
    let (file, meta) = elfimage::open_checked(path, expected)?;
    let key = expected;
    let read_err = |source| SymbolizeError::Read {
        path: path.to_owned(),
        source,
    };
    let len = usize::try_from(key.size)
        .map_err(|_| read_err(std::io::Error::other("file size out of range")))?;
    let only_root_writes = meta.uid() == 0 && meta.mode() & 0o022 == 0;
    let data = if only_root_writes && len > 0 {
        // SAFETY: the mapping is read-only and only root can modify the file;
        // its bytes are treated as untrusted input, never as trusted layout.
        let map = unsafe { MmapOptions::new().len(len).map(&file) }.map_err(read_err)?;
        Backing::Mapped(map)
    } else {
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len)
            .map_err(|e| read_err(std::io::Error::other(e)))?;
        file.take(key.size)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        Backing::Heap(bytes)
    };
    Ok(LoadedBytes {
        key,
        data: Arc::new(data),
    })
}

/// Bytes of one section: a window into the file, or inflated on the heap.
#[derive(Clone, Debug)]
pub(crate) enum SectionBytes {
    File {
        data: Arc<Backing>,
        start: usize,
        end: usize,
    },
    Owned(Arc<[u8]>),
}

impl SectionBytes {
    pub fn empty() -> Self {
        SectionBytes::Owned(Arc::from(Vec::new()))
    }
}

impl Deref for SectionBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SectionBytes::File { data, start, end } => data.get(*start..*end).unwrap_or_default(),
            SectionBytes::Owned(bytes) => bytes,
        }
    }
}

// SAFETY: both variants point into heap or mapped memory owned through an
// `Arc`, which does not move while any clone is alive, and clones deref to
// the same bytes.
unsafe impl gimli::StableDeref for SectionBytes {}
// SAFETY: see above; cloning the `Arc` keeps the address.
unsafe impl gimli::CloneStableDeref for SectionBytes {}

/// Returns the (uncompressed) bytes of `section`, charging inflated bytes to
/// `budget` and refusing to inflate more than it has left.
pub(crate) fn section_bytes<'data>(
    data: &Arc<Backing>,
    section: &impl ObjectSection<'data>,
    budget: &mut u64,
) -> Result<SectionBytes, String> {
    let range = section.compressed_file_range().map_err(|e| e.to_string())?;
    let window = |offset: u64, size: u64| -> Result<(usize, usize), String> {
        let start = usize::try_from(offset).map_err(|_| "offset out of range".to_owned())?;
        let size = usize::try_from(size).map_err(|_| "size out of range".to_owned())?;
        match start.checked_add(size) {
            Some(end) if end <= data.len() => Ok((start, end)),
            _ => Err(format!(
                "data at {offset:#x}+{size:#x} runs past the end of the file"
            )),
        }
    };
    let (start, end) = window(range.offset, range.compressed_size)?;
    if range.format == CompressionFormat::None {
        return Ok(SectionBytes::File {
            data: Arc::clone(data),
            start,
            end,
        });
    }
    if range.uncompressed_size > *budget {
        return Err(format!(
            "uncompressed size {} exceeds the remaining limit of {} bytes",
            range.uncompressed_size, budget
        ));
    }
    let size = usize::try_from(range.uncompressed_size)
        .map_err(|_| "uncompressed size out of range".to_owned())?;
    let input = data.get(start..end).unwrap_or_default();
    let bytes = match range.format {
        // object inflates zlib into a buffer of exactly the declared size.
        CompressionFormat::Zlib => object::CompressedData {
            format: range.format,
            data: input,
            uncompressed_size: range.uncompressed_size,
        }
        .decompress()
        .map_err(|e| e.to_string())?
        .into_owned(),
        CompressionFormat::Zstandard => inflate_zstd(input, size)?,
        other => return Err(format!("unsupported compression {other:?}")),
    };
    *budget -= bytes.len() as u64;
    Ok(SectionBytes::Owned(Arc::from(bytes)))
}

/// Inflates zstd frames, failing as soon as the output exceeds `size` bytes
/// (a crafted frame can otherwise expand without limit).
pub(crate) fn inflate_zstd(mut input: &[u8], size: usize) -> Result<Vec<u8>, String> {
    use ruzstd::decoding::{
        StreamingDecoder,
        errors::{FrameDecoderError, ReadFrameHeaderError},
    };
    let mut out = Vec::new();
    out.try_reserve_exact(size).map_err(|e| e.to_string())?;
    while !input.is_empty() {
        let decoder = match StreamingDecoder::new(&mut input) {
            Ok(decoder) => decoder,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                input = usize::try_from(length)
                    .ok()
                    .and_then(|length| input.get(length..))
                    .ok_or("truncated zstd skippable frame")?;
                continue;
            }
            Err(e) => return Err(format!("invalid zstd data: {e}")),
        };
        let room = (size - out.len()) as u64 + 1;
        decoder
            .take(room)
            .read_to_end(&mut out)
            .map_err(|e| format!("invalid zstd data: {e}"))?;
        if out.len() > size {
            return Err("zstd data inflates past its declared size".to_owned());
        }
    }
    if out.len() != size {
        return Err(format!(
            "zstd data inflates to {} bytes, header says {size}",
            out.len()
        ));
    }
    Ok(out)
}
