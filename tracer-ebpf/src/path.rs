//! A file's path, walked from its dentry up to the root of the task's
//! mount tree, across mount points: what names a mapped file or an
//! executable once the process that had it open is gone.
//!
//! Where the kernel has `bpf_loop` the walk is stepped by it, one
//! component or mount crossing per step, so that the verifier checks one
//! step instead of every combination; the `LEGACY` mode (5.10 to 5.16)
//! runs the same step in a bounded `for` loop.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str},
    macros::map,
    maps::PerCpuArray,
};
use tracer_common::{PATH_BUF, PATH_COMPONENT_MAX, PATH_DEPTH_MAX};

use crate::kernel::{off, read};

/// State of one path walk, stepped by `bpf_loop` so that the verifier
/// checks one step instead of every combination of mount crossings.
#[repr(C)]
pub struct PathScratch {
    dentry: u64,
    mount: u64,
    len: u64,
    /// 0 walking, 1 reached the root, 2 gave up.
    state: u64,
    buf: [u8; PATH_BUF],
}

#[map]
static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

/// Writes the file's path components into `buf` (`PATH_BUF` bytes), file
/// name first, each NUL-terminated, crossing mount points up to the root of
/// the task's mount tree. Returns the bytes used and whether the walk reached
/// the root.
///
/// # Safety
///
/// `buf` must be writable for `PATH_BUF` bytes.
#[inline(always)]
pub unsafe fn walk_path<const LEGACY: bool>(buf: *mut u8, file: u64) -> (u32, bool) {
    let Some(w) = PATH_SCRATCH.get_ptr_mut(0) else {
        return (0, false);
    };
    // SAFETY: `w` is this CPU's element of PATH_SCRATCH, valid for the
    // run; the caller's contract for `buf`, whose offsets are masked.
    unsafe {
        let path = file + off!(file_path);
        (*w).dentry = read(path, off!(path_dentry));
        (*w).mount = read::<u64>(path, off!(path_mnt)) - off!(mount_mnt);
        (*w).len = 0;
        (*w).state = 0;
        if LEGACY {
            for _ in 0..PATH_DEPTH_MAX {
                if path_step_at(w) != 0 {
                    break;
                }
            }
        } else {
            bpf_loop(
                PATH_DEPTH_MAX,
                path_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
        bpf_probe_read_kernel(buf.cast(), PATH_BUF as u32, (&raw const (*w).buf).cast());
        (((*w).len as u32).min(PATH_BUF as u32), (*w).state == 1)
    }
}

/// One step of [`walk_path`]: one component, or one mount crossing.
extern "C" fn path_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(w) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: the per-CPU scratch, which only this program uses.
    unsafe { path_step_at(w) }
}

/// One step of a path walk; non-zero ends it.
///
/// # Safety
///
/// `w` must be this CPU's element of `PATH_SCRATCH`.
#[inline(always)]
unsafe fn path_step_at(w: *mut PathScratch) -> i64 {
    // SAFETY: the caller's contract; offsets into the path buffer are
    // masked into its bounds.
    unsafe {
        let dentry = (*w).dentry;
        let mount = (*w).mount;
        let mnt_root: u64 = read(mount + off!(mount_mnt), off!(vfsmount_root));
        if dentry == mnt_root {
            let parent: u64 = read(mount, off!(mount_parent));
            if parent == mount || parent == 0 {
                (*w).state = 1;
                return 1;
            }
            (*w).dentry = read(mount, off!(mount_mountpoint));
            (*w).mount = parent;
            return 0;
        }
        let parent: u64 = read(dentry, off!(dentry_parent));
        if parent == dentry || parent == 0 {
            (*w).state = 1;
            return 1;
        }
        let name: u64 = read(dentry + off!(dentry_name), off!(qstr_name));
        let len = (*w).len;
        if len >= PATH_COMPONENT_MAX as u64 {
            (*w).state = 2;
            return 1;
        }
        let dst = (&raw mut (*w).buf)
            .cast::<u8>()
            .add((len & (PATH_COMPONENT_MAX as u64 - 1)) as usize);
        let copied =
            bpf_probe_read_kernel_str(dst.cast(), PATH_COMPONENT_MAX as u32, name as *const _);
        if copied <= 0 {
            (*w).state = 2;
            return 1;
        }
        (*w).len = len + copied as u64;
        (*w).dentry = parent;
    }
    0
}
