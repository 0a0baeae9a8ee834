//! Go tables of real programs, built at test time with the Go toolchain
//! the test setup installs, checked against what `go tool nm` and
//! `go tool addr2line` say about the same build with its symbol table.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use super::*;

pub(crate) const GO: &str = "/usr/lib/go-1.19/bin/go";

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

/// A Go program built in its own directory, in several ways.
pub(crate) struct GoProgram {
    pub dir: PathBuf,
}

impl GoProgram {
    /// Writes `source` as `main.go` of module `example.com/crashy` in a
    /// fresh directory named after `name` under the target directory, where
    /// the next run replaces it (the programs the tests share are never
    /// dropped).
    pub fn new(name: &str, source: &str) -> Self {
        let dir = target_dir().join("golang-tests").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.go"), source).unwrap();
        std::fs::write(dir.join("go.mod"), "module example.com/crashy\n\ngo 1.19\n").unwrap();
        Self { dir }
    }

    /// Builds the program into `out` with extra `go build` arguments.
    pub fn build(&self, out: &str, args: &[&str]) -> PathBuf {
        let exe = self.dir.join(out);
        let cache = target_dir().join("go-build-cache");
        let output = Command::new(GO)
            .arg("build")
            .args(args)
            .arg("-o")
            .arg(&exe)
            .arg(".")
            .current_dir(&self.dir)
            .env("GOCACHE", &cache)
            .env("GOPATH", cache.join("gopath"))
            .env("GOFLAGS", "")
            .env("GO111MODULE", "on")
            .output()
            .unwrap_or_else(|e| panic!("run {GO} (install golang-1.19-go): {e}"));
        assert!(
            output.status.success(),
            "go build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        exe
    }

    /// `go tool nm`: function name to address.
    pub fn nm(exe: &Path) -> Vec<(String, u64)> {
        let out = Command::new(GO)
            .args(["tool", "nm"])
            .arg(exe)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                (parts.next()? == "T").then_some(())?;
                Some((parts.collect::<Vec<_>>().join(" "), addr))
            })
            .collect()
    }

    /// `go tool addr2line`: (function, file, line) per address; no file
    /// and line 0 where it prints `:-1` (code with no line table).
    pub fn addr2line(exe: &Path, addrs: &[u64]) -> Vec<(String, Option<String>, u32)> {
        use std::io::Write;
        let mut child = Command::new(GO)
            .args(["tool", "addr2line"])
            .arg(exe)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .map(|pair| {
                let (file, line) = pair[1].rsplit_once(':').unwrap();
                let line: i64 = line.parse().unwrap();
                let file = (!file.is_empty()).then(|| file.to_owned());
                (pair[0].to_owned(), file, u32::try_from(line).unwrap_or(0))
            })
            .collect()
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

impl Drop for GoProgram {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The test program built with symbols, stripped, and as stripped PIE.
struct Builds {
    _program: GoProgram,
    normal: PathBuf,
    stripped: PathBuf,
    pie: PathBuf,
}

fn builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let program = GoProgram::new("main", SOURCE);
        Builds {
            normal: program.build("normal", &[]),
            stripped: program.build("stripped", &["-ldflags=-s -w"]),
            pie: program.build("pie", &["-buildmode=pie", "-ldflags=-s -w"]),
            _program: program,
        }
    })
}

fn load(path: &Path) -> GoBinary {
    go_info(path).expect("readable").expect("a go binary")
}

#[test]
fn recognizes_go_binaries_and_their_version() {
    let b = builds();
    for exe in [&b.normal, &b.stripped, &b.pie] {
        let go = load(exe);
        assert!(go.go_version().unwrap().starts_with("go1.19"), "{go:?}");
        let build = go.build.as_ref().unwrap();
        assert_eq!(build.main_module.as_deref(), Some("example.com/crashy"));
        assert_eq!(build.path.as_deref(), Some("example.com/crashy"));
        assert!(go.gofunc.is_some(), "moduledata found in {}", exe.display());
        assert!(go.function_count() > 1000);
    }
    // Not Go: a C program (this test binary), a script, a directory.
    let me = std::env::current_exe().unwrap();
    assert!(go_info(&me).unwrap().is_none());
    let script = builds()._program.dir.join("main.go");
    assert!(go_info(&script).is_err(), "not elf");
    assert!(matches!(
        go_info(Path::new("/dev/null")),
        Err(GoError::NotRegular { .. })
    ));
}

#[test]
fn finds_functions_by_name_without_symbols() {
    let b = builds();
    let symbols = GoProgram::nm(&b.normal);
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
            .unwrap_or_else(|| panic!("nm has no {name}"));
        assert_eq!(normal.entry_of(name), Some(*addr), "{name}");
        assert_eq!(stripped.entry_of(name), Some(*addr), "{name}, stripped");
        // The offset holds the function's code in both files.
        let off = usize::try_from(symbol_file_offset(&stripped, name).unwrap()).unwrap();
        let normal_off = usize::try_from(symbol_file_offset(&normal, name).unwrap()).unwrap();
        assert_eq!(
            off,
            usize::try_from(*addr - 0x400000).unwrap(),
            "non-PIE text maps 1:1"
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
    let b = builds();
    let stripped = load(&b.stripped);
    // Every main and runtime function entry, and a few pcs inside each.
    let mut addrs = Vec::new();
    for (name, addr) in GoProgram::nm(&b.normal) {
        if name.starts_with("main.") || name.starts_with("runtime.") {
            let end = stripped.function(addr).map_or(addr + 1, |f| f.end);
            addrs.extend([addr, addr + (end - addr) / 3, addr + (end - addr) / 2]);
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    assert!(addrs.len() > 1000);
    let expected = GoProgram::addr2line(&b.normal, &addrs);
    let mut checked = 0;
    for (addr, (function, file, line)) in addrs.iter().zip(&expected) {
        let frames = stripped
            .frames(*addr)
            .unwrap_or_else(|| panic!("no frames at {addr:#x}"));
        let outer = frames.last().unwrap();
        let inner = &frames[0];
        assert_eq!(
            outer.function.as_deref(),
            Some(function.as_str()),
            "{addr:#x}"
        );
        assert_eq!(inner.file, *file, "{addr:#x}");
        assert_eq!(inner.line, Some(*line).filter(|&l| l > 0), "{addr:#x}");
        assert!(!outer.inlined && frames[..frames.len() - 1].iter().all(|f| f.inlined));
        checked += 1;
    }
    assert_eq!(checked, addrs.len());
}

#[test]
fn reports_inlined_calls() {
    let b = builds();
    for exe in [&b.stripped, &b.pie] {
        let go = load(exe);
        let outer = go.entry_of("main.outer").unwrap();
        let end = go.function(outer).unwrap().end;
        // Somewhere in outer, add is inlined into twice inlined into outer.
        let chain = (outer..end)
            .filter_map(|pc| go.frames(pc))
            .find(|f| f.len() == 3)
            .unwrap_or_else(|| panic!("no inlined chain in main.outer of {}", exe.display()));
        let names: Vec<_> = chain
            .iter()
            .map(|f| f.function.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["main.add", "main.twice", "main.outer"]);
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
    let go = load(&builds().stripped);
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
    let program = GoProgram::new("cgo", CGO_SOURCE);
    let exe = program.build("cgo", &["-ldflags=-s -w"]);
    let go = load(&exe);
    assert!(go.go_version().unwrap().starts_with("go1.19"));
    let main = go.entry_of("main.main").unwrap();
    assert_eq!(
        go.frames(main).unwrap()[0].function.as_deref(),
        Some("main.main")
    );
    assert!(go.entry_of("runtime.asmcgocall").is_some());
}

#[test]
fn damaged_tables_give_errors_not_panics() {
    let bytes = std::fs::read(&builds().stripped).unwrap();
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
