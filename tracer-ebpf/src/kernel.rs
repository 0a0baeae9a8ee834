//! Reading kernel structures through offsets resolved at load time.
//!
//! aya's Rust BPF programs have no CO-RE field relocations, so the offsets
//! of every kernel field used here come from the running kernel's BTF: the
//! loader resolves them and writes them into `OFFSETS` (read-only data)
//! before the verifier sees the program. A zero offset is never read.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::KernelOffsets;

#[unsafe(no_mangle)]
// SAFETY: `KernelOffsets` is plain integers, for which zero is valid.
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

/// Loads a field of a BTF-typed kernel object a program was given (a
/// tracepoint's `task_struct *`, a pointer field of one) directly: the
/// verifier checks `offset` against the type and the JIT turns a fault
/// into a zero, so this costs a load instead of a helper call.
///
/// # Safety
///
/// `object` must be a pointer the verifier knows by its BTF type, and
/// `offset` one of [`OFFSETS`] (or a constant made from them) that lies
/// inside that type: anything else is refused at load time.
#[inline(always)]
pub unsafe fn field<T: Copy>(object: *mut c_void, offset: u64) -> T {
    // SAFETY: the caller's contract; the load is volatile so that the
    // compiler keeps it the single load the verifier checks.
    unsafe { core::ptr::read_volatile(object.cast::<u8>().add(offset as usize).cast::<T>()) }
}

/// Reads a `T` at `base + offset` in kernel memory; zero when unreadable.
#[inline(always)]
pub fn read<T: Copy + Default>(base: u64, offset: u64) -> T {
    if base == 0 {
        return T::default();
    }
    // SAFETY: the helper checks the address; an unreadable one is an error,
    // read as zero.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.unwrap_or_default()
}

/// `value`, hidden from the optimizer: a bounds check applied to the result
/// is then emitted as written, where the verifier needs it, instead of
/// being folded into an earlier check on another register.
#[inline(always)]
pub fn opaque<T: Copy>(value: T) -> T {
    // SAFETY: `value` is a live local, read once.
    unsafe { core::ptr::read_volatile(&value) }
}
