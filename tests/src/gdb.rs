//! Checking crashtrace's frames against gdb's backtrace of a core dump of
//! the very same crash.
//!
//! [`check_agreement`] runs `crashtrace record` on a program with the
//! program's core-size limit raised, in a fresh working directory, so the
//! kernel writes a core dump of the crash that crashtrace reports. It then
//! runs `gdb -batch ... -ex bt PROGRAM CORE`, and compares the two lists of
//! function names from the crashing frame down to a stop function (`main`,
//! or `start_thread` for a crash in a second thread), after normalizing
//! both sides the same way ([`normalize_function`]).
//!
//! The programs that only these tests use, and their build flags, are here
//! ([`build`]); the others come from [`crate::programs`].
//!
//! Nothing here changes system settings: the core pattern
//! (`/proc/sys/kernel/core_pattern`) must already name a file, relative
//! (written in the crashing process's working directory) or absolute.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::programs::source_path;
use crate::record::{self, Recording};
use crate::report::{describe_frames, frames};
use crate::{Harness, crashtrace_bin};

/// The gdb binary (`$GDB` overrides it).
pub fn gdb_bin() -> PathBuf {
    std::env::var_os("GDB")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/gdb"), PathBuf::from)
}

/// The stop function for a crash on the main thread.
pub const MAIN: &str = "main";
/// The stop function for a crash on a thread made by `pthread_create`.
pub const THREAD_START: &str = "start_thread";

// ---------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------

/// A program built for these tests.
#[derive(Clone, Debug)]
pub struct Built {
    /// The executable.
    pub path: PathBuf,
    /// The directory its separate debug file is in, under
    /// `.build-id/xx/rest.debug`, when it was stripped.
    pub debug_dir: Option<PathBuf>,
}

struct GdbRecipe {
    output: &'static str,
    source: &'static str,
    cxx: bool,
    flags: &'static [&'static str],
    /// Move the debug info into a separate file found by build-id, and
    /// strip the executable.
    split_debug: bool,
}

const GDB_RECIPES: &[GdbRecipe] = &[
    GdbRecipe {
        output: "o2_nofp",
        source: "o2_nofp.c",
        cxx: false,
        flags: &["-g", "-O2", "-fomit-frame-pointer", "-Wall", "-Wextra"],
        split_debug: false,
    },
    GdbRecipe {
        output: "leaf_crash",
        source: "leaf_crash.c",
        cxx: false,
        flags: &["-g", "-O2", "-Wall", "-Wextra"],
        split_debug: false,
    },
    GdbRecipe {
        output: "cpp_templates",
        source: "cpp_templates.cpp",
        cxx: true,
        flags: &["-g", "-O0", "-Wall", "-Wextra"],
        split_debug: false,
    },
    GdbRecipe {
        output: "stripped",
        source: "stripped.c",
        cxx: false,
        flags: &["-g", "-O0", "-Wall", "-Wextra", "-Wl,--build-id"],
        split_debug: true,
    },
];

static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Builds `name` (one of `o2_nofp`, `leaf_crash`, `cpp_templates`,
/// `stripped`) under `<scratch_dir>/crashtrace-programs/gdb/`, at most once
/// per process. `$CC` and `$CXX` override `cc` and `c++`.
pub fn build(scratch_dir: &Path, name: &str) -> Built {
    let recipe = GDB_RECIPES
        .iter()
        .find(|r| r.output == name)
        .unwrap_or_else(|| {
            panic!(
                "no gdb-test program named {name:?}; known: {:?}",
                GDB_RECIPES.iter().map(|r| r.output).collect::<Vec<_>>()
            )
        });
    let dir = absolute(&scratch_dir.join("crashtrace-programs").join("gdb"));
    let output = dir.join(recipe.output);
    let debug_dir = recipe
        .split_debug
        .then(|| dir.join(format!("{}-debug", recipe.output)));
    let built = Built {
        path: output.clone(),
        debug_dir: debug_dir.clone(),
    };

    let mut guard = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let done = guard.get_or_insert_with(HashSet::new);
    if done.contains(&output) {
        return built;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let partial = dir.join(format!(".{}.{}.partial", recipe.output, std::process::id()));
    compile(recipe, &partial);
    if let Some(debug_dir) = &debug_dir {
        split_debug(&partial, debug_dir);
    }
    std::fs::rename(&partial, &output).unwrap_or_else(|e| {
        panic!(
            "renaming {} to {}: {e}",
            partial.display(),
            output.display()
        )
    });
    done.insert(output);
    built
}

fn compile(recipe: &GdbRecipe, output: &Path) {
    let (var, default) = if recipe.cxx {
        ("CXX", "c++")
    } else {
        ("CC", "cc")
    };
    let compiler = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into());
    let source = source_path(recipe.source);
    let mut command = Command::new(&compiler);
    command
        .args(recipe.flags)
        .arg("-o")
        .arg(output)
        .arg(&source);
    run_tool(&mut command, "is a C/C++ compiler installed?");
}

/// `objcopy --only-keep-debug`, then `strip --strip-debug
/// --strip-unneeded`, and the debug file goes to
/// `debug_dir/.build-id/xx/rest.debug`.
fn split_debug(program: &Path, debug_dir: &Path) {
    let debug_file = program.with_extension("debug");
    run_tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(program)
            .arg(&debug_file),
        "is binutils installed?",
    );
    run_tool(
        Command::new("strip")
            .args(["--strip-debug", "--strip-unneeded"])
            .arg(program),
        "is binutils installed?",
    );

    let id = build_id(program)
        .unwrap_or_else(|| panic!("{} has no GNU build-id note", program.display()));
    assert_eq!(
        build_id(&debug_file).as_deref(),
        Some(id.as_str()),
        "{} and its debug file {} disagree on the build-id",
        program.display(),
        debug_file.display()
    );
    let (symbols, dwarf) = symbols_and_dwarf(program);
    assert!(
        !symbols && !dwarf,
        "{} still has a symbol table ({symbols}) or DWARF ({dwarf}) after strip",
        program.display()
    );

    let (head, rest) = id.split_at(2);
    let target_dir = debug_dir.join(".build-id").join(head);
    std::fs::create_dir_all(&target_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", target_dir.display()));
    let target = target_dir.join(format!("{rest}.debug"));
    std::fs::rename(&debug_file, &target).unwrap_or_else(|e| {
        panic!(
            "renaming {} to {}: {e}",
            debug_file.display(),
            target.display()
        )
    });
}

/// The GNU build-id of the ELF file at `path`, as lowercase hex.
pub fn build_id(path: &Path) -> Option<String> {
    use object::Object;
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file =
        object::File::parse(&*data).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let id = file
        .build_id()
        .unwrap_or_else(|e| panic!("reading the build-id of {}: {e}", path.display()))?;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the ELF file at `path` has a symbol table, and DWARF.
fn symbols_and_dwarf(path: &Path) -> (bool, bool) {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file =
        object::File::parse(&*data).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let symbols = file.symbol_table().is_some();
    let dwarf = file
        .sections()
        .any(|s| s.name().is_ok_and(|n| n.starts_with(".debug_")));
    (symbols, dwarf)
}

fn run_tool(command: &mut Command, hint: &str) {
    let result = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e} ({hint})"));
    if !result.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|e| panic!("resolving {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Core dumps
// ---------------------------------------------------------------------------

/// Where the kernel writes core dumps: `/proc/sys/kernel/core_pattern` and
/// `core_uses_pid`.
#[derive(Clone, Debug)]
pub struct CorePattern {
    pub pattern: String,
    pub uses_pid: bool,
}

impl CorePattern {
    /// The system's setting. Panics, saying why, if it does not name a
    /// file (a `|program` pipe, or empty).
    pub fn system() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {path}: {e}"))
                .trim_end_matches('\n')
                .to_owned()
        };
        let pattern = read("/proc/sys/kernel/core_pattern");
        let uses_pid = read("/proc/sys/kernel/core_uses_pid").trim() != "0";
        let this = Self { pattern, uses_pid };
        if let Err(why) = this.check() {
            panic!(
                "these tests compare against a core dump, but {why}. They do not change \
                 system settings; set kernel.core_pattern to a file pattern (e.g. `core`) \
                 to run them."
            );
        }
        this
    }

    fn check(&self) -> Result<(), String> {
        let p = &self.pattern;
        if p.starts_with('|') {
            return Err(format!(
                "/proc/sys/kernel/core_pattern is {p:?}: core dumps are piped to a program, \
                 not written to a file"
            ));
        }
        if p.trim().is_empty() {
            return Err("/proc/sys/kernel/core_pattern is empty: no core dumps are written".into());
        }
        if Path::new(p)
            .parent()
            .is_some_and(|d| d.to_string_lossy().contains('%'))
        {
            return Err(format!(
                "/proc/sys/kernel/core_pattern is {p:?}: its directory part has % specifiers, \
                 which this harness does not expand"
            ));
        }
        Ok(())
    }

    /// The directory the core of a process whose working directory is
    /// `cwd` goes to.
    pub fn directory(&self, cwd: &Path) -> PathBuf {
        let parent = Path::new(&self.pattern)
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        match parent {
            Some(dir) if dir.is_absolute() => dir.to_owned(),
            Some(dir) => cwd.join(dir),
            None => cwd.to_owned(),
        }
    }

    /// Whether `file_name` is the name of a core of process `pid`: `%p` and
    /// `%%` are matched exactly, any other specifier matches anything.
    pub fn matches(&self, file_name: &str, pid: i64) -> bool {
        let name = Path::new(&self.pattern)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut pieces: Vec<Option<String>> = Vec::new();
        let mut literal = String::new();
        let mut chars = name.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => literal.push('%'),
                Some('p' | 'P') => literal.push_str(&pid.to_string()),
                Some(_) => {
                    pieces.push(Some(std::mem::take(&mut literal)));
                    pieces.push(None);
                }
                None => {}
            }
        }
        if self.uses_pid && !self.pattern.contains("%p") {
            literal.push_str(&format!(".{pid}"));
        }
        pieces.push(Some(literal));
        glob_match(&pieces, file_name)
    }
}

/// Matches `text` against literal pieces (`Some`) and wildcards (`None`).
fn glob_match(pieces: &[Option<String>], text: &str) -> bool {
    match pieces.split_first() {
        None => text.is_empty(),
        Some((Some(literal), rest)) => text
            .strip_prefix(literal.as_str())
            .is_some_and(|t| glob_match(rest, t)),
        Some((None, rest)) => text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .any(|i| glob_match(rest, &text[i..])),
    }
}

/// The core file of process `pid` written since `since`.
fn find_core(
    pattern: &CorePattern,
    cwd: &Path,
    pid: i64,
    since: SystemTime,
) -> Result<PathBuf, String> {
    let dir = pattern.directory(cwd);
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let since = since - Duration::from_secs(2);
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let fresh = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t >= since);
        if fresh && pattern.matches(&name, pid) {
            found.push(entry.path());
        } else if fresh {
            seen.push(name);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no core file of pid {pid} matching core_pattern {:?} (core_uses_pid={}) in {} \
             (other new files there: {seen:?})",
            pattern.pattern,
            pattern.uses_pid,
            dir.display()
        )),
        _ => Err(format!(
            "several core files match core_pattern {:?} for pid {pid} in {}: {found:?}",
            pattern.pattern,
            dir.display()
        )),
    }
}

/// Raises RLIMIT_CORE as far as allowed; runs between fork and exec.
fn raise_core_limit() -> std::io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) == 0 {
            return Ok(());
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if limit.rlim_max == 0 || libc::setrlimit(libc::RLIMIT_CORE, &limit) != 0 {
            return Err(std::io::Error::other(
                "cannot raise RLIMIT_CORE above 0 (the hard limit is 0)",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running crashtrace and gdb
// ---------------------------------------------------------------------------

/// A `crashtrace record` run whose program left a core dump.
#[derive(Debug)]
pub struct CoreRecording {
    pub recording: Recording,
    /// The one crash report.
    pub report: Value,
    pub core: PathBuf,
    /// The program's (fresh) working directory.
    pub workdir: PathBuf,
}

/// A fresh, empty directory for one run.
fn fresh_workdir(harness: &Harness) -> PathBuf {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    let thread = std::thread::current();
    let test: String = thread
        .name()
        .unwrap_or("test")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let dir = absolute(
        &harness
            .root()
            .join("crashtrace-cores")
            .join(format!("{test}-{}-{n}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Output of a child process that had to finish within `limit`.
fn wait_output(mut child: Child, limit: Duration, what: &str) -> (ExitStatus, String, String) {
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let Some(status) = status else {
        // The child leads its own process group.
        // SAFETY: plain syscall on the group this module created.
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = child.wait();
        panic!("{what} did not finish within {limit:?}");
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    (status, stdout, stderr)
}

/// Runs `crashtrace record --json --output FILE [--debug-dir DIR] --
/// program args...` in a fresh working directory with RLIMIT_CORE raised
/// for crashtrace and so for the program, and finds the core file the
/// crash left.
pub fn record_with_core(
    harness: &Harness,
    program: &Path,
    args: &[&str],
    debug_dir: Option<&Path>,
) -> CoreRecording {
    let pattern = CorePattern::system();
    let workdir = fresh_workdir(harness);
    let output = record::output_path(&harness.root().join("crashtrace-reports"));

    let mut command = Command::new(crashtrace_bin());
    command.args(["record", "--json", "--output"]).arg(&output);
    if let Some(dir) = debug_dir {
        command.arg("--debug-dir").arg(dir);
    }
    command
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: raise_core_limit only makes async-signal-safe syscalls.
    unsafe {
        command.pre_exec(raise_core_limit);
    }
    let description = format!("{command:?}");
    let started = SystemTime::now();
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {description}: {e}"));
    let crashtrace_pid = child.id();
    let (status, stdout, stderr) = wait_output(child, record::timeout(), &description);

    let mut recording = Recording {
        status,
        crashes: Vec::new(),
        records: Vec::new(),
        stdout,
        stderr,
        output: output.clone(),
        output_missing: false,
        command: description,
        crashtrace_pid,
    };
    match std::fs::read_to_string(&output) {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let record: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!(
                        "report line is not JSON ({e}): {line}\n{}",
                        recording.context()
                    )
                });
                if record.get("type").and_then(Value::as_str) == Some("crash") {
                    recording.crashes.push(record.clone());
                }
                recording.records.push(record);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => recording.output_missing = true,
        Err(e) => panic!("reading {}: {e}", output.display()),
    }
    let report = recording.only_crash().clone();
    let pid = report
        .get("pid")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("the report has no pid\n{}", recording.context()));
    let core = find_core(&pattern, &workdir, pid, started).unwrap_or_else(|why| {
        panic!(
            "{why}\noutcome.core_dumped = {}\n{}",
            report
                .pointer("/outcome/core_dumped")
                .unwrap_or(&Value::Null),
            recording.context()
        )
    });
    CoreRecording {
        recording,
        report,
        core,
        workdir,
    }
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
const FRAME_KIND_PREFIX: &str = "crashtrace-tests-frame";

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
fn apply_frame_kinds(frames: &mut [GdbFrame], text: &str) {
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
fn operator_token_len(text: &str, i: usize) -> Option<usize> {
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

// ---------------------------------------------------------------------------
// Normalizing and comparing
// ---------------------------------------------------------------------------

/// glibc functions that gdb and a symbol table may name differently:
/// (any of these names, the one both sides become).
const GLIBC_ALIASES: &[(&[&str], &str)] = &[
    (&["raise", "__raise", "gsignal"], "raise"),
    (&["abort"], "abort"),
    (
        &[
            "__pthread_kill_implementation",
            "__pthread_kill_internal",
            "__pthread_kill",
            "pthread_kill",
        ],
        "pthread_kill",
    ),
    (
        &[
            "__libc_start_call_main",
            "__libc_start_main_impl",
            "__libc_start_main",
            "__libc_start_main_alias_2",
        ],
        "__libc_start_main",
    ),
];

/// How gdb shows a signal frame in a backtrace.
const GDB_SIGNAL_FRAME: &str = "<signal handler called>";
/// The name both sides give a signal frame: gdb's `<signal handler
/// called>` and the sigreturn trampoline crashtrace names.
pub const SIGNAL_FRAME: &str = "<signal frame>";

/// GCC clone suffixes (`f.constprop.0`, `f.part.1`, `f.cold`): the same
/// source function.
const CLONE_SUFFIXES: &[&str] = &[
    "constprop",
    "isra",
    "part",
    "cold",
    "lto_priv",
    "localalias",
];

/// The name both sides are compared by: without an argument list,
/// qualifiers, template arguments, ABI tags, `(anonymous namespace)::`,
/// GCC clone suffixes and glibc's `__GI_` prefix, with glibc aliases
/// merged; the sigreturn trampoline becomes [`SIGNAL_FRAME`]. Unknown
/// functions become `??`.
pub fn normalize_function(name: &str) -> String {
    let mut name = name.trim().to_owned();
    if name.is_empty() || name == "??" {
        return "??".to_owned();
    }
    name = strip_arguments(&name);
    for noise in ["(anonymous namespace)::", "{anonymous}::"] {
        name = name.replace(noise, "");
    }
    name = strip_brackets(&name);
    name = strip_clone_suffix(&name);
    while let Some(rest) = name.strip_prefix("__GI_") {
        name = rest.to_owned();
    }
    for (aliases, canonical) in GLIBC_ALIASES {
        if aliases.contains(&name.as_str()) {
            return (*canonical).to_owned();
        }
    }
    if name == crate::expect::SIGRETURN_TRAMPOLINE {
        return SIGNAL_FRAME.to_owned();
    }
    if name.is_empty() {
        "??".to_owned()
    } else {
        name
    }
}

/// Drops a trailing `(params)` and the qualifiers after it (` const`,
/// ` &`, ` noexcept`, ...), but not the `()` of `operator()`.
fn strip_arguments(name: &str) -> String {
    let mut name = name.trim_end();
    loop {
        let before = name;
        for qualifier in [" const", " volatile", " noexcept", " &&", " &"] {
            name = name.strip_suffix(qualifier).unwrap_or(name).trim_end();
        }
        if name == before {
            break;
        }
    }
    if !name.ends_with(')') {
        return name.to_owned();
    }
    let bytes = name.as_bytes();
    let mut depth = 0usize;
    for i in (0..bytes.len()).rev() {
        match bytes[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    let head = &name[..i];
                    let is_operator_call = head.ends_with("operator") && &name[i..] == "()";
                    if i == 0 || is_operator_call {
                        return name.to_owned();
                    }
                    return head.trim_end().to_owned();
                }
            }
            _ => {}
        }
    }
    name.to_owned()
}

/// Removes `<...>` template arguments and `[abi:...]` tags, keeping
/// operator symbols such as `operator<<` and `operator[]`.
fn strip_brackets(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < name.len() {
        if depth == 0
            && let Some(len) = operator_token_len(name, i)
        {
            out.push_str(&name[i..i + len]);
            i += len;
            continue;
        }
        let c = name[i..].chars().next().expect("in bounds");
        match c {
            '<' | '[' => depth += 1,
            '>' | ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        i += c.len_utf8();
    }
    out
}

fn strip_clone_suffix(name: &str) -> String {
    let last = name.rfind("::").map_or(0, |i| i + 2);
    if let Some(dot) = name[last..].find('.').map(|d| last + d) {
        let clone = name[dot + 1..].split('.').all(|part| {
            CLONE_SUFFIXES.contains(&part)
                || (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        });
        if clone {
            return name[..dot].to_owned();
        }
    }
    name.to_owned()
}

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

/// Records `program args...` with crashtrace (passing `debug_dir` as
/// `--debug-dir`), takes gdb's backtrace of the core of the same crash
/// (with `debug_dir` in its debug-file-directory), and asserts
/// [`assert_frames_agree`] down to `stop`. The run's working directory and
/// core are removed when the check passes.
pub fn check_agreement(
    harness: &Harness,
    program: &Path,
    args: &[&str],
    debug_dir: Option<&Path>,
    stop: &str,
) {
    let run = record_with_core(harness, program, args, debug_dir);
    let bt = gdb_backtrace(program, &run.core, debug_dir);
    let context = format!("core: {}\n{}", run.core.display(), run.recording.context());
    assert_frames_agree(&run.report, &bt, stop, &context);
    if run.core.starts_with(&run.workdir) {
        let _ = std::fs::remove_dir_all(&run.workdir);
    } else {
        let _ = std::fs::remove_file(&run.core);
        let _ = std::fs::remove_dir_all(&run.workdir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn normalizes_both_sides_alike() {
        let same = [
            ("store::Box<int>::get() const", "store::Box<int>::get"),
            ("fetch<int>", "(anonymous namespace)::fetch<int>"),
            (
                "(anonymous namespace)::fetch<int>(store::Box<int> const&, int)",
                "(anonymous namespace)::fetch<int>",
            ),
            ("store::detail::run(int*)", "store::detail::run"),
            ("__GI_raise", "raise"),
            ("raise", "__GI_raise"),
            ("abort", "__GI_abort"),
            ("__pthread_kill_implementation", "pthread_kill"),
            ("__pthread_kill_internal", "__pthread_kill_implementation"),
            ("__libc_start_call_main", "__libc_start_main"),
            ("__libc_start_main_impl", "__libc_start_call_main"),
            ("inner.constprop.0", "inner"),
            ("inner.part.0.cold", "inner"),
            ("getppid@plt", "getppid@plt"),
            (
                "std::__cxx11::basic_string<char>::size[abi:cxx11]() const",
                "std::__cxx11::basic_string::size",
            ),
            ("Foo::operator()() const", "Foo::operator()"),
            ("Foo::operator<<(int)", "Foo::operator<<"),
            (
                "Foo<int>::operator<(Foo<int> const&)",
                "Foo<int>::operator<",
            ),
        ];
        for (a, b) in same {
            assert_eq!(normalize_function(a), normalize_function(b), "{a} vs {b}");
        }
        assert_eq!(
            normalize_function("store::Box<int>::get() const"),
            "store::Box::get"
        );
        assert_eq!(normalize_function(""), "??");
        assert_ne!(normalize_function("raise"), normalize_function("abort"));
        assert_ne!(normalize_function("inner"), normalize_function("middle"));
    }

    #[test]
    fn matches_core_file_names() {
        let p = |pattern: &str, uses_pid: bool| CorePattern {
            pattern: pattern.to_owned(),
            uses_pid,
        };
        assert!(p("core", false).matches("core", 42));
        assert!(!p("core", false).matches("core.42", 42));
        assert!(p("core", true).matches("core.42", 42));
        assert!(!p("core", true).matches("core.43", 42));
        assert!(p("core.%e.%p", false).matches("core.worker-crash.42", 42));
        assert!(!p("core.%e.%p", false).matches("core.worker-crash.43", 42));
        assert!(p("/var/crash/core-%t-%%", true).matches("core-1700000000-%.42", 42));
        assert!(
            p("|/usr/lib/systemd/systemd-coredump %P", false)
                .check()
                .is_err()
        );
        assert!(p("", false).check().is_err());
        assert!(p("/tmp/%u/core", false).check().is_err());
        assert!(p("core.%p", false).check().is_ok());
        assert_eq!(p("core", false).directory(Path::new("/w")), Path::new("/w"));
        assert_eq!(
            p("cores/core", false).directory(Path::new("/w")),
            Path::new("/w/cores")
        );
        assert_eq!(
            p("/var/crash/core", false).directory(Path::new("/w")),
            Path::new("/var/crash")
        );
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
