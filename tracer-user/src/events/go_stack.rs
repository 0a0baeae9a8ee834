//! The goroutine behind a Go thread that died off its own stack (see the
//! BPF crate's `gostack`): its saved context and a copy of its stack, so
//! that unwinding can go on where the runtime switched stacks.

use tracer_common::{GO_STACK_MAX, GoStackEvent, go_stack_flags};

/// A [`GoStackEvent`], checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoStackRecord {
    pub pid: u32,
    pub tid: u32,
    /// The probe ran on the signal stack: the goroutine was interrupted,
    /// and `sp`/`pc`/`bp` are its last switch, valid only in a cgo call.
    pub on_signal_stack: bool,
    /// No goroutine was current: this is the one `mcall` parked.
    pub parked: bool,
    /// The goroutine's `g`.
    pub goroutine: u64,
    /// Its saved context, `g.sched`.
    pub sp: u64,
    pub pc: u64,
    pub bp: u64,
    /// Its stack's bounds, `g.stack`.
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub snapshot_base: u64,
    pub snapshot: Vec<u8>,
    /// The copy ended at an unreadable page.
    pub snapshot_short: bool,
    /// On the signal stack: a copy of the system stack below where the
    /// thread last switched to it.
    pub system_base: u64,
    pub system: Vec<u8>,
}

pub(super) fn decode(raw: &GoStackEvent) -> GoStackRecord {
    let len = (raw.snapshot_len as usize).min(GO_STACK_MAX);
    GoStackRecord {
        pid: raw.tgid,
        tid: raw.tid,
        on_signal_stack: raw.flags & go_stack_flags::ON_SIGNAL_STACK != 0,
        parked: raw.flags & go_stack_flags::PARKED != 0,
        goroutine: raw.goroutine,
        sp: raw.sp,
        pc: raw.pc,
        bp: raw.bp,
        stack_lo: raw.stack_lo,
        stack_hi: raw.stack_hi,
        snapshot_base: raw.snapshot_base,
        snapshot: raw.snapshot[..len].to_vec(),
        snapshot_short: raw.flags & go_stack_flags::SNAPSHOT_SHORT != 0,
        system_base: raw.system_base,
        system: raw.system[..(raw.system_len as usize).min(GO_STACK_MAX)].to_vec(),
    }
}
