//! Where the last words of native programs come from: a hook on `write(2)`.
//!
//! A C program that prints "giving up: config missing" and calls `abort()`
//! wrote its explanation before anything on a death path ran, so the
//! kernel side keeps the end of every watched process's latest stderr
//! writes (its *tail*) and sends them when the process dies. That needs a
//! hook on every `write(2)` of the host, and the two the kernel may offer
//! cost very differently:
//! - fentry on `ksys_write`: a call per write, nothing for other system
//!   calls. Needs function tracing (ftrace) in the kernel.
//! - the `syscalls:sys_enter_write` tracepoint: enabling any system-call
//!   tracepoint sends every system call of every process through the
//!   kernel's slower tracing entry path (about 50 ns each on the reference
//!   machine, where a `getppid` costs 260 ns), so it is only used on
//!   request.
//!
//! Go and Rust programs do not depend on this: their runtimes' own print
//! paths are probed in each executable.

use std::{ffi::CStr, fmt, path::Path};

use aya::{
    Btf, Ebpf,
    programs::{FEntry, TracePoint},
};

/// How the last words of native programs are kept (`--last-words`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LastWordsMode {
    /// Hook write(2) with fentry where the kernel has function hooks: one
    /// call per write, nothing for other system calls. Without them, keep
    /// none and say so at start.
    #[default]
    Auto,
    /// Hook the write system call's tracepoint: works on every kernel, but
    /// slows every system call on the host (tens of ns each) and each
    /// stderr write more, while crashtrace runs.
    Syscalls,
    /// No hook on write(2): only the Go and Rust runtimes' own print paths.
    Runtime,
}

impl fmt::Display for LastWordsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Syscalls => "syscalls",
            Self::Runtime => "runtime",
        })
    }
}

impl LastWordsMode {
    /// Entries of the kernel's stderr-tail map: few when only runtime
    /// print paths fill it (a healthy Go process rarely prints through
    /// its runtime).
    pub fn tail_entries(self) -> u32 {
        match self {
            Self::Runtime => 256,
            Self::Auto | Self::Syscalls => 2048,
        }
    }
}

/// Attaches the `write(2)` hook `mode` asks for. `Ok(true)` when one is in
/// place (the kernel side may then keep tails), `Ok(false)` when the mode
/// wants none, and an explanation for the user when it failed.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf, mode: LastWordsMode) -> Result<bool, String> {
    match mode {
        LastWordsMode::Runtime => Ok(false),
        LastWordsMode::Auto => attach_fentry(ebpf, btf).map(|()| true).map_err(|e| {
            format!(
                "this kernel offers no function hook on write(2) ({e}), so the last words of native programs are not kept (Go's and Rust's are); `--last-words syscalls` keeps them through the write system call's tracepoint, which slows every system call on the host by about 50 ns"
            )
        }),
        LastWordsMode::Syscalls => attach_tracepoint(ebpf).map(|()| true).map_err(|e| {
            format!("cannot hook the write system call's tracepoint, so the last words of native programs are not kept (Go's and Rust's are): {e}")
        }),
    }
}

fn attach_fentry(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let program: &mut FEntry = ebpf
        .program_mut("stderr_write")
        .ok_or("missing from the object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program
        .load("ksys_write", btf)
        .map_err(|e| super::verifier_summary(&e))?;
    program.attach().map_err(|e| format!("{e:#}"))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<(), String> {
    mount_tracefs()?;
    let program: &mut TracePoint = ebpf
        .program_mut("sys_enter_write")
        .ok_or("missing from the object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    program.load().map_err(|e| super::verifier_summary(&e))?;
    program
        .attach("syscalls", "sys_enter_write")
        .map_err(|e| format!("{e:#}"))?;
    Ok(())
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Classic tracepoints are found through tracefs, which many hosts leave
/// unmounted; it is mounted at its standard place when it is not.
fn mount_tracefs() -> Result<(), String> {
    let mounted = |p: &str| {
        Path::new(p)
            .read_dir()
            .is_ok_and(|mut entries| entries.next().is_some())
    };
    if mounted(TRACEFS) || mounted("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    const SOURCE: &CStr = c"tracefs";
    const TARGET: &CStr = c"/sys/kernel/tracing";
    // SAFETY: constant NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            SOURCE.as_ptr(),
            TARGET.as_ptr(),
            SOURCE.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
