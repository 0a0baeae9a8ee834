//! Assertions tying one crash report to the program that produced it.

use std::path::Path;

use serde_json::Value;

use crate::expect::{CrashSpec, FAULT_ADDRESS_PREFIX, FaultAddress};
use crate::programs::crash_line;
use crate::record::Recording;
use crate::report::{
    self, at, check_shape, describe_frames, expect_frame, int_at, parse_address, str_at,
};

/// Panics with the report and the run's context unless `ok`.
#[track_caller]
pub fn ensure(ok: bool, what: &str, report: &Value, recording: &Recording) {
    assert!(ok, "{what}\nreport:\n{report:#}\n{}", recording.context());
}

/// Asserts everything the contract says about the report of `spec`'s
/// crash, run as `program args...` under `recording`: the report's shape,
/// crashtrace's exit status, class, signal, fault address, outcome,
/// process identity and the crashing frame with its callers.
pub fn check_native_crash(
    recording: &Recording,
    report: &Value,
    spec: &CrashSpec,
    program: &Path,
    args: &[String],
) {
    check_shape(report);
    let (signal_name, signo) = spec.signal;
    let (code_name, code) = spec.code;
    let e = |ok: bool, what: &str| ensure(ok, what, report, recording);

    e(
        recording.exit_code() == Some(128 + signo),
        &format!(
            "crashtrace should exit {} (128 + {signal_name}), exited {}",
            128 + signo,
            recording.status
        ),
    );
    e(
        str_at(report, "/class") == spec.class,
        &format!("class should be {:?}", spec.class),
    );
    e(
        str_at(report, "/runtime") == "native",
        "runtime should be \"native\"",
    );
    e(
        str_at(report, "/signal/name") == signal_name,
        &format!("signal.name should be {signal_name}"),
    );
    e(
        int_at(report, "/signal/number") == i64::from(signo),
        &format!("signal.number should be {signo}"),
    );
    e(
        str_at(report, "/signal/code_name") == code_name,
        &format!("signal.code_name should be {code_name}"),
    );
    e(
        int_at(report, "/signal/code") == i64::from(code),
        &format!("signal.code should be {code}"),
    );
    e(
        int_at(report, "/signal/errno") == 0,
        "signal.errno should be 0",
    );
    if spec.kernel_sent {
        e(
            at(report, "/signal/sender").is_null(),
            "a CPU fault has no sender: signal.sender should be null",
        );
    }

    check_fault_address(recording, report, spec);

    e(
        str_at(report, "/outcome/kind") == "killed",
        "outcome.kind should be \"killed\"",
    );
    e(
        at(report, "/outcome/signal") == &Value::from(signo),
        &format!("outcome.signal should be {signo}"),
    );
    e(
        at(report, "/outcome/exit_code").is_null(),
        "outcome.exit_code should be null for a killed process",
    );

    check_identity(recording, report, spec, program, args);
    check_frames(recording, report, spec);
}

fn check_fault_address(recording: &Recording, report: &Value, spec: &CrashSpec) {
    let actual = at(report, "/signal/fault_address");
    let e = |ok: bool, what: &str| ensure(ok, what, report, recording);
    match spec.fault_address {
        FaultAddress::Exact(expected) => {
            e(
                actual.as_str() == Some(expected),
                &format!("signal.fault_address should be {expected:?}"),
            );
        }
        FaultAddress::Printed => {
            let printed = recording.printed(FAULT_ADDRESS_PREFIX);
            e(
                actual.as_str() == Some(printed),
                &format!(
                    "signal.fault_address should be {printed:?}, the address the program printed"
                ),
            );
        }
        FaultAddress::InstructionPointer => {
            let frame0 = report::frames(report)
                .first()
                .map(|f| str_at(f, "/address"));
            e(
                actual.as_str().map(parse_address).is_some() && actual.as_str() == frame0,
                "signal.fault_address should be the faulting instruction: frame 0's address",
            );
        }
        FaultAddress::Any => e(
            actual.is_string(),
            "signal.fault_address should be an address",
        ),
        FaultAddress::Null => e(
            actual.is_null(),
            "signal.fault_address should be null for a sent signal",
        ),
    }
}

fn check_identity(
    recording: &Recording,
    report: &Value,
    spec: &CrashSpec,
    program: &Path,
    args: &[String],
) {
    let e = |ok: bool, what: &str| ensure(ok, what, report, recording);
    let pid = int_at(report, "/pid");
    let tid = int_at(report, "/tid");
    if spec.in_thread {
        e(
            tid != pid,
            "the crash is in a second thread: tid should differ from pid",
        );
    } else {
        e(
            tid == pid,
            "the crash is in the main thread: tid should equal pid",
        );
    }
    e(
        int_at(report, "/ppid") == i64::from(recording.crashtrace_pid),
        &format!(
            "ppid should be crashtrace's pid {}",
            recording.crashtrace_pid
        ),
    );
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    e(
        int_at(report, "/uid") == i64::from(uid),
        &format!("uid should be {uid}"),
    );
    e(
        str_at(report, "/comm") == spec.comm,
        &format!("comm should be {:?}", spec.comm),
    );

    let file_name = program
        .file_name()
        .and_then(|n| n.to_str())
        .expect("program path has a file name");
    e(
        str_at(report, "/exe").ends_with(&format!("/{file_name}")),
        &format!("exe should be the program's path, ending in /{file_name}"),
    );
    let mut cmdline = vec![Value::from(program.to_str().expect("UTF-8 program path"))];
    cmdline.extend(args.iter().map(|a| Value::from(a.as_str())));
    e(
        at(report, "/cmdline") == &Value::Array(cmdline),
        "cmdline should be the program and its arguments",
    );
}

fn check_frames(recording: &Recording, report: &Value, spec: &CrashSpec) {
    let (index, frame) = expect_frame(report, spec.function);
    let e = |ok: bool, what: &str| {
        ensure(
            ok,
            &format!("{what}\nframes:\n{}", describe_frames(report)),
            report,
            recording,
        )
    };
    e(
        index <= spec.max_frame_index,
        &format!(
            "{} should be frame {} or above, is frame {index}",
            spec.function, spec.max_frame_index
        ),
    );
    let file = frame.get("file").and_then(Value::as_str).unwrap_or("");
    e(
        file == spec.source || file.ends_with(&format!("/{}", spec.source)),
        &format!("{}'s file should be {}", spec.function, spec.source),
    );
    let line = frame.get("line").and_then(Value::as_u64);
    if spec.check_line {
        let expected = crash_line(spec.source);
        e(
            line == Some(expected),
            &format!(
                "{}'s line should be {expected}, the CRASH-LINE",
                spec.function
            ),
        );
    } else {
        e(
            line.is_some_and(|l| l > 0),
            &format!("{} should have a line", spec.function),
        );
    }
    let module = frame.get("module").and_then(Value::as_str).unwrap_or("");
    e(
        module.ends_with(&format!("/{}", spec.module)),
        &format!("{}'s module should end in /{}", spec.function, spec.module),
    );
    let mut rest = report::frames(report).iter().skip(index + 1);
    for caller in spec.callers {
        let found = rest.any(|f| f.get("function").and_then(Value::as_str) == Some(*caller));
        e(
            found,
            &format!(
                "frames should continue {} -> {}",
                spec.function,
                spec.callers.join(" -> ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::PathBuf;
    use std::process::ExitStatus;

    use serde_json::json;

    use super::*;
    use crate::expect::NULL_DEREF;

    const PROGRAM: &str = "/build/crashtrace-programs/null_deref";
    const CRASHTRACE_PID: u32 = 4000;

    fn recording() -> Recording {
        Recording {
            status: ExitStatus::from_raw(139 << 8),
            crashes: Vec::new(),
            records: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
            output: PathBuf::from("/dev/null"),
            output_missing: false,
            command: "crashtrace record --json --output /dev/null -- null_deref".into(),
            crashtrace_pid: CRASHTRACE_PID,
        }
    }

    /// A report that meets the contract for null_deref.
    fn good_report() -> Value {
        let frame = |address: &str, function: &str, line: u64| {
            json!({"address": address, "module": PROGRAM, "build_id": null, "offset": "0x1135",
                   "function": function, "file": "/src/tests/programs/null_deref.c", "line": line,
                   "column": 12, "inlined": false})
        };
        json!({
            "schema": 1, "type": "crash", "time": "2025-01-02T03:04:05.678901Z", "host": "box",
            "pid": 4001, "tid": 4001, "ppid": CRASHTRACE_PID, "uid": unsafe { libc::getuid() },
            "comm": "null_deref", "exe": PROGRAM, "cmdline": [PROGRAM], "runtime": "native",
            "signal": {"number": 11, "name": "SIGSEGV", "code": 1, "code_name": "SEGV_MAPERR",
                       "errno": 0, "fault_address": "0x0", "sender": null},
            "outcome": {"kind": "killed", "exit_code": null, "signal": 11, "core_dumped": false},
            "class": "null-pointer-dereference", "summary": "write through a NULL pointer",
            "evidence": ["fault address 0x0 is in the first page"], "message": null, "last_words": null, "goroutine": null, "tags": [],
            "frames": [frame("0x555555555135", "crash_null_deref", crash_line("null_deref.c")),
                       frame("0x55555555514c", "store_answer", 11),
                       frame("0x555555555158", "main", 16)],
            "frames_truncated": false, "unwind_error": null, "fingerprint": "0123456789abcdef"
        })
    }

    fn passes(report: &Value) -> bool {
        let recording = recording();
        catch_unwind(AssertUnwindSafe(|| {
            check_native_crash(&recording, report, &NULL_DEREF, Path::new(PROGRAM), &[]);
        }))
        .is_ok()
    }

    #[test]
    fn accepts_a_report_that_meets_the_contract() {
        let report = good_report();
        let recording = recording();
        check_native_crash(&recording, &report, &NULL_DEREF, Path::new(PROGRAM), &[]);
    }

    #[test]
    fn rejects_reports_that_break_the_contract() {
        let breakages: &[(&str, Value)] = &[
            ("/class", json!("invalid-memory-access")),
            ("/signal/code_name", json!("SEGV_ACCERR")),
            ("/signal/fault_address", json!("0x10")),
            ("/signal/fault_address", json!("0X0")),
            ("/outcome/kind", json!("exited")),
            ("/evidence", json!([])),
            ("/fingerprint", json!("abc")),
            ("/time", json!("yesterday")),
            ("/frames/0/line", json!(1)),
            ("/frames/0/function", json!("main")),
            ("/frames/1/function", json!("other")),
            ("/frames/0/file", json!("other.c")),
            ("/tid", json!(4002)),
            ("/comm", json!("sh")),
            ("/frames/0/inlined", json!(null)),
        ];
        for (pointer, value) in breakages {
            let mut report = good_report();
            *report.pointer_mut(pointer).expect("pointer exists") = value.clone();
            assert!(
                !passes(&report),
                "a report with {pointer} = {value} was accepted"
            );
        }
    }

    #[test]
    fn recognizes_timestamps_and_addresses() {
        for ok in [
            "2025-01-02T03:04:05Z",
            "2025-01-02T03:04:05.1+02:00",
            "2025-01-02T03:04:05.123456789-05:30",
        ] {
            assert!(report::is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2025-01-02 03:04:05",
            "2025-01-02T03:04:05",
            "2025-01-02T03:04:05.Z",
            "1735787045",
        ] {
            assert!(!report::is_rfc3339(bad), "{bad}");
        }
        assert!(report::is_hex_address("0x0") && report::is_hex_address("0xdead0000"));
        assert!(
            !report::is_hex_address("0xDEAD")
                && !report::is_hex_address("dead")
                && !report::is_hex_address("0x")
        );
    }
}
