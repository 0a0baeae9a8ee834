//! `sched_process_exec`: which executables start, so that userspace can
//! put runtime probes (Go's fatal paths) into them before they fail.
//!
//! Each executable file is reported once while it stays in `KNOWN_EXES`:
//! a host that starts `/bin/true` a thousand times pays one record and
//! 999 map lookups. The process of that first run is put on probation
//! (a provisional entry in `DOOMED`) for its lifetime: userspace probes
//! the file while it runs, and cannot know whether the probes were in
//! place before the process reached its fatal path. If it exits non-zero,
//! its state and stderr tail are kept, so a Go program that panics at once
//! on its first run is still reported; a runtime probe or a fatal signal
//! makes the doom a real one, as for any other process.

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use tracer_common::{Doom, ExecEvent, FileId, config_flags, kind, loss};

use crate::{
    kernel::{off, read},
    shared::{DOOMED, EVENTS, LOSSES, config, count, watched},
};

/// Executables already reported.
#[map]
static KNOWN_EXES: LruHashMap<FileId, u8> = LruHashMap::with_max_entries(8192, 0);

/// The identity of `task`'s executable file.
#[inline(always)]
pub fn exe_id(task: u64) -> Option<FileId> {
    let mm: u64 = read(task, off!(task_mm));
    let file: u64 = read(mm, off!(mm_exe_file));
    let inode: u64 = read(file, off!(file_inode));
    if inode == 0 {
        return None;
    }
    let sb: u64 = read(inode, off!(inode_sb));
    Some(FileId {
        ino: read(inode, off!(inode_ino)),
        dev: read(sb, off!(sb_dev)),
        _pad: 0,
    })
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.flags & config_flags::REPORT_EXEC == 0 {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    let tgid: u32 = read(task, off!(task_tgid));
    if !watched(cfg, task, tgid) {
        return 0;
    }
    let Some(id) = exe_id(task) else { return 0 };
    // SAFETY: the map's value is only tested for presence.
    if unsafe { KNOWN_EXES.get(id) }.is_some() {
        return 0;
    }
    let _ = KNOWN_EXES.insert(id, 1, 0);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        let _ = KNOWN_EXES.remove(id);
        count(&LOSSES, loss::RINGBUF_EXEC);
        return 0;
    };
    entry.write(ExecEvent {
        kind: kind::EXEC,
        tgid,
        ino: id.ino,
        dev: id.dev,
        _pad: 0,
    });
    entry.submit(0);
    // Userspace probes this new executable while the process runs; a
    // runtime that dies first (a Go panic in main on a first run) would
    // pass unseen. So the process is on probation: a non-zero exit is
    // captured.
    const BPF_NOEXIST: u64 = 1;
    let probation = Doom {
        // SAFETY: the helper takes no arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        tid: 0,
        captured: 0,
        provisional: 1,
        _pad: 0,
    };
    let _ = DOOMED.insert(tgid, probation, BPF_NOEXIST);
    0
}
