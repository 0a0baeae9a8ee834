//! Per-process signal activity: how many of each counted signal a process
//! received in each of the last few seconds, without a record per signal.
//!
//! This runs in `signal_generate` for every counted signal on the host, so
//! it is built to cost a few loads and one increment:
//! - the slot is `ACTIVITY[tgid % ACTIVITY_SLOTS]`, an array element (the
//!   lookup is inlined by the verifier), not a hash lookup; a process whose
//!   tgid maps to a slot another process holds takes it over, and the
//!   eviction is counted;
//! - a bucket is cleared only when its second comes round again (the
//!   coarse clock would be cheaper, but tracing programs may not read it).
//!
//! Userspace reads the slot of a process when it reports its death, and all
//! slots once a second for `watch --signals`.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::Array};
use tracer_common::{ACTIVITY_COLUMNS, ACTIVITY_SLOTS, ACTIVITY_WINDOW, ActivitySlot, loss};

use crate::{
    LOSSES, count,
    kernel::{off, read},
};

#[map]
static ACTIVITY: Array<ActivitySlot> = Array::with_max_entries(ACTIVITY_SLOTS, 0);

/// Counts one signal `column` for `task`, a thread of group `tgid`.
#[inline(always)]
pub fn count_signal(task: u64, tgid: u32, column: usize) {
    let Some(slot) = ACTIVITY.get_ptr_mut(tgid % ACTIVITY_SLOTS) else {
        return;
    };
    let second = (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32;
    let bucket = second as usize % ACTIVITY_WINDOW;
    let column = column & (ACTIVITY_COLUMNS - 1);
    unsafe {
        if (*slot).tgid != tgid {
            if (*slot).tgid != 0 {
                count(&LOSSES, loss::ACTIVITY_EVICTED);
            }
            core::ptr::write_bytes(&raw mut (*slot).seconds, 0, 1);
            (*slot).tgid = tgid;
            (*slot).comm = read(task, off!(task_comm));
        }
        if (*slot).seconds[bucket] != second {
            core::ptr::write_bytes(&raw mut (*slot).counts[bucket], 0, 1);
            (*slot).seconds[bucket] = second;
        }
        // A plain increment: the BPF target has no atomic read-modify-write
        // in Rust, and a lost count needs two CPUs to bump the same counter
        // of the same process within a few nanoseconds.
        (*slot).counts[bucket][column] = (*slot).counts[bucket][column].wrapping_add(1);
    }
}
