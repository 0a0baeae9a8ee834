//! Rust panics, seen in the standard library's panic handler.
//!
//! Every Rust panic passes `rust_begin_unwind(info: &PanicInfo)`, whether
//! something catches it later or it ends the process (status 101 when it
//! unwinds out of `main`, SIGABRT with `panic=abort`). The probe captures
//! the panicking thread's stack there, while it is intact, and marks the
//! process dying; userspace forgets a process that lives on. At most one
//! capture per process is in flight, so a server that catches panics in a
//! loop pays for one until userspace has looked at it.
//!
//! The panic's message is what the panic hook prints through the standard
//! library's raw stderr writer, probed too: the panic arms the process's
//! last words, so the text is kept even when stderr went nowhere.
//!
//! The location is read from `PanicInfo`, whose layout Rust does not
//! promise: userspace trusts it only when it matches the frames.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, generated::bpf_probe_read_user},
    programs::ProbeContext,
};
use tracer_common::evidence_source;

use crate::{
    lastwords, probe,
    shared::{DOOMED, config, watched},
};

#[inline(always)]
fn read_user<T: Copy + Default>(addr: u64) -> T {
    let mut out = T::default();
    // SAFETY: the destination is `out`, of the size given; the helper
    // checks the source.
    let rc = unsafe {
        bpf_probe_read_user(
            (&raw mut out).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    if rc == 0 { out } else { T::default() }
}

#[inline(always)]
pub fn on_panic(ctx: &ProbeContext) -> Option<()> {
    let cfg = config()?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the helper takes no arguments.
    let task = unsafe { bpf_get_current_task() };
    // Already dying (a process on probation is not, see `exec`).
    // SAFETY: the map's value is read within this run.
    let doomed = unsafe { DOOMED.get(tgid) }.is_some_and(|d| d.provisional == 0);
    if !watched(cfg, task, tgid) || doomed {
        return None;
    }
    lastwords::doom_afresh(tgid, pid_tgid as u32);
    if let Some(e) = probe::start(evidence_source::RUST_PANIC) {
        // PanicInfo { message: &Arguments, location: &Location, .. };
        // Location { file: &str, line: u32, col: u32 }.
        // SAFETY: `regs` is the probe's own saved user registers.
        let info = unsafe { (*ctx.regs).rdi };
        let location: u64 = read_user(info + 8);
        if location != 0 {
            let file: u64 = read_user(location);
            let len: u64 = read_user(location + 8);
            probe::copy_counted(&e, 1, file, len);
            // SAFETY: `e.0` is the reservation's memory, writable until it
            // is submitted.
            unsafe { (*e.0).line = read_user(location + 16) };
        }
        probe::finish(e);
    }
    probe::doom_and_capture(
        ctx.as_ptr(),
        cfg.snapshot_bytes,
        task,
        tgid,
        pid_tgid as u32,
    )
}

/// The standard library wrote `(ptr, len)` to stderr through its raw
/// writer: kept when the process is dying (a panic armed it).
#[inline(always)]
pub fn on_stderr(ctx: &ProbeContext) {
    if !lastwords::armed() {
        return;
    }
    // SAFETY: `regs` is the probe's own saved user registers.
    let (ptr, len) = unsafe { ((*ctx.regs).rsi, (*ctx.regs).rdx) };
    lastwords::keep_from_runtime(bpf_get_current_pid_tgid(), ptr, len);
}
