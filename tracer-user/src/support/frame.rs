//! One frame of a stack, as reports show it, and the frame policy every
//! stage shares: which frames are libc's abort machinery, and which one
//! a report points at.
//!
//! The type lives below the stages that make frames (symbolization), read
//! them (classification, the crash store's groups) and write them
//! (reports), so that none of them reaches up into another for it.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub address: String,
    pub module: Option<String>,
    pub build_id: Option<String>,
    pub offset: Option<String>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub inlined: bool,
}

impl Frame {
    /// A frame known only by its address.
    pub fn unknown(address: u64) -> Self {
        Self {
            address: format!("{address:#x}"),
            module: None,
            build_id: None,
            offset: None,
            function: None,
            file: None,
            line: None,
            column: None,
            inlined: false,
        }
    }
}

/// libc functions on the way from `abort()` or a fatal check to the signal:
/// not where the problem is, so skipped by summaries and fingerprints.
const ABORT_PATH: &[&str] = &[
    "raise",
    "abort",
    "gsignal",
    "pthread_kill",
    "__pthread_kill_implementation",
    "__pthread_kill_internal",
    "__GI_raise",
    "__GI_abort",
    "__libc_message",
    "__libc_message_impl",
    "malloc_printerr",
    "__assert_fail",
    "__assert_fail_base",
    "__stack_chk_fail",
    "__fortify_fail",
    "__chk_fail",
];

/// True for libc's abort machinery, under any of glibc's internal aliases.
pub fn on_abort_path(function: &str) -> bool {
    let name = function
        .trim_start_matches("__GI_")
        .trim_start_matches("__GI___");
    ABORT_PATH
        .iter()
        .any(|p| p.trim_start_matches("__") == name.trim_start_matches("__"))
}

/// Classes whose fault is detected inside libc on behalf of its caller.
const CAUGHT_BY_LIBC: &[&str] = &[
    "abort",
    "uncaught-exception",
    "assertion-failure",
    "double-free",
    "heap-corruption",
    "stack-smashing",
    "buffer-overflow",
];

/// The frame a report points at: for faults libc caught on its caller's
/// behalf, the first frame outside libc; otherwise the first frame that
/// is not libc's abort machinery.
pub fn crash_site<'f>(class: &str, frames: &'f [Frame]) -> Option<&'f Frame> {
    let in_libc = |f: &Frame| {
        f.module
            .as_deref()
            .and_then(|m| Path::new(m).file_name())
            .and_then(|n| n.to_str())
            .is_some_and(|n| {
                n.starts_with("libc.so") || n.starts_with("libc-") || n.starts_with("libstdc++.so")
            })
    };
    // Inline wrappers from system headers (fortified memset, ...) are libc's
    // too, compiled into the caller.
    let system_header = |f: &Frame| {
        f.file
            .as_deref()
            .is_some_and(|p| p.starts_with("/usr/include/"))
    };
    if CAUGHT_BY_LIBC.contains(&class)
        && let Some(f) = frames
            .iter()
            .find(|f| f.function.is_some() && !in_libc(f) && !system_header(f))
    {
        return Some(f);
    }
    first_meaningful(frames)
}

/// The first frame that is not libc's abort machinery.
fn first_meaningful(frames: &[Frame]) -> Option<&Frame> {
    frames
        .iter()
        .find(|f| {
            f.function
                .as_deref()
                .is_some_and(|name| !on_abort_path(name))
        })
        .or_else(|| frames.first())
}

/// `function at file:line`, or `function in module` without a line.
pub fn describe(f: &Frame) -> String {
    let func = f.function.as_deref().unwrap_or("??");
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{func} at {file}:{line}"),
        _ => format!(
            "{func} in {}",
            f.module.as_deref().unwrap_or("an unknown module")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_path_under_glibc_aliases() {
        for name in [
            "abort",
            "__GI_abort",
            "raise",
            "__GI___assert_fail",
            "pthread_kill",
        ] {
            assert!(on_abort_path(name), "{name}");
        }
        for name in ["main", "crash", "abort_handler"] {
            assert!(!on_abort_path(name), "{name}");
        }
    }
}
