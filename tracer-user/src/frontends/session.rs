//! The printing front end of `record` and `watch`: the event engine's
//! reports go to stdout or a file, as text for people or JSON Lines.
//!
//! Losses are never silent: the engine warns about every increase on
//! stderr and, in JSON mode, this writes a `"type": "loss"` record with
//! the totals. Records that fail to decode are counted the same way.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, IsTerminal, Write},
    path::PathBuf,
    time::SystemTime,
};

use crate::{
    engine::{self, Engine, EngineError, Finished, LossCount, Sink},
    loader::Tracer,
    report::{LossReport, SCHEMA, render_text, time},
    tracker::Death,
};

#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error("cannot open output file {}: {source}", path.display())]
    Output { path: PathBuf, source: io::Error },
    #[error("cannot write a report: {0}")]
    Write(io::Error),
}

/// A session that prints: the engine with a [`Printer`].
pub type Session = Engine<Printer>;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Print(#[from] PrintError),
    #[error(transparent)]
    Engine(#[from] EngineError<PrintError>),
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

/// Starts a printing session on a loaded tracer.
pub fn start(tracer: Tracer, opts: SinkOptions) -> Result<Session, SessionError> {
    engine::warn_degraded(&tracer, " (reports lose that evidence)");
    let printer = Printer::new(&opts)?;
    let opts = engine::Options {
        include_survived: opts.include_survived,
        debug_dirs: opts.debug_dirs,
    };
    Ok(Engine::new(tracer, printer, opts)?)
}

/// Writes each report as it is finished.
pub struct Printer {
    out: Box<dyn Write>,
    json: bool,
    color: bool,
    /// Crash reports written so far.
    pub reports: u64,
}

impl Printer {
    pub fn new(opts: &SinkOptions) -> Result<Self, PrintError> {
        let (out, terminal): (Box<dyn Write>, bool) = match &opts.output {
            Some(path) => (Box::new(open_output(path)?), false),
            None => (Box::new(io::stdout()), io::stdout().is_terminal()),
        };
        let color = opts
            .color
            .unwrap_or(terminal && std::env::var_os("NO_COLOR").is_none());
        Ok(Self {
            out,
            json: opts.json,
            color,
            reports: 0,
        })
    }

    fn write(&mut self, text: &str) -> Result<(), PrintError> {
        self.out
            .write_all(text.as_bytes())
            .map_err(PrintError::Write)?;
        self.out.flush().map_err(PrintError::Write)
    }
}

/// Opens `path` to append to, creating it.
pub fn open_output(path: &PathBuf) -> Result<File, PrintError> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| PrintError::Output {
            path: path.clone(),
            source,
        })
}

impl Sink for Printer {
    type Note = ();
    type Admitted = ();
    type Error = PrintError;

    fn admit(&mut self, _death: &Death, _note: Option<()>) -> Option<()> {
        Some(())
    }

    fn deliver(&mut self, reports: Vec<Finished<()>>) -> Result<(), PrintError> {
        for Finished { report, .. } in reports {
            let text = if self.json {
                let mut line = serde_json::to_string(&report).expect("reports serialize");
                line.push('\n');
                line
            } else {
                render_text(&report, self.color) + "\n"
            };
            self.write(&text)?;
            self.reports += 1;
        }
        Ok(())
    }

    fn losses(&mut self, losses: &[LossCount]) -> Result<(), PrintError> {
        if !self.json {
            return Ok(());
        }
        let counts: BTreeMap<String, u64> = losses
            .iter()
            .filter(|l| l.total > 0)
            .map(|l| (l.name.to_string(), l.total))
            .collect();
        let record = LossReport {
            schema: SCHEMA,
            record_type: "loss",
            time: time::rfc3339(SystemTime::now()),
            counts,
        };
        let mut line = serde_json::to_string(&record).expect("loss records serialize");
        line.push('\n');
        self.write(&line)
    }
}
