//! crashtrace: explains why processes die.
//!
//! The kernel side (tracer-ebpf) notices a signal that will kill a process
//! and, as the dying thread exits, captures its registers, stack and the
//! files behind its addresses. The modules below follow the data path of
//! one crash, from the kernel's records to what a user sees:
//!
//! ```text
//! kernel ─▶ loader ─▶ events ─▶ tracker ─▶ unwind ─▶ symbolize ─▶ classify ─▶ report ─▶ front end
//!                     └──── engine ──────┘ └──────────────── pipeline ───────────────┘
//! ```
//!
//! - [`loader`] loads and attaches the BPF programs and talks to their
//!   maps, after reading what the running kernel offers.
//! - [`events`] decodes the kernel's records; [`tracker`] joins the
//!   records of one death.
//! - [`pipeline`] turns a finished death into a report through its
//!   stages: [`unwind`], [`symbolize`], [`classify`] and [`report`];
//!   the daemon keeps reports in the crash [`store`].
//! - [`engine`] is the one event loop every front end runs on.
//! - [`frontends`] are what users run: `record`, `watch`, `daemon`, the
//!   store queries, `symbolize`, `doctor`.
//! - [`support`] holds what several layers share: the leaf types
//!   ([`support::frame`], [`support::context`]), `/proc`, ELF images, Go's
//!   runtime tables, signals, caches.
//!
//! The layers, lowest first: events, support, loader, tracker, unwind,
//! symbolize, classify, report, store, pipeline, engine, frontends. A
//! module uses its own layer and the layers below it, never one above, and
//! the modules inside `support` and `frontends` import each other in no
//! circle; `cargo xtask lint` checks both (`xtask/src/layering.rs`).
// The BPF programs read user registers at x86_64's `pt_regs` offsets and
// the unwinder steps x86_64 frames.
#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "crashtrace supports x86_64 only: its BPF programs and unwinder assume x86_64 registers"
);

// The layers, lowest first; see the module docs.
pub mod events;

pub mod support;

pub mod loader;

pub mod tracker;

pub mod unwind;

pub mod symbolize;

pub mod classify;

pub mod report;

pub mod store;

pub mod pipeline;

pub mod engine;

pub mod frontends;
