//! `crashtrace daemon`: `watch` for a whole host as a systemd service,
//! writing every crash to the store (and the configured sinks) instead of
//! a terminal.
//!
//! Life cycle: read the config, open the store, bind the metrics
//! listener, load and attach the probes, then tell systemd `READY=1`.
//! SIGHUP re-reads the config and applies what can change without
//! touching the probes (filters, rate limits, retention, sinks). SIGTERM
//! and SIGINT send `STOPPING=1`, drain the ring buffer, finish the reports
//! in flight and exit 0.

pub mod config;
pub mod enrich;
mod filter;
pub mod metrics;
mod notify;
mod pipeline;
mod ratelimit;
mod sink;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::DaemonArgs,
    loader::{TraceOptions, Tracer},
    signals::signal_name,
    store::{Store, timefmt},
};
use config::{Config, DEFAULT_CONFIG};
use notify::Notifier;
use pipeline::Pipeline;
use sink::JsonLinesSink;

/// How long a process may go without an exit record before it is checked.
const GRACE: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(200);
/// How often retention runs without new crashes, and health is recorded.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: DaemonArgs) -> anyhow::Result<u8> {
    let (config_path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut config = Config::load(&config_path, explicit)?;
    if let Some(listen) = &args.metrics_listen {
        config.metrics.listen = Some(listen.clone());
    }
    let store_path = config.store_path();
    let store = Store::open_rw(&store_path, config.store.group.as_deref())
        .with_context(|| format!("opening the crash store {}", store_path.display()))?;
    let sinks = open_sinks(&config)?;
    let metrics = Arc::new(Mutex::new(metrics::Metrics::default()));
    let listener = match &config.metrics.listen {
        Some(addr) => {
            let addr = addr
                .parse()
                .map_err(|_| anyhow::anyhow!("--metrics-listen: {addr:?} is not ADDRESS:PORT"))?;
            let l = metrics::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            Some((l, addr))
        }
        None => None,
    };

    let signals = config.signal_set().map_err(anyhow::Error::msg)?;
    let opts = TraceOptions {
        signals: signals.clone(),
        traced_only: false,
        include_handled: config.capture.include_survived,
        comms: Vec::new(),
        stack_bytes: config.capture.stack_bytes,
        ring_bytes: config.capture.ring_buffer_mib << 20,
        runtime_probes: config.capture.runtime_probes,
        activity: Default::default(),
        last_words: config.capture.last_words,
    };
    let mut tracer = Tracer::load(&opts)?;
    crate::runtimes::probe_running(&mut tracer, None);
    for problem in &tracer.degraded {
        eprintln!("crashtrace: warning: {problem} (reports lose that evidence)");
    }
    let probe_health = if tracer.degraded.is_empty() {
        "all probes attached".to_string()
    } else {
        format!("degraded: {}", tracer.degraded.join("; "))
    };
    {
        let mut m = metrics.lock().unwrap_or_else(|e| e.into_inner());
        m.set_attach_failures(tracer.degraded.len() as u64);
    }
    let mut pipeline = Pipeline::new(tracer, store, config, sinks, metrics.clone())?;
    pipeline.enforce_retention();
    record_state(
        &mut pipeline,
        &[
            ("started", timefmt::format_seconds(timefmt::now_us())),
            ("pid", std::process::id().to_string()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("probes", probe_health),
            ("stopped", String::new()),
        ],
    );
    let server = listener.map(|(l, addr)| {
        eprintln!("crashtrace: serving metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(l, metrics.clone()))
    });

    // Handlers before READY=1: from then on systemd may send SIGHUP or
    // SIGTERM, whose default action would kill the daemon.
    let signals_in = Signals {
        hangup: signal(SignalKind::hangup())?,
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
    };
    let notifier = Notifier::from_env();
    let names: Vec<String> = signals.iter().map(|&s| signal_name(s)).collect();
    eprintln!(
        "crashtrace: daemon ready: watching all processes for {}; store {}",
        names.join(","),
        store_path.display()
    );
    if let Err(e) = notifier.notify("READY=1") {
        eprintln!("crashtrace: warning: cannot notify the service manager: {e}");
    }

    main_loop(&mut pipeline, signals_in, &config_path, explicit, &notifier).await?;

    let _ = notifier.notify("STOPPING=1");
    pipeline.finish();
    pipeline.enforce_retention();
    record_state(
        &mut pipeline,
        &[("stopped", timefmt::format_seconds(timefmt::now_us()))],
    );
    if let Some(server) = server {
        server.abort();
    }
    eprintln!(
        "crashtrace: daemon stopped after storing {} crash(es)",
        pipeline.stored
    );
    Ok(0)
}

struct Signals {
    hangup: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

async fn main_loop(
    pipeline: &mut Pipeline,
    mut signals: Signals,
    config_path: &Path,
    explicit: bool,
    notifier: &Notifier,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(TICK);
    let mut last_housekeeping = Instant::now();
    loop {
        tokio::select! {
            guard = pipeline.ring.readable_mut() => {
                let mut guard = guard.context("polling the event ring buffer")?;
                guard.clear_ready();
                pipeline.drain_ring();
            }
            _ = tick.tick() => {
                pipeline.expire();
                pipeline.flush_suppressed();
                pipeline.poll_losses();
                if last_housekeeping.elapsed() >= HOUSEKEEPING {
                    last_housekeeping = Instant::now();
                    pipeline.enforce_retention();
                    record_state(pipeline, &[("heartbeat", timefmt::format_seconds(timefmt::now_us()))]);
                }
            }
            _ = signals.hangup.recv() => {
                let _ = notifier.notify("RELOADING=1");
                reload(pipeline, config_path, explicit);
                let _ = notifier.notify("READY=1");
            }
            _ = signals.interrupt.recv() => break,
            _ = signals.terminate.recv() => break,
        }
    }
    Ok(())
}

/// SIGHUP: a bad config is logged and the running one kept.
fn reload(pipeline: &mut Pipeline, path: &Path, explicit: bool) {
    let config = match Config::load(path, explicit) {
        Ok(mut c) => {
            c.metrics.listen.clone_from(&pipeline.config.metrics.listen);
            c
        }
        Err(e) => {
            eprintln!("crashtrace: error: reload failed, keeping the running configuration: {e}");
            return;
        }
    };
    let sinks = match open_sinks(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crashtrace: error: reload failed, keeping the running configuration: {e:#}");
            return;
        }
    };
    pipeline.apply(config, sinks);
    pipeline.enforce_retention();
    eprintln!("crashtrace: reloaded configuration from {}", path.display());
}

fn open_sinks(config: &Config) -> anyhow::Result<Vec<JsonLinesSink>> {
    config
        .sinks
        .json_lines
        .iter()
        .map(|p| JsonLinesSink::open(p).map_err(Into::into))
        .collect()
}

fn record_state(pipeline: &mut Pipeline, entries: &[(&str, String)]) {
    if let Err(e) = pipeline.store.set_state(entries) {
        eprintln!("crashtrace: error: cannot record the daemon's state: {e}");
    }
}
