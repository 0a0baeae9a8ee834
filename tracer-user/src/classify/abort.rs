//! What a process said on its way to `abort()`: glibc's message for its
//! fatal checks, or the C++ exception nothing caught. A SIGABRT alone only
//! says that something called `abort()`; these name the cause.

use tracer_common::evidence_source as source;

use super::Classification;
use crate::events::EvidenceRecord;

/// What libc said on its way to `abort()`: glibc leaves the message of
/// every fatal check (malloc, assert, stack protector, fortify) in
/// `__abort_msg`, which the `abort` probe reads.
pub(super) fn abort_path(libc: &[EvidenceRecord]) -> Classification {
    let abort = libc.iter().find(|e| e.source == source::ABORT);
    if let Some(c) = abort.and_then(uncaught_exception) {
        return c;
    }
    let Some(message) = abort
        .and_then(|e| e.text.as_deref())
        .map(|t| t.trim_end().to_string())
    else {
        let c = Classification::new("abort");
        return if abort.is_some() {
            c.because("abort() was called and libc left no message")
        } else {
            c
        };
    };
    let (class, why) = if message.contains("double free") {
        ("double-free", "glibc's malloc found a block freed twice")
    } else if is_heap_message(&message) {
        ("heap-corruption", "a glibc malloc consistency check failed")
    } else if message.contains("stack smashing detected") {
        (
            "stack-smashing",
            "__stack_chk_fail: a function's stack protector canary was overwritten before it returned",
        )
    } else if message.contains("buffer overflow detected") {
        (
            "buffer-overflow",
            "a fortified libc function (_FORTIFY_SOURCE) caught a write past the end of its buffer",
        )
    } else if message.contains("Assertion") && message.contains("failed") {
        (
            "assertion-failure",
            "__assert_fail reported a failed assertion",
        )
    } else {
        ("abort", "abort() was called after libc printed a message")
    };
    Classification::new(class)
        .because(format!("libc's abort message: {message:?}"))
        .because(why)
        .saying(Some(message))
}

/// Standard exception types whose message is the `__cow_string` right
/// after the vtable pointer (`std::runtime_error`, `std::logic_error` and
/// the library's subclasses): for these, the text found there is `what()`.
const STD_EXCEPTIONS: &[&str] = &[
    "std::exception",
    "std::runtime_error",
    "std::logic_error",
    "std::invalid_argument",
    "std::domain_error",
    "std::length_error",
    "std::out_of_range",
    "std::range_error",
    "std::overflow_error",
    "std::underflow_error",
    "std::system_error",
    "std::ios_base::failure",
];

/// An uncaught C++ exception: the abort probe found one alive, with its
/// type (and the message of a standard exception type).
fn uncaught_exception(abort: &EvidenceRecord) -> Option<Classification> {
    // The probe puts the mangled type name in the second text, the
    // candidate message in the third.
    let mangled = abort.file.as_deref()?;
    let type_name = cpp_demangle::Symbol::new(format!("_ZTS{mangled}"))
        .ok()
        .and_then(|s| s.demangle().ok())
        .and_then(|d| d.strip_prefix("typeinfo name for ").map(str::to_string))
        .unwrap_or_else(|| mangled.to_string());
    let standard = STD_EXCEPTIONS.contains(&type_name.as_str())
        || type_name.starts_with("std::__cxx11::")
            && STD_EXCEPTIONS.contains(&type_name.replace("__cxx11::", "").as_str());
    let what = abort.function.as_deref().filter(|_| standard);
    let mut c = Classification::new("uncaught-exception")
        .because(format!(
            "abort() was called with a live C++ exception of type {type_name}: std::terminate after nothing caught it"
        ));
    c.message = Some(match what {
        Some(w) => {
            c = c.because(format!("what(): {w:?}"));
            format!("{type_name}: {w}")
        }
        None => {
            if abort.function.is_some() {
                c = c.because(format!(
                    "what() of {type_name} is not read: only standard exception types have a known layout"
                ));
            }
            type_name
        }
    });
    Some(c)
}

/// What a native program wrote to stderr before it died, where no more
/// specific evidence explains it: the last line before a bare `abort()`
/// becomes its message, and libstdc++'s terminate handler's `what():` line
/// the message of an exception whose text was not read.
pub fn native_last_words(c: &mut Classification, words: &str) {
    match c.class {
        "abort" if c.message.is_none() => {
            if let Some(line) = last_line(words) {
                c.evidence
                    .push(format!("it wrote to stderr before abort(): {line:?}"));
                c.message = Some(line.to_string());
            }
        }
        "uncaught-exception" => {
            let Some(type_name) = c.message.clone() else {
                return;
            };
            // Only a message that is still just the type name.
            if let Some(what) = terminate_what(words, &type_name) {
                c.evidence.push(format!(
                    "libstdc++'s terminate handler printed what(): {what:?}"
                ));
                c.message = Some(format!("{type_name}: {what}"));
            }
        }
        _ => {}
    }
}

/// Most bytes of a last line quoted as a message.
const LINE_MAX: usize = 512;

/// The last line with something on it, trimmed and bounded.
fn last_line(words: &str) -> Option<&str> {
    let line = words.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let end = (0..=line.len().min(LINE_MAX))
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    Some(&line[..end])
}

/// The `what()` text libstdc++'s verbose terminate handler printed for an
/// exception of `type_name`:
/// "terminate called after throwing an instance of 'T'\n  what():  TEXT".
fn terminate_what<'a>(words: &'a str, type_name: &str) -> Option<&'a str> {
    let header = format!("terminate called after throwing an instance of '{type_name}'\n");
    let at = words.rfind(&header)? + header.len();
    let text = words[at..].lines().next()?.strip_prefix("  what():  ")?;
    Some(text.trim_end())
}

/// glibc's malloc consistency checks all name the function or the chunk.
fn is_heap_message(message: &str) -> bool {
    const MARKERS: &[&str] = &[
        "malloc(",
        "malloc_consolidate(",
        "free(",
        "realloc(",
        "calloc(",
        "munmap_chunk(",
        "corrupted size",
        "corrupted double-linked list",
        "corrupted top size",
        "memalign(",
        "tcache",
        "_int_malloc",
        "_int_free",
    ];
    MARKERS.iter().any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_abort_takes_the_last_line_written() {
        let mut c = Classification::new("abort");
        native_last_words(&mut c, "starting\ngiving up: config missing\n\n");
        assert_eq!(c.message.as_deref(), Some("giving up: config missing"));
        assert!(c.evidence[0].contains("before abort()"));

        let mut told = Classification::new("abort").saying(Some("libc said".into()));
        native_last_words(&mut told, "something else\n");
        assert_eq!(told.message.as_deref(), Some("libc said"));
    }

    #[test]
    fn the_terminate_handler_s_what_line_completes_an_exception() {
        let words = "terminate called after throwing an instance of 'ConfigError'\n  what():  config missing: /etc/app.conf\n";
        let mut c = Classification::new("uncaught-exception").saying(Some("ConfigError".into()));
        native_last_words(&mut c, words);
        assert_eq!(
            c.message.as_deref(),
            Some("ConfigError: config missing: /etc/app.conf")
        );
        // Another type's line says nothing about this one.
        let mut other = Classification::new("uncaught-exception").saying(Some("Other".into()));
        native_last_words(&mut other, words);
        assert_eq!(other.message.as_deref(), Some("Other"));
    }
}
