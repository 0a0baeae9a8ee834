//! Per-process signal activity: how many of each counted signal a process
//! received in each of the last few seconds, without a record per signal.
//!
//! This runs in `signal_generate` for every counted signal on the host, so
//! it is built to cost a few loads and one increment:
//! - the slot is `ACTIVITY[tgid % ACTIVITY_SLOTS]`, an array element (the
//!   lookup is inlined by the verifier), not a hash lookup; a process has
//!   two candidate slots, and only when both are held by processes active
//!   in the window is one evicted (and the eviction counted);
//! - the second comes from the configuration, where userspace keeps it
//!   current (a clock read per signal cost more than the rest together),
//!   and a bucket is cleared only when its second comes round again;
//! - the target's tgid is loaded straight from its BTF-typed `task_struct`
//!   pointer, not through a probe-read helper call.
//!
//! Userspace reads the slot of a process when it reports its death, and all
//! slots once a second for `watch --signals`.

use aya_ebpf::{macros::map, maps::Array};
use tracer_common::{
    ACTIVITY_COLUMNS, ACTIVITY_SLOTS, ACTIVITY_WINDOW, ActivitySlot, alternate_slot, loss,
};

use crate::{
    kernel::{off, read},
    shared::{LOSSES, count},
};

#[map]
static ACTIVITY: Array<ActivitySlot> = Array::with_max_entries(ACTIVITY_SLOTS, 0);

/// Counts one signal `column` in `second` for `task`, a thread of group
/// `tgid`.
#[inline(always)]
pub fn count_signal(task: u64, tgid: u32, column: usize, second: u32) {
    let home = tgid % ACTIVITY_SLOTS;
    let Some(mut slot) = ACTIVITY.get_ptr_mut(home) else {
        return;
    };
    let bucket = second as usize % ACTIVITY_WINDOW;
    let column = column & (ACTIVITY_COLUMNS - 1);
    // SAFETY: `slot` (and what `claim` returns) is an element of ACTIVITY,
    // valid for the program's run; `bucket` and `column` are masked into
    // the arrays' bounds. Another CPU may write the same slot meanwhile:
    // that can lose a count, never touch memory outside the element.
    unsafe {
        if (*slot).tgid != tgid {
            match claim(task, tgid, slot, second) {
                Some(s) => slot = s,
                None => return,
            }
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

/// The slow path, once per process (and on collisions): `tgid` may live in
/// its home slot or in its alternate one, [`alternate_slot`]. It takes a
/// free slot, else one whose owner had no signal in the window, else
/// evicts the owner that has been quiet longest (and counts the eviction),
/// so two busy processes whose tgids collide both keep their counts.
///
/// # Safety
///
/// `home` must be an element of `ACTIVITY`.
#[inline(always)]
unsafe fn claim(
    task: u64,
    tgid: u32,
    home: *mut ActivitySlot,
    second: u32,
) -> Option<*mut ActivitySlot> {
    let other = ACTIVITY.get_ptr_mut(alternate_slot(tgid))?;
    // SAFETY: `home` (the caller's contract) and `other` are elements of
    // ACTIVITY, valid for the program's run.
    unsafe {
        if (*other).tgid == tgid {
            return Some(other);
        }
        let home_last = last_second(home);
        let other_last = last_second(other);
        let window = ACTIVITY_WINDOW as u32;
        let slot = if (*home).tgid == 0 || second.wrapping_sub(home_last) >= window {
            home
        } else if (*other).tgid == 0 || second.wrapping_sub(other_last) >= window {
            other
        } else {
            count(&LOSSES, loss::ACTIVITY_EVICTED);
            if home_last <= other_last { home } else { other }
        };
        core::ptr::write_bytes(&raw mut (*slot).seconds, 0, 1);
        (*slot).tgid = tgid;
        (*slot).comm = read(task, off!(task_comm));
        Some(slot)
    }
}

/// The latest second a slot counted a signal in.
///
/// # Safety
///
/// `slot` must be an element of `ACTIVITY`.
#[inline(always)]
unsafe fn last_second(slot: *const ActivitySlot) -> u32 {
    let mut last = 0;
    for i in 0..ACTIVITY_WINDOW {
        // SAFETY: the caller's contract; `i` is within the window.
        let s = unsafe { (*slot).seconds[i] };
        if s > last {
            last = s;
        }
    }
    last
}
