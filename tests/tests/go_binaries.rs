//! crashtrace on Go binaries without symbols or DWARF (`-ldflags="-s -w"`),
//! where everything comes from the Go runtime's own tables.
//!
//! * `crashtrace symbolize` on a stripped build must say what
//!   `go tool addr2line` says about the same addresses of the unstripped
//!   build (the two builds differ only in what the linker strips, so their
//!   code addresses are the same), and name inlined calls.
//! * `crashtrace record` of a stripped Go program that kills itself from a
//!   known chain of calls must unwind the whole goroutine stack, with Go's
//!   stack tables, down to `runtime.goexit`; killed in C code called
//!   through cgo, the C frames come from CFI and DWARF, and the walk stops
//!   at the cgo boundary saying why. These need BPF (root).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crashtrace_tests::go_programs::{self, GoBuild};
use crashtrace_tests::report::{describe_frames, expect_frame, str_at};
use crashtrace_tests::{Harness, crashtrace_bin, require_bpf};
use serde_json::Value;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// `crashtrace symbolize --json -e exe`, addresses on stdin: one JSON
/// object per address.
fn symbolize(exe: &Path, addrs: &[u64]) -> Vec<Value> {
    let mut child = Command::new(crashtrace_bin())
        .args(["symbolize", "--json", "-e"])
        .arg(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crashtrace symbolize");
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("crashtrace symbolize");
    writer.join().unwrap().expect("write addresses");
    assert!(
        out.status.success(),
        "crashtrace symbolize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), addrs.len());
    answers
}

fn line_of(program: &str, marker: &str) -> u64 {
    let path = go_programs::source_dir(program).join("main.go");
    let text = std::fs::read_to_string(&path).unwrap();
    let index = text.lines().position(|l| l.contains(marker)).unwrap();
    index as u64 + 1
}

fn field<'a>(frame: &'a Value, key: &str) -> Option<&'a str> {
    frame.get(key).and_then(Value::as_str)
}

#[test]
fn symbolize_stripped_go_binary_like_go_tool_addr2line() {
    let harness = harness();
    let normal = go_programs::build(harness.root(), "symbols", GoBuild::Normal);
    let stripped = go_programs::build(harness.root(), "symbols", GoBuild::Stripped);
    let mut symbols = go_programs::text_symbols(&normal);
    symbols.sort_by_key(|&(_, addr)| addr);
    // Every instruction byte of the program's own functions; the entry,
    // a third and the middle of every runtime function.
    let mut addrs = Vec::new();
    for pair in symbols.windows(2) {
        let ((name, start), (_, next)) = (&pair[0], &pair[1]);
        let (start, end) = (*start, (*next).max(*start + 1));
        if name.starts_with("main.") {
            addrs.extend(start..end);
        } else if name.starts_with("runtime.") {
            addrs.extend([start, start + (end - start) / 3, start + (end - start) / 2]);
        }
    }
    assert!(addrs.len() > 2000, "{} addresses", addrs.len());
    let expected = go_programs::go_addr2line(&normal, &addrs);
    let answers = symbolize(&stripped, &addrs);
    let mut known = 0;
    for ((addr, (function, file, line)), answer) in addrs.iter().zip(&expected).zip(&answers) {
        let frames = answer["frames"].as_array().unwrap();
        if function == "?" {
            // Padding between functions: go tool addr2line knows nothing.
            continue;
        }
        known += 1;
        let (inner, outer) = (&frames[0], frames.last().unwrap());
        assert_eq!(
            field(outer, "function"),
            Some(function.as_str()),
            "{addr:#x}: {answer}"
        );
        assert_eq!(field(inner, "file"), file.as_deref(), "{addr:#x}: {answer}");
        let line = Some(u64::from(*line)).filter(|&l| l > 0);
        assert_eq!(inner["line"].as_u64(), line, "{addr:#x}: {answer}");
    }
    assert!(
        known * 10 > addrs.len() * 9,
        "{known} of {} known",
        addrs.len()
    );

    // Inside main.outer, the call to add was inlined: both frames, with the
    // line inside add and the line of the call.
    let (_, start) = symbols.iter().find(|(n, _)| n == "main.outer").unwrap();
    let answers = symbolize(&stripped, &(*start..*start + 64).collect::<Vec<_>>());
    let chain = answers
        .iter()
        .map(|a| a["frames"].as_array().unwrap())
        .find(|f| f.len() == 2)
        .expect("an inlined frame in main.outer");
    assert_eq!(field(&chain[0], "function"), Some("main.add"));
    assert_eq!(chain[0]["inlined"], true);
    assert_eq!(
        chain[0]["line"].as_u64(),
        Some(line_of("symbols", "INLINED-ADD"))
    );
    assert_eq!(field(&chain[1], "function"), Some("main.outer"));
    assert_eq!(chain[1]["inlined"], false);
    assert_eq!(
        chain[1]["line"].as_u64(),
        Some(line_of("symbols", "CALLS-ADD"))
    );
}

/// Records a stripped Go program killed in a system call, and checks that
/// the goroutine's whole stack was unwound and named from Go's tables.
fn record_self_kill(build: GoBuild) {
    let harness = harness();
    let program = go_programs::build(harness.root(), "self_kill", build);
    let recording = harness.record(&program, &[]);
    let report = recording.only_crash();
    assert_eq!(str_at(report, "/class"), "killed-by-signal");
    assert_eq!(str_at(report, "/signal/name"), "SIGKILL");
    let frames = describe_frames(report);
    let mut previous = 0;
    for function in ["main.die", "main.serve", "main.main", "runtime.main"] {
        let (index, frame) = expect_frame(report, function);
        assert!(
            index > previous || function == "main.die",
            "order:\n{frames}"
        );
        previous = index;
        assert!(
            str_at(frame, "/module").ends_with(&format!(
                "/{}",
                program.file_name().unwrap().to_str().unwrap()
            )),
            "{frames}"
        );
    }
    let (_, die) = expect_frame(report, "main.die");
    assert_eq!(
        die["line"].as_u64(),
        Some(line_of("self_kill", "CRASH-LINE")),
        "{frames}"
    );
    assert!(
        str_at(die, "/file").ends_with("/self_kill/main.go"),
        "{frames}"
    );
    // The walk ends where every goroutine starts, and nowhere earlier.
    let all = crashtrace_tests::frames(report);
    assert_eq!(
        field(all.last().unwrap(), "function"),
        Some("runtime.goexit"),
        "{frames}"
    );
    assert_eq!(report["unwind_error"], Value::Null, "{frames}");
    assert_eq!(report["frames_truncated"], false, "{frames}");
}

#[test]
fn stripped_go_stack_is_unwound_to_goexit() {
    require_bpf!();
    record_self_kill(GoBuild::Stripped);
}

#[test]
fn stripped_pie_go_stack_is_unwound_to_goexit() {
    require_bpf!();
    record_self_kill(GoBuild::StrippedPie);
}

#[test]
fn cgo_stack_names_c_frames_and_stops_at_the_cgo_boundary() {
    require_bpf!();
    let harness = harness();
    for build in [GoBuild::Normal, GoBuild::Stripped] {
        let program = go_programs::build(harness.root(), "cgo_kill", build);
        let recording = harness.record(&program, &[]);
        let report = recording.only_crash();
        assert_eq!(str_at(report, "/class"), "killed-by-signal");
        let frames = describe_frames(report);
        // The cgo wrapper is exported, so even -s keeps its name.
        let (wrapper, _) = crashtrace_tests::report::frames(report)
            .iter()
            .enumerate()
            .find(|(_, f)| field(f, "function").is_some_and(|n| n.contains("_Cfunc_c_entry")))
            .unwrap_or_else(|| panic!("no cgo wrapper frame in\n{frames}"));
        let (boundary, _) = expect_frame(report, "runtime.asmcgocall");
        assert_eq!(boundary, wrapper + 1, "{frames}");
        assert_eq!(
            boundary + 1,
            crashtrace_tests::frames(report).len(),
            "{frames}"
        );
        let error = str_at(report, "/unwind_error");
        assert!(
            error.contains("runtime.asmcgocall switches stacks"),
            "{error}"
        );
        if build == GoBuild::Normal {
            let (die, frame) = expect_frame(report, "c_die");
            let (entry, _) = expect_frame(report, "c_entry");
            assert!(die < entry && entry < wrapper, "{frames}");
            assert_eq!(
                frame["line"].as_u64(),
                Some(line_of("cgo_kill", "CRASH-LINE")),
                "{frames}"
            );
        } else {
            // The static C functions have no name left, but their frames
            // are there, in the program.
            assert!(wrapper >= 3, "{frames}");
        }
    }
}
