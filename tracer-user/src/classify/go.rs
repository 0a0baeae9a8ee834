//! Go crashes: classes from what the runtime said and where it said it.
//!
//! A Go process that dies of a panic or a fatal runtime error tells why in
//! two places crashtrace sees: the argument of `runtime.throw`/`fatal`
//! (read by the probe), and the text the runtime printed while dying (its
//! last words: `panic: ...` or `fatal error: ...`, then the goroutine
//! trace). The class comes from that text, matched against the runtime's
//! own fixed messages; a panic with the program's own value is `go-panic`,
//! any other runtime fatal error `go-fatal-error`.

use tracer_common::evidence_source as source;

use super::{Classification, NULL_PAGE_LIMIT, abort::abort_path};
use crate::events::{EvidenceRecord, SignalRecord};

pub mod goroutines;
mod printed;

use printed::Printed;

/// What a dying Go process left behind.
pub struct GoFacts<'a> {
    /// Calls into the runtime's (and libc's) fatal paths, in order.
    pub evidence: &'a [EvidenceRecord],
    /// What it printed to stderr while dying.
    pub last_words: &'a str,
    /// The signal that ended it, if one did (GOTRACEBACK=crash, a kill).
    pub signal: Option<&'a SignalRecord>,
    /// The first run of an executable that died before its runtime probes
    /// were attached: what it printed is all there is (see
    /// [`first_run_crash`]).
    pub first_run: bool,
}

/// Whether what a process on probation printed before it exited with
/// wait status `status` is a Go runtime's crash: exit status 2 (Go's for
/// every panic and fatal error), a `panic: `, `fatal error: ` or signal
/// headline, and a goroutine trace. A Go program that exits 2 on its own
/// (`flag` does on bad usage) prints no trace.
pub fn first_run_crash(words: &str, status: u32) -> bool {
    let exited_2 = status & 0x7f == 0 && (status >> 8) & 0xff == 2;
    let text = Printed::parse(words);
    let headline = text.panic.is_some() || text.fatal_error.is_some() || text.signal_dump.is_some();
    exited_2 && headline && text.goroutine.is_some()
}

/// A Go classification, with what else the report says about Go.
pub struct GoClassification {
    pub classification: Classification,
    pub goroutine: Option<u64>,
    pub tags: Vec<String>,
    /// The signal the runtime said it died of, when it printed one.
    pub printed_signal: Option<PrintedSignal>,
}

/// A signal as the Go runtime printed it: `SIGTRAP: trace trap` then
/// `PC=… m=0 sigcode=128`, or `[signal SIGSEGV: … code=0x1 addr=0x0 …]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintedSignal {
    pub name: String,
    pub code: Option<i32>,
    pub fault_addr: Option<u64>,
}

/// Whether the records show the Go runtime's fatal path.
pub fn is_go_death(evidence: &[EvidenceRecord]) -> bool {
    evidence.iter().any(|e| {
        matches!(
            e.source,
            source::GO_FATALPANIC
                | source::GO_FATALTHROW
                | source::GO_THROW
                | source::GO_STARTPANIC
        )
    })
}

/// Runtime messages and the class each means, matched as substrings of
/// the panic or fatal-error text (Go 1.17 to current wording).
const MESSAGES: &[(&str, &str)] = &[
    ("assignment to entry in nil map", "nil-map-write"),
    ("index out of range", "index-out-of-range"),
    ("slice bounds out of range", "index-out-of-range"),
    ("send on closed channel", "closed-channel-operation"),
    ("close of closed channel", "closed-channel-operation"),
    ("close of nil channel", "closed-channel-operation"),
    ("concurrent map writes", "concurrent-map-access"),
    ("concurrent map read and map write", "concurrent-map-access"),
    (
        "concurrent map iteration and map write",
        "concurrent-map-access",
    ),
    ("all goroutines are asleep - deadlock!", "deadlock"),
    (
        "no goroutines (main called runtime.goexit) - deadlock!",
        "deadlock",
    ),
    ("stack overflow", "stack-overflow"),
    ("goroutine stack exceeds", "stack-overflow"),
    ("out of memory", "out-of-memory"),
    ("integer divide by zero", "divide-by-zero"),
];

pub fn classify_go(facts: &GoFacts) -> GoClassification {
    let text = Printed::parse(facts.last_words);
    let thrown = facts
        .evidence
        .iter()
        .find(|e| e.source == source::GO_THROW)
        .and_then(|e| e.text.clone());
    let probed_panic = facts
        .evidence
        .iter()
        .any(|e| e.source == source::GO_FATALPANIC);
    let printed_panic = facts.first_run && text.panic.is_some() && text.fatal_error.is_none();
    let panicked = probed_panic || printed_panic;
    let fatal = thrown.is_some()
        || facts
            .evidence
            .iter()
            .any(|e| e.source == source::GO_FATALTHROW);
    let mut tags = Vec::new();

    // The message: what `throw` was given, else the printed headline.
    let message = thrown
        .clone()
        .or_else(|| text.fatal_error.clone())
        .or_else(|| text.panic.clone())
        .or_else(|| text.signal_dump.clone());
    let mut c = match (&message, panicked, fatal) {
        (Some(m), _, _) if is_cgo_signal(m) || text.in_cgo => {
            tags.push("cgo".to_string());
            cgo_crash(facts, &text, m)
        }
        // Only a dump: the runtime caught a signal it could not turn into
        // a panic (`runtime.Breakpoint`, a fault outside Go code's reach).
        (Some(m), _, _)
            if thrown.is_none() && text.fatal_error.is_none() && text.panic.is_none() =>
        {
            by_signal(m, &text)
        }
        (Some(m), _, _) => by_message(m, &text, panicked && !fatal),
        (None, true, _) => Classification::new("go-panic"),
        (None, false, true) => Classification::new("go-fatal-error"),
        (None, false, false) => Classification::new("unknown")
            .because("the Go runtime began to crash but said nothing crashtrace saw"),
    };
    if probed_panic {
        c = c.because("runtime.fatalpanic was entered: a panic no deferred recover() stopped");
    }
    if facts.first_run {
        c = c.because(
            "the first run of this executable exited with status 2 after printing a Go crash, before crashtrace had attached its Go probes: the class comes from what the runtime printed",
        );
    }
    if let Some(t) = &thrown {
        c = c.because(format!("the runtime threw {t:?} (runtime.throw/fatal)"));
    } else if fatal {
        c = c.because("runtime.fatalthrow was entered: a fatal runtime error");
    }
    if let Some(line) = &text.signal_line {
        c = c.because(format!("the runtime reported {line}"));
    }
    for note in text.panic_history() {
        c = c.because(note);
    }
    if c.message.is_none() {
        c.message = message;
    }
    let printed_signal = text.signal_name.clone().map(|name| PrintedSignal {
        name,
        code: text.signal_code,
        fault_addr: text.fault_addr,
    });
    GoClassification {
        classification: c,
        goroutine: text.goroutine,
        tags,
        printed_signal,
    }
}

/// A fatal signal the runtime caught and died of, from its dump.
fn by_signal(dump: &str, text: &Printed) -> Classification {
    signal_class(text.signal_name.as_deref(), text.fault_addr)
        .because(format!("the runtime caught {dump:?} and died of it"))
}

/// The class of a fatal signal the runtime printed, by name and address.
fn signal_class(name: Option<&str>, fault_addr: Option<u64>) -> Classification {
    match (name, fault_addr) {
        (Some("SIGTRAP"), _) => Classification::new("breakpoint").because(
            "a breakpoint or trap instruction ran with no debugger attached (runtime.Breakpoint)",
        ),
        (Some("SIGSEGV"), Some(addr)) if addr < NULL_PAGE_LIMIT => {
            Classification::new("null-pointer-dereference")
                .because(format!("SIGSEGV at address {addr:#x}, in the NULL page"))
        }
        (Some("SIGSEGV"), Some(addr)) => Classification::new("invalid-memory-access")
            .because(format!("SIGSEGV at address {addr:#x}")),
        (Some("SIGBUS"), _) => Classification::new("bus-error"),
        (Some("SIGILL"), _) => Classification::new("illegal-instruction"),
        (Some("SIGFPE"), _) => Classification::new("arithmetic-error"),
        (Some("SIGABRT"), _) => Classification::new("abort"),
        _ => Classification::new("go-fatal-error"),
    }
}

fn by_message(message: &str, text: &Printed, is_panic: bool) -> Classification {
    let lower = message.to_ascii_lowercase();
    let said = |c: Classification| {
        c.because(format!(
            "the runtime said {:?}",
            first_line(message).trim_end()
        ))
    };
    if lower.contains("nil pointer dereference") || lower.contains("invalid memory address") {
        return match text.fault_addr {
            Some(addr) if addr >= NULL_PAGE_LIMIT => {
                said(Classification::new("invalid-memory-access")).because(format!(
                    "the faulting address {addr:#x} is not near NULL: a wild or dangling pointer"
                ))
            }
            Some(addr) => said(Classification::new("null-pointer-dereference")).because(format!(
                "the faulting address {addr:#x} is in the NULL page"
            )),
            None => said(Classification::new("null-pointer-dereference")),
        };
    }
    if let Some(&(_, class)) = MESSAGES.iter().find(|(m, _)| lower.contains(m)) {
        return said(Classification::new(class));
    }
    if is_panic {
        said(Classification::new("go-panic"))
    } else {
        said(Classification::new("go-fatal-error"))
    }
}

/// The runtime's words when a signal arrives in non-Go code.
fn is_cgo_signal(message: &str) -> bool {
    message.contains("signal arrived during cgo execution")
        || message.contains("unexpected signal during runtime execution")
}

/// A signal in C code called from Go: the class comes from the C side's
/// evidence (libc's abort message, or the fault the runtime printed).
fn cgo_crash(facts: &GoFacts, text: &Printed, message: &str) -> Classification {
    let name = text.signal_name.as_deref().or_else(|| {
        text.signal_dump
            .as_deref()
            .and_then(|d| d.split(':').next())
    });
    let mut c = if facts.evidence.iter().any(|e| e.source == source::ABORT) {
        abort_path(facts.evidence, None)
    } else {
        signal_class(name, text.fault_addr)
    };
    c = c.because(format!(
        "the runtime said {:?}: the signal arrived while C code called through cgo ran",
        if text.in_cgo {
            "signal arrived during cgo execution"
        } else {
            first_line(message)
        }
    ));
    if c.message.is_none() {
        c.message = Some(message.to_string());
    }
    c
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(source: u32, text: Option<&str>) -> EvidenceRecord {
        EvidenceRecord {
            boot_ns: 0,
            pid: 1,
            tid: 1,
            source,
            line: 0,
            text: text.map(str::to_string),
            file: None,
            function: None,
            code: 0,
        }
    }

    fn class(evidence: &[EvidenceRecord], words: &str) -> (&'static str, Option<String>) {
        let c = classify_go(&GoFacts {
            evidence,
            last_words: words,
            signal: None,
            first_run: false,
        });
        (c.classification.class, c.classification.message)
    }

    #[test]
    fn panics_by_message() {
        let p = [said(source::GO_FATALPANIC, None)];
        let nil = "panic: runtime error: invalid memory address or nil pointer dereference\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x45a1b2]\n\ngoroutine 7 [running]:\nmain.f()\n";
        assert_eq!(class(&p, nil).0, "null-pointer-dereference");
        let wild = nil.replace("addr=0x0", "addr=0xdeadbeef0");
        assert_eq!(class(&p, &wild).0, "invalid-memory-access");
        assert_eq!(
            class(
                &p,
                "panic: assignment to entry in nil map\n\ngoroutine 1 [running]:\n"
            ),
            (
                "nil-map-write",
                Some("assignment to entry in nil map".to_string())
            )
        );
        assert_eq!(
            class(
                &p,
                "panic: runtime error: index out of range [5] with length 3\n\n"
            )
            .0,
            "index-out-of-range"
        );
        assert_eq!(
            class(&p, "panic: close of nil channel\n\n").0,
            "closed-channel-operation"
        );
        assert_eq!(
            class(&p, "panic: runtime error: integer divide by zero\n\n").0,
            "divide-by-zero"
        );
        let own = class(
            &p,
            "panic: config missing: db\nsecond line\n\ngoroutine 1 [running]:\n",
        );
        assert_eq!(
            own,
            ("go-panic", Some("config missing: db\nsecond line".into()))
        );
    }

    #[test]
    fn fatal_errors_by_thrown_message() {
        let t = |m: &str| {
            [
                said(source::GO_THROW, Some(m)),
                said(source::GO_FATALTHROW, None),
            ]
        };
        assert_eq!(
            class(&t("concurrent map writes"), "").0,
            "concurrent-map-access"
        );
        assert_eq!(
            class(&t("all goroutines are asleep - deadlock!"), "").0,
            "deadlock"
        );
        assert_eq!(class(&t("stack overflow"), "").0, "stack-overflow");
        assert_eq!(class(&t("out of memory"), "").0, "out-of-memory");
        assert_eq!(class(&t("schedule: holding locks"), "").0, "go-fatal-error");
    }

    #[test]
    fn fatal_error_from_printout_when_throw_is_inlined() {
        let e = [said(source::GO_FATALTHROW, None)];
        let words = "fatal error: concurrent map read and map write\n\ngoroutine 9 [running]:\n";
        let c = classify_go(&GoFacts {
            evidence: &e,
            last_words: words,
            signal: None,
            first_run: false,
        });
        assert_eq!(c.classification.class, "concurrent-map-access");
        assert_eq!(c.goroutine, Some(9));
    }

    #[test]
    fn cgo_aborts_take_libcs_message() {
        let e = [
            said(
                source::ABORT,
                Some("free(): double free detected in tcache 2\n"),
            ),
            said(source::GO_STARTPANIC, None),
        ];
        let words = "SIGABRT: abort\nPC=0x7f0e8682eeec m=0 sigcode=18446744073709551610\nsignal arrived during cgo execution\n\ngoroutine 1 [syscall]:\n";
        let c = classify_go(&GoFacts {
            evidence: &e,
            last_words: words,
            signal: None,
            first_run: false,
        });
        assert_eq!(c.classification.class, "double-free");
        assert_eq!(c.tags, ["cgo"]);
        assert_eq!(c.goroutine, Some(1));
    }

    #[test]
    fn cgo_signals_take_the_c_class() {
        let e = [said(
            source::GO_THROW,
            Some("unexpected signal during runtime execution"),
        )];
        let words = "fatal error: unexpected signal during runtime execution\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a2b1c]\n\nruntime stack:\n";
        let c = classify_go(&GoFacts {
            evidence: &e,
            last_words: words,
            signal: None,
            first_run: false,
        });
        assert_eq!(c.classification.class, "null-pointer-dereference");
        assert_eq!(c.tags, ["cgo"]);
    }

    #[test]
    fn a_caught_trap_is_a_breakpoint_with_the_printed_signal() {
        let e = [said(source::GO_STARTPANIC, None)];
        let words = "SIGTRAP: trace trap\nPC=0x46a3c1 m=0 sigcode=128\n\ngoroutine 1 gp=0xc000002380 m=0 mp=0x54f6a0 [running]:\nruntime.breakpoint()\n";
        let c = classify_go(&GoFacts {
            evidence: &e,
            last_words: words,
            signal: None,
            first_run: false,
        });
        assert_eq!(c.classification.class, "breakpoint");
        assert_eq!(
            c.classification.message.as_deref(),
            Some("SIGTRAP: trace trap")
        );
        assert_eq!(
            c.printed_signal,
            Some(PrintedSignal {
                name: "SIGTRAP".into(),
                code: Some(128),
                fault_addr: None,
            })
        );
        assert_eq!(c.goroutine, Some(1));
    }

    #[test]
    fn printed_signals_keep_code_and_address() {
        let words = "SIGABRT: abort\nPC=0x7f0e8682eeec m=0 sigcode=18446744073709551610\nsignal arrived during cgo execution\n";
        let c = classify_go(&GoFacts {
            evidence: &[said(source::GO_STARTPANIC, None)],
            last_words: words,
            signal: None,
            first_run: false,
        });
        assert_eq!(c.printed_signal.and_then(|p| p.code), Some(-6));
        let words = "panic: runtime error: invalid memory address or nil pointer dereference\n[signal SIGSEGV: segmentation violation code=0x2 addr=0x18 pc=0x45a1b2]\n";
        let c = classify_go(&GoFacts {
            evidence: &[said(source::GO_FATALPANIC, None)],
            last_words: words,
            signal: None,
            first_run: false,
        });
        assert_eq!(c.classification.class, "null-pointer-dereference");
        assert_eq!(
            c.printed_signal,
            Some(PrintedSignal {
                name: "SIGSEGV".into(),
                code: Some(2),
                fault_addr: Some(0x18),
            })
        );
    }
}
