//! Unwinding real crashes of real programs.
//!
//! Hand-made stacks only test what their author believed about compilers.
//! These tests build C programs with the host's `cc`, let them crash, and
//! have a signal handler inside the program record exactly what the kernel
//! side would capture (the interrupted registers in `pt_regs` order, the
//! stack from the page holding SP upward, and `/proc/self/maps`), then
//! unwind that record and name the frames with the symbolizer. They live
//! with the pipeline because they need two of its stages: the unwinder
//! they test and the symbolizer that names its frames.

use std::{path::PathBuf, process::Command};

use crate::{
    events::{Mapping, Region, StateRecord, Task, reg},
    support::procfs,
    symbolize::{ModuleRef, Symbolizer},
    unwind::{RawFrame, Unwinder, Unwound},
};

/// The crashing program; see its header comment.
const PROGRAM: &str = include_str!("program_tests.c");

/// A crashed run of the test program, as the kernel side would see it.
struct Capture {
    state: StateRecord,
    files: Vec<Option<PathBuf>>,
    dir: PathBuf,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds the program with `flags`, runs it in `mode`, and loads what its
/// handler saved. A missing C compiler fails the test.
fn run(name: &str, flags: &[&str], mode: &str) -> Capture {
    let dir = std::env::temp_dir().join(format!("crashtrace-unwind-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("prog.c");
    std::fs::write(&source, PROGRAM).unwrap();
    let exe = dir.join("prog");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e} (install gcc or set CC)"));
    assert!(built.success(), "{cc} {flags:?} failed");
    let status = Command::new(&exe).arg(mode).arg(&dir).status().unwrap();
    assert!(
        status.success(),
        "{mode} run did not reach the capture handler: {status}"
    );
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let words: Vec<u64> = read("regs")
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let regs: [u64; tracer_common::REGS_LEN] = words.try_into().unwrap();
    let snapshot_base = u64::from_le_bytes(read("stack_base").try_into().unwrap());
    let mappings = parse_maps(&String::from_utf8(read("maps")).unwrap());
    let sp_region = mappings
        .iter()
        .find(|m| regs[reg::SP] >= m.start && regs[reg::SP] < m.end)
        .map(|m| Region {
            start: m.start,
            end: m.end,
            vm_flags: 0,
            has_file: false,
        });
    let files = mappings
        .iter()
        .map(|m| m.path.clone().filter(|p| p.is_file()))
        .collect();
    let state = StateRecord {
        boot_ns: 0,
        thread: Task {
            pid: 1,
            tid: 1,
            ppid: 0,
            uid: 0,
            comm: "prog".into(),
        },
        regs: Some(regs),
        kstack: Vec::new(),
        snapshot_base,
        snapshot: read("stack"),
        snapshot_short: false,
        exe: Some(exe),
        cmdline: Vec::new(),
        sp_region,
        mappings,
        mappings_truncated: false,
        mappings_busy: false,
    };
    Capture { state, files, dir }
}

fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(procfs::parse_maps_line)
        .map(|m| Mapping::from(&m))
        .collect()
}

/// Every function name of every frame, innermost first (inlined ones
/// included), or `?` for frames nothing names.
fn frame_names(capture: &Capture, unwound: &Unwound) -> Vec<String> {
    let mut symbolizer = Symbolizer::new(Vec::new());
    let mut out = Vec::new();
    for &RawFrame { address, is_return } in &unwound.frames {
        let found = capture
            .state
            .mappings
            .iter()
            .zip(&capture.files)
            .find(|(m, _)| address >= m.start && address < m.end);
        let mut named = Vec::new();
        if let Some((m, Some(path))) = found {
            let module = ModuleRef {
                path,
                start: m.start,
                file_offset: m.file_offset,
            };
            if let Ok(sym) = symbolizer.symbolize(&module, address, is_return) {
                named.extend(
                    sym.frames
                        .into_iter()
                        .filter_map(|f| f.function.as_deref().map(str::to_owned)),
                );
            }
        }
        if named.is_empty() {
            named.push("?".into());
        }
        out.extend(named);
    }
    out
}

/// Asserts that `expected` appears in `names` in order; an expected name
/// matches a name that equals it or contains it.
fn assert_in_order(names: &[String], expected: &[&str], unwound: &Unwound) {
    let mut rest = names.iter();
    for want in expected {
        assert!(
            rest.any(|n| n == want || n.contains(want)),
            "{want} missing or out of order in {names:?} ({unwound:?})"
        );
    }
}

const OPTIMIZED: &[&str] = &["-O2", "-fomit-frame-pointer", "-g"];

#[test]
fn segv_in_optimized_code_without_frame_pointers() {
    let capture = run("segv", OPTIMIZED, "segv");
    let unwound = Unwinder::new().unwind(&capture.state, &capture.files);
    let names = frame_names(&capture, &unwound);
    assert_eq!(names[0], "crash_leaf", "{names:?}");
    assert_eq!(&names[1..4], ["middle_b", "outer_a", "main"], "{unwound:?}");
    assert!(names.iter().any(|n| n == "_start"), "{names:?}");
    assert_eq!(
        (unwound.truncated, &unwound.error),
        (false, &None),
        "{names:?}"
    );
    assert!(!unwound.frames[0].is_return);
    assert!(unwound.frames[1..].iter().all(|f| f.is_return));
}

#[test]
fn abort_through_libc() {
    let capture = run("abort", OPTIMIZED, "abort");
    let unwound = Unwinder::new().unwind(&capture.state, &capture.files);
    let names = frame_names(&capture, &unwound);
    assert_in_order(
        &names,
        &[
            "pthread_kill",
            "raise",
            "abort",
            "abort_b",
            "abort_a",
            "main",
            "_start",
        ],
        &unwound,
    );
    assert_eq!(
        (unwound.truncated, &unwound.error),
        (false, &None),
        "{names:?}"
    );
}

#[test]
fn snapshot_as_small_as_the_kernel_takes() {
    let mut capture = run("small", OPTIMIZED, "abort");
    let sp = capture.state.regs.unwrap()[reg::SP];
    let keep = (sp - capture.state.snapshot_base) as usize + 256;
    capture.state.snapshot.truncate(keep);
    let unwound = Unwinder::new().unwind(&capture.state, &capture.files);
    assert!(unwound.truncated);
    let error = unwound.error.clone().unwrap();
    assert!(
        error.contains(&format!("beyond the {keep}-byte snapshot")),
        "{error}"
    );
}

#[test]
fn crash_in_a_signal_handler_unwinds_through_the_signal_frame() {
    let capture = run("handler", OPTIMIZED, "handler");
    let unwound = Unwinder::new().unwind(&capture.state, &capture.files);
    let names = frame_names(&capture, &unwound);
    assert_in_order(
        &names,
        &[
            "handler_leaf",
            "on_usr1",
            "__restore_rt",
            "pthread_kill",
            "raise",
            "main",
        ],
        &unwound,
    );
    // The trampoline was never called, and the frame after it is where the
    // signal hit: neither is a return address.
    let restorer = names.iter().position(|n| n == "__restore_rt").unwrap();
    assert!(!unwound.frames[restorer].is_return, "{unwound:?}");
    assert!(!unwound.frames[restorer + 1].is_return, "{unwound:?}");
    assert_eq!(
        (unwound.truncated, &unwound.error),
        (false, &None),
        "{names:?}"
    );
}

#[test]
fn debug_frame_and_frame_pointer_fallbacks() {
    // CFI only in .debug_frame.
    let flags = [
        "-O2",
        "-fomit-frame-pointer",
        "-g",
        "-fno-asynchronous-unwind-tables",
    ];
    let capture = run("debug-frame", &flags, "segv");
    let unwound = Unwinder::new().unwind(&capture.state, &capture.files);
    let names = frame_names(&capture, &unwound);
    assert_eq!(
        &names[..4],
        ["crash_leaf", "middle_b", "outer_a", "main"],
        "{unwound:?}"
    );
    // No CFI at all for the program's code: frame pointers carry the walk.
    let flags = [
        "-O0",
        "-fno-omit-frame-pointer",
        "-fno-asynchronous-unwind-tables",
    ];
    let capture = run("fp", &flags, "segv");
    let unwound = Unwinder::new().unwind(&capture.state, &capture.files);
    let names = frame_names(&capture, &unwound);
    assert_in_order(
        &names,
        &["crash_leaf", "middle_b", "outer_a", "main"],
        &unwound,
    );
}

#[test]
fn a_missing_mapping_stops_the_walk() {
    let mut capture = run("no-exe", OPTIMIZED, "abort");
    let exe = capture.state.exe.clone();
    let (mappings, files) = capture
        .state
        .mappings
        .iter()
        .cloned()
        .zip(capture.files.iter().cloned())
        .filter(|(m, _)| m.path != exe)
        .unzip();
    (capture.state.mappings, capture.files) = (mappings, files);
    let unwound = Unwinder::new().unwind(&capture.state, &capture.files);
    let last = unwound.frames.last().unwrap().address;
    assert_eq!(
        unwound.error,
        Some(format!("no mapping captured for {last:#x}")),
        "{unwound:?}"
    );
    assert!(unwound.truncated && unwound.frames.len() >= 3);
}

#[test]
fn garbage_stops_cleanly() {
    let capture = run("garbage", OPTIMIZED, "segv");
    let mut unwinder = Unwinder::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let code: Vec<&Mapping> = capture
        .state
        .mappings
        .iter()
        .filter(|m| m.executable)
        .collect();
    for round in 0..300 {
        let mut state = capture.state.clone();
        let len = (next() % 20_000) as usize & !7;
        state.snapshot = (0..len).map(|_| next() as u8).collect();
        let base = state.snapshot_base;
        let mut regs = [0u64; tracer_common::REGS_LEN];
        regs.iter_mut().for_each(|r| *r = next());
        if round % 2 == 0 {
            // Plausible registers: code in real mappings, pointers into the
            // snapshot, words in it that point at code.
            let m = code[(next() % code.len() as u64) as usize];
            regs[reg::IP] = m.start + next() % (m.end - m.start);
            regs[reg::SP] = base + next() % (len as u64 + 1);
            regs[reg::BP] = base + next() % (len as u64 + 1);
            for word in state.snapshot.chunks_exact_mut(8) {
                if next() % 3 == 0 {
                    let m = code[(next() % code.len() as u64) as usize];
                    word.copy_from_slice(&(m.start + next() % (m.end - m.start)).to_le_bytes());
                }
            }
        }
        state.regs = Some(regs);
        let unwound = unwinder.unwind(&state, &capture.files);
        assert!(!unwound.frames.is_empty() && unwound.frames.len() <= crate::unwind::MAX_FRAMES);
        if unwound.truncated {
            assert!(unwound.error.is_some(), "{unwound:?}");
        }
    }
    // Registers pointing nowhere near the snapshot.
    let mut state = capture.state.clone();
    let mut regs = state.regs.unwrap();
    regs[reg::SP] = 0xdead_0000;
    regs[reg::BP] = 0xbeef_0000;
    state.regs = Some(regs);
    let unwound = unwinder.unwind(&state, &capture.files);
    assert!(unwound.truncated);
    assert!(
        unwound
            .error
            .unwrap()
            .contains("outside the captured stack")
    );
}

#[test]
fn without_a_snapshot_the_kernel_walk_is_used() {
    let mut regs = [0u64; tracer_common::REGS_LEN];
    regs[reg::IP] = 0x10;
    let state = StateRecord {
        boot_ns: 0,
        thread: Task {
            pid: 1,
            tid: 1,
            ppid: 0,
            uid: 0,
            comm: String::new(),
        },
        regs: Some(regs),
        kstack: vec![0x10, 0x20],
        snapshot_base: 0,
        snapshot: Vec::new(),
        snapshot_short: false,
        exe: None,
        cmdline: Vec::new(),
        sp_region: None,
        mappings: Vec::new(),
        mappings_truncated: false,
        mappings_busy: false,
    };
    let unwound = Unwinder::new().unwind(&state, &[]);
    let addrs: Vec<u64> = unwound.frames.iter().map(|f| f.address).collect();
    assert_eq!(addrs, [0x10, 0x20]);
}
