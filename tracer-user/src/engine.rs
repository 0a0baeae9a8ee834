//! The event engine: the one loop from kernel records to finished
//! reports, under every front end (`record`, `watch`, `watch --signals`
//! and the daemon).
//!
//! It owns what every front end needs done the same way:
//! - decoding the ring buffer's records (a malformed one is warned about
//!   and counted, never fatal);
//! - joining them per process ([`Tracker`]) and closing the stories whose
//!   exit never came;
//! - probing the executables the kernel reports as they start;
//! - the rule for which deaths get a report at all: survived signals,
//!   handled-only signals and caught panics only with `--include-survived`;
//! - building each report ([`Pipeline`]);
//! - loss accounting: kernel drop counters are polled, every increase is
//!   warned about on stderr and handed to the front end.
//!
//! A front end is a [`Sink`]: it says which reportable deaths it wants
//! (filters, rate limits) and what happens to a finished report (print
//! it, store and acknowledge it, count it). Keeping one loop means a fix
//! to the event path is made once for all of them.

use std::{
    collections::HashMap,
    future::Future,
    io,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};
use tracer_common::loss;

use crate::{
    classify::first_run_crash,
    events::{Event, decode},
    loader::{LoadError, Tracer, runtimes},
    pipeline::Pipeline,
    report::CrashReport,
    support::activity::until_next_second,
    tracker::{Death, Tracker},
};

/// How long a process may go without an exit record before it is checked.
pub const GRACE: Duration = Duration::from_secs(2);
/// How often stories are expired and loss counters polled.
const TICK: Duration = Duration::from_millis(200);
/// Notes kept for processes whose death is not complete yet.
const MAX_NOTES: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum EngineError<E: std::error::Error + 'static> {
    #[error("cannot poll the event ring buffer: {0}")]
    Poll(io::Error),
    #[error(transparent)]
    Tracer(#[from] LoadError),
    #[error(transparent)]
    Sink(E),
}

/// What a front end does with deaths and reports.
pub trait Sink {
    /// What the front end notes when a death's first record arrives.
    type Note;
    /// What an admitted death carries to its delivery.
    type Admitted;
    type Error: std::error::Error + 'static;

    /// The first record of a death (`ppid` 0 when the record has none):
    /// the moment to read what is gone once the process is reaped.
    fn first_record(&mut self, _pid: u32, _ppid: u32) -> Option<Self::Note> {
        None
    }

    /// Whether a reportable death gets a report (filters, rate limits);
    /// its note, if one was taken, comes with it.
    fn admit(&mut self, death: &Death, note: Option<Self::Note>) -> Option<Self::Admitted>;

    /// The reports finished together (from one pass over the ring buffer,
    /// one expiry or the final drain), in order.
    fn deliver(&mut self, reports: Vec<Finished<Self::Admitted>>) -> Result<(), Self::Error>;

    /// The loss counters changed since the last call.
    fn losses(&mut self, _losses: &[LossCount]) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Every tick, after expiry and losses: housekeeping.
    fn tick(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Just after each second begins, once the kernel's signal-activity
    /// clock has moved on.
    fn second(&mut self, _tracer: &mut Tracer) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A report and the death's admission.
pub struct Finished<A> {
    pub admitted: A,
    pub report: CrashReport,
    /// How long unwinding, symbolizing and classifying took.
    pub build_time: Duration,
}

/// One loss counter: kernel-side (by [`loss::NAMES`]) or
/// `malformed_record` for records that did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossCount {
    pub name: &'static str,
    /// Since start.
    pub total: u64,
    /// Since the last call.
    pub new: u64,
}

pub struct Options {
    /// Report deaths the process survived (see the module docs).
    pub include_survived: bool,
    /// Where the symbolizer looks for separate debug info.
    pub debug_dirs: Vec<PathBuf>,
}

pub struct Engine<S: Sink> {
    tracer: Tracer,
    ring: AsyncFd<RingBuf<MapData>>,
    tracker: Tracker,
    pipeline: Pipeline,
    sink: S,
    include_survived: bool,
    notes: HashMap<u32, S::Note>,
    ticker: tokio::time::Interval,
    reported_losses: [u64; loss::COUNT as usize],
    malformed: u64,
    reported_malformed: u64,
}

type EngineResult<T, S> = Result<T, EngineError<<S as Sink>::Error>>;

impl<S: Sink> Engine<S> {
    /// Takes the tracer's ring buffer; call within a tokio runtime.
    pub fn new(mut tracer: Tracer, sink: S, opts: Options) -> EngineResult<Self, S> {
        // SAFETY: the ring buffer owns its descriptor, and the AsyncFd owns
        // the ring buffer until both are dropped together.
        let ring =
            unsafe { AsyncFd::register_with_interest(tracer.take_events()?, Interest::READABLE) }
                .map_err(|e| EngineError::Poll(e.into()))?;
        Ok(Self {
            tracer,
            ring,
            tracker: Tracker::new(GRACE),
            pipeline: Pipeline::new(opts.debug_dirs),
            sink,
            include_survived: opts.include_survived,
            notes: HashMap::new(),
            ticker: tokio::time::interval(TICK),
            reported_losses: [0; loss::COUNT as usize],
            malformed: 0,
            reported_malformed: 0,
        })
    }

    pub fn tracer_mut(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Processes records until `stop` completes, then drains what is left.
    pub async fn run<F: Future>(&mut self, stop: F) -> EngineResult<F::Output, S> {
        tokio::pin!(stop);
        let output = loop {
            tokio::select! {
                r = self.step() => r?,
                output = &mut stop => break output,
            }
        };
        self.finish()?;
        Ok(output)
    }

    /// Waits for the next thing to do (records, a tick, a new second) and
    /// does it. Cancel-safe: a front end may select on it with its own
    /// events.
    pub async fn step(&mut self) -> EngineResult<(), S> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard.map_err(EngineError::Poll)?;
                guard.clear_ready();
                self.drain()
            }
            _ = tokio::time::sleep(until_next_second()) => {
                self.tracer.tick_activity_clock()?;
                self.sink.second(&mut self.tracer).map_err(EngineError::Sink)
            }
            _ = self.ticker.tick() => self.tick(),
        }
    }

    /// Closes the stories whose exit did not come within the grace time,
    /// then polls the loss counters.
    fn tick(&mut self) -> EngineResult<(), S> {
        self.tracer.tick_activity_clock()?;
        let deaths = self.tracker.expire(Instant::now());
        self.settle(deaths)?;
        self.poll_losses()?;
        self.sink.tick().map_err(EngineError::Sink)
    }

    /// Drains the ring buffer and closes every open story (shutdown).
    pub fn finish(&mut self) -> EngineResult<(), S> {
        self.drain()?;
        let deaths = self.tracker.drain();
        self.settle(deaths)?;
        self.poll_losses()
    }

    /// Reads everything in the ring buffer now.
    fn drain(&mut self) -> EngineResult<(), S> {
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
                        && !self.notes.contains_key(&pid)
                        && let Some(note) = self.sink.first_record(pid, ppid)
                    {
                        if self.notes.len() >= MAX_NOTES {
                            self.notes.clear();
                        }
                        self.notes.insert(pid, note);
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
            runtimes::probe_exec(&mut self.tracer, exec);
        }
        self.settle(deaths)
    }

    /// Reports the deaths that are reportable and that the sink admits.
    fn settle(&mut self, deaths: Vec<Death>) -> EngineResult<(), S> {
        let mut finished = Vec::new();
        for mut death in deaths {
            let note = self.notes.remove(&death.pid);
            death.activity = self.tracer.activity_of(death.pid);
            if death.provisional() {
                let words = String::from_utf8_lossy(&death.last_words);
                let status = death.exit.map_or(0, |e| e.status);
                if !first_run_crash(&words, status) {
                    continue;
                }
                death.go_first_run = true;
            }
            if !self.reportable(&death) {
                continue;
            }
            let Some(admitted) = self.sink.admit(&death, note) else {
                continue;
            };
            let started = Instant::now();
            let report = self.pipeline.build(&death);
            finished.push(Finished {
                admitted,
                report,
                build_time: started.elapsed(),
            });
        }
        if finished.is_empty() {
            return Ok(());
        }
        self.sink.deliver(finished).map_err(EngineError::Sink)
    }

    /// The rule: a death the process survived (still alive, every signal
    /// handled, a caught panic) is reported only when asked for. A
    /// survivor is forgotten by the kernel, so that its later, ordinary
    /// exit is not taken for the end of a crash.
    fn reportable(&mut self, death: &Death) -> bool {
        let survived = death.exit.is_none() && death.alive;
        if survived && let Err(e) = self.tracer.forget_doomed(death.pid) {
            eprintln!("crashtrace: warning: {e}");
        }
        let only_handled = death.signals.iter().all(|s| s.handled) && death.exit.is_none();
        let caught_panic = death.only_caught_panic() && death.exit.is_some();
        !(survived || only_handled || caught_panic) || self.include_survived
    }

    /// Warns about new losses and hands every counter to the sink.
    fn poll_losses(&mut self) -> EngineResult<(), S> {
        let losses = self.tracer.losses();
        if losses == self.reported_losses && self.malformed == self.reported_malformed {
            return Ok(());
        }
        let mut counts = Vec::with_capacity(losses.len() + 1);
        for (i, (&now, &before)) in losses.iter().zip(&self.reported_losses).enumerate() {
            let new = now.saturating_sub(before);
            if new > 0 {
                eprintln!(
                    "crashtrace: warning: {new} event(s) lost: {}",
                    loss::NAMES[i].replace('_', " ")
                );
            }
            counts.push(LossCount {
                name: loss::NAMES[i],
                total: now,
                new,
            });
        }
        counts.push(LossCount {
            name: "malformed_record",
            total: self.malformed,
            new: self.malformed - self.reported_malformed,
        });
        self.reported_losses = losses;
        self.reported_malformed = self.malformed;
        self.sink.losses(&counts).map_err(EngineError::Sink)
    }
}

/// Warns, once at start, about each probe that could not be attached.
pub fn warn_degraded(tracer: &Tracer, consequence: &str) {
    for problem in &tracer.degraded {
        eprintln!("crashtrace: warning: {problem}{consequence}");
    }
}
