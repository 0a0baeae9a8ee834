//! The crash report: the contract with users and their tools.
//!
//! The JSON form is documented in `docs/report-schema.md` and versioned by
//! [`SCHEMA`]; field names and class ids change only on purpose. The text
//! form is for people and may change freely. The stages that fill a
//! report in run in `crate::pipeline`.

mod build;
pub(crate) mod frames;
pub mod oom;
pub(crate) mod sender;
mod text;
pub mod time;

use serde::{Deserialize, Deserializer, Serialize};

pub use build::{Findings, assemble, fingerprint, outcome, printed_signal_info, signal_info};
pub use text::render_text;

pub use crate::support::frame::Frame;

/// Version of the JSON report format.
pub const SCHEMA: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrashReport {
    pub schema: u32,
    #[serde(rename = "type", deserialize_with = "interned")]
    pub record_type: StaticStr,
    pub time: String,
    pub host: String,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    #[serde(deserialize_with = "interned")]
    pub runtime: StaticStr,
    pub signal: Option<SignalInfo>,
    pub outcome: Outcome,
    #[serde(deserialize_with = "interned")]
    pub class: StaticStr,
    pub summary: String,
    pub evidence: Vec<String>,
    pub message: Option<String>,
    /// What the process wrote to stderr while dying (bounded).
    #[serde(default)]
    pub last_words: Option<String>,
    /// Go: the id of the goroutine that panicked or threw, when printed.
    #[serde(default)]
    pub goroutine: Option<u64>,
    /// Go: the goroutine traces the runtime printed, parsed from the last
    /// words; the crashing goroutine first. Empty for other runtimes.
    #[serde(default)]
    pub goroutines: Vec<crate::classify::Goroutine>,
    pub tags: Vec<String>,
    pub frames: Vec<Frame>,
    pub frames_truncated: bool,
    pub unwind_error: Option<String>,
    /// Frames whose function could not be named.
    pub unsymbolized_frames: usize,
    /// Why parts of the report are missing or degraded.
    pub diagnostics: Vec<String>,
    pub fingerprint: String,
    /// The OOM killer's figures, when it chose this process.
    #[serde(default)]
    pub oom: Option<oom::OomInfo>,
    /// The process's recent signal activity, when any counted signal came.
    #[serde(default)]
    pub signal_activity: Option<crate::support::activity::Activity>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignalInfo {
    pub number: i32,
    pub name: String,
    pub code: i32,
    pub code_name: String,
    pub errno: i32,
    pub fault_address: Option<String>,
    pub sender: Option<Sender>,
    /// The kernel generated the signal itself (`SI_KERNEL`): a fault it
    /// could not describe, a resource limit, the OOM killer.
    #[serde(default)]
    pub sent_by_kernel: bool,
    /// Known from what a Go runtime printed as it died of a signal it had
    /// caught (`SIGTRAP: trace trap`), not from a kernel record.
    #[serde(default)]
    pub from_runtime_output: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sender {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    /// The sender's user stack when it sent the signal, innermost first.
    pub frames: Vec<Frame>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    Killed,
    Exited,
    Survived,
    Unknown,
}

impl Outcome {
    /// From a wait status (`exit_code` of the last thread).
    pub fn from_wait_status(status: u32) -> Self {
        let sig = (status & 0x7f) as i32;
        if sig != 0 && sig != 0x7f {
            Self {
                kind: OutcomeKind::Killed,
                exit_code: None,
                signal: Some(sig),
                core_dumped: status & 0x80 != 0,
            }
        } else {
            Self {
                kind: OutcomeKind::Exited,
                exit_code: Some(((status >> 8) & 0xff) as i32),
                signal: None,
                core_dumped: false,
            }
        }
    }

    pub fn of(kind: OutcomeKind) -> Self {
        Self {
            kind,
            exit_code: None,
            signal: None,
            core_dumped: false,
        }
    }
}

/// A string from a fixed vocabulary. Named, rather than written
/// `&'static str`, so that serde does not take the field for one borrowed
/// from the input (which would tie reading a report to `'static` input).
pub type StaticStr = &'static str;

/// Reads a string field typed `&'static str` (class ids, record types,
/// runtimes) back from a stored report. These come from a small fixed
/// vocabulary, so each distinct value is kept once for the life of the
/// process rather than per report.
fn interned<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    use std::{collections::HashSet, sync::Mutex};
    static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let s = String::deserialize(d)?;
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if let Some(&known) = seen.get(s.as_str()) {
        return Ok(known);
    }
    let leaked: &'static str = Box::leak(s.into_boxed_str());
    seen.insert(leaked);
    Ok(leaked)
}

/// Counts of lost or degraded events, reported when they change.
#[derive(Clone, Debug, Serialize)]
pub struct LossReport {
    pub schema: u32,
    #[serde(rename = "type")]
    pub record_type: &'static str,
    pub time: String,
    /// Totals since start, by cause.
    pub counts: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        let o = Outcome::from_wait_status(11 | 0x80);
        assert_eq!(
            (o.kind, o.signal, o.core_dumped),
            (OutcomeKind::Killed, Some(11), true)
        );
        let o = Outcome::from_wait_status(2 << 8);
        assert_eq!((o.kind, o.exit_code), (OutcomeKind::Exited, Some(2)));
        let o = Outcome::from_wait_status(9);
        assert_eq!(
            (o.kind, o.signal, o.core_dumped),
            (OutcomeKind::Killed, Some(9), false)
        );
    }
}
