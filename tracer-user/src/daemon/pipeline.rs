//! The daemon's path from kernel records to stored crashes:
//! decode → join per process → filter → rate-limit → build the report →
//! store (one transaction per batch) → acknowledge → sinks and metrics.
//!
//! Like `watch`, but a report goes to the store first and counts as
//! *acknowledged* only once its transaction committed: the daemon then
//! logs `crashtrace: stored crash id=N pid=P ...` on stderr, and only then
//! sends it to the sinks. Anything that keeps a crash out of the store
//! (filters, rate limits, a full disk) is counted, never silent.

use std::{
    collections::{BTreeSet, HashMap},
    time::Instant,
};

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};
use tracer_common::loss;

use super::{
    config::{Config, RateKey},
    enrich,
    filter::Subject,
    metrics::SharedMetrics,
    ratelimit::RateLimiter,
    sink::JsonLinesSink,
};
use crate::{
    context::{self, Context},
    events::{Event, decode},
    loader::Tracer,
    pipeline::Pipeline as ReportPipeline,
    store::{NewCrash, RetentionLimits, Store, StoreError, timefmt},
    tracker::{Death, Tracker},
};

/// Contexts kept for processes whose death is not complete yet.
const MAX_CONTEXTS: usize = 8192;
/// Group for suppressed crashes of a key that has no recorded crash yet.
const UNATTRIBUTED: &str = "unattributed";

pub struct Pipeline {
    pub(super) tracer: Tracer,
    pub(super) ring: AsyncFd<RingBuf<MapData>>,
    tracker: Tracker,
    builder: ReportPipeline,
    pub(super) store: Store,
    sinks: Vec<JsonLinesSink>,
    limiter: RateLimiter,
    pub(super) config: Config,
    /// The signals the probes were loaded with (a reload cannot widen it).
    loaded_signals: BTreeSet<i32>,
    signals: BTreeSet<i32>,
    metrics: SharedMetrics,
    boot_id: Option<String>,
    contexts: HashMap<u32, Context>,
    /// Rate-limit key → fingerprint of its last recorded crash.
    last_group: HashMap<String, String>,
    /// (fingerprint, key) → (count, first, last), written once a second.
    suppressed: HashMap<(String, String), (u64, i64, i64)>,
    reported_losses: [u64; loss::COUNT as usize],
    malformed: u64,
    reported_malformed: u64,
    /// Crashes acknowledged (stored) since start.
    pub stored: u64,
}

impl Pipeline {
    pub fn new(
        mut tracer: Tracer,
        store: Store,
        config: Config,
        sinks: Vec<JsonLinesSink>,
        metrics: SharedMetrics,
    ) -> anyhow::Result<Self> {
        let signals = config.signal_set().map_err(anyhow::Error::msg)?;
        // SAFETY: the ring buffer owns its descriptor, and the AsyncFd owns
        // the ring buffer until both are dropped together.
        let ring =
            unsafe { AsyncFd::register_with_interest(tracer.take_events()?, Interest::READABLE) }?;
        let r = &config.rate_limit;
        Ok(Self {
            tracer,
            ring,
            tracker: Tracker::new(super::GRACE),
            builder: ReportPipeline::new(config.capture.debug_dirs.clone()),
            store,
            sinks,
            limiter: RateLimiter::new(r.burst, r.per_minute),
            loaded_signals: signals.clone(),
            signals,
            config,
            metrics,
            boot_id: enrich::boot_id(),
            contexts: HashMap::new(),
            last_group: HashMap::new(),
            suppressed: HashMap::new(),
            reported_losses: [0; loss::COUNT as usize],
            malformed: 0,
            reported_malformed: 0,
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

    /// Reads everything in the ring buffer now.
    pub fn drain_ring(&mut self) {
        let mut deaths = Vec::new();
        let mut execs = Vec::new();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(Event::Exec(exec)) => execs.push(exec),
                Ok(event) => {
                    let task = match &event {
                        Event::Signal(s) => Some((s.target.pid, s.target.ppid)),
                        Event::State(s) => Some((s.thread.pid, s.thread.ppid)),
                        Event::Evidence(e) => Some((e.pid, 0)),
                        _ => None,
                    };
                    if let Some((pid, ppid)) = task
                        && !self.contexts.contains_key(&pid)
                    {
                        // First record of this death: read the cgroup while
                        // the process is (most likely) still there.
                        if self.contexts.len() >= MAX_CONTEXTS {
                            self.contexts.clear();
                        }
                        let (cgroup, source) = enrich::cgroup_of_death(pid, ppid);
                        let mut ctx = context::describe(self.boot_id.clone(), cgroup);
                        ctx.cgroup_source = source;
                        self.contexts.insert(pid, ctx);
                    }
                    deaths.extend(self.tracker.on_event(event, Instant::now()));
                }
                Err(e) => {
                    self.malformed += 1;
                    eprintln!("crashtrace: warning: skipped a malformed record: {e}");
                }
            }
        }
        for exec in &execs {
            crate::runtimes::probe_exec(&mut self.tracer, exec);
        }
        self.emit_all(deaths);
    }

    /// Closes the stories whose exit did not come within the grace time.
    pub fn expire(&mut self) {
        let deaths = self.tracker.expire(Instant::now());
        self.emit_all(deaths);
    }

    /// Drains the ring buffer and closes every open story (shutdown).
    pub fn finish(&mut self) {
        self.drain_ring();
        let deaths = self.tracker.drain();
        self.emit_all(deaths);
        self.flush_suppressed();
        self.poll_losses();
    }

    fn emit_all(&mut self, deaths: Vec<Death>) {
        let mut batch = Vec::new();
        let mut keys = Vec::new();
        for death in deaths {
            let context = self.contexts.remove(&death.pid);
            if let Some((crash, key)) = self.prepare(&death, context) {
                batch.push(crash);
                keys.push(key);
            }
        }
        if !batch.is_empty() {
            self.store_batch(batch, keys);
        }
    }

    /// Decides what happens to one death; returns the crash to store.
    fn prepare(&mut self, death: &Death, context: Option<Context>) -> Option<(NewCrash, String)> {
        let survived = death.exit.is_none() && death.alive;
        if survived && let Err(e) = self.tracer.forget_doomed(death.pid) {
            eprintln!("crashtrace: warning: {e}");
        }
        let only_handled = death.signals.iter().all(|s| s.handled) && death.exit.is_none();
        let caught_panic = death.only_caught_panic() && death.exit.is_some();
        if (survived || only_handled || caught_panic) && !self.config.capture.include_survived {
            return None;
        }
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
        let started = Instant::now();
        let mut report = self.builder.build(death);
        self.metrics()
            .observe_symbolization(started.elapsed().as_secs_f64());
        if context_missing {
            report.diagnostics.push(
                "cgroup and unit unknown: the process was reaped before its cgroup could be read"
                    .into(),
            );
        } else if context.cgroup_source == Some("parent") {
            report.diagnostics.push(
                "cgroup and unit are the parent's: the process was reaped before its own cgroup could be read"
                    .into(),
            );
        }
        let time_us = timefmt::parse_rfc3339(&report.time).unwrap_or(now);
        Some((
            NewCrash {
                time_us,
                report,
                context,
            },
            key,
        ))
    }

    fn store_batch(&mut self, batch: Vec<NewCrash>, keys: Vec<String>) {
        match self.store.insert(&batch) {
            Ok(ids) => {
                for ((crash, key), id) in batch.iter().zip(keys).zip(ids) {
                    let r = &crash.report;
                    eprintln!(
                        "crashtrace: stored crash id={id} pid={} class={} fingerprint={} exe={}",
                        r.pid,
                        r.class,
                        r.fingerprint,
                        r.exe.as_deref().unwrap_or("?")
                    );
                    self.stored += 1;
                    self.metrics().crash(
                        r.class,
                        r.exe.as_deref().unwrap_or(""),
                        crash.context.unit.as_deref().unwrap_or(""),
                    );
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
                let _ = self
                    .store
                    .add_counters(&[(format!("lost.{what}"), batch.len() as u64)]);
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

    /// Writes the suppressed counts gathered since the last call.
    pub fn flush_suppressed(&mut self) {
        if self.suppressed.is_empty() {
            return;
        }
        let rows: Vec<(String, String, u64, i64, i64)> = self
            .suppressed
            .drain()
            .map(|((fp, key), (n, first, last))| (fp, key, n, first, last))
            .collect();
        if let Err(e) = self.store.add_suppressed(&rows) {
            eprintln!("crashtrace: error: cannot record suppressed crashes: {e}");
        }
    }

    /// Warns about, counts and persists new kernel-side losses.
    pub fn poll_losses(&mut self) {
        let losses = self.tracer.losses();
        if losses == self.reported_losses && self.malformed == self.reported_malformed {
            return;
        }
        let mut deltas = Vec::new();
        for (i, (&now, &before)) in losses.iter().zip(&self.reported_losses).enumerate() {
            if now > before {
                eprintln!(
                    "crashtrace: warning: {} event(s) lost: {}",
                    now - before,
                    loss::NAMES[i].replace('_', " ")
                );
                deltas.push((format!("lost.{}", loss::NAMES[i]), now - before));
                self.metrics().set_lost(loss::NAMES[i], now);
            }
        }
        if self.malformed > self.reported_malformed {
            deltas.push((
                "lost.malformed_record".into(),
                self.malformed - self.reported_malformed,
            ));
            let total = self.malformed;
            self.metrics().set_lost("malformed_record", total);
        }
        self.reported_losses = losses;
        self.reported_malformed = self.malformed;
        if let Err(e) = self.store.add_counters(&deltas) {
            eprintln!("crashtrace: error: cannot record lost-event counts: {e}");
        }
    }

    fn metrics(&self) -> std::sync::MutexGuard<'_, super::metrics::Metrics> {
        self.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }
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
