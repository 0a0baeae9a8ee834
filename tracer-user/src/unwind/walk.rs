//! The unwinding loop: frame after frame until the stack ends or cannot be
//! followed any further, and why.
//!
//! Each frame's code address is looked up in the CFI of the file mapped
//! there, or for Go code in the Go runtime's pcsp table (see [`Lookup`]);
//! code without either falls back to the frame-pointer rule. The loop is
//! deliberately distrustful: the stack pointer must move
//! up with every ordinary frame, a frame seen twice ends the walk, and the
//! walk is capped, so a corrupt or hostile stack cannot make it loop.
//! Whether it ended naturally (the outermost frame says so) or was cut short
//! is recorded, with the reason, in the result.

use std::collections::HashSet;

use crate::support::golang;

use super::{
    RawFrame, Unwound,
    cfi::Row,
    fp::{self, FpError, Stack},
    step::{self, Caller, Regs, dwarf},
};

/// Most frames produced by one walk.
pub const MAX_FRAMES: usize = 256;

/// What is known about unwinding through one code address.
#[derive(Debug)]
pub enum Lookup {
    Row(Row),
    /// Go code: the pcsp rule of the function there.
    Go(golang::UnwindRow),
    /// The address is code, but no CFI describes it; why.
    NoCfi(String),
    /// No captured mapping holds the address; `list_full` when the kernel
    /// had more mappings to report than it had room for, `lock_busy` when
    /// some lookup was refused because the process's mmap lock was busy.
    NoMapping {
        list_full: bool,
        lock_busy: bool,
    },
    /// The mapping holding the address is not executable.
    NotCode,
}

/// Walks the stack of a thread whose registers are `regs`. `find` describes
/// the code at an address; it is given the address to look up, which is the
/// call instruction's (return address - 1) for return addresses.
pub fn walk(
    regs: &[u64; tracer_common::REGS_LEN],
    stack: &Stack<'_>,
    find: &mut dyn FnMut(u64) -> Lookup,
) -> Unwound {
    let mut regs = Regs::from_pt_regs(regs);
    let mut out = Unwound::default();
    let ip = regs.get(dwarf::RA).unwrap_or(0);
    out.frames.push(RawFrame {
        address: ip,
        is_return: false,
    });
    // The first frame and a frame interrupted by a signal are at the
    // faulting instruction itself; the others are after a call.
    let mut exact = true;
    let mut seen = HashSet::new();
    let stop = |out: &mut Unwound, reason: String| {
        out.truncated = true;
        out.error = Some(reason);
    };
    loop {
        if out.frames.len() >= MAX_FRAMES {
            stop(&mut out, format!("more than {MAX_FRAMES} frames"));
            return out;
        }
        let (Some(pc), Some(sp)) = (regs.get(dwarf::RA), regs.get(dwarf::RSP)) else {
            stop(&mut out, "the stack pointer of a frame is unknown".into());
            return out;
        };
        if !seen.insert((pc, sp)) {
            stop(
                &mut out,
                format!("unwinding loops at {pc:#x} with sp {sp:#x}"),
            );
            return out;
        }
        let first = out.frames.len() == 1;
        let probe = if exact { pc } else { pc.saturating_sub(1) };
        let mut switched = false;
        let outcome = match find(probe) {
            Lookup::Row(row) => {
                // A signal trampoline is entered by the kernel, not called:
                // its address is not a return address.
                if row.signal
                    && let Some(frame) = out.frames.last_mut()
                {
                    frame.is_return = false;
                }
                step::apply(&row, &regs, stack)
                    .map(|caller| (caller, row.signal))
                    .map_err(|e| format!("cannot unwind {pc:#x}: {e}"))
            }
            // Above runtime.sigpanic and runtime.sigtramp the caller is at
            // an interrupted instruction, as above a signal frame.
            Lookup::Go(row) => go_step(&row, &regs, stack).map_err(|e| {
                switched = matches!(e, golang::StepError::SwitchesStack { .. });
                format!("cannot unwind {pc:#x}: {e}")
            }),
            Lookup::NoCfi(reason) => match fp_step(&regs, stack) {
                Ok(caller) => Ok((caller, false)),
                // A zero rbp ends the frame-pointer chain, except at the
                // crash site, where it only means rbp is not one.
                Err(FpError::Zero) if !first => Ok((Caller::None, false)),
                Err(FpError::Memory(e)) => Err(e.to_string()),
                Err(e) => Err(format!(
                    "no unwind information for {pc:#x} ({reason}), and no frame pointer to follow ({e})"
                )),
            },
            lookup @ (Lookup::NoMapping { .. } | Lookup::NotCode) => {
                // A call through a wild pointer jumps to non-code with
                // the return address on top of the stack.
                match first.then(|| bad_call(&regs, stack, find)).flatten() {
                    Some(caller) => Ok((caller, false)),
                    None => Err(match lookup {
                        Lookup::NoMapping {
                            lock_busy: true, ..
                        } => format!(
                            "no mapping captured for {pc:#x} (the process's mmap lock stayed busy: another thread was changing its mappings)"
                        ),
                        Lookup::NoMapping {
                            list_full: true, ..
                        } => format!(
                            "no mapping captured for {pc:#x} (the kernel's list of mappings was full)"
                        ),
                        Lookup::NoMapping { .. } => format!("no mapping captured for {pc:#x}"),
                        _ => format!("{pc:#x} is not in an executable mapping"),
                    }),
                }
            }
        };
        let (next, signal) = match outcome {
            Ok((Caller::Frame(next), signal)) => (next, signal),
            Ok((Caller::None, _)) => return out,
            Err(reason) => {
                stop(&mut out, reason);
                out.switched_stacks = switched;
                return out;
            }
        };
        let (Some(ra), Some(next_sp)) = (next.get(dwarf::RA), next.get(dwarf::RSP)) else {
            stop(
                &mut out,
                format!("cannot unwind {pc:#x}: the caller's registers are unknown"),
            );
            return out;
        };
        if ra == 0 {
            return out;
        }
        // A signal frame may switch stacks (sigaltstack); any other frame
        // must move up the stack.
        if !signal && next_sp <= sp {
            stop(
                &mut out,
                format!(
                    "the stack pointer does not move up the stack at {pc:#x} (sp {sp:#x}, next {next_sp:#x})"
                ),
            );
            return out;
        }
        out.frames.push(RawFrame {
            address: ra,
            is_return: !signal,
        });
        exact = signal;
        regs = next;
    }
}

/// One Go frame up: the return address is `sp + delta`. Go keeps no
/// registers across calls but its frame pointer, so the caller's other
/// registers are unknown.
fn go_step(
    row: &golang::UnwindRow,
    regs: &Regs,
    stack: &Stack<'_>,
) -> Result<(Caller, bool), golang::StepError> {
    let sp = regs.get(dwarf::RSP).unwrap_or(u64::MAX);
    let Some(caller) = golang::step(row, sp, &mut |addr| stack.read_u64(addr))? else {
        return Ok((Caller::None, false));
    };
    let mut next = Regs::default();
    next.set(dwarf::RSP, Some(caller.sp));
    next.set(dwarf::RA, Some(caller.pc));
    next.set(dwarf::RBP, caller.bp.or_else(|| regs.get(dwarf::RBP)));
    Ok((Caller::Frame(next), caller.exact))
}

fn fp_step(regs: &Regs, stack: &Stack<'_>) -> Result<Caller, FpError> {
    let bp = regs.get(dwarf::RBP).ok_or(FpError::Unknown)?;
    let sp = regs.get(dwarf::RSP).unwrap_or(u64::MAX);
    let s = fp::step(bp, sp, stack)?;
    let mut next = *regs;
    for register in 0..=dwarf::RA {
        if !step::CALLEE_SAVED.contains(&register) {
            next.set(register, None);
        }
    }
    next.set(dwarf::RBP, Some(s.bp));
    next.set(dwarf::RSP, Some(s.cfa));
    next.set(dwarf::RA, Some(s.ra));
    Ok(Caller::Frame(next))
}

/// The caller of a frame that jumped to non-code: the return address is at
/// `[rsp]`. Only taken when that address is known code.
fn bad_call(regs: &Regs, stack: &Stack<'_>, find: &mut dyn FnMut(u64) -> Lookup) -> Option<Caller> {
    let sp = regs.get(dwarf::RSP)?;
    let ra = stack.read_u64(sp)?;
    if !matches!(
        find(ra.checked_sub(1)?),
        Lookup::Row(_) | Lookup::Go(_) | Lookup::NoCfi(_)
    ) {
        return None;
    }
    let mut next = *regs;
    next.set(dwarf::RSP, Some(sp.checked_add(8)?));
    next.set(dwarf::RA, Some(ra));
    Some(Caller::Frame(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::reg;

    fn pt_regs(ip: u64, sp: u64, bp: u64) -> [u64; tracer_common::REGS_LEN] {
        let mut r = [0; tracer_common::REGS_LEN];
        r[reg::IP] = ip;
        r[reg::SP] = sp;
        r[reg::BP] = bp;
        r
    }

    fn stack_with(words: &[(u64, u64)], base: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        for &(addr, value) in words {
            let o = (addr - base) as usize;
            bytes[o..o + 8].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// Code everywhere in [0x1000, 0x10000), without CFI.
    fn no_cfi(addr: u64) -> Lookup {
        if (0x1000..0x10000).contains(&addr) {
            Lookup::NoCfi("test".into())
        } else {
            Lookup::NoMapping {
                list_full: false,
                lock_busy: false,
            }
        }
    }

    fn addrs(u: &Unwound) -> Vec<u64> {
        u.frames.iter().map(|f| f.address).collect()
    }

    #[test]
    fn frame_pointer_chain_ends_naturally_at_zero() {
        let base = 0x7000;
        let bytes = stack_with(
            &[
                (0x7010, 0x7040),
                (0x7018, 0x2aaa),
                (0x7040, 0),
                (0x7048, 0x3bbb),
            ],
            base,
            0x100,
        );
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let u = walk(&pt_regs(0x1234, 0x7008, 0x7010), &stack, &mut no_cfi);
        assert_eq!(addrs(&u), vec![0x1234, 0x2aaa, 0x3bbb]);
        assert!(u.frames[1].is_return && !u.frames[0].is_return);
        assert_eq!((u.truncated, u.error), (false, None));
    }

    #[test]
    fn a_self_loop_is_cut() {
        let base = 0x7000;
        let bytes = stack_with(&[(0x7010, 0x7010), (0x7018, 0x2aaa)], base, 0x100);
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let u = walk(&pt_regs(0x1234, 0x7008, 0x7010), &stack, &mut no_cfi);
        assert_eq!(addrs(&u), vec![0x1234, 0x2aaa]);
        assert!(u.truncated && u.error.is_some());
    }

    #[test]
    fn missing_mappings_and_wild_calls() {
        let base = 0x7000;
        let bytes = stack_with(
            &[(0x7008, 0x2aaa), (0x7010, 0x7040), (0x7018, 0x3bbb)],
            base,
            0x100,
        );
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        // A jump to 0: the caller is recovered from [rsp], then rbp.
        let u = walk(&pt_regs(0, 0x7008, 0x7010), &stack, &mut no_cfi);
        assert_eq!(addrs(&u), vec![0, 0x2aaa, 0x3bbb]);
        // A return address nobody captured a mapping for.
        let bytes = stack_with(&[(0x7010, 0x7040), (0x7018, 0x20_0000)], base, 0x100);
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let u = walk(&pt_regs(0x1234, 0x7008, 0x7010), &stack, &mut no_cfi);
        assert_eq!(addrs(&u), vec![0x1234, 0x20_0000]);
        assert_eq!(u.error.as_deref(), Some("no mapping captured for 0x200000"));
        assert!(u.truncated);
    }

    #[test]
    fn go_frames_step_by_their_sp_delta() {
        use golang::{FrameKind, UnwindRow};
        let row = |delta, kind| {
            Lookup::Go(UnwindRow {
                function: "main.f".into(),
                sp_delta: delta,
                kind,
            })
        };
        // 0x1234 has a 16-byte frame and calls nothing (it faulted); its
        // caller is runtime.sigpanic at entry, which "returns" to the
        // faulting 0x3456, whose caller is runtime.goexit.
        let mut find = |addr: u64| match addr {
            0x1234 => row(16, FrameKind::Normal),
            0x2344 => row(0, FrameKind::SigPanic),
            0x3456 => row(8, FrameKind::Normal),
            0x4566 => row(0, FrameKind::Outermost),
            _ => Lookup::NoMapping {
                list_full: false,
                lock_busy: false,
            },
        };
        let base = 0x7000;
        let bytes = stack_with(
            &[
                (0x7010, 0x7f00),
                (0x7018, 0x2345),
                (0x7020, 0x3456),
                (0x7030, 0x4567),
            ],
            base,
            0x100,
        );
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let u = walk(&pt_regs(0x1234, 0x7008, 0x1), &stack, &mut find);
        assert_eq!(addrs(&u), vec![0x1234, 0x2345, 0x3456, 0x4567]);
        let returns: Vec<bool> = u.frames.iter().map(|f| f.is_return).collect();
        assert_eq!(returns, [false, true, false, true], "above sigpanic: exact");
        assert_eq!((u.truncated, u.error), (false, None));
        // A return address outside the snapshot stops the walk, saying why.
        let u = walk(&pt_regs(0x1234, 0x70f8, 0x1), &stack, &mut find);
        assert!(u.truncated);
        assert!(u.error.unwrap().contains("outside the captured stack"));
    }

    #[test]
    fn deep_stacks_are_capped() {
        // Each frame's rbp points 16 bytes up: an endless valid-looking chain.
        let base = 0x10000;
        let words: Vec<(u64, u64)> = (0..400u64)
            .flat_map(|i| {
                [
                    (base + i * 16, base + i * 16 + 16),
                    (base + i * 16 + 8, 0x2000),
                ]
            })
            .collect();
        let bytes = stack_with(&words, base, 400 * 16 + 16);
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let u = walk(&pt_regs(0x1234, base, base), &stack, &mut no_cfi);
        assert_eq!(u.frames.len(), MAX_FRAMES);
        assert!(u.truncated);
    }
}
