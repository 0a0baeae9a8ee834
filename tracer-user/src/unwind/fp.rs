//! The stack snapshot and the frame-pointer rule.
//!
//! Every memory read an unwinder makes goes through [`Stack`], which only
//! answers from the bytes the kernel copied: the process is dead, and even if
//! it were not, its memory is not ours to read. A read that misses says
//! whether the stack simply goes on past the copy (a deep stack, nothing
//! wrong) or the address is nowhere near it (a corrupt frame).
//!
//! The frame-pointer rule is what code without unwind tables (JIT output,
//! hand-written assembly, stripped `.eh_frame`) leaves to go on: `[rbp]` is
//! the caller's `rbp` and `[rbp + 8]` the return address.

use crate::events::Region;

/// How far past the snapshot's end a read still counts as "the stack goes
/// on" when the stack mapping's bounds are unknown.
const SLACK: u64 = 1 << 20;

/// A copy of part of a thread's stack: `bytes[0]` was at address `base`.
pub struct Stack<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
    /// The mapping that held SP, when the kernel found it.
    pub region: Option<Region>,
    /// Copies of other stacks the thread's frames lead to (a Go
    /// goroutine's, or the system stack, behind the signal stack):
    /// `(base, bytes)`.
    pub extra: &'a [(u64, &'a [u8])],
}

/// Why a read from the snapshot failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("the stack continues beyond the {len}-byte snapshot (read at {addr:#x})")]
    BeyondSnapshot { addr: u64, len: usize },
    #[error("address {addr:#x} is outside the captured stack")]
    Outside { addr: u64 },
}

impl Stack<'_> {
    /// The 8 bytes at `addr`, if the snapshot holds all of them.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        self.read_sized(addr, 8)
    }

    /// `size` (at most 8) little-endian bytes at `addr`, zero-extended.
    pub fn read_sized(&self, addr: u64, size: u8) -> Option<u64> {
        let size = usize::from(size);
        if size == 0 || size > 8 {
            return None;
        }
        let bytes = within(addr, size, self.base, self.bytes).or_else(|| {
            self.extra
                .iter()
                .find_map(|&(base, bytes)| within(addr, size, base, bytes))
        })?;
        let mut word = [0u8; 8];
        word[..size].copy_from_slice(bytes);
        Some(u64::from_le_bytes(word))
    }

    /// Like [`Stack::read_u64`], explaining a miss.
    pub fn load(&self, addr: u64) -> Result<u64, MemoryError> {
        self.read_u64(addr).ok_or_else(|| self.miss(addr))
    }

    /// Why `addr` cannot be read.
    pub fn miss(&self, addr: u64) -> MemoryError {
        let end = self.end();
        let limit = match self.region {
            Some(r) if r.end > end => r.end,
            _ => end.saturating_add(SLACK),
        };
        if addr >= end.saturating_sub(7) && addr < limit {
            MemoryError::BeyondSnapshot {
                addr,
                len: self.bytes.len(),
            }
        } else {
            MemoryError::Outside { addr }
        }
    }

    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.bytes.len() as u64)
    }

    /// Whether `addr` lies in the snapshot.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }
}

/// The `size` bytes at `addr` of a copy made from `base`, if it holds them.
fn within(addr: u64, size: usize, base: u64, bytes: &[u8]) -> Option<&[u8]> {
    let offset = usize::try_from(addr.checked_sub(base)?).ok()?;
    bytes.get(offset..offset.checked_add(size)?)
}

/// What the frame-pointer rule recovers for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpStep {
    pub cfa: u64,
    pub ra: u64,
    pub bp: u64,
}

/// Why the frame-pointer rule does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FpError {
    #[error("rbp is 0")]
    Zero,
    #[error("rbp is unknown")]
    Unknown,
    #[error("rbp ({bp:#x}) does not point up the stack from sp ({sp:#x})")]
    NotAboveSp { bp: u64, sp: u64 },
    #[error("rbp ({bp:#x}) is not inside the captured stack")]
    NotInSnapshot { bp: u64 },
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// Applies the frame-pointer rule: CFA = rbp + 16, the return address at
/// CFA - 8 and the caller's rbp at CFA - 16. `rbp` must point into the
/// snapshot above `sp`, so the rule never moves down the stack.
pub fn step(bp: u64, sp: u64, stack: &Stack<'_>) -> Result<FpStep, FpError> {
    if bp == 0 {
        return Err(FpError::Zero);
    }
    if bp < sp {
        return Err(FpError::NotAboveSp { bp, sp });
    }
    if !stack.contains(bp) {
        return Err(FpError::NotInSnapshot { bp });
    }
    let cfa = bp.checked_add(16).ok_or(FpError::NotInSnapshot { bp })?;
    let next_bp = stack.load(bp)?;
    let ra = stack.load(bp + 8)?;
    Ok(FpStep {
        cfa,
        ra,
        bp: next_bp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack_with(words: &[(u64, u64)], base: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        for &(addr, value) in words {
            let o = (addr - base) as usize;
            bytes[o..o + 8].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn follows_one_link() {
        let base = 0x7000;
        let bytes = stack_with(&[(0x7010, 0x7040), (0x7018, 0xaaa)], base, 0x100);
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let s = step(0x7010, 0x7008, &stack).unwrap();
        assert_eq!(
            s,
            FpStep {
                cfa: 0x7020,
                ra: 0xaaa,
                bp: 0x7040
            }
        );
    }

    #[test]
    fn refuses_links_below_sp_or_outside() {
        let bytes = vec![0u8; 64];
        let stack = Stack {
            base: 0x7000,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        assert_eq!(
            step(0x7000, 0x7008, &stack),
            Err(FpError::NotAboveSp {
                bp: 0x7000,
                sp: 0x7008
            })
        );
        assert_eq!(
            step(0xdead_beef_0000, 0x7008, &stack),
            Err(FpError::NotInSnapshot {
                bp: 0xdead_beef_0000
            })
        );
        assert_eq!(step(0, 0x7008, &stack), Err(FpError::Zero));
        // rbp in the last word: the return address is past the end.
        assert!(matches!(
            step(0x7038, 0x7008, &stack),
            Err(FpError::Memory(MemoryError::BeyondSnapshot {
                addr: 0x7040,
                len: 64
            }))
        ));
    }

    #[test]
    fn reads_sized_and_explains_misses() {
        let bytes: Vec<u8> = (0u8..16).collect();
        let region = Region {
            start: 0x6000,
            end: 0x9000,
            vm_flags: 0,
            has_file: false,
        };
        let stack = Stack {
            base: 0x7000,
            bytes: &bytes,
            region: Some(region),
            extra: &[],
        };
        assert_eq!(stack.read_sized(0x7001, 2), Some(0x0201));
        assert_eq!(stack.read_sized(0x700f, 2), None);
        assert_eq!(stack.read_sized(0x7000, 9), None);
        assert_eq!(stack.read_u64(u64::MAX), None);
        assert!(matches!(
            stack.miss(0x8000),
            MemoryError::BeyondSnapshot { .. }
        ));
        assert!(matches!(stack.miss(0x9000), MemoryError::Outside { .. }));
        assert!(matches!(stack.miss(0x10), MemoryError::Outside { .. }));
    }
}
