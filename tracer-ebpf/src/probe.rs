//! What the uprobes on dying processes' code paths share (libc's `abort`,
//! Go's and Rust's fatal paths): the evidence record, marking a process
//! dying with its state captured on the spot, and telling Go processes.
//!
//! These sit apart from the probes themselves so that `libc`, `golang` and
//! `rust` each depend on this module and none on another.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::map,
    maps::{HashMap, ring_buf::RingBufEntry},
};
use tracer_common::{Doom, EVIDENCE_TEXT, EvidenceEvent, FileId, kind, loss};

use crate::{
    exec,
    shared::{DOOMED, EVENTS, LOSSES, config, count, watched},
    state,
};

/// Executables whose Go runtime is probed, written by userspace.
#[map]
static GO_EXES: HashMap<FileId, u8> = HashMap::with_max_entries(1024, 0);

/// Whether `task` runs a Go executable crashtrace probed (C code called
/// through cgo calls libc's `abort` in such a process).
#[inline(always)]
pub fn is_go_process(task: u64) -> bool {
    // SAFETY: the map's value is only tested for presence.
    exec::exe_id(task).is_some_and(|id| unsafe { GO_EXES.get(id) }.is_some())
}

/// A reserved, initialized evidence record for a watched process.
pub struct Reserved(pub *mut EvidenceEvent, RingBufEntry<EvidenceEvent>);

/// Reserves an evidence record from `source` for the current process, if
/// it is watched.
#[inline(always)]
pub fn start(source: u32) -> Option<Reserved> {
    let cfg = config()?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the helper takes no arguments.
    let task = unsafe { bpf_get_current_task() };
    if !watched(cfg, task, tgid) {
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<EvidenceEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_EVIDENCE);
        return None;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reservation's memory, writable until it is
    // submitted; every field the reader looks at is set here.
    unsafe {
        (*e).kind = kind::EVIDENCE;
        (*e).source = source;
        (*e).boot_ns = bpf_ktime_get_boot_ns();
        (*e).tgid = tgid;
        (*e).tid = pid_tgid as u32;
        (*e).line = 0;
        (*e)._pad = 0;
        (*e).code = 0;
        for i in 0..3 {
            (*e).texts[i][0] = 0;
        }
    }
    Some(Reserved(e, entry))
}

/// Copies the NUL-terminated user string at `from` into text `index`.
#[inline(always)]
pub fn copy_str(e: &Reserved, index: usize, from: u64) {
    if from == 0 || index >= 3 {
        return;
    }
    // SAFETY: the destination is text `index` of the reservation, and the
    // helper writes at most its size; the source is checked by the helper.
    unsafe {
        bpf_probe_read_user_str(
            (&raw mut (*e.0).texts[index]).cast(),
            EVIDENCE_TEXT as u32,
            from as *const c_void,
        );
    }
}

/// Copies a (pointer, length) user string, Go's or Rust's, not
/// NUL-terminated, into text `index`.
#[inline(always)]
pub fn copy_counted(e: &Reserved, index: usize, ptr: u64, len: u64) {
    if ptr == 0 || len == 0 || index >= 3 {
        return;
    }
    let n = len.min(EVIDENCE_TEXT as u64 - 1) as u32 & (EVIDENCE_TEXT as u32 - 1);
    // SAFETY: `n` < EVIDENCE_TEXT, so the copy and its NUL stay inside
    // text `index` of the reservation; the source is checked by the helper.
    unsafe {
        let dst = (&raw mut (*e.0).texts[index]).cast::<u8>();
        if bpf_probe_read_user(dst.cast(), n, ptr as *const c_void) == 0 {
            *dst.add(n as usize) = 0;
        } else {
            *dst = 0;
        }
    }
}

/// Sends the record.
#[inline(always)]
pub fn finish(e: Reserved) {
    e.1.submit(0);
}

/// Marks the process dying and, the first time, captures the current
/// thread's state here.
#[inline(always)]
pub fn doom_and_capture(
    ctx: *mut c_void,
    snapshot_bytes: u32,
    task: u64,
    tgid: u32,
    tid: u32,
) -> Option<()> {
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    match DOOMED.get_ptr_mut(tgid) {
        // SAFETY: `doom` points to the map's value for `tgid`, valid for
        // this run (an LRU map frees values after an RCU grace period).
        Some(doom) => unsafe {
            if (*doom).captured != 0 {
                return None;
            }
            (*doom).captured = 1;
            (*doom).tid = tid;
            (*doom).provisional = 0;
        },
        None => {
            let doom = Doom {
                boot_ns: now,
                tid,
                captured: 1,
                provisional: 0,
                _pad: 0,
            };
            if DOOMED.insert(tgid, doom, 0).is_err() {
                count(&LOSSES, loss::DOOMED_FULL);
                return None;
            }
        }
    }
    state::capture::<false>(ctx, task, snapshot_bytes);
    Some(())
}
