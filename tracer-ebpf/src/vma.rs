//! Mappings: which file backs an address, captured while the process
//! still exists so that symbolization survives its exit.
//!
//! `bpf_find_vma` is the way in where the kernel has it (5.17 and later);
//! it takes the mmap lock with a trylock and, when IRQs are off, defers the
//! unlock, after which further calls in the same program fail. So mappings
//! are looked up from the exiting thread's own context (IRQs on), not from
//! `signal_generate`.
//!
//! Every function here takes a `LEGACY` mode for kernels without
//! `bpf_find_vma` and `bpf_loop` (5.10 to 5.16). There the VMA red-black
//! tree is descended with plain reads (a torn read while another thread
//! changes the mappings at worst loses one), and loops are bounded `for`
//! loops, which the verifier walks iteration by iteration. Looking up
//! every stack word is beyond its budget that way, so the exiting thread's
//! executable mappings are taken from the VMA list instead (the IP's
//! first, then the others in address order, [`MODULES_MAX`] at most), with
//! their device and inode but no path (userspace finds them by inode).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{
        bpf_find_vma, bpf_get_current_task_btf, bpf_loop, bpf_probe_read_kernel,
        bpf_probe_read_user,
    },
    macros::map,
    maps::PerCpuArray,
};
use tracer_common::{
    KSTACK_MAX, MODULES_MAX, Module, STACK_SNAPSHOT_MAX, VmaSummary, loss, module_flags,
};

use crate::{
    kernel::{off, read},
    path::walk_path,
    shared::{LOSSES, count},
};

/// What the `bpf_find_vma` callback copies out of the VMA.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VmaOut {
    start: u64,
    end: u64,
    pgoff: u64,
    file: u64,
    flags: u64,
}

extern "C" fn vma_callback(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    let out = ctx as *mut VmaOut;
    // SAFETY: `ctx` is the `VmaOut` on `find_vma`'s stack.
    unsafe { *out = vma_out(vma as u64) };
    0
}

#[inline(always)]
fn vma_out(vma: u64) -> VmaOut {
    VmaOut {
        start: read(vma, off!(vma_start)),
        end: read(vma, off!(vma_end)),
        pgoff: read(vma, off!(vma_pgoff)),
        file: read(vma, off!(vma_file)),
        flags: read(vma, off!(vma_flags)),
    }
}

/// Deepest red-black tree descent: a tree of 65,536 mappings is at most
/// 32 levels deep.
const RB_DEPTH_MAX: usize = 32;
const EOPNOTSUPP: i64 = 95;

/// `find_vma` by hand, for kernels without the helper: descends `mm`'s
/// VMA red-black tree to the mapping that contains `addr`.
#[inline(always)]
fn find_vma_rb(mm: u64, addr: u64) -> Result<VmaOut, i64> {
    if off!(rb_right) == 0 || mm == 0 {
        return Err(-EOPNOTSUPP);
    }
    // `rb_root` holds only its root node pointer.
    let mut node: u64 = read(mm, off!(mm_rb));
    for _ in 0..RB_DEPTH_MAX {
        if node == 0 {
            break;
        }
        let vma = node - off!(vma_rb);
        if read::<u64>(vma, off!(vma_end)) > addr {
            if read::<u64>(vma, off!(vma_start)) <= addr {
                return Ok(vma_out(vma));
            }
            node = read(node, off!(rb_left));
        } else {
            node = read(node, off!(rb_right));
        }
    }
    Err(-ENOENT)
}

/// The mapping of `addr` in the current task (`mm` is its memory map).
///
/// # Safety
///
/// Must run in a program where `bpf_find_vma` may be called (not under
/// `signal_generate`'s lock more than once per run, see the module docs).
#[inline(always)]
unsafe fn lookup<const LEGACY: bool>(mm: u64, addr: u64) -> Result<VmaOut, i64> {
    if LEGACY {
        find_vma_rb(mm, addr)
    } else {
        // SAFETY: the current task, as the helper wants it.
        unsafe { find_vma(bpf_get_current_task_btf().cast(), addr) }
    }
}

const VM_EXEC: u64 = 0x4;

/// The mapping of `addr` in `task`, through `bpf_find_vma`.
///
/// # Safety
///
/// `task` must be a BTF-typed `task_struct *` (the verifier refuses
/// anything else), with the caveat of [`lookup`].
#[inline(always)]
pub unsafe fn find_vma(task: *mut c_void, addr: u64) -> Result<VmaOut, i64> {
    let mut out = VmaOut {
        start: 0,
        end: 0,
        pgoff: 0,
        file: 0,
        flags: 0,
    };
    // SAFETY: the callback writes only the `VmaOut` passed as its context,
    // `out`, which outlives the call; the caller's contract for `task`.
    let rc = unsafe {
        bpf_find_vma(
            task as *mut _,
            addr,
            vma_callback as *mut c_void,
            (&raw mut out).cast(),
            0,
        )
    };
    if rc == 0 { Ok(out) } else { Err(rc) }
}

const EBUSY: i64 = 16;
/// Most reads of the mmap lock's count while waiting for it (tens of
/// nanoseconds each: a few milliseconds at most, enough for a
/// writer preempted while holding it to run again, spent only on the path
/// to death and only while the lock is contended).
const LOCK_SPIN_MAX: u32 = 128 * 1024;

/// `rw_semaphore.count` bits that make a read trylock fail: a writer
/// holds it, writers wait, a handoff is due, or readers were refused
/// (`RWSEM_READ_FAILED_MASK`).
const RWSEM_READ_FAILED: u64 = 0b111 | (1 << 63);

extern "C" fn lock_spin_step(_index: u64, ctx: *mut c_void) -> i64 {
    let count = ctx as *mut u64;
    // SAFETY: `ctx` is the word on `wait_for_mmap_lock`'s stack holding the
    // lock's address; it is overwritten with the count read.
    unsafe {
        let lock = *count.add(1);
        *count = read::<u64>(lock, 0);
        (*count & RWSEM_READ_FAILED == 0) as i64
    }
}

/// Waits, boundedly, until the mmap lock of `mm` would let a reader in.
/// `bpf_find_vma` only try-locks, so a thread of the same process inside
/// `mmap` or `munmap` (a Go runtime growing its heap) would otherwise cost
/// the whole capture its mappings. The wait reads the lock's count, one
/// load per try, which keeps the program cheap to verify; a writer that
/// slips in between is what the lookups' own refusals then report (see
/// [`capture_modules`]).
///
/// # Safety
///
/// `mm` must be the current task's memory map.
#[inline(always)]
pub unsafe fn wait_for_mmap_lock(mm: u64) {
    let Some(scratch) = MODULE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // [count read, lock address]
    let mut spin: [u64; 2] = [0, mm + off!(mm_mmap_lock)];
    // SAFETY: the callback touches only `spin`, which outlives the call;
    // `scratch` is this CPU's element of MODULE_SCRATCH.
    unsafe {
        bpf_loop(
            LOCK_SPIN_MAX,
            lock_spin_step as *mut c_void,
            (&raw mut spin).cast(),
            0,
        );
        (*scratch).busy = (spin[0] & RWSEM_READ_FAILED != 0) as u32;
    }
}

/// The mapping holding `addr` in `task` (whose memory map is `mm`);
/// `found == 0` when none does (or `addr` is 0).
///
/// # Safety
///
/// As [`find_vma`], unless `LEGACY`.
#[inline(always)]
pub unsafe fn summarize_vma<const LEGACY: bool>(
    task: *mut c_void,
    mm: u64,
    addr: u64,
) -> VmaSummary {
    if addr == 0 {
        return VmaSummary::default();
    }
    let found = if LEGACY {
        find_vma_rb(mm, addr)
    } else {
        // SAFETY: the caller's contract.
        unsafe { find_vma(task, addr) }
    };
    match found {
        Ok(v) => VmaSummary {
            start: v.start,
            end: v.end,
            vm_flags: v.flags,
            found: 1,
            has_file: (v.file != 0) as u32,
        },
        Err(rc) => {
            if rc != -ENOENT {
                count(&LOSSES, loss::VMA_LOOKUP);
            }
            VmaSummary::default()
        }
    }
}

/// Most non-executable ranges remembered so that stack words pointing into
/// the heap or data are not looked up again.
const SKIP_MAX: usize = 8;
/// Most mapping lookups for stack words (the kernel's frame addresses are
/// always looked up): bounds the cost of a stack full of heap pointers.
const WORD_LOOKUPS_MAX: u32 = 48;
const ENOENT: i64 = 2;
/// Lowest and highest user addresses that can hold code.
const USER_MIN: u64 = 0x10000;
const USER_MAX: u64 = 0x0000_8000_0000_0000;

/// Scratch space for the module capture loop: `bpf_loop` callbacks cannot
/// see the ring-buffer reservation, so they work here and the result is
/// copied into the event afterwards.
#[repr(C)]
pub struct ModuleScratch {
    addrs: [u64; KSTACK_MAX + 1],
    n_addrs: u32,
    n_modules: u32,
    vdso: u64,
    truncated: u32,
    n_skip: u32,
    /// Stack words to scan: `n_words` words from `words_base`.
    words_base: u64,
    n_words: u32,
    word_lookups: u32,
    /// The stack's own range, never code.
    stack_start: u64,
    stack_end: u64,
    /// A lookup was refused because the mmap lock was busy (set by
    /// [`wait_for_mmap_lock`] before the capture, and by the capture).
    busy: u32,
    skip: [[u64; 2]; SKIP_MAX],
    modules: [Module; MODULES_MAX],
    /// `LEGACY`: the mappings found, described (and their paths walked)
    /// once the search is over.
    raw: [VmaOut; MODULES_MAX],
    /// `LEGACY`: the memory map the lookups descend.
    mm: u64,
}

#[map]
static MODULE_SCRATCH: PerCpuArray<ModuleScratch> = PerCpuArray::with_max_entries(1, 0);

/// What the module capture looks at, besides the kernel's frame addresses.
pub struct StackWords {
    /// User address of the first word of the captured stack.
    pub base: u64,
    /// Number of 8-byte words captured.
    pub count: u32,
    /// The stack mapping, skipped without a lookup.
    pub stack: VmaSummary,
}

/// Describes the mapping of `ip`, of every frame-pointer return address and
/// of every stack word that points into executable memory (candidate
/// return addresses for the userspace unwinder) into `modules`. Returns how
/// many were filled, whether some did not fit and whether some lookup was
/// refused for a busy mmap lock. Runs in the exiting
/// thread's context (`current` owns the addresses).
///
/// # Safety
///
/// `modules` must be writable (inside a reservation) and `kstack` readable,
/// `KSTACK_MAX` words.
#[inline(always)]
pub unsafe fn capture_modules<const LEGACY: bool>(
    modules: *mut [Module; MODULES_MAX],
    ip: u64,
    kstack: *const [u64; KSTACK_MAX],
    kstack_len: u32,
    words: &StackWords,
    mm: u64,
) -> (u32, bool, bool) {
    let Some(scratch) = MODULE_SCRATCH.get_ptr_mut(0) else {
        return (0, false, false);
    };
    // SAFETY: `scratch` is this CPU's element of MODULE_SCRATCH, valid for
    // the run; indexes into it and into `modules` are bounded by the loops
    // and masks below; the caller's contract for `modules` and `kstack`.
    unsafe {
        (*scratch).addrs[0] = ip;
        bpf_probe_read_kernel(
            (&raw mut (*scratch).addrs[1]).cast(),
            (KSTACK_MAX * 8) as u32,
            kstack.cast(),
        );
        (*scratch).n_addrs = kstack_len.min(KSTACK_MAX as u32) + 1;
        (*scratch).n_modules = 0;
        (*scratch).truncated = 0;
        if LEGACY {
            (*scratch).busy = 0;
        }
        (*scratch).n_skip = 0;
        // Empty ranges, so lookups can scan every slot without consulting
        // the counts (which keeps the verifier's state space small).
        for j in 0..MODULES_MAX {
            (*scratch).modules[j].start = 0;
            (*scratch).modules[j].end = 0;
        }
        (*scratch).mm = mm;
        for j in 0..SKIP_MAX {
            (*scratch).skip[j] = [0, 0];
        }
        (*scratch).word_lookups = 0;
        (*scratch).words_base = words.base;
        (*scratch).n_words = words.count.min(WORDS_MAX);
        (*scratch).stack_start = words.stack.start;
        (*scratch).stack_end = words.stack.end;
        (*scratch).vdso = read(mm, off!(mm_vdso));
        if LEGACY {
            // The instruction pointer's mapping first, then every other
            // executable one in address order: a walk of the VMA list the
            // verifier can follow, where looking up each stack word is
            // beyond its budget without `bpf_loop`. Each is described, and
            // its path walked, once the search is over, which keeps every
            // loop's body small.
            if let Ok(vma) = find_vma_rb(mm, ip) {
                (*scratch).raw[0] = vma;
                (*scratch).n_modules = 1;
            }
            collect_exec_vmas(scratch, mm);
            // Their paths are not walked: sixteen walks are beyond the
            // 5.10 verifier's budget. The executable's path is filled in by
            // the caller, and userspace finds libraries by inode.
            let vdso = (*scratch).vdso;
            for j in 0..MODULES_MAX {
                if j as u32 >= (*scratch).n_modules {
                    break;
                }
                let vma = (*scratch).raw[j];
                describe_module::<true>(&raw mut (*scratch).modules[j], &vma, vdso);
            }
        } else {
            bpf_loop(
                KSTACK_MAX as u32 + 1 + WORDS_MAX,
                module_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
        bpf_probe_read_kernel(
            modules.cast(),
            core::mem::size_of::<[Module; MODULES_MAX]>() as u32,
            (&raw const (*scratch).modules).cast(),
        );
        (
            (*scratch).n_modules.min(MODULES_MAX as u32),
            (*scratch).truncated != 0,
            (*scratch).busy != 0,
        )
    }
}

/// Stack words scanned at most (the whole snapshot).
const WORDS_MAX: u32 = (STACK_SNAPSHOT_MAX / 8) as u32;

/// One address of the module capture loop (a `bpf_loop` callback): first
/// the kernel's frame addresses, then the stack words.
extern "C" fn module_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = MODULE_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: the per-CPU scratch, which only this program uses.
    unsafe { module_step_at::<false>(scratch, index) }
}

/// Mappings visited at most by [`collect_exec_vmas`].
const VMAS_MAX: u32 = 256;

/// Adds every executable mapping of `mm` (files and the vDSO) that fits,
/// in address order, walking `mm->mmap` (kernels before 6.1, which keep
/// VMAs in a list as well as a tree). The body is kept to one branch: the
/// 5.10 verifier walks every iteration.
///
/// # Safety
///
/// `scratch` must be this CPU's element of `MODULE_SCRATCH`.
#[inline(always)]
unsafe fn collect_exec_vmas(scratch: *mut ModuleScratch, mm: u64) {
    if off!(mm_mmap) == 0 && off!(vma_next) == 0 {
        return;
    }
    // SAFETY: the caller's contract; indexes are bounded by the loop.
    unsafe {
        let vdso = (*scratch).vdso;
        let first = (*scratch).raw[0].start;
        let mut vma: u64 = read(mm, off!(mm_mmap));
        for _ in 0..VMAS_MAX {
            if vma == 0 {
                break;
            }
            let start: u64 = read(vma, off!(vma_start));
            let flags: u64 = read(vma, off!(vma_flags));
            let file: u64 = read(vma, off!(vma_file));
            let wanted =
                (flags & VM_EXEC != 0) & ((file != 0) | (start == vdso)) & (start != first);
            if wanted {
                let n = (*scratch).n_modules as usize;
                if n >= MODULES_MAX {
                    (*scratch).truncated = 1;
                    break;
                }
                (*scratch).raw[n & (MODULES_MAX - 1)] = VmaOut {
                    start,
                    end: read(vma, off!(vma_end)),
                    pgoff: read(vma, off!(vma_pgoff)),
                    file,
                    flags,
                };
                (*scratch).n_modules = n as u32 + 1;
            }
            vma = read(vma, off!(vma_next));
        }
    }
}

/// Step `index` of the module capture loop; non-zero ends the loop.
///
/// # Safety
///
/// `scratch` must be this CPU's element of `MODULE_SCRATCH`.
#[inline(always)]
unsafe fn module_step_at<const LEGACY: bool>(scratch: *mut ModuleScratch, index: u64) -> i64 {
    // SAFETY: the caller's contract; `index` and the module count are
    // masked into the arrays' bounds.
    unsafe {
        let i = index as usize;
        let n_addrs = (*scratch).n_addrs as usize;
        let from_stack = i >= n_addrs;
        let addr = if !from_stack {
            if i > KSTACK_MAX {
                return 1;
            }
            (*scratch).addrs[i]
        } else {
            let w = (i - n_addrs) as u64;
            if w >= (*scratch).n_words as u64 {
                return 1;
            }
            let mut value: u64 = 0;
            if bpf_probe_read_user(
                (&raw mut value).cast(),
                8,
                ((*scratch).words_base + w * 8) as *const c_void,
            ) != 0
            {
                return 1;
            }
            value
        };
        if !(USER_MIN..USER_MAX).contains(&addr) {
            return 0;
        }
        if from_stack && addr >= (*scratch).stack_start && addr < (*scratch).stack_end {
            return 0;
        }
        let mut known = false;
        for j in 0..MODULES_MAX {
            let m = &(*scratch).modules[j];
            known |= addr >= m.start && addr < m.end;
        }
        for j in 0..SKIP_MAX {
            let r = &(*scratch).skip[j];
            known |= addr >= r[0] && addr < r[1];
        }
        if known {
            return 0;
        }
        let n = (*scratch).n_modules as usize;
        if n >= MODULES_MAX {
            (*scratch).truncated = 1;
            return 1;
        }
        if from_stack {
            if (*scratch).word_lookups >= WORD_LOOKUPS_MAX {
                return 1;
            }
            (*scratch).word_lookups += 1;
        }
        let vma = match lookup::<LEGACY>((*scratch).mm, addr) {
            Ok(vma) => vma,
            Err(rc) => {
                // No mapping (-ENOENT) is an answer; anything else (the mmap
                // lock was contended) loses a mapping that existed.
                if rc != -ENOENT {
                    count(&LOSSES, loss::VMA_LOOKUP);
                }
                if rc == -EBUSY {
                    (*scratch).busy = 1;
                }
                return 0;
            }
        };
        // Only code can be a frame: the instruction pointer is described
        // whatever it points at, other addresses only when executable (a
        // frame-pointer walk gone astray repeats data addresses).
        if i > 0 && vma.flags & VM_EXEC == 0 {
            let n_skip = (*scratch).n_skip as usize;
            if n_skip < SKIP_MAX {
                (*scratch).skip[n_skip & (SKIP_MAX - 1)] = [vma.start, vma.end];
                (*scratch).n_skip = n_skip as u32 + 1;
            }
            return 0;
        }
        let slot = n & (MODULES_MAX - 1);
        describe_module::<LEGACY>(&raw mut (*scratch).modules[slot], &vma, (*scratch).vdso);
        (*scratch).n_modules = n as u32 + 1;
    }
    0
}

/// Fills `m` from `vma`; its path too, except in `LEGACY` mode, where the
/// caller walks it afterwards.
///
/// # Safety
///
/// `m` must point to a writable [`Module`].
#[inline(always)]
unsafe fn describe_module<const LEGACY: bool>(m: *mut Module, vma: &VmaOut, vdso: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        (*m).start = vma.start;
        (*m).end = vma.end;
        (*m).pgoff = vma.pgoff;
        (*m).ino = 0;
        (*m).dev = 0;
        (*m).path_len = 0;
        let mut flags = 0;
        if vma.flags & VM_EXEC != 0 {
            flags |= module_flags::EXEC;
        }
        if vma.start == vdso {
            flags |= module_flags::VDSO;
        }
        if vma.file != 0 {
            flags |= module_flags::FILE;
            let inode: u64 = read(vma.file, off!(file_inode));
            (*m).ino = read(inode, off!(inode_ino));
            let sb: u64 = read(inode, off!(inode_sb));
            (*m).dev = read(sb, off!(sb_dev));
            if !LEGACY {
                let (len, complete) = walk_path::<false>((&raw mut (*m).path).cast(), vma.file);
                (*m).path_len = len;
                if !complete {
                    flags |= module_flags::PATH_TRUNCATED;
                }
            }
        }
        (*m).flags = flags;
    }
}
