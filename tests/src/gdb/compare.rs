//! Comparing crashtrace's frames with gdb's, frame by frame down to a stop
//! function, and the failure message that shows both side by side with
//! what one has that the other lacks.

use std::fmt::Write as _;

use serde_json::Value;

use super::backtrace::{FrameKind, GdbBacktrace};
use super::normalize::{GDB_SIGNAL_FRAME, SIGNAL_FRAME, normalize_function};
use crate::report::{describe_frames, frames};

/// One row of the side-by-side comparison.
struct Side {
    raw: String,
    normalized: String,
    detail: String,
}

fn crashtrace_sides(report: &Value) -> Vec<Side> {
    frames(report)
        .iter()
        .map(|f| {
            let function = f.get("function").and_then(Value::as_str);
            let file = f.get("file").and_then(Value::as_str);
            let line = f.get("line").and_then(Value::as_u64);
            let inlined = f.get("inlined").and_then(Value::as_bool) == Some(true);
            let mut detail = String::new();
            if let Some(address) = f.get("address").and_then(Value::as_str) {
                detail.push_str(address);
            }
            if inlined {
                detail.push_str(" [inlined]");
            }
            match (file, line) {
                (Some(file), Some(line)) => write!(detail, " {file}:{line}").expect("String"),
                (Some(file), None) => write!(detail, " {file}").expect("String"),
                _ => {
                    if let Some(module) = f.get("module").and_then(Value::as_str) {
                        write!(detail, " ({module})").expect("String");
                    }
                }
            }
            Side {
                raw: function.unwrap_or("(null)").to_owned(),
                normalized: normalize_function(function.unwrap_or("??")),
                detail,
            }
        })
        .collect()
}

/// gdb's frames to compare, leaving out tail-call frames (which are not
/// on the stack), and descriptions of the ones left out.
fn gdb_sides(bt: &GdbBacktrace) -> (Vec<Side>, Vec<String>) {
    let mut sides = Vec::new();
    let mut left_out = Vec::new();
    for f in &bt.frames {
        if f.kind == FrameKind::TailCall {
            left_out.push(format!("#{} {} ({})", f.index, f.function, f.location));
            continue;
        }
        let mut detail = format!("#{}", f.index);
        // gdb shows the signal frame as `<signal handler called>`; the
        // code there is the sigreturn trampoline, which crashtrace names.
        let normalized = if f.kind == FrameKind::SigTramp || f.function == GDB_SIGNAL_FRAME {
            SIGNAL_FRAME.to_owned()
        } else {
            normalize_function(&f.function)
        };
        if let Some(a) = f.address {
            write!(detail, " 0x{a:x}").expect("String");
        }
        if f.kind == FrameKind::Inline {
            detail.push_str(" [inlined]");
        }
        write!(detail, " {}", f.location).expect("String");
        sides.push(Side {
            raw: f.function.clone(),
            normalized,
            detail,
        });
    }
    (sides, left_out)
}

/// The frames from 0 down to and including the first one named `stop`
/// (all of them if none is).
fn up_to_stop(sides: &[Side], stop: &str) -> (usize, bool) {
    match sides.iter().position(|s| s.normalized == stop) {
        Some(i) => (i + 1, true),
        None => (sides.len(), false),
    }
}

/// Two columns, row by row: the function (and its normalized name in
/// `[...]` when that differs), then a line with address and location.
fn side_by_side(gdb: &[Side], ct: &[Side], rows: usize) -> String {
    let name = |s: Option<&Side>| match s {
        Some(s) if s.raw == s.normalized => s.raw.clone(),
        Some(s) => format!("{} [{}]", s.raw, s.normalized),
        None => "-".to_owned(),
    };
    let detail = |s: Option<&Side>| s.map_or(String::new(), |s| s.detail.trim().to_owned());
    let width = (0..rows)
        .flat_map(|i| [name(gdb.get(i)).len(), detail(gdb.get(i)).len()])
        .chain(["gdb".len()])
        .max()
        .unwrap_or(3);
    let mut text = format!("        {:<width$}   crashtrace\n", "gdb");
    for i in 0..rows {
        let (g, c) = (gdb.get(i), ct.get(i));
        let same = matches!((g, c), (Some(g), Some(c)) if g.normalized == c.normalized);
        let mark = if same { ' ' } else { '!' };
        let _ = writeln!(text, "  {mark} {i:>2}  {:<width$}   {}", name(g), name(c));
        let _ = writeln!(text, "        {:<width$}   {}", detail(g), detail(c));
    }
    text
}

/// Which functions one list has that the other lacks, by a longest common
/// subsequence of the normalized names.
fn differences(gdb: &[Side], ct: &[Side]) -> String {
    let (n, m) = (gdb.len(), ct.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if gdb[i].normalized == ct[j].normalized {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut only_gdb = Vec::new();
    let mut only_ct = Vec::new();
    while i < n || j < m {
        if i < n && j < m && gdb[i].normalized == ct[j].normalized {
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            only_gdb.push(format!("{} (gdb row {i})", gdb[i].raw));
            i += 1;
        } else {
            only_ct.push(format!("{} (crashtrace frame {j})", ct[j].raw));
            j += 1;
        }
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    format!(
        "missing from crashtrace: {}\nnot in gdb's backtrace: {}\n",
        list(&only_gdb),
        list(&only_ct)
    )
}

/// Asserts that crashtrace's frames in `report` name the same functions
/// as gdb's backtrace `bt`, from frame 0 down to and including `stop`, and
/// that crashtrace's frames reach `stop` with every function named.
/// gdb's tail-call frames are left out: gdb reconstructs them from DWARF
/// call-site information, and they have no return address on the stack.
/// `context` is appended to failure messages.
pub fn assert_frames_agree(report: &Value, bt: &GdbBacktrace, stop: &str, context: &str) {
    let stop = normalize_function(stop);
    let (gdb, left_out) = gdb_sides(bt);
    let ct = crashtrace_sides(report);
    let (gdb_len, gdb_reaches) = up_to_stop(&gdb, &stop);
    let (ct_len, ct_reaches) = up_to_stop(&ct, &stop);
    let details = || {
        let kinds_known = bt.frames.iter().all(|f| f.kind != FrameKind::Unknown);
        format!(
            "gdb's tail-call frames, left out: {}{}\ngdb command: {}\ngdb output:\n{}\n\
             crashtrace frames:\n{}\n{context}",
            if left_out.is_empty() {
                "none".to_owned()
            } else {
                left_out.join(", ")
            },
            if kinds_known {
                ""
            } else {
                " (gdb did not report frame types: no Python?)"
            },
            bt.command,
            bt.output.trim_end(),
            describe_frames(report)
        )
    };
    assert!(
        gdb_reaches,
        "gdb's backtrace does not reach `{stop}`, so there is nothing to compare against \
         (is the core complete, and is libc's debug info installed?)\n{}",
        details()
    );
    let mismatch = ct_len != gdb_len
        || gdb[..gdb_len]
            .iter()
            .zip(&ct[..ct_len])
            .any(|(g, c)| g.normalized != c.normalized);
    if mismatch {
        let first = gdb[..gdb_len]
            .iter()
            .zip(&ct[..ct_len])
            .position(|(g, c)| g.normalized != c.normalized)
            .unwrap_or(gdb_len.min(ct_len));
        let rows = gdb_len.max(ct_len.min(gdb_len + 8));
        panic!(
            "crashtrace's frames disagree with gdb's backtrace of the same crash's core, \
             first at row {first} (compared from the crashing frame down to `{stop}`: gdb has \
             {gdb_len} frames there, crashtrace {}; rows marked ! differ; [..] is the \
             normalized name both sides are compared by):\n{}{}\
             crashtrace unwind_error: {}, frames_truncated: {}\n{}",
            if ct_reaches {
                format!("{ct_len}")
            } else {
                format!("{ct_len} and never reaches `{stop}`")
            },
            side_by_side(&gdb, &ct, rows),
            differences(&gdb[..gdb_len], &ct[..ct_len]),
            report.get("unwind_error").unwrap_or(&Value::Null),
            report.get("frames_truncated").unwrap_or(&Value::Null),
            details()
        );
    }
    let unnamed: Vec<usize> = frames(report)[..ct_len]
        .iter()
        .enumerate()
        .filter(|(_, f)| f.get("function").and_then(Value::as_str).is_none())
        .map(|(i, _)| i)
        .collect();
    assert!(
        ct_reaches && unnamed.is_empty(),
        "crashtrace's frames are not fully symbolized: they should reach `{stop}` with every \
         function named (reaches: {ct_reaches}, frames without a function: {unnamed:?})\n{}",
        details()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb::MAIN;
    use crate::gdb::backtrace::{FRAME_KIND_PREFIX, apply_frame_kinds, parse_backtrace};
    use serde_json::json;

    #[test]
    fn signal_frames_compare_as_the_trampoline() {
        let mut frames = parse_backtrace(
            "#0  0x1 in on_usr1 (sig=10) at h.c:3\n#1  <signal handler called>\n\
             #2  0x2 in spin () at h.c:9\n",
        );
        assert_eq!(frames.len(), 3);
        frames[1].kind = FrameKind::Unknown;
        let bt = GdbBacktrace {
            frames,
            output: String::new(),
            command: String::new(),
        };
        let (sides, _) = gdb_sides(&bt);
        assert_eq!(sides[1].normalized, SIGNAL_FRAME);
        assert_eq!(normalize_function("__restore_rt"), SIGNAL_FRAME);
    }

    fn report(functions: &[Option<&str>]) -> Value {
        let frames: Vec<Value> = functions
            .iter()
            .enumerate()
            .map(|(i, f)| {
                json!({"address": format!("0x{:x}", 0x1000 + i), "module": "/p", "build_id": null,
                       "offset": "0x0", "function": f, "file": null, "line": null,
                       "column": null, "inlined": false})
            })
            .collect();
        json!({"frames": frames, "frames_truncated": false, "unwind_error": null})
    }

    fn bt(text: &str) -> GdbBacktrace {
        GdbBacktrace {
            frames: parse_backtrace(text),
            output: text.to_owned(),
            command: "gdb".to_owned(),
        }
    }

    fn agrees(report: &Value, bt: &GdbBacktrace, stop: &str) -> Result<(), String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_frames_agree(report, bt, stop, "");
        }))
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".to_owned())
        })
    }

    #[test]
    fn compares_down_to_the_stop_function() {
        let gdb = bt("\
#0  0x1 in crash (...) at a.c:5
#1  0x2 in caller (...) at a.c:9
#2  0x3 in main () at a.c:14
#3  0x4 in __libc_start_call_main (...) at x.h:58
");
        let good = report(&[Some("crash"), Some("caller"), Some("main"), None]);
        assert_eq!(agrees(&good, &gdb, MAIN), Ok(()));

        let skipped = report(&[Some("crash"), Some("main"), Some("__libc_start_call_main")]);
        let message = agrees(&skipped, &gdb, MAIN).expect_err("a missing frame must fail");
        assert!(message.contains("first at row 1"), "{message}");
        assert!(
            message.contains("missing from crashtrace: caller"),
            "{message}"
        );
        assert!(message.contains("!  1"), "{message}");

        let short = report(&[Some("crash"), Some("caller")]);
        let message = agrees(&short, &gdb, MAIN).expect_err("a short stack must fail");
        assert!(message.contains("never reaches `main`"), "{message}");

        let unnamed = report(&[Some("crash"), None, Some("main")]);
        assert!(agrees(&unnamed, &gdb, MAIN).is_err());
    }

    #[test]
    fn leaves_out_gdb_tail_call_frames() {
        let mut gdb = bt("\
#0  __pthread_kill_implementation (...) at ./nptl/pthread_kill.c:44
#1  0x00007fcbc9ba0f4f in __pthread_kill_internal (...) at ./nptl/pthread_kill.c:78
#2  0x00007fcbc9b51fb2 in __GI_raise (...) at ../sysdeps/posix/raise.c:26
#3  0x00007fcbc9b3c472 in __GI_abort () at ./stdlib/abort.c:79
#4  0x0000555555555142 in main () at abort.c:7
");
        let report = report(&[
            Some("__pthread_kill_implementation"),
            Some("raise"),
            Some("abort"),
            Some("main"),
        ]);
        let message = agrees(&report, &gdb, MAIN).expect_err("frame types unknown");
        assert!(
            message.contains("missing from crashtrace: __pthread_kill_internal"),
            "{message}"
        );
        let kinds = format!(
            "{FRAME_KIND_PREFIX} 0 normal\n{FRAME_KIND_PREFIX} 1 tailcall\n\
             {FRAME_KIND_PREFIX} 2 normal\n{FRAME_KIND_PREFIX} 3 normal\n"
        );
        apply_frame_kinds(&mut gdb.frames, &kinds);
        assert_eq!(gdb.frames[1].kind, FrameKind::TailCall);
        assert_eq!(gdb.frames[4].kind, FrameKind::Unknown);
        assert_eq!(agrees(&report, &gdb, MAIN), Ok(()));
    }
}
