//! crashtrace's kernel side: this file lists the programs; the work of each
//! lives in the modules named.
//!
//! - `signal_generate` (tp_btf, `signal`) sees every signal the kernel
//!   generates. It drops everything that cannot kill (not in the
//!   configured set, ignored, or caught by a handler) after a few loads,
//!   records a signal whose default action will end the process, and
//!   counts signals per process (`activity`). `signal_empty`, on the same
//!   tracepoint, does nothing: the benchmark's yardstick, never attached
//!   otherwise.
//! - The dying thread's registers, stack, mappings and executable are
//!   captured (`state`, `vma`, `path`, `process`) where its memory map still
//!   exists: at `sched_process_exit` from Linux 6.16, at the entry of
//!   `do_exit` (`exit_capture`, fentry) before; `sched_process_exit`
//!   reports the group's exit status.
//! - `sched_process_fork` follows descendants in `record` mode;
//!   `sched_process_exec` (`exec`) reports new executables for the runtime
//!   probes.
//! - `mark_victim` and `mark_victim_pid` (`oom`) record the OOM killer's
//!   victim.
//! - Uprobes: `libc_abort` on libc's `abort` (`libc`, `cxx`),
//!   `runtime_fatal` on Go's and Rust's fatal paths (`golang`, `gostack`, `rust`);
//!   what they share is in `probe`. `stderr_write` (fentry on
//!   `ksys_write`) or `sys_enter_write` (`lastwords`) keeps what a dying
//!   process writes.
//! - Programs named `*_legacy` do the same without `bpf_loop`,
//!   `bpf_find_vma`, `bpf_task_pt_regs` and `bpf_get_current_task_btf`
//!   (kernels 5.10 to 5.16); the loader picks one of each pair from the
//!   running kernel's BTF. Helpers stay `#[inline(always)]`: 6.1's verifier
//!   refuses subprograms that take stack pointers.
//!
//! Maps and checks every program shares are in `shared`, kernel reads in
//! `kernel`; no module imports `main.rs` or a sibling that imports it back.
//! Register offsets are x86_64's `pt_regs` (userspace refuses to build for
//! any other architecture). Nothing here allocates on the BPF stack beyond
//! a few words: events are built in place inside their ring-buffer
//! reservation.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod activity;
mod cxx;
mod exec;
mod golang;
mod gostack;
mod kernel;
mod lastwords;
mod libc;
mod oom;
mod path;
mod probe;
mod process;
mod rust;
mod shared;
mod signal;
mod state;
mod vma;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::bpf_get_attach_cookie,
    },
    macros::{btf_tracepoint, fentry, uprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use tracer_common::{ExitEvent, config_flags, exit_flags, go_cookie, go_probe, kind, loss};

use crate::{
    kernel::{off, read},
    shared::{DOOMED, EVENTS, LOSSES, TRACED, config, count},
};

#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate(ctx: BtfTracePointContext) -> u32 {
    signal::on_signal::<false>(&ctx);
    0
}

/// `signal_generate` for kernels without `bpf_find_vma` and `bpf_loop`.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_legacy(ctx: BtfTracePointContext) -> u32 {
    signal::on_signal::<true>(&ctx);
    0
}

/// Does nothing. The loader attaches it beside `signal_generate` only when
/// `CRASHTRACE_EMPTY_SIGNAL_PROGRAM=1` (`cargo xtask bench` sets it), so
/// that the kernel's statistics give, in the same runs, the price of any
/// program on this tracepoint next to `signal_generate`'s.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_empty(_ctx: BtfTracePointContext) -> u32 {
    0
}

/// A thread is exiting. For a thread group with a captured killing signal,
/// the signalled thread (or, failing that, the last one) sends its state,
/// and the last thread reports the group's exit status.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    on_exit::<false, true>(&ctx)
}

/// `sched_process_exit` for kernels without `bpf_task_pt_regs`,
/// `bpf_find_vma` and `bpf_loop`.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_legacy(ctx: BtfTracePointContext) -> u32 {
    on_exit::<true, true>(&ctx)
}

/// `sched_process_exit` without the capture, for a kernel whose verifier
/// refuses every capture program: deaths are still reported, without
/// stacks, rather than not at all.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_bare(ctx: BtfTracePointContext) -> u32 {
    on_exit::<true, false>(&ctx)
}

#[inline(always)]
fn on_exit<const LEGACY: bool, const CAPTURE: bool>(ctx: &BtfTracePointContext) -> u32 {
    let task: u64 = ctx.arg(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let Some(cfg) = config() else { return 0 };
    let traced = cfg.flags & config_flags::TRACED_ONLY != 0;
    let doom = DOOMED.get_ptr_mut(tgid);
    let tails = cfg.flags & config_flags::STDERR_TAILS != 0;
    if doom.is_none() && !traced && !tails && !lastwords::armed() {
        return 0;
    }
    let signal: u64 = read(task, off!(task_signal));
    let group_dead = read::<i32>(signal, off!(signal_live)) == 0;
    let exit_code: u32 = read(task, off!(task_exit_code));
    // SAFETY: `doom` points to the map's value for `tgid`, valid for this
    // run (an LRU map frees values only after an RCU grace period).
    let provisional = doom.is_some_and(|d| unsafe { (*d).provisional } != 0);
    if group_dead {
        lastwords::disarm(tgid);
        if provisional && exit_code != 0 {
            // Its words before dying are all there is of them.
            lastwords::send_tail(tgid, tid);
        } else if tails {
            lastwords::forget_tail(tgid);
        }
        if traced {
            let _ = TRACED.remove(tgid);
        }
    }
    let Some(doom) = doom else { return 0 };
    if provisional && exit_code == 0 {
        // A first run that ended well: nothing to report.
        if group_dead {
            let _ = DOOMED.remove(tgid);
        }
        return 0;
    }
    // SAFETY: `doom` points to the map's value for `tgid`, valid for this
    // run (an LRU map frees values only after an RCU grace period).
    let capture = unsafe {
        CAPTURE && (*doom).captured == 0 && ((*doom).tid == 0 || (*doom).tid == tid || group_dead)
    };
    if capture {
        // SAFETY: as above.
        unsafe { (*doom).captured = 1 };
        state::capture::<LEGACY>(ctx.as_ptr(), task, cfg.snapshot_bytes);
    }
    if !group_dead {
        return 0;
    }
    // Two threads exiting at once on two CPUs can both find the group's
    // live count at zero: the one whose delete succeeds reports the exit.
    if DOOMED.remove(tgid).is_err() {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_EXIT);
        return 0;
    };
    entry.write(ExitEvent {
        kind: kind::EXIT,
        _pad: 0,
        // SAFETY: the helper takes no arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        tgid,
        tid,
        exit_code,
        flags: if provisional {
            exit_flags::PROVISIONAL
        } else {
            0
        },
    });
    entry.submit(0);
    0
}

/// Where `sched_process_exit` fires after `exit_mm()` (every kernel before
/// 6.16, whose tracepoint lacks `group_dead`), the exiting thread has no
/// memory map left there: no stack, no mappings, no executable. The loader
/// then also attaches this program at the entry of `do_exit`, which every
/// exiting thread calls in its own context with its mm still attached and
/// interrupts enabled, and the capture happens here instead. The choice of
/// thread is the tracepoint's: the signalled thread, else the last one.
#[fentry(function = "do_exit")]
pub fn exit_capture(ctx: FEntryContext) -> u32 {
    on_do_exit::<false>(&ctx)
}

/// `exit_capture` for kernels without `bpf_task_pt_regs`, `bpf_find_vma`
/// and `bpf_loop`.
#[fentry(function = "do_exit")]
pub fn exit_capture_legacy(ctx: FEntryContext) -> u32 {
    on_do_exit::<true>(&ctx)
}

#[inline(always)]
fn on_do_exit<const LEGACY: bool>(ctx: &FEntryContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let Some(doom) = DOOMED.get_ptr_mut(tgid) else {
        return 0;
    };
    // A process on probation is captured only on its way to a non-zero
    // exit (`do_exit`'s code is the wait status).
    let code: i64 = ctx.arg(0);
    // SAFETY: as below.
    if unsafe { (*doom).provisional } != 0 && code == 0 {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    // SAFETY: the helper takes no arguments.
    let task = unsafe { bpf_get_current_task() };
    let signal: u64 = read(task, off!(task_signal));
    // `live` still counts this thread: it is decremented after this point.
    let last = read::<i32>(signal, off!(signal_live)) <= 1;
    // SAFETY: `doom` points to the map's value for `tgid`, valid for this
    // run (an LRU map frees values only after an RCU grace period).
    let capture =
        unsafe { (*doom).captured == 0 && ((*doom).tid == 0 || (*doom).tid == tid || last) };
    if capture {
        // SAFETY: as above.
        unsafe { (*doom).captured = 1 };
        state::capture::<LEGACY>(ctx.as_ptr(), task, cfg.snapshot_bytes);
    }
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    if cfg.flags & config_flags::TRACED_ONLY == 0 {
        return 0;
    }
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let parent_tgid: u32 = read(parent, off!(task_tgid));
    let child_tgid: u32 = read(child, off!(task_tgid));
    // SAFETY: the map's value is only tested for presence.
    if parent_tgid == child_tgid || unsafe { TRACED.get(parent_tgid) }.is_none() {
        return 0;
    }
    if TRACED.insert(child_tgid, 1, 0).is_err() {
        count(&LOSSES, loss::TRACED_FULL);
    }
    0
}

/// One uprobe program for every language runtime's fatal-path probes; the
/// attach cookie ([`go_probe`]) says which function it sits on: Go's
/// (`golang`) or Rust's (`rust`).
#[uprobe]
pub fn runtime_fatal(ctx: ProbeContext) -> u32 {
    // SAFETY: the context pointer is the program's own.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    match go_cookie::which(cookie) {
        go_probe::RUST_PANIC => {
            let _ = rust::on_panic(&ctx);
        }
        go_probe::RUST_STDERR => rust::on_stderr(&ctx),
        _ => {
            let _ = golang::on_fatal(&ctx, cookie);
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
