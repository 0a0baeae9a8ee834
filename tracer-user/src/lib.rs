//! crashtrace: explains why processes die.
//!
//! The kernel side (tracer-ebpf) captures a dying thread's state at the
//! moment its fatal signal is generated; this crate loads those programs,
//! decodes their records, tracks each process until it is gone, unwinds and
//! symbolizes the captured stack, classifies the cause, and reports it.
pub mod loader;
pub mod events;
pub mod symbolize;
