//! Entry uprobes on the Go runtime's fatal paths.
//!
//! An unrecovered Go panic or a fatal runtime error never raises a fatal
//! signal: the runtime prints its message and trace, then calls `exit(2)`.
//! The loader puts `runtime_fatal` (`main.rs`) on `runtime.fatalpanic`,
//! `runtime.fatalthrow`, and `runtime.throw`/`runtime.fatal` when they are
//! not inlined, in every Go executable it finds (file offsets come from the
//! symbol table or, in a stripped binary, from pclntab); the attach cookie
//! says which function it is ([`go_probe`]), and this module handles the
//! Go ones.
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

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    programs::ProbeContext,
};
use tracer_common::{evidence_source, go_cookie, go_probe};

use crate::{
    gostack, lastwords, probe,
    shared::{config, watched},
};

/// A probe on one of the Go runtime's fatal-path functions was hit;
/// `cookie` is its attach cookie ([`go_cookie`]: which function, and the
/// runtime's layout). `runtime_fatal` (`main.rs`) dispatches here.
#[inline(always)]
pub fn on_fatal(ctx: &ProbeContext, cookie: u64) -> Option<()> {
    let which = go_cookie::which(cookie);
    let cfg = config()?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // SAFETY: the helper takes no arguments.
    let task = unsafe { bpf_get_current_task() };
    if !watched(cfg, task, tgid) {
        return None;
    }
    if which == go_probe::GWRITE {
        // Register ABI: a slice argument is (RAX pointer, RBX length, RCX
        // capacity).
        // SAFETY: `regs` is the probe's own saved user registers.
        let (ptr, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx) };
        lastwords::keep_from_runtime(pid_tgid, ptr, len);
        return None;
    }
    let source = match which {
        go_probe::FATALPANIC => evidence_source::GO_FATALPANIC,
        go_probe::FATALTHROW => evidence_source::GO_FATALTHROW,
        go_probe::STARTPANIC => evidence_source::GO_STARTPANIC,
        _ => evidence_source::GO_THROW,
    };
    if let Some(e) = probe::start(source) {
        if which == go_probe::THROW {
            // Register ABI: a string argument is (RAX pointer, RBX length).
            // SAFETY: as above.
            let (ptr, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx) };
            probe::copy_counted(&e, 0, ptr, len);
        }
        probe::finish(e);
    }
    lastwords::doom(tgid, tid);
    let captured = probe::doom_and_capture(ctx.as_ptr(), cfg.snapshot_bytes, task, tgid, tid);
    // Register ABI: R14 holds the current `g` in Go code.
    // SAFETY: as above.
    let g = unsafe { (*ctx.regs).r14 };
    gostack::send(g, cookie, tgid, tid);
    captured
}
