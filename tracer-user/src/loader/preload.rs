//! Verifying the large programs side by side.
//!
//! Start-up time is the kernel's verifier: the programs that capture a
//! dying thread (its stack, its mappings, their files' paths) take it
//! seconds each on recent kernels, one after the other. The verifier runs
//! in the loading thread, so loading those programs from one thread each
//! lets the host's CPUs share the work. Nothing is attached here, and a
//! program that fails to load is simply left unloaded: the attach path
//! that follows loads it again and says why it failed, as it always did.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, Program, UProbe},
};

/// What a program is loaded against.
#[derive(Clone, Copy)]
pub enum Target {
    /// A BTF tracepoint, by name.
    TracePoint(&'static str),
    /// An fentry hook, by kernel function.
    FEntry(&'static str),
    UProbe,
}

/// Loads each program of `wanted` (name and target) that `ebpf` holds, in a
/// thread of its own.
pub fn preload(ebpf: &mut Ebpf, btf: &Btf, wanted: &[(&str, Target)]) {
    std::thread::scope(|scope| {
        for (name, program) in ebpf.programs_mut() {
            let Some(&(_, target)) = wanted.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            scope.spawn(move || {
                let loaded = match (target, program) {
                    (Target::TracePoint(tp), Program::BtfTracePoint(p)) => {
                        BtfTracePoint::load(p, tp, btf)
                    }
                    (Target::FEntry(function), Program::FEntry(p)) => {
                        FEntry::load(p, function, btf)
                    }
                    (Target::UProbe, Program::UProbe(p)) => UProbe::load(p),
                    _ => return,
                };
                if let Err(e) = loaded {
                    log::debug!("preloading {name}: {e}");
                }
            });
        }
    });
}
