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
mod leaks;
pub mod metrics;
mod notify;
mod pipeline;
mod ratelimit;
mod sink;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    engine::{self, Engine},
    frontends::cli::DaemonArgs,
    loader::{TraceOptions, Tracer},
    store::{Store, timefmt},
    support::signals::signal_name,
};
use config::{Config, DEFAULT_CONFIG};
use leaks::LeakWatch;
use notify::Notifier;
use pipeline::StoreSink;
use sink::JsonLinesSink;

/// How often retention runs without new crashes, and health is recorded.
const HOUSEKEEPING: Duration = Duration::from_secs(60);

/// The event engine with the daemon's store as its sink.
type Daemon = Engine<StoreSink>;

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
    crate::loader::runtimes::probe_running(&mut tracer, None);
    engine::warn_degraded(&tracer, " (reports lose that evidence)");
    let probe_health = if tracer.degraded.is_empty() {
        "all probes attached".to_string()
    } else {
        format!("degraded: {}", tracer.degraded.join("; "))
    };
    {
        let mut m = metrics.lock().unwrap_or_else(|e| e.into_inner());
        m.set_attach_failures(tracer.degraded.len() as u64);
    }
    let engine_opts = engine::Options {
        include_survived: config.capture.include_survived,
        debug_dirs: config.capture.debug_dirs.clone(),
    };
    let sink = StoreSink::new(store, config, sinks, metrics.clone())?;
    let mut daemon = Engine::new(tracer, sink, engine_opts)?;
    daemon.sink_mut().enforce_retention();
    daemon.sink_mut().record_state(&[
        ("started", timefmt::format_seconds(timefmt::now_us())),
        ("pid", std::process::id().to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("probes", probe_health),
        ("stopped", String::new()),
    ]);
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

    let leak_watch = LeakWatch::new(&daemon.sink().config.leaks);
    main_loop(
        &mut daemon,
        leak_watch,
        signals_in,
        &config_path,
        explicit,
        &notifier,
    )
    .await?;

    let _ = notifier.notify("STOPPING=1");
    daemon.finish().context("polling the event ring buffer")?;
    let sink = daemon.sink_mut();
    sink.flush_suppressed();
    sink.enforce_retention();
    sink.record_state(&[("stopped", timefmt::format_seconds(timefmt::now_us()))]);
    if let Some(server) = server {
        server.abort();
    }
    eprintln!(
        "crashtrace: daemon stopped after storing {} crash(es)",
        daemon.sink().stored
    );
    Ok(0)
}

struct Signals {
    hangup: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

async fn main_loop(
    daemon: &mut Daemon,
    mut leak_watch: Option<LeakWatch>,
    mut signals: Signals,
    config_path: &Path,
    explicit: bool,
    notifier: &Notifier,
) -> anyhow::Result<()> {
    let mut leak_tick = tokio::time::interval(leaks::PERIOD);
    leak_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = daemon.step() => r.context("polling the event ring buffer")?,
            _ = leak_tick.tick() => {
                if let Some(watch) = leak_watch.as_mut() {
                    watch.tick(daemon.sink_mut());
                }
            }
            _ = signals.hangup.recv() => {
                let _ = notifier.notify("RELOADING=1");
                reload(daemon.sink_mut(), config_path, explicit);
                let config = &daemon.sink().config.leaks;
                match (leak_watch.as_mut(), config.enabled) {
                    (Some(watch), true) => watch.reconfigure(config),
                    (None, true) => leak_watch = LeakWatch::new(config),
                    (_, false) => leak_watch = None,
                }
                let _ = notifier.notify("READY=1");
            }
            _ = signals.interrupt.recv() => break,
            _ = signals.terminate.recv() => break,
        }
    }
    Ok(())
}

/// SIGHUP: a bad config is logged and the running one kept.
fn reload(sink: &mut StoreSink, path: &Path, explicit: bool) {
    let config = match Config::load(path, explicit) {
        Ok(mut c) => {
            c.metrics.listen.clone_from(&sink.config.metrics.listen);
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
    sink.apply(config, sinks);
    sink.enforce_retention();
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
