//! crashtrace: explains why processes die.
//!
//! The kernel side (tracer-ebpf) notices a signal that will kill a process
//! and, as the dying thread exits, captures its registers, stack and the
//! files behind its addresses. This crate loads those programs
//! ([`loader`]), decodes their records ([`events`]), joins them per process
//! ([`tracker`]), turns the stack into frames ([`unwind`], [`symbolize`]),
//! names the cause ([`classify`]) and writes the report ([`report`]).
//! As a service ([`daemon`]) it keeps reports in a crash [`store`] that
//! the [`queries`] read.
pub mod activity;
pub mod activity_top;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod context;
pub mod daemon;
pub mod elfimage;
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
