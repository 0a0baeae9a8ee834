//! The OOM killer: who it chose, how big the victim was, and which memory
//! cgroup limit ran out.
//!
//! The SIGKILL the OOM killer sends is, on its own, indistinguishable from
//! any other kill by the kernel (`SEND_SIG_PRIV`). The `mark_victim`
//! tracepoint fires right after it, once per victim, in the context of the
//! task whose allocation invoked the OOM killer. This program records the
//! victim's memory figures, as the kernel's "Killed process" log line has
//! them, and walks the victim's memory cgroup and its ancestors for one
//! whose usage has reached its limit: the limit that was enforced. (The
//! OOM killer's own context, `oom_control`, is only reachable from fentry
//! programs, which not every kernel can attach.)
//!
//! It only runs when the OOM killer does, so it costs nothing otherwise.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::bpf_probe_read_kernel_str,
    },
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use tracer_common::{OomEvent, PATH_BUF, PATH_COMPONENT_MAX, kind, loss, oom_flags};

use crate::{
    kernel::{off, read},
    shared::{EVENTS, LOSSES, config, count, fill_identity, watched},
};

/// `enum mm_counter`: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES.
const MM_FILEPAGES: u64 = 0;
const MM_ANONPAGES: u64 = 1;
const MM_SWAPENTS: u64 = 2;
const MM_SHMEMPAGES: u64 = 3;
/// Memory cgroup levels examined for the one at its limit.
const MEMCG_DEPTH_MAX: usize = 8;
/// Cgroup levels walked for the path.
const CGROUP_DEPTH_MAX: usize = 12;
/// `PAGE_COUNTER_MAX` with 4 KiB pages: "no limit".
const PAGE_COUNTER_MAX: u64 = i64::MAX as u64 / 4096;
/// Pages below its limit a cgroup may be and still count as at its limit:
/// the failed charge (up to a 64-page batch) is not in the usage, and
/// reclaim may have freed a little before giving up.
const AT_LIMIT_SLACK: u64 = 64;

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(ctx: BtfTracePointContext) -> u32 {
    let victim: u64 = ctx.arg(0);
    let _ = record_victim(victim);
    0
}

/// Threads the kernel itself sent SIGKILL to, by thread id: the OOM
/// killer's victims among them. Kernels whose `mark_victim` passes only
/// the victim's pid (before the task was added to it) find the task here.
#[map]
pub static KERNEL_KILLS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(64, 0);

/// `mark_victim` on kernels where it passes the victim's pid.
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_pid(ctx: BtfTracePointContext) -> u32 {
    let pid: u32 = ctx.arg(0);
    // SAFETY: the value is copied out at once, while the lookup's
    // reference is valid (values are freed after an RCU grace period).
    if let Some(&task) = unsafe { KERNEL_KILLS.get(pid) } {
        let _ = KERNEL_KILLS.remove(pid);
        let _ = record_victim(task);
    }
    0
}

#[inline(always)]
fn record_victim(victim: u64) -> Option<()> {
    let cfg = config()?;
    let tgid: u32 = read(victim, off!(task_tgid));
    if !watched(cfg, victim, tgid) {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<OomEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_OOM);
        return None;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reservation's memory, writable until it is
    // submitted; it is zeroed before anything else is written.
    unsafe {
        core::ptr::write_bytes(e, 0, 1);
        (*e).kind = kind::OOM;
        (*e).boot_ns = bpf_ktime_get_boot_ns();
        fill_identity(&raw mut (*e).victim, victim);
        let pid_tgid = bpf_get_current_pid_tgid();
        (*e).invoker_tid = pid_tgid as u32;
        (*e).invoker_tgid = (pid_tgid >> 32) as u32;
        (*e).invoker_comm = read(bpf_get_current_task(), off!(task_comm));
        let mut flags = 0;
        let signal: u64 = read(victim, off!(task_signal));
        if off!(signal_oom_score_adj) != 0 {
            (*e).oom_score_adj = i32::from(read::<i16>(signal, off!(signal_oom_score_adj)));
        }
        let mm: u64 = read(victim, off!(task_mm));
        if mm != 0 && off!(mm_rss_stat) != 0 && off!(mm_total_vm) != 0 {
            flags |= oom_flags::MM_VALID;
            (*e).total_vm = read(mm, off!(mm_total_vm));
            (*e).rss_file = rss(mm, MM_FILEPAGES);
            (*e).rss_anon = rss(mm, MM_ANONPAGES);
            (*e).swap_entries = rss(mm, MM_SWAPENTS);
            (*e).rss_shmem = rss(mm, MM_SHMEMPAGES);
            if off!(mm_pgtables_bytes) != 0 {
                (*e).pgtables_bytes = read(mm, off!(mm_pgtables_bytes));
            }
        }
        if off!(task_cgroups) != 0 && off!(memcg_memory) != 0 {
            flags |= limited_memcg(e, victim);
        }
        (*e).flags = flags;
    }
    entry.submit(0);
    Some(())
}

/// `percpu_counter_read_positive(&mm->rss_stat[member])`, as the kernel's
/// OOM report reads it.
#[inline(always)]
fn rss(mm: u64, member: u64) -> u64 {
    let counter = mm + off!(mm_rss_stat) + member * off!(percpu_counter_size);
    let value: i64 = read(counter, off!(percpu_counter_count));
    value.max(0) as u64
}

/// Finds the victim's nearest memory cgroup (itself or an ancestor) whose
/// usage has reached its limit and records it; returns the flags to set.
///
/// # Safety
///
/// `e` must point to a writable [`OomEvent`].
#[inline(always)]
unsafe fn limited_memcg(e: *mut OomEvent, victim: u64) -> u32 {
    let cset: u64 = read(victim, off!(task_cgroups));
    let mut css: u64 = read(cset, off!(css_set_subsys) + 8 * off!(memory_cgrp_id));
    for _ in 0..MEMCG_DEPTH_MAX {
        if css == 0 {
            return 0;
        }
        let memcg = css - off!(memcg_css);
        let counter = memcg + off!(memcg_memory);
        let max: u64 = read(counter, off!(page_counter_max));
        let usage: u64 = read(counter, off!(page_counter_usage));
        if max < PAGE_COUNTER_MAX && usage + AT_LIMIT_SLACK >= max {
            let cgroup: u64 = read(css, off!(css_cgroup));
            let kn: u64 = read(cgroup, off!(cgroup_kn));
            // SAFETY: the caller's contract.
            unsafe {
                (*e).memcg_max = max;
                (*e).memcg_usage = usage;
                (*e).cgroup_id = read(kn, off!(kn_id));
                return if cgroup_path(e, kn) {
                    oom_flags::MEMCG | oom_flags::CGROUP_PATH_TRUNCATED
                } else {
                    oom_flags::MEMCG
                };
            }
        }
        css = read(css, off!(css_parent));
    }
    0
}

/// Writes the kernfs names from `kn` up to (not including) the hierarchy's
/// root, innermost first, each NUL-terminated. Returns true when it stopped
/// before reaching the root.
///
/// # Safety
///
/// `e` must point to a writable [`OomEvent`].
#[inline(always)]
unsafe fn cgroup_path(e: *mut OomEvent, mut kn: u64) -> bool {
    let mut len: usize = 0;
    for _ in 0..CGROUP_DEPTH_MAX {
        let parent: u64 = read(kn, off!(kn_parent));
        if parent == 0 {
            // SAFETY: the caller's contract.
            unsafe { (*e).cgroup_path_len = len as u32 };
            return false;
        }
        if len >= PATH_BUF - PATH_COMPONENT_MAX {
            break;
        }
        let name: u64 = read(kn, off!(kn_name));
        // SAFETY: the caller's contract, and the bound below.
        let copied = unsafe {
            // `len` is below `PATH_BUF - PATH_COMPONENT_MAX` here, so the
            // compiler would drop this mask; older verifiers (6.1) lose that
            // bound across the loop and need to see it, hence the opaque value.
            let at = core::hint::black_box(len) & (PATH_COMPONENT_MAX - 1);
            let dst = (&raw mut (*e).cgroup_path).cast::<u8>().add(at);
            bpf_probe_read_kernel_str(dst.cast(), PATH_COMPONENT_MAX as u32, name as *const _)
        };
        if copied <= 0 {
            break;
        }
        len += copied as usize;
        kn = parent;
    }
    // SAFETY: the caller's contract.
    unsafe { (*e).cgroup_path_len = len as u32 };
    true
}
