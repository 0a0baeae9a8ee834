//! Kills the process did not ask for: by the kernel (the OOM killer, a CPU
//! time limit) and by other processes (SIGTERM, SIGINT, SIGHUP). The report
//! names who sent the signal: the kernel, with the OOM killer's figures, or
//! the sending process.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crashtrace_tests::cgroup::MemoryCgroup;
use crashtrace_tests::report::{at, check_shape, int_at, str_at};
use crashtrace_tests::watch::Watch;
use crashtrace_tests::{Harness, require_bpf};
use serde_json::Value;

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The memory limit of the OOM tests' cgroups.
const LIMIT: u64 = 32 << 20;

/// A `sh -c` script that joins `cgroup`, then becomes `memory_hog`, after
/// running `first` (shell commands ending in `&&`, or nothing).
fn hog_script(harness: &Harness, cgroup: &MemoryCgroup, first: &str) -> String {
    format!(
        "{first} echo $$ > '{}' && exec '{}'",
        cgroup.procs_file().display(),
        harness.program("memory_hog").display()
    )
}

#[test]
fn oom_kill_in_a_memory_limited_cgroup() {
    require_bpf!();
    let harness = harness();
    let cgroup = MemoryCgroup::new("crashtrace-oom-test", LIMIT);
    let script = hog_script(&harness, &cgroup, "");
    let recording = harness.record(Path::new("/bin/sh"), &["-c", &script]);
    let report = recording.only_crash();
    let context = || format!("{report:#}\n{}", recording.context());
    assert_eq!(recording.exit_code(), Some(128 + 9), "{}", context());
    check_oom_report(report, &cgroup, &context);
}

/// The same OOM kill, reported by `watch --pid` on the shell that becomes
/// the hog.
#[test]
fn oom_kill_under_watch() {
    require_bpf!();
    let harness = harness();
    // Not the record test's cgroup: the two tests may run at once.
    let cgroup = MemoryCgroup::new("crashtrace-oom-watch-test", LIMIT);
    // The shell waits for a line, so that watch is started on its pid
    // before anything happens; EOF (a failed test) makes it exit instead.
    let script = hog_script(&harness, &cgroup, "read line &&");
    let mut hog = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting /bin/sh");
    let pid = hog.id();
    let watch = Watch::start_with(harness.root(), "oom", &[], &["--pid", &pid.to_string()]);
    hog.stdin
        .take()
        .expect("piped stdin")
        .write_all(b"go\n")
        .expect("starting the hog");
    let status = hog.wait().expect("waiting for the hog");
    let report = watch.wait_for_pid(pid);
    let context = || format!("{report:#}\n{}", watch.context());
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{status}\n{}",
        context()
    );
    check_oom_report(&report, &cgroup, &context);
}

/// What an OOM kill of `memory_hog` in `cgroup` (limited to [`LIMIT`])
/// reports, whoever wrote the report.
fn check_oom_report(report: &Value, cgroup: &MemoryCgroup, context: &dyn Fn() -> String) {
    check_shape(report);
    assert_eq!(str_at(report, "/class"), "oom-kill", "{}", context());
    assert_eq!(str_at(report, "/comm"), "memory_hog", "{}", context());
    assert_eq!(str_at(report, "/signal/name"), "SIGKILL", "{}", context());
    assert_eq!(at(report, "/signal/sent_by_kernel"), true, "{}", context());
    assert!(at(report, "/signal/sender").is_null(), "{}", context());

    // The victim's figures: it was killed holding about the limit in
    // anonymous memory (the kernel logs the same numbers).
    let anon = int_at(report, "/oom/anon_rss_kib") as u64 * 1024;
    assert!(
        anon > LIMIT / 2 && anon <= LIMIT,
        "anon-rss {anon} vs limit {LIMIT}\n{}",
        context()
    );
    assert!(int_at(report, "/oom/total_vm_kib") as u64 * 1024 >= anon);
    assert!(int_at(report, "/oom/pgtables_kib") > 0, "{}", context());
    assert_eq!(int_at(report, "/oom/oom_score_adj"), 0);
    assert_eq!(
        int_at(report, "/oom/invoker/pid"),
        int_at(report, "/pid"),
        "the hog's own allocation invoked the OOM killer\n{}",
        context()
    );

    // The cgroup whose limit was enforced.
    assert_eq!(
        str_at(report, "/oom/cgroup/path"),
        cgroup.relative,
        "{}",
        context()
    );
    assert_eq!(int_at(report, "/oom/cgroup/limit_bytes") as u64, LIMIT);
    let usage = int_at(report, "/oom/cgroup/usage_bytes") as u64;
    assert!(
        usage > LIMIT - (1 << 20) && usage <= LIMIT,
        "usage {usage}\n{}",
        context()
    );
    let evidence = at(report, "/evidence").to_string();
    assert!(evidence.contains(&cgroup.relative), "{}", context());
    assert!(
        str_at(report, "/summary").contains("OOM killer"),
        "{}",
        context()
    );
}

#[test]
fn cpu_time_limit_is_the_kernels_signal() {
    require_bpf!();
    // A soft limit of one CPU second: the kernel sends SIGXCPU (the hard
    // limit's SIGKILL would come a second later).
    let recording = harness().record(
        Path::new("/bin/sh"),
        &["-c", "ulimit -S -t 1; while :; do :; done"],
    );
    let report = recording.only_crash();
    let context = || format!("{report:#}\n{}", recording.context());
    check_shape(report);
    assert_eq!(recording.exit_code(), Some(128 + 24), "{}", context());
    assert_eq!(str_at(report, "/class"), "resource-limit", "{}", context());
    assert_eq!(str_at(report, "/signal/name"), "SIGXCPU", "{}", context());
    assert_eq!(
        str_at(report, "/signal/code_name"),
        "SI_KERNEL",
        "{}",
        context()
    );
    assert_eq!(at(report, "/signal/sent_by_kernel"), true, "{}", context());
    assert!(at(report, "/signal/sender").is_null(), "{}", context());
    assert!(
        at(report, "/evidence")
            .to_string()
            .contains("sent by the kernel"),
        "{}",
        context()
    );
}

/// `sleeper` killed by `signal` from a `kill` command: a killed-by-signal
/// report naming that command as the sender.
fn killed_by(signal: &str, number: i32) {
    require_bpf!();
    let harness = harness();
    let sleeper = harness.program("sleeper");
    let mut running = harness.spawn_record(&sleeper, &[]);
    let victim: i32 = running
        .wait_for_stdout("pid:")
        .parse()
        .expect("sleeper prints its pid");
    assert!(victim > 1, "bad pid {victim}");
    let status = std::process::Command::new("/bin/kill")
        .args([
            &format!("-{}", signal.trim_start_matches("SIG")),
            &victim.to_string(),
        ])
        .status()
        .expect("running /bin/kill");
    assert!(status.success(), "kill -{signal} {victim}: {status}");
    let recording = running.finish();
    let report = recording.only_crash();
    let context = || format!("{report:#}\n{}", recording.context());
    check_shape(report);
    assert_eq!(recording.exit_code(), Some(128 + number), "{}", context());
    assert_eq!(
        str_at(report, "/class"),
        "killed-by-signal",
        "{}",
        context()
    );
    assert_eq!(str_at(report, "/signal/name"), signal, "{}", context());
    assert_eq!(
        str_at(report, "/signal/code_name"),
        "SI_USER",
        "{}",
        context()
    );
    assert_eq!(at(report, "/signal/sent_by_kernel"), false, "{}", context());
    assert_eq!(
        str_at(report, "/signal/sender/comm"),
        "kill",
        "{}",
        context()
    );
    assert!(
        str_at(report, "/signal/sender/exe").ends_with("/bin/kill"),
        "{}",
        context()
    );
    let cmdline = at(report, "/signal/sender/cmdline").to_string();
    assert!(cmdline.contains(&victim.to_string()), "{}", context());
    assert!(
        str_at(report, "/summary").contains("from pid"),
        "{}",
        context()
    );
}

#[test]
fn sigterm_names_the_sender() {
    killed_by("SIGTERM", libc::SIGTERM);
}

#[test]
fn sigint_names_the_sender() {
    killed_by("SIGINT", libc::SIGINT);
}

#[test]
fn sighup_names_the_sender() {
    killed_by("SIGHUP", libc::SIGHUP);
}
