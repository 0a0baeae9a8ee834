//! crashtrace against native crashes: each test runs
//! `crashtrace record --json --output FILE -- <program>` on one program from
//! `tests/programs/` and checks the report against the schema-1 contract.
//!
//! These tests load BPF, so they need root; see `crashtrace_tests::require_bpf`.
//! The per-program expectations live in `crashtrace_tests::expect`, and
//! `check_native_crash` asserts all of them: report shape, crashtrace's
//! exit status (128 + signal), class, signal name/number/code/code_name,
//! fault address, outcome, pid/tid/ppid/uid/comm/exe/cmdline, and the
//! crashing function's frame (position, file, CRASH-LINE, module) followed
//! by its callers.

use std::path::Path;

use crashtrace_tests::checks::check_native_crash;
use crashtrace_tests::expect::{self, CrashSpec};
use crashtrace_tests::report::{at, check_shape, describe_frames, expect_frame, int_at, str_at};
use crashtrace_tests::{Harness, Recording, require_bpf};
use serde_json::Value;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// Records `spec`'s program, checks its one crash report against `spec`,
/// and returns both.
fn record_crash(spec: &CrashSpec) -> (Recording, Value) {
    let harness = harness();
    let program = harness.program(spec.program);
    let args: Vec<String> = spec
        .arg_artifact
        .map(|artifact| {
            harness
                .program(artifact)
                .to_str()
                .expect("UTF-8 path")
                .to_owned()
        })
        .into_iter()
        .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let recording = harness.record(&program, &arg_refs);
    let report = recording.only_crash().clone();
    check_native_crash(&recording, &report, spec, &program, &args);
    (recording, report)
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesized comm come the state, then the ppid.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn is_descendant(mut pid: u32, ancestor: u32) -> bool {
    while pid > 1 {
        match parent_of(pid) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) => pid = parent,
            None => return false,
        }
    }
    false
}

fn fingerprint(report: &Value) -> String {
    str_at(report, "/fingerprint").to_owned()
}

#[test]
fn null_pointer_dereference() {
    require_bpf!();
    let (_, report) = record_crash(&expect::NULL_DEREF);
    assert_eq!(str_at(&report, "/signal/fault_address"), "0x0");
    assert_eq!(
        expect_frame(&report, "crash_null_deref").0,
        0,
        "{}",
        describe_frames(&report)
    );
}

#[test]
fn wild_pointer_read() {
    require_bpf!();
    let (_, report) = record_crash(&expect::WILD_POINTER);
    assert_eq!(
        str_at(&report, "/signal/fault_address"),
        expect::WILD_ADDRESS
    );
}

#[test]
fn write_to_read_only_data() {
    require_bpf!();
    // The fault address is the string literal, which the program prints.
    record_crash(&expect::WRITE_RODATA);
}

#[test]
fn stack_overflow() {
    require_bpf!();
    let (_, report) = record_crash(&expect::STACK_OVERFLOW);
    // The top of the stack is nothing but the recursion.
    let frames = crashtrace_tests::frames(&report);
    let recursive = frames
        .iter()
        .take_while(|f| f.get("function").and_then(Value::as_str) == Some("crash_stack_overflow"))
        .count();
    assert!(
        recursive >= 2,
        "expected the recursion at the top of\n{}",
        describe_frames(&report)
    );
}

#[test]
fn integer_divide_by_zero() {
    require_bpf!();
    record_crash(&expect::DIV_ZERO);
}

#[test]
fn bus_error_past_end_of_file() {
    require_bpf!();
    // The fault address is the start of the mapping, which the program prints.
    record_crash(&expect::SIGBUS);
}

#[test]
fn illegal_instruction_trap() {
    require_bpf!();
    record_crash(&expect::TRAP);
}

#[test]
fn crash_inside_a_plt_stub() {
    require_bpf!();
    let (_, report) = record_crash(&expect::PLT_CRASH);
    // The stub is named as gdb names it, not after the symbol before it,
    // and unwinding from it reaches its caller.
    let (index, _) = expect_frame(&report, "getppid@plt");
    assert_eq!(index, 0, "{}", describe_frames(&report));
    assert_eq!(
        expect_frame(&report, "ask_parent").0,
        1,
        "{}",
        describe_frames(&report)
    );
}

#[test]
fn crash_inside_a_signal_handler() {
    require_bpf!();
    let (_, report) = record_crash(&expect::HANDLER_CRASH);
    // handler <- sigreturn trampoline <- the interrupted loop, adjacent.
    let names: Vec<&str> = crashtrace_tests::frames(&report)
        .iter()
        .map(|f| f.get("function").and_then(Value::as_str).unwrap_or("??"))
        .collect();
    let handler = names.iter().position(|&n| n == "on_usr1");
    assert!(
        handler.is_some_and(|i| names[i + 1..].starts_with(&[
            expect::SIGRETURN_TRAMPOLINE,
            "spin_until_signalled",
            "main"
        ])),
        "{}",
        describe_frames(&report)
    );
}

#[test]
fn abort() {
    require_bpf!();
    let (_, report) = record_crash(&expect::ABORT);
    // abort() sends the signal itself: frame 0 is inside libc, and the
    // program's call to abort() is a few frames up.
    assert!(at(&report, "/signal/fault_address").is_null());
}

#[test]
fn crash_in_named_thread() {
    require_bpf!();
    let (_, report) = record_crash(&expect::THREAD_CRASH);
    assert_ne!(
        int_at(&report, "/tid"),
        int_at(&report, "/pid"),
        "{report:#}"
    );
    assert_eq!(str_at(&report, "/comm"), "worker-crash");
}

/// Other threads hold the mmap lock for writing, or wait for it, most of
/// the time (a Go runtime growing its heap does the same) when the process
/// is killed: the capture waits for the lock, so most runs keep every
/// mapping and are symbolized to the line. Without the wait, most runs
/// lost every mapping on a quiet machine. A writer that is itself waiting
/// for a CPU (a loaded host) can hold the lock longer than the bounded
/// wait: such a run must say so, never lose the mappings silently.
#[test]
fn killed_while_other_threads_remap_memory() {
    require_bpf!();
    let harness = harness();
    let program = harness.program("mmap_storm");
    let line = crashtrace_tests::programs::crash_line("mmap_storm.c");
    let runs = 4;
    let mut symbolized = 0;
    let mut described = Vec::new();
    for _ in 0..runs {
        let recording = harness.record(&program, &[]);
        let report = recording.only_crash();
        let frames = describe_frames(report);
        assert_eq!(str_at(report, "/class"), "killed-by-signal", "{frames}");
        if report["unwind_error"].is_null() {
            let (index, frame) = expect_frame(report, "kill_self_during_mmap_storm");
            assert_eq!(frame["line"].as_u64(), Some(line), "{frames}");
            let (caller, _) = expect_frame(report, "main");
            assert_eq!(caller, index + 1, "{frames}");
            symbolized += 1;
        } else {
            assert!(
                str_at(report, "/unwind_error").contains("mmap lock stayed busy"),
                "{frames}"
            );
        }
        described.push(frames);
    }
    assert!(
        symbolized * 2 >= runs,
        "{symbolized} of {runs} runs kept their mappings:\n{}",
        described.join("\n")
    );
}

#[test]
fn crash_in_dlopened_library() {
    require_bpf!();
    let (_, report) = record_crash(&expect::DLOPEN_CRASH);
    let frames = describe_frames(&report);
    let (_, fault) = expect_frame(&report, "crashy_fault");
    assert!(
        str_at(fault, "/module").ends_with("libcrashy.so"),
        "{frames}"
    );
    // Unwinding crossed from the library back into the executable.
    let (_, caller) = expect_frame(&report, "load_and_call_crashy");
    assert!(
        str_at(caller, "/module").ends_with("/dlopen_crash"),
        "{frames}"
    );
    assert!(
        str_at(caller, "/file").ends_with("/dlopen_crash.c"),
        "{frames}"
    );
}

#[test]
fn external_sigkill_names_the_sender() {
    require_bpf!();
    let harness = harness();
    let sleeper = harness.program("sleeper");
    let mut running = harness.spawn_record(&sleeper, &[]);
    let crashtrace_pid = running.crashtrace_pid();
    let victim: i32 = running
        .wait_for_stdout("pid:")
        .parse()
        .expect("sleeper prints its pid");
    // Never signal anything but a process crashtrace started.
    assert!(victim > 1, "bad pid {victim}");
    assert!(
        is_descendant(victim as u32, crashtrace_pid),
        "pid {victim} is not a descendant of crashtrace ({crashtrace_pid})"
    );

    // SAFETY: plain syscalls on a pid checked to descend from crashtrace.
    let (killer_tid, killed) = unsafe { (libc::gettid(), libc::kill(victim, libc::SIGKILL)) };
    assert_eq!(killed, 0, "kill: {}", std::io::Error::last_os_error());
    let recording = running.finish();
    let report = recording.only_crash();
    let context = || format!("{report:#}\n{}", recording.context());

    check_shape(report);
    assert_eq!(recording.exit_code(), Some(128 + 9), "{}", context());
    assert_eq!(
        str_at(report, "/class"),
        expect::KILLED_CLASS,
        "{}",
        context()
    );
    assert_eq!(
        str_at(report, "/signal/name"),
        expect::SIGKILL.0,
        "{}",
        context()
    );
    assert_eq!(
        int_at(report, "/signal/number"),
        i64::from(expect::SIGKILL.1)
    );
    assert_eq!(
        str_at(report, "/signal/code_name"),
        expect::SI_USER.0,
        "{}",
        context()
    );
    assert_eq!(int_at(report, "/signal/code"), i64::from(expect::SI_USER.1));
    assert!(
        at(report, "/signal/fault_address").is_null(),
        "{}",
        context()
    );
    assert_eq!(str_at(report, "/outcome/kind"), "killed", "{}", context());
    assert_eq!(
        at(report, "/outcome/signal"),
        &Value::from(9),
        "{}",
        context()
    );
    assert_eq!(int_at(report, "/pid"), i64::from(victim));
    assert_eq!(int_at(report, "/tid"), i64::from(victim));
    assert_eq!(int_at(report, "/ppid"), i64::from(crashtrace_pid));
    assert_eq!(str_at(report, "/comm"), "sleeper");

    // The sender is this test: its process, the very thread that called kill().
    let sender = at(report, "/signal/sender");
    assert!(
        sender.is_object(),
        "signal.sender should name the killer\n{}",
        context()
    );
    assert_eq!(
        int_at(sender, "/pid"),
        i64::from(std::process::id()),
        "{}",
        context()
    );
    assert_eq!(
        int_at(sender, "/tid"),
        i64::from(killer_tid),
        "{}",
        context()
    );
    // SAFETY: getuid cannot fail.
    assert_eq!(int_at(sender, "/uid"), i64::from(unsafe { libc::getuid() }));
    let test_exe = std::env::current_exe().unwrap();
    let test_exe_name = test_exe.file_name().unwrap().to_str().unwrap();
    assert!(
        str_at(sender, "/exe").ends_with(&format!("/{test_exe_name}")),
        "{}",
        context()
    );
}

#[test]
fn recovered_faults_are_not_crashes() {
    require_bpf!();
    let harness = harness();
    let recording = harness.record(&harness.program("recover"), &[]);
    assert_eq!(recording.exit_code(), Some(0), "{}", recording.context());
    assert_eq!(recording.printed("recovered:"), "200");
    assert!(
        recording.crashes.is_empty(),
        "handled faults were reported\n{}",
        recording.context()
    );
}

#[test]
fn signals_taken_through_signalfd_are_not_crashes() {
    require_bpf!();
    let harness = harness();
    let recording = harness.record(&harness.program("signalfd_term"), &[]);
    assert_eq!(recording.exit_code(), Some(0), "{}", recording.context());
    assert_eq!(recording.printed("received:"), "SIGTERM");
    assert!(
        recording.crashes.is_empty(),
        "a SIGTERM read from a signalfd was reported\n{}",
        recording.context()
    );
}

#[test]
fn exit_code_passes_through() {
    require_bpf!();
    let harness = harness();
    let exit_code = harness.program("exit_code");
    for code in [7, 0] {
        let recording = harness.record(&exit_code, &[&code.to_string()]);
        assert_eq!(recording.exit_code(), Some(code), "{}", recording.context());
        assert!(
            recording.crashes.is_empty(),
            "a clean exit is no crash\n{}",
            recording.context()
        );
    }
}

#[test]
fn segv_crash_exits_139() {
    require_bpf!();
    let harness = harness();
    let recording = harness.record(&harness.program("null_deref"), &[]);
    assert_eq!(
        recording.exit_code(),
        Some(128 + 11),
        "{}",
        recording.context()
    );
}

#[test]
fn missing_command_exits_127() {
    require_bpf!();
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-program");
    let recording = harness().record(&missing, &[]);
    assert_eq!(recording.exit_code(), Some(127), "{}", recording.context());
    assert!(recording.crashes.is_empty(), "{}", recording.context());
}

#[test]
fn fingerprints_identify_the_crash_site() {
    require_bpf!();
    let (_, first) = record_crash(&expect::NULL_DEREF);
    let (_, second) = record_crash(&expect::NULL_DEREF);
    let (_, other) = record_crash(&expect::WILD_POINTER);
    assert_eq!(
        fingerprint(&first),
        fingerprint(&second),
        "same crash, two runs"
    );
    assert_ne!(
        fingerprint(&first),
        fingerprint(&other),
        "different crashes"
    );
}
