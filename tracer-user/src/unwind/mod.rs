//! From captured thread state to a list of frame addresses.
//!
//! The input is what the kernel captured as the thread exited: its user
//! registers and a copy of its stack from the page holding SP. Optimized
//! code, and the distribution libraries every program goes through (glibc's
//! `abort` path included), keep no frame pointers, so frames are recovered
//! the way debuggers and C++ exception handling do it: with the DWARF CFI
//! of the file mapped at each code address (see `cfi` and `step`), falling
//! back to the frame-pointer rule only for code that has none. Go code,
//! which has no CFI, is stepped with the Go runtime's own pcsp table (see
//! `crate::support::golang`). Memory is read only from the snapshot, and every way
//! a walk can stop early is reported with its reason (see `walk`). The
//! kernel's own frame-pointer walk is the fallback when no registers or
//! stack were captured.

mod cache;
mod cfi;
mod fp;
mod image;
mod step;
mod walk;

use std::path::{Path, PathBuf};

use crate::{
    events::{GoStackRecord, Mapping, Region, StateRecord, reg},
    support::golang,
};

use cfi::{Cfi, Context};
use walk::Lookup;
pub use walk::MAX_FRAMES;

/// Turns a captured thread state into frames. Keeps the parsed unwind
/// tables of the files it has seen.
#[derive(Default)]
pub struct Unwinder {
    cache: cache::Cache,
    /// crashtrace's own vDSO tables and image size, loaded on first use.
    vdso: Option<Option<(Cfi, u64)>>,
    ctx: Box<Context>,
    /// Go tables of the files seen, for stepping Go frames.
    go: golang::Cache,
}

impl Unwinder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames of the captured thread, innermost first. `files[i]` is a
    /// readable path for `state.mappings[i]`, when one exists.
    pub fn unwind(&mut self, state: &StateRecord, files: &[Option<PathBuf>]) -> Unwound {
        self.unwind_go(state, None, files)
    }

    /// Like [`Unwinder::unwind`], for a Go thread that died off its
    /// goroutine's stack: `goroutine` is what the Go probes found. Its
    /// stack copy serves the reads the thread's frames make there (an
    /// interrupted goroutine, below the signal frame), and where the walk
    /// stops at the runtime's stack switch, it goes on from the goroutine's
    /// saved context (`g.sched`), as Go's own traceback does.
    pub fn unwind_go(
        &mut self,
        state: &StateRecord,
        goroutine: Option<&GoStackRecord>,
        files: &[Option<PathBuf>],
    ) -> Unwound {
        let Some(regs) = state.regs.filter(|_| !state.snapshot.is_empty()) else {
            return unwind(state);
        };
        let extra: Vec<(u64, &[u8])> = goroutine
            .map(|g| {
                vec![
                    (g.snapshot_base, g.snapshot.as_slice()),
                    (g.system_base, g.system.as_slice()),
                ]
            })
            .unwrap_or_default();
        let stack = fp::Stack {
            base: state.snapshot_base,
            bytes: &state.snapshot,
            region: state.sp_region,
            extra: &extra,
        };
        // The files of one stack are looked at once each, however many
        // frames they hold.
        self.cache.identities.start_batch();
        let mut unwound = walk::walk(&regs, &stack, &mut |addr| self.lookup(state, files, addr));
        if let Some(g) = goroutine.filter(|g| unwound.switched_stacks && g.sp != 0 && g.pc != 0) {
            let mut regs = [0u64; tracer_common::REGS_LEN];
            (regs[reg::IP], regs[reg::SP], regs[reg::BP]) = (g.pc, g.sp, g.bp);
            let stack = fp::Stack {
                base: g.snapshot_base,
                bytes: &g.snapshot,
                region: Some(Region {
                    start: g.stack_lo,
                    end: g.stack_hi,
                    vm_flags: 0,
                    has_file: false,
                }),
                extra: &[],
            };
            let theirs = walk::walk(&regs, &stack, &mut |addr| self.lookup(state, files, addr));
            unwound.goroutine_from = Some(unwound.frames.len());
            unwound.own_end = Some((unwound.truncated, unwound.error.take()));
            unwound.frames.extend(theirs.frames);
            unwound.truncated = theirs.truncated;
            unwound.switched_stacks = false;
            let copied_to = g.snapshot_base + g.snapshot.len() as u64;
            unwound.error = theirs.error.map(|e| {
                if e.contains("outside the captured stack") && copied_to < g.stack_hi {
                    format!(
                        "the goroutine's stack goes on past the {} bytes captured ({} bytes in use)",
                        g.snapshot.len(),
                        g.stack_hi.saturating_sub(g.sp)
                    )
                } else {
                    format!("on the goroutine's stack: {e}")
                }
            });
        }
        self.cache.identities.end_batch();
        unwound
    }

    /// What is known about unwinding through code address `addr`.
    fn lookup(&mut self, state: &StateRecord, files: &[Option<PathBuf>], addr: u64) -> Lookup {
        let Some(index) = state
            .mappings
            .iter()
            .position(|m| addr >= m.start && addr < m.end)
        else {
            return Lookup::NoMapping {
                list_full: state.mappings_truncated,
                lock_busy: state.mappings_busy,
            };
        };
        let mapping = &state.mappings[index];
        if !mapping.executable {
            return Lookup::NotCode;
        }
        let Self {
            cache,
            vdso,
            ctx,
            go,
        } = self;
        let (cfi, file_offset, name) = if mapping.vdso {
            let loaded = vdso.get_or_insert_with(|| {
                let image = image::Image::vdso()?;
                let segments = image.segments.iter();
                let size = segments.map(|s| s.offset.saturating_add(s.filesz)).max()?;
                Some((Cfi::new(image), size))
            });
            match loaded {
                Some((cfi, size)) if mapping.end.saturating_sub(mapping.start) >= *size => {
                    (&*cfi, 0, Path::new("[vdso]"))
                }
                _ => return Lookup::NoCfi("no usable vdso image".into()),
            }
        } else {
            let Some(path) = files.get(index).and_then(Option::as_deref) else {
                return Lookup::NoCfi(format!("no readable file for {}", describe(mapping)));
            };
            if let Some(row) = go_row(go, path, mapping, addr) {
                return Lookup::Go(row);
            }
            match cache.get(path) {
                Ok(cfi) => (cfi, mapping.file_offset, path),
                Err(e) => return Lookup::NoCfi(e),
            }
        };
        let name = name.display();
        let Some(vaddr) = cfi.image().file_address(mapping.start, file_offset, addr) else {
            return Lookup::NoCfi(format!("{addr:#x} is in no load segment of {name}"));
        };
        match cfi.row(ctx, vaddr) {
            Ok(Some(row)) => Lookup::Row(row),
            Ok(None) => Lookup::NoCfi(format!("no cfi covers {vaddr:#x} in {name}")),
            Err(e) => Lookup::NoCfi(format!("corrupt cfi for {vaddr:#x} in {name}: {e}")),
        }
    }
}

/// The Go unwind rule for `addr`, when the file is a Go executable and a Go
/// function holds `addr`.
fn go_row(
    go: &mut golang::Cache,
    path: &Path,
    mapping: &Mapping,
    addr: u64,
) -> Option<golang::UnwindRow> {
    let binary = go
        .get(path)
        .inspect_err(|e| log::debug!("no go tables: {e}"))
        .ok()??;
    let vaddr = binary.file_address(mapping.start, mapping.file_offset, addr)?;
    binary.unwind_row(vaddr)
}

fn describe(mapping: &Mapping) -> String {
    match &mapping.path {
        Some(path) => path.display().to_string(),
        None => format!("the mapping at {:#x}", mapping.start),
    }
}

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
    /// The walk stopped where the Go runtime switched stacks.
    pub switched_stacks: bool,
    /// Where frames on the goroutine's own stack begin, when the walk went
    /// on there from its saved context.
    pub goroutine_from: Option<usize>,
    /// With `goroutine_from`: how the thread's own walk ended
    /// (`truncated`, `error`), before it went on.
    pub own_end: Option<(bool, Option<String>)>,
}

/// Frames from the kernel's frame-pointer walk, innermost first.
pub fn unwind(state: &StateRecord) -> Unwound {
    let ip = state.regs.map(|r| r[reg::IP]);
    let mut out = Unwound::default();
    let mut addrs = state.kstack.iter().copied().peekable();
    match (ip, addrs.peek().copied()) {
        (Some(ip), Some(first)) if first == ip => {}
        (Some(ip), _) if ip != 0 => out.frames.push(RawFrame {
            address: ip,
            is_return: false,
        }),
        _ => {}
    }
    for addr in addrs {
        if addr == 0 {
            break;
        }
        let is_return = !out.frames.is_empty();
        out.frames.push(RawFrame {
            address: addr,
            is_return,
        });
    }
    if state.kstack.len() >= tracer_common::KSTACK_MAX {
        out.truncated = true;
        out.error = Some(format!(
            "no stack snapshot: frames come from the kernel's frame-pointer walk, which stops at {} frames",
            tracer_common::KSTACK_MAX
        ));
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
            thread: Task {
                pid: 1,
                tid: 1,
                ppid: 0,
                uid: 0,
                comm: String::new(),
            },
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
            mappings_busy: false,
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
        assert_eq!(
            u.frames[0],
            RawFrame {
                address: 0x10,
                is_return: false
            }
        );
        assert_eq!(u.frames.len(), 3);
    }

    #[test]
    fn recursion_repeats_are_kept_and_depth_is_bounded() {
        let u = unwind(&state(0x10, vec![0x20; tracer_common::KSTACK_MAX]));
        assert_eq!(u.frames.len(), tracer_common::KSTACK_MAX + 1);
        assert!(u.truncated);
        assert!(u.error.unwrap().contains("stops at 64 frames"));
    }
}
