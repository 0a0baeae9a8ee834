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
