//! Per-process bookkeeping: which records belong to one death.
//!
//! The kernel sends, for one process, up to three kinds of record: the
//! signal(s) as generated, the dying thread's state as it exits, and the
//! group's exit status once the last thread is gone. The tracker joins them
//! by pid and decides when a process's story is complete:
//! - an exit record completes it (killed, or exited despite the signal);
//! - a record with no exit after a grace period is checked against /proc:
//!   a process still alive survived the signal (only reported with
//!   `--include-survived`); one that is gone without an exit record has
//!   an `unknown` outcome (its exit record was lost, and the loss counted);
//! - a process still alive that is on its way out (an unhandled signal, a
//!   runtime's fatal path) is given more time, up to [`DYING_WAIT`]: a Go
//!   traceback or a Rust unwind on a busy machine can take longer than the
//!   grace period, and closing its story then would drop the crash as
//!   "survived" when its exit record comes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tracer_common::LAST_WORDS_MAX;

use crate::{
    events::{
        Event, EvidenceRecord, ExitRecord, GoStackRecord, OomRecord, SignalRecord, StateRecord,
    },
    support::procfs,
};

/// Most processes tracked at once; beyond this the oldest is completed
/// early with an unknown outcome rather than growing without bound.
const MAX_PENDING: usize = 4096;
/// Most signal records kept per process (a signal storm keeps the first).
const MAX_SIGNALS: usize = 16;
/// Most goroutine records kept per process: each fatal-path probe off the
/// goroutine's stack sends one, and the first few say it all.
const MAX_GO_STACKS: usize = 4;
/// How long a death by the kernel's SIGKILL waits for the OOM killer's
/// record, which the kernel emits just after the signal: on another CPU
/// the victim can exit first.
const OOM_RECORD_WAIT: Duration = Duration::from_millis(300);
/// How long a process that is dying but still alive is waited for, in all.
pub const DYING_WAIT: Duration = Duration::from_secs(30);

/// Everything recorded about one process's death.
#[derive(Debug)]
pub struct Death {
    pub pid: u32,
    pub signals: Vec<SignalRecord>,
    pub state: Option<Box<StateRecord>>,
    /// The goroutines Go probes found behind threads that died off their
    /// own stacks, first ones first.
    pub go_stacks: Vec<GoStackRecord>,
    pub exit: Option<ExitRecord>,
    /// Calls into libc's or a runtime's fatal paths, in order.
    pub evidence: Vec<EvidenceRecord>,
    /// What the process wrote to stderr once it was known to be dying.
    pub last_words: Vec<u8>,
    /// Some of its writes were cut short (per-write or per-process bound).
    pub last_words_cut: bool,
    /// The process was still alive when its story was closed.
    pub alive: bool,
    /// The OOM killer chose it (recorded just before its SIGKILL).
    pub oom: Option<OomRecord>,
    /// Its recent signal activity, read when the story closed.
    pub activity: Option<crate::support::activity::Activity>,
    /// A first run that died before its Go probes were attached, shown by
    /// what it printed to be a Go crash (set by the engine).
    pub go_first_run: bool,
}

impl Death {
    /// The signal that decided the death: the first one the process did not
    /// handle, else the first one. When the process raised that signal on
    /// itself after catching one another process sent (a handler that
    /// re-raises, as the Go runtime does with SIGQUIT and SIGABRT), the
    /// sent one is the cause.
    pub fn cause(&self) -> Option<&SignalRecord> {
        let fatal = self.signals.iter().find(|s| !s.handled);
        if let Some(f) = fatal
            && f.sender.is_none()
            && f.code <= 0
            && let Some(sent) = self.signals.iter().find(|s| {
                s.handled
                    && s.sender.is_some()
                    && s.code <= 0
                    && (s.signo == f.signo || f.signo == libc::SIGABRT)
            })
        {
            return Some(sent);
        }
        fatal.or_else(|| self.signals.first())
    }
}

impl Death {
    /// Only a process on probation's non-zero exit: no signal, no runtime
    /// probe (see `tracer_common::Doom::provisional`).
    pub fn provisional(&self) -> bool {
        self.exit.is_some_and(|e| e.provisional)
            && self.signals.is_empty()
            && self.evidence.is_empty()
    }

    /// A Rust panic that did not end the process: something caught it (a
    /// thread join, `catch_unwind`), and the process exited on its own
    /// terms, not with a panic's status 101.
    pub fn only_caught_panic(&self) -> bool {
        let panicked = !self.evidence.is_empty()
            && self
                .evidence
                .iter()
                .all(|e| e.source == tracer_common::evidence_source::RUST_PANIC);
        let status = self.exit.map(|e| e.status);
        panicked
            && self.signals.iter().all(|s| s.handled)
            && status.is_none_or(|s| s & 0x7f != 0 || (s >> 8) & 0xff != 101)
    }
}

struct Pending {
    death: Death,
    since: Instant,
    /// When its first record came; `since` moves on while it is dying.
    first: Instant,
    /// Exited, but held until then for a late OOM record.
    held_until: Option<Instant>,
}

impl Death {
    /// On its way out without an exit record yet: a signal it did not
    /// handle, or a runtime's fatal path (a caught Rust panic looks the
    /// same until [`DYING_WAIT`] is over).
    fn dying(&self) -> bool {
        self.exit.is_none()
            && (self.signals.iter().any(|s| !s.handled) || !self.evidence.is_empty())
    }

    /// Killed by the kernel's SIGKILL with no OOM record (yet).
    fn may_await_oom_record(&self) -> bool {
        self.oom.is_none()
            && self
                .cause()
                .is_some_and(|c| c.signo == libc::SIGKILL && c.from_kernel)
    }
}

pub struct Tracker {
    pending: HashMap<u32, Pending>,
    grace: Duration,
}

impl Tracker {
    pub fn new(grace: Duration) -> Self {
        Self {
            pending: HashMap::new(),
            grace,
        }
    }

    /// Takes one record; returns a death when this record completed one.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<Death> {
        let mut done = Vec::new();
        let pid = match &event {
            Event::Signal(s) => s.target.pid,
            Event::State(s) => s.thread.pid,
            Event::Exit(e) => e.pid,
            Event::Evidence(e) => e.pid,
            Event::Oom(o) => o.victim.pid,
            Event::GoStack(g) => g.pid,
            Event::LastWords(w) => w.pid,
            // Not about a death: the session probes the executable.
            Event::Exec(_) => return done,
        };
        if !self.pending.contains_key(&pid) && self.pending.len() >= MAX_PENDING {
            done.extend(self.evict_oldest());
        }
        let entry = self.pending.entry(pid).or_insert_with(|| Pending {
            death: Death {
                pid,
                signals: Vec::new(),
                state: None,
                go_stacks: Vec::new(),
                exit: None,
                evidence: Vec::new(),
                last_words: Vec::new(),
                last_words_cut: false,
                alive: false,
                oom: None,
                activity: None,
                go_first_run: false,
            },
            since: now,
            first: now,
            held_until: None,
        });
        match event {
            Event::Signal(s) => {
                if entry.death.signals.len() < MAX_SIGNALS {
                    entry.death.signals.push(s);
                }
            }
            Event::State(s) => {
                if entry.death.state.is_none() {
                    entry.death.state = Some(s);
                }
            }
            Event::Evidence(e) => {
                if entry.death.evidence.len() < MAX_SIGNALS {
                    entry.death.evidence.push(e);
                }
            }
            Event::LastWords(w) => {
                let words = &mut entry.death.last_words;
                if w.from_tail && w.cut {
                    // The start of that write was not kept.
                    words.extend_from_slice("…".as_bytes());
                }
                let room = (LAST_WORDS_MAX as usize).saturating_sub(words.len());
                let take = w.bytes.len().min(room);
                words.extend_from_slice(&w.bytes[..take]);
                entry.death.last_words_cut |= (w.cut && !w.from_tail) || take < w.bytes.len();
            }
            Event::Exec(_) => {}
            Event::GoStack(g) => {
                if entry.death.go_stacks.len() < MAX_GO_STACKS {
                    entry.death.go_stacks.push(*g);
                }
            }
            Event::Oom(o) => {
                entry.death.oom.get_or_insert(o);
                if entry.held_until.is_some()
                    && let Some(p) = self.pending.remove(&pid)
                {
                    done.push(p.death);
                }
            }
            Event::Exit(e) => {
                entry.death.exit = Some(e);
                if entry.death.may_await_oom_record() {
                    entry.held_until = Some(now + OOM_RECORD_WAIT);
                } else if let Some(p) = self.pending.remove(&pid) {
                    done.push(p.death);
                }
            }
        }
        done
    }

    /// Closes the stories whose grace period is over.
    pub fn expire(&mut self, now: Instant) -> Vec<Death> {
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| match p.held_until {
                Some(until) => now >= until,
                None => now.duration_since(p.since) >= self.grace,
            })
            .map(|(&pid, _)| pid)
            .collect();
        expired
            .into_iter()
            .filter_map(|pid| {
                let p = self.pending.get_mut(&pid)?;
                if p.held_until.is_none()
                    && now.duration_since(p.first) < DYING_WAIT
                    && p.death.dying()
                    && procfs::is_alive(pid)
                {
                    p.since = now;
                    return None;
                }
                self.close(pid)
            })
            .collect()
    }

    /// Closes every story (end of a session).
    pub fn drain(&mut self) -> Vec<Death> {
        let pids: Vec<u32> = self.pending.keys().copied().collect();
        pids.into_iter().filter_map(|pid| self.close(pid)).collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn close(&mut self, pid: u32) -> Option<Death> {
        let mut p = self.pending.remove(&pid)?;
        p.death.alive = procfs::is_alive(pid);
        Some(p.death)
    }

    fn evict_oldest(&mut self) -> Option<Death> {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.since)
            .map(|(&pid, _)| pid)?;
        self.close(oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Task;

    fn signal(pid: u32, handled: bool) -> Event {
        Event::Signal(SignalRecord {
            boot_ns: 1,
            signo: 11,
            code: 1,
            errno: 0,
            fault_addr: 0,
            si_pid: 0,
            si_uid: 0,
            target: Task {
                pid,
                tid: pid,
                ppid: 1,
                uid: 0,
                comm: "x".into(),
            },
            sender: None,
            from_kernel: false,
            handled,
            blocked: false,
            fault_region: None,
            sender_stack: Vec::new(),
            sender_exe: None,
            sender_cmdline: Vec::new(),
        })
    }

    fn exit(pid: u32) -> Event {
        Event::Exit(ExitRecord {
            boot_ns: 2,
            pid,
            tid: pid,
            status: 11,
            provisional: false,
        })
    }

    #[test]
    fn exit_completes_a_death() {
        let mut t = Tracker::new(Duration::from_secs(2));
        let now = Instant::now();
        assert!(t.on_event(signal(7, false), now).is_empty());
        let done = t.on_event(exit(7), now);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].signals.len(), 1);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn cause_prefers_the_unhandled_signal() {
        let mut t = Tracker::new(Duration::from_secs(2));
        let now = Instant::now();
        t.on_event(signal(8, true), now);
        t.on_event(signal(8, false), now);
        let done = t.on_event(exit(8), now);
        assert!(!done[0].cause().unwrap().handled);
    }

    #[test]
    fn expiry_waits_for_the_grace_period() {
        let mut t = Tracker::new(Duration::from_secs(2));
        let now = Instant::now();
        t.on_event(signal(u32::MAX - 1, true), now);
        assert!(t.expire(now + Duration::from_secs(1)).is_empty());
        let done = t.expire(now + Duration::from_secs(3));
        assert_eq!(done.len(), 1);
        assert!(!done[0].alive, "no such pid exists");
    }

    #[test]
    fn a_dying_process_still_alive_is_waited_for() {
        let mut t = Tracker::new(Duration::from_secs(2));
        let now = Instant::now();
        // This test process: alive, with a signal it did not handle.
        let me = std::process::id();
        t.on_event(signal(me, false), now);
        assert!(t.expire(now + Duration::from_secs(3)).is_empty());
        t.on_event(exit(me), now + Duration::from_secs(4));
        assert_eq!(t.pending(), 0, "the exit completed the story");

        t.on_event(signal(me, false), now);
        let done = t.expire(now + DYING_WAIT);
        assert_eq!(done.len(), 1);
        assert!(done[0].alive, "closed as survived after {DYING_WAIT:?}");

        // A handled signal is not a death in progress.
        t.on_event(signal(me, true), now);
        assert_eq!(t.expire(now + Duration::from_secs(3)).len(), 1);
    }

    #[test]
    fn a_kernel_kill_waits_briefly_for_the_oom_record() {
        let mut t = Tracker::new(Duration::from_secs(2));
        let now = Instant::now();
        let mut kill = signal(9, false);
        if let Event::Signal(s) = &mut kill {
            s.signo = libc::SIGKILL;
            s.code = 0x80;
            s.from_kernel = true;
        }
        t.on_event(kill.clone(), now);
        assert!(
            t.on_event(exit(9), now).is_empty(),
            "held for the OOM record"
        );
        let done = t.expire(now + OOM_RECORD_WAIT);
        assert_eq!(done.len(), 1);
        assert!(done[0].exit.is_some() && done[0].oom.is_none());
        // A late OOM record completes the held death at once.
        t.on_event(kill, now);
        t.on_event(exit(9), now);
        let oom = crate::events::OomRecord {
            boot_ns: 3,
            victim: Task {
                pid: 9,
                tid: 9,
                ppid: 1,
                uid: 0,
                comm: "x".into(),
            },
            invoker_pid: 9,
            invoker_tid: 9,
            invoker_comm: "x".into(),
            memory: None,
            oom_score_adj: 0,
            memcg: None,
        };
        let done = t.on_event(Event::Oom(oom), now);
        assert_eq!(done.len(), 1);
        assert!(done[0].oom.is_some());
    }
}
