//! `crashtrace doctor`: what this host's kernel lets crashtrace capture.
//!
//! Distribution kernels from 5.10 on differ in where a dying thread can be
//! captured and in which hooks exist, and crashtrace adapts at start (see
//! `loader::kernel`). This command loads and attaches every program as
//! `watch` would, then says which choices were made and what a report
//! loses here, so a user can check a host before relying on it. The kernel
//! matrix records its JSON per kernel for the "Tested kernels" table.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    frontends::cli::DoctorArgs,
    loader::{CapturePath, TraceOptions, Tracer},
};

/// What `doctor --json` prints (one object).
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    pub schema: u32,
    /// `uname -r`.
    pub kernel: String,
    /// Where dying threads are captured: `sched_process_exit`, `do_exit`
    /// or `none`.
    pub capture: &'static str,
    /// The programs for kernels without the newer BPF helpers are in use.
    pub fallbacks: bool,
    /// Helpers the full-featured programs use that this kernel lacks.
    pub missing_helpers: Vec<String>,
    /// The `write(2)` hook that keeps native last words: `fentry`,
    /// `tracepoint` or `none`.
    pub last_words: &'static str,
    /// The OOM killer's record (`mark_victim`) is attached.
    pub oom_record: bool,
    /// Every part of a report this host loses, one sentence each.
    pub degraded: Vec<String>,
}

pub fn diagnose(tracer: &Tracer) -> Diagnosis {
    Diagnosis {
        schema: 1,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        capture: match tracer.capture {
            CapturePath::ExitTracepoint => "sched_process_exit",
            CapturePath::DoExitFentry => "do_exit",
            CapturePath::None => "none",
        },
        fallbacks: !tracer.caps.has_full_capture_helpers(),
        missing_helpers: tracer
            .caps
            .missing_helpers()
            .iter()
            .map(|h| format!("bpf_{h}"))
            .collect(),
        last_words: tracer.last_words_hook,
        oom_record: tracer.oom_record,
        degraded: tracer.degraded.clone(),
    }
}

pub fn run(args: DoctorArgs) -> Result<u8> {
    let opts = TraceOptions {
        last_words: args.last_words,
        ..TraceOptions::default()
    };
    let tracer = Tracer::load(&opts)?;
    let d = diagnose(&tracer);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &d).context("writing the diagnosis")?;
        writeln!(out).context("writing the diagnosis")?;
        return Ok(0);
    }
    let capture = match tracer.capture {
        CapturePath::None => "none: reports have no stack, executable or command line".into(),
        path => path.to_string(),
    };
    let helpers = if d.missing_helpers.is_empty() {
        "all present".to_string()
    } else {
        format!(
            "missing {}; using the fallbacks for older kernels",
            d.missing_helpers.join(", ")
        )
    };
    let lines = [
        ("kernel", d.kernel.clone()),
        ("capture", capture),
        ("helpers", helpers),
        ("last words", d.last_words.to_string()),
        (
            "oom record",
            if d.oom_record {
                "mark_victim".into()
            } else {
                "none".into()
            },
        ),
    ];
    for (key, value) in lines {
        writeln!(out, "{key:<12}{value}").context("writing the diagnosis")?;
    }
    if d.degraded.is_empty() {
        writeln!(out, "every part of a report is available on this host")
    } else {
        writeln!(out, "reports on this host lose:").and_then(|()| {
            d.degraded
                .iter()
                .try_for_each(|line| writeln!(out, "  - {line}"))
        })
    }
    .context("writing the diagnosis")?;
    Ok(0)
}
