//! crashtrace: explains why processes die.
//!
//! The kernel side (tracer-ebpf) notices a signal that will kill a process
//! and, as the dying thread exits, captures its registers, stack and the
//! files behind its addresses. This crate loads those programs
//! ([`loader`]), decodes their records ([`events`]), joins them per process
//! ([`tracker`]), turns the stack into frames ([`unwind`], [`symbolize`]),
//! names the cause ([`classify`]) and writes the report ([`report`]).
pub mod activity;
pub mod activity_top;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod events;
pub mod loader;
pub mod locate;
pub mod report;
pub mod session;
pub mod signals;
pub mod symbolize;
pub mod symbolize_cmd;
pub mod tracker;
pub mod unwind;
