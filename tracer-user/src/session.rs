//! One tracing session: read records as they arrive, join them per
//! process, and write a report for each death, until told to stop.
//!
//! Losses are never silent: kernel-side drop counters are polled, every
//! increase is warned about on stderr and, in JSON mode, written as a
//! `"type": "loss"` record. Records that fail to decode are counted the
//! same way.

use std::{
    collections::BTreeMap,
    fs::File,
    future::Future,
    io::{self, IsTerminal, Write},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};
use tracer_common::loss;

use crate::{
    events::{Event, decode},
    loader::Tracer,
    pipeline::Pipeline,
    report::{LossReport, SCHEMA, render_text, time},
    runtimes,
    tracker::{Death, Tracker},
};

/// How long a process may go without an exit record before it is checked.
const GRACE: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot open output file {}: {source}", path.display())]
    Output { path: PathBuf, source: io::Error },
    #[error("cannot write a report: {0}")]
    Write(io::Error),
    #[error("cannot poll the event ring buffer: {0}")]
    Poll(io::Error),
    #[error(transparent)]
    Load(#[from] crate::loader::LoadError),
}

/// Where and how reports are written.
pub struct SinkOptions {
    pub json: bool,
    pub output: Option<PathBuf>,
    /// `Some(true)` always, `Some(false)` never, `None` on a terminal.
    pub color: Option<bool>,
    pub include_survived: bool,
    pub debug_dirs: Vec<PathBuf>,
}

pub struct Session {
    tracer: Tracer,
    ring: AsyncFd<RingBuf<MapData>>,
    tracker: Tracker,
    builder: Pipeline,
    out: Box<dyn Write>,
    json: bool,
    color: bool,
    include_survived: bool,
    reported_losses: [u64; loss::COUNT as usize],
    malformed: u64,
    reported_malformed: u64,
    /// Crash reports written so far.
    pub reports: u64,
}

impl Session {
    pub fn new(mut tracer: Tracer, opts: SinkOptions) -> Result<Self, SessionError> {
        for problem in &tracer.degraded {
            eprintln!("crashtrace: warning: {problem} (reports lose that evidence)");
        }
        // SAFETY: the ring buffer owns its descriptor, and the AsyncFd owns
        // the ring buffer until both are dropped together.
        let ring =
            unsafe { AsyncFd::register_with_interest(tracer.take_events()?, Interest::READABLE) }
                .map_err(|e| SessionError::Poll(e.into()))?;
        let (out, terminal): (Box<dyn Write>, bool) = match &opts.output {
            Some(path) => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| SessionError::Output {
                        path: path.clone(),
                        source,
                    })?;
                (Box::new(file), false)
            }
            None => (Box::new(io::stdout()), io::stdout().is_terminal()),
        };
        let color = opts
            .color
            .unwrap_or(terminal && std::env::var_os("NO_COLOR").is_none());
        Ok(Self {
            tracer,
            ring,
            tracker: Tracker::new(GRACE),
            builder: Pipeline::new(opts.debug_dirs),
            out,
            json: opts.json,
            color,
            include_survived: opts.include_survived,
            reported_losses: [0; loss::COUNT as usize],
            malformed: 0,
            reported_malformed: 0,
            reports: 0,
        })
    }

    pub fn tracer_mut(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    /// Processes records until `stop` completes, then drains what is left.
    pub async fn run<F: Future>(&mut self, stop: F) -> Result<F::Output, SessionError> {
        let mut tick = tokio::time::interval(TICK);
        tokio::pin!(stop);
        let output = loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(SessionError::Poll)?;
                    guard.clear_ready();
                    self.drain_ring()?;
                }
                _ = tokio::time::sleep(crate::activity::until_next_second()) => {
                    self.tracer.tick_activity_clock()?;
                }
                _ = tick.tick() => {
                    self.tracer.tick_activity_clock()?;
                    let deaths = self.tracker.expire(Instant::now());
                    self.emit_all(deaths)?;
                    self.report_losses()?;
                }
                output = &mut stop => break output,
            }
        };
        self.finish()?;
        Ok(output)
    }

    /// Reads everything in the ring buffer now.
    fn drain_ring(&mut self) -> Result<(), SessionError> {
        let mut deaths = Vec::new();
        let mut execs = Vec::new();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(Event::Exec(exec)) => execs.push(exec),
                Ok(event) => deaths.extend(self.tracker.on_event(event, Instant::now())),
                Err(e) => {
                    self.malformed += 1;
                    eprintln!("crashtrace: warning: skipped a malformed record: {e}");
                }
            }
        }
        for exec in &execs {
            runtimes::probe_exec(&mut self.tracer, exec);
        }
        self.emit_all(deaths)
    }

    /// Drains the ring buffer and closes every open story.
    fn finish(&mut self) -> Result<(), SessionError> {
        self.drain_ring()?;
        let deaths = self.tracker.drain();
        self.emit_all(deaths)?;
        self.report_losses()
    }

    fn emit_all(&mut self, deaths: Vec<Death>) -> Result<(), SessionError> {
        for mut death in deaths {
            death.activity = self.tracer.activity_of(death.pid);
            let survived = death.exit.is_none() && death.alive;
            if survived {
                self.tracer.forget_doomed(death.pid)?;
            }
            let only_handled = death.signals.iter().all(|s| s.handled) && death.exit.is_none();
            let caught_panic = death.only_caught_panic() && death.exit.is_some();
            if (survived || only_handled || caught_panic) && !self.include_survived {
                continue;
            }
            let report = self.builder.build(&death);
            let text = if self.json {
                let mut line = serde_json::to_string(&report).expect("reports serialize");
                line.push('\n');
                line
            } else {
                render_text(&report, self.color) + "\n"
            };
            self.out
                .write_all(text.as_bytes())
                .map_err(SessionError::Write)?;
            self.out.flush().map_err(SessionError::Write)?;
            self.reports += 1;
        }
        Ok(())
    }

    fn report_losses(&mut self) -> Result<(), SessionError> {
        let losses = self.tracer.losses();
        if losses == self.reported_losses && self.malformed == self.reported_malformed {
            return Ok(());
        }
        let mut counts = BTreeMap::new();
        for (i, (&now, &before)) in losses.iter().zip(&self.reported_losses).enumerate() {
            if now > before {
                eprintln!(
                    "crashtrace: warning: {} event(s) lost: {}",
                    now - before,
                    loss::NAMES[i].replace('_', " ")
                );
            }
            if now > 0 {
                counts.insert(loss::NAMES[i].to_string(), now);
            }
        }
        if self.malformed > 0 {
            counts.insert("malformed_record".into(), self.malformed);
        }
        self.reported_losses = losses;
        self.reported_malformed = self.malformed;
        if self.json {
            let record = LossReport {
                schema: SCHEMA,
                record_type: "loss",
                time: time::rfc3339(SystemTime::now()),
                counts,
            };
            let mut line = serde_json::to_string(&record).expect("loss records serialize");
            line.push('\n');
            self.out
                .write_all(line.as_bytes())
                .map_err(SessionError::Write)?;
            self.out.flush().map_err(SessionError::Write)?;
        }
        Ok(())
    }
}
