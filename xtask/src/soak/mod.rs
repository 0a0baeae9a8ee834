//! `cargo xtask soak [--minutes N]`: the daemon, with its default config
//! (its store on a small tmpfs, a filter on the soak's own programs),
//! against a mixed, looping workload, with SIGHUP reloads, a SIGKILL and
//! restart midway and a full store file system near the end. It proves
//! what unit tests cannot: that over a long run the daemon's memory and
//! descriptors stay bounded, that every crash is stored, suppressed or
//! counted as lost (an exact identity, per crash pid), and that the store
//! survives the kill and the full disk intact.

mod daemon;
mod env;
mod report;
mod workload;

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs,
    path::Path,
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use daemon::{Ack, Daemon, Log, Sampler, StoreCounts};
pub use env::interrupted;
use report::{Accounting, Trend, Window, mib, ms};
use workload::{HELD_THREADS, Pace, Workload};

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// How long the workload runs, in minutes.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Size of the tmpfs that holds the store, in MiB.
    #[arg(long, default_value_t = 128)]
    pub store_mib: u64,
}

impl SoakArgs {
    /// The short form `cargo xtask test` runs.
    pub fn short() -> Self {
        Self {
            minutes: 2.0,
            store_mib: 128,
        }
    }
}

/// How often the daemon's memory and descriptors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How often the config is reloaded (SIGHUP).
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// How long the daemon stays down after the SIGKILL.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// Bounds on waits for the daemon to catch up (not assertions: the
/// identity is checked either way).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the soak; `Ok(false)` when a check failed.
pub fn run(args: &SoakArgs) -> Result<bool> {
    env::catch_interrupts();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    if total < Duration::from_secs(60) {
        bail!("the soak needs at least one minute (--minutes 1)");
    }
    let dir = crate::target_dir().join("soak");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (programs, _cgroup) = env::prepare(&dir)?;
    let tmpfs = env::Tmpfs::mount(&dir.join("store"), args.store_mib)?;
    let store = daemon::store_path(tmpfs.path());
    let config = dir.join("config.toml");
    daemon::write_config(&config, &store, &dir.join("programs"))?;
    let log = Log::create(&dir.join("daemon.log"))?;
    let bin = crate::crashtrace_bin();

    println!(
        "soak: {:.0} minutes; store on a {} MiB tmpfs; load average at start: {}",
        args.minutes,
        args.store_mib,
        loadavg()
    );
    println!(
        "soak: crash loop keyed by exe ({}); daemon log: {}",
        if env::systemd_is_init() {
            "systemd is PID 1, but the loop runs outside a unit"
        } else {
            "systemd is not PID 1 here, so no systemd-run unit"
        },
        dir.join("daemon.log").display()
    );
    let start = Instant::now();
    let sampler = Sampler::start(start, SAMPLE_EVERY);
    let socket = dir.join("notify.sock");
    let mut d = Daemon::start(&bin, &config, &socket, 1, &log)?;
    sampler.watch(Some(&d));
    println!(
        "[{:>6.1}s] daemon ready (run 1, pid {})",
        secs(start),
        d.pid
    );
    workload::warm_up(&programs)?;
    let programs = Arc::new(programs);
    let mut work = Workload::start(programs.clone(), &Pace::DEFAULT);
    let shared = work.shared.clone();
    let mut next_reload = start + RELOAD_EVERY;

    // Runs the workload until `until`, reloading on schedule; stops early
    // when `done` says so.
    let mut run_until = |d: &mut Daemon, until: Instant, done: &dyn Fn() -> bool| -> Result<()> {
        while Instant::now() < until && !done() {
            if interrupted() {
                bail!("interrupted");
            }
            if let Some(e) = shared
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                bail!("workload: {e}");
            }
            if Instant::now() >= next_reload {
                d.reload().context("reload")?;
                shared.churn.reloads.fetch_add(1, Ordering::SeqCst);
                next_reload += RELOAD_EVERY;
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };

    // First half, then the SIGKILL.
    run_until(&mut d, start + total / 2, &|| false)?;
    let held = |crashes: &[workload::Crash]| crashes.iter().filter(|c| c.kind.held()).count();
    shared.hold_all(HELD_THREADS);
    let settled = {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let crashes = shared.crashes();
            let acks = acks(&log);
            let stored = crashes
                .iter()
                .zip(report::match_acks(&crashes, &acks))
                .filter(|(c, m)| c.kind.held() && m.is_some())
                .count();
            let suppressed = StoreCounts::read(&store)?.suppressed_total() as usize;
            if stored + suppressed == held(&crashes) {
                break true;
            }
            if Instant::now() > deadline || interrupted() {
                println!(
                    "  held kinds: {} caused, {stored} acknowledged, {suppressed} suppressed in the store",
                    held(&crashes)
                );
                break false;
            }
            thread::sleep(Duration::from_millis(200));
        }
    };
    println!(
        "[{:>6.1}s] held the rate-limited kinds: {}",
        secs(start),
        if settled {
            "each of their crashes is stored or counted as suppressed"
        } else {
            "the daemon did not account for all of their crashes in time"
        }
    );
    let kill = Instant::now();
    sampler.watch(None);
    d.kill()?;
    let after_kill = daemon::integrity_check(&store)?;
    let run1 = StoreCounts::read(&store)?;
    println!(
        "[{:>6.1}s] SIGKILL; integrity_check after the kill: {after_kill}; {} rows",
        secs(start),
        run1.rows
    );
    thread::sleep(DOWN_FOR);
    let mut d = Daemon::start(&bin, &config, &socket, 2, &log)?;
    let ready = Instant::now();
    sampler.watch(Some(&d));
    workload::warm_up(&programs)?;
    shared.hold.store(false, Ordering::SeqCst);
    println!(
        "[{:>6.1}s] daemon ready again (run 2, pid {}), down {:.1}s",
        secs(start),
        d.pid,
        (ready - kill).as_secs_f64()
    );

    // Third quarter, then a full store file system.
    run_until(&mut d, start + total * 3 / 4, &|| false)?;
    let full_for = (total / 10).max(Duration::from_secs(20));
    let not_stored_before = log.count("not stored");
    let filler = tmpfs.path().join("filler");
    let filled = tmpfs.fill(&filler)?;
    let full_start = Instant::now();
    println!(
        "[{:>6.1}s] filled the store's tmpfs ({:.1} MiB of filler)",
        secs(start),
        filled as f64 / f64::from(1 << 20)
    );
    run_until(&mut d, full_start + full_for, &|| false)?;
    // Stay full until the daemon met the full disk at least once: SQLite's
    // write-ahead log may absorb some writes first.
    run_until(&mut d, full_start + full_for * 3, &|| {
        log.count("not stored") > not_stored_before
    })?;
    let refused = log.count("not stored") - not_stored_before;
    fs::remove_file(&filler).context("cannot remove the filler")?;
    let after_full = daemon::integrity_check(&store)?;
    println!(
        "[{:>6.1}s] freed the tmpfs after {:.0}s full ({refused} failed store writes logged); integrity_check: {after_full}",
        secs(start),
        full_start.elapsed().as_secs_f64()
    );

    // The rest, then stop and account.
    run_until(&mut d, start + total, &|| false)?;
    work.stop();
    let workload_secs = secs(start);
    let window = Window { kill, ready };
    let lost_of = |scrape: &daemon::Scrape| {
        let mut lost = run1.lost();
        for (cause, n) in &scrape.lost {
            *lost.entry(cause.clone()).or_default() += n;
        }
        lost
    };
    let crashes = shared.crashes();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let scrape = loop {
        let scrape = d.scrape()?;
        let a = Accounting::compute(
            &crashes,
            &acks(&log),
            Some(&window),
            StoreCounts::read(&store)?.suppressed_total(),
            lost_of(&scrape),
            &HashMap::new(),
        );
        if a.balances() || Instant::now() > deadline || interrupted() {
            break scrape;
        }
        thread::sleep(Duration::from_millis(500));
    };
    sampler.watch(None);
    let status = d.stop()?;
    let samples = sampler.finish();
    let final_integrity = daemon::integrity_check(&store)?;
    let last = StoreCounts::read(&store)?;
    let acks = acks(&log);
    let accounting = Accounting::compute(
        &crashes,
        &acks,
        Some(&window),
        last.suppressed_total(),
        lost_of(&scrape),
        &last.times,
    );
    write_unstored(&dir.join("unstored.txt"), &accounting.unstored, start)?;

    println!();
    println!(
        "soak: workload ran {workload_secs:.0}s; load average at end: {}",
        loadavg()
    );
    let churn = &shared.churn;
    println!(
        "churn: {} short-lived processes, {} handled-SIGSEGV storms (200 signals each), {} SIGHUP reloads, {} processes that did not end as expected",
        churn.short_lived.load(Ordering::SeqCst),
        churn.storms.load(Ordering::SeqCst),
        churn.reloads.load(Ordering::SeqCst),
        churn.unexpected.load(Ordering::SeqCst)
    );
    accounting.print();
    let run2_suppressed: u64 = scrape.suppressed.values().sum();
    let suppressed_kept = last.suppressed_total() == run1.suppressed_total() + run2_suppressed;
    println!(
        "  suppressed in the store {} = run 1's {} + run 2's daemon counters {}: {}",
        last.suppressed_total(),
        run1.suppressed_total(),
        run2_suppressed,
        if suppressed_kept { "ok" } else { "MISMATCH" }
    );
    for (key, n) in &last.suppressed {
        let kind = crashes
            .iter()
            .find(|c| &c.exe == key)
            .map(|c| c.kind.name());
        println!("  suppressed {n:>6} of {} ({key})", kind.unwrap_or("?"));
    }
    let ack_count = acks.len() as u64;
    println!(
        "  store rows {} for {ack_count} acknowledgements: {}",
        last.rows,
        if last.rows == ack_count {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "integrity_check: after the SIGKILL {after_kill}; after the full disk {after_full}; at the end {final_integrity}"
    );
    println!("full store: {refused} failed store writes logged while full; daemon exit: {status}");
    match (accounting.quantile(0.5), accounting.quantile(0.99)) {
        (Some(p50), Some(p99)) => println!(
            "crash-to-stored latency: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} stored crashes)",
            ms(p50),
            ms(p99),
            ms(*accounting.latencies.last().unwrap_or(&p99)),
            accounting.latencies.len()
        ),
        _ => println!("crash-to-stored latency: no stored crashes"),
    }
    report::print_series(&samples);
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    println!(
        "  max rss {:.1} MiB, max fds {max_fds}; trend after warm-up (the first {:.0}% of each run):",
        mib(max_rss),
        report::WARM_UP_FRACTION * 100.0
    );
    println!(
        "  Go executables probed by the daemon (host-wide): {}",
        log.count("probing the Go runtime")
    );
    let trends: Vec<Trend> = [1, 2]
        .iter()
        .filter_map(|&r| Trend::of(&samples, r))
        .collect();
    for t in &trends {
        t.print();
    }

    let mut failures = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            failures.push(what.to_string());
        }
    };
    check(
        accounting.balances(),
        "stored + suppressed + lost != expected",
    );
    check(
        accounting.down_held == 0,
        "rate-limited crashes in the kill window",
    );
    check(
        suppressed_kept,
        "suppressed counts were not all written to the store",
    );
    check(
        last.rows == ack_count,
        "store rows differ from acknowledgements",
    );
    for (when, answer) in [
        ("after the SIGKILL", &after_kill),
        ("after the full disk", &after_full),
        ("at the end", &final_integrity),
    ] {
        check(answer == "ok", &format!("integrity_check {when}: {answer}"));
    }
    check(
        status.success(),
        "the daemon did not exit cleanly on SIGTERM",
    );
    check(trends.len() == 2, "too few samples for a trend");
    check(
        trends.iter().all(Trend::ok),
        "rss or fds grew after warm-up",
    );
    check(
        settled,
        "the rate-limited crashes were not accounted for before the kill",
    );
    println!();
    if failures.is_empty() {
        println!("soak: passed");
    } else {
        println!("soak: FAILED: {}", failures.join("; "));
    }
    drop(tmpfs);
    Ok(failures.is_empty())
}

/// Lists the crashes neither stored nor missed in the kill window (the
/// suppressed and the lost), for a look at an identity that does not hold.
fn write_unstored(path: &Path, crashes: &[workload::Crash], start: Instant) -> Result<()> {
    let mut text = String::from("# kind pid died_s exe\n");
    for c in crashes {
        let died = c.died.saturating_duration_since(start).as_secs_f64();
        let _ = writeln!(text, "{:?} {} {died:.1} {}", c.kind, c.pid, c.exe);
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Every acknowledgement logged so far, by every daemon run.
fn acks(log: &Log) -> Vec<Ack> {
    log.with(|lines| lines.iter().filter_map(Ack::parse).collect())
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
