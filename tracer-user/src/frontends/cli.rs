//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::loader::LastWordsMode;

const ABOUT: &str = "Explains why processes die: the signal, the symbolized stack of the crashing thread, and a root-cause class with its evidence, captured in the kernel before the process is gone.";

const AFTER_HELP: &str = "\
EXAMPLES:
    crashtrace record -- ./server --port 8080    run a command, report how it or its children die
    crashtrace record --pid 4242                  follow a running process tree until it exits
    crashtrace watch                              report every crash on this host until Ctrl-C
    crashtrace watch --json --output crashes.jsonl
    crashtrace watch --signals SIGPROF,SIGPIPE    signal rates per process, once a second
    crashtrace symbolize -e ./server 0x1139       function and source line of an address

EXIT STATUS:
    record exits with the command's status (128+N when it was killed by signal N,
    127 when the command was not found, 126 when it could not be executed).
    1   an error while tracing (the message says which)
    2   invalid command-line usage
    4   the environment cannot run crashtrace (not root, no BPF, kernel without BTF)

record and watch need root (CAP_BPF and CAP_PERFMON) and a kernel with BTF
(/sys/kernel/btf/vmlinux). The JSON report format is documented in
docs/report-schema.md.

Go and Rust executables get probes of their own as they start (the command
record runs, every executable a watched process starts, and those already
running): Go panics and fatal errors are caught before their exit(2), in
stripped binaries too, with the runtime's printed last words.";

#[derive(Debug, Parser)]
#[command(name = "crashtrace", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command (or follow a running process) and report how it and its
    /// descendants die. Probes are attached before the command starts.
    #[command(
        after_help = "The command's stdin, stdout and stderr are its own; reports go to stdout (or --output) after its output, diagnostics to stderr."
    )]
    Record(RecordArgs),
    /// Report every process on this host that dies of a watched signal,
    /// until SIGINT or SIGTERM.
    Watch(WatchArgs),
    /// Print the function and source location of addresses in an ELF file,
    /// like `addr2line -f -i -e FILE`. Needs no privileges.
    #[command(after_help = SYMBOLIZE_AFTER_HELP)]
    Symbolize(SymbolizeArgs),
    /// Run as a service: record every crash on this host in the crash
    /// store, with rate limits, sinks and Prometheus metrics.
    #[command(after_help = DAEMON_AFTER_HELP)]
    Daemon(DaemonArgs),
    /// List stored crashes, one per line, newest last.
    List(ListArgs),
    /// Show one stored crash (an id from `list`, or `latest`) as `record`
    /// reports it.
    Show(ShowArgs),
    /// Stored crashes grouped by fingerprint: the same crash site across
    /// runs, hosts and containers.
    Groups(GroupsArgs),
    /// Crashes by class and executable over the last hour, day and week;
    /// lost and suppressed events; the daemon's health.
    Stats(StatsArgs),
    /// Add JSON Lines reports (from `watch --json` or a daemon's sink) to
    /// a crash store.
    Import(ImportArgs),
    /// Load every probe as `watch` would and say what this kernel lets
    /// crashtrace capture: where dying threads are captured, which hooks
    /// exist, and what a report loses here.
    Doctor(DoctorArgs),
    /// Dump the goroutines of a running Go process from outside, grouped by
    /// stack: where each group waits and which `go` statement created it.
    /// Works on stripped binaries, without pprof; the process is not
    /// stopped or signalled.
    #[command(after_help = GOROUTINES_AFTER_HELP)]
    Goroutines(GoroutinesArgs),
}

const GOROUTINES_AFTER_HELP: &str = "\
Reads the Go runtime's goroutine list through /proc/PID/mem while the
process runs (root, or the right to ptrace it), so a goroutine may change
while it is read: such entries are counted, never guessed. Go 1.19 and
1.21 to 1.27 are read. Exit status: 0 dumped; 3 not a Go process, or a
release or runtime state this command cannot read (the message says which);
1 other errors (no such process, no permission). The --json schema is
documented in docs/goroutines.md.";

#[derive(Debug, Args)]
pub struct GoroutinesArgs {
    /// The process.
    pub pid: u32,

    /// Print one JSON object with every goroutine and its frames.
    #[arg(long)]
    pub json: bool,

    /// Show the runtime's own goroutines too (the garbage collector's
    /// workers, the finalizer); `runtime.Stack(all)` hides them as well.
    #[arg(long)]
    pub system: bool,

    /// Read at most this many goroutines (each costs two reads of the
    /// process's memory).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// The last-words mode to check (as `watch --last-words`).
    #[arg(long, value_name = "MODE", default_value_t = LastWordsMode::Auto)]
    pub last_words: LastWordsMode,
}

const DAEMON_AFTER_HELP: &str = "\
The configuration (TOML) is documented in docs/daemon.md; a missing default
file means all defaults. SIGHUP reloads it without detaching the probes;
SIGTERM or SIGINT drain the pending records and exit 0. Under systemd
(Type=notify) the daemon sends READY=1 once its probes are attached. Every
crash written to the store is acknowledged on stderr with a line
`crashtrace: stored crash id=N pid=P class=C fingerprint=F exe=E`.";

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Configuration file [default: /etc/crashtrace/config.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (overrides
    /// metrics.listen).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Where the query commands read.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The crash store [default: store.path of /etc/crashtrace/config.toml,
    /// else $STATE_DIRECTORY/crashes.db, else /var/lib/crashtrace/crashes.db].
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// What to list: crashes, or goroutine leaks (`leak`: only --limit and
    /// --json apply).
    #[arg(long = "type", value_name = "TYPE", default_value = "crash", value_parser = ["crash", "leak"])]
    pub kind: String,
    /// Only crashes at or after this time: 2026-11-22, 2026-11-22T10:00:00Z
    /// (UTC), or a span before now such as 30m, 2h, 7d.
    #[arg(long, short = 'S', value_name = "TIME")]
    pub since: Option<String>,
    /// Only crashes at or before this time (same forms as --since).
    #[arg(long, short = 'U', value_name = "TIME")]
    pub until: Option<String>,
    /// Only this class (e.g. null-pointer-dereference).
    #[arg(long, value_name = "CLASS")]
    pub class: Option<String>,
    /// Only this executable (full path).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<String>,
    /// Only this command name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only this systemd unit (e.g. nginx.service).
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// Only this group.
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// Only the newest N crashes.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<u64>,
    /// One JSON object per crash (JSON Lines) instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A crash id from `list` (a leak id with `--type leak`), or `latest`.
    #[arg(value_name = "ID|latest")]
    pub id: String,
    /// What the id names: a crash, or a goroutine leak.
    #[arg(long = "type", value_name = "TYPE", default_value = "crash", value_parser = ["crash", "leak"])]
    pub kind: String,
    /// The stored JSON report (the schema-1 report plus the daemon's
    /// context fields).
    #[arg(long)]
    pub json: bool,
    /// Colour the text: auto (on a terminal), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// One JSON object per group (JSON Lines).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// JSON Lines files; `-` reads stdin. Lines that are not crash reports
    /// (loss records) are skipped.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

const SYMBOLIZE_AFTER_HELP: &str = "\
Addresses are the file's own (ELF virtual) addresses, as in its symbol table
and in `addr2line -e`. With none on the command line they are read from
stdin, one per line, and each line is answered as soon as it is read, so the
command can be driven interactively. Blank lines are skipped; a line that is
not an address is answered as unknown (with --json, as {\"input\":..,
\"error\":..,\"frames\":[]}), with a message on stderr.

Text output, per address and for each frame, innermost inlined function
first: a FUNCTION line, then a FILE:LINE line (?? and ??:0 when unknown).
--json prints one object per address:
  {\"address\":\"0x1139\",\"frames\":[{\"function\":..,\"file\":..,\"line\":..,\"column\":..,\"inlined\":..}]}";

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Follow this already-running process (and its descendants) instead
    /// of starting a command.
    #[arg(long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    #[command(flatten)]
    pub common: CommonArgs,

    /// The command to run, after `--`.
    #[arg(last = true, value_name = "COMMAND", required_unless_present = "pid")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only these processes and their descendants (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only processes with this command name (repeatable; the kernel keeps
    /// the first 15 bytes).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Instead of crash reports, print once a second the rate of each of
    /// these signals (comma-separated, at most 16) per process, busiest first.
    #[arg(long = "signals", value_name = "LIST", value_delimiter = ',')]
    pub activity_signals: Vec<String>,

    /// Instead of crash reports, show once a second the Go processes by
    /// goroutine count and growth, and report a process whose goroutines
    /// keep growing over --leak-window (a `"type": "leak"` record with
    /// where they were created and where they block). Needs no BPF;
    /// processes it may not ptrace (another user's, without root) are not
    /// shown.
    #[arg(long, conflicts_with = "activity_signals")]
    pub goroutines: bool,

    /// How long goroutine growth must be sustained to be called a leak
    /// (`90s`, `5m`, `1h`).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub leak_window: std::time::Duration,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct SymbolizeArgs {
    /// The ELF file (executable, shared library or debug file).
    #[arg(long, short = 'e', value_name = "FILE")]
    pub exe: PathBuf,

    /// Extra directory to search for separate debug files (repeatable).
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dirs: Vec<PathBuf>,

    /// Print one JSON object per address instead of text.
    #[arg(long)]
    pub json: bool,

    /// Addresses in hex, `0x` optional; read from stdin when none are given.
    #[arg(value_name = "ADDR", value_parser = parse_address)]
    pub addrs: Vec<u64>,
}

/// Parses a duration: a number with `s`, `m` or `h` (seconds without).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m or h")),
    };
    if seconds == 0 {
        return Err("the duration must be longer than 0 s".into());
    }
    Ok(std::time::Duration::from_secs(seconds))
}

/// Parses a hexadecimal address, with or without a `0x` prefix.
pub fn parse_address(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a hexadecimal address"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| format!("{s} does not fit in 64 bits"))
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Write reports as JSON Lines (one object per line, "schema": 1).
    #[arg(long)]
    pub json: bool,

    /// Write reports to FILE instead of stdout (appending).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Signals to watch, comma-separated names or numbers
    /// [default: SIGSEGV,SIGBUS,SIGFPE,SIGILL,SIGABRT,SIGTRAP,SIGSYS,SIGKILL,SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGXCPU,SIGXFSZ]
    #[arg(long = "signal", value_name = "LIST", value_delimiter = ',')]
    pub signals: Vec<String>,

    /// Also report watched signals that a process handled and survived.
    #[arg(long)]
    pub include_survived: bool,

    /// Extra directory to search for separate debug files (repeatable).
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dirs: Vec<PathBuf>,

    /// Bytes of the crashing thread's stack to capture above its stack pointer.
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::STACK_SNAPSHOT_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=16384))]
    pub stack_bytes: u32,

    /// Size of the kernel-to-userspace ring buffer, in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 16,
          value_parser = parse_ring_mib)]
    pub ring_buffer_mib: u32,

    /// Colour the text report: auto (on a terminal), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,

    /// Do not probe language runtimes inside executables (Go's fatal paths,
    /// Rust's panic handler). Go panics and fatal errors, which end in
    /// exit(2) without a signal, and Rust panics are then not reported.
    #[arg(long)]
    pub no_runtime_probes: bool,

    /// How to keep what native programs wrote to stderr before dying (a C
    /// program's "giving up: config missing" before abort()), for the
    /// report's last_words and message. Go's and Rust's are kept in every
    /// mode. See the README's "Last words" for the measured costs.
    #[arg(long, value_name = "MODE", default_value_t = LastWordsMode::Auto)]
    pub last_words: LastWordsMode,
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("{s} is not a number"))?;
    if !(1..=1024).contains(&n) || !n.is_power_of_two() {
        return Err("must be a power of two between 1 and 1024".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn record_takes_a_command_after_dashes() {
        let cli =
            Cli::try_parse_from(["crashtrace", "record", "--json", "--", "ls", "-l"]).unwrap();
        match cli.command {
            Command::Record(r) => {
                assert_eq!(r.command, vec!["ls", "-l"]);
                assert!(r.common.json);
            }
            _ => panic!("expected record"),
        }
        assert!(Cli::try_parse_from(["crashtrace", "record"]).is_err());
        assert!(Cli::try_parse_from(["crashtrace", "watch", "--ring-buffer-mib", "3"]).is_err());
    }

    #[test]
    fn watch_takes_a_signal_activity_list() {
        let cli =
            Cli::try_parse_from(["crashtrace", "watch", "--signals", "SIGPROF,urg", "--json"])
                .unwrap();
        match cli.command {
            Command::Watch(w) => assert_eq!(w.activity_signals, vec!["SIGPROF", "urg"]),
            _ => panic!("expected watch"),
        }
    }

    #[test]
    fn addresses_are_hex_with_optional_prefix() {
        assert_eq!(parse_address("0x1139"), Ok(0x1139));
        assert_eq!(parse_address("0X1139"), Ok(0x1139));
        assert_eq!(parse_address("1139"), Ok(0x1139));
        assert_eq!(parse_address(" deadBEEF\n"), Ok(0xdead_beef));
        assert_eq!(parse_address("ffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_address("0x0000000000000000001"), Ok(1));
        for bad in [
            "",
            "0x",
            "xyz",
            "0x12g",
            "-1",
            "+1",
            "0x 1",
            "1_000",
            "10000000000000000",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn symbolize_takes_an_exe_and_addresses() {
        let cli = Cli::try_parse_from([
            "crashtrace",
            "symbolize",
            "--exe",
            "prog",
            "--debug-dir",
            "d1",
            "--debug-dir",
            "d2",
            "--json",
            "0x10",
            "20",
        ])
        .unwrap();
        match cli.command {
            Command::Symbolize(s) => {
                assert_eq!(s.exe, PathBuf::from("prog"));
                assert_eq!(s.debug_dirs, vec![PathBuf::from("d1"), PathBuf::from("d2")]);
                assert!(s.json);
                assert_eq!(s.addrs, vec![0x10, 0x20]);
            }
            _ => panic!("expected symbolize"),
        }
        let stdin = Cli::try_parse_from(["crashtrace", "symbolize", "-e", "prog"]).unwrap();
        assert!(matches!(stdin.command, Command::Symbolize(s) if s.addrs.is_empty()));
        assert!(Cli::try_parse_from(["crashtrace", "symbolize", "0x10"]).is_err());
        assert!(Cli::try_parse_from(["crashtrace", "symbolize", "-e", "p", "zz"]).is_err());
    }
}
