//! Last words: what a dying process writes to stderr.
//!
//! A Go runtime prints its panic and goroutine trace after `fatalpanic`
//! begins, a C++ runtime its "terminate called" line after `terminate`
//! begins: the probes on those paths arm this capture for the process, and
//! from then on each `write(2, ...)` it makes is copied (bounded per write
//! and per process) into the ring buffer. The report then has the text even
//! when stderr went to `/dev/null` or a closed pipe.
//!
//! Two sources feed it. Go's runtime prints everything fatal through
//! `runtime.gwrite`, probed in each Go executable: a path no healthy
//! process takes, so it costs nothing until it matters. On kernels with
//! function hooks (fentry), `ksys_write` is hooked too, for every program;
//! every write on the host then passes the hook, so its disarmed path is
//! two compares: the file descriptor, and a count of armed processes that
//! is zero almost always.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::{fentry, map},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::FEntryContext,
};
use tracer_common::{
    LAST_WORDS_CHUNK, LAST_WORDS_MAX, LastWordsHeader, LastWordsState, kind, loss,
};

use crate::{EVENTS, LOSSES, count};

/// Processes whose stderr is being kept, by tgid.
#[map]
static LAST_WORDS: LruHashMap<u32, LastWordsState> = LruHashMap::with_max_entries(4096, 0);

/// Element 0: how many processes are armed (may over-count after an LRU
/// eviction, which only costs a lookup per stderr write).
#[map]
static LAST_WORDS_ARMED: Array<u64> = Array::with_max_entries(1, 0);

const HEADER: usize = core::mem::size_of::<LastWordsHeader>();
const RECORD: usize = HEADER + LAST_WORDS_CHUNK;

/// Where a record is assembled before it is copied into the ring buffer
/// at its real length.
#[map]
static SCRATCH: PerCpuArray<[u8; RECORD]> = PerCpuArray::with_max_entries(1, 0);

/// Adds `delta` to the armed count (an atomic add: two CPUs may arm or
/// disarm at once).
#[inline(always)]
fn add_armed(delta: u64) {
    if let Some(slot) = LAST_WORDS_ARMED.get_ptr_mut(0) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, delta) };
    }
}

/// Whether any process is armed.
#[inline(always)]
pub fn armed() -> bool {
    LAST_WORDS_ARMED
        .get_ptr(0)
        .is_some_and(|c| unsafe { core::ptr::read_volatile(c) } != 0)
}

/// Starts keeping `tgid`'s stderr (once).
#[inline(always)]
pub fn arm(tgid: u32) {
    if unsafe { LAST_WORDS.get(tgid) }.is_some() {
        return;
    }
    const BPF_NOEXIST: u64 = 1;
    if LAST_WORDS
        .insert(tgid, LastWordsState::default(), BPF_NOEXIST)
        .is_ok()
    {
        add_armed(1);
    }
}

/// Stops keeping `tgid`'s stderr: its last thread is gone.
#[inline(always)]
pub fn disarm(tgid: u32) {
    if !armed() {
        return;
    }
    if LAST_WORDS.remove(tgid).is_ok() {
        add_armed(u64::MAX);
    }
}

/// Where the kernel offers a function hook (fentry needs ftrace), every
/// `write(2, ...)` of an armed process is kept; kernels without it still
/// get Go's last words through the runtime's own print path (`keep` called
/// from the `runtime.gwrite` probe).
#[fentry(function = "ksys_write")]
pub fn stderr_write(ctx: FEntryContext) -> u32 {
    let fd: u32 = ctx.arg(0);
    if fd != 2 || !armed() {
        return 0;
    }
    keep(bpf_get_current_pid_tgid(), ctx.arg(1), ctx.arg(2));
    0
}

/// Sends `asked` bytes at user address `buf` (bounded) as the last words
/// of the current process, if it is armed.
#[inline(always)]
pub fn keep(pid_tgid: u64, buf: u64, asked: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    let Some(state) = LAST_WORDS.get_ptr_mut(tgid) else {
        return;
    };
    let sent = unsafe { (*state).sent };
    if sent >= LAST_WORDS_MAX || asked == 0 {
        return;
    }
    let room = (LAST_WORDS_MAX - sent) as u64;
    let len = asked.min(room).min(LAST_WORDS_CHUNK as u64) as usize;
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        let record = scratch.cast::<u8>();
        let header = record.cast::<LastWordsHeader>();
        // Masked so the verifier sees the bound; `len` never exceeds it.
        let len = len & (LAST_WORDS_CHUNK * 2 - 1);
        if len == 0 || len > LAST_WORDS_CHUNK {
            return;
        }
        if bpf_probe_read_user(record.add(HEADER).cast(), len as u32, buf as *const c_void) != 0 {
            return;
        }
        *header = LastWordsHeader {
            kind: kind::LAST_WORDS,
            len: len as u32,
            tgid,
            tid: pid_tgid as u32,
            asked,
        };
        (*state).sent = sent + len as u32;
        let total = HEADER + len;
        if total > RECORD {
            return;
        }
        let bytes = core::slice::from_raw_parts(record, total);
        if EVENTS.output::<[u8]>(bytes, 0).is_err() {
            count(&LOSSES, loss::RINGBUF_LAST_WORDS);
        }
    }
}
