//! What a process said on its way to `abort()`: glibc's message for its
//! fatal checks, or the C++ exception nothing caught. A SIGABRT alone only
//! says that something called `abort()`; these name the cause.

use tracer_common::evidence_source as source;

use super::Classification;
use crate::events::EvidenceRecord;

/// What libc said on its way to `abort()`: glibc leaves the message of
/// every fatal check (malloc, assert, stack protector, fortify) in
/// `__abort_msg`, which the `abort` probe reads.
pub(super) fn abort_path(
    libc: &[EvidenceRecord],
    what_function: Option<&WhatFunction>,
) -> Classification {
    let abort = libc.iter().find(|e| e.source == source::ABORT);
    if let Some(c) = abort.and_then(|a| uncaught_exception(a, what_function)) {
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
/// Only consulted when the function in the `what()` slot is not known.
/// (`std::exception` itself stores no message: its object is the vtable
/// pointer alone, and what follows it is not part of it.)
const STD_EXCEPTIONS: &[&str] = &[
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

/// libstdc++'s `what()` functions that return the string the first field
/// after the vtable pointer points at: `runtime_error::what` and
/// `logic_error::what` return their `__cow_string`'s characters (one
/// `mov 0x8(%rdi),%rax; ret`, which GCC 12's libstdc++ builds as a single
/// function with two names);
/// `future_error::what` and the C++11 ABI's `ios_base::failure::what` call
/// them on the same object, and the old ABI's `ios_base::failure::what`
/// returns its own `__cow_string` at the same place. A class whose
/// `what()` slot holds one of these keeps its message where the probe
/// copied it from, whatever the class is called.
const STORED_MESSAGE_WHAT: &[&str] = &[
    COMMON_WHAT[0],
    COMMON_WHAT[1],
    "std::future_error::what() const",
    "std::ios_base::failure::what() const",
    "std::ios_base::failure[abi:cxx11]::what() const",
];

/// `runtime_error::what` and `logic_error::what`: one function under two
/// names in libstdc++, so the name found does not tell which of the two
/// classes the type derives from.
const COMMON_WHAT: [&str; 2] = [
    "std::runtime_error::what() const",
    "std::logic_error::what() const",
];

/// `std::exception::what`, which returns the fixed text "std::exception".
const EXCEPTION_WHAT: &str = "std::exception::what() const";

/// The function in the `what()` slot of an uncaught exception's vtable, as
/// the report builder resolved its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WhatFunction {
    /// The function's (demangled) name.
    Named(String),
    /// Why it has no name (no captured mapping holds it, its file could not
    /// be read, no symbol covers it).
    Unnamed(String),
}

/// An uncaught C++ exception: the abort probe found one alive, with its
/// type, the string after its vtable pointer and the function in its
/// `what()` slot. The string is taken for `what()` only when that function
/// is known to return it, or, when the function is not known, for a
/// standard exception type.
fn uncaught_exception(
    abort: &EvidenceRecord,
    what_function: Option<&WhatFunction>,
) -> Option<Classification> {
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
    let copied = abort.function.as_deref();
    let mut c = Classification::new("uncaught-exception")
        .because(format!(
            "abort() was called with a live C++ exception of type {type_name}: std::terminate after nothing caught it"
        ));
    let (what, why) = match what_function {
        Some(WhatFunction::Named(f)) if STORED_MESSAGE_WHAT.contains(&f.as_str()) => {
            // A standard type says nothing new here; a class of the
            // program's own is trusted because of this.
            let function = if COMMON_WHAT.contains(&f.as_str()) {
                // One address with two names: the symbol table's choice
                // says nothing about which class the type derives from.
                format!("{f}, the standard what() of std::runtime_error and std::logic_error")
            } else {
                f.clone()
            };
            let why = (!standard).then(|| match copied {
                Some(_) => format!(
                    "what() of {type_name} is {function}, which returns the message stored in the exception"
                ),
                None => format!(
                    "what() of {type_name} is {function}, which returns the message stored in the exception, but it could not be read"
                ),
            });
            (copied, why)
        }
        Some(WhatFunction::Named(f)) if f == EXCEPTION_WHAT => (
            None,
            Some(format!(
                "what() of {type_name} is {f}, which returns a fixed text: the exception stores no message"
            )),
        ),
        Some(WhatFunction::Named(f)) if f.starts_with(&format!("{type_name}::")) => (
            None,
            Some(format!(
                "{type_name} overrides what() ({f}); its text is not read"
            )),
        ),
        Some(WhatFunction::Named(f)) if f.ends_with("::what() const") => (
            None,
            Some(format!(
                "what() of {type_name} is {f}, which overrides the standard one; its text is not read"
            )),
        ),
        Some(WhatFunction::Named(f)) => (
            None,
            Some(format!(
                "the what() slot of {type_name}'s vtable holds {f}, not a what() that returns a stored message; the message is not read"
            )),
        ),
        unknown => {
            // No vtable was checked, or its function has no name: only the
            // standard types' layout says where the message is.
            // `std::exception` has none to read.
            let why = (!standard && copied.is_some() && type_name != "std::exception").then(|| {
                match unknown {
                    Some(WhatFunction::Unnamed(reason)) => format!(
                        "what() of {type_name} is not read: the function in its what() slot is not known ({reason})"
                    ),
                    _ => format!(
                        "what() of {type_name} is not read: only standard exception types have a known layout"
                    ),
                }
            });
            (copied.filter(|_| standard), why)
        }
    };
    if let Some(why) = why {
        c = c.because(why);
    }
    c.message = Some(match what {
        Some(w) => {
            c = c.because(format!("what(): {w:?}"));
            format!("{type_name}: {w}")
        }
        None => type_name,
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
