//! Per-process signal activity: the recent rate of each counted signal.
//!
//! The kernel counts signals per process in per-second buckets (see
//! `tracer_common::ActivitySlot`) and never sends a record per signal; this
//! module chooses which signals are counted, turns a process's slot into
//! counts for the last seconds, and says what a rate means when it is
//! telling (a profiler's SIGPROF, a SIGPIPE storm). Crash reports carry the
//! dying process's activity; `watch --signals` prints every process's
//! rates once a second ([`crate::frontends::activity_top`]).

use serde::{Deserialize, Serialize};
use tracer_common::{ACTIVITY_COLUMNS, ACTIVITY_WINDOW, ActivitySlot, signal_entry};

use crate::support::signals::signal_name;

/// Signals counted by default: the non-fatal ones whose rate says
/// something about a process (profiling, timers, children, broken pipes,
/// Go's preemption, handled faults) and the usual termination requests.
pub const DEFAULT_SIGNALS: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGSEGV,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCHLD,
    libc::SIGCONT,
    libc::SIGURG,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGWINCH,
    libc::SIGIO,
    libc::SIGBUS,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActivityError {
    #[error("at most {ACTIVITY_COLUMNS} signals can be counted at once, {0} were given")]
    TooMany(usize),
    #[error("signal {0} cannot be counted (only 1 to 63)")]
    OutOfRange(i32),
}

/// Which signal each column of a slot counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    signals: Vec<i32>,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            signals: DEFAULT_SIGNALS.to_vec(),
        }
    }
}

impl Columns {
    pub fn new(signals: &[i32]) -> Result<Self, ActivityError> {
        let mut unique: Vec<i32> = Vec::new();
        for &s in signals {
            if !(1..64).contains(&s) {
                return Err(ActivityError::OutOfRange(s));
            }
            if !unique.contains(&s) {
                unique.push(s);
            }
        }
        if unique.len() > ACTIVITY_COLUMNS {
            return Err(ActivityError::TooMany(unique.len()));
        }
        Ok(Self { signals: unique })
    }

    pub fn signals(&self) -> &[i32] {
        &self.signals
    }

    /// Marks the counted signals, with their columns, in the kernel's
    /// per-signal table (`Config::signals`).
    pub fn mark(&self, table: &mut [u8; 64]) {
        for (column, &sig) in self.signals.iter().enumerate() {
            table[sig as usize] |= signal_entry::COUNTED | column as u8;
        }
    }
}

/// The kernel's per-signal table (`Config::signals`): the captured signals
/// and the counted ones with their activity columns.
pub fn signal_table<'a>(
    captured: impl IntoIterator<Item = &'a i32>,
    counted: &Columns,
) -> [u8; 64] {
    let mut table = [0u8; 64];
    for &sig in captured {
        if (1..64).contains(&sig) {
            table[sig as usize] |= signal_entry::CAPTURED;
        }
    }
    counted.mark(&mut table);
    table
}

/// The current second of `CLOCK_MONOTONIC`, the clock the kernel side
/// stamps buckets with (`bpf_ktime_get_ns`).
pub fn monotonic_second() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

/// Time until just after the next second of `CLOCK_MONOTONIC` begins: when
/// to move the kernel's clock (`Config::activity_second`), so that each
/// bucket covers that second and not a shifted one.
pub fn until_next_second() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let left = 1_000_000_000u64.saturating_sub(ts.tv_nsec as u64);
    std::time::Duration::from_nanos(left + 200_000)
}

/// One signal's counts over the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalCounts {
    pub signal: String,
    pub number: i32,
    /// Signals generated in each second, oldest first; the last entry is
    /// the (partial) second the counts were read in.
    pub per_second: Vec<u64>,
    pub total: u64,
    /// The busiest second.
    pub peak_per_second: u64,
}

/// A process's recent signal activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Seconds covered by `per_second`.
    pub window_seconds: usize,
    /// Counted signals that the process received in the window.
    pub signals: Vec<SignalCounts>,
    /// What the rates suggest, where they say something.
    pub notes: Vec<String>,
}

/// The counts of a slot that belongs to `tgid`, for the `ACTIVITY_WINDOW`
/// seconds up to `now_second`. `None` when the slot holds another process
/// or nothing was counted in the window.
pub fn from_slot(
    slot: &ActivitySlot,
    tgid: u32,
    columns: &Columns,
    now_second: u32,
) -> Option<Activity> {
    if slot.tgid != tgid || tgid == 0 {
        return None;
    }
    let mut signals = Vec::new();
    for (column, &signo) in columns.signals.iter().enumerate() {
        let per_second: Vec<u64> = (0..ACTIVITY_WINDOW as u32)
            .rev()
            .map(|ago| {
                let second = now_second.wrapping_sub(ago);
                let bucket = second as usize % ACTIVITY_WINDOW;
                if slot.seconds[bucket] == second {
                    u64::from(slot.counts[bucket][column])
                } else {
                    0
                }
            })
            .collect();
        let total: u64 = per_second.iter().sum();
        if total == 0 {
            continue;
        }
        signals.push(SignalCounts {
            signal: signal_name(signo),
            number: signo,
            peak_per_second: per_second.iter().copied().max().unwrap_or(0),
            per_second,
            total,
        });
    }
    if signals.is_empty() {
        return None;
    }
    let notes = notes(&signals);
    Some(Activity {
        window_seconds: ACTIVITY_WINDOW,
        signals,
        notes,
    })
}

/// The `signals` line of the text report: `SIGPROF 400 (peak 100/s), ...`.
pub fn text_line(a: &Activity) -> String {
    let parts: Vec<String> = a
        .signals
        .iter()
        .map(|s| format!("{} {} (peak {}/s)", s.signal, s.total, s.peak_per_second))
        .collect();
    format!("{} in the last {} s", parts.join(", "), a.window_seconds)
}

/// Rates at which a signal stops being background noise.
const PROFILER_RATE: u64 = 10;
const STORM_RATE: u64 = 1000;
const PIPE_STORM_RATE: u64 = 100;
const CHILD_STORM_RATE: u64 = 200;

fn notes(signals: &[SignalCounts]) -> Vec<String> {
    let mut notes = Vec::new();
    for s in signals {
        let peak = s.peak_per_second;
        let note = match s.number {
            libc::SIGPROF if peak >= PROFILER_RATE => format!(
                "CPU profiling was active: SIGPROF at up to {peak}/s (a profiling timer fires about 100 times per second of CPU time, so about 100/s per busy thread)"
            ),
            libc::SIGVTALRM if peak >= PROFILER_RATE => format!(
                "a virtual-time timer (ITIMER_VIRTUAL) was running: SIGVTALRM at up to {peak}/s"
            ),
            libc::SIGURG if peak >= PROFILER_RATE => format!(
                "SIGURG at up to {peak}/s: the Go runtime preempting goroutines, or out-of-band socket data"
            ),
            libc::SIGPIPE if peak >= PIPE_STORM_RATE => format!(
                "a SIGPIPE storm: up to {peak}/s, the process kept writing to pipes or sockets whose reader was gone"
            ),
            libc::SIGCHLD if peak >= CHILD_STORM_RATE => {
                format!("children exiting at up to {peak}/s (SIGCHLD)")
            }
            _ if peak >= STORM_RATE => format!("a storm of {}: up to {peak}/s", s.signal),
            _ => continue,
        };
        notes.push(note);
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(tgid: u32) -> ActivitySlot {
        ActivitySlot {
            tgid,
            _pad: 0,
            comm: [0; 16],
            seconds: [0; ACTIVITY_WINDOW],
            counts: [[0; ACTIVITY_COLUMNS]; ACTIVITY_WINDOW],
        }
    }

    #[test]
    fn signal_table_marks_columns_and_captured_signals() {
        let c = Columns::new(&[27, 23, 13]).unwrap();
        let config = tracer_common::Config {
            signals: signal_table(&[11, 13], &c),
            ..Default::default()
        };
        assert_eq!(config.activity_column(27), Some(0));
        assert_eq!(config.activity_column(23), Some(1));
        assert_eq!(config.activity_column(13), Some(2));
        assert_eq!(config.activity_column(10), None);
        assert_eq!(config.activity_column(11), None);
        assert!(config.captures(11) && config.captures(13));
        assert!(!config.captures(23) && !config.captures(10));
        assert!(!config.captures(75) && config.activity_column(75).is_none());
        let defaults = signal_table(&[], &Columns::default());
        assert_eq!(defaults.iter().filter(|&&e| e != 0).count(), 16);
        assert_eq!(
            Columns::new(&(1..=17).collect::<Vec<_>>()),
            Err(ActivityError::TooMany(17))
        );
        assert_eq!(Columns::new(&[64]), Err(ActivityError::OutOfRange(64)));
    }

    #[test]
    fn window_keeps_only_current_seconds() {
        let columns = Columns::new(&[libc::SIGPROF, libc::SIGPIPE]).unwrap();
        let mut s = slot(42);
        // Seconds 100..=103 at 100/s of SIGPROF; bucket of second 90 is stale.
        for second in 100..=103u32 {
            let b = second as usize % ACTIVITY_WINDOW;
            s.seconds[b] = second;
            s.counts[b][0] = 100;
        }
        let stale = 90usize % ACTIVITY_WINDOW;
        s.seconds[stale] = 90;
        s.counts[stale][1] = 5000;
        let a = from_slot(&s, 42, &columns, 103).unwrap();
        assert_eq!(a.signals.len(), 1);
        let prof = &a.signals[0];
        assert_eq!(prof.signal, "SIGPROF");
        assert_eq!(prof.per_second, vec![0, 0, 0, 0, 100, 100, 100, 100]);
        assert_eq!((prof.total, prof.peak_per_second), (400, 100));
        assert!(a.notes[0].contains("CPU profiling"), "{:?}", a.notes);
        assert!(from_slot(&s, 43, &columns, 103).is_none());
        assert!(from_slot(&s, 42, &columns, 200).is_none());
    }

    #[test]
    fn storms_are_noted() {
        let counts = |number: i32, peak: u64| SignalCounts {
            signal: signal_name(number),
            number,
            per_second: vec![peak],
            total: peak,
            peak_per_second: peak,
        };
        let n = notes(&[
            counts(libc::SIGPIPE, 500),
            counts(libc::SIGUSR1, 5),
            counts(libc::SIGUSR2, 50_000),
        ]);
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n[0].contains("SIGPIPE storm"));
        assert!(n[1].contains("storm of SIGUSR2"));
    }
}
