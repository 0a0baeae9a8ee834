//! The pipeline: one finished death in, one report out. Its stages, in
//! order: unwind the captured stack, symbolize the frames, classify the
//! death (native, Go, Rust or an OOM kill), describe the sender of a kill,
//! and assemble the report ([`report::assemble`]).
//!
//! It owns the state the stages keep between deaths (the unwinder's and
//! the symbolizer's caches), so one pipeline serves a whole session: the
//! event engine (`crate::engine`) runs one for every front end.

#[cfg(test)]
mod program_tests;

use std::path::PathBuf;

use crate::{
    classify::{
        Classification, Facts, GoFacts, PrintedSignal, WhatFunction, classify, classify_go,
        classify_rust, is_go_death, native_last_words, panic_site,
    },
    events::{GoStackRecord, SignalRecord, StateRecord, reg},
    report::{
        self, CrashReport, Findings,
        frames::{locate_file, symbolize_frames},
        oom,
        sender::describe_sender,
    },
    support::{
        frame::{Frame, crash_site, describe},
        locate::{self, Located},
        signals::signal_name,
    },
    symbolize::{ModuleRef, Symbolizer},
    tracker::Death,
    unwind::Unwinder,
};

pub struct Pipeline {
    symbolizer: Symbolizer,
    unwinder: Unwinder,
    host: String,
}

/// The classify stage's verdict.
struct Verdict {
    classification: Classification,
    goroutine: Option<u64>,
    /// The signal a Go runtime said it died of.
    printed_signal: Option<PrintedSignal>,
    tags: Vec<String>,
    runtime: &'static str,
    site: Option<Frame>,
}

impl Pipeline {
    pub fn new(debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            symbolizer: Symbolizer::new(debug_dirs),
            unwinder: Unwinder::new(),
            host: hostname(),
        }
    }

    /// The report of one finished death.
    pub fn build(&mut self, death: &Death) -> CrashReport {
        let state = death.state.as_deref();
        let mut diagnostics = Vec::new();
        let (frames, frames_truncated, unwind_error) = match state {
            Some(s) => self.frames(death.pid, s, &death.go_stacks, &mut diagnostics),
            None => (
                Vec::new(),
                false,
                Some("the thread's state was not captured".into()),
            ),
        };
        let go = is_go_death(&death.evidence) || death.go_first_run;
        let frames = if go { goroutine_frames(frames) } else { frames };
        let last_words = (!death.last_words.is_empty())
            .then(|| String::from_utf8_lossy(&death.last_words).into_owned());
        let verdict = self.classify(death, go, &frames, last_words.as_deref(), &mut diagnostics);
        let outcome = report::outcome(death, &mut diagnostics);
        // The task current when the kernel generates a signal (the one
        // that invoked the OOM killer, say) did not send it.
        let signal = match death.cause() {
            Some(s) => {
                let sender = s
                    .sender
                    .as_ref()
                    .filter(|_| !s.from_kernel)
                    .map(|t| describe_sender(&mut self.symbolizer, s, t, &mut diagnostics));
                Some(report::signal_info(s, sender))
            }
            // A signal the Go runtime handled and then died of is not a
            // kernel record; its printout names it.
            None => verdict
                .printed_signal
                .as_ref()
                .and_then(report::printed_signal_info),
        };
        report::assemble(
            death,
            Findings {
                host: self.host.clone(),
                frames,
                frames_truncated,
                unwind_error,
                runtime: verdict.runtime,
                classification: verdict.classification,
                goroutine: verdict.goroutine,
                tags: verdict.tags,
                site: verdict.site,
                last_words,
                signal,
                outcome,
                diagnostics,
            },
        )
    }

    /// Names the cause: an OOM kill, a Go or a Rust crash, else a native
    /// one; then the frame the report points at.
    fn classify(
        &mut self,
        death: &Death,
        go: bool,
        frames: &[Frame],
        last_words: Option<&str>,
        diagnostics: &mut Vec<String>,
    ) -> Verdict {
        let cause = death.cause();
        let state = death.state.as_deref();
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
        let mut rust = false;
        let sent_by_other = cause.is_some_and(|c| c.sender.is_some() && c.code <= 0);
        let oom_kill = death.oom.as_ref().and_then(|o| oom::classify(o, cause));
        let mut printed_signal = None;
        let (mut classification, goroutine, mut tags) = if let Some(c) = oom_kill {
            (c, None, Vec::new())
        } else if go && !sent_by_other {
            let g = classify_go(&GoFacts {
                evidence: &death.evidence,
                last_words: last_words.unwrap_or(""),
                signal: cause,
                first_run: death.go_first_run,
            });
            printed_signal = g.printed_signal;
            (g.classification, g.goroutine, g.tags)
        } else if let Some(c) = classify_rust(&death.evidence, frames, last_words.unwrap_or(""))
            .filter(|_| !sent_by_other)
        {
            rust = true;
            (c, None, Vec::new())
        } else {
            (classify(&facts), None, Vec::new())
        };
        if go {
            go_signal_evidence(&mut classification, cause, last_words);
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
        if death.go_first_run {
            tags.push("first-run".into());
        }
        if !go && !rust {
            in_signal_handler(&mut classification, frames);
            if let Some(words) = last_words {
                native_last_words(&mut classification, words);
            }
        }
        let site = match (rust, classification.class) {
            (true, "rust-panic") => {
                panic_site(frames).or_else(|| crash_site(classification.class, frames))
            }
            // The guard-page handler runs on the signal stack: the code that
            // overflowed is past the signal frame.
            (true, "stack-overflow") => frames
                .iter()
                .skip_while(|f| f.function.as_deref() != Some("__restore_rt"))
                .skip(1)
                .find(|f| f.function.is_some())
                .or_else(|| crash_site(classification.class, frames)),
            _ => crash_site(classification.class, frames),
        };
        // Captured frames that never leave the runtime (a signal it caught,
        // a stack it switched away from): the goroutine's own frame is in
        // the trace the runtime printed.
        let printed_site = go
            .then(|| printed_site(site, last_words, goroutine))
            .flatten();
        let site = printed_site.as_ref().or(site);
        if let Some(f) = site {
            let from = if printed_site.is_some() {
                " (from the runtime's printed trace)"
            } else {
                ""
            };
            classification
                .evidence
                .push(format!("crashing frame: {}{from}", describe(f)));
        }
        Verdict {
            classification,
            goroutine,
            printed_signal,
            tags,
            runtime: if go {
                "go"
            } else if rust {
                "rust"
            } else {
                "native"
            },
            site: site.cloned(),
        }
    }

    fn frames(
        &mut self,
        pid: u32,
        state: &StateRecord,
        go_stacks: &[GoStackRecord],
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
        // The goroutine the Go probes found behind the captured thread.
        let goroutine = go_stacks.iter().find(|g| g.tid == state.thread.tid);
        let unwound = self.unwinder.unwind_go(state, goroutine, &files);
        let split = unwound.goroutine_from.unwrap_or(unwound.frames.len());
        let (own, theirs) = unwound.frames.split_at(split);
        let (mut truncated, mut error) = (unwound.truncated, unwound.error.clone());
        // One look at each file for all the frames of this stack.
        let mut batch = self.symbolizer.batch();
        let mut frames = symbolize_frames(&mut batch, own, &state.mappings, &files, diagnostics);
        if let Some(g) = goroutine.filter(|_| unwound.goroutine_from.is_some()) {
            let switch = frames
                .last()
                .and_then(|f| f.function.clone())
                .unwrap_or_else(|| "the runtime".into());
            let mut more =
                symbolize_frames(&mut batch, theirs, &state.mappings, &files, diagnostics);
            // Go's own traceback hides the placeholder a switch saves as
            // the goroutine's PC.
            if more.first().and_then(|f| f.function.as_deref())
                == Some("runtime.systemstack_switch")
            {
                more.remove(0);
            }
            let user = |f: &Frame| {
                f.function
                    .as_deref()
                    .is_some_and(|n| !crate::support::golang::is_runtime_function(n))
            };
            if g.parked && switch != "runtime.mcall" {
                // The parked goroutine is read from mcall's argument slot;
                // the runtime left the goroutine some other way here (a
                // preemption through morestack, say), so no goroutine was
                // running and that slot says nothing.
                diagnostics.push(format!(
                    "no goroutine was running when the runtime stopped here (it had left the goroutine's stack at {switch}); the blocked goroutines are in the runtime's printed trace"
                ));
                (truncated, error) = unwound.own_end.clone().unwrap_or_default();
            } else if g.parked && !more.iter().any(user) {
                // A deadlock found after the runtime's own goroutine (the
                // sweeper, say) parked last: its frames explain nothing.
                const PARKING: &[&str] =
                    &["runtime.gopark", "runtime.goparkunlock", "runtime.mcall"];
                let which = more
                    .iter()
                    .filter_map(|f| f.function.as_deref())
                    .find(|n| !PARKING.contains(n))
                    .unwrap_or("unknown");
                diagnostics.push(format!(
                    "the goroutine parked last before {switch} was the runtime's own ({which}); the blocked goroutines are in the runtime's printed trace"
                ));
                (truncated, error) = unwound.own_end.clone().unwrap_or_default();
            } else {
                let whose = if g.parked {
                    "those of the goroutine that parked last (no goroutine was current)"
                } else {
                    "the goroutine's own"
                };
                diagnostics.push(format!(
                    "frames after {switch} are {whose}, unwound from the context it saved when the runtime switched stacks"
                ));
                frames.extend(more);
            }
        } else if unwound.switched_stacks && goroutine.is_none() {
            diagnostics.push(
                "frames stop at the runtime's stack switch: no goroutine record came for this thread (the Go probes send one when the thread had a goroutine and the runtime's layout is known; start-up warns when it is not)".into(),
            );
        }
        (frames, truncated, error)
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
        .map(describe)
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

/// The first frame outside the Go runtime of the crashing goroutine's
/// printed trace, when the captured site is the runtime's own.
fn printed_site(
    site: Option<&Frame>,
    last_words: Option<&str>,
    goroutine: Option<u64>,
) -> Option<Frame> {
    let runtime_site = site
        .and_then(|f| f.function.as_deref())
        .is_none_or(crate::support::golang::is_runtime_function);
    if !runtime_site {
        return None;
    }
    let dumped = crate::classify::parse_goroutines(last_words?, goroutine);
    let crashed = goroutine?;
    let first = dumped.first().filter(|g| g.id == crashed)?;
    let frame = first.frames.iter().find(|f| {
        !crate::support::golang::is_runtime_function(&f.function) && f.function != "panic"
    })?;
    Some(Frame {
        function: Some(frame.function.clone()),
        file: frame.file.clone(),
        line: frame.line,
        ..Frame::unknown(0)
    })
}

/// A Go crash's frames without the runtime's panic and throw machinery on
/// top: they start where the goroutine was when it went wrong. All-runtime
/// stacks (the scheduler finding a deadlock) are kept whole.
fn goroutine_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let runtime = |f: &Frame| {
        f.function
            .as_deref()
            .is_some_and(|n| crate::support::golang::is_runtime_function(n) || n == "panic")
    };
    match frames
        .iter()
        .position(|f| !runtime(f) && f.function.is_some())
    {
        Some(first) if first > 0 => frames.into_iter().skip(first).collect(),
        _ => frames,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
