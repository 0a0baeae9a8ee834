//! A process's executable path and command line, read from its `mm`.
//! Both vanish with the process, so they are copied while it exists.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use tracer_common::{CMDLINE_MAX, PATH_BUF};

use crate::{
    kernel::{off, read},
    path::walk_path,
};

/// Writes the path of `mm->exe_file` into `dst`; returns the bytes used.
///
/// # Safety
///
/// `dst` must point to a writable path buffer (inside a reservation).
#[inline(always)]
pub unsafe fn exe_path<const LEGACY: bool>(dst: *mut [u8; PATH_BUF], mm: u64) -> u32 {
    let exe_file: u64 = read(mm, off!(mm_exe_file));
    if exe_file == 0 {
        return 0;
    }
    // SAFETY: the caller's contract; `walk_path` writes within PATH_BUF.
    unsafe { walk_path::<LEGACY>(dst.cast(), exe_file).0 }
}

/// Copies the NUL-separated arguments into `dst`; returns the bytes used.
/// `mm` must be the current task's (its memory is read in place).
///
/// # Safety
///
/// `dst` must point to a writable command-line buffer.
#[inline(always)]
pub unsafe fn cmdline(dst: *mut [u8; CMDLINE_MAX], mm: u64) -> u32 {
    let start: u64 = read(mm, off!(mm_arg_start));
    let end: u64 = read(mm, off!(mm_arg_end));
    if end <= start {
        return 0;
    }
    let len = (end - start).min(CMDLINE_MAX as u64) as u32;
    let dst = dst.cast::<c_void>();
    // SAFETY: the caller's contract; `len` is at most CMDLINE_MAX, and the
    // helper checks the user source.
    unsafe {
        if len == CMDLINE_MAX as u32 {
            if bpf_probe_read_user(dst, CMDLINE_MAX as u32, start as *const c_void) == 0 {
                return len;
            }
        } else if bpf_probe_read_user(dst, len & (CMDLINE_MAX as u32 - 1), start as *const c_void)
            == 0
        {
            return len & (CMDLINE_MAX as u32 - 1);
        }
    }
    0
}
