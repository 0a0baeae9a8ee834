//! The goroutine behind a Go fatal path that runs on another stack.
//!
//! The Go runtime does its dying on stacks of its own: a stack overflow is
//! found in `newstack` on the system stack (`g0`), a deadlock in the
//! scheduler after `mcall` left the goroutine, a C crash in a cgo call on
//! `g0` again, and a signal the runtime turns fatal on the signal stack
//! (`gsignal`). The thread's captured stack then ends at the switch, and
//! the frames the user wants (the recursing function, the blocked one, the
//! Go caller of the C function) are on the goroutine's stack.
//!
//! So each Go fatal-path probe that finds itself off the goroutine's stack
//! sends a [`GoStackEvent`]: the goroutine (`g.m.curg`, or the one `mcall`
//! parked), its saved context `g.sched`, its stack bounds and a copy of
//! its stack. The `g` is in R14, where the register ABI (Go 1.17 and
//! later) keeps it in Go code. The offsets that moved between releases come
//! in the attach cookie ([`go_cookie`]); with none, nothing is read.
//!
//! Only a process already on its way to `exit(2)` gets here, a few times
//! at most, so the copy (at most [`GO_STACK_MAX`] bytes) costs nothing a
//! healthy process pays.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_user, generated};
use tracer_common::{GO_STACK_MAX, GoStackEvent, go_cookie, go_stack_flags, kind, loss};

use crate::shared::{EVENTS, LOSSES, count};

/// Copy unit: fixed-size reads keep every verifier happy.
const CHUNK: u64 = 1024;
const CHUNKS: usize = GO_STACK_MAX / CHUNK as usize;

/// A user word, zero when unreadable.
#[inline(always)]
fn word(addr: u64) -> u64 {
    if addr == 0 {
        return 0;
    }
    // SAFETY: the helper checks the user address.
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

/// Sends the goroutine behind the current Go thread, when the probe runs
/// on `g0` or `gsignal`. `g` is the probe's R14, `cookie` its attach
/// cookie.
#[inline(always)]
pub fn send(g: u64, cookie: u64, tgid: u32, tid: u32) {
    let layout = go_cookie::layout(cookie);
    if layout.m_curg == 0 || layout.m_gsignal == 0 || layout.gobuf_bp == 0 || g == 0 {
        return;
    }
    let m = word(g + go_cookie::G_M);
    if m == 0 {
        return;
    }
    let g0 = word(m);
    let curg = word(m + layout.m_curg as u64);
    let (goroutine, mut flags) = if g == curg {
        // On the goroutine's own stack: the captured frames are its own.
        return;
    } else if g == g0 {
        if curg != 0 {
            (curg, go_stack_flags::ON_SYSTEM_STACK)
        } else {
            // `mcall` moved to g0.sched.sp, pushed the goroutine as its
            // function's argument, and the scheduler cleared `m.curg`.
            let sp0 = word(g0 + go_cookie::G_SCHED);
            let parked = if sp0 > 8 { word(sp0 - 8) } else { 0 };
            (
                parked,
                go_stack_flags::ON_SYSTEM_STACK | go_stack_flags::PARKED,
            )
        }
    } else if g == word(m + layout.m_gsignal as u64) {
        (curg, go_stack_flags::ON_SIGNAL_STACK)
    } else {
        return;
    };
    if goroutine == 0 || goroutine == g {
        return;
    }
    let lo = word(goroutine);
    let hi = word(goroutine + 8);
    let sched = goroutine + go_cookie::G_SCHED;
    let sp = word(sched);
    if lo == 0 || hi <= lo {
        return;
    }
    // What mcall's argument slot held is a parked goroutine only if its
    // saved SP is on its own stack (a thread that never ran one has
    // something else there).
    if flags & go_stack_flags::PARKED != 0 && (sp < lo || sp >= hi) {
        return;
    }
    let from = if flags & go_stack_flags::ON_SIGNAL_STACK != 0 || sp < lo || sp >= hi {
        // Where an interrupted goroutine was is in the signal frame, not
        // here: its stack's top holds the frames of any shallow goroutine.
        if hi - lo > GO_STACK_MAX as u64 {
            hi - GO_STACK_MAX as u64
        } else {
            lo
        }
    } else {
        sp
    } & !(CHUNK - 1);
    let Some(mut entry) = EVENTS.reserve::<GoStackEvent>(0) else {
        count(&LOSSES, loss::RINGBUF_STATE);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reservation's memory, writable until submitted;
    // each copy is one fixed-size chunk inside `snapshot`, and the helper
    // checks the user source.
    unsafe {
        (*e).kind = kind::GO_STACK;
        (*e).boot_ns = bpf_ktime_get_boot_ns();
        (*e).tgid = tgid;
        (*e).tid = tid;
        (*e).g = g;
        (*e).goroutine = goroutine;
        (*e).sp = sp;
        (*e).pc = word(sched + 8);
        (*e).bp = word(sched + layout.gobuf_bp as u64);
        (*e).stack_lo = lo;
        (*e).stack_hi = hi;
        (*e).snapshot_base = from;
        let (len, short) = copy(
            (&raw mut (*e).snapshot).cast(),
            &raw mut (*e).snapshot_base,
            hi,
        );
        (*e).snapshot_len = len;
        if short {
            flags |= go_stack_flags::SNAPSHOT_SHORT;
        }
        (*e).system_base = 0;
        (*e).system_len = 0;
        if flags & go_stack_flags::ON_SIGNAL_STACK != 0 {
            // An interrupted cgo call or `systemstack` ran below the point
            // where it switched to g0.
            let top = word(g0 + go_cookie::G_SCHED);
            if top > GO_STACK_MAX as u64 {
                let end = (top + CHUNK - 1) & !(CHUNK - 1);
                (*e).system_base = end - GO_STACK_MAX as u64;
                let (len, _) = copy(
                    (&raw mut (*e).system).cast(),
                    &raw mut (*e).system_base,
                    end,
                );
                (*e).system_len = len;
            }
        }
        (*e).flags = flags;
    }
    entry.submit(0);
}

/// Copies user memory from `*base` up to `end` (at most [`GO_STACK_MAX`]
/// bytes) into `dst` chunk by chunk. Unreadable chunks at the start are
/// skipped, moving `*base` up; after the first readable one, an
/// unreadable one ends the copy. Returns the bytes copied and whether the
/// copy ended early.
///
/// # Safety
///
/// `dst` must point to [`GO_STACK_MAX`] writable bytes, `base` to a
/// writable word.
#[inline(always)]
unsafe fn copy(dst: *mut u8, base: *mut u64, end: u64) -> (u32, bool) {
    // SAFETY: the caller's contract; every copy is one chunk at a chunk
    // index below CHUNKS, and the helper checks the user source.
    unsafe {
        let from = *base;
        let mut copied = 0usize;
        for i in 0..CHUNKS {
            let at = from + i as u64 * CHUNK;
            if at >= end || copied >= CHUNKS {
                break;
            }
            let to = dst.add(copied * CHUNK as usize);
            if generated::bpf_probe_read_user(to.cast(), CHUNK as u32, at as *const c_void) != 0 {
                if copied == 0 {
                    *base = at + CHUNK;
                    continue;
                }
                return ((copied as u64 * CHUNK) as u32, true);
            }
            copied += 1;
        }
        ((copied as u64 * CHUNK) as u32, false)
    }
}
