//! The C++ exception a process dies of, found at `abort()`.
//!
//! An uncaught exception ends in `std::terminate`, whose default handler
//! prints the type and `what()` and calls `abort()`. By then the exception
//! is still alive on the heap, and pointers to it are in the registers and
//! on the stack of the frames between `__cxa_throw` and `abort`. The Itanium
//! C++ ABI that GCC and Clang follow puts an `_Unwind_Exception` header
//! right before the thrown object, starting with the exception class
//! `"GNUCC++\0"`; libstdc++'s `__cxa_exception` record before that starts
//! 80 bytes earlier with the `std::type_info *`. The abort probe looks for
//! that magic behind each pointer-like register and stack word near SP:
//! a process that never aborts never pays for the search.
//!
//! The first field after the vtable pointer is the message only when the
//! class's `what()` is a standard one that returns it. That is for userspace
//! to decide, from the function in the `what()` slot of the object's vtable
//! (slot 2, after the complete and deleting destructors, for a class whose
//! primary base is `std::exception`). The slot is only read from a vtable
//! that proves to be the thrown type's own: its RTTI word (just before the
//! address point) is the exception's `type_info` and its offset-to-top is
//! zero. The first word of a type without virtual functions would have to
//! point just past a copy of that `type_info` pointer to pass.

use core::ffi::c_void;

use aya_ebpf::{bindings::pt_regs, helpers::generated::bpf_probe_read_user};

/// `_Unwind_Exception.exception_class` of a primary GCC C++ exception: the
/// characters as a big-endian number, as the ABI builds it.
const GNU_CXX: u64 = u64::from_be_bytes(*b"GNUCC++\0");
/// From the `_Unwind_Exception` header back to `exceptionType`.
const HEADER_TO_TYPE: u64 = 80;
/// From the header to the thrown object.
const HEADER_TO_OBJECT: u64 = 32;
/// Stack words searched above SP.
const STACK_WORDS: u64 = 192;
/// From a vtable's address point to its `what()` slot (slot 2).
const VTABLE_TO_WHAT: u64 = 16;
/// From a vtable's address point back to its RTTI word and offset-to-top.
const VTABLE_TO_RTTI: u64 = 8;
const VTABLE_TO_OFFSET_TO_TOP: u64 = 16;

/// Where an exception's type name, its candidate message and its `what()`
/// are.
pub struct Exception {
    /// `type_info::__name`: the mangled type name without `_Z`.
    pub type_name: u64,
    /// The first field after the vtable pointer: the message of a standard
    /// exception (userspace only trusts it for those types, or when
    /// `what` is a standard `what()` that returns it).
    pub message: u64,
    /// The function in the `what()` slot of the object's vtable, when the
    /// object has a vtable of its thrown type; else 0.
    pub what: u64,
}

#[inline(always)]
fn read_user(addr: u64) -> Option<u64> {
    let mut out: u64 = 0;
    // SAFETY: the destination is `out`, 8 bytes; the helper checks the
    // source.
    let rc = unsafe { bpf_probe_read_user((&raw mut out).cast(), 8, addr as *const c_void) };
    (rc == 0).then_some(out)
}

/// The `_Unwind_Exception` header `word` points at or just after.
#[inline(always)]
fn header_behind(word: u64) -> Option<u64> {
    if word < 0x10000 || word & 7 != 0 || word > 0x7fff_ffff_f000 {
        return None;
    }
    if read_user(word) == Some(GNU_CXX) {
        return Some(word);
    }
    let header = word - HEADER_TO_OBJECT;
    (read_user(header) == Some(GNU_CXX)).then_some(header)
}

/// Searches the registers at `regs` and the stack above SP.
#[inline(always)]
pub fn find(regs: *const pt_regs) -> Option<Exception> {
    // SAFETY: `regs` is the uprobe's own saved user registers.
    let (candidates, sp) = unsafe {
        (
            [
                (*regs).rbx,
                (*regs).rbp,
                (*regs).r12,
                (*regs).r13,
                (*regs).r14,
                (*regs).r15,
            ],
            (*regs).rsp,
        )
    };
    let mut header = None;
    for word in candidates {
        header = header_behind(word);
        if header.is_some() {
            break;
        }
    }
    if header.is_none() {
        for i in 0..STACK_WORDS {
            let Some(word) = read_user(sp + i * 8) else {
                break;
            };
            header = header_behind(word);
            if header.is_some() {
                break;
            }
        }
    }
    let header = header?;
    let type_info = read_user(header - HEADER_TO_TYPE)?;
    let type_name = read_user(type_info + 8)?;
    let object = header + HEADER_TO_OBJECT;
    let message = read_user(object + 8).unwrap_or(0);
    Some(Exception {
        type_name,
        message,
        what: what_slot(object, type_info).unwrap_or(0),
    })
}

/// The `what()` slot of the vtable of `object`, a thrown `type_info`.
#[inline(always)]
fn what_slot(object: u64, type_info: u64) -> Option<u64> {
    let vtable = read_user(object)?;
    if vtable < 0x10000 || vtable & 7 != 0 || vtable > 0x7fff_ffff_f000 {
        return None;
    }
    if read_user(vtable - VTABLE_TO_RTTI)? != type_info
        || read_user(vtable - VTABLE_TO_OFFSET_TO_TOP)? != 0
    {
        return None;
    }
    read_user(vtable + VTABLE_TO_WHAT)
}
