//! Hostile inputs: damaged ELF files, special files, replaced files, bad
//! addresses, and compressed sections that lie about their size.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use super::{TempDir, compile, symbol_address, symbolize_placed, within};
use crate::{
    support::elfimage::OpenError,
    symbolize::{
        ModuleRef, SymbolizeError, Symbolizer,
        file::{self, Backing},
    },
};

const SOURCE: &str = r#"int target(int x) { return x + 1; }
int main(void) { return target(0); }
"#;

const LIMIT: Duration = Duration::from_secs(20);

/// Symbolizes `path` at a plausible mapping, on a watchdog thread.
fn try_symbolize(path: PathBuf) -> Result<crate::symbolize::Symbolization, SymbolizeError> {
    within(LIMIT, move || {
        let mut symbolizer = Symbolizer::new(Vec::new());
        let module = ModuleRef {
            path: &path,
            start: 0x5555_5555_0000,
            file_offset: 0,
        };
        symbolizer.symbolize(&module, 0x5555_5555_1139, false)
    })
}

fn small_binary(dir: &TempDir) -> PathBuf {
    compile(dir, "cc", "t.c", SOURCE, &["-g", "-O0"], "t")
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn truncated_elf_is_an_error() {
    let dir = TempDir::new("truncated");
    let bytes = std::fs::read(small_binary(&dir)).expect("read");
    for len in [0, 4, 64, 200, bytes.len() / 2] {
        let path = dir.join(&format!("trunc-{len}"));
        std::fs::write(&path, &bytes[..len]).expect("write");
        assert!(try_symbolize(path).is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn random_bytes_are_an_error() {
    let dir = TempDir::new("random");
    let path = dir.join("noise");
    std::fs::write(&path, noise(7, 8192)).expect("write");
    assert!(matches!(
        try_symbolize(path),
        Err(SymbolizeError::Elf { .. })
    ));
}

#[test]
fn fifo_is_refused_without_blocking() {
    let dir = TempDir::new("fifo");
    let path = dir.join("pipe");
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no nul");
    // SAFETY: plain libc call with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    assert!(matches!(
        try_symbolize(path.clone()),
        Err(SymbolizeError::File(OpenError::NotRegular { .. }))
    ));
    // Even if the stat check is raced, opening must not block and must fail.
    let regular = dir.join("regular");
    std::fs::write(&regular, b"x").expect("write");
    let key = file::stat_regular(&regular).expect("stat");
    let opened = within(LIMIT, move || file::load(&path, key).map(|_| ()));
    assert!(
        matches!(
            opened,
            Err(SymbolizeError::File(OpenError::NotRegular { .. }))
        ),
        "{opened:?}"
    );
}

#[test]
fn special_files_are_refused() {
    for path in ["/dev/zero", "/dev/null", "/proc/self", "/"] {
        let result = try_symbolize(PathBuf::from(path));
        assert!(
            matches!(
                result,
                Err(SymbolizeError::File(OpenError::NotRegular { .. }))
            ),
            "{path}: {result:?}"
        );
    }
    assert!(matches!(
        try_symbolize(PathBuf::from("/nonexistent/crashtrace")),
        Err(SymbolizeError::File(OpenError::Stat { .. }))
    ));
}

#[test]
fn mutated_binaries_never_panic_or_hang() {
    let dir = TempDir::new("mutate");
    let good = std::fs::read(small_binary(&dir)).expect("read");
    let positions = noise(99, 4096);
    let mut errors = 0;
    for round in 0..150usize {
        let mut bytes = good.clone();
        // Hit the headers often, and the rest of the file too.
        for k in 0..8 {
            let r = usize::from(positions[(round * 8 + k) % positions.len()]);
            let pos = if k % 2 == 0 {
                r % 128
            } else {
                (r * 131 + round * 977) % bytes.len()
            };
            bytes[pos] ^= positions[(round * 3 + k) % positions.len()] | 1;
        }
        let path = dir.join(&format!("m{round}"));
        std::fs::write(&path, &bytes).expect("write");
        if try_symbolize(path.clone()).is_err() {
            errors += 1;
        }
        std::fs::remove_file(&path).expect("remove");
    }
    assert!(errors > 0, "some mutants should be rejected");
}

#[test]
fn bad_addresses_are_errors() {
    let dir = TempDir::new("badaddr");
    let exe = small_binary(&dir);
    let mut symbolizer = Symbolizer::new(Vec::new());
    let module = ModuleRef {
        path: &exe,
        start: 0x1000_0000,
        file_offset: 0,
    };
    let below = symbolizer.symbolize(&module, 0xfff_ffff, false);
    assert!(
        matches!(below, Err(SymbolizeError::BelowMapping { .. })),
        "{below:?}"
    );
    let zero_ret = symbolizer.symbolize(&module, 0, true);
    assert!(
        matches!(zero_ret, Err(SymbolizeError::BelowMapping { .. })),
        "{zero_ret:?}"
    );
    let past = symbolizer.symbolize(&module, 0x1000_0000 + (1 << 30), false);
    assert!(
        matches!(past, Err(SymbolizeError::NoSegment { .. })),
        "{past:?}"
    );
    let huge = ModuleRef {
        path: &exe,
        start: 0,
        file_offset: u64::MAX,
    };
    let overflow = symbolizer.symbolize(&huge, 1, false);
    assert!(
        matches!(overflow, Err(SymbolizeError::AddressOverflow { .. })),
        "{overflow:?}"
    );
}

#[test]
fn replaced_file_is_reparsed() {
    let dir = TempDir::new("replace");
    let exe = small_binary(&dir);
    let mut symbolizer = Symbolizer::new(Vec::new());
    let first = symbolize_placed(
        &mut symbolizer,
        &exe,
        0x5555_5555_0000,
        symbol_address(&exe, "target"),
    );
    assert_eq!(super::outer(&first).function.as_deref(), Some("target"));

    let other = compile(
        &dir,
        "cc",
        "u.c",
        "int renamed(int x) { return x + 2; }\nint main(void) { return renamed(0); }\n",
        &["-g", "-O0"],
        "u",
    );
    std::fs::rename(&other, &exe).expect("replace");
    let vaddr = symbol_address(&exe, "renamed");
    let second = symbolize_placed(&mut symbolizer, &exe, 0x5555_5555_0000, vaddr);
    assert_eq!(super::outer(&second).function.as_deref(), Some("renamed"));

    // A batch looks at the file once; the next batch sees it replaced.
    let third_source = "int third(int x) { return x + 3; }\nint main(void) { return third(0); }\n";
    {
        let mut batch = symbolizer.batch();
        let again = symbolize_placed(&mut batch, &exe, 0x5555_5555_0000, vaddr);
        assert_eq!(again, second);
        let third = compile(&dir, "cc", "t.c", third_source, &["-g", "-O0"], "t");
        std::fs::rename(&third, &exe).expect("replace");
    }
    let vaddr = symbol_address(&exe, "third");
    let mut batch = symbolizer.batch();
    let fourth = symbolize_placed(&mut batch, &exe, 0x5555_5555_0000, vaddr);
    assert_eq!(super::outer(&fourth).function.as_deref(), Some("third"));
}

#[test]
fn files_others_can_write_are_copied_not_mapped() {
    let dir = TempDir::new("writable");
    let exe = small_binary(&dir);
    let is_mapped = |path: &Path| {
        let key = file::stat_regular(path).expect("stat");
        matches!(
            *file::load(path, key).expect("load").data,
            Backing::Mapped(_)
        )
    };
    let mut perms = std::fs::metadata(&exe).expect("metadata").permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(&exe, perms.clone()).expect("chmod");
    let root = std::fs::metadata(&exe)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    assert_eq!(
        is_mapped(&exe),
        root,
        "only root-owned, root-only-writable files are mapped"
    );
    perms.set_mode(0o777);
    std::fs::set_permissions(&exe, perms).expect("chmod");
    assert!(!is_mapped(&exe));
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(
        &mut symbolizer,
        &exe,
        0x5555_5555_0000,
        symbol_address(&exe, "target"),
    );
    assert_eq!(super::outer(&s).function.as_deref(), Some("target"));
}

#[test]
fn zstd_output_is_capped_by_declared_size() {
    let data = vec![0u8; 1 << 20];
    let frame =
        ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest);
    assert_eq!(
        file::inflate_zstd(&frame, data.len()).expect("inflate"),
        data
    );
    let small = file::inflate_zstd(&frame, 4096);
    assert!(small.is_err(), "must stop at the declared size");
    assert!(file::inflate_zstd(&frame[..frame.len() / 2], data.len()).is_err());
    assert!(file::inflate_zstd(b"not zstd at all", 10).is_err());
}
