//! From captured thread state to a list of frame addresses.
//!
//! The input is what the kernel captured as the thread exited: its user
//! registers and a copy of its stack from the page holding SP. Frames are
//! recovered by walking the frame-pointer chain inside that copy; a chain
//! that does not grow toward the stack's base is cut and reported, so a
//! walk never loops and never reads outside the snapshot. The kernel's own
//! frame-pointer walk is the fallback when no snapshot was taken.

mod fp;

use std::path::PathBuf;

use crate::events::{StateRecord, reg};

/// Turns a captured thread state into frames. Holds per-file caches.
#[derive(Default)]
pub struct Unwinder {}

impl Unwinder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames of the captured thread, innermost first. `files[i]` is a
    /// readable path for `state.mappings[i]`, when one exists.
    pub fn unwind(&mut self, state: &StateRecord, files: &[Option<PathBuf>]) -> Unwound {
        let _ = files;
        if let Some(regs) = state.regs
            && !state.snapshot.is_empty()
        {
            let stack = fp::Stack { base: state.snapshot_base, bytes: &state.snapshot };
            return fp::walk(&regs, &stack);
        }
        unwind(state)
    }
}

/// One frame's address; `is_return` frames are return addresses, whose call
/// site is the instruction before them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub address: u64,
    pub is_return: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    pub frames: Vec<RawFrame>,
    pub truncated: bool,
    pub error: Option<String>,
}

/// Frames from the kernel's frame-pointer walk, innermost first.
pub fn unwind(state: &StateRecord) -> Unwound {
    let ip = state.regs.map(|r| r[reg::IP]);
    let mut out = Unwound::default();
    let mut addrs = state.kstack.iter().copied().peekable();
    match (ip, addrs.peek().copied()) {
        (Some(ip), Some(first)) if first == ip => {}
        (Some(ip), _) if ip != 0 => out.frames.push(RawFrame { address: ip, is_return: false }),
        _ => {}
    }
    for addr in addrs {
        if addr == 0 {
            break;
        }
        let is_return = !out.frames.is_empty();
        out.frames.push(RawFrame { address: addr, is_return });
    }
    if state.kstack.len() >= tracer_common::KSTACK_MAX {
        out.truncated = true;
        out.error = Some(format!(
            "no stack snapshot: frames come from the kernel's frame-pointer walk, which stops at {} frames",
            tracer_common::KSTACK_MAX
        ));
    }
    if out.frames.is_empty() {
        out.error = Some("no user registers or stack were captured".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Task;

    fn state(ip: u64, kstack: Vec<u64>) -> StateRecord {
        let mut regs = [0u64; tracer_common::REGS_LEN];
        regs[reg::IP] = ip;
        StateRecord {
            boot_ns: 0,
            thread: Task { pid: 1, tid: 1, ppid: 0, uid: 0, comm: String::new() },
            regs: Some(regs),
            kstack,
            snapshot_base: 0,
            snapshot: Vec::new(),
            snapshot_short: false,
            exe: None,
            cmdline: Vec::new(),
            sp_region: None,
            mappings: Vec::new(),
            mappings_truncated: false,
        }
    }

    #[test]
    fn first_frame_is_the_ip_and_the_rest_are_returns() {
        let u = unwind(&state(0x10, vec![0x10, 0x20, 0x30]));
        assert_eq!(u.frames.len(), 3);
        assert!(!u.frames[0].is_return);
        assert!(u.frames[1].is_return && u.frames[2].is_return);
        assert!(!u.truncated);
    }

    #[test]
    fn missing_ip_is_prepended() {
        let u = unwind(&state(0x10, vec![0x20, 0x30]));
        assert_eq!(u.frames[0], RawFrame { address: 0x10, is_return: false });
        assert_eq!(u.frames.len(), 3);
    }

    #[test]
    fn recursion_repeats_are_kept_and_depth_is_bounded() {
        let u = unwind(&state(0x10, vec![0x20; tracer_common::KSTACK_MAX]));
        assert_eq!(u.frames.len(), tracer_common::KSTACK_MAX + 1);
        assert!(u.truncated);
        assert!(u.error.unwrap().contains("stops at 64 frames"));
    }
}
