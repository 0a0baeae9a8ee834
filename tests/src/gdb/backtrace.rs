//! Running gdb on a core and parsing its `bt` output, with each frame's
//! type (normal, inline, tail call, signal trampoline) read through gdb's
//! Python API.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::wait_output;
use crate::record;

/// The gdb binary (`$GDB` overrides it).
pub fn gdb_bin() -> PathBuf {
    std::env::var_os("GDB")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/gdb"), PathBuf::from)
}

/// One frame of gdb's `bt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GdbFrame {
    pub index: usize,
    /// The frame's pc, when gdb printed it (`0x... in`).
    pub address: Option<u64>,
    /// The function as gdb names it (`??` when unknown), without arguments.
    pub function: String,
    /// `FILE:LINE`, `from LIBRARY`, or empty.
    pub location: String,
    /// What kind of frame gdb says it is.
    pub kind: FrameKind,
}

/// gdb's frame types that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Unwound from the stack.
    Normal,
    /// A function inlined at the pc of the next older frame.
    Inline,
    /// A frame gdb reconstructs from DWARF call-site information for a
    /// function that left by a tail call (`jmp`): it has no return address
    /// on the stack, so no stack unwinder can see it.
    TailCall,
    /// A signal trampoline.
    SigTramp,
    /// gdb could not say (no Python in this gdb).
    Unknown,
}

impl FrameKind {
    fn from_gdb(name: &str) -> Self {
        match name {
            "normal" => Self::Normal,
            "inline" => Self::Inline,
            "tailcall" => Self::TailCall,
            "sigtramp" => Self::SigTramp,
            _ => Self::Unknown,
        }
    }
}

/// gdb's backtrace of a core.
#[derive(Clone, Debug)]
pub struct GdbBacktrace {
    pub frames: Vec<GdbFrame>,
    /// Everything gdb printed, for failure messages.
    pub output: String,
    pub command: String,
}

/// Printed just before `bt`, so the frame gdb shows while loading the core
/// is not taken for the backtrace.
const BT_MARKER: &str = "----- crashtrace-tests backtrace -----";
/// Printed after `bt`, before one `FRAME_KIND_PREFIX N KIND` line per frame.
const KINDS_MARKER: &str = "----- crashtrace-tests frame kinds -----";
pub(super) const FRAME_KIND_PREFIX: &str = "crashtrace-tests-frame";

/// gdb Python that prints each frame's type (`bt` does not show which
/// frames are tail-call frames).
fn frame_kinds_command() -> String {
    let script = [
        "kinds = {gdb.INLINE_FRAME: 'inline', gdb.TAILCALL_FRAME: 'tailcall', \
         gdb.SIGTRAMP_FRAME: 'sigtramp', gdb.NORMAL_FRAME: 'normal'}",
        "f = gdb.newest_frame()",
        "i = 0",
        "while f is not None:",
        &format!("    print('{FRAME_KIND_PREFIX} %d %s' % (i, kinds.get(f.type(), 'other')))"),
        "    try:",
        "        f = f.older()",
        "    except gdb.error:",
        "        f = None",
        "    i += 1",
    ]
    .join("\\n");
    format!("python exec(\"{script}\")")
}

/// `gdb -batch -nx ... -ex bt program core`, with debuginfod off and, when
/// given, `debug_dir` added to gdb's debug-file-directory.
pub fn gdb_backtrace(program: &Path, core: &Path, debug_dir: Option<&Path>) -> GdbBacktrace {
    let gdb = gdb_bin();
    let mut command = Command::new(&gdb);
    command
        .args(["-batch", "-nx"])
        .args(["-iex", "set debuginfod enabled off"])
        .args(["-iex", "set width 0"])
        .args(["-iex", "set pagination off"]);
    if let Some(dir) = debug_dir {
        // -iex: it must be set before gdb reads the program.
        command.arg("-iex").arg(format!(
            "set debug-file-directory /usr/lib/debug:{}",
            dir.display()
        ));
    }
    command
        .args(["-ex", "set print frame-arguments none"])
        .args(["-ex", &format!("echo {BT_MARKER}\\n")])
        .args(["-ex", "bt"])
        .args(["-ex", &format!("echo {KINDS_MARKER}\\n")])
        .args(["-ex", &frame_kinds_command()])
        .arg(program)
        .arg(core)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let description = format!("{command:?}");
    let child = command.spawn().unwrap_or_else(|e| {
        panic!("starting {description}: {e} (is gdb installed? $GDB overrides /usr/bin/gdb)")
    });
    let (status, stdout, stderr) = wait_output(child, record::timeout(), &description);
    let output = format!("{stdout}{stderr}");
    let bt = stdout
        .split_once(BT_MARKER)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{description} printed no backtrace ({status}):\n{output}"));
    let (bt, kinds) = bt.split_once(KINDS_MARKER).unwrap_or((bt, ""));
    let mut frames = parse_backtrace(bt);
    apply_frame_kinds(&mut frames, kinds);
    assert!(
        !frames.is_empty(),
        "{description} printed no frames ({status}):\n{output}"
    );
    GdbBacktrace {
        frames,
        output,
        command: description,
    }
}

/// Parses the `#N ...` lines of gdb's `bt` output.
pub fn parse_backtrace(text: &str) -> Vec<GdbFrame> {
    text.lines().filter_map(parse_frame_line).collect()
}

/// Sets each frame's kind from the `FRAME_KIND_PREFIX N KIND` lines.
pub(super) fn apply_frame_kinds(frames: &mut [GdbFrame], text: &str) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(FRAME_KIND_PREFIX) {
            continue;
        }
        let (Some(index), Some(kind)) = (
            words.next().and_then(|i| i.parse::<usize>().ok()),
            words.next(),
        ) else {
            continue;
        };
        if let Some(frame) = frames.iter_mut().find(|f| f.index == index) {
            frame.kind = FrameKind::from_gdb(kind);
        }
    }
}

/// One `bt` line: `#N  0x... in FUNC (ARGS) at FILE:LINE`,
/// `#N  FUNC (ARGS) at FILE:LINE` (frame 0 at a line start, or an inlined
/// frame), `#N  0x... in FUNC (ARGS) from LIB`, `#N  0x... in ?? ()`.
pub fn parse_frame_line(line: &str) -> Option<GdbFrame> {
    let rest = line.trim_start().strip_prefix('#')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let index = rest[..digits].parse().ok()?;
    let mut rest = rest[digits..].trim_start();
    let mut address = None;
    if let Some(hex) = rest.strip_prefix("0x") {
        let end = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        address = u64::from_str_radix(&hex[..end], 16).ok();
        rest = hex[end..].trim_start();
        rest = rest.strip_prefix("in ").unwrap_or(rest).trim_start();
    }
    let name_end = function_name_end(rest);
    let function = rest[..name_end].trim().to_owned();
    let mut tail = &rest[name_end..];
    if let Some(args) = tail.trim_start().strip_prefix('(') {
        tail = skip_balanced(args);
    }
    let tail = tail.trim();
    let location = if let Some(at) = tail.strip_prefix("at ") {
        at.trim().to_owned()
    } else if tail.starts_with("from ") {
        tail.to_owned()
    } else {
        String::new()
    };
    Some(GdbFrame {
        index,
        address,
        function: if function.is_empty() {
            "??".to_owned()
        } else {
            function
        },
        location,
        kind: FrameKind::Unknown,
    })
}

/// Where a gdb function name ends: at the first ` (` outside brackets.
/// `(anonymous namespace)::f`, `std::function<void ()>::operator()` and
/// `operator<` stay whole.
fn function_name_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = operator_token_len(text, i) {
            i += len;
            continue;
        }
        match bytes[i] {
            b'(' | b'<' | b'[' => depth += 1,
            b')' | b'>' | b']' => depth = depth.saturating_sub(1),
            b' ' if depth == 0 && bytes.get(i + 1) == Some(&b'(') => return i,
            _ => {}
        }
        i += 1;
    }
    text.len()
}

/// If an `operator` keyword starts at byte `i` of `text`, the length of it
/// and its operator symbol (`operator()`, `operator<<`, `operator->`, ...).
pub(super) fn operator_token_len(text: &str, i: usize) -> Option<usize> {
    let rest = text.get(i..)?.strip_prefix("operator")?;
    let starts_word = text[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
    if !starts_word {
        return None;
    }
    let symbol = if rest.starts_with("()") || rest.starts_with("[]") {
        2
    } else {
        rest.bytes()
            .take_while(|b| b"<>=!+-*/%^&|~,".contains(b))
            .count()
    };
    (symbol > 0).then_some("operator".len() + symbol)
}

/// The text after the `)` that closes an already-opened `(`.
fn skip_balanced(text: &str) -> &str {
    let mut depth = 1usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            _ => {}
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    const BT: &str = "\
#0  __pthread_kill_implementation (...) at ./nptl/pthread_kill.c:44
#1  0x00007fcbc9ba0f4f in __pthread_kill_internal (...) at ./nptl/pthread_kill.c:78
#2  0x00007fcbc9b51fb2 in __GI_raise (...) at ../sysdeps/posix/raise.c:26
#3  0x00007fcbc9b3c472 in __GI_abort () at ./stdlib/abort.c:79
#4  0x0000558017cd81bd in store::Box<int>::get (...) at /src/cpp_templates.cpp:14
#5  0x0000558017cd81a6 in (anonymous namespace)::fetch<int> (...) at /src/cpp_templates.cpp:25
#6  0x00007f0000001000 in ?? ()
#7  0x00007f0000002000 in helper () from /lib/libfoo.so
#8  std::function<void ()>::operator() (this=0x1, f=(int (*)(int)) 0x2 <g(int)>) at f.h:3
#9  0x0000555555555061 in main (...) at /src/o2_nofp.c:38
Backtrace stopped: previous frame inner to this frame (corrupt stack?)
";

    #[test]
    fn parses_gdb_backtraces() {
        let frames = parse_backtrace(BT);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "__pthread_kill_implementation",
                "__pthread_kill_internal",
                "__GI_raise",
                "__GI_abort",
                "store::Box<int>::get",
                "(anonymous namespace)::fetch<int>",
                "??",
                "helper",
                "std::function<void ()>::operator()",
                "main",
            ]
        );
        assert_eq!(frames[0].address, None);
        assert_eq!(frames[1].address, Some(0x7fcbc9ba0f4f));
        assert_eq!(frames[1].location, "./nptl/pthread_kill.c:78");
        assert_eq!(frames[7].location, "from /lib/libfoo.so");
        assert_eq!(frames[8].location, "f.h:3");
        assert_eq!(frames[9].index, 9);
    }
}
