//! The daemon's sink on the event engine (`crate::engine`): what happens
//! to a crash between the engine and the store. Filter → rate-limit →
//! (the engine builds the report) → store (one transaction per batch) →
//! acknowledge → sinks and metrics.
//!
//! Like `watch`, but a report goes to the store first and counts as
//! *acknowledged* only once its transaction committed: the daemon then
//! logs `crashtrace: stored crash id=N pid=P ...` on stderr, and only then
//! sends it to the sinks. Anything that keeps a crash out of the store
//! (filters, rate limits, a full disk) is counted, never silent.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    convert::Infallible,
    io::Write as _,
    time::Instant,
};

use super::{
    HOUSEKEEPING,
    config::{Config, RateKey},
    enrich,
    filter::Subject,
    metrics::SharedMetrics,
    ratelimit::RateLimiter,
    sink::JsonLinesSink,
};
use crate::{
    engine::{Finished, LossCount, Sink},
    store::{NewCrash, RetentionLimits, Store, StoreError, leaks::NewLeak, timefmt},
    support::context::{self, Context},
    tracker::Death,
};

/// Group for suppressed crashes of a key that has no recorded crash yet.
const UNATTRIBUTED: &str = "unattributed";

/// The daemon's sink: stores, acknowledges, then fans out.
pub struct StoreSink {
    pub(super) store: Store,
    sinks: Vec<JsonLinesSink>,
    limiter: RateLimiter,
    pub(super) config: Config,
    /// The signals the probes were loaded with (a reload cannot widen it).
    loaded_signals: BTreeSet<i32>,
    signals: BTreeSet<i32>,
    metrics: SharedMetrics,
    boot_id: Option<String>,
    /// Rate-limit key → fingerprint of its last recorded crash.
    last_group: HashMap<String, String>,
    /// (fingerprint, key) → (count, first, last), written once a second.
    suppressed: HashMap<(String, String), (u64, i64, i64)>,
    /// Counter deltas (`lost.*`) the store refused (a full disk), kept
    /// and retried every tick so that its totals stay complete.
    unsaved_counters: BTreeMap<String, u64>,
    /// The last write of suppressed counts or counters failed (logged once
    /// until one succeeds again).
    housekeeping_failing: bool,
    last_housekeeping: Instant,
    /// Crashes acknowledged (stored) since start.
    pub stored: u64,
}

/// An admitted crash on its way to the store.
pub struct Admission {
    context: Context,
    /// The process was reaped before its own cgroup could be read.
    context_missing: bool,
    key: String,
    /// When it was admitted, for a report whose time cannot be read.
    admitted_us: i64,
}

impl StoreSink {
    pub fn new(
        store: Store,
        config: Config,
        sinks: Vec<JsonLinesSink>,
        metrics: SharedMetrics,
    ) -> anyhow::Result<Self> {
        let signals = config.signal_set().map_err(anyhow::Error::msg)?;
        let r = &config.rate_limit;
        Ok(Self {
            store,
            sinks,
            limiter: RateLimiter::new(r.burst, r.per_minute),
            loaded_signals: signals.clone(),
            signals,
            config,
            metrics,
            boot_id: enrich::boot_id(),
            last_group: HashMap::new(),
            suppressed: HashMap::new(),
            unsaved_counters: BTreeMap::new(),
            housekeeping_failing: false,
            last_housekeeping: Instant::now(),
            stored: 0,
        })
    }

    /// Applies a new configuration; capture settings need a restart.
    pub fn apply(&mut self, config: Config, sinks: Vec<JsonLinesSink>) {
        let signals = config.signal_set().unwrap_or_else(|_| self.signals.clone());
        let wider: Vec<i32> = signals.difference(&self.loaded_signals).copied().collect();
        if !wider.is_empty() || config.capture != self.config.capture {
            eprintln!(
                "crashtrace: warning: [capture] changes take effect at restart; a reload only narrows the signal set"
            );
        }
        if config.store != self.config.store || config.metrics != self.config.metrics {
            eprintln!("crashtrace: warning: [store] and [metrics] changes take effect at restart");
        }
        self.signals = signals
            .intersection(&self.loaded_signals)
            .copied()
            .collect();
        let r = &config.rate_limit;
        self.limiter.set_limits(r.burst, r.per_minute);
        self.sinks = sinks;
        self.config = config;
    }

    pub fn retention(&self) -> RetentionLimits {
        let r = &self.config.retention;
        RetentionLimits {
            max_age_days: r.max_age_days,
            max_count: r.max_count,
            max_size_bytes: r.max_size_mib.saturating_mul(1 << 20),
        }
    }

    fn store_batch(&mut self, batch: Vec<NewCrash>, keys: Vec<String>) {
        match self.store.insert(&batch) {
            Ok(ids) => {
                for ((crash, key), id) in batch.iter().zip(keys).zip(ids) {
                    let r = &crash.report;
                    acknowledge(&format!(
                        "crashtrace: stored crash id={id} pid={} class={} fingerprint={} exe={}\n",
                        r.pid,
                        r.class,
                        r.fingerprint,
                        r.exe.as_deref().unwrap_or("?")
                    ));
                    self.stored += 1;
                    self.metrics().crash(
                        r.class,
                        r.exe.as_deref().unwrap_or(""),
                        crash.context.unit.as_deref().unwrap_or(""),
                    );
                    self.attribute(&key, &r.fingerprint);
                    self.last_group.insert(key, r.fingerprint.clone());
                    let json = crash.json();
                    for sink in &mut self.sinks {
                        if let Err(e) = sink.write_line(&json) {
                            eprintln!(
                                "crashtrace: error: cannot write to sink {}: {e}",
                                sink.name().display()
                            );
                        }
                    }
                }
                self.enforce_retention();
            }
            Err(e) => {
                let what = if matches!(e, StoreError::Full(_)) {
                    "store_full"
                } else {
                    "store_write_failed"
                };
                eprintln!(
                    "crashtrace: error: {} crash(es) not stored: {e}",
                    batch.len()
                );
                self.metrics().add_lost(what, batch.len() as u64);
                self.add_counters(vec![(format!("lost.{what}"), batch.len() as u64)]);
            }
        }
    }

    pub fn enforce_retention(&mut self) {
        let limits = self.retention();
        if let Err(e) = self.store.enforce_retention(&limits) {
            eprintln!("crashtrace: error: cannot apply retention: {e}");
        }
        let size = self.store.size_bytes();
        self.metrics().set_store_size(size);
    }

    /// Moves the key's crashes suppressed before its first fingerprint was
    /// known into that fingerprint's group. Admission, build and delivery
    /// of one batch are synchronous, so a burst's first crashes and the
    /// crashes they cause to be suppressed meet here before any flush.
    fn attribute(&mut self, key: &str, fingerprint: &str) {
        let unattributed = (UNATTRIBUTED.to_string(), key.to_string());
        if let Some((n, first, last)) = self.suppressed.remove(&unattributed) {
            let e = self
                .suppressed
                .entry((fingerprint.to_string(), key.to_string()))
                .or_insert((0, first, last));
            e.0 += n;
            e.1 = e.1.min(first);
            e.2 = e.2.max(last);
        }
    }

    /// Writes the suppressed counts gathered since the last call, and the
    /// counters an earlier write could not. What the store refuses (a full
    /// disk) is kept for the next call, never dropped.
    pub fn flush_suppressed(&mut self) {
        if !self.unsaved_counters.is_empty() {
            self.add_counters(Vec::new());
        }
        if self.suppressed.is_empty() {
            return;
        }
        let rows: Vec<(String, String, u64, i64, i64)> = self
            .suppressed
            .iter()
            .map(|((fp, key), &(n, first, last))| (fp.clone(), key.clone(), n, first, last))
            .collect();
        match self.store.add_suppressed(&rows) {
            Ok(()) => {
                self.suppressed.clear();
                self.housekeeping_failing = false;
            }
            Err(e) => self.housekeeping_failed(&format!(
                "cannot record suppressed crashes (kept, retried): {e}"
            )),
        }
    }

    /// Adds `deltas` and any earlier unsaved ones to the store's counters;
    /// keeps them for a retry when the store refuses.
    fn add_counters(&mut self, deltas: Vec<(String, u64)>) {
        for (name, n) in deltas {
            *self.unsaved_counters.entry(name).or_default() += n;
        }
        let all: Vec<(String, u64)> = self
            .unsaved_counters
            .iter()
            .map(|(k, &v)| (k.clone(), v))
            .collect();
        match self.store.add_counters(&all) {
            Ok(()) => {
                self.unsaved_counters.clear();
                self.housekeeping_failing = false;
            }
            Err(e) => self.housekeeping_failed(&format!(
                "cannot record lost-event counts (kept, retried): {e}"
            )),
        }
    }

    fn housekeeping_failed(&mut self, message: &str) {
        if !self.housekeeping_failing {
            eprintln!("crashtrace: error: {message}");
        }
        self.housekeeping_failing = true;
    }

    /// Records daemon state entries (start, heartbeat, stop) in the store.
    pub fn record_state(&mut self, entries: &[(&str, String)]) {
        if let Err(e) = self.store.set_state(entries) {
            eprintln!("crashtrace: error: cannot record the daemon's state: {e}");
        }
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, super::metrics::Metrics> {
        self.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn metrics_guard(&self) -> std::sync::MutexGuard<'_, super::metrics::Metrics> {
        self.metrics()
    }

    /// Stores a goroutine leak, acknowledges it on stderr and hands its
    /// record to the sinks.
    pub(super) fn store_leak(&mut self, leak: &NewLeak) {
        match self.store.insert_leak(leak) {
            Ok(id) => {
                acknowledge(&format!(
                    "crashtrace: stored leak id={id} pid={} live={} exe={}\n",
                    leak.pid, leak.live, leak.exe
                ));
                self.metrics()
                    .leak(&leak.exe, leak.unit.as_deref().unwrap_or(""));
                for sink in &mut self.sinks {
                    if let Err(e) = sink.write_line(&leak.json) {
                        eprintln!(
                            "crashtrace: error: cannot write to sink {}: {e}",
                            sink.name().display()
                        );
                    }
                }
            }
            Err(e) => eprintln!(
                "crashtrace: error: cannot store the goroutine leak of pid {}: {e}",
                leak.pid
            ),
        }
    }
}

impl Sink for StoreSink {
    type Note = Context;
    type Admitted = Admission;
    type Error = Infallible;

    /// Reads the cgroup while the process is (most likely) still there.
    fn first_record(&mut self, pid: u32, ppid: u32) -> Option<Context> {
        let (cgroup, source) = enrich::cgroup_of_death(pid, ppid);
        let mut ctx = context::describe(self.boot_id.clone(), cgroup);
        ctx.cgroup_source = source;
        Some(ctx)
    }

    /// The signal set (a reload may narrow it), the filters, then the
    /// rate limit; a suppressed crash is counted under its group.
    fn admit(&mut self, death: &Death, context: Option<Context>) -> Option<Admission> {
        if let Some(cause) = death.cause()
            && !self.signals.contains(&cause.signo)
        {
            return None;
        }
        let state = death.state.as_deref();
        let exe = state
            .and_then(|s| s.exe.as_ref())
            .map(|p| p.display().to_string());
        let comm = state
            .map(|s| s.thread.comm.clone())
            .or_else(|| death.cause().map(|c| c.target.comm.clone()))
            .unwrap_or_default();
        let uid = state
            .map(|s| s.thread.uid)
            .or_else(|| death.cause().map(|c| c.target.uid))
            .unwrap_or(0);
        let context_missing =
            context.is_none() || context.as_ref().is_some_and(|c| c.cgroup.is_none());
        let context = context.unwrap_or_else(|| context::describe(self.boot_id.clone(), None));
        let subject = Subject {
            exe: exe.as_deref(),
            comm: &comm,
            unit: context.unit.as_deref(),
            uid,
        };
        if !self.config.filter.admits(&subject) {
            self.metrics().filtered();
            return None;
        }
        let key = rate_key(self.config.rate_limit.key, &context, exe.as_deref(), &comm);
        let now = timefmt::now_us();
        if !self.limiter.allow(&key, Instant::now()) {
            let group = self
                .last_group
                .get(&key)
                .cloned()
                .unwrap_or_else(|| UNATTRIBUTED.into());
            let e = self
                .suppressed
                .entry((group, key.clone()))
                .or_insert((0, now, now));
            e.0 += 1;
            e.2 = now;
            self.metrics().suppressed(&key);
            return None;
        }
        Some(Admission {
            context,
            context_missing,
            key,
            admitted_us: now,
        })
    }

    /// Stores the batch in one transaction; only then acknowledges it.
    fn deliver(&mut self, reports: Vec<Finished<Admission>>) -> Result<(), Infallible> {
        let mut batch = Vec::with_capacity(reports.len());
        let mut keys = Vec::with_capacity(reports.len());
        for Finished {
            admitted: a,
            mut report,
            build_time,
        } in reports
        {
            self.metrics()
                .observe_symbolization(build_time.as_secs_f64());
            if a.context_missing {
                report.diagnostics.push(
                    "cgroup and unit unknown: the process was reaped before its cgroup could be read"
                        .into(),
                );
            } else if a.context.cgroup_source == Some("parent") {
                report.diagnostics.push(
                    "cgroup and unit are the parent's: the process was reaped before its own cgroup could be read"
                        .into(),
                );
            }
            let time_us = timefmt::parse_rfc3339(&report.time).unwrap_or(a.admitted_us);
            batch.push(NewCrash {
                time_us,
                report,
                context: a.context,
            });
            keys.push(a.key);
        }
        self.store_batch(batch, keys);
        Ok(())
    }

    /// Counts new losses in the metrics and persists them in the store.
    fn losses(&mut self, losses: &[LossCount]) -> Result<(), Infallible> {
        let mut deltas = Vec::new();
        for l in losses.iter().filter(|l| l.new > 0) {
            deltas.push((format!("lost.{}", l.name), l.new));
            self.metrics().set_lost(l.name, l.total);
        }
        if !deltas.is_empty() {
            self.add_counters(deltas);
        }
        Ok(())
    }

    /// Suppressed counts every tick; retention and a heartbeat every
    /// [`HOUSEKEEPING`].
    fn tick(&mut self) -> Result<(), Infallible> {
        self.flush_suppressed();
        if self.last_housekeeping.elapsed() >= HOUSEKEEPING {
            self.last_housekeeping = Instant::now();
            self.enforce_retention();
            self.record_state(&[("heartbeat", timefmt::format_seconds(timefmt::now_us()))]);
        }
        Ok(())
    }
}

/// Logs an acknowledgement in one write: `eprintln!` writes a formatted
/// line piece by piece to the unbuffered stderr, so a SIGKILL between two
/// pieces would leave half an acknowledgement in the journal.
fn acknowledge(line: &str) {
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The rate-limit key of a crash: its unit for a service (auto), or the
/// executable (its command name when the executable is unknown).
fn rate_key(mode: RateKey, context: &Context, exe: Option<&str>, comm: &str) -> String {
    let exe = || {
        exe.map(str::to_string)
            .unwrap_or_else(|| format!("comm:{comm}"))
    };
    let unit = context.unit.as_deref();
    match mode {
        RateKey::Auto => match unit {
            Some(u) if u.ends_with(".service") => u.to_string(),
            _ => exe(),
        },
        RateKey::Unit => unit.map(str::to_string).unwrap_or_else(exe),
        RateKey::Exe => exe(),
    }
}
