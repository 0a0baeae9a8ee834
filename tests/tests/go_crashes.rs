//! Go crashes: panics and fatal errors that end in `exit(2)` without a
//! fatal signal, caught by the runtime probes, classified from what the
//! runtime said, with the goroutine's frames and the process's last words.
//! The programs are built by the suite with Debian's Go 1.19; the other
//! releases run the cases of `go_cases` in `go_versions.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crashtrace_tests::go_cases::{CASES, Case, case, check_case_with, go_func_line};
use crashtrace_tests::go_programs::{GoBuild, Toolchain, build};
use crashtrace_tests::report::{check_shape, describe_frames, find_frame};
use crashtrace_tests::watch::Watch;
use crashtrace_tests::{Harness, crashtrace_bin, require_bpf};
use serde_json::Value;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

fn crashy(stripped: bool) -> PathBuf {
    let mode = if stripped {
        GoBuild::Stripped
    } else {
        GoBuild::Normal
    };
    build(harness().root(), "crashy", mode)
}

fn check_case(case: &Case, stripped: bool) {
    let mode = if stripped {
        GoBuild::Stripped
    } else {
        GoBuild::Normal
    };
    check_case_with(&harness(), case, &Toolchain::default_release(), mode);
}

macro_rules! go_cases {
    ($($test:ident: $mode:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check_case(case($mode), false);
            }
        )*
    };
}

go_cases! {
    nil_pointer_dereference: "nil-deref";
    nil_map_write: "nil-map";
    index_out_of_range: "index";
    send_on_closed_channel: "closed-channel";
    integer_divide_by_zero: "divide";
    panic_with_own_value: "panic";
    out_of_memory: "out-of-memory";
    deadlock: "deadlock";
    stack_overflow: "stack-overflow";
    other_fatal_error: "fatal";
    breakpoint: "breakpoint";
}

#[test]
fn concurrent_map_writes() {
    require_bpf!();
    let recording = harness().record(&crashy(false), &["concurrent-map"]);
    let context = recording.context();
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "concurrent-map-access", "{context}");
    assert_eq!(report["message"], "concurrent map writes", "{context}");
    assert!(report["goroutine"].as_u64().is_some(), "{context}");
    let (index, _) = find_frame(report, "main.concurrentMapWrites.func1")
        .unwrap_or_else(|| panic!("no writer goroutine frame: {}", describe_frames(report)));
    assert_eq!(index, 0, "{}", describe_frames(report));
}

/// `-ldflags="-s -w"`: no symbols, no DWARF. Probes go in by pclntab, and
/// frames are named from it.
#[test]
fn stripped_binary() {
    check_case(
        &Case {
            mode: "nil-map",
            class: "nil-map-write",
            message: "assignment to entry in nil map",
            function: Some("nilMapWrite"),
            explained_by: None,
            signal: None,
            dumped_function: None,
            at_entry: false,
        },
        true,
    );
}

/// With GOTRACEBACK=crash the runtime raises SIGABRT after printing: one
/// report, the class of the panic, the outcome the signal.
#[test]
fn gotraceback_crash_is_one_report() {
    require_bpf!();
    let program = crashy(false);
    let output = harness().root().join("gotraceback-crash.jsonl");
    let _ = std::fs::remove_file(&output);
    let status = Command::new(crashtrace_bin())
        .args(["record", "--json", "--output"])
        .arg(&output)
        .arg("--")
        .arg(&program)
        .arg("nil-deref")
        .env("GOTRACEBACK", "crash")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running crashtrace");
    assert_eq!(status.code(), Some(128 + 6));
    let crashes = crash_reports(&output);
    assert_eq!(crashes.len(), 1, "{crashes:#?}");
    let report = &crashes[0];
    check_shape(report);
    assert_eq!(report["class"], "null-pointer-dereference", "{report:#}");
    assert_eq!(report["outcome"]["kind"], "killed", "{report:#}");
    assert_eq!(report["outcome"]["signal"], 6, "{report:#}");
    assert_eq!(report["signal"]["name"], "SIGABRT", "{report:#}");
    assert!(find_frame(report, "main.nilDeref").is_some(), "{report:#}");
}

/// A double free in C called through cgo: libc's evidence names it, and
/// the C frames are there.
#[test]
fn cgo_double_free() {
    require_bpf!();
    let program = build(harness().root(), "cgocrash", GoBuild::Normal);
    let recording = harness().record(&program, &["double-free"]);
    let context = recording.context();
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["runtime"], "go", "{context}");
    assert_eq!(report["class"], "double-free", "{context}");
    assert!(
        report["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "cgo")),
        "{context}"
    );
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("double free")),
        "{context}"
    );
    for c_function in ["release", "release_twice"] {
        assert!(
            find_frame(report, c_function).is_some(),
            "no C frame {c_function}: {}",
            describe_frames(report)
        );
    }
    go_callers_follow_the_c_frames(report, "release_twice", "releaseBuffer", &context);
}

/// A NULL dereference in C called through cgo: the runtime catches the
/// SIGSEGV on its signal stack, and the frames still go from the C code
/// through the cgo call into the Go code that made it.
#[test]
fn cgo_null_dereference_shows_its_go_callers() {
    require_bpf!();
    for build in [GoBuild::Normal, GoBuild::Stripped] {
        let program = crashtrace_tests::go_programs::build(harness().root(), "cgocrash", build);
        let recording = harness().record(&program, &["null"]);
        let context = format!("{build:?}: {}", recording.context());
        let report = recording.only_crash();
        check_shape(report);
        assert_eq!(report["class"], "null-pointer-dereference", "{context}");
        // A stripped build keeps only the exported cgo wrapper's name.
        let c_function = match build {
            GoBuild::Normal => "read_null",
            _ => "_Cfunc_read_null",
        };
        go_callers_follow_the_c_frames(report, c_function, "readNull", &context);
    }
}

/// The C function `c_function` comes first, then the runtime's cgo call,
/// then the Go function `go_function` that called it, at the line of the
/// call, and `main.main`: the C frames on the system stack, the Go ones on
/// the goroutine's, joined where `runtime.asmcgocall` switched.
fn go_callers_follow_the_c_frames(
    report: &Value,
    c_function: &str,
    go_function: &str,
    context: &str,
) {
    let frames = describe_frames(report);
    let c = crashtrace_tests::report::frames(report)
        .iter()
        .position(|f| {
            f["function"]
                .as_str()
                .is_some_and(|n| n == c_function || n.ends_with(c_function))
        })
        .unwrap_or_else(|| panic!("no C frame {c_function}: {frames}\n{context}"));
    let (switch, _) = find_frame(report, "runtime.asmcgocall")
        .unwrap_or_else(|| panic!("no runtime.asmcgocall: {frames}\n{context}"));
    let name = format!("main.{go_function}");
    let (caller, frame) = find_frame(report, &name)
        .unwrap_or_else(|| panic!("no {name} past the cgo call: {frames}\n{context}"));
    let (main, _) = find_frame(report, "main.main")
        .unwrap_or_else(|| panic!("no main.main: {frames}\n{context}"));
    assert!(
        c < switch && switch < caller && caller < main,
        "{frames}\n{context}"
    );
    assert_eq!(
        frame["line"].as_u64(),
        Some(go_func_line("cgocrash", go_function) + 1),
        "{frames}\n{context}"
    );
    assert!(
        report["unwind_error"].is_null(),
        "the frames end at runtime.goexit: {frames}\n{context}"
    );
}

/// Recovered panics are not crashes: a hundred of them, no report.
#[test]
fn recovered_panics_are_not_reported() {
    require_bpf!();
    let recording = harness().record(&crashy(false), &["recovered"]);
    let context = recording.context();
    assert_eq!(recording.exit_code(), Some(0), "{context}");
    assert!(recording.stdout.contains("recovered 100"), "{context}");
    assert!(recording.crashes.is_empty(), "{context}");
}

/// `kill -ABRT` from another process: the runtime catches it, dumps its
/// goroutines and exits; the report names the sender.
#[test]
fn killed_by_another_process() {
    require_bpf!();
    let running = harness().spawn_record(&crashy(false), &["wait"]);
    let pid = wait_for_child(running.crashtrace_pid(), "crashy");
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .args(["-ABRT", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    let recording = running.finish();
    let context = recording.context();
    let report = recording.only_crash();
    check_shape(report);
    assert_eq!(report["class"], "killed-by-signal", "{context}");
    assert_eq!(report["signal"]["name"], "SIGABRT", "{context}");
    assert_eq!(report["signal"]["sender"]["comm"], "kill", "{context}");
    assert_eq!(report["runtime"], "go", "{context}");
    assert!(
        report["last_words"]
            .as_str()
            .is_some_and(|w| w.starts_with("SIGABRT: abort")),
        "{context}"
    );
}

/// A Go process already running when crashtrace starts is probed too.
#[test]
fn process_started_before_crashtrace() {
    require_bpf!();
    // It crashes when told to, on its stdin, once crashtrace says it
    // follows it: loading the programs takes seconds on a busy machine.
    let mut child = Command::new(crashy(false))
        .args(["nil-map", "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting crashy");
    let output = harness().root().join("prestarted.jsonl");
    let _ = std::fs::remove_file(&output);
    let mut crashtrace = Command::new(crashtrace_bin())
        .args([
            "record",
            "--json",
            "--pid",
            &child.id().to_string(),
            "--output",
        ])
        .arg(&output)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running crashtrace");
    let mut stderr = std::io::BufReader::new(crashtrace.stderr.take().expect("piped"));
    let mut said = String::new();
    loop {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut stderr, &mut line) {
            Ok(0) | Err(_) => panic!("crashtrace record --pid ended before following:\n{said}"),
            Ok(_) if line.contains("following pid") => break,
            Ok(_) => said.push_str(&line),
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let _ = stdin.write_all(b"crash\n");
    }
    let _ = child.wait();
    let status = crashtrace.wait().expect("waiting for crashtrace");
    assert!(status.success());
    let crashes = crash_reports(&output);
    assert_eq!(crashes.len(), 1, "{crashes:#?}");
    assert_eq!(crashes[0]["class"], "nil-map-write", "{:#}", crashes[0]);
    assert!(find_frame(&crashes[0], "main.nilMapWrite").is_some());
}

/// `watch` probes Go executables as they start (here the stripped build),
/// and reports every class as `record` does.
#[test]
fn watch_reports_every_go_class() {
    require_bpf!();
    let program = crashy(true);
    let watch = Watch::start(harness().root(), "go", &["crashy-stripped"]);
    for case in CASES {
        // The delay lets watch probe the executable once it has started.
        let mut child = Command::new(&program)
            .args([case.mode, "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running crashy");
        let pid = child.id();
        assert_eq!(
            child.wait().ok().and_then(|s| s.code()),
            Some(2),
            "{}",
            case.mode
        );
        let report = watch.wait_for_pid(pid);
        check_shape(&report);
        assert_eq!(report["class"], case.class, "{report:#}");
        assert!(
            report["message"]
                .as_str()
                .is_some_and(|m| m.contains(case.message)),
            "{report:#}"
        );
        if let Some(function) = case.function {
            assert!(
                find_frame(&report, &format!("main.{function}")).is_some(),
                "{}: {}",
                case.mode,
                describe_frames(&report)
            );
        }
    }
}

/// The first run of a Go executable nobody has seen (a new inode) panics
/// at once, before `watch` can have probed it: it is still reported, with
/// its class, message and the goroutine's own function, from what the
/// runtime printed. A first run that exits 2 without a Go crash (bad
/// usage, as `flag` exits) is not a crash and is not reported.
#[test]
fn first_run_panic_is_reported_under_watch() {
    require_bpf!();
    let dir = harness().root().join("first-run-watch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut watch = Watch::start(
        harness().root(),
        "first-run",
        &["crashy-usage", "crashy-first"],
    );
    if watch.context().contains("no function hook on write(2)") {
        // This kernel keeps no stderr tails by default; the tracepoint does.
        drop(watch);
        watch = Watch::start_with(
            harness().root(),
            "first-run",
            &["crashy-usage", "crashy-first"],
            &["--last-words", "syscalls"],
        );
    }
    let run = |copy: &str, mode: &str| {
        // A fresh copy: a file the kernel has never reported.
        let program = dir.join(copy);
        std::fs::copy(crashy(false), &program).unwrap();
        let mut child = Command::new(&program)
            .arg(mode)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running crashy");
        let pid = child.id();
        let code = child.wait().ok().and_then(|s| s.code());
        assert_eq!(code, Some(2), "{mode}");
        pid
    };
    let usage = run("crashy-usage", "no-such-mode");
    let panicked = run("crashy-first", "panic");
    let report = watch.wait_for_pid(panicked);
    let context = watch.context();
    check_shape(&report);
    assert_eq!(report["class"], "go-panic", "{report:#}\n{context}");
    assert_eq!(report["runtime"], "go", "{report:#}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("config missing")),
        "{report:#}"
    );
    let summary = report["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("main.loadConfig at "), "{report:#}");
    assert_eq!(report["goroutines"][0]["id"], 1, "{report:#}");
    assert!(
        watch
            .crashes()
            .iter()
            .all(|r| r["pid"].as_u64() != Some(u64::from(usage))),
        "a usage exit was reported\n{context}"
    );
}

fn crash_reports(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "crash")
        .collect()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// The pid of the descendant of `ancestor` whose comm is `comm`.
fn wait_for_child(ancestor: u32, comm: &str) -> u32 {
    let mut found = None;
    wait_until(Duration::from_secs(30), || {
        found = std::fs::read_dir("/proc").ok().and_then(|d| {
            d.flatten().find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let (name, rest) = stat.split_once(") ")?;
                let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
                (name.ends_with(&format!("({comm}")) && ppid == ancestor).then_some(pid)
            })
        });
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no {comm} child of {ancestor}"))
}
