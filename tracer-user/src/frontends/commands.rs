//! `record` and `watch`: setting up the probes for each mode and deciding
//! when a session ends.

use std::{
    collections::{BTreeSet, HashMap},
    io,
    os::fd::{FromRawFd, OwnedFd},
    process::ExitStatus,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    process::Command,
    signal::unix::SignalKind,
};

use crate::{
    engine::{self, Engine},
    frontends::{
        activity_top::{Top, TopFilter},
        cli::{CommonArgs, RecordArgs, WatchArgs},
        goroutine_top,
        session::{self, SinkOptions},
    },
    loader::{DEFAULT_SIGNALS, TraceOptions, Tracer, runtimes},
    support::{activity::Columns, leak::Policy, procfs, signals::parse_signal},
};

fn trace_options(
    common: &CommonArgs,
    traced_only: bool,
    comms: Vec<String>,
) -> anyhow::Result<TraceOptions> {
    let signals: BTreeSet<i32> = if common.signals.is_empty() {
        DEFAULT_SIGNALS.iter().copied().collect()
    } else {
        common
            .signals
            .iter()
            .map(|s| parse_signal(s).with_context(|| format!("unknown signal {s:?} in --signal")))
            .collect::<anyhow::Result<_>>()?
    };
    Ok(TraceOptions {
        signals,
        traced_only,
        include_handled: common.include_survived,
        comms,
        stack_bytes: common.stack_bytes,
        ring_bytes: common.ring_buffer_mib << 20,
        runtime_probes: !common.no_runtime_probes,
        activity: Columns::default(),
        last_words: common.last_words,
    })
}

fn sink_options(common: &CommonArgs) -> SinkOptions {
    SinkOptions {
        json: common.json,
        output: common.output.clone(),
        color: match common.color.as_str() {
            "always" => Some(true),
            "never" => Some(false),
            _ => None,
        },
        include_survived: common.include_survived,
        debug_dirs: common.debug_dirs.clone(),
    }
}

/// `crashtrace record`: returns the exit status crashtrace should exit with.
pub async fn record(args: RecordArgs) -> anyhow::Result<u8> {
    let opts = trace_options(&args.common, true, Vec::new())?;
    let tracer = Tracer::load(&opts)?;
    let mut session = session::start(tracer, sink_options(&args.common))?;
    if let Some(pid) = args.pid {
        follow_tree(session.tracer_mut(), pid)?;
        runtimes::probe_running(session.tracer_mut(), None);
        eprintln!("crashtrace: following pid {pid} and its descendants (Ctrl-C to stop)");
        let exited = wait_pid(pid)?;
        session
            .run(async {
                tokio::select! {
                    r = exited => r,
                    r = shutdown_signal() => r,
                }
            })
            .await??;
        return Ok(0);
    }

    // Our own pid is traced while the child is forked, so the kernel adds
    // the child (and everything it forks) before it can run a single
    // instruction of the command.
    if let Some(path) = resolve_command(&args.command[0]) {
        runtimes::probe_command(session.tracer_mut(), &path);
    }
    let me = std::process::id();
    session.tracer_mut().trace_process(me)?;
    let spawned = Command::new(&args.command[0])
        .args(&args.command[1..])
        .spawn();
    session.tracer_mut().untrace_process(me)?;
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let program = &args.command[0];
            return Ok(match e.kind() {
                io::ErrorKind::NotFound => {
                    eprintln!("crashtrace: {program}: command not found");
                    127
                }
                _ => {
                    eprintln!("crashtrace: cannot execute {program}: {e}");
                    126
                }
            });
        }
    };
    let child_pid = child.id().unwrap_or(0) as i32;
    // Ctrl-C reaches the child through the terminal; SIGTERM is passed on.
    // crashtrace itself stays to report what happens.
    let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
    let status: ExitStatus = session
        .run(async {
            loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {
                        // SAFETY: plain kill(2) on our own child.
                        unsafe { libc::kill(child_pid, libc::SIGTERM) };
                    }
                }
            }
        })
        .await?
        .context("waiting for the command")?;
    Ok(exit_code(status))
}

/// The file `Command` will execute for `program`: itself when it has a
/// slash, else the first match on `PATH`.
fn resolve_command(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(program.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        _ => 1,
    }
}

/// `crashtrace watch`.
pub async fn watch(args: WatchArgs) -> anyhow::Result<u8> {
    if !args.activity_signals.is_empty() {
        return watch_activity(args).await;
    }
    if args.goroutines {
        let opts = goroutine_top::Options {
            json: args.common.json,
            output: args.common.output.clone(),
            policy: Policy {
                window: args.leak_window,
                ..Policy::default()
            },
            pids: args.pids.clone(),
            comms: args.comms.clone(),
        };
        eprintln!(
            "crashtrace: sampling the goroutines of Go processes once a second; a leak is growth sustained over {} s (Ctrl-C to stop)",
            args.leak_window.as_secs()
        );
        return goroutine_top::run(opts, shutdown_signal()).await;
    }
    let traced_only = !args.pids.is_empty();
    let opts = trace_options(&args.common, traced_only, args.comms.clone())?;
    let tracer = Tracer::load(&opts)?;
    let mut session = session::start(tracer, sink_options(&args.common))?;
    for &pid in &args.pids {
        follow_tree(session.tracer_mut(), pid)?;
    }
    runtimes::probe_running(session.tracer_mut(), None);
    let scope = if traced_only {
        format!("pids {:?} and their descendants", args.pids)
    } else {
        "all processes".into()
    };
    let signals: Vec<String> = opts
        .signals
        .iter()
        .map(|&s| crate::support::signals::signal_name(s))
        .collect();
    eprintln!(
        "crashtrace: watching {scope} for {} (Ctrl-C to stop)",
        signals.join(",")
    );
    session.run(shutdown_signal()).await??;
    eprintln!(
        "crashtrace: stopped after {} report(s)",
        session.sink().reports
    );
    Ok(0)
}

/// `crashtrace watch --signals LIST`: rates instead of crash reports, so no
/// signal is captured, only counted.
async fn watch_activity(args: WatchArgs) -> anyhow::Result<u8> {
    let counted: Vec<i32> = args
        .activity_signals
        .iter()
        .map(|s| parse_signal(s).with_context(|| format!("unknown signal {s:?} in --signals")))
        .collect::<anyhow::Result<_>>()?;
    let traced_only = !args.pids.is_empty();
    let mut opts = trace_options(&args.common, traced_only, Vec::new())?;
    opts.signals.clear();
    opts.activity = Columns::new(&counted).context("invalid --signals")?;
    // No crash is reported in this mode: the executables that start need
    // no runtime probes.
    opts.runtime_probes = false;
    let mut tracer = Tracer::load(&opts)?;
    engine::warn_degraded(&tracer, "");
    for &pid in &args.pids {
        follow_tree(&mut tracer, pid)?;
    }
    let names: Vec<String> = counted
        .iter()
        .map(|&s| crate::support::signals::signal_name(s))
        .collect();
    eprintln!(
        "crashtrace: counting {} per process, once a second (Ctrl-C to stop)",
        names.join(",")
    );
    let filter = TopFilter {
        traced_only,
        comms: args.comms.clone(),
    };
    let top = Top::new(
        &mut tracer,
        filter,
        args.common.json,
        args.common.output.clone(),
    )?;
    let opts = engine::Options {
        include_survived: false,
        debug_dirs: Vec::new(),
    };
    Engine::new(tracer, top, opts)?
        .run(shutdown_signal())
        .await??;
    Ok(0)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Adds `pid` and its current descendants to the traced set; later
/// descendants are added by the kernel as they are forked.
fn follow_tree(tracer: &mut Tracer, pid: u32) -> anyhow::Result<()> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no process with pid {pid}");
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procfs::pids() {
        if let Ok(stat) = procfs::stat(p) {
            children.entry(stat.ppid).or_default().push(p);
        }
    }
    let mut stack = vec![pid];
    let mut seen = BTreeSet::new();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        tracer.trace_process(p)?;
        stack.extend(children.get(&p).into_iter().flatten());
    }
    Ok(())
}

/// A future that completes when `pid` exits (through a pidfd).
fn wait_pid(pid: u32) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("cannot watch pid {pid}"));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the descriptor for its whole life.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(io::Error::from)
        .context("registering the pidfd")?;
    Ok(async move {
        let _ready = fd.readable().await?;
        Ok(())
    })
}
