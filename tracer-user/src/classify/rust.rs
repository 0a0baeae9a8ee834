//! Rust crashes: panics and the standard library's stack-overflow abort.
//!
//! A Rust panic passes the standard library's panic handler (probed, with
//! the panic's location) and ends in status 101 or, with `panic=abort`, in
//! `abort()`. A stack overflow hits the guard page; the standard library's
//! SIGSEGV handler prints "has overflowed its stack" and aborts. Both show
//! in the frames by the standard library's own function names, which is
//! the evidence used here.

use tracer_common::evidence_source as source;

use super::Classification;
use crate::{events::EvidenceRecord, report::Frame};

/// The standard library's guard-page handler (`std::sys::pal::unix::` in
/// current versions, `std::sys::unix::` before).
const STACK_OVERFLOW_HANDLER: &str = "stack_overflow::imp::signal_handler";

/// Frames of the panic machinery, between the panic and the code that
/// panicked.
fn is_panic_machinery(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "std::panicking::",
        "core::panicking::",
        "std::sys::backtrace::",
        "std::process::abort",
        "std::sys::pal::unix::abort_internal",
        "__rustc::",
        "rust_begin_unwind",
        "core::option::",
        "core::result::",
        "core::panic::",
        "std::rt::begin_panic",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The frame where a Rust panic happened: the first one below the first
/// run of panic machinery (libc's abort frames may come before it, the
/// runtime's own `catch_unwind` frames after).
pub fn panic_site(frames: &[Frame]) -> Option<&Frame> {
    let machinery = |f: &Frame| f.function.as_deref().is_some_and(is_panic_machinery);
    let first = frames.iter().position(machinery)?;
    frames[first..]
        .iter()
        .find(|f| f.function.is_some() && !machinery(f))
}

/// A Rust class, when the records show one.
pub fn classify_rust(evidence: &[EvidenceRecord], frames: &[Frame]) -> Option<Classification> {
    let names = || frames.iter().filter_map(|f| f.function.as_deref());
    if let Some(handler) = names().find(|n| n.ends_with(STACK_OVERFLOW_HANDLER)) {
        return Some(
            Classification::new("stack-overflow")
                .because(format!(
                    "the Rust standard library's guard-page handler ({handler}) caught a SIGSEGV on the stack guard and aborted"
                ))
                .saying(Some("the thread overflowed its stack".into())),
        );
    }
    let probe = evidence.iter().find(|e| e.source == source::RUST_PANIC);
    let in_frames = names().any(|n| {
        n.starts_with("std::panicking::")
            || n.ends_with("rust_begin_unwind")
            || n.starts_with("core::panicking::")
    });
    if probe.is_none() && !in_frames {
        return None;
    }
    let mut c = Classification::new("rust-panic");
    if probe.is_some() {
        c = c.because("the Rust panic handler (rust_begin_unwind) ran");
    }
    if in_frames {
        c = c.because("the stack passes through the Rust panic machinery");
    }
    // The probe's location is trusted only when a frame agrees with it.
    let site = panic_site(frames);
    let probed = probe.and_then(|p| Some((p.file.as_deref()?, p.line)));
    let location = match (probed, site) {
        (Some((file, line)), Some(f))
            if f.line == Some(line) && f.file.as_deref().is_some_and(|ff| ff.ends_with(file)) =>
        {
            c = c.because(format!(
                "the panic's location {file}:{line} matches the frame {}",
                f.function.as_deref().unwrap_or("?")
            ));
            Some(format!("{file}:{line}"))
        }
        (_, Some(f)) => f
            .file
            .as_deref()
            .zip(f.line)
            .map(|(file, line)| format!("{file}:{line}")),
        (Some((file, line)), None) => Some(format!("{file}:{line}")),
        (None, None) => None,
    };
    c.message = location.map(|l| format!("panicked at {l}"));
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: Option<&str>, line: Option<u32>) -> Frame {
        let mut f = Frame::unknown(0x1000);
        f.function = Some(function.into());
        f.file = file.map(str::to_string);
        f.line = line;
        f
    }

    #[test]
    fn a_panic_points_below_the_machinery() {
        let frames = [
            frame("__rustc::rust_begin_unwind", None, None),
            frame("core::panicking::panic_fmt", None, None),
            frame("panicky::load_config", Some("/src/main.rs"), Some(8)),
            frame("panicky::main", Some("/src/main.rs"), Some(20)),
        ];
        let probe = EvidenceRecord {
            boot_ns: 0,
            pid: 1,
            tid: 1,
            source: source::RUST_PANIC,
            line: 8,
            text: None,
            file: Some("src/main.rs".into()),
            function: None,
            code: 0,
        };
        let c = classify_rust(&[probe], &frames).unwrap();
        assert_eq!(c.class, "rust-panic");
        assert_eq!(c.message.as_deref(), Some("panicked at src/main.rs:8"));
    }

    #[test]
    fn the_guard_page_handler_means_stack_overflow() {
        let frames = [
            frame("__GI_abort", None, None),
            frame(
                "std::sys::pal::unix::stack_overflow::imp::signal_handler",
                None,
                None,
            ),
        ];
        assert_eq!(classify_rust(&[], &frames).unwrap().class, "stack-overflow");
    }

    #[test]
    fn native_frames_are_not_rust() {
        let frames = [frame("main", None, None)];
        assert!(classify_rust(&[], &frames).is_none());
    }
}
