//! The classification rules on records written out by hand: faults,
//! stack overflows, other signals, kills from others, uncaught C++
//! exceptions and glibc's abort messages.

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
