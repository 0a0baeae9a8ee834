//! Assembling a [`CrashReport`] from one death and what the pipeline
//! found about it (frames, class, sender): identity, outcome, summary and
//! fingerprint. The stages that find those things are the pipeline's
//! (`crate::pipeline`); this is only the report's shape.

use std::path::Path;

use super::{CrashReport, Frame, Outcome, OutcomeKind, SCHEMA, Sender, SignalInfo, oom, time};
use crate::{
    classify::{Classification, PrintedSignal},
    events::{SignalRecord, StateRecord},
    support::{
        frame::{describe, on_abort_path},
        signals::{code_name, parse_signal, signal_name},
    },
    tracker::Death,
};

/// What the pipeline found about one death.
pub struct Findings {
    pub host: String,
    pub frames: Vec<Frame>,
    pub frames_truncated: bool,
    pub unwind_error: Option<String>,
    pub runtime: &'static str,
    pub classification: Classification,
    pub goroutine: Option<u64>,
    pub tags: Vec<String>,
    /// The frame the report points at.
    pub site: Option<Frame>,
    pub last_words: Option<String>,
    pub signal: Option<SignalInfo>,
    pub outcome: Outcome,
    pub diagnostics: Vec<String>,
}

/// How the process ended, as far as its records tell; says in
/// `diagnostics` when the exit record is missing.
pub fn outcome(death: &Death, diagnostics: &mut Vec<String>) -> Outcome {
    let all_handled = !death.signals.is_empty() && death.signals.iter().all(|s| s.handled);
    match (&death.exit, death.alive) {
        (Some(e), _) => Outcome::from_wait_status(e.status),
        (None, true) => Outcome::of(OutcomeKind::Survived),
        // A handled signal does not doom a process, so no exit record
        // follows: it survived the signal even if it has exited since.
        (None, false) if all_handled => Outcome::of(OutcomeKind::Survived),
        (None, false) => {
            diagnostics.push("the exit record was not seen (see loss records)".into());
            Outcome::of(OutcomeKind::Unknown)
        }
    }
}

/// The report of `death` from the pipeline's findings.
pub fn assemble(death: &Death, found: Findings) -> CrashReport {
    let cause = death.cause();
    let state = death.state.as_deref();
    let classification = found.classification;
    let (pid, tid, ppid, uid, comm) = identity(death, cause, state);
    let boot_ns = cause
        .map(|c| c.boot_ns)
        .or(state.map(|s| s.boot_ns))
        .unwrap_or(0);
    let summary = match &death.oom {
        Some(o) if classification.class == "oom-kill" => oom::summary(o),
        _ => summarize(classification.class, cause, found.site.as_ref()),
    };
    let fingerprint = fingerprint(classification.class, cause.map(|c| c.signo), &found.frames);
    let unsymbolized = found.frames.iter().filter(|f| f.function.is_none()).count();
    let goroutines = match (found.runtime, found.last_words.as_deref()) {
        ("go", Some(words)) => crate::classify::parse_goroutines(words, found.goroutine),
        _ => Vec::new(),
    };
    CrashReport {
        schema: SCHEMA,
        record_type: "crash",
        time: time::rfc3339(time::wall_time_of_boot_ns(boot_ns)),
        host: found.host,
        pid,
        tid,
        ppid,
        uid,
        comm,
        exe: state
            .and_then(|s| s.exe.as_ref())
            .map(|p| p.display().to_string()),
        cmdline: state.map(|s| s.cmdline.clone()).unwrap_or_default(),
        runtime: found.runtime,
        signal: found.signal,
        outcome: found.outcome,
        class: classification.class,
        summary,
        evidence: classification.evidence,
        message: classification.message,
        last_words: found.last_words,
        goroutine: found.goroutine,
        goroutines,
        tags: found.tags,
        frames: found.frames,
        frames_truncated: found.frames_truncated,
        unwind_error: found.unwind_error,
        unsymbolized_frames: unsymbolized,
        diagnostics: found.diagnostics,
        fingerprint,
        oom: death.oom.as_ref().map(oom::describe),
        signal_activity: death.activity.clone(),
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

/// The report's view of the decisive signal; `sender` is the sending
/// process as the pipeline described it (None when the kernel sent it).
pub fn signal_info(s: &SignalRecord, sender: Option<Sender>) -> SignalInfo {
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
        sender,
        sent_by_kernel: s.from_kernel,
        from_runtime_output: false,
    }
}

/// The report's view of a signal known only from a Go runtime's printout
/// (`SIGTRAP: trace trap`, `PC=… sigcode=128`); None for a name that is
/// not a signal's.
pub fn printed_signal_info(p: &PrintedSignal) -> Option<SignalInfo> {
    let number = parse_signal(&p.name)?;
    let code = p.code.unwrap_or(0);
    Some(SignalInfo {
        number,
        name: signal_name(number),
        code,
        code_name: code_name(number, code),
        errno: 0,
        fault_address: p
            .fault_addr
            .filter(|_| number == libc::SIGSEGV || number == libc::SIGBUS)
            .map(|a| format!("{a:#x}")),
        sender: None,
        sent_by_kernel: false,
        from_runtime_output: true,
    })
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
        (_, Some(f)) => format!("{what} in {}", describe(f)),
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
