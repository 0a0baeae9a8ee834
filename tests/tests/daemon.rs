//! `crashtrace daemon` with real probes: readiness, the store and every
//! query, the JSON-lines sink, reload, shutdown, reading the store without
//! root, and the shipped unit file.

use std::{path::Path, process::Command, time::Duration};

use crashtrace_tests::{
    Harness, crashtrace_bin,
    daemon::{Daemon, ScratchDir, config_in, crash, query, query_json, query_ok},
    require_bpf,
};

const ACK_TIMEOUT: Duration = Duration::from_secs(30);

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs `crashtrace ARGS --store STORE` as uid/gid `ids` (setpriv).
fn query_as(ids: (u32, u32), store: &Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .arg(format!("--reuid={}", ids.0))
        .arg(format!("--regid={}", ids.1))
        .arg("--clear-groups")
        .arg(crashtrace_bin())
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("running setpriv (util-linux)")
}

#[test]
fn daemon_records_crashes_that_every_query_shows() {
    require_bpf!();
    let dir = ScratchDir::new("daemon-basic");
    let h = harness();
    let null = dir.copy_program(&h.program("null_deref"), "null_deref_daemon");
    let abort = dir.copy_program(&h.program("abort"), "abort_daemon");
    let sink = dir.path().join("sink.jsonl");
    let extra = format!("[sinks]\njson_lines = [\"{}\"]\n", sink.display());
    let config = config_in(dir.path(), "group = \"nogroup\"", &extra);
    let daemon = Daemon::start(dir.path(), &config, &[]);
    let store = daemon.store.clone();

    let pid = crash(&null);
    let ack = daemon.wait_ack(pid, ACK_TIMEOUT);
    assert_eq!(ack.class, "null-pointer-dereference");
    assert_eq!(ack.exe, null.display().to_string());

    // list: one line per crash, filterable by executable.
    let exe = null.display().to_string();
    let rows = query_json(&store, &["list", "--json", "--exe", &exe]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], ack.id);
    assert_eq!(rows[0]["pid"], pid);
    assert_eq!(rows[0]["class"], "null-pointer-dereference");
    let table = query_ok(
        &store,
        &[
            "list",
            "--since",
            "10m",
            "--class",
            "null-pointer-dereference",
        ],
    );
    let line = table
        .lines()
        .find(|l| l.ends_with(&exe))
        .unwrap_or_else(|| panic!("no row for {exe}:\n{table}"));
    assert!(
        line.contains("SIGSEGV") && line.contains(&pid.to_string()),
        "{line}"
    );
    assert!(query_json(&store, &["list", "--json", "--exe", &exe, "--until", "1h"]).is_empty());

    // show: the record report, plus the daemon's context.
    let id = ack.id.to_string();
    let json = query_json(&store, &["show", &id, "--json"]);
    assert_eq!(json[0]["pid"], pid);
    assert_eq!(json[0]["fingerprint"], ack.fingerprint.as_str());
    assert_eq!(json[0]["frames"][0]["function"], "crash_null_deref");
    assert!(json[0]["boot_id"].as_str().is_some_and(|b| b.len() == 32));
    assert!(
        json[0]["cgroup"]
            .as_str()
            .is_some_and(|c| c.starts_with('/'))
    );
    let text = query_ok(&store, &["show", &id, "--color", "never"]);
    assert!(
        text.starts_with(&format!(
            "crash pid {pid} (null_deref_daem) killed by SIGSEGV"
        )),
        "{text}"
    );
    assert!(
        text.contains("crash_null_deref at ") && text.contains(&format!("  id       {id}\n")),
        "{text}"
    );

    // groups and stats.
    let groups = query_json(&store, &["groups", "--json"]);
    let group = groups
        .iter()
        .find(|g| g["fingerprint"] == ack.fingerprint.as_str())
        .unwrap_or_else(|| panic!("no group {}: {groups:?}", ack.fingerprint));
    assert_eq!(group["count"], 1);
    assert_eq!(group["example_id"], ack.id);
    assert!(
        group["top_frames"]
            .as_str()
            .unwrap()
            .starts_with("crash_null_deref < store_answer")
    );
    let stats = query_json(&store, &["stats", "--json"]);
    assert!(stats[0]["crashes"].as_u64().unwrap() >= 1);
    let daemon_state = stats[0]["daemon"].to_string();
    assert!(daemon_state.contains("probes"), "{daemon_state}");
    assert!(query_ok(&store, &["stats"]).contains("last 1h:"));

    // The sink got the stored form.
    let sunk = std::fs::read_to_string(&sink).unwrap();
    let line: serde_json::Value = sunk
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .find(|v: &serde_json::Value| v["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in the sink:\n{sunk}"));
    assert_eq!(line["class"], "null-pointer-dereference");
    assert!(line.get("boot_id").is_some());

    // Reload: exclude the NULL program; the next crash of it is filtered,
    // the abort program's is not.
    let excluded = config_in(
        dir.path(),
        "group = \"nogroup\"",
        &format!("{extra}[filter]\nexclude_exe = [\"{}\"]\n", null.display()),
    );
    std::fs::write(&daemon.config, excluded).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("reloaded configuration", ACK_TIMEOUT);
    let filtered = crash(&null);
    let kept = crash(&abort);
    assert_eq!(daemon.wait_ack(kept, ACK_TIMEOUT).class, "abort");
    assert!(
        daemon.acks().iter().all(|a| a.pid != filtered),
        "an excluded crash was stored:\n{}",
        daemon.log()
    );

    let (status, log) = daemon.stop();
    assert!(status.success(), "daemon exited with {status}:\n{log}");
    assert!(log.contains("daemon stopped"), "{log}");

    // Readable without root by the configured group, refused otherwise.
    let nobody = query_as((65534, 65534), &store, &["list", "--json", "--exe", &exe]);
    assert!(
        nobody.status.success(),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&nobody.stdout).lines().count(), 1);
    let stranger = query_as((65534, 65533), &store, &["list"]);
    assert!(!stranger.status.success());
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(
        err.contains("permission denied") && err.contains("store.group"),
        "{err}"
    );
}

#[test]
fn invalid_config_names_the_key_and_missing_store_is_explained() {
    let dir = ScratchDir::new("daemon-config");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[rate_limit]\nburst = 5\nper_minit = 3\n").unwrap();
    let out = Command::new(crashtrace_bin())
        .args(["daemon", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("per_minit") && err.contains("line 3"), "{err}");

    let out = query(&dir.path().join("none.db"), &["list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no crash store at"), "{err}");
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let unit = crashtrace_tests::workspace_root().join("dist/crashtrace.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for directive in [
        "Type=notify",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "StateDirectory=crashtrace",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(text.contains(directive), "the unit lacks {directive}");
    }
    // systemd-analyze checks that ExecStart exists: point it at the binary
    // under test, in a copy.
    let dir = ScratchDir::new("daemon-unit");
    let copy = dir.path().join("crashtrace.service");
    let bin = crashtrace_bin().canonicalize().unwrap();
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/crashtrace", &bin.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("running systemd-analyze (package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{err}"
    );
    let about_ours: Vec<&str> = err.lines().filter(|l| l.contains("crashtrace")).collect();
    assert!(about_ours.is_empty(), "systemd-analyze warned:\n{err}");
}

/// A Go panic, which ends in exit(2) without a signal, is stored with its
/// Go class, message and last words: the daemon probes Go executables as
/// they start.
#[test]
fn daemon_records_go_panics() {
    require_bpf!();
    let dir = ScratchDir::new("daemon-go");
    let crashy = crashtrace_tests::go_programs::build(
        harness().root(),
        "crashy",
        crashtrace_tests::go_programs::GoBuild::Stripped,
    );
    let program = dir.copy_program(&crashy, "crashy_daemon");
    let config = config_in(dir.path(), "", "");
    let daemon = Daemon::start(dir.path(), &config, &[]);
    let mut child = Command::new(&program)
        .args(["nil-map", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running crashy");
    let pid = child.id();
    assert_eq!(child.wait().ok().and_then(|s| s.code()), Some(2));
    let ack = daemon.wait_ack(pid, ACK_TIMEOUT);
    assert_eq!(ack.class, "nil-map-write");
    let report = query_json(&daemon.store, &["show", &ack.id.to_string(), "--json"]);
    let report = &report[0];
    assert_eq!(report["runtime"], "go", "{report:#}");
    assert_eq!(
        report["message"], "assignment to entry in nil map",
        "{report:#}"
    );
    assert!(
        report["last_words"]
            .as_str()
            .is_some_and(|w| w.starts_with("panic: assignment to entry in nil map")),
        "{report:#}"
    );
}

/// The first run of a Go executable the host has never seen panics at
/// once, before the daemon can have probed it: it is still stored, with
/// its class and message from what the runtime printed.
#[test]
fn daemon_records_a_first_run_go_panic() {
    require_bpf!();
    let dir = ScratchDir::new("daemon-first-run");
    let crashy = crashtrace_tests::go_programs::build(
        harness().root(),
        "crashy",
        crashtrace_tests::go_programs::GoBuild::Normal,
    );
    let mut daemon = Daemon::start(dir.path(), &config_in(dir.path(), "", ""), &[]);
    if daemon.log().contains("no function hook on write(2)") {
        // This kernel keeps no stderr tails by default; the tracepoint does.
        drop(daemon);
        let config = config_in(dir.path(), "", "[capture]\nlast_words = \"syscalls\"");
        daemon = Daemon::start(dir.path(), &config, &[]);
    }
    // A fresh copy: a file the kernel has never reported.
    let program = dir.copy_program(&crashy, "crashy_first");
    let mut child = Command::new(&program)
        .arg("panic")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running crashy");
    let pid = child.id();
    assert_eq!(child.wait().ok().and_then(|s| s.code()), Some(2));
    let ack = daemon.wait_ack(pid, ACK_TIMEOUT);
    assert_eq!(ack.class, "go-panic", "{}", daemon.log());
    let report = query_json(&daemon.store, &["show", &ack.id.to_string(), "--json"]);
    let report = &report[0];
    assert_eq!(report["runtime"], "go", "{report:#}");
    assert_eq!(
        report["message"], "config missing: database url",
        "{report:#}"
    );
    assert!(
        report["summary"]
            .as_str()
            .is_some_and(|s| s.contains("main.loadConfig at ")),
        "{report:#}"
    );
}
