//! The C programs, run directly (no crashtrace, no BPF): each crash program
//! must die of the signal its spec names, and the kernel's siginfo must
//! match the spec's code and fault address (checked with the
//! `siginfo_probe.so` preload library). The integration tests' expectations
//! rest on these facts.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::expect::{ALL, CrashSpec, FAULT_ADDRESS_PREFIX, FaultAddress, WILD_ADDRESS};
use crate::programs::{self, crash_line, source_path};

/// `<target>/tmp`, what `CARGO_TARGET_TMPDIR` is for integration tests
/// (unit tests do not get that variable); this binary is
/// `<target>/<profile>/deps/<name>`.
fn scratch_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(|target| target.join("tmp"))
        .unwrap_or_else(std::env::temp_dir)
}

fn program(name: &str) -> PathBuf {
    programs::build(&scratch_dir(), name)
}

fn run(spec: &CrashSpec, probe: bool) -> Output {
    let mut command = Command::new(program(spec.program));
    if let Some(artifact) = spec.arg_artifact {
        command.arg(program(artifact));
    }
    if probe {
        command.env("LD_PRELOAD", program("siginfo_probe.so"));
    }
    command
        .stdin(Stdio::null())
        .output()
        .expect("running the program")
}

/// Fields of the probe's `siginfo-probe: signo=11 code=1 ...` line.
fn probe_field<'a>(stderr: &'a str, key: &str) -> &'a str {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("siginfo-probe:"))
        .unwrap_or_else(|| panic!("no siginfo-probe line in stderr:\n{stderr}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn every_artifact_compiles() {
    for name in programs::names() {
        assert!(program(name).is_file(), "{name} was not built");
    }
}

#[test]
fn every_crash_program_has_one_crash_line() {
    for spec in ALL {
        let line = crash_line(spec.source);
        let text = std::fs::read_to_string(source_path(spec.source)).unwrap();
        assert!(line > 1, "{}: CRASH-LINE at {line}", spec.source);
        assert!(
            text.contains(&format!("{}(", spec.function)),
            "{} does not define {}",
            spec.source,
            spec.function
        );
    }
}

#[test]
fn crash_programs_die_by_the_expected_signal() {
    for spec in ALL {
        let output = run(spec, false);
        assert_eq!(
            output.status.signal(),
            Some(spec.signal.1),
            "{} should die of {} but: {}\nstderr: {}",
            spec.program,
            spec.signal.0,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn crash_programs_raise_the_expected_siginfo() {
    for spec in ALL {
        let output = run(spec, true);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let what = format!("{}: stdout {stdout:?} stderr {stderr:?}", spec.program);
        assert_eq!(output.status.signal(), Some(spec.signal.1), "{what}");
        assert_eq!(
            probe_field(&stderr, "signo"),
            spec.signal.1.to_string(),
            "{what}"
        );
        assert_eq!(
            probe_field(&stderr, "code"),
            spec.code.1.to_string(),
            "{} {what}",
            spec.code.0
        );
        assert_eq!(probe_field(&stderr, "comm"), spec.comm, "{what}");
        let (pid, tid) = (probe_field(&stderr, "pid"), probe_field(&stderr, "tid"));
        assert_eq!(pid != tid, spec.in_thread, "pid {pid} tid {tid}: {what}");

        let addr = probe_field(&stderr, "addr");
        match spec.fault_address {
            FaultAddress::Exact(expected) => assert_eq!(addr, expected, "{what}"),
            FaultAddress::Printed => {
                let printed = stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(FAULT_ADDRESS_PREFIX))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("no fault-address line: {what}"));
                assert_eq!(addr, printed, "{what}");
            }
            FaultAddress::InstructionPointer | FaultAddress::Any => {
                assert_ne!(addr, "0x0", "{what}")
            }
            // si_addr is not set for a sent signal; nothing to compare.
            FaultAddress::Null => {}
        }
    }
}

#[test]
fn wild_pointer_source_uses_the_expected_address() {
    let text = std::fs::read_to_string(source_path("wild_pointer.c")).unwrap();
    assert!(
        text.contains(&format!("#define WILD_ADDRESS {WILD_ADDRESS}UL")),
        "{text}"
    );
}

#[test]
fn recover_survives_its_faults() {
    let output = Command::new(program("recover")).output().unwrap();
    assert!(output.status.success(), "{}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "recovered: 200\n");
}

#[test]
fn exit_code_exits_with_its_argument() {
    for code in [0, 7, 42] {
        let status = Command::new(program("exit_code"))
            .arg(code.to_string())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code));
    }
}

#[test]
fn dlopen_crash_reports_a_missing_library() {
    let output = Command::new(program("dlopen_crash"))
        .arg("/nonexistent/libcrashy.so")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("dlopen"));
}

#[test]
fn sleeper_prints_its_pid_and_dies_of_sigkill() {
    let mut child = Command::new(program("sleeper"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("pid: {}", child.id()));
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}
