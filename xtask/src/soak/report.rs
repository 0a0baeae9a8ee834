//! The soak's verdict: every crash it caused is matched to an
//! acknowledgement, a suppressed count or a counted loss (or set apart as
//! missed while the daemon was down), the daemon's memory and descriptors
//! over time with a trend check, and crash-to-stored latencies. Each figure
//! is an exact count or a sample, never a timing assertion.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use super::{
    daemon::{Ack, Sample},
    workload::{Crash, Kind},
};

/// For each crash, the index of its acknowledgement: one with the same pid
/// and executable, logged after the crash's process was spawned and before
/// the next crash with that pid and executable was (pids are reused; the
/// default `pid_max` is 32768), each acknowledgement used once.
pub fn match_acks(crashes: &[Crash], acks: &[Ack]) -> Vec<Option<usize>> {
    let mut acks_of: HashMap<(u32, &str), Vec<usize>> = HashMap::new();
    for (i, ack) in acks.iter().enumerate() {
        acks_of
            .entry((ack.pid, ack.exe.as_str()))
            .or_default()
            .push(i);
    }
    let mut crashes_of: HashMap<(u32, &str), Vec<usize>> = HashMap::new();
    for (i, c) in crashes.iter().enumerate() {
        crashes_of
            .entry((c.pid, c.exe.as_str()))
            .or_default()
            .push(i);
    }
    let mut matches = vec![None; crashes.len()];
    for (key, mut ours) in crashes_of {
        let Some(theirs) = acks_of.get(&key) else {
            continue;
        };
        ours.sort_by_key(|&i| crashes[i].spawned_us);
        let mut next = 0;
        for (j, &c) in ours.iter().enumerate() {
            let from = crashes[c].spawned_us;
            let until = ours.get(j + 1).map_or(i64::MAX, |&n| crashes[n].spawned_us);
            while next < theirs.len() && acks[theirs[next]].wall_us < from {
                next += 1;
            }
            if next < theirs.len() && acks[theirs[next]].wall_us < until {
                matches[c] = Some(theirs[next]);
                next += 1;
            }
        }
    }
    matches
}

/// Loss causes after which a crash may have no report at all; the others
/// (`vma_lookup_failed`, `ringbuf_full_evidence`, `ringbuf_full_last_words`,
/// `ringbuf_full_exec`, `activity_slot_evicted`, `traced_map_full`) make a
/// report poorer, not missing.
const LOSING: &[&str] = &[
    "ringbuf_full_signal",
    "ringbuf_full_exit",
    "ringbuf_full_state",
    "ringbuf_full_oom",
    "doomed_map_full",
    "malformed_record",
    "store_full",
    "store_write_failed",
];

/// When the daemon was down: from the SIGKILL to the restarted daemon's
/// `READY=1`.
pub struct Window {
    pub kill: Instant,
    pub ready: Instant,
}

/// Where each crash the soak caused ended up.
#[derive(Default)]
pub struct Accounting {
    pub caused: BTreeMap<Kind, u64>,
    pub stored: BTreeMap<Kind, u64>,
    /// Died between the SIGKILL and the restart's `READY=1`, not stored.
    pub down: u64,
    /// Died before the SIGKILL, not acknowledged by then or later.
    pub in_flight: u64,
    /// Held kinds that fell in the window (should be none).
    pub down_held: u64,
    pub expected: u64,
    pub stored_total: u64,
    pub suppressed: u64,
    pub lost: BTreeMap<String, u64>,
    /// Crashes neither stored nor in the kill window: the suppressed and
    /// the lost ones (which of them is which, the store does not say).
    pub unstored: Vec<Crash>,
    /// Acknowledgements of processes the soak did not make crash.
    pub foreign_acks: u64,
    /// Crash-to-acknowledgement times of the stored crashes: from the
    /// report's time (the kernel's, of the fatal signal or runtime call) to
    /// the moment the soak read the acknowledgement.
    pub latencies: Vec<Duration>,
}

impl Accounting {
    pub fn compute(
        crashes: &[Crash],
        acks: &[Ack],
        window: Option<&Window>,
        suppressed: u64,
        lost: BTreeMap<String, u64>,
        times: &HashMap<i64, i64>,
    ) -> Self {
        let matches = match_acks(crashes, acks);
        let mut a = Accounting {
            suppressed,
            lost,
            ..Default::default()
        };
        let mut matched = 0u64;
        for (c, m) in crashes.iter().zip(&matches) {
            *a.caused.entry(c.kind).or_default() += 1;
            if let Some(i) = *m {
                let ack = &acks[i];
                matched += 1;
                *a.stored.entry(c.kind).or_default() += 1;
                if let Some(&t) = times.get(&ack.id) {
                    let us = (ack.wall_us - t).max(0) as u64;
                    a.latencies.push(Duration::from_micros(us));
                }
                continue;
            }
            if let Some(w) = window {
                if c.spawned <= w.ready && c.died >= w.kill {
                    a.down += 1;
                    a.down_held += u64::from(c.kind.held());
                    continue;
                } else if c.died < w.kill && !c.kind.held() {
                    a.in_flight += 1;
                    continue;
                }
            }
            a.unstored.push(c.clone());
        }
        a.foreign_acks = acks.len() as u64 - matched.min(acks.len() as u64);
        a.stored_total = matched;
        a.expected = crashes.len() as u64 - a.down - a.in_flight;
        a.latencies.sort();
        a
    }

    /// Losses of causes that can cost a whole crash record.
    pub fn lost_total(&self) -> u64 {
        self.lost
            .iter()
            .filter(|(cause, _)| LOSING.contains(&cause.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// stored + suppressed + counted losses = expected.
    pub fn balances(&self) -> bool {
        self.stored_total + self.suppressed + self.lost_total() == self.expected
    }

    pub fn print(&self) {
        println!("reports:");
        let caused: u64 = self.caused.values().sum();
        for kind in Kind::ALL {
            println!(
                "  {:<11} caused {:>6}  stored {:>6}",
                kind.name(),
                self.caused.get(&kind).copied().unwrap_or(0),
                self.stored.get(&kind).copied().unwrap_or(0)
            );
        }
        println!("  caused      {caused:>6}");
        println!(
            "  while the daemon was down: {} (died between the SIGKILL and the restart's READY=1: {}; in flight at the SIGKILL, died before it and never acknowledged: {})",
            self.down + self.in_flight,
            self.down,
            self.in_flight
        );
        println!("  expected    {:>6}  (caused, minus those)", self.expected);
        println!("  stored      {:>6}", self.stored_total);
        println!("  suppressed  {:>6}  (rate limit)", self.suppressed);
        let causes: Vec<String> = self
            .lost
            .iter()
            .filter(|(c, n)| **n > 0 && LOSING.contains(&c.as_str()))
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let degraded: Vec<String> = self
            .lost
            .iter()
            .filter(|(c, n)| **n > 0 && !LOSING.contains(&c.as_str()))
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!(
            "  lost        {:>6}  ({})",
            self.lost_total(),
            if causes.is_empty() {
                "none".to_string()
            } else {
                causes.join(", ")
            }
        );
        if !degraded.is_empty() {
            println!(
                "  also counted, not lost crashes (a report with less in it): {}",
                degraded.join(", ")
            );
        }
        println!(
            "  stored + suppressed + lost = {} + {} + {} = {} {} expected {}",
            self.stored_total,
            self.suppressed,
            self.lost_total(),
            self.stored_total + self.suppressed + self.lost_total(),
            if self.balances() { "=" } else { "!=" },
            self.expected
        );
        if self.foreign_acks > 0 {
            println!(
                "  acknowledgements of processes the soak did not crash: {}",
                self.foreign_acks
            );
        }
        if self.down_held > 0 {
            println!(
                "  held (rate-limited) crashes inside the kill window: {}",
                self.down_held
            );
        }
    }

    /// The `q` quantile of the latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.latencies.len();
        (n > 0).then(|| self.latencies[((n as f64 * q).ceil() as usize).clamp(1, n) - 1])
    }
}

/// The trend check of one daemon run's samples after warm-up.
pub struct Trend {
    pub run: u32,
    pub samples: usize,
    pub first_rss_kib: u64,
    pub last_rss_kib: u64,
    pub first_fds: u64,
    pub last_fds: u64,
}

/// RSS may grow by this much from the first to the last third after
/// warm-up, or by [`RSS_GROWTH_FRACTION`] of the first third's maximum if
/// that is more.
pub const RSS_GROWTH_KIB: u64 = 8 << 10;
pub const RSS_GROWTH_FRACTION: f64 = 0.20;
/// Open descriptors other than probe links may grow by this many. Probe
/// links grow with the Go and Rust executables started on the host, up to
/// the daemon's bound of 512 executables, and are shown, not checked.
pub const FD_GROWTH: u64 = 8;
/// The part of each daemon run that is warm-up, not trend.
pub const WARM_UP_FRACTION: f64 = 0.25;

impl Trend {
    /// The maximum of the first and last thirds of `run`'s samples after
    /// its warm-up; `None` with fewer than 6 samples.
    pub fn of(samples: &[Sample], run: u32) -> Option<Self> {
        let run_samples: Vec<&Sample> = samples.iter().filter(|s| s.run == run).collect();
        let (start, end) = (run_samples.first()?.t, run_samples.last()?.t);
        let warm = start + (end - start) * WARM_UP_FRACTION;
        let after: Vec<&Sample> = run_samples.into_iter().filter(|s| s.t >= warm).collect();
        if after.len() < 6 {
            return None;
        }
        let third = after.len() / 3;
        let (first, last) = (&after[..third], &after[after.len() - third..]);
        let max =
            |xs: &[&Sample], f: fn(&Sample) -> u64| xs.iter().map(|s| f(s)).max().unwrap_or(0);
        Some(Self {
            run,
            samples: after.len(),
            first_rss_kib: max(first, |s| s.rss_kib),
            last_rss_kib: max(last, |s| s.rss_kib),
            first_fds: max(first, |s| s.fds - s.probe_fds),
            last_fds: max(last, |s| s.fds - s.probe_fds),
        })
    }

    pub fn rss_bound_kib(&self) -> u64 {
        self.first_rss_kib
            + RSS_GROWTH_KIB.max((self.first_rss_kib as f64 * RSS_GROWTH_FRACTION) as u64)
    }

    pub fn ok(&self) -> bool {
        self.last_rss_kib <= self.rss_bound_kib() && self.last_fds <= self.first_fds + FD_GROWTH
    }

    pub fn print(&self) {
        println!(
            "  run {}: {} samples after warm-up; rss max first third {:.1} MiB, last third {:.1} MiB (bound {:.1}); fds other than probe links max {} then {} (bound {}): {}",
            self.run,
            self.samples,
            mib(self.first_rss_kib),
            mib(self.last_rss_kib),
            mib(self.rss_bound_kib()),
            self.first_fds,
            self.last_fds,
            self.first_fds + FD_GROWTH,
            if self.ok() { "ok" } else { "GROWTH" }
        );
    }
}

/// Per-minute minimum and maximum of RSS and descriptors, per daemon run.
pub fn print_series(samples: &[Sample]) {
    /// rss min, max; fds min, max; probe links max.
    type Row = (u64, u64, u64, u64, u64);
    let mut rows: BTreeMap<(u64, u32), Row> = BTreeMap::new();
    for s in samples {
        let e = rows
            .entry(((s.t / 60.0) as u64, s.run))
            .or_insert((u64::MAX, 0, u64::MAX, 0, 0));
        e.0 = e.0.min(s.rss_kib);
        e.1 = e.1.max(s.rss_kib);
        e.2 = e.2.min(s.fds);
        e.3 = e.3.max(s.fds);
        e.4 = e.4.max(s.probe_fds);
    }
    println!(
        "daemon rss and fds, per minute of the soak ({} samples):",
        samples.len()
    );
    println!("  minute  run  rss min-max (MiB)  fds min-max  of which probe links");
    for ((minute, run), (rmin, rmax, fmin, fmax, probes)) in rows {
        println!(
            "  {minute:>6}  {run:>3}  {:>7.1} - {:<7.1}  {fmin:>5} - {fmax:<5}  {probes:>5}",
            mib(rmin),
            mib(rmax)
        );
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
