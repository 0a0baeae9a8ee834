//! Tests against real binaries compiled at test time, so that address
//! translation, DWARF and symbol lookups are checked on what the toolchain
//! actually produces rather than on hand-made fixtures.

mod debug_files;
mod debuginfod;
mod minidebug;
mod programs;
mod robustness;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::{ModuleRef, Symbolization, Symbolizer};

/// A scratch directory removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "crashtrace-symbolize-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `tool args...`, panicking with its stderr if it fails.
pub(super) fn run_tool(tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `source` to `dir/src_name` and compiles it with `compiler` into
/// `dir/out`.
pub(super) fn compile(
    dir: &TempDir,
    compiler: &str,
    src_name: &str,
    source: &str,
    args: &[&str],
    out: &str,
) -> PathBuf {
    let src = dir.join(src_name);
    std::fs::write(&src, source).expect("write source");
    let output = dir.join(out);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", path_str(&output), path_str(&src)]);
    run_tool(compiler, &all);
    output
}

pub(super) fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// 1-based number of the line of `source` that contains `marker`.
pub(super) fn marker_line(source: &str, marker: &str) -> u32 {
    let index = source
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("marker {marker} not in source"));
    u32::try_from(index + 1).expect("small source")
}

/// Address of symbol `name` from `.symtab` or `.dynsym` of `path`.
pub(super) fn symbol_address(path: &Path, name: &str) -> u64 {
    let data = std::fs::read(path).expect("read binary");
    let file = object::File::parse(&*data).expect("parse binary");
    file.symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name} in {}", path.display()))
        .address()
}

/// Where a loader that places `path` at `base` would map the segment
/// containing `vaddr`: returns (mapping start, mapping file offset, runtime
/// address of `vaddr`).
pub(super) fn place(path: &Path, base: u64, vaddr: u64) -> (u64, u64, u64) {
    let data = std::fs::read(path).expect("read binary");
    let file = object::File::parse(&*data).expect("parse binary");
    let segment = file
        .segments()
        .find(|s| vaddr >= s.address() && vaddr - s.address() < s.file_range().1)
        .expect("vaddr in a load segment");
    let page = !0xfff_u64;
    let start = base + (segment.address() & page);
    let offset = segment.file_range().0 & page;
    (start, offset, base + vaddr)
}

/// Symbolizes `vaddr` of `path` as if the file were loaded at `base`.
pub(super) fn symbolize_placed(
    symbolizer: &mut Symbolizer,
    path: &Path,
    base: u64,
    vaddr: u64,
) -> Symbolization {
    let (start, file_offset, addr) = place(path, base, vaddr);
    let module = ModuleRef {
        path,
        start,
        file_offset,
    };
    symbolizer
        .symbolize(&module, addr, false)
        .unwrap_or_else(|e| panic!("symbolize {vaddr:#x} in {}: {e}", path.display()))
}

/// A running test program that has printed `name 0xaddr` lines and then
/// `ready`, and waits on stdin until dropped.
pub(super) struct Running {
    child: Child,
    pub addrs: HashMap<String, u64>,
}

impl Running {
    pub fn start(exe: &Path) -> Self {
        let mut child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn test program");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut addrs = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read program output");
            if line == "ready" {
                break;
            }
            let (name, value) = line.split_once(' ').expect("name value line");
            let value =
                u64::from_str_radix(value.trim_start_matches("0x"), 16).expect("hex address");
            addrs.insert(name.to_owned(), value);
        }
        Self { child, addrs }
    }

    pub fn addr(&self, name: &str) -> u64 {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("program printed no {name}"))
    }

    /// The file mapping containing `addr`, from `/proc/PID/maps`:
    /// (path, start, file offset).
    pub fn mapping(&self, addr: u64) -> (PathBuf, u64, u64) {
        let maps =
            std::fs::read_to_string(format!("/proc/{}/maps", self.child.id())).expect("read maps");
        for line in maps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [range, _perms, offset, _dev, _inode, path, ..] = fields[..] else {
                continue;
            };
            let (lo, hi) = range.split_once('-').expect("range");
            let lo = u64::from_str_radix(lo, 16).expect("start");
            let hi = u64::from_str_radix(hi, 16).expect("end");
            if (lo..hi).contains(&addr) {
                let offset = u64::from_str_radix(offset, 16).expect("offset");
                return (PathBuf::from(path), lo, offset);
            }
        }
        panic!("no file mapping contains {addr:#x}");
    }

    /// Symbolizes a runtime address of this process through its real mapping.
    pub fn symbolize(
        &self,
        symbolizer: &mut Symbolizer,
        addr: u64,
        is_return: bool,
    ) -> Symbolization {
        let (path, start, file_offset) = self.mapping(addr);
        let module = ModuleRef {
            path: &path,
            start,
            file_offset,
        };
        symbolizer
            .symbolize(&module, addr, is_return)
            .unwrap_or_else(|e| panic!("symbolize {addr:#x}: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on another thread and panics if it takes longer than `limit`.
pub(super) fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("operation did not finish in time")
}

/// The outermost (real function) frame.
pub(super) fn outer(s: &Symbolization) -> &super::SymbolFrame {
    s.frames
        .last()
        .unwrap_or_else(|| panic!("no frames in {s:?}"))
}

/// Asserts the outermost frame is `function` at `file_suffix:line`.
pub(super) fn assert_outer(s: &Symbolization, function: &str, file_suffix: &str, line: u32) {
    let frame = outer(s);
    assert_eq!(frame.function.as_deref(), Some(function), "{s:?}");
    assert!(
        frame
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with(file_suffix)),
        "expected file ending in {file_suffix}: {s:?}"
    );
    assert_eq!(frame.line, Some(line), "{s:?}");
    assert!(!frame.inlined, "{s:?}");
}

#[test]
fn symbolizer_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Symbolizer>();
    assert_send::<super::SymbolizeError>();
}
