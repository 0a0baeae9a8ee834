//! Entry uprobes on the Go runtime's fatal paths.
//!
//! An unrecovered Go panic or a fatal runtime error never raises a fatal
//! signal: the runtime prints its message and trace, then calls `exit(2)`.
//! The loader puts this program on `runtime.fatalpanic`,
//! `runtime.fatalthrow`, and `runtime.throw`/`runtime.fatal` when they are
//! not inlined, in every Go executable it finds (file offsets come from the
//! symbol table or, in a stripped binary, from pclntab); the attach cookie
//! says which function it is ([`go_probe`]).
//!
//! `runtime.gwrite`, where the runtime's `print` output goes, is probed
//! too: once a process is dying, what it prints is its last words.
//!
//! Only a process on its way to `exit(2)` reaches these functions, so the
//! first hit may spend the heavy capture: the thread's registers and stack
//! right here, on the goroutine's stack, before the runtime switches to the
//! system stack to print, and the process is marked dying so that its exit
//! is reported and its stderr (the panic text) is kept.
//!
//! Entry probes only: a return probe rewrites return addresses on goroutine
//! stacks, which the runtime moves.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::{bpf_get_attach_cookie, bpf_probe_read_user},
    },
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use tracer_common::{Doom, EVIDENCE_TEXT, FileId, evidence_source, go_probe, loss};

use crate::{CONFIG, DOOMED, LOSSES, count, exec, lastwords, libc, state, watched};

/// Executables whose Go runtime is probed, written by userspace.
#[map]
static GO_EXES: HashMap<FileId, u8> = HashMap::with_max_entries(1024, 0);

/// One uprobe program for every runtime's fatal-path probes; the attach
/// cookie ([`go_probe`]) says which function it sits on.
#[uprobe]
pub fn runtime_fatal(ctx: ProbeContext) -> u32 {
    match unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } {
        go_probe::RUST_PANIC => {
            let _ = crate::rust::on_panic(&ctx);
        }
        go_probe::RUST_STDERR => crate::rust::on_stderr(&ctx),
        _ => {
            let _ = on_fatal(&ctx);
        }
    }
    0
}

#[inline(always)]
fn on_fatal(ctx: &ProbeContext) -> Option<()> {
    let cfg = CONFIG.get(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let task = unsafe { bpf_get_current_task() };
    if !watched(cfg, task, tgid) {
        return None;
    }
    let which = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if which == go_probe::GWRITE {
        // Register ABI: a slice argument is (RAX pointer, RBX length, RCX
        // capacity).
        let regs = ctx.regs;
        let (ptr, len) = unsafe { ((*regs).rax, (*regs).rbx) };
        lastwords::keep_from_runtime(pid_tgid, ptr, len);
        return None;
    }
    let source = match which {
        go_probe::FATALPANIC => evidence_source::GO_FATALPANIC,
        go_probe::FATALTHROW => evidence_source::GO_FATALTHROW,
        go_probe::STARTPANIC => evidence_source::GO_STARTPANIC,
        _ => evidence_source::GO_THROW,
    };
    if let Some(e) = libc::start(source) {
        if which == go_probe::THROW {
            // Register ABI: a string argument is (RAX pointer, RBX length).
            let regs = ctx.regs;
            let (ptr, len) = unsafe { ((*regs).rax, (*regs).rbx) };
            copy_go_string(e.0, 0, ptr, len);
        }
        libc::finish(e);
    }
    lastwords::doom(tgid, tid);
    doom_and_capture(ctx.as_ptr(), cfg.snapshot_bytes, task, tgid, tid)
}

/// Whether `task` runs a Go executable crashtrace probed (C code called
/// through cgo calls libc's `abort` in such a process).
#[inline(always)]
pub fn is_go_process(task: u64) -> bool {
    exec::exe_id(task).is_some_and(|id| unsafe { GO_EXES.get(id) }.is_some())
}

/// Marks the process dying and, the first time, captures the current
/// thread's state here.
#[inline(always)]
pub fn doom_and_capture(
    ctx: *mut c_void,
    snapshot_bytes: u32,
    task: u64,
    tgid: u32,
    tid: u32,
) -> Option<()> {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    match DOOMED.get_ptr_mut(tgid) {
        Some(doom) => unsafe {
            if (*doom).captured != 0 {
                return None;
            }
            (*doom).captured = 1;
            (*doom).tid = tid;
        },
        None => {
            let doom = Doom {
                boot_ns: now,
                tid,
                captured: 1,
            };
            if DOOMED.insert(tgid, doom, 0).is_err() {
                count(&LOSSES, loss::DOOMED_FULL);
                return None;
            }
        }
    }
    state::capture::<false>(ctx, task, snapshot_bytes);
    Some(())
}

/// Copies a (pointer, length) string, Go's or Rust's, not NUL-terminated,
/// into text `index` of `e`.
#[inline(always)]
pub fn copy_go_string(e: *mut tracer_common::EvidenceEvent, index: usize, ptr: u64, len: u64) {
    if ptr == 0 || len == 0 || index >= 3 {
        return;
    }
    let n = len.min(EVIDENCE_TEXT as u64 - 1) as u32;
    unsafe {
        let dst = (&raw mut (*e).texts[index]).cast::<u8>();
        let n = n & (EVIDENCE_TEXT as u32 - 1);
        if bpf_probe_read_user(dst.cast(), n, ptr as *const c_void) == 0 {
            *dst.add(n as usize) = 0;
        } else {
            *dst = 0;
        }
    }
}
