//! Reading kernel structures through offsets resolved at load time.
//!
//! aya's Rust BPF programs have no CO-RE field relocations, so the offsets
//! of every kernel field used here come from the running kernel's BTF: the
//! loader resolves them and writes them into `OFFSETS` (read-only data)
//! before the verifier sees the program. A zero offset is never read.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::KernelOffsets;

#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// One resolved offset; volatile so the compiler cannot fold the zero it
/// sees at build time.
macro_rules! off {
    ($field:ident) => {
        $crate::kernel::resolved(&raw const $crate::kernel::OFFSETS.$field)
    };
}
pub(crate) use off;

#[inline(always)]
pub fn resolved(field: *const u32) -> u64 {
    // SAFETY: `field` points into `OFFSETS`, which is always valid.
    u64::from(unsafe { core::ptr::read_volatile(field) })
}

/// Reads a `T` at `base + offset` in kernel memory; zero when unreadable.
#[inline(always)]
pub fn read<T: Copy + Default>(base: u64, offset: u64) -> T {
    if base == 0 {
        return T::default();
    }
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.unwrap_or_default()
}
