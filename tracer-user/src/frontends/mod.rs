//! The front ends: what a user runs. Each parses its command line
//! ([`cli`]) and either runs the event engine with its own sink
//! (`record` and `watch` print reports through [`session`], `watch
//! --signals` shows rates in [`activity_top`], the [`daemon`] stores
//! them) or works without BPF: the crash store [`queries`], the
//! [`symbolize_cmd`] symbolizer, [`doctor`]'s report on the kernel, and
//! the live dump of a Go process's [`goroutines`].
//!
//! Nothing below imports from here.

pub mod activity_top;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod doctor;
pub mod goroutine_top;
pub mod goroutines;
pub mod queries;
pub mod session;
pub mod symbolize_cmd;
