//! Last words: what a dying process writes to stderr.
//!
//! Two moments matter. Before a process is known to be dying, a hook on
//! `write(2)` keeps only the end of its latest few stderr writes (its
//! *tail*, a fixed slot per process): a C program that prints "giving up:
//! config missing" and then calls `abort()` said everything before the
//! abort. Once a probe on a death path dooms the process, the tail is sent
//! and the process is *armed*: from then on each stderr write it makes is
//! copied (bounded per write and per process) into the ring buffer, such as
//! a Go runtime's panic and goroutine trace, or a Rust panic's message.
//!
//! The hooks on `write(2)`:
//! - Go's runtime prints everything fatal through `runtime.gwrite`, and
//!   Rust's standard library its panic message through its raw stderr
//!   writer; both are probed in each executable of that language, on paths
//!   a healthy process does not take. Where no `write(2)` hook keeps
//!   tails, `gwrite` keeps the Go runtime's tail: the line it prints just
//!   before a fatal error is the one that explains it.
//! - `ksys_write` with fentry, where the kernel has function hooks: every
//!   write on the host passes it, and its cost for anything but fd 2 is one
//!   compare.
//! - The `syscalls:sys_enter_write` tracepoint, on request, where fentry is
//!   missing: any syscall tracepoint sends every system call on the host
//!   through the kernel's slower tracing entry path, which is why it is
//!   not the default.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::{fentry, map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{FEntryContext, TracePointContext},
};
use tracer_common::{
    LAST_WORDS_CHUNK, LAST_WORDS_MAX, LastWordsHeader, LastWordsState, STDERR_TAIL_BYTES,
    STDERR_TAIL_SLOTS, config_flags, kind, last_words_flags, loss,
};

use crate::shared::{EVENTS, LOSSES, config, count, watched};

/// The latest stderr writes of a process not (yet) known to be dying.
/// Small writes that follow each other share a slot while it has room:
/// a runtime printing a line piece by piece (Go's `print`) still leaves
/// the whole line.
#[repr(C)]
pub struct StderrTail {
    /// Bytes the writes of each slot asked for.
    asked: [u64; STDERR_TAIL_SLOTS],
    /// Bytes kept in each slot (the end of its last write, or whole writes).
    lens: [u32; STDERR_TAIL_SLOTS],
    /// Slots started; the next goes to slot `writes % STDERR_TAIL_SLOTS`.
    writes: u32,
    _pad: u32,
    data: [[u8; STDERR_TAIL_BYTES]; STDERR_TAIL_SLOTS],
    /// Room the verifier can see for an append at a variable offset into
    /// the last slot (an append never reaches it: it is checked to fit).
    _spill: [u8; STDERR_TAIL_BYTES],
}

/// Stderr tails by tgid. Sized by the loader: one entry when no hook
/// keeps tails. Removed when the process exits, so a reused pid never
/// inherits another process's words.
#[map]
static STDERR_TAILS: LruHashMap<u32, StderrTail> = LruHashMap::with_max_entries(4096, 0);

/// An all-zero [`StderrTail`], the value a new entry starts from.
#[map]
static EMPTY_TAIL: Array<StderrTail> = Array::with_max_entries(1, 0);

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
        // SAFETY: `slot` is the map's only element, valid for the run; the
        // add is atomic, as other CPUs update it too.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, delta) };
    }
}

/// Whether any process is armed.
#[inline(always)]
pub fn armed() -> bool {
    LAST_WORDS_ARMED
        .get_ptr(0)
        // SAFETY: `c` is the map's only element, valid for the run.
        .is_some_and(|c| unsafe { core::ptr::read_volatile(c) } != 0)
}

/// Starts keeping `tgid`'s stderr (once).
#[inline(always)]
pub fn arm(tgid: u32) {
    // SAFETY: the map's value is only tested for presence.
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

/// `write(fd, buf, count)`, where the kernel offers function hooks.
#[fentry(function = "ksys_write")]
pub fn stderr_write(ctx: FEntryContext) -> u32 {
    let fd: u32 = ctx.arg(0);
    if fd == 2 {
        on_stderr_write(ctx.arg(1), ctx.arg(2));
    }
    0
}

/// `write(fd, buf, count)` at system call entry, on request.
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    // Offsets from the event's format: fd at 16, buf at 24, count at 32.
    // SAFETY (the three reads): the helper checks the context address, and
    // the offsets are inside the event.
    let fd: u64 = unsafe { ctx.read_at(16) }.unwrap_or(u64::MAX);
    if fd == 2 {
        let buf: u64 = unsafe { ctx.read_at(24) }.unwrap_or(0);
        let asked: u64 = unsafe { ctx.read_at(32) }.unwrap_or(0);
        on_stderr_write(buf, asked);
    }
    0
}

#[inline(always)]
fn on_stderr_write(buf: u64, asked: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the reference is used within this run, while the value is
    // valid (values are freed after an RCU grace period).
    if armed()
        && let Some(state) = unsafe { LAST_WORDS.get(tgid) }
    {
        // A runtime's print path already keeps these bytes on their way
        // to this write.
        if state.from_runtime == 0 {
            keep(pid_tgid, buf, asked);
        }
        return;
    }
    let Some(cfg) = config() else { return };
    if cfg.flags & config_flags::STDERR_TAILS == 0
        || asked == 0
        // SAFETY: the helper takes no arguments.
        || !watched(cfg, unsafe { bpf_get_current_task() }, tgid)
    {
        return;
    }
    remember(tgid, buf, asked);
}

/// Keeps the end of one stderr write in `tgid`'s tail.
#[inline(always)]
fn remember(tgid: u32, buf: u64, asked: u64) {
    let tail = match STDERR_TAILS.get_ptr_mut(tgid) {
        Some(t) => t,
        None => {
            let Some(empty) = EMPTY_TAIL.get(0) else {
                return;
            };
            if STDERR_TAILS.insert(tgid, empty, 0).is_err() {
                return;
            }
            let Some(t) = STDERR_TAILS.get_ptr_mut(tgid) else {
                return;
            };
            t
        }
    };
    // SAFETY: `tail` is the map's value for `tgid`, valid for this run;
    // `slot`, `at` and `len` are bounded (masked) within its arrays (an
    // append's end within `_spill`), and the helper checks the user source.
    unsafe {
        // Appended to the latest slot when whole writes fit there.
        let writes = (*tail).writes;
        if writes > 0 && asked < STDERR_TAIL_BYTES as u64 {
            let last = (writes.wrapping_sub(1) as usize) % STDERR_TAIL_SLOTS;
            let used = (*tail).lens[last];
            if (*tail).asked[last] == used as u64 && used as u64 + asked <= STDERR_TAIL_BYTES as u64
            {
                let at = (used as usize) & (STDERR_TAIL_BYTES - 1);
                let dst = (&raw mut (*tail).data[last]).cast::<u8>().add(at);
                // Bounded right at the call, from a fresh load: the 6.1
                // verifier loses the bounds of a value the compiler spilled
                // to the stack and reloaded for the call.
                let len =
                    (core::ptr::read_volatile(&asked) as u32) & (STDERR_TAIL_BYTES as u32 - 1);
                if len == 0 || bpf_probe_read_user(dst.cast(), len, buf as *const c_void) != 0 {
                    return;
                }
                (*tail).lens[last] = used + asked as u32;
                (*tail).asked[last] += asked;
                return;
            }
        }
        let slot = (writes as usize) % STDERR_TAIL_SLOTS;
        let len = asked.min(STDERR_TAIL_BYTES as u64) as u32;
        // Masked so the verifier sees the bound; `len` never exceeds it.
        let len = len & (STDERR_TAIL_BYTES as u32 * 2 - 1);
        if len == 0 || len > STDERR_TAIL_BYTES as u32 {
            return;
        }
        let from = buf.wrapping_add(asked - len as u64);
        let dst = (&raw mut (*tail).data[slot]).cast::<c_void>();
        if bpf_probe_read_user(dst, len, from as *const c_void) != 0 {
            return;
        }
        (*tail).lens[slot] = len;
        (*tail).asked[slot] = asked;
        (*tail).writes = writes.wrapping_add(1);
    }
}

/// Forgets `tgid`'s tail: it exited.
#[inline(always)]
pub fn forget_tail(tgid: u32) {
    let _ = STDERR_TAILS.remove(tgid);
}

/// The process is dying: sends what its tail holds, oldest write first,
/// then keeps what it writes from now on.
#[inline(always)]
pub fn doom(tgid: u32, tid: u32) {
    send_tail(tgid, tid);
    arm(tgid);
}

/// A new death of a process that lived through an earlier one (a caught
/// Rust panic): what it writes now is kept within a fresh budget.
#[inline(always)]
pub fn doom_afresh(tgid: u32, tid: u32) {
    send_tail(tgid, tid);
    match LAST_WORDS.get_ptr_mut(tgid) {
        // SAFETY: the map's value for `tgid`, valid for this run.
        Some(state) => unsafe { (*state).sent = 0 },
        None => arm(tgid),
    }
}

/// Sends what `tgid`'s tail holds, oldest write first, and forgets it.
#[inline(always)]
pub fn send_tail(tgid: u32, tid: u32) {
    let Some(tail) = STDERR_TAILS.get_ptr(tgid) else {
        return;
    };
    // SAFETY: the map's value for `tgid`, valid for this run.
    let writes = unsafe { (*tail).writes };
    let held = writes.min(STDERR_TAIL_SLOTS as u32);
    for i in 0..STDERR_TAIL_SLOTS as u32 {
        if i >= held {
            break;
        }
        let slot = (writes.wrapping_sub(held).wrapping_add(i) as usize) % STDERR_TAIL_SLOTS;
        // SAFETY: as above; `slot` is within the tail's slots.
        unsafe {
            let data = (&raw const (*tail).data[slot]).cast::<u8>();
            send(
                tgid,
                tid,
                data as u64,
                (*tail).lens[slot] as usize,
                (*tail).asked[slot],
                last_words_flags::FROM_TAIL,
                false,
            );
        }
    }
    let _ = STDERR_TAILS.remove(tgid);
}

/// Sends what a runtime's own print path (Go's `gwrite`, Rust's stderr
/// writer) is about to write, and marks the process so that the
/// `write(2)` hook does not keep the same bytes again. Before the process
/// is known to be dying, the bytes go to its tail instead, where no
/// `write(2)` hook keeps tails (`config_flags::RUNTIME_TAILS`).
#[inline(always)]
pub fn keep_from_runtime(pid_tgid: u64, buf: u64, asked: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    match LAST_WORDS.get_ptr_mut(tgid) {
        // SAFETY: the map's value for `tgid`, valid for this run.
        Some(state) => unsafe { (*state).from_runtime = 1 },
        None => {
            // Not dying yet: the runtime may be explaining what comes next
            // ("goroutine stack exceeds ... limit" before "fatal error:
            // stack overflow"). Where no write hook keeps tails, this one
            // does.
            if asked != 0
                && let Some(cfg) = config()
                && cfg.flags & config_flags::RUNTIME_TAILS != 0
            {
                remember(tgid, buf, asked);
            }
            return;
        }
    }
    keep(pid_tgid, buf, asked);
}

/// Sends `asked` bytes at user address `buf` (bounded) as the last words
/// of the current process, if it is armed.
#[inline(always)]
pub fn keep(pid_tgid: u64, buf: u64, asked: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    let Some(state) = LAST_WORDS.get_ptr_mut(tgid) else {
        return;
    };
    // SAFETY: the map's value for `tgid`, valid for this run.
    let sent = unsafe { (*state).sent };
    if sent >= LAST_WORDS_MAX || asked == 0 {
        return;
    }
    let room = (LAST_WORDS_MAX - sent) as u64;
    let len = asked.min(room).min(LAST_WORDS_CHUNK as u64) as usize;
    if send(tgid, pid_tgid as u32, buf, len, asked, 0, true) {
        // SAFETY: as above.
        unsafe { (*state).sent = sent + len as u32 };
    }
}

/// Sends `len` bytes at `from` (user memory when `user`, else a map
/// value) as one last-words record. False when nothing was sent.
#[inline(always)]
fn send(tgid: u32, tid: u32, from: u64, len: usize, asked: u64, flags: u32, user: bool) -> bool {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `scratch` is this CPU's element of SCRATCH, RECORD bytes,
    // valid for the run; `len` is masked and checked so that header and
    // text stay inside it, and the helpers check the source.
    unsafe {
        let record = scratch.cast::<u8>();
        let header = record.cast::<LastWordsHeader>();
        // Masked so the verifier sees the bound; `len` never exceeds it.
        let len = len & (LAST_WORDS_CHUNK * 2 - 1);
        if len == 0 || len > LAST_WORDS_CHUNK {
            return false;
        }
        let dst = record.add(HEADER).cast();
        let rc = if user {
            bpf_probe_read_user(dst, len as u32, from as *const c_void)
        } else {
            bpf_probe_read_kernel(dst, len as u32, from as *const c_void)
        };
        if rc != 0 {
            return false;
        }
        *header = LastWordsHeader {
            kind: kind::LAST_WORDS,
            len: len as u32,
            tgid,
            tid,
            asked,
            flags,
            _pad: 0,
        };
        let total = HEADER + len;
        if total > RECORD {
            return false;
        }
        let bytes = core::slice::from_raw_parts(record, total);
        if EVENTS.output::<[u8]>(bytes, 0).is_err() {
            count(&LOSSES, loss::RINGBUF_LAST_WORDS);
            return false;
        }
    }
    true
}
