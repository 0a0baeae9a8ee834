//! From captured thread state to a list of frame addresses.
//!
//! Today the frames come from the kernel's frame-pointer walk, taken from
//! the dying thread's own context. That walk cannot see through code built
//! without frame pointers (Debian's libc among it): it then repeats one
//! address, or stops early. Both are detected and reported, never looped on.

use crate::events::{StateRecord, reg};

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

/// Frames of the captured thread, innermost first.
pub fn unwind(state: &StateRecord) -> Unwound {
    let ip = state.regs.map(|r| r[reg::IP]);
    let mut out = Unwound::default();
    let mut addrs = state.kstack.iter().copied().peekable();
    match (ip, addrs.peek().copied()) {
        (Some(ip), Some(first)) if first == ip => {}
        (Some(ip), _) if ip != 0 => out.frames.push(RawFrame { address: ip, is_return: false }),
        _ => {}
    }
    let mut previous = None;
    for addr in addrs {
        if addr == 0 {
            break;
        }
        if previous == Some(addr) {
            out.truncated = true;
            out.error = Some(format!(
                "the frame-pointer chain loops at {addr:#x}: the code there keeps no frame pointer"
            ));
            break;
        }
        previous = Some(addr);
        let is_return = !out.frames.is_empty();
        out.frames.push(RawFrame { address: addr, is_return });
    }
    if state.kstack.len() >= tracer_common::KSTACK_MAX && !out.truncated {
        out.truncated = true;
        out.error = Some(format!("stack deeper than {} frames", tracer_common::KSTACK_MAX));
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
    fn a_looping_chain_stops_with_a_reason() {
        let u = unwind(&state(0x10, vec![0x10, 0x20, 0x20, 0x20, 0x20]));
        assert_eq!(u.frames.len(), 2);
        assert!(u.truncated);
        assert!(u.error.unwrap().contains("loops at 0x20"));
    }
}
