//! What several layers share, kept below all of them so that none reaches
//! up or sideways into another for it: the leaf types of a crash
//! ([`frame`], [`context`]), readers of the live system ([`procfs`],
//! [`locate`]) and of binaries ([`elfimage`], [`golang`]), signal names
//! and activity ([`signals`], [`activity`]), the leak policy ([`leak`]),
//! and a cache (`lru`).
//!
//! Support modules import nothing above them (only the decoded records of
//! [`crate::events`]).

pub mod activity;
pub mod context;
pub mod elfimage;
pub mod frame;
pub mod golang;
pub mod leak;
pub mod locate;
pub(crate) mod lru;
pub mod procfs;
pub mod signals;
