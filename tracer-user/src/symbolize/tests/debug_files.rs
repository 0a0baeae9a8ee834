//! Separate debug files (build-id, basename, debuglink) and compressed
//! debug sections.

use std::path::{Path, PathBuf};

use super::{
    TempDir, assert_outer, compile, marker_line, outer, path_str, run_tool, symbol_address,
    symbolize_placed,
};
use crate::symbolize::{Symbolizer, elf::hex};

pub(super) const SOURCE: &str = r#"#include <stdio.h>
__attribute__((noinline)) int target(int x) { /* MARK:target */
    return x * 3;
}
int main(void) {
    printf("%d\n", target(2));
    return 0;
}
"#;

pub(super) const BASE: u64 = 0x5555_5555_0000;

/// Builds `prog` with full debug info in `dir`, splits it into a fully
/// stripped `bin/prog` and `prog.debug`; returns (stripped, debug file,
/// address of `target`).
pub(super) fn split_build(dir: &TempDir, extra: &[&str]) -> (PathBuf, PathBuf, u64) {
    let mut args = vec!["-g", "-O0"];
    args.extend_from_slice(extra);
    let full = compile(dir, "cc", "prog.c", SOURCE, &args, "prog.full");
    let vaddr = symbol_address(&full, "target");
    let debug = dir.join("prog.debug");
    run_tool(
        "objcopy",
        &["--only-keep-debug", path_str(&full), path_str(&debug)],
    );
    std::fs::create_dir_all(dir.join("bin")).expect("bin dir");
    let stripped = dir.join("bin/prog");
    run_tool(
        "objcopy",
        &["--strip-all", path_str(&full), path_str(&stripped)],
    );
    (stripped, debug, vaddr)
}

fn add_debuglink(stripped: &Path, debug: &Path) {
    // objcopy records the base name and the CRC of the debug file's contents.
    let link = format!("--add-gnu-debuglink={}", path_str(debug));
    let tmp = stripped.with_extension("linked");
    run_tool("objcopy", &[&link, path_str(stripped), path_str(&tmp)]);
    std::fs::rename(&tmp, stripped).expect("replace stripped binary");
}

pub(super) fn build_id_of(path: &Path) -> Vec<u8> {
    use object::Object;
    let data = std::fs::read(path).expect("read");
    let file = object::File::parse(&*data).expect("parse");
    file.build_id().expect("notes").expect("build id").to_vec()
}

#[test]
fn stripped_binary_without_debug_file_has_no_name() {
    let dir = TempDir::new("stripped");
    let (stripped, _debug, vaddr) = split_build(&dir, &[]);
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert!(s.frames.is_empty(), "{s:?}");
}

#[test]
fn finds_debug_file_by_build_id_in_debug_dir() {
    let dir = TempDir::new("buildid");
    let (stripped, debug, vaddr) = split_build(&dir, &[]);
    let id = hex(&build_id_of(&stripped));
    let root = dir.join("debugroot");
    let target = root
        .join(".build-id")
        .join(&id[..2])
        .join(format!("{}.debug", &id[2..]));
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::rename(&debug, &target).expect("move debug file");
    let mut symbolizer = Symbolizer::new(vec![root]);
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert_outer(&s, "target", "prog.c", marker_line(SOURCE, "MARK:target"));
    assert_eq!(s.build_id.as_deref(), Some(id.as_str()));
}

#[test]
fn finds_basename_debug_file_in_debug_dir() {
    let dir = TempDir::new("basename");
    let (stripped, debug, vaddr) = split_build(&dir, &[]);
    let root = dir.join("flat");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::rename(&debug, root.join("prog.debug")).expect("move debug file");
    let mut symbolizer = Symbolizer::new(vec![root]);
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert_outer(&s, "target", "prog.c", marker_line(SOURCE, "MARK:target"));
}

#[test]
fn finds_debuglink_next_to_binary_and_in_dot_debug() {
    let dir = TempDir::new("debuglink");
    let (stripped, debug, vaddr) = split_build(&dir, &["-Wl,--build-id=none"]);
    add_debuglink(&stripped, &debug);
    let bin = stripped.parent().expect("bin dir").to_owned();

    std::fs::copy(&debug, bin.join("prog.debug")).expect("copy next to binary");
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert_outer(&s, "target", "prog.c", marker_line(SOURCE, "MARK:target"));
    assert_eq!(s.build_id, None);

    std::fs::remove_file(bin.join("prog.debug")).expect("remove");
    std::fs::create_dir_all(bin.join(".debug")).expect("mkdir .debug");
    std::fs::copy(&debug, bin.join(".debug/prog.debug")).expect("copy into .debug");
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert_outer(&s, "target", "prog.c", marker_line(SOURCE, "MARK:target"));
}

#[test]
fn debuglink_with_wrong_crc_is_ignored() {
    let dir = TempDir::new("badcrc");
    let (stripped, debug, vaddr) = split_build(&dir, &["-Wl,--build-id=none"]);
    add_debuglink(&stripped, &debug);
    // Same name, different contents: a stale debug file.
    let mut bytes = std::fs::read(&debug).expect("read debug");
    bytes.extend_from_slice(b"stale");
    std::fs::write(stripped.parent().expect("bin").join("prog.debug"), bytes).expect("write stale");
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert!(
        s.frames.is_empty(),
        "stale debug file must not be used: {s:?}"
    );
}

#[test]
fn mismatched_build_id_is_ignored() {
    let dir = TempDir::new("badid");
    let (stripped, _debug, vaddr) = split_build(&dir, &[]);
    let other = TempDir::new("badid-other");
    let (_, other_debug, _) = split_build(&other, &["-DUNUSED=1", "-Wl,--build-id=sha1", "-O1"]);
    let root = dir.join("flat");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::copy(&other_debug, root.join("prog.debug")).expect("copy");
    let mut symbolizer = Symbolizer::new(vec![root]);
    let s = symbolize_placed(&mut symbolizer, &stripped, BASE, vaddr);
    assert!(s.frames.is_empty(), "{s:?}");
}

/// Builds [`SOURCE`] (padded so that compression pays off) and compresses
/// its debug sections with `objcopy --compress-debug-sections=<kind>`;
/// `None` if this objcopy cannot.
fn compressed_build(dir: &TempDir, kind: &str) -> Option<PathBuf> {
    let mut source = SOURCE.to_owned();
    for n in 0..200 {
        source.push_str(&format!("int pad_{n}(int x) {{ return x * {n} + 1; }}\n"));
    }
    let exe = compile(dir, "cc", "prog.c", &source, &["-g", "-O0"], "prog");
    let packed = dir.join("prog.packed");
    let flag = format!("--compress-debug-sections={kind}");
    // Missing binutils fail the test; an objcopy that cannot use `kind`
    // skips it.
    let ok = std::process::Command::new("objcopy")
        .args([flag.as_str(), path_str(&exe), path_str(&packed)])
        .output()
        .unwrap_or_else(|e| panic!("cannot run objcopy: {e}"))
        .status
        .success();
    if !ok {
        return None;
    }
    let out = std::process::Command::new("readelf")
        .args(["-S", "-W", path_str(&packed)])
        .output()
        .unwrap_or_else(|e| panic!("cannot run readelf: {e}"));
    let sections = String::from_utf8_lossy(&out.stdout);
    let compressed = sections
        .lines()
        .any(|l| l.contains(".debug_info") && l.contains(" C "));
    compressed.then_some(packed)
}

fn check_compressed(kind: &str) {
    let dir = TempDir::new(&format!("gz-{kind}"));
    let Some(exe) = compressed_build(&dir, kind) else {
        eprintln!("skipping: objcopy cannot compress debug sections with {kind}");
        return;
    };
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(&mut symbolizer, &exe, BASE, symbol_address(&exe, "target"));
    assert_outer(&s, "target", "prog.c", marker_line(SOURCE, "MARK:target"));
    let pad = symbol_address(&exe, "pad_150");
    let s = symbolize_placed(&mut symbolizer, &exe, BASE, pad);
    assert_eq!(outer(&s).function.as_deref(), Some("pad_150"), "{s:?}");
}

#[test]
fn zlib_compressed_debug_sections() {
    check_compressed("zlib");
}

#[test]
fn zstd_compressed_debug_sections() {
    check_compressed("zstd");
}
