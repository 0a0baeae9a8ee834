//! `crashtrace goroutines PID` on running Go programs the suite builds
//! (`tests/programs/go/goleak`), stripped, with the oldest and the newest
//! release of the matrix: the groups, their wait reasons and creation
//! sites, the JSON, the threads, and the errors for what is not a Go
//! process. And `watch --goroutines`: a server leaking goroutines gets a
//! leak record naming where they were created and where they block; a
//! process holding 50,000 idle goroutines steadily gets none. (The reader itself is checked on every release, plain,
//! stripped and PIE, against the program's own `runtime.Stack(all)` by the
//! unit test `goroutines_of_a_live_process_in_every_release`.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crashtrace_tests::go_programs::{self, GoBuild};
use crashtrace_tests::{crashtrace_bin, require_bpf};
use serde_json::Value;

/// A running `goleak hold N`, stopped on drop.
struct Holder {
    child: Child,
}

impl Holder {
    fn start(exe: &Path, n: usize) -> Self {
        Self::run(exe, "hold", n)
    }

    /// `goleak MODE N`, once it says it is ready.
    fn run(exe: &Path, mode: &str, n: usize) -> Self {
        let mut child = Command::new(exe)
            .args([mode, &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start goleak");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let read = out.read_line(&mut line).unwrap();
            assert!(read > 0, "goleak ended before it was ready");
            if line == "ready\n" {
                break;
            }
        }
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn goroutines(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(crashtrace_bin())
        .arg("goroutines")
        .args(args)
        .output()
        .expect("run crashtrace goroutines");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_release(version: &str) {
    let toolchain = go_programs::toolchain(version);
    let exe = go_programs::build_with(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "goleak",
        GoBuild::Stripped,
        &toolchain,
    );
    let holder = Holder::start(&exe, 40);
    let pid = holder.pid().to_string();

    let (code, text, err) = goroutines(&[&pid]);
    assert_eq!(code, 0, "Go {version}: {err}");
    assert!(
        text.contains("\n40 goroutines: chan send\n"),
        "Go {version}:\n{text}"
    );
    // Go 1.20 gave mutex waits a reason of their own.
    let mutex = if version == "1.19" {
        "semacquire"
    } else {
        "sync.Mutex.Lock"
    };
    assert!(
        text.contains(&format!("6 goroutines: {mutex}\n")),
        "Go {version}:\n{text}"
    );
    assert!(
        text.contains("3 goroutines: sleep"),
        "Go {version}:\n{text}"
    );
    assert!(
        text.contains("created by main.fanOut at "),
        "Go {version}:\n{text}"
    );
    assert!(text.contains("threads: "), "Go {version}:\n{text}");

    let (code, json, err) = goroutines(&[&pid, "--json"]);
    assert_eq!(code, 0, "Go {version}: {err}");
    let dump: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(dump["schema_version"], 1);
    assert_eq!(dump["pid"], holder.pid());
    assert!(
        dump["go_version"]
            .as_str()
            .unwrap()
            .starts_with(&toolchain.version_prefix())
    );
    let all = dump["goroutines"].as_array().unwrap();
    let user: Vec<&Value> = all.iter().filter(|g| g["system"] == false).collect();
    assert_eq!(user.len(), 40 + 6 + 3 + 1, "Go {version}: {json}");
    let workers: Vec<&&Value> = user
        .iter()
        .filter(|g| {
            g["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == "main.worker")
        })
        .collect();
    assert_eq!(workers.len(), 40, "Go {version}");
    for w in workers {
        assert_eq!(w["status"], "waiting");
        assert_eq!(w["wait_reason"], "chan send");
        assert_eq!(w["created_by"]["function"], "main.fanOut");
        assert!(
            w["created_by"]["file"]
                .as_str()
                .unwrap()
                .ends_with("goleak/main.go"),
            "{w}"
        );
        assert!(w.get("error").is_none(), "{w}");
        let frames = w["frames"].as_array().unwrap();
        assert_eq!(frames.last().unwrap()["function"], "runtime.goexit", "{w}");
    }
    let main = user.iter().find(|g| g["id"] == 1).expect("goroutine 1");
    assert!(main.get("created_by").is_none(), "{main}");
    assert!(
        main["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"] == "main.main"),
        "{main}"
    );
    let threads = dump["threads"].as_array().unwrap();
    assert!(!threads.is_empty());
    assert!(threads.iter().any(|t| t["tid"] == holder.pid()));
}

#[test]
fn stripped_go_1_19() {
    check_release("1.19");
}

#[test]
fn stripped_go_1_27() {
    check_release("1.27.3");
}

#[test]
fn a_process_that_is_not_go_is_refused_with_the_reason() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let (code, out, err) = goroutines(&[&sleeper.id().to_string()]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("is not a Go program"), "{err}");
    assert!(out.is_empty());

    let (code, _, err) = goroutines(&["4194304"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot read /proc/4194304/exe"), "{err}");
}

/// `watch --goroutines --leak-window 20s` over a leaking server (200
/// goroutines a second) and a process holding 50,000 goroutines steadily.
#[test]
fn watch_reports_the_leak_and_not_the_steady_crowd() {
    use std::time::{Duration, Instant};
    let toolchain = go_programs::toolchain("1.27.3");
    let exe = go_programs::build_with(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "goleak",
        GoBuild::Stripped,
        &toolchain,
    );
    let crowd = Holder::start(&exe, 50_000);
    let leaker = Holder::run(&exe, "leak", 200);
    let mut watch = Command::new(crashtrace_bin())
        .args(["watch", "--goroutines", "--leak-window", "20s", "--json"])
        .args([
            "--pid",
            &crowd.pid().to_string(),
            "--pid",
            &leaker.pid().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crashtrace watch --goroutines");
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records: Vec<Value> = Vec::new();
    let leak = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = watch.kill();
            panic!("no leak record within 60 s; records: {records:?}");
        };
        let record: Value = serde_json::from_str(&line).expect("a JSON line");
        if record["type"] == "leak" {
            break record;
        }
        records.push(record);
    };
    // A few more seconds, to see that the crowd stays unreported.
    let more = Instant::now() + Duration::from_secs(3);
    while let Ok(line) = rx.recv_timeout(more.saturating_duration_since(Instant::now())) {
        records.push(serde_json::from_str(&line).unwrap());
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let status = watch.wait().unwrap();
    assert!(status.success(), "watch --goroutines ended with {status}");

    assert_eq!(leak["pid"], leaker.pid(), "{leak}");
    assert_eq!(leak["window_seconds"], 20);
    let (first, last) = (
        leak["goroutines_first"].as_u64().unwrap(),
        leak["goroutines_last"].as_u64().unwrap(),
    );
    assert!(last >= first + 1000, "{leak}");
    let created = &leak["created_by"][0];
    assert_eq!(created["function"], "main.(*Server).handle", "{leak}");
    assert!(
        created["file"]
            .as_str()
            .unwrap()
            .ends_with("goleak/main.go"),
        "{leak}"
    );
    let live = leak["live"].as_u64().unwrap();
    assert!(
        created["count"].as_u64().unwrap() * 10 >= live * 9,
        "{leak}"
    );
    let blocked = &leak["blocked"][0];
    assert_eq!(blocked["wait_reason"], "chan send", "{leak}");
    assert_eq!(blocked["function"], "main.(*Server).reply", "{leak}");

    let crowd_rows: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "goroutine-count" && r["pid"] == crowd.pid())
        .collect();
    assert!(crowd_rows.len() >= 20, "{records:?}");
    assert!(
        crowd_rows
            .iter()
            .all(|r| r["goroutines"].as_u64().unwrap() >= 50_000)
    );
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "leak" && r["pid"] == crowd.pid()),
        "the steady crowd was reported as a leak"
    );
}

/// The daemon with `[leaks] window = "20s"`: a server leaking goroutines is
/// stored as a leak (acknowledged on stderr), `list --type leak` and `show
/// --type leak` show it, and the metrics count it and the goroutines.
#[test]
fn the_daemon_stores_a_leak_that_list_show_and_metrics_show() {
    use crashtrace_tests::daemon::{
        Daemon, ScratchDir, config_in, free_port, http_get, query_json, query_ok,
    };
    use std::time::{Duration, Instant};
    require_bpf!();
    let toolchain = go_programs::toolchain("1.27.3");
    let exe = go_programs::build_with(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "goleak",
        GoBuild::Stripped,
        &toolchain,
    );
    let dir = ScratchDir::new("daemon-leaks");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = config_in(dir.path(), "", "[leaks]\nwindow = \"20s\"\n");
    let daemon = Daemon::start(dir.path(), &config, &["--metrics-listen", &listen]);
    let leaker = Holder::run(&exe, "leak", 200);
    let ack = "stored leak id=";
    let mine = format!(" pid={} ", leaker.pid());
    let deadline = Instant::now() + Duration::from_secs(90);
    while !daemon
        .log()
        .lines()
        .any(|l| l.contains(ack) && l.contains(&mine))
    {
        assert!(
            Instant::now() < deadline,
            "no leak stored within 90 s:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let store = daemon.store.clone();
    let rows = query_json(&store, &["list", "--type", "leak", "--json"]);
    let row = rows
        .iter()
        .find(|r| r["pid"] == leaker.pid())
        .unwrap_or_else(|| panic!("no leak row for the leaker: {rows:?}"));
    assert!(row["live"].as_u64().unwrap() >= 1000, "{row}");
    assert!(
        row["exe"].as_str().unwrap().ends_with("goleak-stripped"),
        "{row}"
    );
    assert!(
        row["summary"]
            .as_str()
            .unwrap()
            .contains("created by main.(*Server).handle"),
        "{row}"
    );
    let id = row["id"].to_string();
    let text = query_ok(&store, &["show", "--type", "leak", &id]);
    assert!(text.contains("created by main.(*Server).handle"), "{text}");
    assert!(
        text.contains("blocked in chan send at main.(*Server).reply"),
        "{text}"
    );
    let json = query_ok(&store, &["show", "--type", "leak", &id, "--json"]);
    let record: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(record["type"], "leak");
    assert_eq!(record["pid"], leaker.pid());
    let table = query_ok(&store, &["list", "--type", "leak"]);
    assert!(table.contains(&leaker.pid().to_string()), "{table}");

    let metrics = http_get(port, "/metrics").expect("metrics");
    let leaks = metrics
        .lines()
        .find(|l| l.starts_with("crashtrace_leaks_total{") && l.contains("goleak-stripped"))
        .unwrap_or_else(|| panic!("no leak counter:\n{metrics}"));
    assert!(leaks.ends_with(" 1"), "{leaks}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("crashtrace_go_goroutines{") && l.contains("goleak-stripped")),
        "{metrics}"
    );
    drop(leaker);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
