//! The human-readable report: what died, how, why, and where.

use std::fmt::Write as _;

use super::{CrashReport, OutcomeKind};
use crate::support::signals::signal_name;

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("1;31", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
}

/// Renders one report; `color` adds ANSI styling.
pub fn render_text(r: &CrashReport, color: bool) -> String {
    let s = Style { color };
    let mut out = String::new();
    let how = match r.outcome.kind {
        OutcomeKind::Killed => format!(
            "killed by {}{}",
            r.outcome.signal.map(signal_name).unwrap_or_default(),
            if r.outcome.core_dumped {
                " (core dumped)"
            } else {
                ""
            }
        ),
        OutcomeKind::Exited => format!("exited with status {}", r.outcome.exit_code.unwrap_or(0)),
        OutcomeKind::Survived => "survived".to_string(),
        OutcomeKind::Unknown => "outcome unknown".to_string(),
    };
    let _ = writeln!(
        out,
        "{} pid {} ({}) {} {}",
        s.red("crash"),
        r.pid,
        r.comm,
        how,
        s.dim(&format!("at {} on {}", r.time, r.host))
    );
    let _ = writeln!(
        out,
        "  {:<9}{}",
        "class",
        s.bold(&format!("{}: {}", r.class, r.summary))
    );
    if let Some(exe) = &r.exe {
        let _ = writeln!(out, "  {:<9}{}", "exe", exe);
    }
    if !r.cmdline.is_empty() {
        let _ = writeln!(out, "  {:<9}{}", "cmdline", r.cmdline.join(" "));
    }
    if r.tid != r.pid {
        let _ = writeln!(out, "  {:<9}{} ({})", "thread", r.tid, r.comm);
    }
    if let Some(sig) = &r.signal {
        let mut line = format!("{} ({})", sig.name, sig.code_name);
        if let Some(addr) = &sig.fault_address {
            let _ = write!(line, ", fault address {addr}");
        }
        if sig.sent_by_kernel {
            line.push_str(", sent by the kernel");
        }
        if sig.from_runtime_output {
            line.push_str(", caught by the Go runtime, as it printed");
        }
        if let Some(sender) = &sig.sender {
            let _ = write!(
                line,
                ", sent by pid {} ({}, uid {})",
                sender.pid, sender.comm, sender.uid
            );
            if let Some(exe) = &sender.exe {
                let _ = write!(line, " {exe}");
            }
        }
        let _ = writeln!(out, "  {:<9}{}", "signal", line);
    }
    if r.runtime != "native" {
        let mut line = r.runtime.to_string();
        if let Some(g) = r.goroutine {
            let _ = write!(line, ", goroutine {g}");
        }
        if !r.tags.is_empty() {
            let _ = write!(line, " [{}]", r.tags.join(", "));
        }
        let _ = writeln!(out, "  {:<9}{}", "runtime", line);
    }
    if let Some(message) = &r.message {
        let _ = writeln!(out, "  {:<9}{}", "message", message);
    }
    if let Some(oom) = &r.oom {
        let _ = writeln!(out, "  {:<9}{}", "oom", super::oom::text_line(oom));
    }
    if let Some(activity) = &r.signal_activity {
        let _ = writeln!(
            out,
            "  {:<9}{}",
            "signals",
            crate::support::activity::text_line(activity)
        );
        for note in &activity.notes {
            let _ = writeln!(out, "    - {note}");
        }
    }
    if !r.evidence.is_empty() {
        let _ = writeln!(out, "  evidence");
        for e in &r.evidence {
            let _ = writeln!(out, "    - {e}");
        }
    }
    let _ = writeln!(
        out,
        "  stack{}",
        if r.frames_truncated {
            " (truncated)"
        } else {
            ""
        }
    );
    let mut i = 0;
    while i < r.frames.len() {
        let f = &r.frames[i];
        let repeats = r.frames[i..].iter().take_while(|g| *g == f).count();
        let func = f.function.as_deref().unwrap_or("??");
        let mut line = format!("    #{i:<2} {:>18} {}", f.address, s.bold(func));
        if let (Some(file), Some(l)) = (&f.file, f.line) {
            let _ = write!(line, " at {file}:{l}");
        }
        if f.inlined {
            line.push_str(" (inlined)");
        }
        if let Some(m) = &f.module {
            let _ = write!(
                line,
                " {}",
                s.dim(&format!("[{m} +{}]", f.offset.as_deref().unwrap_or("?")))
            );
        }
        let _ = writeln!(out, "{line}");
        if repeats > 2 {
            let _ = writeln!(
                out,
                "    {}",
                s.dim(&format!(
                    "... the same frame {} more times (#{}-#{})",
                    repeats - 1,
                    i + 1,
                    i + repeats - 1
                ))
            );
            i += repeats;
        } else {
            i += 1;
        }
    }
    if let Some(e) = &r.unwind_error {
        let _ = writeln!(out, "    {}", s.dim(&format!("unwinding stopped: {e}")));
    }
    goroutines(&mut out, r, &s);
    if let Some(words) = &r.last_words {
        // The first lines say why; the full text is in the JSON report.
        const SHOWN: usize = 12;
        let _ = writeln!(out, "  last words (stderr)");
        let lines: Vec<&str> = words.lines().collect();
        for line in lines.iter().take(SHOWN) {
            let _ = writeln!(out, "    | {line}");
        }
        if lines.len() > SHOWN {
            let _ = writeln!(
                out,
                "    {}",
                s.dim(&format!(
                    "... {} more lines (--json has them all)",
                    lines.len() - SHOWN
                ))
            );
        }
    }
    for d in &r.diagnostics {
        let _ = writeln!(out, "  {}", s.dim(&format!("note: {d}")));
    }
    let _ = writeln!(
        out,
        "  {}",
        s.dim(&format!("fingerprint {}", r.fingerprint))
    );
    out
}

/// The crashing goroutine's printed trace in full, then one line per other
/// goroutine: its state and the innermost frame outside the runtime.
fn goroutines(out: &mut String, r: &CrashReport, s: &Style) {
    const OTHERS_SHOWN: usize = 10;
    let Some((first, others)) = r.goroutines.split_first() else {
        return;
    };
    let _ = writeln!(
        out,
        "  goroutines ({}{} printed)",
        r.goroutines.len(),
        if r.goroutines.len() > 1 {
            ", crashing first,"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "    goroutine {} [{}]", first.id, first.state);
    for f in &first.frames {
        let mut line = format!("      {}", f.function);
        if let (Some(file), Some(l)) = (&f.file, f.line) {
            let _ = write!(line, " at {file}:{l}");
        }
        let _ = writeln!(out, "{line}");
    }
    for g in others.iter().take(OTHERS_SHOWN) {
        let top = g
            .frames
            .iter()
            .find(|f| !f.function.starts_with("runtime.") && !f.function.starts_with("internal/"))
            .or(g.frames.first())
            .map_or("?", |f| f.function.as_str());
        let wait = g
            .wait_minutes
            .map(|m| format!(", {m} min"))
            .unwrap_or_default();
        let _ = writeln!(out, "    goroutine {} [{}{wait}] {top}", g.id, g.state);
    }
    if others.len() > OTHERS_SHOWN {
        let _ = writeln!(
            out,
            "    {}",
            s.dim(&format!(
                "... {} more (--json has them all)",
                others.len() - OTHERS_SHOWN
            ))
        );
    }
}
