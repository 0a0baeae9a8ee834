//! MiniDebugInfo: the `.gnu_debugdata` section some distributions (Fedora,
//! RHEL, CentOS) leave in otherwise stripped binaries.
//!
//! It is an xz-compressed ELF file whose `.symtab` holds the function
//! symbols that `.dynsym` lacks (static and hidden functions), so that a
//! crash in an internal function of a system library still gets a name when
//! no debuginfo package is installed. The section comes from a hostile file,
//! so inflation is capped in both output and dictionary size, and the
//! decoder is pure Rust without `unsafe`.

use object::{Object, ObjectSection};

use super::elf::SymbolTable;

/// Name of the section holding the compressed ELF file.
pub(crate) const SECTION: &str = ".gnu_debugdata";

/// Most bytes a `.gnu_debugdata` section may inflate to. Real ones are a
/// few hundred kilobytes even for the largest libraries.
pub(crate) const MAX_INFLATED: usize = 64 << 20;

/// Largest LZMA2 dictionary the decoder allocates (what `xz -9` uses; the
/// default `xz -6` needs 8 MiB).
const MAX_DICT: usize = 64 << 20;

/// Inflates one xz stream, failing once the output would exceed `cap` bytes
/// or the data is corrupt, truncated or fails its integrity check.
pub(crate) fn inflate_xz(input: &[u8], cap: usize) -> Result<Vec<u8>, String> {
    let mut decoder = xz4rust::XzDecoder::in_heap_with_alloc_dict_size(4096, MAX_DICT);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut rest = input;
    loop {
        let result = decoder
            .decode(rest, &mut chunk)
            .map_err(|e| format!("invalid xz data: {e}"))?;
        let (used, produced) = (result.input_consumed(), result.output_produced());
        if out.len() + produced > cap {
            return Err(format!("xz data inflates past {cap} bytes"));
        }
        out.extend_from_slice(&chunk[..produced]);
        rest = rest.get(used..).unwrap_or_default();
        if result.is_end_of_stream() {
            return Ok(out);
        }
        if !result.made_progress() {
            return Err("truncated xz data".to_owned());
        }
    }
}

/// The function symbols of the MiniDebugInfo embedded in `elf`, or `None`
/// if it has none or it cannot be read (the reason is logged).
pub(crate) fn symbols(elf: &object::File<'_>, path: &std::path::Path) -> Option<SymbolTable> {
    let section = elf.section_by_name(SECTION)?;
    let read = || -> Result<SymbolTable, String> {
        let compressed = section.data().map_err(|e| e.to_string())?;
        let inflated = inflate_xz(compressed, MAX_INFLATED)?;
        let mini = object::File::parse(&*inflated).map_err(|e| e.to_string())?;
        if mini.format() != object::BinaryFormat::Elf {
            return Err("not an ELF file".to_owned());
        }
        Ok(SymbolTable::read(&mini, false))
    };
    match read() {
        Ok(table) => Some(table),
        Err(reason) => {
            log::warn!("ignoring {SECTION} of {}: {reason}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };

    use super::*;

    /// `data` compressed by the `xz` tool.
    fn xz(data: &[u8]) -> Vec<u8> {
        let mut child = Command::new("xz")
            .args(["-c", "-z"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run xz (Debian package xz-utils)");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().expect("xz output");
        writer.join().expect("writer").expect("write to xz");
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn inflates_xz_within_the_cap() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let packed = xz(&data);
        let inflated = inflate_xz(&packed, data.len()).expect("inflates");
        assert!(inflated == data, "round trip changed the data");
        let err = inflate_xz(&packed, data.len() - 1).unwrap_err();
        assert!(err.contains("inflates past"), "{err}");
    }

    #[test]
    fn rejects_damaged_xz() {
        let data = vec![0u8; 1 << 20];
        let packed = xz(&data);
        assert!(inflate_xz(&packed[..packed.len() / 2], 2 << 20).is_err());
        assert!(inflate_xz(&[], 2 << 20).is_err());
        assert!(inflate_xz(b"not xz at all", 2 << 20).is_err());
        let mut flipped = packed.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        assert!(inflate_xz(&flipped, 2 << 20).is_err());
    }
}
