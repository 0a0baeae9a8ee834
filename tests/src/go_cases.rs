//! The Go crash classes `tests/programs/go/crashy` produces, and the
//! check each report must pass, shared by the Go 1.19 tests
//! (`go_crashes.rs`) and the release matrix (`go_versions.rs`) so that every
//! release is held to the same answers.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::Harness;
use crate::go_programs::{GoBuild, Toolchain, build_with, source_dir};
use crate::report::{check_shape, describe_frames, find_frame};
use crate::require_bpf;
use crate::watch::Watch;

/// The line marked CRASH-LINE nearest after `func name(` in a Go program.
pub fn go_crash_line(program: &str, function: &str) -> u64 {
    let text = std::fs::read_to_string(source_dir(program).join("main.go"))
        .expect("reading the Go source");
    let start = text
        .find(&format!("func {function}("))
        .unwrap_or_else(|| panic!("no func {function} in {program}"));
    let before = text[..start].lines().count() as u64;
    let line = text[start..]
        .lines()
        .position(|l| l.contains("// CRASH-LINE"))
        .unwrap_or_else(|| panic!("no CRASH-LINE in {function}"));
    before + line as u64 + 1
}

pub struct Case {
    pub mode: &'static str,
    pub class: &'static str,
    pub message: &'static str,
    /// The user function the frames must show (None: runtime-only stack).
    pub function: Option<&'static str>,
    /// A line the runtime prints before its fatal error that explains it.
    pub explained_by: Option<&'static str>,
    /// The signal the report names, with its code and fault address, as
    /// the runtime printed them.
    pub signal: Option<(&'static str, i64, Option<&'static str>)>,
    /// A user function the parsed goroutine dump must show (at its marked
    /// line when the flag says so: a stack overflow is reported at the
    /// function's entry), and the summary must name, where the captured
    /// frames stop at the runtime's stack switch.
    pub dumped_function: Option<(&'static str, bool)>,
    /// `function`'s first frame is at its entry, not at its marked line: a
    /// stack overflow is found in the function's prologue, and the frames
    /// beyond the captured part of a deep stack are not there.
    pub at_entry: bool,
}

/// The line of `func function(` in a Go program.
pub fn go_func_line(program: &str, function: &str) -> u64 {
    let text = std::fs::read_to_string(source_dir(program).join("main.go"))
        .expect("reading the Go source");
    let start = text
        .find(&format!("func {function}("))
        .unwrap_or_else(|| panic!("no func {function} in {program}"));
    text[..start].lines().count() as u64 + 1
}

/// Records `crashy MODE` built by `toolchain` in mode `build` and checks
/// the report against `case`: class, message, last words, and the user
/// function first among the frames, with its file and line.
pub fn check_case_with(harness: &Harness, case: &Case, toolchain: &Toolchain, build: GoBuild) {
    require_bpf!();
    let program = build_with(harness.root(), "crashy", build, toolchain);
    let recording = harness.record(&program, &[case.mode]);
    let context = format!(
        "go {} {build:?} {}: {}",
        toolchain.version,
        case.mode,
        recording.context()
    );
    assert_eq!(recording.exit_code(), Some(2), "{context}");
    check_report(recording.only_crash(), case, &context);
}

/// Runs every case of [`CASES`] on `crashy` built by `toolchain` in each
/// of `builds`, under one `crashtrace watch` (one BPF load for them all),
/// and checks each report as [`check_case_with`] does.
pub fn check_every_case_under_watch(harness: &Harness, toolchain: &Toolchain, builds: &[GoBuild]) {
    require_bpf!();
    let programs: Vec<(GoBuild, PathBuf)> = builds
        .iter()
        .map(|&b| (b, build_with(harness.root(), "crashy", b, toolchain)))
        .collect();
    let comms: Vec<String> = programs
        .iter()
        .map(|(_, p)| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.chars().take(15).collect()
        })
        .collect();
    let comm_refs: Vec<&str> = comms.iter().map(String::as_str).collect();
    let label = format!("go-every-class-{}", toolchain.version);
    let watch = Watch::start(harness.root(), &label, &comm_refs);
    for (build, program) in &programs {
        for case in CASES {
            // The delay lets watch probe the executable once it started.
            let mut child = Command::new(program)
                .args([case.mode, "300"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("running crashy");
            let pid = child.id();
            let code = child.wait().ok().and_then(|s| s.code());
            let context = format!(
                "go {} {build:?} {} under watch (pid {pid}): {}",
                toolchain.version,
                case.mode,
                watch.context()
            );
            assert_eq!(code, Some(2), "{context}");
            check_report(&watch.wait_for_pid(pid), case, &context);
        }
    }
}

/// Checks one report of `crashy` against `case`: class, outcome, message,
/// last words, signal, and the user function first among the frames and
/// in the printed goroutine, with its file and line.
pub fn check_report(report: &Value, case: &Case, context: &str) {
    check_shape(report);
    assert_eq!(report["runtime"], "go", "{context}");
    assert_eq!(report["class"], case.class, "{context}");
    assert_eq!(report["outcome"]["kind"], "exited", "{context}");
    assert_eq!(report["outcome"]["exit_code"], 2, "{context}");
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(case.message),
        "message {message:?} lacks {:?}\n{context}",
        case.message
    );
    let words = report["last_words"].as_str().unwrap_or_default();
    assert!(
        words.contains(case.message),
        "the last words hold the runtime's text\n{context}"
    );
    if let Some((name, code, fault)) = case.signal {
        let signal = &report["signal"];
        assert_eq!(signal["name"], name, "{context}");
        assert_eq!(signal["code"], code, "{context}");
        assert_eq!(signal["fault_address"].as_str(), fault, "{context}");
        assert_eq!(signal["from_runtime_output"], true, "{context}");
    }
    if let Some((function, at_marked_line)) = case.dumped_function {
        let name = format!("main.{function}");
        let first = &report["goroutines"][0];
        let printed = first["frames"]
            .as_array()
            .and_then(|frames| frames.iter().find(|f| f["function"] == name.as_str()))
            .unwrap_or_else(|| panic!("no {name} in the parsed goroutine\n{context}"));
        if at_marked_line {
            assert_eq!(
                printed["line"].as_u64(),
                Some(go_crash_line("crashy", function)),
                "{context}"
            );
        }
        let summary = report["summary"].as_str().unwrap_or_default();
        assert!(
            summary.contains(&format!("{name} at ")),
            "the summary names {name}: {summary}\n{context}"
        );
        if case.class == "deadlock" {
            // No goroutine runs at a deadlock. Found by the scheduler after
            // `mcall` parked the last goroutine, the frames go on into that
            // goroutine when it is the program's, and the report says whose
            // it was when it is the runtime's; after a preemption, that no
            // goroutine was running. Found by `sysmon`, or by a
            // thread that found nothing to run, they are the whole of that
            // thread, down to `runtime.mstart`.
            let said = report["diagnostics"].as_array().is_some_and(|d| {
                d.iter().any(|d| {
                    d.as_str().is_some_and(|d| {
                        d.contains("parked last before runtime.mcall was the runtime's own")
                            || d.contains("no goroutine was running when the runtime stopped here")
                            || d.contains("no goroutine record came for this thread")
                    })
                })
            });
            let frames = crate::report::frames(report);
            let whole_thread = report["unwind_error"].is_null()
                && frames
                    .last()
                    .is_some_and(|f| f["function"] == "runtime.mstart");
            assert!(
                said || whole_thread || find_frame(report, &name).is_some(),
                "neither {name} among the frames, nor whose goroutine parked last, nor the whole stack of a thread that ran no goroutine: {}\n{context}",
                describe_frames(report)
            );
        }
    }
    // What the runtime printed before its fatal call explains it.
    if let Some(before) = case.explained_by {
        let (at, fatal) = (words.find(before), words.find("fatal error:"));
        assert!(
            at.is_some() && at < fatal,
            "the last words hold {before:?} before the fatal error\n{context}"
        );
    }
    if let Some(function) = case.function {
        let name = format!("main.{function}");
        let (index, frame) = find_frame(report, &name)
            .unwrap_or_else(|| panic!("no {name} frame: {}\n{context}", describe_frames(report)));
        assert_eq!(
            index,
            0,
            "the goroutine's own frame comes first, not the runtime's panic machinery: {}",
            describe_frames(report)
        );
        // A closure's line is in its enclosing function.
        let enclosing = function.split('.').next().unwrap_or(function);
        let line = if case.at_entry {
            go_func_line("crashy", enclosing)
        } else {
            go_crash_line("crashy", enclosing)
        };
        assert_eq!(
            frame["line"].as_u64(),
            Some(line),
            "{context}\n{}",
            describe_frames(report)
        );
        assert!(
            frame["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("crashy/main.go")),
            "{context}"
        );
        // A goroutine started by the program ends in runtime.goexit, not
        // under main.main.
        if !function.contains(".func") && !case.at_entry {
            assert!(find_frame(report, "main.main").is_some(), "{context}");
        }
        // The runtime's printed trace, parsed: the crashing goroutine
        // first, with the same function at its source line (from the
        // runtime's own text, so also for a stripped binary).
        let first = &report["goroutines"][0];
        assert_eq!(first["id"], report["goroutine"], "{context}");
        let printed = first["frames"]
            .as_array()
            .and_then(|frames| frames.iter().find(|f| f["function"] == name.as_str()))
            .unwrap_or_else(|| panic!("no {name} in the parsed goroutine\n{context}"));
        assert_eq!(printed["line"], frame["line"], "{context}");
    }
}

/// Every class of the Go table that `crashy` can produce.
pub const CASES: &[Case] = &[
    Case {
        mode: "breakpoint",
        class: "breakpoint",
        message: "SIGTRAP: trace trap",
        function: Some("breakpoint"),
        explained_by: None,
        signal: Some(("SIGTRAP", 128, None)),
        dumped_function: Some(("breakpoint", true)),
        at_entry: false,
    },
    Case {
        mode: "nil-deref",
        class: "null-pointer-dereference",
        message: "nil pointer dereference",
        function: Some("nilDeref"),
        explained_by: None,
        signal: Some(("SIGSEGV", 1, Some("0x0"))),
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "nil-map",
        class: "nil-map-write",
        message: "assignment to entry in nil map",
        function: Some("nilMapWrite"),
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "index",
        class: "index-out-of-range",
        message: "index out of range",
        function: Some("indexOutOfRange"),
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "closed-channel",
        class: "closed-channel-operation",
        message: "send on closed channel",
        function: Some("sendOnClosed"),
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "divide",
        class: "divide-by-zero",
        message: "integer divide by zero",
        function: Some("divide"),
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "panic",
        class: "go-panic",
        message: "config missing: database url",
        function: Some("loadConfig"),
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "out-of-memory",
        class: "out-of-memory",
        message: "out of memory",
        function: Some("outOfMemory"),
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "deadlock",
        class: "deadlock",
        message: "all goroutines are asleep - deadlock!",
        function: None,
        explained_by: None,
        signal: None,
        dumped_function: Some(("deadlock", true)),
        at_entry: false,
    },
    Case {
        mode: "stack-overflow",
        class: "stack-overflow",
        message: "stack overflow",
        function: Some("recurse"),
        explained_by: Some("runtime: goroutine stack exceeds 1000000000-byte limit"),
        signal: None,
        dumped_function: Some(("recurse", false)),
        at_entry: true,
    },
    Case {
        mode: "fatal",
        class: "go-fatal-error",
        message: "unlock of unlocked mutex",
        function: None,
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
    Case {
        mode: "concurrent-map",
        class: "concurrent-map-access",
        message: "concurrent map writes",
        function: Some("concurrentMapWrites.func1"),
        explained_by: None,
        signal: None,
        dumped_function: None,
        at_entry: false,
    },
];

/// The case of `mode`.
pub fn case(mode: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.mode == mode)
        .expect("a case of that mode")
}
