//! Loading and attaching the BPF programs, and talking to their maps.
//!
//! Everything that can fail for environmental reasons (privileges, a kernel
//! without BTF, a verifier rejection) fails here, before any process is
//! started, with an error that names the probe and the kernel's reason.

mod attach;
mod btf;
pub mod go_layout;
pub mod kernel;
pub mod kernel_support;
mod libc_probes;
pub mod offsets;
mod preload;
pub mod runtime_probes;
pub mod runtimes;
mod stderr_hooks;

pub use stderr_hooks::LastWordsMode;

use std::collections::BTreeSet;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
};
use tracer_common::{
    ACTIVITY_SLOTS, ActivitySlot, COMM_LEN, Config, STACK_SNAPSHOT_DEFAULT, config_flags, loss,
};

use crate::support::activity::{self, Activity, Columns, monotonic_second, signal_table};

/// The BPF object built from `tracer-ebpf` by `build.rs`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/crashtrace"));

/// Signals captured by default: those whose default action ends a process
/// and that a crash or a kill produces.
pub const DEFAULT_SIGNALS: &[i32] = &[
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGKILL,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGXCPU,
    libc::SIGXFSZ,
];

/// The tracepoints crashtrace cannot run without, by program name (also
/// the tracepoint name).
const PROGRAMS: &[&str] = &[
    "signal_generate",
    "sched_process_exit",
    "sched_process_fork",
];

/// Set to 1, an empty program is attached to `signal_generate` too: the
/// benchmark's yardstick for what `signal_generate` itself costs.
const EMPTY_PROGRAM_ENV: &str = "CRASHTRACE_EMPTY_SIGNAL_PROGRAM";

/// Where the dying thread's registers, stack, mappings and executable are
/// captured: the first place on its way out where its memory map still
/// exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePath {
    /// `sched_process_exit`, on kernels where it runs before `exit_mm()`.
    ExitTracepoint,
    /// fentry on `do_exit`, where the tracepoint comes too late.
    DoExitFentry,
    /// Neither: reports have the signal but no stack.
    None,
}

impl std::fmt::Display for CapturePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ExitTracepoint => "sched_process_exit (tp_btf)",
            Self::DoExitFentry => "do_exit (fentry)",
            Self::None => "none",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "permission denied loading BPF programs: run crashtrace as root (it needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)"
    )]
    NotPrivileged,
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetError),
    #[error("cannot read kernel BTF: {0}")]
    Btf(String),
    #[error("cannot load the BPF object: {0}")]
    Object(String),
    #[error("the kernel rejected probe {probe}: {reason}")]
    Probe { probe: &'static str, reason: String },
    #[error("cannot attach probe {probe}: {reason}")]
    Attach { probe: &'static str, reason: String },
    #[error("BPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("cannot update BPF map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

/// What to capture and from whom.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub signals: BTreeSet<i32>,
    /// Only processes added with [`Tracer::trace_process`] and their descendants.
    pub traced_only: bool,
    /// Capture signals the target handles too (`--include-survived`).
    pub include_handled: bool,
    /// Only these comms (empty: all).
    pub comms: Vec<String>,
    /// Bytes of stack above SP to copy.
    pub stack_bytes: u32,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Probe language runtimes (Go) in executables as they start.
    pub runtime_probes: bool,
    /// Signals counted per process (signal activity).
    pub activity: Columns,
    /// How native programs' last words are kept.
    pub last_words: LastWordsMode,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            signals: DEFAULT_SIGNALS.iter().copied().collect(),
            traced_only: false,
            include_handled: false,
            comms: Vec::new(),
            stack_bytes: STACK_SNAPSHOT_DEFAULT,
            ring_bytes: 16 << 20,
            runtime_probes: true,
            activity: Columns::default(),
            last_words: LastWordsMode::default(),
        }
    }
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Tracer {
    ebpf: Ebpf,
    go: runtime_probes::RuntimeProbes,
    /// The libc files `libc_abort` is attached to.
    libc: libc_probes::LibcProbes,
    /// The Go fatal-path program loaded (false: Go probing is off or failed).
    go_loaded: bool,
    /// Optional probes that could not be attached, one line each.
    pub degraded: Vec<String>,
    /// The signals counted per process, by column.
    pub activity_columns: Columns,
    /// What `CONFIG` holds.
    config: Config,
    /// What the running kernel offers.
    pub caps: kernel::KernelCaps,
    /// Where dying threads are captured on this kernel.
    pub capture: CapturePath,
    /// The `write(2)` hook in place for native last words: `fentry`,
    /// `tracepoint` or `none`.
    pub last_words_hook: &'static str,
    /// The OOM killer's record is attached.
    pub oom_record: bool,
}

/// A refusal is blamed on privileges only when the process really lacks
/// them: the verifier also answers EACCES (`Permission denied`) for a
/// program it rejects, and that is a kernel limit, not a missing `sudo`.
fn is_permission_error(text: &str) -> bool {
    (text.contains("Operation not permitted") || text.contains("Permission denied"))
        && !privileged()
}

/// Whether the effective capabilities allow loading tracing programs:
/// CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
fn privileged() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

impl Tracer {
    /// Loads the programs, configures them and attaches every probe.
    pub fn load(opts: &TraceOptions) -> Result<Self, LoadError> {
        bump_memlock_rlimit();
        let (offsets, caps) = offsets::resolve()?;
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf(e.to_string()))?;
        let ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries("STDERR_TAILS", opts.last_words.tail_entries())
            .load(BPF_OBJECT)
            .map_err(|e| {
                let text = format!("{e:#}");
                if is_permission_error(&text) || !privileged() {
                    LoadError::NotPrivileged
                } else {
                    LoadError::Object(text)
                }
            })?;
        let mut tracer = Self {
            ebpf,
            go: runtime_probes::RuntimeProbes::default(),
            libc: libc_probes::LibcProbes::default(),
            go_loaded: false,
            degraded: Vec::new(),
            activity_columns: opts.activity.clone(),
            config: Config::default(),
            caps,
            capture: CapturePath::None,
            last_words_hook: "none",
            oom_record: false,
        };
        tracer.configure(opts)?;
        let legacy = !tracer.caps.has_full_capture_helpers();
        tracer.preload(opts, legacy, &btf);
        let mut capture_refused = None;
        for &name in PROGRAMS {
            let has_mm = tracer.caps.exit_tracepoint_has_mm;
            let program = match (legacy, name) {
                (true, "signal_generate") => "signal_generate_legacy",
                // Before 6.16 the tracepoint has no memory map to capture:
                // `exit_capture` at do_exit does it, this only reports.
                (_, "sched_process_exit") if !has_mm => "sched_process_exit_bare",
                (true, "sched_process_exit") => "sched_process_exit_legacy",
                _ => name,
            };
            match tracer.attach_as(program, name, &btf) {
                // The fallback capture is the largest program; a verifier
                // that refuses it still gets deaths reported, without stacks.
                Err(LoadError::Probe { reason, .. }) if program == "sched_process_exit_legacy" => {
                    tracer.attach_as("sched_process_exit_bare", name, &btf)?;
                    capture_refused = Some(reason);
                }
                other => other?,
            }
        }
        if std::env::var_os(EMPTY_PROGRAM_ENV).is_some_and(|v| v == "1") {
            tracer.attach_as("signal_empty", "signal_generate", &btf)?;
        }
        if legacy {
            tracer.degraded.push(format!(
                "this kernel lacks {}: stacks are captured with the fallbacks for older kernels, which record the instruction pointer's file and the first {} executable mappings in address order, so a frame in a library mapped after those is not symbolized",
                tracer
                    .caps
                    .missing_helpers()
                    .iter()
                    .map(|h| format!("bpf_{h}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                tracer_common::MODULES_MAX - 1,
            ));
        }
        match capture_refused {
            None => tracer.attach_capture(&btf),
            Some(reason) => {
                let last = reason
                    .lines()
                    .rev()
                    .find(|l| l.contains("BPF program is too large") || l.contains("processed"))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                tracer.degraded.push(format!(
                    "this kernel's verifier refused the capture program for older kernels ({last}): crash reports have the signal, class and sender but no stack, executable or command line"
                ));
            }
        }
        tracer.attach_oom(&btf);
        tracer.attach_libc();
        tracer.attach_last_words(&btf, opts.last_words)?;
        if opts.runtime_probes {
            tracer.load_runtime_probes(&btf);
        }
        Ok(tracer)
    }

    fn configure(&mut self, opts: &TraceOptions) -> Result<(), LoadError> {
        let mut flags = 0;
        if opts.traced_only {
            flags |= config_flags::TRACED_ONLY;
        }
        if opts.include_handled {
            flags |= config_flags::INCLUDE_HANDLED;
        }
        if opts.runtime_probes {
            flags |= config_flags::REPORT_EXEC;
        }
        if !opts.comms.is_empty() {
            flags |= config_flags::COMM_FILTER;
            let map = self
                .ebpf
                .map_mut("COMMS")
                .ok_or(LoadError::MissingMap("COMMS"))?;
            let mut comms: HashMap<_, [u8; COMM_LEN], u8> =
                HashMap::try_from(map).map_err(|e| map_error("COMMS", e))?;
            for comm in &opts.comms {
                comms
                    .insert(comm_key(comm), 1, 0)
                    .map_err(|e| map_error("COMMS", e))?;
            }
        }
        let config = Config {
            signals: signal_table(&opts.signals, &opts.activity),
            flags,
            snapshot_bytes: opts.stack_bytes,
            self_tgid: std::process::id(),
            activity_second: monotonic_second(),
        };
        self.config = config;
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut("CONFIG")
            .ok_or(LoadError::MissingMap("CONFIG"))?;
        let mut array: Array<_, Config> =
            Array::try_from(map).map_err(|e| map_error("CONFIG", e))?;
        array
            .set(0, self.config, 0)
            .map_err(|e| map_error("CONFIG", e))
    }

    /// Starts following `tgid` (and, from now on, its descendants).
    pub fn trace_process(&mut self, tgid: u32) -> Result<(), LoadError> {
        self.traced_map()?
            .insert(tgid, 1, 0)
            .map_err(|e| map_error("TRACED", e))
    }

    /// Stops following `tgid` itself (descendants already added stay).
    pub fn untrace_process(&mut self, tgid: u32) -> Result<(), LoadError> {
        match self.traced_map()?.remove(&tgid) {
            Err(e) if !absent(&e) => Err(map_error("TRACED", e)),
            _ => Ok(()),
        }
    }

    /// Lets the kernel report the next exec of a file again: the process
    /// of its one report was gone before it could be probed (the kernel
    /// reports each file once).
    pub fn forget_exec(&mut self, ino: u64, dev: u64) {
        let id = tracer_common::FileId {
            ino,
            dev: user_dev_to_kernel(dev),
            _pad: 0,
        };
        if let Some(map) = self.ebpf.map_mut("KNOWN_EXES")
            && let Ok(mut known) = HashMap::<_, tracer_common::FileId, u8>::try_from(map)
        {
            let _ = known.remove(&id);
        }
    }

    /// Forgets a process marked as dying that survived, so that its later,
    /// ordinary exit is not taken for the end of a crash.
    pub fn forget_doomed(&mut self, tgid: u32) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut("DOOMED")
            .ok_or(LoadError::MissingMap("DOOMED"))?;
        let mut doomed: HashMap<_, u32, tracer_common::Doom> =
            HashMap::try_from(map).map_err(|e| map_error("DOOMED", e))?;
        match doomed.remove(&tgid) {
            Err(e) if !absent(&e) => Err(map_error("DOOMED", e)),
            _ => Ok(()),
        }
    }

    fn traced_map(&mut self) -> Result<HashMap<&mut MapData, u32, u8>, LoadError> {
        let map = self
            .ebpf
            .map_mut("TRACED")
            .ok_or(LoadError::MissingMap("TRACED"))?;
        HashMap::try_from(map).map_err(|e| map_error("TRACED", e))
    }

    /// Takes the event ring buffer out of the object (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|e| map_error("EVENTS", e))
    }

    /// The signal-activity slot that holds `tgid`'s counts, if one does.
    pub fn activity_slot(&self, tgid: u32) -> Option<ActivitySlot> {
        let array = Array::<_, ActivitySlot>::try_from(self.ebpf.map("ACTIVITY")?).ok()?;
        [tgid % ACTIVITY_SLOTS, tracer_common::alternate_slot(tgid)]
            .into_iter()
            .filter_map(|i| array.get(&i, 0).ok())
            .find(|s| s.tgid == tgid)
    }

    /// The second the kernel's signal-activity clock shows.
    pub fn activity_clock(&self) -> u32 {
        self.config.activity_second
    }

    /// Moves the kernel's signal-activity clock to the current second;
    /// call it several times a second.
    pub fn tick_activity_clock(&mut self) -> Result<(), LoadError> {
        let second = monotonic_second();
        if second == self.config.activity_second {
            return Ok(());
        }
        self.config.activity_second = second;
        self.write_config()
    }

    /// `tgid`'s recent signal activity, if it had any.
    pub fn activity_of(&self, tgid: u32) -> Option<Activity> {
        let slot = self.activity_slot(tgid)?;
        activity::from_slot(&slot, tgid, &self.activity_columns, monotonic_second())
    }

    /// Every signal-activity slot in use.
    pub fn activity_slots(&self) -> Vec<ActivitySlot> {
        let Some(array) = self
            .ebpf
            .map("ACTIVITY")
            .and_then(|m| Array::<_, ActivitySlot>::try_from(m).ok())
        else {
            return Vec::new();
        };
        (0..ACTIVITY_SLOTS)
            .filter_map(|i| array.get(&i, 0).ok())
            .filter(|s| s.tgid != 0)
            .collect()
    }

    /// Whether `tgid` is in the traced set (`record`, `watch --pid`).
    pub fn is_traced(&mut self, tgid: u32) -> bool {
        self.traced_map().is_ok_and(|m| m.get(&tgid, 0).is_ok())
    }

    /// Lost-event counters summed over CPUs, indexed by [`loss`].
    pub fn losses(&self) -> [u64; loss::COUNT as usize] {
        let mut out = [0; loss::COUNT as usize];
        self.sum_per_cpu("LOSSES", &mut out);
        out
    }

    fn sum_per_cpu(&self, name: &str, out: &mut [u64]) {
        let Some(map) = self.ebpf.map(name) else {
            return;
        };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else {
            return;
        };
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = array.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
    }
}

fn map_error(map: &'static str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Map {
        map,
        reason: e.to_string(),
    }
}

/// `st_dev` as the kernel's `s_dev` (major in the top 12 bits).
fn user_dev_to_kernel(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xfffff)
}

/// A comm as the kernel stores it: truncated to 15 bytes, NUL-padded.
pub fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// The last lines of a verifier log, where the reason is.
fn verifier_summary(e: &aya::programs::ProgramError) -> String {
    let text = format!("{e:#}");
    // A refusal before verification leaves an empty log.
    let text = text.trim_end().trim_end_matches(". Verifier output:");
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines.len().saturating_sub(12);
    lines[tail..].join("\n")
}

/// Older kernels charge BPF memory to RLIMIT_MEMLOCK; newer ones to the
/// memory cgroup, where raising the limit is unnecessary (and may be
/// refused without CAP_SYS_RESOURCE), so failure is ignored.
fn bump_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Whether a map deletion failed only because the key was not there (aya
/// reports the kernel's ENOENT from `bpf_map_delete_elem` as a syscall
/// error): the process already left the map, which is what was wanted.
fn absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
