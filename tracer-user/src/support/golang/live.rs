//! A running Go process's goroutines, read from outside.
//!
//! `crashtrace goroutines PID` answers "which goroutines, created where,
//! blocked where" for any Go process, stripped or not, with no pprof
//! endpoint and nothing sent to the process: it reads the runtime's own
//! state through the process's memory, as a debugger would, while the
//! process runs.
//!
//! - The list of goroutines is the runtime's `allgptr`/`allglen` pair (what
//!   `runtime.forEachGRace` walks). A stripped binary has no symbol for
//!   them, but pclntab still finds `runtime.forEachGRace`, whose first two
//!   RIP-relative loads are `allglen` and `allgptr` in every release read
//!   here (1.19 to 1.27: checked against the symbol table by
//!   `tests::allgs_are_found_in_every_release`).
//! - A goroutine's fields (`goid`, status, wait reason, `gopc`, its saved
//!   context) are at offsets that move between releases: a table per
//!   release ([`GLayout`]), checked against each release's DWARF.
//! - Each goroutine's stack is read once, up to [`STACK_READ`] bytes from
//!   its saved stack pointer, and walked with the pclntab unwinder.
//!
//! The process keeps running: a goroutine can change between the read of
//! its `g` and of its stack. Every value read is checked (the stack pointer
//! within the goroutine's bounds, the walk bounded by the bytes read, the
//! count by a limit), so a torn read gives a degraded entry, never a wrong
//! loop or unbounded memory.

use std::collections::HashMap;

use super::{GoBinary, StepError, step};
use crate::support::procfs::{MapsEntry, ProcessMemory};

/// Bytes of a goroutine's stack read from its saved stack pointer: deep
/// enough for the frames that say where it waits and who called it.
pub const STACK_READ: usize = 16 << 10;
/// Most frames kept per goroutine.
pub const MAX_FRAMES: usize = 64;
/// Bytes of `runtime.g` read per goroutine (the fields used end before).
const G_READ: usize = 320;
/// Largest `allglen` believed: beyond, the pair found is not the runtime's.
const MAX_ALLGLEN: u64 = 1 << 28;

/// Where the fields of `runtime.g` are, in one range of releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GLayout {
    pub stack_lo: u16,
    pub stack_hi: u16,
    pub m: u16,
    pub sched_sp: u16,
    pub sched_pc: u16,
    pub sched_bp: u16,
    pub syscallsp: u16,
    pub syscallpc: u16,
    pub atomicstatus: u16,
    pub goid: u16,
    pub waitsince: u16,
    pub waitreason: u16,
    pub gopc: u16,
    pub startpc: u16,
}

const fn layout(status: u16, gopc: u16, syscall: u16, bp: u16) -> GLayout {
    GLayout {
        stack_lo: 0,
        stack_hi: 8,
        m: 48,
        sched_sp: 56,
        sched_pc: 56 + 8,
        sched_bp: 56 + bp,
        syscallsp: syscall,
        syscallpc: syscall + 8,
        atomicstatus: status,
        goid: status + 8,
        waitsince: status + 24,
        waitreason: status + 32,
        gopc,
        startpc: gopc + 16,
    }
}

/// Go 1.19.
const GO_1_19: GLayout = layout(144, 296, 112, 48);
/// Go 1.21 and 1.22.
const GO_1_21: GLayout = layout(144, 280, 112, 48);
/// Go 1.23 and 1.24 (`g.coroarg`, `g.syncGroup` before the status).
const GO_1_23: GLayout = layout(152, 288, 112, 48);
/// Go 1.25 (`gobuf.ret` removed).
const GO_1_25: GLayout = layout(144, 280, 104, 40);
/// Go 1.26 and 1.27.
const GO_1_26: GLayout = layout(144, 288, 104, 40);

/// The layout of Go minor release `minor`, when this table knows it.
pub fn g_layout(minor: u32) -> Option<GLayout> {
    Some(match minor {
        19 => GO_1_19,
        21 | 22 => GO_1_21,
        23 | 24 => GO_1_23,
        25 => GO_1_25,
        26 | 27 => GO_1_26,
        _ => return None,
    })
}

/// The minor release of a Go version string (`go1.25.5` → 25).
pub fn minor_of(version: &str) -> Option<u32> {
    version
        .strip_prefix("go1.")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Reads another process's memory. `false` when the range is not mapped
/// (or no longer is).
pub trait Remote {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

impl Remote for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        ProcessMemory::read(self, addr, buf)
    }
}

/// How far the process loaded `exe` from its ELF virtual addresses (0 for
/// the usual non-PIE Go executable), from its mappings of the file with
/// device `dev` and inode `ino` (`stat` of `/proc/PID/exe`).
pub fn load_bias(binary: &GoBinary, maps: &[MapsEntry], dev: u64, ino: u64) -> Option<u64> {
    maps.iter()
        .filter(|m| m.ino == ino && m.dev() == dev && m.file().is_some())
        .find_map(|m| {
            let vaddr = binary.file_address(m.start, m.offset, m.start)?;
            Some(m.start.wrapping_sub(vaddr))
        })
}

/// What keeps goroutines from being read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveError {
    #[error("the Go version of the binary is not known (no buildinfo)")]
    NoVersion,
    #[error("the goroutine layout of {0} is not known here")]
    UnknownRelease(String),
    #[error("runtime.forEachGRace is not in the binary's function table")]
    NoForEachG,
    #[error("no load of runtime.allglen and runtime.allgptr in runtime.forEachGRace")]
    NoAllgs,
    #[error("cannot read the process's memory at {0:#x}")]
    Memory(u64),
    #[error("runtime.allglen reads {0}, more goroutines than a process can hold")]
    ImplausibleCount(u64),
}

/// Where the goroutine list is: addresses in the binary's own terms (ELF
/// virtual addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllGs {
    pub allglen: u64,
    pub allgptr: u64,
}

/// Finds `allglen` and `allgptr` from the code of `runtime.forEachGRace`,
/// `code` being its bytes, which start at ELF virtual address `entry`.
///
/// The function begins `ptr, length := atomicAllG()`, which loads
/// `allglen`, then `allgptr`: two `MOV r64, [RIP+disp32]`.
pub fn allgs_from_code(entry: u64, code: &[u8]) -> Option<AllGs> {
    let mut found = Vec::with_capacity(2);
    let mut i = 0;
    while i + 7 <= code.len() && found.len() < 2 {
        let (rex, op, modrm) = (code[i], code[i + 1], code[i + 2]);
        if (rex == 0x48 || rex == 0x4c) && op == 0x8b && modrm & 0xc7 == 0x05 {
            let disp = i32::from_le_bytes(code[i + 3..i + 7].try_into().ok()?);
            let next = entry.checked_add(i as u64 + 7)?;
            let target = next.checked_add_signed(i64::from(disp))?;
            if !found.contains(&target) {
                found.push(target);
            }
            i += 7;
        } else {
            i += 1;
        }
    }
    match found[..] {
        [allglen, allgptr] => Some(AllGs { allglen, allgptr }),
        _ => None,
    }
}

/// Finds the goroutine list of `binary`, whose code `remote` reads at
/// ELF virtual address plus `bias`.
pub fn find_allgs(binary: &GoBinary, remote: &dyn Remote, bias: u64) -> Result<AllGs, LiveError> {
    let entry = binary
        .entry_of("runtime.forEachGRace")
        .ok_or(LiveError::NoForEachG)?;
    let end = binary.function(entry).map(|f| f.end).unwrap_or(entry + 256);
    let len = end.saturating_sub(entry).clamp(16, 256) as usize;
    let mut code = vec![0u8; len];
    let at = entry.wrapping_add(bias);
    if !remote.read(at, &mut code) {
        return Err(LiveError::Memory(at));
    }
    allgs_from_code(entry, &code).ok_or(LiveError::NoAllgs)
}

/// A goroutine's status, as `runtime.Stack` names it.
pub fn status_name(status: u32) -> &'static str {
    match status & !0x1000 {
        0 => "idle",
        1 => "runnable",
        2 => "running",
        3 => "syscall",
        4 => "waiting",
        5 => "moribund",
        6 => "dead",
        7 => "enqueue",
        8 => "copystack",
        9 => "preempted",
        10 => "leaked",
        _ => "unknown",
    }
}

/// Whether a goroutine in `status` is parked (its wait reason holds).
pub fn is_waiting(status: u32) -> bool {
    status & !0x1000 == 4
}

/// One goroutine as read, its frames not yet named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawGoroutine {
    pub id: u64,
    pub status: u32,
    pub wait_reason: u8,
    /// `runtime.nanotime()` when it blocked, when the runtime recorded it
    /// (a garbage collection since it blocked), else 0.
    pub wait_since: i64,
    /// Return address of the `go` statement that created it.
    pub gopc: u64,
    /// Its function's entry.
    pub startpc: u64,
    /// It runs on a thread now (`g.m` is set).
    pub on_thread: bool,
    /// Its stack: an index into [`Snapshot::stacks`].
    pub stack: u32,
    /// Why the walk stopped before the goroutine's first function, if so.
    pub error: Option<String>,
}

/// What a snapshot gave.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every goroutine that is not dead, in the runtime's order.
    pub goroutines: Vec<RawGoroutine>,
    /// The distinct stacks: program counters, innermost first, as process
    /// addresses (the first is where the goroutine resumes, the others are
    /// return addresses). Stack 0 is empty. A million goroutines parked in
    /// the same few places keep a few stacks, not a million.
    pub stacks: Vec<Vec<u64>>,
    /// `allglen` when it was read.
    pub allglen: u64,
    /// Goroutines not read because of the limit.
    pub over_limit: u64,
    /// Entries of the list that could not be read (freed or torn).
    pub unreadable: u64,
}

/// Reads the goroutines of a process. `bias` turns the binary's virtual
/// addresses into the process's; at most `limit` goroutines are read.
pub fn snapshot(
    binary: &GoBinary,
    layout: &GLayout,
    remote: &dyn Remote,
    allgs: AllGs,
    bias: u64,
    limit: usize,
) -> Result<Snapshot, LiveError> {
    let word = |addr: u64| -> Result<u64, LiveError> {
        let mut b = [0u8; 8];
        if remote.read(addr, &mut b) {
            Ok(u64::from_le_bytes(b))
        } else {
            Err(LiveError::Memory(addr))
        }
    };
    let len = word(allgs.allglen.wrapping_add(bias))?;
    if len > MAX_ALLGLEN {
        return Err(LiveError::ImplausibleCount(len));
    }
    let array = word(allgs.allgptr.wrapping_add(bias))?;
    let mut out = Snapshot {
        allglen: len,
        stacks: vec![Vec::new()],
        ..Default::default()
    };
    let mut interned: HashMap<Vec<u64>, u32> = HashMap::new();
    let mut pcs = Vec::with_capacity(MAX_FRAMES);
    let take = len.min(limit as u64);
    out.over_limit = len - take;
    // The pointer array, read in chunks so that a million goroutines cost
    // a few hundred reads rather than a million.
    const CHUNK: u64 = 4096;
    let mut pointers = vec![0u8; (CHUNK * 8) as usize];
    let mut stack = vec![0u8; STACK_READ];
    let mut g = [0u8; G_READ];
    let mut start = 0;
    while start < take {
        let n = CHUNK.min(take - start);
        let bytes = &mut pointers[..(n * 8) as usize];
        let at = array.wrapping_add(start * 8);
        if !remote.read(at, bytes) {
            return Err(LiveError::Memory(at));
        }
        for ptr in bytes.chunks_exact(8) {
            let gp = u64::from_le_bytes(ptr.try_into().expect("8 bytes"));
            if gp == 0 || !remote.read(gp, &mut g) {
                out.unreadable += 1;
                continue;
            }
            pcs.clear();
            let Some(mut goroutine) =
                read_g(binary, layout, remote, &g, bias, &mut stack, &mut pcs)
            else {
                continue;
            };
            if !pcs.is_empty() {
                goroutine.stack = match interned.get(&pcs) {
                    Some(&id) => id,
                    None => {
                        let id = out.stacks.len() as u32;
                        interned.insert(pcs.clone(), id);
                        out.stacks.push(pcs.clone());
                        id
                    }
                };
            }
            out.goroutines.push(goroutine);
        }
        start += n;
    }
    Ok(out)
}

fn field(g: &[u8], offset: u16) -> u64 {
    let at = usize::from(offset);
    g.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// One goroutine from its `g` bytes; `None` for a dead one.
fn read_g(
    binary: &GoBinary,
    l: &GLayout,
    remote: &dyn Remote,
    g: &[u8],
    bias: u64,
    stack: &mut [u8],
    pcs: &mut Vec<u64>,
) -> Option<RawGoroutine> {
    let status = field(g, l.atomicstatus) as u32;
    if status & !0x1000 == 6 {
        return None;
    }
    let mut out = RawGoroutine {
        id: field(g, l.goid),
        status,
        wait_reason: g.get(usize::from(l.waitreason)).copied().unwrap_or(0),
        wait_since: field(g, l.waitsince) as i64,
        gopc: field(g, l.gopc),
        startpc: field(g, l.startpc),
        on_thread: field(g, l.m) != 0,
        ..Default::default()
    };
    let (lo, hi) = (field(g, l.stack_lo), field(g, l.stack_hi));
    let (pc, sp, bp) = match status & !0x1000 {
        // Running: its registers are on a CPU, its saved context is stale.
        2 => {
            out.error = Some("running on a thread: its stack is not saved while it runs".into());
            return Some(out);
        }
        3 => (field(g, l.syscallpc), field(g, l.syscallsp), 0),
        _ => (
            field(g, l.sched_pc),
            field(g, l.sched_sp),
            field(g, l.sched_bp),
        ),
    };
    if pc == 0 || sp < lo || sp >= hi || hi - lo > 1 << 30 {
        out.error = Some(format!(
            "no saved context to walk (pc {pc:#x}, sp {sp:#x}, stack {lo:#x}-{hi:#x})"
        ));
        return Some(out);
    }
    let n = ((hi - sp) as usize).min(stack.len());
    let stack = &mut stack[..n];
    if !remote.read(sp, stack) {
        out.error = Some(format!("cannot read its stack at {sp:#x}"));
        return Some(out);
    }
    pcs.push(pc);
    out.error = walk(binary, bias, stack, sp, pc, bp, pcs);
    Some(out)
}

/// Walks Go frames from (`pc`, `sp`) over `stack`, the bytes at `sp`,
/// pushing callers onto `pcs`; says why it stopped early, if it did.
fn walk(
    binary: &GoBinary,
    bias: u64,
    stack: &[u8],
    base: u64,
    mut pc: u64,
    _bp: u64,
    pcs: &mut Vec<u64>,
) -> Option<String> {
    let mut read = |addr: u64| -> Option<u64> {
        let at = usize::try_from(addr.checked_sub(base)?).ok()?;
        let bytes = stack.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    };
    let mut sp = base;
    let mut exact = true;
    while pcs.len() < MAX_FRAMES {
        // A return address is looked up one byte back, inside its call.
        let lookup = pc.wrapping_sub(bias).wrapping_sub(u64::from(!exact));
        let Some(row) = binary.unwind_row(lookup) else {
            return Some(format!("no Go function holds {pc:#x}"));
        };
        match step(&row, sp, &mut read) {
            Ok(Some(caller)) => {
                if caller.sp <= sp || caller.pc == 0 {
                    return Some(format!("the walk went nowhere after {}", row.function));
                }
                pc = caller.pc;
                sp = caller.sp;
                exact = caller.exact;
                pcs.push(pc);
            }
            Ok(None) => return None,
            Err(StepError::Memory { .. }) => {
                return Some(format!(
                    "the stack goes on past the {} bytes read",
                    stack.len()
                ));
            }
            Err(e) => return Some(e.to_string()),
        }
    }
    Some(format!("more than {MAX_FRAMES} frames"))
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
