//! Stepping from a Go frame to its caller with the pclntab's pcsp table.
//!
//! Go binaries have no `.eh_frame`, and `-w` removes `.debug_frame`, but the
//! runtime must unwind every goroutine stack for the garbage collector, so
//! the pclntab says, for every instruction, how far the stack pointer is
//! below the return address. For a frame at `pc` with stack pointer `sp`
//! on amd64 the return address is at `sp + delta` and the caller's stack
//! pointer is `sp + delta + 8`. Unlike the frame-pointer rule this is exact
//! at a function's first instructions, before `BP` is saved, which is
//! where a stack overflow check or a fault in a leaf lands.
//!
//! Some runtime functions end a walk: `runtime.goexit` and the thread entry
//! points are the outermost frames of every goroutine and thread, and the
//! functions that switch stacks (`systemstack`, `mcall`, `asmcgocall`, ...)
//! have a caller on another stack, which the pcsp rule cannot reach; the
//! walk stops there and says so rather than guess. `runtime.sigpanic` is
//! "called" by the signal handler from the faulting instruction, so its
//! return address is that instruction itself, not a call's successor.
//! `runtime.sigtramp` is entered by the kernel, with the signal frame (a
//! return address to the restorer, then the `ucontext`) at its stack
//! pointer; its caller is the interrupted context saved there, which is how
//! a report on a Go program dying in its signal handler (`GOTRACEBACK=crash`
//! raises SIGABRT from there) reaches the code the signal interrupted.

use super::GoBinary;

/// Functions that are the outermost frame of a goroutine or thread.
const OUTERMOST: [&str; 3] = ["runtime.goexit", "runtime.mstart", "runtime.rt0_go"];
/// Functions whose caller is on another stack.
const SWITCHES_STACK: [&str; 5] = [
    "runtime.systemstack",
    "runtime.mcall",
    "runtime.morestack",
    "runtime.asmcgocall",
    "runtime.cgocallback",
];
/// Signal handler entry points: the kernel's signal frame is above them.
const SIGNAL_TRAMPOLINES: [&str; 2] = ["runtime.sigtramp", "runtime.cgoSigtramp"];
/// Offset of `uc_mcontext` in the x86-64 `ucontext` (after `uc_flags`,
/// `uc_link` and `uc_stack`), and of rbp, rsp and rip in it.
const UC_MCONTEXT: u64 = 40;
const MC_RBP: u64 = 80;
const MC_RSP: u64 = 120;
const MC_RIP: u64 = 128;

/// How a Go function behaves for unwinding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Normal,
    /// Nothing calls it: the walk ends here.
    Outermost,
    /// Its caller is on another stack.
    SwitchesStack,
    /// `runtime.sigpanic`: its return address is the faulting instruction.
    SigPanic,
    /// A signal handler's entry: the caller is the interrupted context.
    SignalTrampoline,
}

/// What the pclntab says about unwinding at one pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwindRow {
    pub function: String,
    /// Bytes from the stack pointer up to the return address.
    pub sp_delta: u64,
    pub kind: FrameKind,
}

/// The caller of a Go frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoCaller {
    /// Return address, or for a frame above `runtime.sigpanic`, the
    /// faulting instruction (`exact`).
    pub pc: u64,
    pub sp: u64,
    /// The caller's frame pointer, when this frame had saved it.
    pub bp: Option<u64>,
    /// `pc` is an instruction that was executing, not a return address.
    pub exact: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{function} switches stacks: its caller is on another stack")]
    SwitchesStack { function: String },
    #[error("the return address of {function} at {addr:#x} is outside the captured stack")]
    Memory { function: String, addr: u64 },
    #[error("stack address arithmetic overflows in {function}")]
    Overflow { function: String },
}

fn classify(name: &str) -> FrameKind {
    if OUTERMOST.contains(&name) || name.starts_with("_rt0_") {
        FrameKind::Outermost
    } else if SWITCHES_STACK.contains(&name) {
        FrameKind::SwitchesStack
    } else if SIGNAL_TRAMPOLINES.contains(&name) {
        FrameKind::SignalTrampoline
    } else if name == "runtime.sigpanic" {
        FrameKind::SigPanic
    } else {
        FrameKind::Normal
    }
}

impl GoBinary {
    /// The unwind rule at ELF virtual address `pc`, when a Go function
    /// holds it and its pcsp table covers it.
    pub fn unwind_row(&self, pc: u64) -> Option<UnwindRow> {
        let tab = self.tab();
        let func = self.table.find(tab, pc)?;
        let delta = self.table.sp_delta(tab, &func, pc)?;
        let function = self.table.name(tab, &func).unwrap_or("?").to_owned();
        Some(UnwindRow {
            kind: classify(&function),
            sp_delta: u64::try_from(delta).ok()?,
            function,
        })
    }

    /// Bytes between the stack pointer and the return address at `pc`.
    pub fn sp_delta(&self, pc: u64) -> Option<u64> {
        self.unwind_row(pc).map(|r| r.sp_delta)
    }
}

/// One step from a Go frame whose stack pointer is `sp` to its caller,
/// reading stack words with `read`. `Ok(None)` at the outermost frame.
pub fn step(
    row: &UnwindRow,
    sp: u64,
    read: &mut dyn FnMut(u64) -> Option<u64>,
) -> Result<Option<GoCaller>, StepError> {
    let function = || row.function.clone();
    match row.kind {
        FrameKind::Outermost => return Ok(None),
        FrameKind::SwitchesStack => {
            return Err(StepError::SwitchesStack {
                function: function(),
            });
        }
        FrameKind::Normal | FrameKind::SigPanic | FrameKind::SignalTrampoline => {}
    }
    let overflow = || StepError::Overflow {
        function: function(),
    };
    let ra_at = sp.checked_add(row.sp_delta).ok_or_else(overflow)?;
    let mut load = |addr: u64| {
        read(addr).ok_or_else(|| StepError::Memory {
            function: function(),
            addr,
        })
    };
    if row.kind == FrameKind::SignalTrampoline {
        // The "return address" is the restorer; the ucontext follows it.
        let mcontext = ra_at
            .checked_add(8 + UC_MCONTEXT)
            .filter(|m| m.checked_add(MC_RIP).is_some())
            .ok_or_else(overflow)?;
        return Ok(Some(GoCaller {
            pc: load(mcontext + MC_RIP)?,
            sp: load(mcontext + MC_RSP)?,
            bp: Some(load(mcontext + MC_RBP)?),
            exact: true,
        }));
    }
    let pc = load(ra_at)?;
    // With a frame, the caller's BP is saved just below the return address.
    let bp = if row.sp_delta >= 8 {
        load(ra_at - 8).ok()
    } else {
        None
    };
    Ok(Some(GoCaller {
        pc,
        sp: ra_at.checked_add(8).ok_or_else(overflow)?,
        bp,
        exact: row.kind == FrameKind::SigPanic,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(delta: u64, kind: FrameKind) -> UnwindRow {
        UnwindRow {
            function: "main.f".into(),
            sp_delta: delta,
            kind,
        }
    }

    #[test]
    fn steps_by_the_sp_delta() {
        let mut read = |addr: u64| match addr {
            0x1018 => Some(0x4000_1234),
            0x1010 => Some(0x2000),
            _ => None,
        };
        let caller = step(&row(0x18, FrameKind::Normal), 0x1000, &mut read).unwrap();
        assert_eq!(
            caller,
            Some(GoCaller {
                pc: 0x4000_1234,
                sp: 0x1020,
                bp: Some(0x2000),
                exact: false
            })
        );
        // At entry: the return address is at sp, BP was not saved.
        let mut read = |addr: u64| (addr == 0x1018).then_some(7);
        let caller = step(&row(0, FrameKind::SigPanic), 0x1018, &mut read).unwrap();
        assert_eq!(
            caller.map(|c| (c.pc, c.sp, c.bp, c.exact)),
            Some((7, 0x1020, None, true))
        );
        assert_eq!(
            step(&row(0, FrameKind::Outermost), 0, &mut |_| None),
            Ok(None)
        );
        assert!(matches!(
            step(&row(0, FrameKind::SwitchesStack), 0, &mut |_| None),
            Err(StepError::SwitchesStack { .. })
        ));
        assert!(matches!(
            step(&row(0x10, FrameKind::Normal), 0x1000, &mut |_| None),
            Err(StepError::Memory { addr: 0x1010, .. })
        ));
        assert!(matches!(
            step(&row(u64::MAX, FrameKind::Normal), 8, &mut |_| None),
            Err(StepError::Overflow { .. })
        ));
        // A signal frame: restorer at sp + delta, then the ucontext.
        let uc = 0x2008;
        let mut read = |addr: u64| match addr - uc - UC_MCONTEXT {
            MC_RIP => Some(0x45_0000),
            MC_RSP => Some(0xc000_1000),
            MC_RBP => Some(0xc000_1040),
            _ => None,
        };
        let caller = step(&row(0x0, FrameKind::SignalTrampoline), 0x2000, &mut read).unwrap();
        assert_eq!(
            caller,
            Some(GoCaller {
                pc: 0x45_0000,
                sp: 0xc000_1000,
                bp: Some(0xc000_1040),
                exact: true
            })
        );
        assert_eq!(classify("runtime.sigtramp"), FrameKind::SignalTrampoline);
        assert_eq!(classify("_rt0_amd64_linux"), FrameKind::Outermost);
        assert_eq!(classify("main.main"), FrameKind::Normal);
    }
}
