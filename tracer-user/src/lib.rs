//! crashtrace: explains why processes die.
//!
//! The kernel side (tracer-ebpf) notices a signal that will kill a process
//! and, as the dying thread exits, captures its registers, stack and the
//! files behind its addresses. This crate loads those programs
//! ([`loader`]); the event [`engine`] decodes their records ([`events`]),
//! joins them per process ([`tracker`]), probes new executables
//! ([`runtimes`]) and hands each finished death to the [`pipeline`], which
//! unwinds the stack ([`unwind`]), symbolizes it ([`symbolize`]), names
//! the cause ([`classify`]) and assembles the [`report`].
//!
//! Front ends differ only in what they do with a finished report:
//! [`session`] prints it (`record`, `watch`), [`activity_top`] shows
//! signal rates instead (`watch --signals`), and the service ([`daemon`])
//! keeps it in a crash [`store`] that the [`queries`] read.
//!
//! Below them all: [`frame`] and [`context`] (types every stage shares),
//! [`procfs`] (the one `/proc` reader), ELF images, signals and caches.
// The BPF programs read user registers at x86_64's `pt_regs` offsets and
// the unwinder steps x86_64 frames.
#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "crashtrace supports x86_64 only: its BPF programs and unwinder assume x86_64 registers"
);

pub mod activity;
pub mod activity_top;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod context;
pub mod daemon;
pub mod doctor;
pub mod elfimage;
pub mod engine;
pub mod events;
pub mod frame;
pub mod golang;
pub mod kernel_support;
pub mod loader;
pub mod locate;
mod lru;
pub mod pipeline;
pub mod procfs;
pub mod queries;
pub mod report;
pub mod runtimes;
pub mod session;
pub mod signals;
pub mod store;
pub mod symbolize;
pub mod symbolize_cmd;
pub mod tracker;
pub mod unwind;
