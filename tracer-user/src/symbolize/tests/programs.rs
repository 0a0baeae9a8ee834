//! Lookups in executables, shared libraries, inlined code, C++ and libc.

use std::path::Path;

use super::{
    Running, TempDir, assert_outer, compile, marker_line, outer, path_str, symbol_address,
    symbolize_placed,
};
use crate::symbolize::{ModuleRef, SymbolFrame, Symbolizer};

const PROGRAM: &str = r#"#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) void report(void) {
    printf("ret %p\n", __builtin_return_address(0));
}

__attribute__((noinline)) int crash_here(int x) { /* MARK:crash_here */
    report(); /* MARK:call_report */
    return x + 1;
}

int main(void) {
    crash_here(1);
    printf("fn %p\n", (void *)&crash_here);
    printf("ready\n");
    fflush(stdout);
    char c;
    (void)read(0, &c, 1);
    return 0;
}
"#;

/// Checks a running build of [`PROGRAM`]: the function's entry and the
/// return address inside it resolve to the marked lines, and the runtime
/// address translates to the symbol table's address.
fn check_program(exe: &Path) {
    let running = Running::start(exe);
    let mut symbolizer = Symbolizer::new(Vec::new());

    let entry = running.symbolize(&mut symbolizer, running.addr("fn"), false);
    assert_eq!(entry.file_address, symbol_address(exe, "crash_here"));
    assert_outer(
        &entry,
        "crash_here",
        "prog.c",
        marker_line(PROGRAM, "MARK:crash_here"),
    );
    assert_eq!(entry.frames.len(), 1);

    let call = running.symbolize(&mut symbolizer, running.addr("ret"), true);
    assert_outer(
        &call,
        "crash_here",
        "prog.c",
        marker_line(PROGRAM, "MARK:call_report"),
    );

    let build_id = symbolizer
        .build_id(exe)
        .expect("build id")
        .expect("has build id");
    assert_eq!(build_id.len(), 40, "sha1 build-id in hex: {build_id}");
    assert!(build_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(entry.build_id.as_deref(), Some(build_id.as_str()));
}

#[test]
fn pie_executable() {
    let dir = TempDir::new("pie");
    let exe = compile(
        &dir,
        "cc",
        "prog.c",
        PROGRAM,
        &["-g", "-O0", "-fPIE", "-pie"],
        "prog",
    );
    check_program(&exe);
}

#[test]
fn non_pie_executable() {
    let dir = TempDir::new("nopie");
    let exe = compile(
        &dir,
        "cc",
        "prog.c",
        PROGRAM,
        &["-g", "-O0", "-fno-pie", "-no-pie"],
        "prog",
    );
    let running = Running::start(&exe);
    let fn_addr = running.addr("fn");
    assert_eq!(
        fn_addr,
        symbol_address(&exe, "crash_here"),
        "non-PIE runs at link address"
    );
    drop(running);
    check_program(&exe);
}

#[test]
fn shared_library() {
    let dir = TempDir::new("shlib");
    let lib_src = r#"#include <stdio.h>
__attribute__((noinline)) void lib_report(void) {
    printf("libret %p\n", __builtin_return_address(0));
}
__attribute__((noinline)) int lib_func(int x) { /* MARK:lib_func */
    lib_report(); /* MARK:lib_call */
    return x * 2;
}
"#;
    let main_src = r#"#include <stdio.h>
#include <unistd.h>
int lib_func(int);
int main(void) {
    lib_func(2);
    printf("libfn %p\n", (void *)&lib_func);
    printf("ready\n");
    fflush(stdout);
    char c;
    (void)read(0, &c, 1);
    return 0;
}
"#;
    let lib = compile(
        &dir,
        "cc",
        "lib.c",
        lib_src,
        &["-g", "-O0", "-fPIC", "-shared"],
        "libdemo.so",
    );
    let rpath = format!("-Wl,-rpath,{}", path_str(dir.path()));
    let libdir = format!("-L{}", path_str(dir.path()));
    let src = dir.join("main.c");
    std::fs::write(&src, main_src).expect("write main.c");
    let exe = dir.join("main");
    super::run_tool(
        "cc",
        &[
            "-g",
            "-O0",
            "-fPIE",
            "-pie",
            "-o",
            path_str(&exe),
            path_str(&src),
            &libdir,
            "-ldemo",
            &rpath,
        ],
    );

    let running = Running::start(&exe);
    let mut symbolizer = Symbolizer::new(Vec::new());
    let fn_addr = running.addr("libfn");
    let (mapped, _, _) = running.mapping(fn_addr);
    assert_eq!(mapped, lib, "function lives in the library mapping");
    let entry = running.symbolize(&mut symbolizer, fn_addr, false);
    assert_eq!(entry.file_address, symbol_address(&lib, "lib_func"));
    assert_outer(
        &entry,
        "lib_func",
        "lib.c",
        marker_line(lib_src, "MARK:lib_func"),
    );
    let call = running.symbolize(&mut symbolizer, running.addr("libret"), true);
    assert_outer(
        &call,
        "lib_func",
        "lib.c",
        marker_line(lib_src, "MARK:lib_call"),
    );
}

#[test]
fn inlined_frames() {
    let dir = TempDir::new("inline");
    let src = r#"#include <stdio.h>
#include <unistd.h>
volatile int counter;
__attribute__((noinline)) void sink(void) {
    printf("inl %p\n", __builtin_return_address(0));
    counter++;
}
static inline __attribute__((always_inline)) int helper(int x) {
    sink(); /* MARK:helper_call */
    counter += x;
    return counter;
}
__attribute__((noinline)) int outer_fn(int x) {
    int r = helper(x); /* MARK:outer_call */
    counter += r;
    return r + 1;
}
int main(int argc, char **argv) {
    (void)argv;
    outer_fn(argc);
    printf("ready\n");
    fflush(stdout);
    char c;
    (void)read(0, &c, 1);
    return 0;
}
"#;
    let exe = compile(&dir, "cc", "inl.c", src, &["-g", "-O2"], "inl");
    let running = Running::start(&exe);
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = running.symbolize(&mut symbolizer, running.addr("inl"), true);
    assert_eq!(s.frames.len(), 2, "{s:?}");
    let inner = &s.frames[0];
    assert_eq!(inner.function.as_deref(), Some("helper"), "{s:?}");
    assert!(inner.inlined);
    assert_eq!(
        inner.line,
        Some(marker_line(src, "MARK:helper_call")),
        "{s:?}"
    );
    assert!(inner.file.as_deref().is_some_and(|f| f.ends_with("inl.c")));
    assert_outer(&s, "outer_fn", "inl.c", marker_line(src, "MARK:outer_call"));
}

const CPP: &str = r#"#include <cstdio>
namespace ns {
__attribute__((noinline)) int func(int x) { /* MARK:ns_func */
    return x * 7;
}
}
int main() {
    std::printf("%d\n", ns::func(3));
    return 0;
}
"#;

#[test]
fn cpp_names_are_demangled() {
    let dir = TempDir::new("cpp");
    let exe = compile(&dir, "c++", "ns.cpp", CPP, &["-g", "-O0"], "ns");
    let vaddr = symbol_address(&exe, "_ZN2ns4funcEi");
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(&mut symbolizer, &exe, 0x5555_5555_0000, vaddr);
    assert_eq!(s.file_address, vaddr);
    assert_outer(
        &s,
        "ns::func(int)",
        "ns.cpp",
        marker_line(CPP, "MARK:ns_func"),
    );
}

#[test]
fn symbol_table_fallback_without_dwarf() {
    let dir = TempDir::new("nodwarf");
    let exe = compile(&dir, "c++", "ns.cpp", CPP, &["-g0", "-O0"], "ns");
    let vaddr = symbol_address(&exe, "_ZN2ns4funcEi");
    let mut symbolizer = Symbolizer::new(Vec::new());
    let s = symbolize_placed(&mut symbolizer, &exe, 0x5555_5555_0000, vaddr + 4);
    let expected = SymbolFrame {
        function: Some("ns::func(int)".into()),
        file: None,
        line: None,
        column: None,
        inlined: false,
    };
    assert_eq!(s.frames, vec![expected]);
}

#[test]
fn address_without_symbols_gives_no_frames() {
    let dir = TempDir::new("nosym");
    let exe = compile(&dir, "cc", "prog.c", PROGRAM, &["-g", "-O0"], "prog");
    let mut symbolizer = Symbolizer::new(Vec::new());
    // The ELF header is mapped but is no function.
    let s = symbolize_placed(&mut symbolizer, &exe, 0x5555_5555_0000, 0x10);
    assert!(s.frames.is_empty(), "{s:?}");
    assert_eq!(s.file_address, 0x10);
}

/// The libc this test process runs with.
fn libc_path() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .map(Into::into)
}

#[test]
fn libc_abort_resolves_from_separate_debug_info() {
    let Some(libc) = libc_path() else {
        eprintln!("skipping: no libc mapped");
        return;
    };
    let mut symbolizer = Symbolizer::new(Vec::new());
    let Some(build_id) = symbolizer.build_id(&libc).expect("libc build id") else {
        eprintln!("skipping: libc has no build-id");
        return;
    };
    let debug = format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &build_id[..2],
        &build_id[2..]
    );
    if !Path::new(&debug).exists() {
        eprintln!("skipping: {debug} not installed (libc6-dbg)");
        return;
    }
    let vaddr = symbol_address(&libc, "abort");
    let s = symbolize_placed(&mut symbolizer, &libc, 0x7f12_3450_0000, vaddr);
    let frame = outer(&s);
    // glibc renames its internal definition with an asm label, and the DWARF
    // linkage name (what gdb shows too) is that of the hidden alias.
    assert!(
        matches!(frame.function.as_deref(), Some("abort" | "__GI_abort")),
        "{s:?}"
    );
    assert!(
        frame
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("abort.c")),
        "{s:?}"
    );
    assert!(frame.line.is_some_and(|l| l > 0), "{s:?}");

    // A return address into libc through the real mapping of this process.
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let runtime = libc::abort as *const () as usize as u64;
    let line = maps
        .lines()
        .find(|l| {
            let range = l.split_whitespace().next().unwrap_or("");
            range.split_once('-').is_some_and(|(lo, hi)| {
                let lo = u64::from_str_radix(lo, 16).unwrap_or(u64::MAX);
                let hi = u64::from_str_radix(hi, 16).unwrap_or(0);
                (lo..hi).contains(&runtime)
            })
        })
        .expect("abort is mapped");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (lo, _) = fields[0].split_once('-').expect("range");
    let module = ModuleRef {
        path: &libc,
        start: u64::from_str_radix(lo, 16).expect("start"),
        file_offset: u64::from_str_radix(fields[2], 16).expect("offset"),
    };
    let live = symbolizer
        .symbolize(&module, runtime, false)
        .expect("symbolize live abort");
    assert_eq!(live.file_address, vaddr);
    assert_eq!(live.frames, s.frames);
}
