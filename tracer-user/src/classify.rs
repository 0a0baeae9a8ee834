//! Root-cause classes from observed facts.
//!
//! Each rule names the facts it used as evidence, in words a reader can
//! check against the rest of the report. When the facts do not decide, the
//! class is `unknown`: a wrong class costs a user more than no class.
//! Class ids are part of the report contract (docs/report-schema.md).

mod abort;
mod go;
mod rust;

use abort::abort_path;

pub use abort::{WhatFunction, native_last_words};

pub use go::goroutines::{GoFrame, Goroutine, parse as parse_goroutines};
pub use go::{GoClassification, GoFacts, PrintedSignal, classify_go, first_run_crash, is_go_death};
pub use rust::{classify_rust, panic_site};

use crate::{
    events::{EvidenceRecord, Region, SignalRecord},
    support::signals::{code_name, signal_name},
};

/// Lowest address that can ever be mapped by default (`vm.mmap_min_addr`):
/// an access below it is a NULL pointer plus a small offset.
const NULL_PAGE_LIMIT: u64 = 0x10000;
/// How far below the stack pointer a fault still counts as the stack
/// growing into its guard (a large frame can skip a few pages).
const STACK_GUARD_REACH: u64 = 1 << 20;

const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;
const SI_TKILL: i32 = -6;
const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const FPE_INTDIV: i32 = 1;
const VM_READ: u64 = 0x1;
const VM_WRITE: u64 = 0x2;
const VM_EXEC: u64 = 0x4;

/// The facts classification looks at, gathered from the records.
pub struct Facts<'a> {
    pub signal: Option<&'a SignalRecord>,
    /// The dying thread's stack and instruction pointers, if captured.
    pub sp: Option<u64>,
    pub ip: Option<u64>,
    pub sp_region: Option<Region>,
    /// Kernel frame-pointer return addresses, for recursion evidence.
    pub return_addresses: &'a [u64],
    /// Calls into libc's fatal paths before the signal.
    pub libc: &'a [EvidenceRecord],
    /// The function in the `what()` slot of an uncaught C++ exception's
    /// vtable, when the abort probe found one with a vtable.
    pub what_function: Option<&'a WhatFunction>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    pub class: &'static str,
    pub evidence: Vec<String>,
    /// What the process said as it died (a libc or runtime message).
    pub message: Option<String>,
}

impl Classification {
    fn new(class: &'static str) -> Self {
        Self {
            class,
            evidence: Vec::new(),
            message: None,
        }
    }

    fn saying(mut self, message: Option<String>) -> Self {
        self.message = message;
        self
    }

    fn because(mut self, fact: impl Into<String>) -> Self {
        self.evidence.push(fact.into());
        self
    }
}

pub fn classify(facts: &Facts) -> Classification {
    let Some(sig) = facts.signal else {
        return Classification::new("unknown")
            .because("no fatal signal was captured for this process");
    };
    let name = signal_name(sig.signo);
    let code = code_name(sig.signo, sig.code);
    let headline = format!("{name} ({code}) at fault address {:#x}", sig.fault_addr);

    if let Some(c) = sent_by_someone(sig, &name, &code) {
        return c;
    }
    match sig.signo {
        libc::SIGSEGV => segv(sig, facts, headline),
        libc::SIGBUS => Classification::new("bus-error").because(headline).because(match sig.code {
            1 => "BUS_ADRALN: misaligned access".to_string(),
            2 => "BUS_ADRERR: the address is mapped but has no backing page (for example beyond the end of a mapped file)".to_string(),
            3 => "BUS_OBJERR: hardware error on the backing object".to_string(),
            c => format!("si_code {c}"),
        }),
        libc::SIGFPE if sig.code == FPE_INTDIV => Classification::new("divide-by-zero")
            .because(format!("{name} ({code}): integer division by zero"))
            .because(format!("faulting instruction at {:#x}", sig.fault_addr)),
        libc::SIGFPE => Classification::new("arithmetic-error")
            .because(format!("{name} ({code}) at instruction {:#x}", sig.fault_addr)),
        libc::SIGILL => {
            let mut c = Classification::new("illegal-instruction")
                .because(format!("{name} ({code}) at instruction {:#x}", sig.fault_addr));
            if sig.code == 2 {
                c = c.because("ILL_ILLOPN is what the ud2 instruction raises: compilers emit it for __builtin_trap() and unreachable code");
            }
            c
        }
        libc::SIGTRAP => Classification::new("breakpoint").because(format!(
            "{name} ({code}): a breakpoint or trap instruction ran with no debugger attached"
        )),
        libc::SIGSYS => Classification::new("seccomp-violation")
            .because(format!("{name} ({code}): a system call was refused by a seccomp filter")),
        libc::SIGXCPU | libc::SIGXFSZ => Classification::new("resource-limit").because(format!(
            "{name}{}: the process exceeded its {} limit",
            if sig.from_kernel { " sent by the kernel" } else { "" },
            if sig.signo == libc::SIGXCPU { "CPU time (RLIMIT_CPU)" } else { "file size (RLIMIT_FSIZE)" }
        )),
        libc::SIGABRT => abort_path(facts.libc, facts.what_function).because(format!(
            "{name} ({code}) raised by the process itself (thread {})",
            sig.target.tid
        )),
        _ => Classification::new("killed-by-signal")
            .because(format!("{name} ({code}) raised by the process itself")),
    }
}

/// A signal sent by another process, or by the kernel on someone's behalf.
fn sent_by_someone(sig: &SignalRecord, name: &str, code: &str) -> Option<Classification> {
    let user_sent = sig.code <= 0;
    if let Some(sender) = &sig.sender
        && user_sent
    {
        return Some(Classification::new("killed-by-signal").because(format!(
            "{name} ({code}) sent by pid {} ({}), uid {}",
            sender.pid, sender.comm, sender.uid
        )));
    }
    if sig.from_kernel && sig.code == SI_KERNEL && sig.signo == libc::SIGKILL {
        return Some(
            Classification::new("killed-by-signal").because(format!("{name} sent by the kernel")),
        );
    }
    if user_sent && sig.code != SI_TKILL && sig.code != SI_USER && sig.signo != libc::SIGABRT {
        return Some(
            Classification::new("killed-by-signal")
                .because(format!("{name} ({code}) queued by pid {}", sig.si_pid)),
        );
    }
    None
}

fn segv(sig: &SignalRecord, facts: &Facts, headline: String) -> Classification {
    let addr = sig.fault_addr;
    if sig.code == SI_KERNEL {
        return Classification::new("invalid-memory-access").because(
            "SIGSEGV (SI_KERNEL): a general protection fault, which reports no address: a non-canonical pointer (often garbage or freed memory) or a misaligned vector access",
        );
    }
    if let Some(c) = stack_overflow(sig, facts, &headline) {
        return c;
    }
    if sig.code == SEGV_MAPERR && addr < NULL_PAGE_LIMIT {
        return Classification::new("null-pointer-dereference")
            .because(headline)
            .because(format!(
                "{addr:#x} is within the first {} KiB, which is never mapped: a NULL pointer{}",
                NULL_PAGE_LIMIT / 1024,
                if addr == 0 {
                    String::new()
                } else {
                    format!(" plus an offset of {addr}")
                }
            ));
    }
    if sig.code == SEGV_ACCERR {
        let mut c = Classification::new("memory-permission-violation").because(headline);
        if let Some(r) = &sig.fault_region {
            let perms = permissions(r.vm_flags);
            c = c.because(format!(
                "the address is mapped ({:#x}-{:#x}, {perms}{})",
                r.start,
                r.end,
                if r.has_file { ", file-backed" } else { "" }
            ));
            if facts.ip == Some(addr) && r.vm_flags & VM_EXEC == 0 {
                c = c.because(
                    "the fault is at the instruction pointer: execution of non-executable memory",
                );
            } else if r.vm_flags & VM_WRITE == 0 && r.vm_flags & VM_READ != 0 {
                c = c.because("the mapping is read-only: a write to read-only memory (for example a string literal)");
            } else if r.vm_flags & (VM_READ | VM_WRITE | VM_EXEC) == 0 {
                c = c.because("the mapping has no access rights (a guard page)");
            }
        }
        return c;
    }
    if sig.code == SEGV_MAPERR {
        return Classification::new("invalid-memory-access")
            .because(headline)
            .because(format!(
                "no mapping contains {addr:#x}: a wild or dangling pointer"
            ));
    }
    Classification::new("unknown").because(headline)
}

/// The stack growing into its guard: a fault within reach of the stack
/// pointer, at an address no accessible mapping holds (the guard gap below
/// a main stack, or a thread stack's PROT_NONE guard page).
fn stack_overflow(sig: &SignalRecord, facts: &Facts, headline: &str) -> Option<Classification> {
    let sp = facts.sp?;
    let addr = sig.fault_addr;
    if addr.abs_diff(sp) > STACK_GUARD_REACH {
        return None;
    }
    let accessible = sig
        .fault_region
        .is_some_and(|r| r.vm_flags & (VM_READ | VM_WRITE | VM_EXEC) != 0);
    if accessible {
        return None;
    }
    let mut c = Classification::new("stack-overflow").because(headline);
    c = c.because(if addr <= sp {
        format!("the fault address is {} bytes below the stack pointer {sp:#x}", sp - addr)
    } else {
        format!("the fault address is {} bytes above the stack pointer {sp:#x}, within the current frame", addr - sp)
    });
    c = c.because(match (facts.sp_region, sig.fault_region) {
        (None, _) => "the stack pointer itself points outside any mapping: the stack is exhausted".to_string(),
        (Some(r), None) => format!(
            "the stack mapping is {:#x}-{:#x} ({} KiB) and no mapping holds the fault address: the guard gap below the stack",
            r.start,
            r.end,
            (r.end - r.start) / 1024
        ),
        (Some(_), Some(g)) => format!(
            "the fault address is in an inaccessible guard mapping {:#x}-{:#x} next to the stack",
            g.start, g.end
        ),
    });
    if let Some((addr, count)) = most_repeated(facts.return_addresses)
        && count >= 8
    {
        c = c.because(format!(
            "return address {addr:#x} repeats {count} times in the captured stack: unbounded recursion"
        ));
    }
    Some(c)
}

fn most_repeated(addrs: &[u64]) -> Option<(u64, usize)> {
    let mut counts = std::collections::HashMap::new();
    for &a in addrs {
        *counts.entry(a).or_insert(0usize) += 1;
    }
    counts.into_iter().max_by_key(|&(a, n)| (n, a))
}

fn permissions(flags: u64) -> String {
    let bit = |b, c| if flags & b != 0 { c } else { '-' };
    [bit(VM_READ, 'r'), bit(VM_WRITE, 'w'), bit(VM_EXEC, 'x')]
        .iter()
        .collect()
}

#[cfg(test)]
mod tests;
