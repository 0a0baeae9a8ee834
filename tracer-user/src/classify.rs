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

pub use go::{GoClassification, GoFacts, classify_go, is_go_death};
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
mod tests {
    use tracer_common::evidence_source as source;

    use super::*;
    use crate::events::Task;

    fn sig(signo: i32, code: i32, fault_addr: u64) -> SignalRecord {
        SignalRecord {
            boot_ns: 0,
            signo,
            code,
            errno: 0,
            fault_addr,
            si_pid: 0,
            si_uid: 0,
            target: Task {
                pid: 10,
                tid: 10,
                ppid: 1,
                uid: 0,
                comm: "t".into(),
            },
            sender: None,
            from_kernel: false,
            handled: false,
            blocked: false,
            fault_region: None,
            sender_stack: Vec::new(),
            sender_exe: None,
            sender_cmdline: Vec::new(),
        }
    }

    fn facts(s: &SignalRecord) -> Facts<'_> {
        Facts {
            signal: Some(s),
            sp: Some(0x7ffd_0000_8000),
            ip: Some(0x5555_0000_1000),
            sp_region: Some(Region {
                start: 0x7ffd_0000_0000,
                end: 0x7ffd_0002_0000,
                vm_flags: 3,
                has_file: false,
            }),
            return_addresses: &[],
            libc: &[],
            what_function: None,
        }
    }

    fn class_of(s: &SignalRecord) -> &'static str {
        classify(&facts(s)).class
    }

    #[test]
    fn segv_classes() {
        assert_eq!(
            class_of(&sig(11, SEGV_MAPERR, 0)),
            "null-pointer-dereference"
        );
        assert_eq!(
            class_of(&sig(11, SEGV_MAPERR, 0x18)),
            "null-pointer-dereference"
        );
        assert_eq!(
            class_of(&sig(11, SEGV_MAPERR, 0xdead_0000)),
            "invalid-memory-access"
        );
        assert_eq!(
            class_of(&sig(11, SEGV_ACCERR, 0x5555_0000_2000)),
            "memory-permission-violation"
        );
        assert_eq!(class_of(&sig(11, SI_KERNEL, 0)), "invalid-memory-access");
        // Just below the stack mapping and near SP: the guard area.
        assert_eq!(
            class_of(&sig(11, SEGV_MAPERR, 0x7ffc_ffff_fff8)),
            "stack-overflow"
        );
        // Near SP but inside an accessible mapping: not an overflow.
        let mut s = sig(11, SEGV_ACCERR, 0x7ffd_0000_7000);
        s.fault_region = Some(Region {
            start: 0x7ffd_0000_0000,
            end: 0x7ffd_0002_0000,
            vm_flags: 1,
            has_file: false,
        });
        assert_eq!(class_of(&s), "memory-permission-violation");
    }

    #[test]
    fn stack_overflow_needs_a_fault_near_sp_outside_the_stack() {
        let s = sig(11, SEGV_MAPERR, 0x7ffd_0000_7ff8);
        let mut f = facts(&s);
        f.sp = Some(0x7ffd_0000_8000);
        f.sp_region = Some(Region {
            start: 0x7ffd_0000_8000,
            end: 0x7ffd_0010_0000,
            vm_flags: 3,
            has_file: false,
        });
        f.return_addresses = &[0x5555_0000_1234; 20];
        let c = classify(&f);
        assert!(c.evidence.iter().any(|e| e.contains("repeats 20 times")));
        assert_eq!(c.class, "stack-overflow");
        assert!(
            c.evidence
                .iter()
                .any(|e| e.contains("8 bytes below the stack pointer"))
        );
    }

    #[test]
    fn other_signals() {
        assert_eq!(class_of(&sig(8, FPE_INTDIV, 0x1000)), "divide-by-zero");
        assert_eq!(class_of(&sig(8, 2, 0x1000)), "arithmetic-error");
        assert_eq!(class_of(&sig(4, 2, 0x1000)), "illegal-instruction");
        assert_eq!(class_of(&sig(7, 2, 0x1000)), "bus-error");
        assert_eq!(class_of(&sig(5, 1, 0)), "breakpoint");
        assert_eq!(class_of(&sig(31, 1, 0)), "seccomp-violation");
        assert_eq!(class_of(&sig(24, SI_KERNEL, 0)), "resource-limit");
        assert_eq!(class_of(&sig(6, SI_TKILL, 0)), "abort");
    }

    #[test]
    fn kills_from_others_name_the_sender() {
        let mut s = sig(9, SI_USER, 0);
        s.sender = Some(Task {
            pid: 99,
            tid: 99,
            ppid: 1,
            uid: 1000,
            comm: "killer".into(),
        });
        let c = classify(&facts(&s));
        assert_eq!(c.class, "killed-by-signal");
        assert!(c.evidence[0].contains("pid 99 (killer)"));
        // SIGABRT from another process is a kill, not an abort.
        let mut s = sig(6, SI_USER, 0);
        s.sender = Some(Task {
            pid: 99,
            tid: 99,
            ppid: 1,
            uid: 0,
            comm: "k".into(),
        });
        assert_eq!(classify(&facts(&s)).class, "killed-by-signal");
    }

    fn libc_said(source: u32, text: &str) -> EvidenceRecord {
        EvidenceRecord {
            boot_ns: 0,
            pid: 10,
            tid: 10,
            source,
            line: 0,
            text: Some(text.into()).filter(|t: &String| !t.is_empty()),
            file: None,
            function: None,
            code: 0,
        }
    }

    fn abort_class(libc: &[EvidenceRecord]) -> Classification {
        abort_class_with(libc, None)
    }

    fn abort_class_with(libc: &[EvidenceRecord], what: Option<&WhatFunction>) -> Classification {
        let s = sig(6, SI_TKILL, 0);
        let mut f = facts(&s);
        f.libc = libc;
        f.what_function = what;
        classify(&f)
    }

    /// The abort probe's record of an uncaught exception.
    fn thrown(mangled: &str, copied: Option<&str>) -> EvidenceRecord {
        let mut e = libc_said(source::ABORT, "");
        e.file = Some(mangled.into());
        e.function = copied.map(str::to_string);
        e.code = 0x7f00_0000_1000;
        e
    }

    fn named(f: &str) -> WhatFunction {
        WhatFunction::Named(f.into())
    }

    #[test]
    fn uncaught_exceptions_name_type_and_message() {
        let mut e = libc_said(source::ABORT, "");
        e.text = None;
        e.file = Some("St13runtime_error".into());
        e.function = Some("config missing".into());
        let c = abort_class(&[e.clone()]);
        assert_eq!(c.class, "uncaught-exception");
        assert_eq!(
            c.message.as_deref(),
            Some("std::runtime_error: config missing")
        );
        e.file = Some("N5myapp9BadConfigE".into());
        let c = abort_class(&[e]);
        assert_eq!(c.message.as_deref(), Some("myapp::BadConfig"));
    }

    /// A class of the program's own whose what() is the standard one: its
    /// message, and why it was read.
    #[test]
    fn own_exception_with_standard_what_has_its_message() {
        let e = thrown("N9inventory11ConfigErrorE", Some("bad setting"));
        for f in [
            "std::runtime_error::what() const",
            "std::logic_error::what() const",
        ] {
            let c = abort_class_with(std::slice::from_ref(&e), Some(&named(f)));
            assert_eq!(c.class, "uncaught-exception");
            assert_eq!(
                c.message.as_deref(),
                Some("inventory::ConfigError: bad setting")
            );
            assert!(
                c.evidence.iter().any(|l| l.starts_with(&format!(
                    "what() of inventory::ConfigError is {f}, the standard what() of std::runtime_error and std::logic_error, which returns the message stored"
                ))),
                "{c:?}"
            );
        }
        let c = abort_class_with(
            &[thrown("N3app8FutureErE", Some("std::future_error: broken"))],
            Some(&named("std::future_error::what() const")),
        );
        assert_eq!(
            c.message.as_deref(),
            Some("app::FutureEr: std::future_error: broken")
        );
        // The right function, but nothing was copied.
        let c = abort_class_with(
            &[thrown("N9inventory11ConfigErrorE", None)],
            Some(&named("std::runtime_error::what() const")),
        );
        assert_eq!(c.message.as_deref(), Some("inventory::ConfigError"));
        assert!(
            c.evidence
                .iter()
                .any(|l| l.ends_with("but it could not be read")),
            "{c:?}"
        );
    }

    /// Any other what() keeps the copied text out, and says why.
    #[test]
    fn overridden_what_is_not_read() {
        let e = thrown("N9inventory9LoudErrorE", Some("quiet text"));
        let c = abort_class_with(
            std::slice::from_ref(&e),
            Some(&named("inventory::LoudError::what() const")),
        );
        assert_eq!(c.message.as_deref(), Some("inventory::LoudError"));
        assert!(
            c.evidence.contains(
                &"inventory::LoudError overrides what() (inventory::LoudError::what() const); its text is not read"
                    .to_string()
            ),
            "{c:?}"
        );
        assert!(!c.evidence.iter().any(|l| l.contains("quiet text")));
        // Inherited from a class of the program's own.
        let c = abort_class_with(
            std::slice::from_ref(&e),
            Some(&named("inventory::BaseError::what() const")),
        );
        assert_eq!(c.message.as_deref(), Some("inventory::LoudError"));
        assert!(
            c.evidence
                .iter()
                .any(|l| l.contains("is inventory::BaseError::what() const, which overrides")),
            "{c:?}"
        );
        // Not even a what(): the primary base is another polymorphic class.
        let c = abort_class_with(std::slice::from_ref(&e), Some(&named("Tag::tag() const")));
        assert_eq!(c.message.as_deref(), Some("inventory::LoudError"));
        assert!(
            c.evidence
                .iter()
                .any(|l| l.contains("holds Tag::tag() const")),
            "{c:?}"
        );
        // std::exception's what() returns a constant: the word after the
        // vtable pointer is the subclass's own field.
        let c = abort_class_with(
            &[thrown(
                "N9inventory10PlainErrorE",
                Some("/etc/inventory.toml"),
            )],
            Some(&named("std::exception::what() const")),
        );
        assert_eq!(c.message.as_deref(), Some("inventory::PlainError"));
        assert!(
            c.evidence.iter().any(|l| l.contains("stores no message")),
            "{c:?}"
        );
        // A standard type too: the function decides, not the name.
        let c = abort_class_with(
            &[thrown("St9exception", Some("heap garbage"))],
            Some(&named("std::exception::what() const")),
        );
        assert_eq!(c.message.as_deref(), Some("std::exception"));
    }

    /// With no function, or one without a name, only standard types are
    /// read, as before.
    #[test]
    fn unknown_what_reads_standard_types_only() {
        let unnamed = WhatFunction::Unnamed("no captured mapping holds 0x7f0000001000".into());
        for what in [None, Some(&unnamed)] {
            let c = abort_class_with(&[thrown("St12out_of_range", Some("index 9"))], what);
            assert_eq!(c.message.as_deref(), Some("std::out_of_range: index 9"));
            let c = abort_class_with(&[thrown("N9inventory11ConfigErrorE", Some("bad"))], what);
            assert_eq!(c.message.as_deref(), Some("inventory::ConfigError"));
            assert!(
                c.evidence
                    .iter()
                    .any(|l| l.starts_with("what() of inventory::ConfigError is not read")),
                "{c:?}"
            );
            // std::exception stores no message.
            let c = abort_class_with(&[thrown("St9exception", Some("junk"))], what);
            assert_eq!(c.message.as_deref(), Some("std::exception"));
        }
        let c = abort_class_with(
            &[thrown("N9inventory11ConfigErrorE", Some("bad"))],
            Some(&unnamed),
        );
        assert!(
            c.evidence
                .iter()
                .any(|l| l.contains("(no captured mapping holds")),
            "{c:?}"
        );
    }

    #[test]
    fn libc_messages_name_the_abort() {
        let abort = |m: &str| abort_class(&[libc_said(source::ABORT, m)]);
        assert_eq!(
            abort("free(): double free detected in tcache 2\n").class,
            "double-free"
        );
        assert_eq!(
            abort("double free or corruption (out)\n").class,
            "double-free"
        );
        assert_eq!(
            abort("malloc(): corrupted top size\n").class,
            "heap-corruption"
        );
        assert_eq!(
            abort("munmap_chunk(): invalid pointer\n").class,
            "heap-corruption"
        );
        assert_eq!(
            abort("*** buffer overflow detected ***: terminated\n").class,
            "buffer-overflow"
        );
        let c = abort("*** stack smashing detected ***: terminated\n");
        assert_eq!(c.class, "stack-smashing");
        assert_eq!(
            c.message.as_deref(),
            Some("*** stack smashing detected ***: terminated")
        );
        let c = abort("t: t.c:7: main: Assertion `x > 0' failed.\n");
        assert_eq!(c.class, "assertion-failure");
        assert_eq!(
            c.message.as_deref(),
            Some("t: t.c:7: main: Assertion `x > 0' failed.")
        );
        let c = abort("");
        assert_eq!((c.class, c.message), ("abort", None));
        assert_eq!(abort_class(&[]).class, "abort");
    }

    #[test]
    fn no_signal_is_unknown() {
        let f = Facts {
            signal: None,
            sp: None,
            ip: None,
            sp_region: None,
            return_addresses: &[],
            libc: &[],
            what_function: None,
        };
        assert_eq!(classify(&f).class, "unknown");
    }
}
