//! Frame-pointer walking over a stack snapshot.

use super::{RawFrame, Unwound};
use crate::events::reg;

/// Most frames produced by one walk.
pub const MAX_FRAMES: usize = 256;

/// A copy of part of a thread's stack: `bytes[0]` was at address `base`.
pub struct Stack<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl Stack<'_> {
    /// The 8 bytes at `addr`, if the snapshot holds all of them.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let offset = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = offset.checked_add(8)?;
        let bytes = self.bytes.get(offset..end)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    pub fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }
}

/// Follows `rbp` links: `[rbp]` is the caller's `rbp`, `[rbp + 8]` the
/// return address. Stops when a link leaves the snapshot or does not move
/// toward the stack's base.
pub fn walk(regs: &[u64; tracer_common::REGS_LEN], stack: &Stack<'_>) -> Unwound {
    let mut out = Unwound::default();
    let ip = regs[reg::IP];
    if ip == 0 {
        out.error = Some("the instruction pointer is 0".into());
        return out;
    }
    out.frames.push(RawFrame { address: ip, is_return: false });
    let mut bp = regs[reg::BP];
    let mut previous_bp = regs[reg::SP].saturating_sub(1);
    while out.frames.len() < MAX_FRAMES {
        if bp == 0 {
            return out; // the outermost frame clears rbp
        }
        if bp <= previous_bp {
            out.truncated = true;
            out.error = Some(format!(
                "frame pointer {bp:#x} does not point up the stack: the code keeps no frame pointer"
            ));
            return out;
        }
        let (Some(next_bp), Some(ret)) = (stack.read_u64(bp), stack.read_u64(bp + 8)) else {
            out.truncated = true;
            out.error = Some(if bp >= stack.base && bp < stack.end() + 4096 {
                format!("the stack continues beyond the {}-byte snapshot", stack.bytes.len())
            } else {
                format!("frame pointer {bp:#x} is outside the captured stack")
            });
            return out;
        };
        if ret == 0 {
            return out;
        }
        out.frames.push(RawFrame { address: ret, is_return: true });
        previous_bp = bp;
        bp = next_bp;
    }
    out.truncated = true;
    out.error = Some(format!("more than {MAX_FRAMES} frames"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(ip: u64, sp: u64, bp: u64) -> [u64; tracer_common::REGS_LEN] {
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

    #[test]
    fn follows_a_chain_to_its_end() {
        let base = 0x7000;
        let bytes = stack_with(&[(0x7010, 0x7040), (0x7018, 0xaaa), (0x7040, 0), (0x7048, 0xbbb)], base, 0x100);
        let u = walk(&regs(0x1234, 0x7008, 0x7010), &Stack { base, bytes: &bytes });
        let addrs: Vec<u64> = u.frames.iter().map(|f| f.address).collect();
        assert_eq!(addrs, vec![0x1234, 0xaaa, 0xbbb]);
        assert!(!u.truncated, "{:?}", u.error);
    }

    #[test]
    fn a_self_loop_is_cut() {
        let base = 0x7000;
        let bytes = stack_with(&[(0x7010, 0x7010), (0x7018, 0xaaa)], base, 0x100);
        let u = walk(&regs(0x1234, 0x7008, 0x7010), &Stack { base, bytes: &bytes });
        assert_eq!(u.frames.len(), 2);
        assert!(u.truncated);
    }

    #[test]
    fn garbage_frame_pointer_stops_cleanly() {
        let bytes = vec![0u8; 64];
        let u = walk(&regs(0x1234, 0x7008, 0xdead_beef_0000), &Stack { base: 0x7000, bytes: &bytes });
        assert_eq!(u.frames.len(), 1);
        assert!(u.error.unwrap().contains("outside the captured stack"));
    }
}
