//! Crash storms against the daemon: SIGKILL in the middle of one must not
//! lose an acknowledged crash or corrupt the store, and a crash-looping
//! program stays within its rate limit without costing another program a
//! single record.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crashtrace_tests::{
    Harness,
    daemon::{Daemon, ScratchDir, config_in, crash, query_json},
    require_bpf,
};

fn harness() -> Harness {
    Harness::new(env!("CARGO_TARGET_TMPDIR"))
}

/// Crashes `program` `n` times on `threads` threads; returns the pids.
fn storm(program: &Path, n: usize, threads: usize, stop: Arc<AtomicBool>) -> Vec<u32> {
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (program, done, stop) = (PathBuf::from(program), done.clone(), stop.clone());
            thread::spawn(move || {
                let mut pids = Vec::new();
                while done.fetch_add(1, Ordering::SeqCst) < n && !stop.load(Ordering::SeqCst) {
                    pids.push(crash(&program));
                }
                pids
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

#[test]
fn sigkill_during_a_storm_keeps_every_acknowledged_crash() {
    require_bpf!();
    let dir = ScratchDir::new("daemon-kill");
    let program = dir.copy_program(&harness().program("null_deref"), "null_deref_kill");
    let extra = format!(
        "[filter]\ninclude_exe = [\"{}/*\"]\n[rate_limit]\nburst = 100000\nper_minute = 100000\n",
        dir.path().display()
    );
    let daemon = Daemon::start(dir.path(), &config_in(dir.path(), "", &extra), &[]);
    let store = daemon.store.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let storming = {
        let (program, stop) = (program.clone(), stop.clone());
        thread::spawn(move || storm(&program, 1000, 2, stop))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.acks().len() < 100 {
        assert!(
            Instant::now() < deadline,
            "too few acknowledgements:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Mid-storm: crashes are still arriving and being written.
    let log = daemon.kill();
    stop.store(true, Ordering::SeqCst);
    let crashed = storming.join().unwrap();
    let acked: Vec<_> = log
        .lines()
        .filter(|l| l.starts_with("crashtrace: stored crash "))
        .collect();
    assert!(
        acked.len() >= 100 && crashed.len() > acked.len(),
        "{} acked of {}",
        acked.len(),
        crashed.len()
    );

    let conn = rusqlite::Connection::open(&store).expect("the store opens after SIGKILL");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut stmt = conn.prepare("SELECT id, pid FROM crashes").unwrap();
    let stored: std::collections::HashSet<(i64, u32)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let daemon_acks: Vec<(i64, u32)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("crashtrace: stored crash id=")?;
            let (id, rest) = rest.split_once(" pid=")?;
            let pid = rest.split(' ').next()?;
            Some((id.parse().ok()?, pid.parse().ok()?))
        })
        .collect();
    assert_eq!(daemon_acks.len(), acked.len());
    let missing: Vec<_> = daemon_acks.iter().filter(|a| !stored.contains(a)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    // And the queries read it.
    let exe = program.display().to_string();
    let listed = query_json(&store, &["list", "--json", "--exe", &exe]);
    assert_eq!(listed.len(), stored.len());
}

#[test]
fn rate_limit_storm_keeps_the_other_programs_crashes() {
    require_bpf!();
    const STORM: usize = 5000;
    const OTHER: usize = 10;
    let (burst, per_minute) = (10u64, 6.0f64);
    let dir = ScratchDir::new("daemon-rate");
    let h = harness();
    let looping = dir.copy_program(&h.program("null_deref"), "crash_loop");
    let other = dir.copy_program(&h.program("div_zero"), "other_prog");
    let extra = format!(
        "[filter]\ninclude_exe = [\"{}/*\"]\n[rate_limit]\nkey = \"exe\"\nburst = {burst}\nper_minute = {per_minute}\n",
        dir.path().display()
    );
    let daemon = Daemon::start(dir.path(), &config_in(dir.path(), "", &extra), &[]);
    let store = daemon.store.clone();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let storming = {
        let (looping, stop) = (looping.clone(), stop.clone());
        thread::spawn(move || storm(&looping, STORM, 2, stop))
    };
    let mut other_pids = Vec::new();
    for _ in 0..OTHER {
        thread::sleep(Duration::from_millis(300));
        other_pids.push(crash(&other));
    }
    let crashed = storming.join().unwrap();
    let storm_secs = started.elapsed().as_secs_f64();
    assert_eq!(crashed.len(), STORM);
    assert!(
        storm_secs < 60.0,
        "the storm took {storm_secs:.1}s, not under a minute"
    );

    for &pid in &other_pids {
        let ack = daemon.wait_ack(pid, Duration::from_secs(30));
        assert_eq!(ack.class, "divide-by-zero");
    }
    // Every storm crash is either stored or counted as suppressed.
    let exe = looping.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (stored, suppressed) = loop {
        let stored = query_json(&store, &["list", "--json", "--exe", &exe]).len();
        let groups = query_json(&store, &["groups", "--json"]);
        let suppressed: u64 = groups
            .iter()
            .map(|g| g["suppressed"].as_u64().unwrap())
            .sum();
        if stored as u64 + suppressed >= STORM as u64 || Instant::now() > deadline {
            break (stored as u64, suppressed);
        }
        thread::sleep(Duration::from_millis(200));
    };
    let elapsed_min = started.elapsed().as_secs_f64() / 60.0;
    let allowed = burst + (per_minute * elapsed_min).ceil() as u64;
    assert!(
        stored <= allowed,
        "{stored} crashes of the looping program stored, limit {allowed}"
    );
    assert_eq!(
        stored + suppressed,
        STORM as u64,
        "stored {stored} + suppressed {suppressed} != {STORM}; stats: {:?}",
        query_json(&store, &["stats", "--json"])
    );
    let other_rows = query_json(
        &store,
        &["list", "--json", "--exe", &other.display().to_string()],
    );
    assert_eq!(other_rows.len(), OTHER);
    // The suppressed crashes are counted in the looping program's group.
    let groups = query_json(&store, &["groups", "--json"]);
    let fp = &query_json(&store, &["list", "--json", "--exe", &exe, "-n", "1"])[0]["fingerprint"];
    let group = groups.iter().find(|g| &g["fingerprint"] == fp).unwrap();
    assert_eq!(group["suppressed"].as_u64().unwrap(), suppressed);
    eprintln!(
        "storm of {STORM} in {storm_secs:.1}s: {stored} stored, {suppressed} suppressed; other program {OTHER}/{OTHER} stored"
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}
