//! The unwinder on arbitrary captured states, against real unwind tables.
//!
//! Input layout:
//! * bytes `0..168`: the 21 `pt_regs` words (zero-padded when short). The
//!   words the unwinder never reads as registers steer the rest: `orig_ax`
//!   (15) holds control bits, `cs` (17), `eflags` (18) and `ss` (20) place an
//!   extra mapping;
//! * the rest, at most 20 KiB: the stack snapshot.
//!
//! The mappings are the fuzzer's own libc, once at its real address and once
//! at a low address small input words reach easily, its vDSO, and the extra
//! mapping, so CFI lookups run on real `.eh_frame` tables.
#![no_main]

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use crashtrace::{
    events::{Mapping, Region, StateRecord, Task, reg},
    unwind::Unwinder,
};
use libfuzzer_sys::fuzz_target;
use tracer_common::{KSTACK_MAX, REGS_LEN, STACK_SNAPSHOT_MAX};

const REGS_BYTES: usize = REGS_LEN * 8;
/// Where the low copy of libc's code is mapped.
const LOW_BASE: u64 = 0x40_0000;
const MAX_FRAMES: usize = 256;

const ORIG_AX: usize = 15;
const CS: usize = 17;
const EFLAGS: usize = 18;
const SS: usize = 20;

/// An executable file mapping of this process, from `/proc/self/maps`.
struct Code {
    start: u64,
    end: u64,
    offset: u64,
    path: PathBuf,
}

struct Env {
    libc: Code,
    exe: Code,
    vdso: Option<(u64, u64)>,
}

fn parse_maps() -> Env {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("reading /proc/self/maps");
    let mut libc = None;
    let mut exe = None;
    let mut vdso = None;
    let own = std::fs::read_link("/proc/self/exe").ok();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, perms, offset, _dev, _ino, rest @ ..] = fields.as_slice() else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        let path = rest.join(" ");
        if path == "[vdso]" {
            vdso = Some((start, end));
            continue;
        }
        if !perms.contains('x') || !path.starts_with('/') {
            continue;
        }
        let code = Code {
            start,
            end,
            offset,
            path: PathBuf::from(&path),
        };
        let name = Path::new(&path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if libc.is_none() && (name.starts_with("libc.so") || name.starts_with("libc-")) {
            libc = Some(code);
        } else if exe.is_none() && own.as_deref() == Some(Path::new(&path)) {
            exe = Some(code);
        }
    }
    let exe = exe.expect("the fuzzer's own code mapping");
    // A static build has no libc of its own: use the executable instead.
    let libc = libc.unwrap_or(Code {
        start: exe.start,
        end: exe.end,
        offset: exe.offset,
        path: exe.path.clone(),
    });
    Env { libc, exe, vdso }
}

fn mapping(start: u64, end: u64, file_offset: u64, path: Option<&Path>) -> Mapping {
    let meta = path.and_then(|p| std::fs::metadata(p).ok());
    Mapping {
        start,
        end,
        file_offset,
        ino: meta.as_ref().map_or(0, |m| m.ino()),
        dev: meta.as_ref().map_or(0, |m| m.dev()),
        path: path.map(Path::to_owned),
        path_truncated: false,
        executable: true,
        vdso: false,
    }
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(parse_maps)
}

fn state_from(data: &[u8]) -> (StateRecord, Vec<Option<PathBuf>>) {
    let env = env();
    let mut regs = [0u64; REGS_LEN];
    for (i, chunk) in data[..data.len().min(REGS_BYTES)].chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        regs[i] = u64::from_le_bytes(word);
    }
    let snapshot = data.get(REGS_BYTES..).unwrap_or_default();
    let snapshot = snapshot[..snapshot.len().min(STACK_SNAPSHOT_MAX)].to_vec();
    let ctl = regs[ORIG_AX];
    let bits = |shift: u32, width: u32| (ctl >> shift) & ((1 << width) - 1);

    let sp = regs[reg::SP];
    let snapshot_base = match bits(0, 2) {
        // What the kernel does: the page holding SP.
        0 => sp & !0xfff,
        1 => sp,
        2 => sp.wrapping_sub(bits(8, 16)),
        _ => regs[EFLAGS],
    };
    if bits(2, 1) == 1 {
        // An IP inside libc's code, as a crash in libc has.
        let len = env.libc.end - env.libc.start;
        let base = if bits(3, 1) == 1 {
            env.libc.start
        } else {
            LOW_BASE
        };
        regs[reg::IP] = base + regs[reg::IP] % len;
    }
    let sp_region = (bits(4, 1) == 1).then(|| {
        let start = snapshot_base & !0xfff;
        Region {
            start,
            end: start.saturating_add(bits(24, 20) << 12),
            vm_flags: 0,
            has_file: false,
        }
    });

    let libc = &env.libc;
    let libc_len = libc.end - libc.start;
    let mut mappings = vec![
        mapping(LOW_BASE, LOW_BASE + libc_len, libc.offset, Some(&libc.path)),
        mapping(libc.start, libc.end, libc.offset, Some(&libc.path)),
    ];
    let mut files = vec![Some(libc.path.clone()), Some(libc.path.clone())];
    if let Some((start, end)) = env.vdso {
        let mut vdso = mapping(start, end, 0, None);
        vdso.vdso = true;
        mappings.push(vdso);
        files.push(None);
    }
    if bits(5, 1) == 1 {
        // An extra mapping wherever the input puts it.
        let start = regs[CS];
        let end = start.saturating_add(regs[SS] & 0xffff_ffff);
        let (path, file): (Option<&Path>, Option<PathBuf>) = match bits(6, 2) {
            0 => (Some(&libc.path), Some(libc.path.clone())),
            1 => (Some(&env.exe.path), Some(env.exe.path.clone())),
            2 => (
                Some(Path::new("/nonexistent/lib.so")),
                Some(PathBuf::from("/nonexistent/lib.so")),
            ),
            _ => (None, None),
        };
        let mut extra = mapping(start, end, regs[EFLAGS] & !0xfff, path);
        extra.executable = bits(8, 1) == 0;
        extra.vdso = bits(9, 1) == 1;
        mappings.push(extra);
        files.push(file);
    }
    if bits(10, 1) == 1 {
        // A file list shorter than the mapping list.
        files.pop();
    }
    // Without registers, the kernel's frame-pointer walk is all there is.
    let regs = (bits(11, 1) == 0).then_some(regs);
    let kstack = if regs.is_none() || snapshot.is_empty() {
        snapshot
            .chunks_exact(8)
            .take(KSTACK_MAX)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else {
        Vec::new()
    };
    let state = StateRecord {
        boot_ns: 0,
        thread: Task {
            pid: 1,
            tid: 1,
            ppid: 0,
            uid: 0,
            comm: "fuzz".into(),
        },
        regs,
        kstack,
        snapshot_base,
        snapshot_short: bits(12, 1) == 1,
        snapshot,
        exe: None,
        cmdline: Vec::new(),
        sp_region,
        mappings,
        mappings_truncated: bits(13, 1) == 1,
    };
    (state, files)
}

fuzz_target!(|data: &[u8]| {
    // Kept across inputs: it caches the parsed tables of unchanging files.
    static UNWINDER: OnceLock<Mutex<Unwinder>> = OnceLock::new();
    let (state, files) = state_from(data);
    let mut unwinder = UNWINDER
        .get_or_init(|| Mutex::new(Unwinder::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let out = unwinder.unwind(&state, &files);
    assert!(
        out.frames.len() <= MAX_FRAMES,
        "{} frames",
        out.frames.len()
    );
    assert!(
        !out.truncated || out.error.is_some(),
        "truncated without a reason"
    );
    assert!(
        !out.frames.is_empty() || out.error.is_some(),
        "no frames and no reason"
    );
});
