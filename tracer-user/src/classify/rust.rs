//! Rust crashes: panics and the standard library's stack-overflow abort.
//!
//! A Rust panic passes the standard library's panic handler (probed, with
//! the panic's location; the message is what the panic hook then prints,
//! kept as the process's last words) and ends in status 101 or, with `panic=abort`, in
//! `abort()`. A stack overflow hits the guard page; the standard library's
//! SIGSEGV handler prints "has overflowed its stack" and aborts. Both show
//! in the frames by the standard library's own function names, which is
//! the evidence used here.

use tracer_common::evidence_source as source;

use super::Classification;
use crate::{events::EvidenceRecord, support::frame::Frame};

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
pub fn classify_rust(
    evidence: &[EvidenceRecord],
    frames: &[Frame],
    last_words: &str,
) -> Option<Classification> {
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
    c.message = location.as_ref().map(|l| format!("panicked at {l}"));
    if let Some(printed) = PrintedPanic::find(last_words) {
        // The hook's own line, when it is about this panic: its location
        // (with the column) agrees with the one established above.
        let agrees = location.as_deref().is_none_or(|l| {
            printed.location.starts_with(&format!("{l}:")) || l.ends_with(printed.location)
        });
        if agrees {
            c = c.because(format!(
                "the panic hook printed to stderr: panicked at {}: {:?}",
                printed.location, printed.message
            ));
            c.message = Some(format!(
                "panicked at {}: {}",
                printed.location, printed.message
            ));
        }
    }
    Some(c)
}

/// What the standard library's default panic hook printed.
#[derive(Debug, PartialEq, Eq)]
struct PrintedPanic<'a> {
    /// `FILE:LINE:COL`.
    location: &'a str,
    message: &'a str,
}

/// Most bytes of a panic message quoted in a report.
const MESSAGE_MAX: usize = 1024;

impl<'a> PrintedPanic<'a> {
    /// The last panic in `words`, in either of the hook's formats:
    /// `thread 'T' panicked at FILE:LINE:COL:\nMESSAGE` (Rust 1.73 and
    /// later; recent versions put ` (TID)` after the name) or
    /// `thread 'T' panicked at 'MESSAGE', FILE:LINE:COL` (before).
    fn find(words: &'a str) -> Option<Self> {
        // The hook's line starts "thread 'NAME'" (with " (TID)" after it
        // in recent versions); the last one is the panic that killed.
        const MARK: &str = " panicked at ";
        let start = words
            .match_indices("thread '")
            .filter(|&(i, _)| i == 0 || words.as_bytes()[i - 1] == b'\n')
            .filter_map(|(i, _)| {
                let line = words[i..].split('\n').next()?;
                Some(i + line.find(MARK)? + MARK.len())
            })
            .last()?;
        let rest = &words[start..];
        let (location, message) = if let Some(quoted) = rest.strip_prefix('\'') {
            let (message, after) = quoted.rsplit_once("', ")?;
            let location = after.lines().next()?;
            (location, message)
        } else {
            let (location, after) = rest.split_once(":\n")?;
            // The hook's own notes follow the message.
            let end = ["\nnote: ", "\nstack backtrace:"]
                .iter()
                .filter_map(|m| after.find(m))
                .min()
                .unwrap_or(after.len());
            (location, &after[..end])
        };
        let message = message.trim_end();
        let message = &message[..floor_char_boundary(message, MESSAGE_MAX)];
        (!location.is_empty() && !location.contains('\n')).then_some(Self { location, message })
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
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
        let c = classify_rust(std::slice::from_ref(&probe), &frames, "").unwrap();
        assert_eq!(c.class, "rust-panic");
        assert_eq!(c.message.as_deref(), Some("panicked at src/main.rs:8"));

        let words = "\nthread 'main' panicked at src/main.rs:8:5:\nconfig missing: /etc/x.toml\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        let c = classify_rust(std::slice::from_ref(&probe), &frames, words).unwrap();
        assert_eq!(
            c.message.as_deref(),
            Some("panicked at src/main.rs:8:5: config missing: /etc/x.toml")
        );
        // Another panic's text is not this one's message.
        let other = "thread 'main' panicked at src/other.rs:3:1:\nboom\n";
        let c = classify_rust(&[probe], &frames, other).unwrap();
        assert_eq!(c.message.as_deref(), Some("panicked at src/main.rs:8"));
    }

    #[test]
    fn both_hook_formats_are_read() {
        let new = PrintedPanic::find(
            "thread 'a' panicked at src/lib.rs:1:2:\nfirst\nthread 'b' (4242) panicked at src/x.rs:3:4:\nline one\nline two\n",
        )
        .unwrap();
        assert_eq!(new.location, "src/x.rs:3:4");
        assert_eq!(new.message, "line one\nline two");
        let old = PrintedPanic::find(
            "thread 'main' panicked at 'it's gone', src/main.rs:9:13\nnote: run with ...\n",
        )
        .unwrap();
        assert_eq!(old.location, "src/main.rs:9:13");
        assert_eq!(old.message, "it's gone");
        assert_eq!(PrintedPanic::find("no panic here"), None);
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
        assert_eq!(
            classify_rust(&[], &frames, "").unwrap().class,
            "stack-overflow"
        );
    }

    #[test]
    fn native_frames_are_not_rust() {
        let frames = [frame("main", None, None)];
        assert!(classify_rust(&[], &frames, "").is_none());
    }
}
