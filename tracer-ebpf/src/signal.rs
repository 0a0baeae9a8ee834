//! `signal_generate`: the cheap decision, and the small signal record.
//!
//! This runs for every signal on the host, under the target's siglock, so
//! the checks come cheapest first and the frequent cases leave early:
//! - a signal that is neither counted nor captured: the configuration (an
//!   array element the verifier inlines) and one byte of it, the signal's
//!   entry in a per-signal table;
//! - a counted one: beyond that, the target's tgid (a direct load) and the
//!   increment of its activity counter (`activity`);
//! - a signal the target handles (a JVM's implicit null checks, Go's
//!   recoverable panics, a sigsetjmp loop), beyond that: two direct loads
//!   for the handler through the BTF-typed task pointer and, for a
//!   process's own signal, one pid compare; no further map lookup;
//! - only a signal whose default action will end the process is recorded
//!   (the watched-process filter runs for those), and the thread's heavy
//!   state is captured later, when it exits.
//!
//! The `LEGACY` variant, for kernels 5.10 to 5.16, reads the handler
//! through `bpf_probe_read_kernel` instead of direct loads.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::bpf_get_stack,
    },
    programs::BtfTracePointContext,
};
use tracer_common::{
    Config, Doom, SENDER_STACK_MAX, SignalEvent, config_flags, kind, loss, signal_entry,
    signal_flags,
};

use crate::{
    activity,
    kernel::{field, off, opaque, read},
    lastwords, oom, process,
    shared::{DOOMED, EVENTS, LOSSES, config, count, fill_identity, watched},
    vma::summarize_vma,
};

const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
/// Signals whose default action is to ignore or stop, not to terminate.
const DEFAULT_NOT_FATAL: u64 =
    (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20) | (1 << 21) | (1 << 22) | (1 << 23) | (1 << 28);
/// Signals whose siginfo carries a fault address.
const FAULT_SIGNALS: u64 = (1 << 4) | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 11);
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
/// `SEND_SIG_NOINFO` and `SEND_SIG_PRIV`: not pointers.
const SEND_SIG_NOINFO: u64 = 0;
const SEND_SIG_PRIV: u64 = 1;
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;
/// Codes of thread-directed signals (tkill, tgkill) and faults are > 0 or -6.
const SI_TKILL: i32 = -6;

#[inline(always)]
pub fn on_signal<const LEGACY: bool>(ctx: &BtfTracePointContext) -> Option<()> {
    let sig: i32 = ctx.arg(0);
    let task: *mut c_void = ctx.arg(2);
    if !(1..64).contains(&sig) {
        return None;
    }
    let cfg = config()?;
    // One byte says whether the signal is counted (and where) and whether
    // it is of interest: most signals on a host leave after this load.
    let entry = cfg.signal(opaque(sig as u32));
    if entry == 0 {
        return None;
    }
    // SAFETY: `task` is the tracepoint's BTF-typed `task_struct *` and the
    // offset is one of the kernel's own (read-only data, checked by the
    // verifier against the type): a direct load, a few nanoseconds instead
    // of a helper call. Every counted signal on the host passes here.
    let tgid: u32 = unsafe { field(task, off!(task_tgid)) };
    if entry & signal_entry::COUNTED != 0 {
        let column = (entry & signal_entry::COLUMN) as usize;
        activity::count_signal(task as u64, tgid, column, cfg.activity_second);
    }
    if entry & signal_entry::CAPTURED == 0 {
        return None;
    }
    // 1 ignored, 3 queue overflow: nothing will be delivered.
    let result: i32 = ctx.arg(4);
    if result == 1 || result == 3 || tgid == cfg.self_tgid {
        return None;
    }
    let info: u64 = ctx.arg(1);

    // Will the default action run? A handled signal (a JVM's implicit null
    // checks, Go's recoverable panics, a sigsetjmp loop: the frequent case)
    // leaves here, after the handler's load and, at most, a pid compare,
    // before any map lookup. A forced fault on a blocked or ignored signal
    // has already been reset to SIG_DFL by the kernel at this point.
    let fatal_default = DEFAULT_NOT_FATAL & (1u64 << sig) == 0;
    let handler = if sig == SIGKILL {
        SIG_DFL
    } else {
        sa_handler::<LEGACY>(task, sig)
    };
    let mut handled = handler != SIG_DFL || !fatal_default;
    if handled && (handler == SIG_IGN || !handled_wanted(cfg, info, fatal_default, tgid)) {
        return None;
    }

    let task_addr = task as u64;
    if !watched(cfg, task_addr, tgid) {
        return None;
    }
    // SAFETY: as for `task_tgid` above.
    if unsafe { field::<u64>(task, off!(task_mm)) } == 0 {
        return None; // kernel thread
    }
    if sig == SIGKILL && info == SEND_SIG_PRIV {
        // Perhaps the OOM killer's: its record may name only the pid.
        // SAFETY: as for `task_tgid` above.
        let tid: u32 = unsafe { field(task, off!(task_pid)) };
        let _ = oom::KERNEL_KILLS.insert(tid, task_addr, 0);
    }
    // A blocked signal that is not a fault stays pending for signalfd or
    // sigwait (how many services take SIGTERM): it does not kill either.
    // SAFETY: as for `task_tgid` above.
    let blocked_mask: u64 = unsafe { field(task, off!(task_blocked)) };
    let blocked = blocked_mask & (1u64 << (sig - 1)) != 0;
    if !handled && sig != SIGKILL && blocked && code_hint(info) <= 0 {
        if !handled_wanted(cfg, info, fatal_default, tgid) {
            return None;
        }
        handled = true;
    }

    let Some(mut entry) = EVENTS.reserve::<SignalEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_SIGNAL);
        return None;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: the helper takes no arguments.
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let tid: u32 = read(task_addr, off!(task_pid));
    // SAFETY: `e` is the reservation's memory, writable until it is
    // submitted below; the stack and path copies are bounded by their
    // buffers' sizes.
    unsafe {
        (*e).kind = kind::SIGNAL;
        (*e).boot_ns = boot_ns;
        (*e).signo = sig as u32;
        (*e).result = result;
        let mut flags = if handled { signal_flags::HANDLED } else { 0 };
        fill_siginfo(e, sig, info);
        fill_identity(&raw mut (*e).target, task_addr);
        let current_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if info == SEND_SIG_PRIV || (*e).code == SI_KERNEL {
            flags |= signal_flags::KERNEL_SENDER;
        }
        (*e).sender_stack_len = 0;
        (*e).sender_exe_len = 0;
        (*e).sender_cmdline_len = 0;
        if current_tgid != tgid {
            flags |= signal_flags::REMOTE_SENDER;
            fill_identity(&raw mut (*e).sender, bpf_get_current_task());
            // Who killed it: the sender's own user stack, from its context.
            let n = bpf_get_stack(
                ctx.as_ptr(),
                (&raw mut (*e).sender_stack).cast(),
                (SENDER_STACK_MAX * 8) as u32,
                BPF_F_USER_STACK as u64,
            );
            if n > 0 {
                (*e).sender_stack_len = (n as u32) / 8;
            }
            let sender_mm: u64 = read(bpf_get_current_task(), off!(task_mm));
            if sender_mm != 0 {
                (*e).sender_exe_len =
                    process::exe_path::<LEGACY>(&raw mut (*e).sender_exe, sender_mm);
                (*e).sender_cmdline_len = process::cmdline(&raw mut (*e).sender_cmdline, sender_mm);
            }
        } else {
            core::ptr::write_bytes(&raw mut (*e).sender, 0, 1);
        }
        if blocked {
            flags |= signal_flags::BLOCKED;
        }
        (*e).flags = flags;
        // One lookup is all this context allows (see `vma`); the fault
        // address's mapping is the one classification needs.
        (*e).fault_vma = if current_tgid == tgid {
            summarize_vma::<LEGACY>(task, field(task, off!(task_mm)), (*e).fault_addr)
        } else {
            core::mem::zeroed()
        };
    }
    let group: i32 = ctx.arg(3);
    // SAFETY: as above, before the submit.
    let code = unsafe { (*e).code };
    let thread_directed = group == 0 || code > 0 || code == SI_TKILL;
    entry.submit(0);

    if !handled {
        let target = if thread_directed { tid } else { 0 };
        // Keep the first signal's target thread if one is already recorded;
        // a process on probation becomes really doomed.
        match DOOMED.get_ptr_mut(tgid) {
            // SAFETY: the map's value for `tgid`, valid for this run.
            Some(doom) => unsafe {
                if (*doom).provisional != 0 {
                    (*doom).provisional = 0;
                    (*doom).boot_ns = boot_ns;
                    (*doom).tid = target;
                }
            },
            None => {
                let doom = Doom {
                    boot_ns,
                    tid: target,
                    captured: 0,
                    provisional: 0,
                    _pad: 0,
                };
                if DOOMED.insert(tgid, doom, 0).is_err() {
                    count(&LOSSES, loss::DOOMED_FULL);
                }
            }
        }
        lastwords::send_tail(tgid, tid);
    }
    Some(())
}

/// Whether a signal the target handles (or that does not kill by default)
/// is recorded anyway: with `--include-survived`, or when another process
/// sent a deadly one. A handler that re-raises it (the Go runtime does, for
/// SIGQUIT and SIGABRT) dies of its own raise, and the sender is the cause.
/// Such kills are rare; they cost a small record. The sender's pid is
/// compared before the siginfo is read: a process's own signals (its
/// faults, its `kill(getpid())`) cost one helper call here, and the
/// cheapest one.
#[inline(always)]
fn handled_wanted(cfg: &Config, info: u64, fatal_default: bool, tgid: u32) -> bool {
    cfg.flags & config_flags::INCLUDE_HANDLED != 0
        || (fatal_default
            && (bpf_get_current_pid_tgid() >> 32) as u32 != tgid
            && code_hint(info) <= 0)
}

/// The signal's `si_code` when it has a siginfo, else `SI_USER` (<= 0:
/// sent by a process, or by the kernel without one), without filling a
/// record. (A direct load is refused here: the verifier does not type
/// this argument as a pointer it follows.)
#[inline(always)]
fn code_hint(info: u64) -> i32 {
    if info > SEND_SIG_PRIV {
        read(info, 8)
    } else {
        SI_USER
    }
}

/// `task->sighand->action[sig - 1].sa.sa_handler`.
///
/// SIGSEGV's slot, at a constant offset, is loaded directly through the
/// BTF-typed task pointer and its `sighand` (a JVM, Go and `sigsetjmp`
/// loops handle SIGSEGV by the thousand), where the verifier follows BTF
/// pointers (every kernel with the full helper set). Any other signal's
/// slot is at an offset the verifier cannot check on such a pointer
/// (6.1's refuses the arithmetic), so both reads take the probe-read
/// helper, as everything does in the programs for older kernels.
#[inline(always)]
fn sa_handler<const LEGACY: bool>(task: *mut c_void, sig: i32) -> u64 {
    if !LEGACY && sig == SIGSEGV {
        // SAFETY: `task` is the tracepoint's BTF-typed pointer and
        // `sighand` a BTF-typed field of it; the target's siglock, held
        // around this tracepoint, keeps it from being freed, and the
        // verifier checks the constant offsets against the types (a bad
        // address reads as zero).
        let sighand: *mut c_void = unsafe { field(task, off!(task_sighand)) };
        let slot = off!(sighand_action) + (SIGSEGV as u64 - 1) * off!(k_sigaction_size);
        // SAFETY: as above.
        return unsafe { field(sighand, slot) };
    }
    let sighand: u64 = read(task as u64, off!(task_sighand));
    let slot = off!(sighand_action) + (sig as u64 - 1) * off!(k_sigaction_size);
    read(sighand, slot)
}

/// Reads `kernel_siginfo` at the userspace `siginfo_t` offsets (the kernel
/// keeps them identical).
///
/// # Safety
///
/// `e` must point to a writable [`SignalEvent`].
#[inline(always)]
unsafe fn fill_siginfo(e: *mut SignalEvent, sig: i32, info: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        (*e).fault_addr = 0;
        (*e).si_pid = 0;
        (*e).si_uid = 0;
        (*e).errno = 0;
        match info {
            SEND_SIG_NOINFO => {
                (*e).code = SI_USER;
                (*e).si_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
            }
            SEND_SIG_PRIV => (*e).code = SI_KERNEL,
            _ => {
                (*e).errno = read(info, 4);
                let code: i32 = read(info, 8);
                (*e).code = code;
                if code > 0 && code != SI_KERNEL && FAULT_SIGNALS & (1u64 << sig) != 0 {
                    (*e).fault_addr = read(info, 16);
                } else if code <= 0 {
                    (*e).si_pid = read(info, 16);
                    (*e).si_uid = read(info, 20);
                }
            }
        }
    }
}
