//! Assembling a [`CrashReport`] from one process's records: identity,
//! signal, outcome, symbolized frames, class and fingerprint.

use std::path::{Path, PathBuf};

use super::{
    CrashReport, Frame, Outcome, OutcomeKind, SCHEMA, SignalInfo,
    frames::{locate_file, symbolize_frames},
    oom,
    sender::describe_sender,
    time,
};
use crate::{
    classify::{
        Classification, Facts, GoFacts, WhatFunction, classify, classify_go, classify_rust,
        is_go_death, native_last_words, panic_site,
    },
    events::{SignalRecord, StateRecord, reg},
    locate::{self, Located},
    signals::{code_name, signal_name},
    symbolize::{ModuleRef, Symbolizer},
    tracker::Death,
    unwind::Unwinder,
};

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

pub struct ReportBuilder {
    symbolizer: Symbolizer,
    unwinder: Unwinder,
    host: String,
}

impl ReportBuilder {
    pub fn new(debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            symbolizer: Symbolizer::new(debug_dirs),
            unwinder: Unwinder::new(),
            host: hostname(),
        }
    }

    pub fn build(&mut self, death: &Death) -> CrashReport {
        let cause = death.cause();
        let state = death.state.as_deref();
        let mut diagnostics = Vec::new();

        let (frames, truncated, unwind_error) = match state {
            Some(s) => self.frames(death.pid, s, &mut diagnostics),
            None => (
                Vec::new(),
                false,
                Some("the thread's state was not captured".into()),
            ),
        };
        let go = is_go_death(&death.evidence);
        let frames = if go { goroutine_frames(frames) } else { frames };
        let unsymbolized = frames.iter().filter(|f| f.function.is_none()).count();

        // The what() of an uncaught C++ exception, named from the mappings
        // captured with the stack (the exception's code is on it).
        let what_function = death
            .evidence
            .iter()
            .find(|e| e.source == tracer_common::evidence_source::ABORT && e.code != 0)
            .map(|e| self.name_code(death.pid, state, e.code));
        let facts = Facts {
            signal: cause,
            sp: state.and_then(|s| s.regs).map(|r| r[reg::SP]),
            ip: state.and_then(|s| s.regs).map(|r| r[reg::IP]),
            sp_region: state.and_then(|s| s.sp_region),
            return_addresses: state.map(|s| s.kstack.as_slice()).unwrap_or(&[]),
            libc: &death.evidence,
            what_function: what_function.as_ref(),
        };
        let last_words = (!death.last_words.is_empty())
            .then(|| String::from_utf8_lossy(&death.last_words).into_owned());
        let mut rust = false;
        let sent_by_other = cause.is_some_and(|c| c.sender.is_some() && c.code <= 0);
        let oom_kill = death.oom.as_ref().and_then(|o| oom::classify(o, cause));
        let (mut classification, goroutine, mut tags) = if let Some(c) = oom_kill {
            (c, None, Vec::new())
        } else if go && !sent_by_other {
            let g = classify_go(&GoFacts {
                evidence: &death.evidence,
                last_words: last_words.as_deref().unwrap_or(""),
                signal: cause,
            });
            (g.classification, g.goroutine, g.tags)
        } else if let Some(c) = classify_rust(
            &death.evidence,
            &frames,
            last_words.as_deref().unwrap_or(""),
        )
        .filter(|_| !sent_by_other)
        {
            rust = true;
            (c, None, Vec::new())
        } else {
            (classify(&facts), None, Vec::new())
        };
        if go {
            go_signal_evidence(&mut classification, cause, last_words.as_deref());
        }
        if death.last_words_cut {
            diagnostics.push(format!(
                "last words cut at {} bytes per write and {} per process",
                tracer_common::LAST_WORDS_CHUNK,
                tracer_common::LAST_WORDS_MAX
            ));
        }
        if go && death.state.is_none() {
            tags.push("state-not-captured".into());
        }
        if !go && !rust {
            in_signal_handler(&mut classification, &frames);
            if let Some(words) = &last_words {
                native_last_words(&mut classification, words);
            }
        }
        let site = match (rust, classification.class) {
            (true, "rust-panic") => {
                panic_site(&frames).or_else(|| crash_site(classification.class, &frames))
            }
            // The guard-page handler runs on the signal stack: the code that
            // overflowed is past the signal frame.
            (true, "stack-overflow") => frames
                .iter()
                .skip_while(|f| f.function.as_deref() != Some("__restore_rt"))
                .skip(1)
                .find(|f| f.function.is_some())
                .or_else(|| crash_site(classification.class, &frames)),
            _ => crash_site(classification.class, &frames),
        };
        if let Some(f) = site {
            classification
                .evidence
                .push(format!("crashing frame: {}", describe_frame(f)));
        }

        let all_handled = !death.signals.is_empty() && death.signals.iter().all(|s| s.handled);
        let outcome = match (&death.exit, death.alive) {
            (Some(e), _) => Outcome::from_wait_status(e.status),
            (None, true) => Outcome::of(OutcomeKind::Survived),
            // A handled signal does not doom a process, so no exit record
            // follows: it survived the signal even if it has exited since.
            (None, false) if all_handled => Outcome::of(OutcomeKind::Survived),
            (None, false) => {
                diagnostics.push("the exit record was not seen (see loss records)".into());
                Outcome::of(OutcomeKind::Unknown)
            }
        };

        let (pid, tid, ppid, uid, comm) = identity(death, cause, state);
        let boot_ns = cause
            .map(|c| c.boot_ns)
            .or(state.map(|s| s.boot_ns))
            .unwrap_or(0);
        let summary = match &death.oom {
            Some(o) if classification.class == "oom-kill" => oom::summary(o),
            _ => summarize(classification.class, cause, site),
        };
        let fingerprint = fingerprint(classification.class, cause.map(|c| c.signo), &frames);
        CrashReport {
            schema: SCHEMA,
            record_type: "crash",
            time: time::rfc3339(time::wall_time_of_boot_ns(boot_ns)),
            host: self.host.clone(),
            pid,
            tid,
            ppid,
            uid,
            comm,
            exe: state
                .and_then(|s| s.exe.as_ref())
                .map(|p| p.display().to_string()),
            cmdline: state.map(|s| s.cmdline.clone()).unwrap_or_default(),
            runtime: if go {
                "go"
            } else if rust {
                "rust"
            } else {
                "native"
            },
            signal: cause.map(|c| signal_info(&mut self.symbolizer, c, &mut diagnostics)),
            outcome,
            class: classification.class,
            summary,
            evidence: classification.evidence,
            message: classification.message,
            last_words,
            goroutine,
            tags,
            frames,
            frames_truncated: truncated,
            unwind_error,
            unsymbolized_frames: unsymbolized,
            diagnostics,
            fingerprint,
            oom: death.oom.as_ref().map(oom::describe),
            signal_activity: death.activity.clone(),
        }
    }

    fn frames(
        &mut self,
        pid: u32,
        state: &StateRecord,
        diagnostics: &mut Vec<String>,
    ) -> (Vec<Frame>, bool, Option<String>) {
        // Held open until the report is built: see `locate`.
        let located: Vec<Option<Located>> = state
            .mappings
            .iter()
            .map(|m| locate_file(pid, m, diagnostics))
            .collect();
        let files: Vec<Option<PathBuf>> = located
            .iter()
            .map(|l| l.as_ref().map(Located::path))
            .collect();
        let unwound = self.unwinder.unwind(state, &files);
        // One look at each file for all the frames of this stack.
        let frames = symbolize_frames(
            &mut self.symbolizer.batch(),
            &unwound.frames,
            &state.mappings,
            &files,
            diagnostics,
        );
        (frames, unwound.truncated, unwound.error)
    }

    /// The function at `addr`, a code address the process's evidence
    /// names, from the mappings captured with its stack; or why it has no
    /// name.
    fn name_code(&mut self, pid: u32, state: Option<&StateRecord>, addr: u64) -> WhatFunction {
        let Some(state) = state else {
            return WhatFunction::Unnamed("the process's mappings were not captured".into());
        };
        let Some(mapping) = state
            .mappings
            .iter()
            .find(|m| m.executable && addr >= m.start && addr < m.end)
        else {
            return WhatFunction::Unnamed(format!("no captured mapping holds {addr:#x}"));
        };
        let located = match locate::locate(pid, mapping) {
            Ok(located) => located,
            Err(e) => return WhatFunction::Unnamed(e.to_string()),
        };
        let path = located.path();
        let module = ModuleRef {
            path: &path,
            start: mapping.start,
            file_offset: mapping.file_offset,
        };
        match self.symbolizer.symbolize(&module, addr, false) {
            Ok(sym) => match sym.frames.last().and_then(|f| f.function.as_deref()) {
                Some(name) => WhatFunction::Named(name.to_string()),
                None => WhatFunction::Unnamed(format!(
                    "no symbol covers {:#x} in {}",
                    sym.file_address,
                    mapping.path.as_deref().unwrap_or(&path).display()
                )),
            },
            Err(e) => WhatFunction::Unnamed(e.to_string()),
        }
    }
}

/// A fault inside a signal handler (a crash handler that crashes) is one
/// death: say so, and name the code the first signal interrupted.
fn in_signal_handler(c: &mut Classification, frames: &[Frame]) {
    let Some(trampoline) = frames
        .iter()
        .position(|f| f.function.as_deref() == Some("__restore_rt"))
        .filter(|&i| i > 0)
    else {
        return;
    };
    let interrupted = frames[trampoline + 1..]
        .iter()
        .find(|f| f.function.is_some())
        .map(describe_frame)
        .unwrap_or_else(|| "unknown code".into());
    c.evidence.push(format!(
        "this happened inside a signal handler: below the signal frame (__restore_rt), the interrupted code was {interrupted}"
    ));
}

/// How a signal fits a Go crash: the runtime raising SIGABRT on itself
/// after printing (GOTRACEBACK=crash), or a signal the runtime caught from
/// someone else and died of.
fn go_signal_evidence(c: &mut Classification, cause: Option<&SignalRecord>, words: Option<&str>) {
    let Some(sig) = cause else { return };
    if sig.sender.is_none() && sig.signo == libc::SIGABRT && sig.code <= 0 {
        c.evidence.push(
            "the runtime raised SIGABRT on itself after printing its trace (GOTRACEBACK=crash or a cgo abort)"
                .into(),
        );
    } else if sig.sender.is_some() && sig.handled {
        c.evidence.push(format!(
            "the Go runtime caught {}, printed its goroutines and crashed itself",
            signal_name(sig.signo)
        ));
        if c.message.is_none() {
            c.message = words.and_then(|w| w.lines().next()).map(str::to_string);
        }
    }
}

fn identity(
    death: &Death,
    cause: Option<&SignalRecord>,
    state: Option<&StateRecord>,
) -> (u32, u32, u32, u32, String) {
    if let Some(s) = state {
        let t = &s.thread;
        return (t.pid, t.tid, t.ppid, t.uid, t.comm.clone());
    }
    if let Some(c) = cause {
        let t = &c.target;
        return (t.pid, t.tid, t.ppid, t.uid, t.comm.clone());
    }
    (death.pid, death.pid, 0, 0, String::new())
}

fn signal_info(
    symbolizer: &mut Symbolizer,
    s: &SignalRecord,
    diagnostics: &mut Vec<String>,
) -> SignalInfo {
    let fault = matches!(
        s.signo,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL | libc::SIGTRAP
    ) && s.code > 0
        && s.code != 0x80;
    SignalInfo {
        number: s.signo,
        name: signal_name(s.signo),
        code: s.code,
        code_name: code_name(s.signo, s.code),
        errno: s.errno,
        fault_address: fault.then(|| format!("{:#x}", s.fault_addr)),
        // The task current when the kernel generates a signal (the one
        // that invoked the OOM killer, say) did not send it.
        sender: s
            .sender
            .as_ref()
            .filter(|_| !s.from_kernel)
            .map(|t| describe_sender(symbolizer, s, t, diagnostics)),
        sent_by_kernel: s.from_kernel,
    }
}

/// True for libc's abort machinery, under any of glibc's internal aliases.
pub(crate) fn on_abort_path(function: &str) -> bool {
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
/// A Go crash's frames without the runtime's panic and throw machinery on
/// top: they start where the goroutine was when it went wrong. All-runtime
/// stacks (the scheduler finding a deadlock) are kept whole.
fn goroutine_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let runtime = |f: &Frame| {
        f.function
            .as_deref()
            .is_some_and(|n| crate::golang::is_runtime_function(n) || n == "panic")
    };
    match frames
        .iter()
        .position(|f| !runtime(f) && f.function.is_some())
    {
        Some(first) if first > 0 => frames.into_iter().skip(first).collect(),
        _ => frames,
    }
}

fn crash_site<'f>(class: &str, frames: &'f [Frame]) -> Option<&'f Frame> {
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

fn describe_frame(f: &Frame) -> String {
    let func = f.function.as_deref().unwrap_or("??");
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{func} at {file}:{line}"),
        _ => format!(
            "{func} in {}",
            f.module.as_deref().unwrap_or("an unknown module")
        ),
    }
}

fn summarize(class: &str, cause: Option<&SignalRecord>, site: Option<&Frame>) -> String {
    let what = match class {
        "null-pointer-dereference" => "NULL pointer dereference".to_string(),
        "invalid-memory-access" => "invalid memory access".to_string(),
        "memory-permission-violation" => "memory access violating page permissions".to_string(),
        "stack-overflow" => "stack overflow".to_string(),
        "bus-error" => "bus error".to_string(),
        "divide-by-zero" => "integer division by zero".to_string(),
        "arithmetic-error" => "arithmetic exception".to_string(),
        "illegal-instruction" => "illegal instruction".to_string(),
        "breakpoint" => "breakpoint trap".to_string(),
        "seccomp-violation" => "system call refused by seccomp".to_string(),
        "resource-limit" => "resource limit exceeded".to_string(),
        "abort" => "abort()".to_string(),
        "assertion-failure" => "assertion failed".to_string(),
        "double-free" => "double free caught by malloc".to_string(),
        "heap-corruption" => "heap corruption caught by malloc".to_string(),
        "stack-smashing" => "stack buffer overflow caught by the stack protector".to_string(),
        "buffer-overflow" => "buffer overflow caught by _FORTIFY_SOURCE".to_string(),
        "uncaught-exception" => "uncaught C++ exception".to_string(),
        "rust-panic" => "Rust panic".to_string(),
        "nil-map-write" => "write to a nil map".to_string(),
        "index-out-of-range" => "index or slice bounds out of range".to_string(),
        "closed-channel-operation" => "send on or close of a closed channel".to_string(),
        "concurrent-map-access" => "concurrent map access".to_string(),
        "deadlock" => "deadlock: no goroutine can run".to_string(),
        "out-of-memory" => "out of memory".to_string(),
        "go-panic" => "unrecovered panic".to_string(),
        "go-fatal-error" => "fatal runtime error".to_string(),
        "killed-by-signal" => match cause {
            Some(c) if c.from_kernel => {
                format!("killed by {} from the kernel", signal_name(c.signo))
            }
            Some(c) => match &c.sender {
                Some(s) => format!(
                    "killed by {} from pid {} ({})",
                    signal_name(c.signo),
                    s.pid,
                    s.comm
                ),
                None if c.from_kernel => {
                    format!("killed by {} from the kernel", signal_name(c.signo))
                }
                None => format!("killed by {}", signal_name(c.signo)),
            },
            None => "killed by a signal".to_string(),
        },
        other => other.to_string(),
    };
    match (class, site) {
        ("killed-by-signal", _) | (_, None) => what,
        (_, Some(f)) => format!("{what} in {}", describe_frame(f)),
    }
}

/// A stable hash of the crash site: class, signal and the top meaningful
/// frames by function (or module file name and offset), independent of
/// ASLR, pids and the directory a binary was built in.
pub fn fingerprint(class: &str, signo: Option<i32>, frames: &[Frame]) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    };
    feed(class.as_bytes());
    feed(&signo.unwrap_or(0).to_le_bytes());
    let significant = frames
        .iter()
        .filter(|f| !f.function.as_deref().is_some_and(on_abort_path))
        .take(5);
    for f in significant {
        match &f.function {
            Some(name) => feed(name.as_bytes()),
            None => {
                let module = f.module.as_deref().map(|m| {
                    Path::new(m)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                feed(module.unwrap_or_default().as_bytes());
                feed(f.offset.as_deref().unwrap_or("").as_bytes());
            }
        }
    }
    format!("{hash:016x}")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, module: &str, offset: &str) -> Frame {
        Frame {
            address: "0x1".into(),
            module: Some(module.into()),
            build_id: None,
            offset: Some(offset.into()),
            function: function.map(Into::into),
            file: None,
            line: None,
            column: None,
            inlined: false,
        }
    }

    #[test]
    fn fingerprint_ignores_paths_and_abort_frames() {
        let a = [
            frame(Some("raise"), "/lib/libc.so.6", "0x10"),
            frame(Some("main"), "/tmp/a/prog", "0x20"),
        ];
        let b = [frame(Some("main"), "/build/xyz/prog", "0x99")];
        assert_eq!(
            fingerprint("abort", Some(6), &a),
            fingerprint("abort", Some(6), &b)
        );
        assert_ne!(
            fingerprint("abort", Some(6), &a),
            fingerprint("abort", Some(11), &a)
        );
        let c = [frame(None, "/x/prog", "0x20")];
        let d = [frame(None, "/y/prog", "0x20")];
        assert_eq!(
            fingerprint("unknown", None, &c),
            fingerprint("unknown", None, &d)
        );
        assert_eq!(fingerprint("unknown", None, &c).len(), 16);
    }
}
