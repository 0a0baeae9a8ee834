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
        bpf_get_current_pid_tgid, bpf_get_current_task,
        generated::{bpf_get_attach_cookie, bpf_get_func_ip, bpf_probe_read_user},
    },
    macros::uprobe,
    programs::ProbeContext,
};
use tracer_common::evidence_source;

use crate::{
    cxx, lastwords,
    probe::{self, copy_str},
    shared::config,
};

#[uprobe]
pub fn libc_abort(ctx: ProbeContext) -> u32 {
    let Some(e) = probe::start(evidence_source::ABORT) else {
        return 0;
    };
    // SAFETY: the context pointer is the program's own; `ctx.regs` points
    // at the probed thread's saved registers.
    let (delta, func) = unsafe {
        (
            bpf_get_attach_cookie(ctx.as_ptr()),
            // Before Linux 6.5 the helper answers 0 in a uprobe; there the
            // saved instruction pointer is the probed address (the kernel
            // rewinds it over the breakpoint before the handlers run).
            match bpf_get_func_ip(ctx.as_ptr()) {
                0 => (*ctx.regs).rip,
                ip => ip,
            },
        )
    };
    if delta != 0 && func != 0 {
        // `__abort_msg` is a pointer to `{ unsigned int size; char msg[]; }`.
        let slot = func.wrapping_add(delta);
        let mut msg: u64 = 0;
        // SAFETY: the destination is `msg`, 8 bytes; the helper checks
        // the source.
        let rc = unsafe { bpf_probe_read_user((&raw mut msg).cast(), 8, slot as *const c_void) };
        if rc == 0 && msg != 0 {
            copy_str(&e, 0, msg + 4);
        }
    }
    if let Some(exception) = cxx::find(ctx.regs) {
        copy_str(&e, 1, exception.type_name);
        copy_str(&e, 2, exception.message);
        // SAFETY: `e.0` is the reservation's memory, writable until it is
        // submitted.
        unsafe { (*e.0).code = exception.what };
    }
    probe::finish(e);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // What it printed before calling abort(), and anything it prints after
    // (C++'s "terminate called after throwing ...").
    lastwords::doom(tgid, pid_tgid as u32);
    // C code a Go program called through cgo: the Go runtime will catch the
    // SIGABRT on its signal stack, far from these frames, so they are
    // captured now.
    // SAFETY: the helper takes no arguments.
    let task = unsafe { bpf_get_current_task() };
    if probe::is_go_process(task)
        && let Some(cfg) = config()
    {
        probe::doom_and_capture(
            ctx.as_ptr(),
            cfg.snapshot_bytes,
            task,
            tgid,
            pid_tgid as u32,
        );
    }
    0
}
