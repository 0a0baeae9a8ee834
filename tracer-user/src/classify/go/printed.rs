//! What a dying Go runtime printed, read the way each release prints it.
//!
//! The headline is `panic: VALUE` or `fatal error: MESSAGE`, then, for a
//! fault, `[signal SIGSEGV: ... addr=0x0 pc=...]`, then goroutine traces.
//! What changed across releases, checked on real output of each (the texts
//! under `tracebacks/`, captured from Go 1.19 to 1.27):
//!
//! * a panic raised while another was in flight prints the chain, oldest
//!   first, each later value on its own `\tpanic: ` line; a value recovered
//!   and panicked again is marked `[recovered]` (every release);
//! * from Go 1.25 a value recovered and raised again unchanged prints once,
//!   as `panic: VALUE [recovered, repanicked]`;
//! * goroutine headers gained ` in goroutine N` after `created by` (1.21)
//!   and, under `GOTRACEBACK=system` or higher, `gp=0x… m=N mp=0x…` before
//!   the state (`goroutine 1 gp=0xc0000061c0 m=0 mp=0x51fb00 [running]:`,
//!   1.22 and later);
//! * the runtime's panic frame is `panic(...)` from 1.21 (it was
//!   `runtime.gopanic`), and map faults throw from `internal/runtime/maps`
//!   from 1.24.
//!
//! The class comes from the panic that ended the process; the earlier ones
//! become evidence.

/// One value of a panic chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PanicValue {
    pub value: String,
    /// Marked `[recovered]`: a deferred call recovered it, then panicked.
    pub recovered: bool,
}

/// The parts of a Go crash printout classification needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Printed {
    /// The panic that ended the process: the last of the chain Go printed
    /// after `panic: `, without its `[recovered]` marks (may span lines).
    pub panic: Option<String>,
    /// The panics Go printed before it, oldest first.
    pub earlier_panics: Vec<PanicValue>,
    /// The last panic was recovered and raised again with the same value
    /// (`[recovered, repanicked]`, Go 1.25 and later).
    pub repanicked: bool,
    /// After `fatal error: `.
    pub fatal_error: Option<String>,
    /// `[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=...]`
    pub signal_line: Option<String>,
    pub signal_name: Option<String>,
    /// `code=0x1` of the signal line, or `sigcode=128` after a dump.
    pub signal_code: Option<i32>,
    pub fault_addr: Option<u64>,
    /// From the first `goroutine N [...]:` line.
    pub goroutine: Option<u64>,
    /// `SIGABRT: abort`: the runtime caught a fatal signal and dumped.
    pub signal_dump: Option<String>,
    /// The runtime said the signal arrived while C code ran.
    pub in_cgo: bool,
}

impl Printed {
    /// Splits what followed `panic: ` into the chain Go printed and keeps
    /// the last value as the panic.
    fn set_panic_chain(&mut self, text: &str) {
        let mut chain: Vec<PanicValue> = text
            .split("\n\tpanic: ")
            .map(|part| {
                if let Some(value) = part.strip_suffix(" [recovered, repanicked]") {
                    self.repanicked = true;
                    PanicValue {
                        value: value.to_owned(),
                        recovered: true,
                    }
                } else if let Some(value) = part.strip_suffix(" [recovered]") {
                    PanicValue {
                        value: value.to_owned(),
                        recovered: true,
                    }
                } else {
                    PanicValue {
                        value: part.to_owned(),
                        recovered: false,
                    }
                }
            })
            .collect();
        let last = chain.pop().unwrap_or_default();
        // `[recovered, repanicked]` is on the last (only) value itself.
        self.repanicked &= last.recovered;
        self.panic = Some(last.value);
        self.earlier_panics = chain;
    }

    /// Evidence lines for the panics before the last one.
    pub fn panic_history(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .earlier_panics
            .iter()
            .map(|p| {
                if p.recovered {
                    format!(
                        "an earlier panic {:?} was recovered, then this one was raised",
                        p.value
                    )
                } else {
                    format!("raised while the program was panicking with {:?}", p.value)
                }
            })
            .collect();
        if self.repanicked {
            notes.push("the panic was recovered and raised again with the same value".into());
        }
        notes
    }

    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if out.panic.is_none()
                && let Some(rest) = line.strip_prefix("panic: ")
            {
                let mut message = rest.to_string();
                // A panic value may span lines; the trace starts after a
                // blank line or at the signal line.
                while let Some(next) = lines.peek() {
                    if next.is_empty() || next.starts_with("[signal ") {
                        break;
                    }
                    message.push('\n');
                    message.push_str(next);
                    lines.next();
                }
                out.set_panic_chain(&message);
            } else if out.fatal_error.is_none()
                && let Some(rest) = line.strip_prefix("fatal error: ")
            {
                out.fatal_error = Some(rest.to_string());
            } else if line == "signal arrived during cgo execution" {
                out.in_cgo = true;
            } else if out.signal_dump.is_none()
                && line.starts_with("SIG")
                && line
                    .split_once(": ")
                    .is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase()))
            {
                out.signal_dump = Some(line.to_string());
                // `PC=0x45b2a1 m=0 sigcode=128` (and ` addr=0x…` for
                // SIGSEGV and SIGBUS) follows the dump's headline.
                if let Some(pc) = lines.peek().filter(|l| l.starts_with("PC=")) {
                    out.signal_name = line.split(':').next().map(str::to_string);
                    out.signal_code = field(pc, "sigcode=");
                    out.fault_addr = hex_field(pc, "addr=0x");
                    lines.next();
                }
            } else if out.signal_line.is_none() && line.starts_with("[signal ") {
                out.signal_line = Some(line.trim_matches(['[', ']']).to_string());
                out.signal_name = line
                    .strip_prefix("[signal ")
                    .and_then(|r| r.split([':', ' ']).next())
                    .map(str::to_string);
                out.fault_addr = hex_field(line, "addr=0x");
                out.signal_code = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("code=0x"))
                    .and_then(|h| i32::from_str_radix(h, 16).ok());
            } else if out.goroutine.is_none()
                && let Some(rest) = line.strip_prefix("goroutine ")
                && line.ends_with("]:")
            {
                out.goroutine = rest.split(' ').next().and_then(|n| n.parse().ok());
            }
        }
        out
    }
}

/// The decimal value of the word of `line` that starts with `prefix`. The
/// runtime prints a negative `sigcode` as its unsigned 64-bit pattern
/// (`SI_TKILL` is `18446744073709551610`).
fn field(line: &str, prefix: &str) -> Option<i32> {
    let word = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix))?;
    let value = word
        .parse::<i64>()
        .ok()
        .or_else(|| word.parse::<u64>().ok().map(|v| v as i64))?;
    i32::try_from(value).ok()
}

/// The hexadecimal value of the word of `line` that starts with `prefix`
/// (which ends in `0x`).
fn hex_field(line: &str, prefix: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix))
        .and_then(|h| u64::from_str_radix(h.trim_end_matches(']'), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> Printed {
        let text = match name {
            "1.19-same" => include_str!("tracebacks/1.19-same.txt"),
            "1.19-other" => include_str!("tracebacks/1.19-other.txt"),
            "1.19-nested" => include_str!("tracebacks/1.19-nested.txt"),
            "1.23.9-system" => include_str!("tracebacks/1.23.9-system.txt"),
            "1.24.11-same" => include_str!("tracebacks/1.24.11-same.txt"),
            "1.25.5-same" => include_str!("tracebacks/1.25.5-same.txt"),
            "1.27.3-same" => include_str!("tracebacks/1.27.3-same.txt"),
            "1.27.3-other" => include_str!("tracebacks/1.27.3-other.txt"),
            "1.27.3-system" => include_str!("tracebacks/1.27.3-system.txt"),
            other => panic!("no captured text {other}"),
        };
        Printed::parse(text)
    }

    #[test]
    fn a_value_recovered_and_raised_again() {
        // Before 1.25 the chain repeats the value; from 1.25 one line says so.
        for name in ["1.19-same", "1.24.11-same"] {
            let p = parse(name);
            assert_eq!(p.panic.as_deref(), Some("config missing"), "{name}");
            assert_eq!(
                p.earlier_panics,
                [PanicValue {
                    value: "config missing".into(),
                    recovered: true
                }],
                "{name}"
            );
            assert!(!p.repanicked, "{name}");
            assert_eq!(p.goroutine, Some(1), "{name}");
        }
        for name in ["1.25.5-same", "1.27.3-same"] {
            let p = parse(name);
            assert_eq!(p.panic.as_deref(), Some("config missing"), "{name}");
            assert!(p.earlier_panics.is_empty() && p.repanicked, "{name}");
            assert_eq!(
                p.panic_history(),
                ["the panic was recovered and raised again with the same value"]
            );
        }
    }

    #[test]
    fn a_different_value_after_a_recovered_one() {
        for name in ["1.19-other", "1.27.3-other"] {
            let p = parse(name);
            assert_eq!(p.panic.as_deref(), Some("cleanup failed"), "{name}");
            assert_eq!(p.earlier_panics.len(), 1, "{name}");
            assert!(p.earlier_panics[0].recovered && !p.repanicked, "{name}");
            assert_eq!(
                p.panic_history(),
                ["an earlier panic \"config missing\" was recovered, then this one was raised"]
            );
        }
        // A deferred call that panics while the first panic runs.
        let p = parse("1.19-nested");
        assert_eq!(p.panic.as_deref(), Some("second"));
        assert_eq!(
            p.panic_history(),
            ["raised while the program was panicking with \"first\""]
        );
    }

    #[test]
    fn goroutine_headers_with_gp_and_m() {
        for name in ["1.23.9-system", "1.27.3-system"] {
            let p = parse(name);
            assert_eq!(p.goroutine, Some(1), "{name}");
            assert_eq!(p.signal_name.as_deref(), Some("SIGSEGV"), "{name}");
            assert_eq!(p.fault_addr, Some(0), "{name}");
            assert!(
                p.panic
                    .as_deref()
                    .is_some_and(|m| m.ends_with("nil pointer dereference")),
                "{name}"
            );
        }
    }
}
