//! Attaching the programs: the capture path this kernel allows, the OOM
//! record, the libc and runtime uprobes and the last-words hook. Where the
//! kernel cannot give one of the optional ones, reports lose that part and
//! a start-up warning says so. Also probing each new executable's runtime.

use aya::{
    Btf,
    maps::HashMap,
    programs::{BtfTracePoint, FEntry, UProbe},
};
use tracer_common::config_flags;

use super::{
    CapturePath, LastWordsMode, LoadError, Tracer, is_permission_error, libc_probes,
    runtime_probes, stderr_hooks, user_dev_to_kernel, verifier_summary,
};

impl Tracer {
    fn attach(&mut self, name: &'static str, btf: &Btf) -> Result<(), LoadError> {
        self.attach_as(name, name, btf)
    }

    /// Loads program `name` and attaches it to BTF tracepoint `tracepoint`.
    pub(super) fn attach_as(
        &mut self,
        name: &'static str,
        tracepoint: &str,
        btf: &Btf,
    ) -> Result<(), LoadError> {
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(LoadError::Probe {
                probe: name,
                reason: "missing from the object".into(),
            })?
            .try_into()
            .map_err(|e| LoadError::Probe {
                probe: name,
                reason: format!("{e}"),
            })?;
        let loaded = program.fd().is_ok();
        (if loaded {
            Ok(())
        } else {
            program.load(tracepoint, btf)
        })
        .map_err(|e| {
            let reason = format!("{e:#}");
            if is_permission_error(&reason) {
                LoadError::NotPrivileged
            } else {
                LoadError::Probe {
                    probe: name,
                    reason: verifier_summary(&e),
                }
            }
        })?;
        program.attach().map_err(|e| LoadError::Attach {
            probe: name,
            reason: format!("{e:#}"),
        })?;
        Ok(())
    }

    /// The helpers the uprobes (libc, Go, Rust) use that this kernel lacks:
    /// they tell their probe sites apart by attach cookie and capture with
    /// the full-featured code. `None` when all are there.
    /// Loads the programs whose verification takes longest in parallel
    /// (see `preload`): the capture program this kernel will use, the
    /// signal program, and the uprobes where they will be used.
    pub(super) fn preload(&mut self, opts: &super::TraceOptions, legacy: bool, btf: &Btf) {
        use super::preload::{Target, preload};
        let mut wanted = vec![(
            if legacy {
                "signal_generate_legacy"
            } else {
                "signal_generate"
            },
            Target::TracePoint("signal_generate"),
        )];
        wanted.push(match (self.caps.exit_tracepoint_has_mm, legacy) {
            (true, false) => (
                "sched_process_exit",
                Target::TracePoint("sched_process_exit"),
            ),
            (true, true) => (
                "sched_process_exit_legacy",
                Target::TracePoint("sched_process_exit"),
            ),
            (false, false) => ("exit_capture", Target::FEntry("do_exit")),
            (false, true) => ("exit_capture_legacy", Target::FEntry("do_exit")),
        });
        if self.uprobe_helpers_missing().is_none() {
            wanted.push(("libc_abort", Target::UProbe));
            if opts.runtime_probes {
                wanted.push(("runtime_fatal", Target::UProbe));
            }
        }
        preload(&mut self.ebpf, btf, &wanted);
    }

    fn uprobe_helpers_missing(&self) -> Option<String> {
        let missing: Vec<String> = ["get_attach_cookie", "task_pt_regs", "find_vma", "loop"]
            .iter()
            .filter(|h| !self.caps.has_helper(h))
            .map(|h| format!("bpf_{h}"))
            .collect();
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    /// Chooses where dying threads are captured (see [`CapturePath`]).
    pub(super) fn attach_capture(&mut self, btf: &Btf) {
        if self.caps.exit_tracepoint_has_mm {
            self.capture = CapturePath::ExitTracepoint;
            return;
        }
        let program = if self.caps.has_full_capture_helpers() {
            "exit_capture"
        } else {
            "exit_capture_legacy"
        };
        match self.attach_fentry(program, "do_exit", btf) {
            Ok(()) => self.capture = CapturePath::DoExitFentry,
            Err(e) => self.degraded.push(format!(
                "this kernel runs sched_process_exit after an exiting thread's memory is released (before Linux 6.16), and the function hook on do_exit that replaces it failed ({e}): crash reports have the signal, class and sender but no stack, executable or command line"
            )),
        }
    }

    /// The OOM killer's record is evidence: without it an OOM kill is
    /// still reported, as a kill by the kernel.
    pub(super) fn attach_oom(&mut self, btf: &Btf) {
        if !self.caps.mark_victim {
            self.degraded.push(
                "this kernel has no mark_victim tracepoint: OOM kills are reported as kills by the kernel, without the OOM killer's figures".into(),
            );
            return;
        }
        let program = if self.caps.mark_victim_task {
            "mark_victim"
        } else {
            "mark_victim_pid"
        };
        match self.attach_as(program, "mark_victim", btf) {
            Ok(()) => self.oom_record = true,
            Err(e) => self.degraded.push(format!(
                "{e}: OOM kills are reported as kills by the kernel, without the OOM killer's figures"
            )),
        }
    }

    fn attach_fentry(
        &mut self,
        name: &'static str,
        function: &str,
        btf: &Btf,
    ) -> Result<(), LoadError> {
        let program: &mut FEntry = self
            .ebpf
            .program_mut(name)
            .ok_or(LoadError::Probe {
                probe: name,
                reason: "missing from the object".into(),
            })?
            .try_into()
            .map_err(|e| LoadError::Probe {
                probe: name,
                reason: format!("{e}"),
            })?;
        let loaded = program.fd().is_ok();
        (if loaded {
            Ok(())
        } else {
            program.load(function, btf)
        })
        .map_err(|e| LoadError::Probe {
            probe: name,
            reason: verifier_summary(&e),
        })?;
        program.attach().map_err(|e| LoadError::Attach {
            probe: name,
            reason: format!("{e:#}"),
        })?;
        Ok(())
    }

    /// The libc uprobe is evidence, not capture: a failure degrades
    /// reports and is said, but does not stop crashtrace.
    pub(super) fn attach_libc(&mut self) {
        if let Some(missing) = self.uprobe_helpers_missing() {
            self.degraded.push(format!(
                "the libc abort() probe needs {missing}, which this kernel lacks: aborts are reported without glibc's message (double free, assertion, stack smashing) or the uncaught C++ exception"
            ));
            return;
        }
        let Some(program) = self.ebpf.program_mut("libc_abort") else {
            self.degraded
                .push("the libc probe is missing from the BPF object".into());
            return;
        };
        let loaded: Result<&mut UProbe, String> = program
            .try_into()
            .map_err(|e| format!("{e}"))
            .and_then(|p: &mut UProbe| {
                if p.fd().is_ok() {
                    return Ok(p);
                }
                p.load().map(|()| p).map_err(|e| verifier_summary(&e))
            });
        match loaded {
            Ok(abort) => self
                .degraded
                .extend(libc_probes::attach(&mut self.libc, abort)),
            Err(e) => self
                .degraded
                .push(format!("cannot load the libc probe: {e}")),
        }
    }

    /// Probes the libcs process `pid` maps or has under its root (a
    /// container's) that are not probed yet. Returns one line per failure.
    pub fn probe_libcs_of(&mut self, pid: u32) -> Vec<String> {
        // Not loaded on this kernel: said once at start.
        if self.uprobe_helpers_missing().is_some() {
            return Vec::new();
        }
        let Some(Ok(abort)) = self
            .ebpf
            .program_mut("libc_abort")
            .map(<&mut UProbe>::try_from)
        else {
            return Vec::new();
        };
        libc_probes::libcs_of(pid)
            .iter()
            .filter_map(|path| self.libc.probe(abort, path).err())
            .collect()
    }

    /// The `write(2)` hook that keeps native programs' last words.
    /// Evidence, so a failure degrades reports instead of stopping
    /// crashtrace.
    pub(super) fn attach_last_words(
        &mut self,
        btf: &Btf,
        mode: LastWordsMode,
    ) -> Result<(), LoadError> {
        match stderr_hooks::attach(&mut self.ebpf, btf, mode) {
            Ok(true) => {
                self.last_words_hook = match mode {
                    LastWordsMode::Syscalls => "tracepoint",
                    _ => "fentry",
                };
                self.config.flags |= config_flags::STDERR_TAILS;
                self.write_config()?;
            }
            Ok(false) => {
                self.config.flags |= config_flags::RUNTIME_TAILS;
                self.write_config()?;
            }
            Err(e) => {
                self.degraded.push(e);
                self.config.flags |= config_flags::RUNTIME_TAILS;
                self.write_config()?;
            }
        }
        Ok(())
    }

    /// The exec tracepoint and the Go fatal-path program, attached to
    /// executables later by [`Tracer::probe_executable`].
    pub(super) fn load_runtime_probes(&mut self, btf: &Btf) {
        if let Some(missing) = self.uprobe_helpers_missing() {
            self.degraded.push(format!(
                "the Go and Rust runtime probes need {missing}, which this kernel lacks: Go panics and fatal errors (which end in exit(2), not a signal) are not reported, and Rust panics only when they abort"
            ));
            return;
        }
        if let Err(e) = self.attach("sched_process_exec", btf) {
            self.degraded.push(format!(
                "{e} (Go programs started from now on are not probed)"
            ));
        }
        let loaded = self
            .ebpf
            .program_mut("runtime_fatal")
            .ok_or_else(|| "missing from the object".to_string())
            .and_then(|p| {
                let p: &mut UProbe = p.try_into().map_err(|e| format!("{e}"))?;
                if p.fd().is_ok() {
                    return Ok(());
                }
                p.load().map_err(|e| verifier_summary(&e))
            });
        match loaded {
            Ok(()) => self.go_loaded = true,
            Err(e) => self
                .degraded
                .push(format!("cannot load the Go runtime probe: {e}")),
        }
    }

    /// Probes the Go runtime in `path` if it is a Go executable not probed
    /// yet; returns what was found.
    pub fn probe_executable(
        &mut self,
        path: &std::path::Path,
    ) -> Result<Option<runtime_probes::RuntimeExecutable>, runtime_probes::RuntimeProbeError> {
        if !self.go_loaded {
            return Ok(None);
        }
        let Some(program) = self.ebpf.program_mut("runtime_fatal") else {
            return Ok(None);
        };
        let Ok(program) = <&mut UProbe>::try_from(program) else {
            return Ok(None);
        };
        let found = self.go.probe(program, path)?;
        if let Some(go) = found.as_ref().filter(|f| f.runtime == "go") {
            let id = tracer_common::FileId {
                ino: go.ino,
                dev: user_dev_to_kernel(go.dev),
                _pad: 0,
            };
            let map = self.ebpf.map_mut("GO_EXES");
            let added = map
                .map(HashMap::<_, tracer_common::FileId, u8>::try_from)
                .map(|m| m.and_then(|mut m| m.insert(id, 1, 0)));
            if !matches!(added, Some(Ok(()))) {
                self.degraded.push(format!(
                    "cannot record {} as a Go executable: cgo aborts in it lose their C frames",
                    path.display()
                ));
            }
        }
        Ok(found)
    }

    /// Number of Go executables probed so far.
    pub fn go_executables_probed(&self) -> usize {
        self.go.probed()
    }
}
