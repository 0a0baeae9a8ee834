//! The maps and small checks every program uses: the configuration, the
//! ring buffer, the loss counters, the watched-process filter and the
//! doomed set.
//!
//! They live here, apart from `main.rs` and from any probe, so that every
//! module depends on this one and on `kernel`, and no probe module needs
//! another: the crate's module graph has no cycles.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{COMM_LEN, Config, Doom, TaskIdentity, config_flags, loss};

use crate::kernel::{off, read};

/// Records for userspace. Resized by the loader (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Element 0 is the [`Config`].
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Thread groups watched in `record` mode (`TRACED_ONLY`).
#[map]
pub static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Comms watched with `COMM_FILTER`.
#[map]
static COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(256, 0);

/// Thread groups with a captured killing signal whose exit is still due.
/// LRU so that a survivor can never fill it.
#[map]
pub static DOOMED: LruHashMap<u32, Doom> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU counters of lost or degraded events, indexed by [`loss`].
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

/// Adds one to per-CPU counter `index` of `map`.
#[inline(always)]
pub fn count(map: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's element of the map, valid for
        // the program's run; no other program on this CPU runs meanwhile.
        unsafe { *slot += 1 };
    }
}

/// The [`Config`] userspace wrote (always present once loaded).
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// Whether thread group `tgid` (`task`, one of its threads) is watched:
/// not crashtrace itself, in the traced set in `record` mode, and of a
/// watched comm when `--comm` was given.
#[inline(always)]
pub fn watched(cfg: &Config, task: u64, tgid: u32) -> bool {
    if tgid == cfg.self_tgid {
        return false;
    }
    // SAFETY: the map's value is only tested for presence.
    if cfg.flags & config_flags::TRACED_ONLY != 0 && unsafe { TRACED.get(tgid) }.is_none() {
        return false;
    }
    if cfg.flags & config_flags::COMM_FILTER != 0 {
        let mut comm: [u8; COMM_LEN] = read(task, off!(task_comm));
        // Kernels before 5.18 copy a new comm with strlcpy, which leaves
        // the old name's bytes after the NUL: the key ends at the NUL.
        let mut ended = false;
        for byte in comm.iter_mut() {
            ended |= *byte == 0;
            if ended {
                *byte = 0;
            }
        }
        // SAFETY: as above.
        if unsafe { COMMS.get(comm) }.is_none() {
            return false;
        }
    }
    true
}

/// Fills `dst` with `task`'s ids, parent, uid and comm.
///
/// # Safety
///
/// `dst` must point to a writable [`TaskIdentity`] (inside a ring-buffer
/// reservation, say).
#[inline(always)]
pub unsafe fn fill_identity(dst: *mut TaskIdentity, task: u64) {
    let parent: u64 = read(task, off!(task_real_parent));
    let cred: u64 = read(task, off!(task_real_cred));
    // SAFETY: the caller's contract.
    unsafe {
        (*dst).tgid = read(task, off!(task_tgid));
        (*dst).tid = read(task, off!(task_pid));
        (*dst).ppid = read(parent, off!(task_tgid));
        (*dst).uid = read(cred, off!(cred_uid));
        (*dst).comm = read::<[u8; COMM_LEN]>(task, off!(task_comm));
    }
}
