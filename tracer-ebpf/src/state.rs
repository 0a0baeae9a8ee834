//! The dying thread's state, captured from its own context as it exits.
//!
//! A thread killed by a fatal signal never returns to user mode: its saved
//! user registers are still those of the faulting instruction (or of the
//! system call it was in when killed) and its stack is untouched, and at
//! `sched_process_exit` its memory map is still attached. Capturing here
//! instead of in `signal_generate` lets a kill from another process still
//! yield the victim's own stack, and runs with IRQs on, where every mapping
//! lookup works.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_ktime_get_boot_ns,
        generated::{
            bpf_get_current_task_btf, bpf_get_stack, bpf_probe_read_kernel, bpf_probe_read_user,
            bpf_task_pt_regs,
        },
    },
};
use tracer_common::{
    KSTACK_MAX, MODULES_MAX, PATH_BUF, REGS_LEN, STACK_SNAPSHOT_MAX, StateEvent, kind, loss,
    signal_flags,
};

use crate::{
    kernel::{off, read},
    process,
    shared::{EVENTS, LOSSES, count, fill_identity},
    vma::{StackWords, capture_modules, summarize_vma, wait_for_mmap_lock},
};

/// x86_64 `pt_regs` word indices.
const REG_IP: usize = 16;
const REG_SP: usize = 19;
const PAGE: u64 = 4096;
const SNAPSHOT_PAGES: usize = STACK_SNAPSHOT_MAX / PAGE as usize;

/// `pt_regs` is 21 words; user `cs` and `ss` are its words 17 and 20.
const PT_REGS_SIZE: u64 = (REGS_LEN * 8) as u64;
const REG_CS: u64 = 17;
const REG_SS: u64 = 20;
const USER_CS: u64 = 0x33;
const USER_DS: u64 = 0x2b;

/// `task_pt_regs(task)` for kernels without `bpf_task_pt_regs` (before
/// 5.15): the saved user registers sit at the top of the task's kernel
/// stack (x86_64 leaves no padding above them). The stack is 16 KiB, or
/// 32 KiB with KASAN; the one whose frame holds the user code and stack
/// segments is taken, so a wrong guess yields no registers, not wrong ones.
#[inline(always)]
fn user_regs_legacy(task: u64) -> u64 {
    let stack: u64 = read(task, off!(task_stack));
    if stack == 0 {
        return 0;
    }
    for size in [16384u64, 32768] {
        let regs = stack + size - PT_REGS_SIZE;
        if read::<u64>(regs, REG_CS * 8) == USER_CS && read::<u64>(regs, REG_SS * 8) == USER_DS {
            return regs;
        }
    }
    0
}

/// Sends a [`StateEvent`] for the current thread: an exiting one, or one
/// stopped at a runtime's fatal-path probe. `ctx` is the program's context.
/// `LEGACY` is for kernels without `bpf_task_pt_regs`, `bpf_find_vma` and
/// `bpf_loop`.
#[inline(always)]
pub fn capture<const LEGACY: bool>(ctx: *mut c_void, task: u64, snapshot_bytes: u32) {
    let mm: u64 = read(task, off!(task_mm));
    if mm == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<StateEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_STATE);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reservation's memory, writable until it is
    // submitted or discarded below.
    unsafe {
        (*e).kind = kind::STATE;
        (*e).boot_ns = bpf_ktime_get_boot_ns();
        fill_identity(&raw mut (*e).thread, task);
        let mut flags = 0;
        let regs = if LEGACY {
            user_regs_legacy(task) as *const c_void
        } else {
            bpf_task_pt_regs(bpf_get_current_task_btf()) as *const c_void
        };
        let regs_size = (REGS_LEN * 8) as u32;
        if !regs.is_null()
            && bpf_probe_read_kernel((&raw mut (*e).regs).cast(), regs_size, regs) == 0
        {
            flags |= signal_flags::REGS_VALID;
        } else {
            core::ptr::write_bytes(&raw mut (*e).regs, 0, 1);
        }
        (*e).kstack_len = 0;
        (*e).snapshot_len = 0;
        (*e).snapshot_base = 0;
        if flags & signal_flags::REGS_VALID != 0 {
            let n = bpf_get_stack(
                ctx,
                (&raw mut (*e).kstack).cast(),
                (KSTACK_MAX * 8) as u32,
                BPF_F_USER_STACK as u64,
            );
            if n > 0 {
                (*e).kstack_len = (n as u32) / 8;
            }
            if snapshot_stack(e, snapshot_bytes) {
                flags |= signal_flags::SNAPSHOT_SHORT;
            }
        }
        capture_process::<LEGACY>(e, mm);
        // The helper wants the current task as a BTF pointer; the legacy
        // lookup descends `mm` instead.
        let current = if LEGACY {
            core::ptr::null_mut()
        } else {
            bpf_get_current_task_btf().cast()
        };
        if !LEGACY {
            wait_for_mmap_lock(mm);
        }
        (*e).sp_vma = summarize_vma::<LEGACY>(current, mm, (*e).regs[REG_SP]);
        // Scan from SP up: words below it are dead and would only spend the
        // lookup budget.
        let sp = (*e).regs[REG_SP];
        let snapshot_end = (*e).snapshot_base + (*e).snapshot_len as u64;
        let scan_from = if sp > (*e).snapshot_base && sp < snapshot_end {
            sp & !7
        } else {
            (*e).snapshot_base
        };
        let words = StackWords {
            base: scan_from,
            count: ((snapshot_end - scan_from) / 8) as u32,
            stack: (*e).sp_vma,
        };
        let (n, truncated, refused) = capture_modules::<LEGACY>(
            &raw mut (*e).modules,
            (*e).regs[REG_IP],
            &raw const (*e).kstack,
            (*e).kstack_len,
            &words,
            mm,
        );
        (*e).modules_len = n;
        if LEGACY {
            exe_module_paths(e, mm);
        }
        if truncated {
            flags |= signal_flags::MODULES_TRUNCATED;
        }
        if refused {
            flags |= signal_flags::MAPPINGS_BUSY;
        }
        (*e).flags = flags;
    }
    entry.submit(0);
}

/// Copies the user stack, page by page, from the page that holds SP.
/// Unreadable pages at the start are skipped (an exhausted stack leaves SP
/// below its mapping); after the first readable page, an unreadable one
/// (the end of the stack, or a page not resident) ends the copy. Returns
/// true when the copy is shorter than asked.
///
/// # Safety
///
/// `e` must point to a writable [`StateEvent`] whose registers are set.
#[inline(always)]
unsafe fn snapshot_stack(e: *mut StateEvent, want_above_sp: u32) -> bool {
    // SAFETY: the caller's contract; copies are bounded by the stack
    // buffer's size, and the helper checks the user source.
    unsafe {
        let sp = (*e).regs[REG_SP];
        let first = sp & !(PAGE - 1);
        let want = (sp - first) + want_above_sp as u64;
        let pages = want.div_ceil(PAGE).min(SNAPSHOT_PAGES as u64) as usize;
        let dst = (&raw mut (*e).snapshot).cast::<u8>();
        let mut copied: usize = 0;
        for i in 0..SNAPSHOT_PAGES {
            if i >= pages || copied >= SNAPSHOT_PAGES {
                break;
            }
            let from = first + i as u64 * PAGE;
            let to = dst.add(copied * PAGE as usize);
            if bpf_probe_read_user(to.cast(), PAGE as u32, from as *const c_void) != 0 {
                if copied == 0 {
                    continue;
                }
                return true;
            }
            if copied == 0 {
                (*e).snapshot_base = from;
            }
            copied += 1;
            (*e).snapshot_len = (copied * PAGE as usize) as u32;
        }
        (copied as u64 * PAGE) < want
    }
}

/// Gives the executable's mappings its path, already walked for `exe`:
/// the fallback capture walks no module paths.
///
/// # Safety
///
/// `e` must point to a writable [`StateEvent`].
#[inline(always)]
unsafe fn exe_module_paths(e: *mut StateEvent, mm: u64) {
    let exe_file: u64 = read(mm, off!(mm_exe_file));
    let inode: u64 = read(exe_file, off!(file_inode));
    let ino: u64 = read(inode, off!(inode_ino));
    // SAFETY: the caller's contract; module indexes are bounded by
    // MODULES_MAX.
    unsafe {
        if ino == 0 || (*e).exe_len == 0 {
            return;
        }
        for j in 0..MODULES_MAX {
            if j as u32 >= (*e).modules_len {
                break;
            }
            let m = &raw mut (*e).modules[j];
            if (*m).ino == ino && (*m).path_len == 0 {
                bpf_probe_read_kernel(
                    (&raw mut (*m).path).cast(),
                    PATH_BUF as u32,
                    (&raw const (*e).exe).cast(),
                );
                (*m).path_len = (*e).exe_len;
            }
        }
    }
}

/// The executable's path and command line: both are gone once the
/// process has exited.
///
/// # Safety
///
/// `e` must point to a writable [`StateEvent`].
#[inline(always)]
unsafe fn capture_process<const LEGACY: bool>(e: *mut StateEvent, mm: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        (*e).exe_len = process::exe_path::<LEGACY>(&raw mut (*e).exe, mm);
        (*e).cmdline_len = process::cmdline(&raw mut (*e).cmdline, mm);
    }
}
