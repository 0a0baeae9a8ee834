//! `signal_generate`: the cheap decision, and the small signal record.
//!
//! This runs for every signal on the host, under the target's siglock. A
//! signal outside the configured set costs one map lookup and a compare; a
//! signal the target will handle (a JVM's implicit null checks, Go's
//! recoverable panics, a sigsetjmp loop) costs a per-CPU counter increment.
//! Only a signal whose default action will end the process is recorded, and
//! the thread's heavy state is captured later, when it exits.

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
    COMM_LEN, Doom, SENDER_STACK_MAX, SignalEvent, TaskIdentity, config_flags, kind, loss,
    signal_flags,
};

use crate::{
    CONFIG, DOOMED, EVENTS, HANDLED, LOSSES, activity, count,
    kernel::{off, read},
    lastwords, process,
    vma::summarize_vma,
    watched,
};

const SIGKILL: i32 = 9;
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
    let info: u64 = ctx.arg(1);
    let task: *mut c_void = ctx.arg(2);
    let group: i32 = ctx.arg(3);
    let result: i32 = ctx.arg(4);
    if !(1..64).contains(&sig) {
        return None;
    }
    let cfg = CONFIG.get(0)?;
    // `task` is the tracepoint's trusted `task_struct *` and the offsets are
    // constants of the read-only data, so the verifier turns these into
    // checked direct loads: a few nanoseconds each instead of a helper
    // call. Every signal on the host passes here.
    let tgid: u32 = unsafe { field(task, off!(task_tgid)) };
    if let Some(column) = cfg.activity_column(sig as u32) {
        activity::count_signal(task as u64, tgid, column, cfg.activity_second);
    }
    if cfg.signal_mask & (1u64 << sig) == 0 {
        return None;
    }
    // 1 ignored, 3 queue overflow: nothing will be delivered.
    if result == 1 || result == 3 {
        return None;
    }
    let task_addr = task as u64;
    if !watched(cfg, task_addr, tgid) {
        return None;
    }
    if unsafe { field::<u64>(task, off!(task_mm)) } == 0 {
        return None; // kernel thread
    }
    if sig == SIGKILL && info == SEND_SIG_PRIV {
        // Perhaps the OOM killer's: its record may name only the pid.
        let tid: u32 = unsafe { field(task, off!(task_pid)) };
        let _ = crate::oom::KERNEL_KILLS.insert(tid, task_addr, 0);
    }

    // Will the default action run? A forced fault on a blocked or ignored
    // signal has already been reset to SIG_DFL by the kernel at this point.
    let handler = sa_handler(task_addr, sig);
    let fatal_default = DEFAULT_NOT_FATAL & (1u64 << sig) == 0;
    // A blocked signal that is not a fault stays pending for signalfd or
    // sigwait (how many services take SIGTERM): it does not kill either.
    let blocked_mask: u64 = unsafe { field(task, off!(task_blocked)) };
    let blocked = blocked_mask & (1u64 << (sig - 1)) != 0;
    let code_hint: i32 = if info > SEND_SIG_PRIV {
        read(info, 8)
    } else {
        SI_USER
    };
    let waited_for = blocked && code_hint <= 0;
    let handled = sig != SIGKILL && (handler != SIG_DFL || !fatal_default || waited_for);
    if handled {
        count(&HANDLED, sig as u32);
        // A deadly signal another process sent is recorded even when
        // caught: a handler that re-raises it (the Go runtime does, for
        // SIGQUIT and SIGABRT) dies of its own raise, and the sender is
        // the cause. Such kills are rare; they cost a small record.
        let sent_by_other =
            code_hint <= 0 && fatal_default && (bpf_get_current_pid_tgid() >> 32) as u32 != tgid;
        let wanted = cfg.flags & config_flags::INCLUDE_HANDLED != 0 || sent_by_other;
        if !wanted || handler == SIG_IGN {
            return None;
        }
    }

    let Some(mut entry) = EVENTS.reserve::<SignalEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_SIGNAL);
        return None;
    };
    let e = entry.as_mut_ptr();
    let boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    let tid: u32 = read(task_addr, off!(task_pid));
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
    let thread_directed =
        group == 0 || unsafe { (*e).code } > 0 || unsafe { (*e).code } == SI_TKILL;
    entry.submit(0);

    if !handled {
        let doom = Doom {
            boot_ns,
            tid: if thread_directed { tid } else { 0 },
            captured: 0,
        };
        // Keep the first signal's target thread if one is already recorded.
        if unsafe { DOOMED.get(tgid) }.is_none() && DOOMED.insert(tgid, doom, 0).is_err() {
            count(&LOSSES, loss::DOOMED_FULL);
        }
        lastwords::send_tail(tgid, tid);
    }
    Some(())
}

/// A field of a BTF-typed kernel object the program was given, loaded
/// directly (the verifier checks the offset against the type).
#[inline(always)]
unsafe fn field<T: Copy>(object: *mut c_void, offset: u64) -> T {
    unsafe { core::ptr::read_volatile(object.cast::<u8>().add(offset as usize).cast::<T>()) }
}

/// `task->sighand->action[sig - 1].sa.sa_handler`.
#[inline(always)]
fn sa_handler(task: u64, sig: i32) -> u64 {
    let sighand: u64 = read(task, off!(task_sighand));
    let slot = off!(sighand_action) + (sig as u64 - 1) * off!(k_sigaction_size);
    read(sighand, slot)
}

/// Reads `kernel_siginfo` at the userspace `siginfo_t` offsets (the kernel
/// keeps them identical).
#[inline(always)]
unsafe fn fill_siginfo(e: *mut SignalEvent, sig: i32, info: u64) {
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

#[inline(always)]
pub unsafe fn fill_identity(dst: *mut TaskIdentity, task: u64) {
    unsafe {
        (*dst).tgid = read(task, off!(task_tgid));
        (*dst).tid = read(task, off!(task_pid));
        let parent: u64 = read(task, off!(task_real_parent));
        (*dst).ppid = read(parent, off!(task_tgid));
        let cred: u64 = read(task, off!(task_real_cred));
        (*dst).uid = read(cred, off!(cred_uid));
        (*dst).comm = read::<[u8; COMM_LEN]>(task, off!(task_comm));
    }
}
