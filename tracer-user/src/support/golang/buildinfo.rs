//! The Go version and main module a binary was built from.
//!
//! The Go linker writes a 32-byte header beginning `\xff Go buildinf:` at
//! the start of `.go.buildinfo`, the first section of the first writable
//! segment, 16-byte aligned. Byte 14 is the pointer size, byte 15 flags:
//! bit 0 big-endian, bit 1 (Go 1.18 and later) "strings follow inline".
//! Inline, the version and the module information follow the header as
//! uvarint-length-prefixed strings; before 1.18 the header holds two
//! pointers to Go string headers (data pointer, length) elsewhere in the
//! image. The module information is framed by 16-byte sentinels and holds
//! tab-separated lines such as `path\tcmd/x` and `mod\tpath\tversion\tsum`.
//!
//! Neither symbols nor sections are needed, so this works on stripped
//! binaries too; and it is cheap, so it is how a Go binary is recognized.

use super::image::{Image, Memory};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER: usize = 32;
const ALIGN: usize = 16;
/// How far into the data segment the header is looked for.
const SEARCH: usize = 64 << 10;
/// Longest string read through a pointer.
const MAX_STRING: u64 = 1 << 20;

/// What the buildinfo blob says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// `go1.19.8`, as `runtime.Version()` would say.
    pub go_version: String,
    /// The main package's import path (`path` line).
    pub path: Option<String>,
    /// The main module's path (`mod` line).
    pub main_module: Option<String>,
}

/// The buildinfo of `image`, or `None` when it has none (not a Go
/// executable, or one whose blob is damaged).
pub(crate) fn read(image: &Image) -> Option<BuildInfo> {
    let memory = &image.memory;
    let start = image.buildinfo_section.or_else(|| {
        memory
            .loads
            .iter()
            .find(|l| l.writable && !l.executable)
            .map(|l| l.vaddr)
    })?;
    let data = memory.rest(start)?;
    let data = &data[..data.len().min(SEARCH)];
    let at = (0..data.len().saturating_sub(HEADER - 1))
        .step_by(ALIGN)
        .find(|&i| data[i..].starts_with(MAGIC))?;
    let blob = &data[at..];
    let ptr_size = usize::from(blob[14]);
    let flags = blob[15];
    let (version, modinfo) = if flags & 2 != 0 {
        let (version, rest) = uvarint_string(&blob[HEADER..])?;
        let (modinfo, _) = uvarint_string(rest).unwrap_or((&[], &[]));
        (version.to_vec(), modinfo.to_vec())
    } else {
        if flags & 1 != 0 || !(ptr_size == 4 || ptr_size == 8) {
            return None;
        }
        let ptr = |b: &[u8]| read_ptr(b, ptr_size);
        let version = go_string(memory, ptr(&blob[16..])?, ptr_size)?;
        let modinfo = ptr(&blob[16 + ptr_size..])
            .and_then(|a| go_string(memory, a, ptr_size))
            .unwrap_or_default();
        (version, modinfo)
    };
    let go_version = String::from_utf8(version).ok()?;
    if go_version.is_empty() {
        return None;
    }
    let (path, main_module) = parse_modinfo(&modinfo);
    Some(BuildInfo {
        go_version,
        path,
        main_module,
    })
}

fn read_ptr(b: &[u8], size: usize) -> Option<u64> {
    match size {
        4 => Some(u64::from(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))),
        _ => Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)),
    }
}

/// The Go string whose header (data pointer, length) is at `addr`.
fn go_string(memory: &Memory, addr: u64, ptr_size: usize) -> Option<Vec<u8>> {
    let header = memory.read(addr, 2 * ptr_size as u64)?;
    let data = read_ptr(header, ptr_size)?;
    let len = read_ptr(&header[ptr_size..], ptr_size)?;
    if len > MAX_STRING {
        return None;
    }
    memory.read(data, len).map(<[u8]>::to_vec)
}

/// An unsigned LEB128 value and the bytes it took; `None` when truncated
/// or longer than 64 bits.
pub(crate) fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn uvarint_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = uvarint(data)?;
    let rest = &data[n..];
    let len = usize::try_from(len).ok().filter(|&l| l <= rest.len())?;
    Some(rest.split_at(len))
}

/// `path` and main `mod` from module information, without the 16-byte
/// sentinels around it.
fn parse_modinfo(modinfo: &[u8]) -> (Option<String>, Option<String>) {
    let framed = modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n';
    if !framed {
        return (None, None);
    }
    let text = String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.split('\t').next().map(str::to_owned))
            .filter(|v| !v.is_empty())
    };
    (field("path\t"), field("mod\t"))
}

#[cfg(test)]
mod tests {
    use super::super::image::{Copied, Load};
    use super::*;

    fn image_with(data: Vec<u8>) -> Image {
        let filesz = data.len() as u64;
        Image {
            memory: Memory {
                loads: vec![Load {
                    vaddr: 0x5000,
                    offset: 0x1000,
                    filesz,
                    executable: false,
                    writable: true,
                }],
                copies: vec![Copied {
                    vaddr: 0x5000,
                    writable: true,
                    data,
                }],
            },
            ..Image::default()
        }
    }

    fn framed(text: &str) -> Vec<u8> {
        let mut v = vec![b'<'; 16];
        v.extend_from_slice(text.as_bytes());
        v.extend_from_slice(&[b'>'; 16]);
        v
    }

    #[test]
    fn reads_inline_strings_after_the_header() {
        let mut data = vec![0u8; 16];
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&[8, 2]);
        data.resize(16 + HEADER, 0);
        let modinfo = framed("path\texample.com/x/cmd\nmod\texample.com/x\t(devel)\t\n");
        data.push(8);
        data.extend_from_slice(b"go1.19.8");
        data.push(u8::try_from(modinfo.len()).unwrap());
        data.extend_from_slice(&modinfo);
        let info = read(&image_with(data)).unwrap();
        assert_eq!(info.go_version, "go1.19.8");
        assert_eq!(info.path.as_deref(), Some("example.com/x/cmd"));
        assert_eq!(info.main_module.as_deref(), Some("example.com/x"));
    }

    #[test]
    fn follows_pointers_in_the_old_format() {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[8, 0]);
        data.extend_from_slice(&0x5020u64.to_le_bytes());
        data.extend_from_slice(&0x5040u64.to_le_bytes());
        data.resize(0x20, 0);
        // Version string header, then module string header.
        data.extend_from_slice(&0x5060u64.to_le_bytes());
        data.extend_from_slice(&8u64.to_le_bytes());
        data.resize(0x40, 0);
        data.extend_from_slice(&0x5070u64.to_le_bytes());
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        data.resize(0x60, 0);
        data.extend_from_slice(b"go1.16.2");
        data.resize(0x80, 0);
        let info = read(&image_with(data.clone())).unwrap();
        assert_eq!(info.go_version, "go1.16.2");
        assert_eq!(info.main_module, None, "an absurd length is ignored");
        // A pointer to nowhere: no version, not Go.
        data[16..24].copy_from_slice(&0xdead_0000u64.to_le_bytes());
        assert_eq!(read(&image_with(data)), None);
    }

    #[test]
    fn garbage_is_not_go() {
        assert_eq!(read(&image_with(vec![0xff; 4096])), None);
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&[8, 2]);
        data.resize(HEADER, 0);
        data.push(0xff);
        assert_eq!(read(&image_with(data)), None, "truncated varint");
        assert_eq!(uvarint(&[0x80; 11]), None);
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
    }
}
