//! Go tables of real programs, built at test time by every Go release of
//! the test matrix (`tests/programs/go/versions.txt`), normal, stripped and
//! stripped PIE, checked against what that release's `go tool nm` and
//! `go tool addr2line` say about the build with its symbol table. This is
//! where a release that changes a table layout shows up first.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use super::test_toolchains::{GoProgram, Toolchain, toolchains};
use super::*;

const SOURCE: &str = r#"package main

import (
	"fmt"
	"os"
)

type Server struct{ n int }

//go:noinline
func (s *Server) handle(p *int) int {
	return *p + s.n // MARK:handle
}

func add(a, b int) int {
	return a*b + len(os.Args) // MARK:add
}

func twice(a int) int {
	return add(a, a) + 1 // MARK:twice
}

//go:noinline
func outer(x int) int {
	y := twice(x) // MARK:outer
	return y * 3
}

func main() {
	s := &Server{n: len(os.Args)}
	var p *int
	if len(os.Args) > 1 {
		p = new(int)
	}
	fmt.Println(outer(s.handle(p)))
}
"#;

const CGO_SOURCE: &str = r#"package main

/*
#include <stdlib.h>
static int c_helper(int x) { return x * 2; }
*/
import "C"

import "fmt"

func main() {
	fmt.Println(int(C.c_helper(21)))
}
"#;

fn line_of(source: &str, marker: &str) -> u32 {
    let i = source.lines().position(|l| l.contains(marker)).unwrap();
    u32::try_from(i + 1).unwrap()
}

/// The test program built by one release with symbols, stripped, and as
/// stripped PIE.
struct Builds {
    program: GoProgram,
    normal: PathBuf,
    stripped: PathBuf,
    pie: PathBuf,
}

impl Builds {
    fn version(&self) -> &'static str {
        self.program.toolchain.version
    }
}

/// The builds of every release, each made once per test process.
fn all_builds() -> Vec<Arc<Builds>> {
    type Slot = Arc<OnceLock<Arc<Builds>>>;
    static BUILDS: Mutex<Option<HashMap<&'static str, Slot>>> = Mutex::new(None);
    toolchains()
        .into_iter()
        .map(|toolchain| {
            let slot: Slot = {
                let mut guard = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
                let map = guard.get_or_insert_with(HashMap::new);
                map.entry(toolchain.version).or_default().clone()
            };
            slot.get_or_init(|| Arc::new(build_all(&toolchain))).clone()
        })
        .collect()
}

fn build_all(toolchain: &Toolchain) -> Builds {
    let program = GoProgram::new("main", SOURCE, toolchain);
    Builds {
        normal: program.build("normal", &[]),
        stripped: program.build("stripped", &["-ldflags=-s -w"]),
        pie: program.build("pie", &["-buildmode=pie", "-ldflags=-s -w"]),
        program,
    }
}

fn load(path: &Path) -> GoBinary {
    go_info(path).expect("readable").expect("a go binary")
}

#[test]
fn recognizes_go_binaries_and_their_version() {
    let all = all_builds();
    for b in &all {
        for exe in [&b.normal, &b.stripped, &b.pie] {
            let go = load(exe);
            let prefix = b.program.toolchain.version_prefix();
            assert!(go.go_version().unwrap().starts_with(&prefix), "{go:?}");
            let build = go.build.as_ref().unwrap();
            assert_eq!(build.main_module.as_deref(), Some("example.com/crashy"));
            assert_eq!(build.path.as_deref(), Some("example.com/crashy"));
            assert!(go.gofunc.is_some(), "moduledata found in {}", exe.display());
            assert!(go.incomplete().is_none(), "{}", exe.display());
            assert!(go.function_count() > 1000);
        }
    }
    // Not Go: a C program (this test binary), a script, a directory.
    let me = std::env::current_exe().unwrap();
    assert!(go_info(&me).unwrap().is_none());
    let script = all[0].program.dir.join("main.go");
    assert!(go_info(&script).is_err(), "not elf");
    assert!(matches!(
        go_info(Path::new("/dev/null")),
        Err(GoError::NotRegular { .. })
    ));
}

#[test]
fn finds_functions_by_name_without_symbols() {
    for b in all_builds() {
        finds_functions_by_name_in(&b);
    }
}

fn finds_functions_by_name_in(b: &Builds) {
    let v = b.version();
    let symbols = b.program.nm(&b.normal);
    let normal = load(&b.normal);
    let stripped = load(&b.stripped);
    let normal_bytes = std::fs::read(&b.normal).unwrap();
    let stripped_bytes = std::fs::read(&b.stripped).unwrap();
    for name in [
        "runtime.fatalpanic",
        "runtime.fatalthrow",
        "runtime.throw",
        "runtime.gopanic",
        "main.main",
        "main.(*Server).handle",
    ] {
        let (_, addr) = symbols
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("go {v}: nm has no {name}"));
        assert_eq!(normal.entry_of(name), Some(*addr), "go {v}: {name}");
        assert_eq!(
            stripped.entry_of(name),
            Some(*addr),
            "go {v}: {name}, stripped"
        );
        // The offset holds the function's code in both files.
        let off = usize::try_from(symbol_file_offset(&stripped, name).unwrap()).unwrap();
        let normal_off = usize::try_from(symbol_file_offset(&normal, name).unwrap()).unwrap();
        assert_eq!(
            off,
            usize::try_from(*addr - 0x400000).unwrap(),
            "go {v}: non-PIE text maps 1:1"
        );
        // The first instructions (the stack check) hold no address that
        // the smaller file could have moved.
        assert_eq!(
            stripped_bytes[off..off + 8],
            normal_bytes[normal_off..normal_off + 8]
        );
    }
    assert_eq!(stripped.entry_of("main.nonexistent"), None);
    let names = ["runtime.fatalpanic", "main.nonexistent", "main.main"];
    assert_eq!(
        symbol_file_offsets(&stripped, &names),
        names.map(|n| symbol_file_offset(&stripped, n))
    );
    // PIE: addresses differ, code does not.
    let pie = load(&b.pie);
    let pie_bytes = std::fs::read(&b.pie).unwrap();
    let off = usize::try_from(symbol_file_offset(&pie, "main.main").unwrap()).unwrap();
    let normal_off = usize::try_from(symbol_file_offset(&normal, "main.main").unwrap()).unwrap();
    assert_eq!(
        pie_bytes[off..off + 4],
        normal_bytes[normal_off..normal_off + 4]
    );
    let entry = pie.entry_of("main.main").unwrap();
    assert_eq!(pie.function(entry + 1).unwrap().name, "main.main");
}

#[test]
fn agrees_with_go_tool_addr2line() {
    for b in all_builds() {
        agrees_with_go_tool_addr2line_in(&b);
    }
}

fn agrees_with_go_tool_addr2line_in(b: &Builds) {
    let v = b.version();
    let stripped = load(&b.stripped);
    // Every main and runtime function entry, and a few pcs inside each.
    let mut addrs = Vec::new();
    for (name, addr) in b.program.nm(&b.normal) {
        if name.starts_with("main.") || name.starts_with("runtime.") {
            let end = stripped.function(addr).map_or(addr + 1, |f| f.end);
            addrs.extend([addr, addr + (end - addr) / 3, addr + (end - addr) / 2]);
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    assert!(addrs.len() > 1000);
    let expected = b.program.addr2line(&b.normal, &addrs);
    let mut checked = 0;
    for (addr, (function, file, line)) in addrs.iter().zip(&expected) {
        let frames = stripped
            .frames(*addr)
            .unwrap_or_else(|| panic!("go {v}: no frames at {addr:#x}"));
        let outer = frames.last().unwrap();
        let inner = &frames[0];
        assert_eq!(
            outer.function.as_deref(),
            Some(function.as_str()),
            "go {v}: {addr:#x}"
        );
        assert_eq!(inner.file, *file, "go {v}: {addr:#x}");
        assert_eq!(
            inner.line,
            Some(*line).filter(|&l| l > 0),
            "go {v}: {addr:#x}"
        );
        assert!(!outer.inlined && frames[..frames.len() - 1].iter().all(|f| f.inlined));
        checked += 1;
    }
    assert_eq!(checked, addrs.len());
}

#[test]
fn reports_inlined_calls() {
    for b in all_builds() {
        reports_inlined_calls_in(&b);
    }
}

fn reports_inlined_calls_in(b: &Builds) {
    let v = b.version();
    for exe in [&b.normal, &b.stripped, &b.pie] {
        let go = load(exe);
        let outer = go.entry_of("main.outer").unwrap();
        let end = go.function(outer).unwrap().end;
        // Somewhere in outer, add is inlined into twice inlined into outer.
        let chain = (outer..end)
            .filter_map(|pc| go.frames(pc))
            .find(|f| f.len() == 3)
            .unwrap_or_else(|| {
                panic!(
                    "go {v}: no inlined chain in main.outer of {}",
                    exe.display()
                )
            });
        let names: Vec<_> = chain
            .iter()
            .map(|f| f.function.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["main.add", "main.twice", "main.outer"], "go {v}");
        let lines: Vec<_> = chain.iter().map(|f| f.line.unwrap()).collect();
        assert_eq!(
            lines,
            ["MARK:add", "MARK:twice", "MARK:outer"].map(|m| line_of(SOURCE, m))
        );
        assert_eq!(
            chain.iter().map(|f| f.inlined).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert!(chain[2].file.as_deref().unwrap().ends_with("/main.go"));
    }
}

#[test]
fn sp_delta_is_zero_at_entry_and_the_frame_size_inside() {
    for b in all_builds() {
        for exe in [&b.stripped, &b.pie] {
            sp_delta_in(&load(exe));
        }
    }
}

fn sp_delta_in(go: &GoBinary) {
    let handle = go.entry_of("main.(*Server).handle").unwrap();
    assert_eq!(go.sp_delta(handle), Some(0));
    let main = go.entry_of("main.main").unwrap();
    assert_eq!(go.sp_delta(main), Some(0));
    let end = go.function(main).unwrap().end;
    let deltas: Vec<u64> = (main..end).filter_map(|pc| go.sp_delta(pc)).collect();
    let frame = *deltas.iter().max().unwrap();
    assert!(frame >= 16 && frame.is_multiple_of(8), "{frame}");
    assert!(
        go.unwind_row(main)
            .is_some_and(|r| r.kind == FrameKind::Normal)
    );
    let goexit = go.entry_of("runtime.goexit").unwrap();
    assert_eq!(
        go.unwind_row(goexit + 1).unwrap().kind,
        FrameKind::Outermost
    );
    // Assembly functions are named without nm's ABI suffix.
    let rt0 = go.entry_of("runtime.rt0_go").unwrap();
    assert_eq!(go.unwind_row(rt0).unwrap().kind, FrameKind::Outermost);
    let sigpanic = go.entry_of("runtime.sigpanic").unwrap();
    assert_eq!(go.unwind_row(sigpanic).unwrap().kind, FrameKind::SigPanic);
}

#[test]
fn cgo_binaries_are_go_and_c_frames_are_not() {
    // Externally linked: C code comes before the Go text, so the text
    // start is not the segment's start.
    for toolchain in toolchains() {
        let program = GoProgram::new("cgo", CGO_SOURCE, &toolchain);
        let exe = program.build("cgo", &["-ldflags=-s -w"]);
        let go = load(&exe);
        let v = toolchain.version;
        assert!(
            go.go_version()
                .unwrap()
                .starts_with(&toolchain.version_prefix())
        );
        let main = go.entry_of("main.main").unwrap();
        assert_eq!(
            go.frames(main).unwrap()[0].function.as_deref(),
            Some("main.main"),
            "go {v}"
        );
        assert!(go.entry_of("runtime.asmcgocall").is_some(), "go {v}");
        assert!(go.file_offset(main).is_some(), "go {v}");
    }
}

#[test]
fn damaged_tables_give_errors_not_panics() {
    // The oldest and the newest layouts.
    let all = all_builds();
    for b in [all.first().unwrap(), all.last().unwrap()] {
        damaged_tables_in(&b.stripped);
    }
}

fn damaged_tables_in(exe: &Path) {
    let bytes = std::fs::read(exe).unwrap();
    let go = GoBinary::parse(&bytes[..]).unwrap().unwrap();
    let (start, len) = (go.table.vaddr - 0x400000, go.table.len);
    let start = usize::try_from(start).unwrap();
    let main = go.entry_of("main.main").unwrap();
    // Flip bytes all over the pclntab (header included) and look things up.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..40 {
        let mut damaged = bytes.clone();
        for _ in 0..200 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = start + usize::try_from(state % len as u64).unwrap();
            damaged[at] = (state >> 32) as u8;
        }
        if round % 4 == 0 {
            damaged[start..start + 64].fill(0xff);
        }
        if let Ok(Some(go)) = GoBinary::parse(&damaged[..]) {
            for pc in (main - 0x1000..main + 0x1000).step_by(7) {
                let _ = go.frames(pc);
                let _ = go.unwind_row(pc);
            }
            let _ = go.entry_of("runtime.fatalpanic");
        }
    }
    // Truncated files.
    for cut in [64, 4096, bytes.len() / 2] {
        let _ = GoBinary::parse(&bytes[..cut]);
    }
}

#[test]
fn an_unknown_release_is_named_with_what_is_missing() {
    let newest = all_builds().pop().unwrap();
    let mut bytes = std::fs::read(&newest.stripped).unwrap();
    let go = GoBinary::parse(&bytes[..]).unwrap().unwrap();
    let version = go.go_version().unwrap().to_owned();
    let module = moduledata::locate(&go.memory, &go.table, go.tab()).expect("moduledata");
    // A release from the future, whose moduledata no longer ends its
    // fixed part with `epclntab` where 1.26 and 1.27 have it.
    let future = format!("go1.99{}", &version[6..]);
    assert_eq!(future.len(), version.len());
    // Every copy: the buildinfo's and `runtime.buildVersion`'s.
    let rename = |bytes: &mut Vec<u8>| {
        let places: Vec<usize> = bytes
            .windows(version.len())
            .enumerate()
            .filter(|(_, w)| *w == version.as_bytes())
            .map(|(at, _)| at)
            .collect();
        assert!(!places.is_empty(), "the version in the binary");
        for at in places {
            bytes[at..at + future.len()].copy_from_slice(future.as_bytes());
        }
    };
    rename(&mut bytes);
    let offset = usize::try_from(go.file_offset(module).unwrap()).unwrap();
    for word in [41, 44] {
        bytes[offset + word * 8..offset + word * 8 + 8].fill(0);
    }
    let error = GoBinary::parse(&bytes[..]).expect_err("an unknown layout");
    let text = error.to_string();
    assert!(
        text.starts_with(&future)
            && text.contains("moduledata layout of Go 1.99 (known up to 1.27)"),
        "{text}"
    );
    // The same release with the 1.27 layout intact is recognized by it.
    let mut bytes = std::fs::read(&newest.stripped).unwrap();
    rename(&mut bytes);
    let go = GoBinary::parse(&bytes[..]).unwrap().unwrap();
    assert_eq!(go.go_version(), Some(future.as_str()));
    assert!(go.entry_of("runtime.fatalpanic").is_some());
    assert!(
        go.file_offset(go.entry_of("runtime.fatalpanic").unwrap())
            .is_some()
    );
}
