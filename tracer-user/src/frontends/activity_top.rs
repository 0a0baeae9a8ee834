//! `watch --signals`: a per-second, top-like table of per-process signal
//! rates, read from the kernel's counters instead of crash reports.
//!
//! Each second, every slot of the `ACTIVITY` map is read and the last
//! complete second is shown: one row per process that received a counted
//! signal in it, busiest first. `--json` writes the same rows as
//! `"type": "signal-activity"` records. Evicted counts are warned about on
//! stderr by the event engine, like every loss.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::PathBuf,
    time::SystemTime,
};

use serde::Serialize;
use tracer_common::{ACTIVITY_WINDOW, ActivitySlot};

use crate::{
    engine::{Finished, Sink},
    events::c_string,
    frontends::session::{PrintError, open_output},
    loader::Tracer,
    report::{SCHEMA, time},
    support::{
        activity::{Columns, monotonic_second},
        signals::signal_name,
    },
    tracker::Death,
};

/// Most rows printed per second in text mode.
const TEXT_ROWS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Output(#[from] PrintError),
    #[error("cannot write the signal summary: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Clock(#[from] crate::loader::LoadError),
}

/// Which processes to show.
pub struct TopFilter {
    /// Only processes in the traced set (`--pid`).
    pub traced_only: bool,
    /// Only these comms (empty: all).
    pub comms: Vec<String>,
}

/// One process's rates in one second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub pid: u32,
    pub comm: String,
    /// Signals per second, by name; only signals that came.
    pub rates: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    schema: u32,
    #[serde(rename = "type")]
    record_type: &'static str,
    time: &'a str,
    /// The second the rates cover (CLOCK_MONOTONIC, whole seconds).
    second: u32,
    #[serde(flatten)]
    row: &'a Row,
}

/// The rates of `second` in each slot, busiest process first.
pub fn rows_for(slots: &[ActivitySlot], columns: &Columns, second: u32) -> Vec<Row> {
    let bucket = second as usize % ACTIVITY_WINDOW;
    let mut rows: Vec<Row> = slots
        .iter()
        .filter(|s| s.tgid != 0 && s.seconds[bucket] == second)
        .filter_map(|s| {
            let rates: BTreeMap<String, u64> = columns
                .signals()
                .iter()
                .enumerate()
                .map(|(column, &sig)| (signal_name(sig), u64::from(s.counts[bucket][column])))
                .filter(|&(_, n)| n > 0)
                .collect();
            (!rates.is_empty()).then(|| Row {
                pid: s.tgid,
                comm: c_string(&s.comm),
                rates,
            })
        })
        .collect();
    rows.sort_by_key(|r| (std::cmp::Reverse(r.rates.values().sum::<u64>()), r.pid));
    rows
}

/// The `watch --signals` front end: shows the table once a second.
pub struct Top {
    out: Box<dyn Write>,
    json: bool,
    filter: TopFilter,
    columns: Columns,
    /// The last second shown.
    last_shown: u32,
}

impl Top {
    /// Every second since counting began is shown, the first partial as
    /// it is; the kernel's clock has stood still since loading, so this
    /// moves it now.
    pub fn new(
        tracer: &mut Tracer,
        filter: TopFilter,
        json: bool,
        output: Option<PathBuf>,
    ) -> Result<Self, TopError> {
        let out: Box<dyn Write> = match &output {
            Some(path) => Box::new(open_output(path)?),
            None => Box::new(io::stdout()),
        };
        let last_shown = tracer.activity_clock().wrapping_sub(1);
        tracer.tick_activity_clock().map_err(TopError::Clock)?;
        Ok(Self {
            out,
            json,
            filter,
            columns: tracer.activity_columns.clone(),
            last_shown,
        })
    }
}

impl Sink for Top {
    type Note = ();
    type Admitted = ();
    type Error = TopError;

    /// Rates, not crashes: no death is reported.
    fn admit(&mut self, _death: &Death, _note: Option<()>) -> Option<()> {
        None
    }

    fn deliver(&mut self, _reports: Vec<Finished<()>>) -> Result<(), TopError> {
        Ok(())
    }

    /// Just after each second begins (the engine has moved the kernel's
    /// clock on, see `Config::activity_second`): shows the seconds that
    /// ended.
    fn second(&mut self, tracer: &mut Tracer) -> Result<(), TopError> {
        let ended = monotonic_second().wrapping_sub(1);
        // A late wake-up shows every second it missed that the buckets
        // still hold, not just the last one.
        let missed = ended
            .wrapping_sub(self.last_shown)
            .min(ACTIVITY_WINDOW as u32 - 1);
        let slots = tracer.activity_slots();
        for second in (0..missed).rev().map(|ago| ended.wrapping_sub(ago)) {
            let rows = rows_for(&slots, &self.columns, second);
            let rows = filtered(tracer, &self.filter, rows);
            let now = time::rfc3339(SystemTime::now());
            let text = if self.json {
                json_lines(&rows, &now, second)
            } else {
                table(&rows, &self.columns, &now)
            };
            self.out
                .write_all(text.as_bytes())
                .map_err(TopError::Write)?;
        }
        self.out.flush().map_err(TopError::Write)?;
        self.last_shown = ended;
        Ok(())
    }
}

fn filtered(tracer: &mut Tracer, filter: &TopFilter, mut rows: Vec<Row>) -> Vec<Row> {
    if filter.traced_only {
        rows.retain(|r| tracer.is_traced(r.pid));
    }
    if !filter.comms.is_empty() {
        // The kernel keeps 15 bytes of a comm.
        rows.retain(|r| {
            filter
                .comms
                .iter()
                .any(|c| crate::events::c_string(&crate::loader::comm_key(c)) == r.comm)
        });
    }
    rows
}

fn json_lines(rows: &[Row], now: &str, second: u32) -> String {
    let mut text = String::new();
    for row in rows {
        let record = JsonRow {
            schema: SCHEMA,
            record_type: "signal-activity",
            time: now,
            second,
            row,
        };
        text.push_str(&serde_json::to_string(&record).expect("rows serialize"));
        text.push('\n');
    }
    text
}

fn table(rows: &[Row], columns: &Columns, now: &str) -> String {
    use std::fmt::Write as _;
    let names: Vec<String> = columns.signals().iter().map(|&s| signal_name(s)).collect();
    // Only the columns some row uses, so a 16-signal default stays readable.
    let used: Vec<&String> = names
        .iter()
        .filter(|n| rows.iter().any(|r| r.rates.contains_key(*n)))
        .collect();
    let mut text = format!("{now}  {} process(es) receiving signals\n", rows.len());
    let _ = write!(text, "{:>8} {:<16}", "PID", "COMM");
    for n in &used {
        let _ = write!(text, " {:>10}", format!("{n}/s"));
    }
    text.push('\n');
    for r in rows.iter().take(TEXT_ROWS) {
        let _ = write!(text, "{:>8} {:<16}", r.pid, r.comm);
        for n in &used {
            let _ = write!(text, " {:>10}", r.rates.get(*n).copied().unwrap_or(0));
        }
        text.push('\n');
    }
    if rows.len() > TEXT_ROWS {
        let _ = writeln!(text, "... and {} more", rows.len() - TEXT_ROWS);
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::ACTIVITY_COLUMNS;

    #[test]
    fn rows_show_one_second_busiest_first() {
        let columns = Columns::new(&[libc::SIGPROF, libc::SIGURG]).unwrap();
        let mut a = ActivitySlot {
            tgid: 10,
            _pad: 0,
            comm: *b"prog\0\0\0\0\0\0\0\0\0\0\0\0",
            seconds: [0; ACTIVITY_WINDOW],
            counts: [[0; ACTIVITY_COLUMNS]; ACTIVITY_WINDOW],
        };
        let mut b = a;
        b.tgid = 11;
        let second = 1000u32;
        let bucket = second as usize % ACTIVITY_WINDOW;
        a.seconds[bucket] = second;
        a.counts[bucket][0] = 100;
        b.seconds[bucket] = second;
        b.counts[bucket][0] = 5;
        b.counts[bucket][1] = 200;
        let mut stale = a;
        stale.tgid = 12;
        stale.seconds[bucket] = second - 8;
        let rows = rows_for(&[a, b, stale], &columns, second);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].pid, 11);
        assert_eq!(rows[1].comm, "prog");
        assert_eq!(rows[0].rates["SIGURG"], 200);
        assert_eq!(rows[1].rates["SIGPROF"], 100);
        assert!(!rows[1].rates.contains_key("SIGURG"));
        let text = table(&rows, &columns, "t");
        assert!(
            text.contains("SIGPROF/s") && text.contains("SIGURG/s"),
            "{text}"
        );
        let json = json_lines(&rows, "t", second);
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "signal-activity");
        assert_eq!(first["rates"]["SIGURG"], 200);
    }
}
