//! The goroutine traces a dying Go runtime printed, parsed into a
//! structured dump for the report's `goroutines` array.
//!
//! The text is what the kernel kept of the process's last words (bounded),
//! so it may end mid-trace; a goroutine whose trace was cut keeps the
//! frames read so far. The format, as every release from 1.19 to 1.27
//! prints it:
//!
//! ```text
//! goroutine 7 [chan receive, 3 minutes, locked to thread]:
//! goroutine 1 gp=0xc0000061c0 m=0 mp=0x51fb00 [running]:   (1.22+, GOTRACEBACK=system)
//! main.worker(0xc000012345)
//!     /src/main.go:42 +0x4e fp=0x… sp=0x… pc=0x…   (a tab first)
//! created by main.main in goroutine 1                       (" in goroutine N": 1.21+)
//!     /src/main.go:30 +0x65
//! ```

use serde::{Deserialize, Serialize};

/// Most goroutines kept from one dump, and frames per goroutine.
const MAX_GOROUTINES: usize = 256;
const MAX_FRAMES: usize = 100;

/// One goroutine of the dump.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goroutine {
    pub id: u64,
    /// As Go printed it: `running`, `chan receive`, `select`, `sleep`, ...
    pub state: String,
    /// How long it had been blocked, when Go said (`3 minutes`).
    pub wait_minutes: Option<u64>,
    pub locked_to_thread: bool,
    /// Innermost first.
    pub frames: Vec<GoFrame>,
    /// The `go` statement that started it.
    pub created_by: Option<GoFrame>,
    /// The goroutine that ran that statement (Go 1.21 and later).
    pub created_in: Option<u64>,
    /// Go left frames out (`...additional frames elided...`), or the text
    /// ended inside this trace.
    pub frames_truncated: bool,
}

/// A frame as Go printed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Every goroutine trace in `text`, with the one numbered `first` (the
/// goroutine that crashed) moved to the front.
pub fn parse(text: &str, first: Option<u64>) -> Vec<Goroutine> {
    let mut out: Vec<Goroutine> = Vec::new();
    let mut current: Option<Goroutine> = None;
    // The function line whose `\tfile:line` is expected next, and whether
    // it is the `created by` line.
    let mut pending: Option<(GoFrame, bool)> = None;
    for line in text.lines() {
        if let Some(g) = header(line) {
            flush(&mut current, &mut pending, &mut out);
            if out.len() >= MAX_GOROUTINES {
                break;
            }
            current = Some(g);
            continue;
        }
        let Some(g) = current.as_mut() else {
            continue;
        };
        if line.is_empty() {
            flush(&mut current, &mut pending, &mut out);
            continue;
        }
        if let Some(location) = line.strip_prefix('\t') {
            if let Some((mut frame, created)) = pending.take() {
                (frame.file, frame.line) = file_line(location);
                place(g, frame, created);
            }
            continue;
        }
        if let Some((frame, created)) = pending.take() {
            place(g, frame, created);
        }
        if line.starts_with("...") {
            g.frames_truncated = true;
        } else if let Some(rest) = line.strip_prefix("created by ") {
            let (function, created_in) = match rest.rsplit_once(" in goroutine ") {
                Some((f, n)) => (f, n.trim().parse().ok()),
                None => (rest, None),
            };
            g.created_in = created_in;
            pending = Some((frame_named(function), true));
        } else if looks_like_call(line) {
            pending = Some((frame_named(line), false));
        }
    }
    if let Some(g) = current.as_mut() {
        // The text ended inside this trace.
        g.frames_truncated |= pending.is_some() || !text.ends_with('\n');
    }
    flush(&mut current, &mut pending, &mut out);
    if let Some(i) = first.and_then(|id| out.iter().position(|g| g.id == id)) {
        let g = out.remove(i);
        out.insert(0, g);
    }
    out
}

fn flush(
    current: &mut Option<Goroutine>,
    pending: &mut Option<(GoFrame, bool)>,
    out: &mut Vec<Goroutine>,
) {
    if let Some(mut g) = current.take() {
        if let Some((frame, created)) = pending.take() {
            place(&mut g, frame, created);
        }
        out.push(g);
    }
}

fn place(g: &mut Goroutine, frame: GoFrame, created: bool) {
    if created {
        g.created_by = Some(frame);
    } else if g.frames.len() < MAX_FRAMES {
        g.frames.push(frame);
    } else {
        g.frames_truncated = true;
    }
}

/// `goroutine N [STATE, …]:`, with `gp=… m=… mp=…` between on newer
/// releases under `GOTRACEBACK=system`.
fn header(line: &str) -> Option<Goroutine> {
    let rest = line.strip_prefix("goroutine ")?.strip_suffix("]:")?;
    let (id, rest) = rest.split_once(' ')?;
    let id = id.parse().ok()?;
    let (_, bracket) = rest.split_once('[')?;
    let mut parts = bracket.split(", ");
    let mut g = Goroutine {
        id,
        state: parts.next()?.to_string(),
        ..Goroutine::default()
    };
    for part in parts {
        if part == "locked to thread" {
            g.locked_to_thread = true;
        } else if let Some(n) = part
            .strip_suffix(" minutes")
            .or_else(|| part.strip_suffix(" minute"))
        {
            g.wait_minutes = n.parse().ok();
        }
    }
    Some(g)
}

/// A function line: `pkg.Func(args)` or `pkg.(*T).Method(...)`.
fn looks_like_call(line: &str) -> bool {
    !line.starts_with(' ') && line.ends_with(')') && line.contains('(')
}

/// The function's name, without the argument list Go appends.
fn frame_named(call: &str) -> GoFrame {
    let call = call.trim();
    let function = match call.strip_suffix(')') {
        // The argument list is the last balanced `(...)`.
        Some(inner) => {
            let mut depth = 0usize;
            let mut cut = None;
            for (i, c) in inner.char_indices().rev() {
                match c {
                    ')' => depth += 1,
                    '(' if depth == 0 => {
                        cut = Some(i);
                        break;
                    }
                    '(' => depth -= 1,
                    _ => {}
                }
            }
            cut.map_or(call, |i| &call[..i])
        }
        None => call,
    };
    GoFrame {
        function: function.to_string(),
        file: None,
        line: None,
    }
}

/// `/src/main.go:42 +0x4e fp=… sp=… pc=…` → file and line.
fn file_line(location: &str) -> (Option<String>, Option<u32>) {
    let location = location.split(" +0x").next().unwrap_or(location).trim();
    match location.rsplit_once(':') {
        Some((file, line)) => match line.parse() {
            Ok(n) => (Some(file.to_string()), Some(n)),
            Err(_) => (Some(location.to_string()), None),
        },
        None => (Some(location.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/src/classify/go/tracebacks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_release_fixture_gives_its_goroutines() {
        let dir = format!("{}/src/classify/go/tracebacks", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let gs = parse(&fixture(&name), None);
            assert!(!gs.is_empty(), "{name}: no goroutine");
            assert_eq!(gs[0].id, 1, "{name}");
            assert_eq!(gs[0].state, "running", "{name}");
            let main = gs[0]
                .frames
                .iter()
                .find(|f| f.function == "main.main")
                .unwrap_or_else(|| panic!("{name}: no main.main in {:?}", gs[0].frames));
            assert!(
                main.file.as_deref().is_some_and(|f| f.ends_with("main.go")) && main.line.is_some(),
                "{name}: {main:?}"
            );
            seen += 1;
        }
        assert!(seen >= 9, "only {seen} fixtures");
    }

    #[test]
    fn system_traceback_headers_and_created_by() {
        let gs = parse(&fixture("1.27.3-system.txt"), None);
        let first = &gs[0];
        assert_eq!(first.frames[0].function, "panic");
        assert_eq!(first.frames[0].line, Some(878));
        let gc = gs.iter().find(|g| g.id == 2).expect("goroutine 2");
        assert_eq!(gc.state, "force gc (idle)");
        let created = gc.created_by.as_ref().expect("created by");
        assert_eq!(created.function, "runtime.init.7");
        assert_eq!(created.line, Some(375));
        assert_eq!(gc.created_in, Some(1));
        assert!(!gc.frames_truncated);
    }

    #[test]
    fn states_waits_locks_and_the_crashing_goroutine_first() {
        let text = "fatal error: all goroutines are asleep - deadlock!\n\n\
goroutine 1 [chan receive, 3 minutes, locked to thread]:\n\
main.main()\n\t/src/main.go:10 +0x1d\n\n\
goroutine 7 [select (no cases)]:\n\
main.(*Server).loop(0xc000010000, {0x1, 0x2})\n\t/src/server.go:88 +0x2a\n\
...additional frames elided...\n\
created by main.start\n\t/src/main.go:5 +0x3e\n";
        let gs = parse(text, Some(7));
        assert_eq!(gs.len(), 2);
        assert_eq!(gs[0].id, 7, "the crashing goroutine comes first");
        assert_eq!(gs[0].state, "select (no cases)");
        assert_eq!(gs[0].frames[0].function, "main.(*Server).loop");
        assert!(gs[0].frames_truncated);
        assert_eq!(gs[0].created_in, None);
        assert_eq!(gs[1].wait_minutes, Some(3));
        assert!(gs[1].locked_to_thread);
    }

    #[test]
    fn a_cut_text_keeps_what_it_has() {
        let text = "panic: x\n\ngoroutine 1 [running]:\nmain.f()\n\t/src/a.go:3 +0x1\nmain.main(";
        let gs = parse(text, None);
        assert_eq!(gs.len(), 1);
        assert_eq!(gs[0].frames.len(), 1);
        assert!(gs[0].frames_truncated);
        assert!(parse("no goroutines here\n", None).is_empty());
        assert!(parse("goroutine x [running]:\n", None).is_empty());
    }
}
