//! A uprobe on libc's `abort`: the evidence a SIGABRT alone lacks.
//!
//! A process only calls these on its way to `abort()`, so each call may
//! cost a ring-buffer record; a process that never fails pays nothing.
//! glibc leaves the text it is about to print for malloc errors, failed
//! assertions and fortify checks in `__abort_msg`, where a debugger finds
//! it after the fact; `libc_abort` reads it there. An uncaught C++
//! exception also ends here; its type, message and `what()` are found as
//! `cxx` says. The loader passes the distance from `abort` to `__abort_msg`
//! in that libc as the attach cookie.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::{bpf_get_attach_cookie, bpf_get_func_ip, bpf_probe_read_user_str},
    },
    macros::uprobe,
    programs::ProbeContext,
};
use tracer_common::{EVIDENCE_TEXT, EvidenceEvent, evidence_source, kind, loss};

use crate::{CONFIG, EVENTS, LOSSES, count, watched};

#[uprobe]
pub fn libc_abort(ctx: ProbeContext) -> u32 {
    let Some(e) = start(evidence_source::ABORT) else {
        return 0;
    };
    unsafe {
        let delta = bpf_get_attach_cookie(ctx.as_ptr());
        let func = bpf_get_func_ip(ctx.as_ptr());
        if delta != 0 && func != 0 {
            // `__abort_msg` is a pointer to `{ unsigned int size; char msg[]; }`.
            let slot = func.wrapping_add(delta);
            let mut msg: u64 = 0;
            if aya_ebpf::helpers::generated::bpf_probe_read_user(
                (&raw mut msg).cast(),
                8,
                slot as *const c_void,
            ) == 0
                && msg != 0
            {
                copy_str(&e, 0, msg + 4);
            }
        }
        if let Some(exception) = crate::cxx::find(ctx.regs) {
            copy_str(&e, 1, exception.type_name);
            copy_str(&e, 2, exception.message);
            (*e.0).code = exception.what;
        }
    }
    finish(e);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // What it printed before calling abort(), and anything it prints after
    // (C++'s "terminate called after throwing ...").
    crate::lastwords::doom(tgid, pid_tgid as u32);
    // C code a Go program called through cgo: the Go runtime will catch the
    // SIGABRT on its signal stack, far from these frames, so they are
    // captured now.
    let task = unsafe { bpf_get_current_task() };
    if crate::golang::is_go_process(task)
        && let Some(cfg) = CONFIG.get(0)
    {
        crate::golang::doom_and_capture(
            ctx.as_ptr(),
            cfg.snapshot_bytes,
            task,
            tgid,
            pid_tgid as u32,
        );
    }
    0
}

/// A reserved, initialized evidence record for a watched process.
pub(crate) struct Reserved(
    pub(crate) *mut EvidenceEvent,
    aya_ebpf::maps::ring_buf::RingBufEntry<EvidenceEvent>,
);

#[inline(always)]
pub(crate) fn start(source: u32) -> Option<Reserved> {
    let cfg = CONFIG.get(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let task = unsafe { bpf_get_current_task() };
    if !watched(cfg, task, tgid) {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<EvidenceEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_EVIDENCE);
        return None;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).kind = kind::EVIDENCE;
        (*e).source = source;
        (*e).boot_ns = bpf_ktime_get_boot_ns();
        (*e).tgid = tgid;
        (*e).tid = pid_tgid as u32;
        (*e).line = 0;
        (*e)._pad = 0;
        (*e).code = 0;
        for i in 0..3 {
            (*e).texts[i][0] = 0;
        }
    }
    Some(Reserved(e, entry))
}

#[inline(always)]
pub(crate) fn copy_str(e: &Reserved, index: usize, from: u64) {
    if from == 0 || index >= 3 {
        return;
    }
    unsafe {
        bpf_probe_read_user_str(
            (&raw mut (*e.0).texts[index]).cast(),
            EVIDENCE_TEXT as u32,
            from as *const c_void,
        );
    }
}

#[inline(always)]
pub(crate) fn finish(e: Reserved) {
    e.1.submit(0);
}
