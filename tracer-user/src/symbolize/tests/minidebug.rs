//! MiniDebugInfo (`.gnu_debugdata`) built the way Fedora's find-debuginfo
//! builds it.

use std::path::{Path, PathBuf};

use super::{TempDir, compile, outer, symbol_address, symbolize_placed};
use crate::symbolize::{Symbolizer, minidebug};

const SOURCE: &str = r#"#include <stdio.h>
static __attribute__((noinline)) int hidden_helper(int x) {
    return x * 7 + 1;
}
__attribute__((noinline)) int exported_fn(int x) {
    return hidden_helper(x) + 2;
}
int main(int argc, char **argv) {
    (void)argv;
    printf("%d\n", exported_fn(argc));
    return 0;
}
"#;

/// The distributions' recipe: keep the function symbols `.dynsym` lacks,
/// in a debug-only copy without DWARF, xz it, and add it to the stripped
/// binary.
const RECIPE: &str = r#"set -e
nm -D --format=posix --defined-only prog.full | awk '{ print $1 }' | sort > dynsyms
nm --format=posix --defined-only prog.full | awk '{ if ($2 == "T" || $2 == "t" || $2 == "D") print $1 }' | sort > funcsyms
comm -13 dynsyms funcsyms > keep_symbols
objcopy --only-keep-debug prog.full mini
objcopy -S --remove-section .gdb_index --remove-section .comment --keep-symbols=keep_symbols mini mini_debuginfo
xz --force mini_debuginfo
objcopy --strip-all prog.full prog.stripped
objcopy --add-section .gnu_debugdata=mini_debuginfo.xz prog.stripped prog.mini
"#;

const BASE: u64 = 0x5555_5555_0000;

/// Builds [`SOURCE`] and returns (fully stripped binary, the same with
/// MiniDebugInfo added, the unstripped binary).
fn build(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let full = compile(dir, "cc", "prog.c", SOURCE, &["-g", "-O0"], "prog.full");
    let out = std::process::Command::new("sh")
        .args(["-c", RECIPE])
        .current_dir(dir.path())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "MiniDebugInfo recipe failed (needs binutils and xz-utils): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("prog.stripped"), dir.join("prog.mini"), full)
}

fn sections(path: &Path) -> (bool, bool) {
    use object::Object;
    let data = std::fs::read(path).expect("read");
    let file = object::File::parse(&*data).expect("parse");
    (
        file.symbol_table().is_some(),
        file.section_by_name(minidebug::SECTION).is_some(),
    )
}

fn name_at(path: &Path, vaddr: u64) -> Option<String> {
    let mut symbolizer = Symbolizer::new(Vec::new()).with_debuginfod(None);
    let s = symbolize_placed(&mut symbolizer, path, BASE, vaddr);
    s.frames
        .last()
        .and_then(|f| f.function.as_deref().map(str::to_owned))
}

#[test]
fn names_static_functions_from_gnu_debugdata() {
    let dir = TempDir::new("minidebug");
    let (stripped, mini, full) = build(&dir);
    assert_eq!(sections(&mini), (false, true), "stripped, with debugdata");
    let helper = symbol_address(&full, "hidden_helper");
    let exported = symbol_address(&full, "exported_fn");

    assert_eq!(name_at(&stripped, helper + 4), None, "no names without it");

    let mut symbolizer = Symbolizer::new(Vec::new()).with_debuginfod(None);
    let s = symbolize_placed(&mut symbolizer, &mini, BASE, helper + 4);
    let frame = outer(&s);
    assert_eq!(frame.function.as_deref(), Some("hidden_helper"), "{s:?}");
    assert_eq!(frame.line, None, "MiniDebugInfo has no lines: {s:?}");
    let s = symbolize_placed(&mut symbolizer, &mini, BASE, exported);
    assert_eq!(outer(&s).function.as_deref(), Some("exported_fn"), "{s:?}");
}

#[test]
fn damaged_gnu_debugdata_gives_no_names() {
    let dir = TempDir::new("minidebug-bad");
    let (_, mini, full) = build(&dir);
    let helper = symbol_address(&full, "hidden_helper");
    // Corrupt the compressed payload in place (it is the last thing objcopy
    // appended before the section headers, so find it by its xz magic).
    let mut bytes = std::fs::read(&mini).expect("read");
    let magic = b"\xfd7zXZ\0";
    let at = bytes
        .windows(magic.len())
        .position(|w| w == magic)
        .expect("xz magic");
    for b in &mut bytes[at + 40..at + 80] {
        *b ^= 0xa5;
    }
    let damaged = dir.join("prog.damaged");
    std::fs::write(&damaged, bytes).expect("write");
    assert_eq!(name_at(&damaged, helper + 4), None);
}
