//! Just enough ELF to list a 64-bit little-endian file's functions and
//! weigh its DWARF: the benchmark picks its addresses inside functions,
//! without depending on the symbolizer under test.

use anyhow::{Context, Result, bail};

pub struct Elf {
    /// `(address, size)` of every defined function symbol with a size
    /// in `.symtab`, each once.
    pub functions: Vec<(u64, u64)>,
    /// Bytes of `.debug_*` sections.
    pub dwarf_bytes: u64,
}

const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;
const SHN_UNDEF: u16 = 0;
const SYM_SIZE: usize = 24;

fn bytes<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N]> {
    let end = at.checked_add(N).context("offset overflows")?;
    let slice = data.get(at..end).context("truncated file")?;
    Ok(slice.try_into().expect("slice of length N"))
}

fn u16_at(data: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(bytes(data, at)?))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(bytes(data, at)?))
}

fn u64_at(data: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(bytes(data, at)?))
}

fn usize_at(data: &[u8], at: usize) -> Result<usize> {
    usize::try_from(u64_at(data, at)?).context("offset too large")
}

pub fn parse(data: &[u8]) -> Result<Elf> {
    if data.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let shoff = usize_at(data, 0x28)?;
    let shentsize = usize::from(u16_at(data, 0x3a)?);
    let shnum = usize::from(u16_at(data, 0x3c)?);
    let shstrndx = usize::from(u16_at(data, 0x3e)?);
    let header = |i: usize| shoff + i * shentsize;
    let names_off = usize_at(data, header(shstrndx) + 0x18)?;
    let name = |sh: usize| -> Result<&[u8]> {
        let start = names_off + u32_at(data, sh)? as usize;
        let rest = data.get(start..).context("section name out of bounds")?;
        Ok(&rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())])
    };
    let mut functions = Vec::new();
    let mut dwarf_bytes = 0;
    for i in 0..shnum {
        let sh = header(i);
        let size = usize_at(data, sh + 0x20)?;
        if name(sh)?.starts_with(b".debug_") {
            dwarf_bytes += size as u64;
        }
        if u32_at(data, sh + 4)? != SHT_SYMTAB {
            continue;
        }
        let offset = usize_at(data, sh + 0x18)?;
        for sym in (offset..offset + size).step_by(SYM_SIZE) {
            let info = bytes::<1>(data, sym + 4)?[0];
            let shndx = u16_at(data, sym + 6)?;
            let value = u64_at(data, sym + 8)?;
            let size = u64_at(data, sym + 16)?;
            if info & 0xf == STT_FUNC && shndx != SHN_UNDEF && size > 0 {
                functions.push((value, size));
            }
        }
    }
    functions.sort_unstable();
    functions.dedup();
    Ok(Elf {
        functions,
        dwarf_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_functions_of_this_executable() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(exe).unwrap();
        let elf = parse(&data).unwrap();
        assert!(elf.functions.len() > 100);
        assert!(elf.functions.iter().all(|&(_, size)| size > 0));
        assert!(parse(b"\x7fELF\x01\x01").is_err());
    }
}
