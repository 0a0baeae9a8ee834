//! The Go table reader on arbitrary input: an ELF file (input starting with
//! `\x7fELF`) read as a Go executable, or anything else as a bare pclntab.
//! Then functions, frames (inlined ones included) and unwind rules are
//! looked up at addresses spread over the text the table claims, and
//! functions by name.
#![no_main]

use crashtrace::support::golang::GoBinary;
use libfuzzer_sys::fuzz_target;

/// Addresses looked up per input.
const PROBES: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let binary = if data.starts_with(b"\x7fELF") {
        match GoBinary::parse(data) {
            Ok(Some(binary)) => binary,
            Ok(None) | Err(_) => return,
        }
    } else {
        match GoBinary::from_pclntab(data.to_vec(), 0x40_0000) {
            Ok(binary) => binary,
            Err(_) => return,
        }
    };
    let _ = binary.go_version();
    let Some((lo, hi)) = binary.text_range() else {
        return;
    };
    let step = (hi.saturating_sub(lo) / PROBES).max(1);
    let mut names = Vec::new();
    for i in 0..PROBES {
        let pc = lo.wrapping_add(i.wrapping_mul(step));
        if let Some(f) = binary.function(pc) {
            assert!(f.entry <= pc && pc < f.end);
            if names.len() < 4 {
                names.push(f.name);
            }
        }
        if let Some(frames) = binary.frames(pc) {
            assert!(!frames.is_empty());
            assert!(!frames.last().unwrap().inlined);
            let _ = format!("{frames:?}");
        }
        let _ = binary.unwind_row(pc);
    }
    for name in names.iter().map(String::as_str).chain(["runtime.main"]) {
        if let Some(entry) = binary.entry_of(name) {
            let _ = binary.file_offset(entry);
        }
    }
});
