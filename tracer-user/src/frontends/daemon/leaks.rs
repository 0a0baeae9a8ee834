//! The daemon's goroutine-leak watch: `watch --goroutines`' sampler, run
//! once a second beside the crash engine, its leak records stored.
//!
//! A sample is one 8-byte read per Go process, so the cost does not depend
//! on the crash path; a leaking process is read in full once, with at most
//! [`DUMP_LIMIT`] goroutines, so that the event loop is not held for long
//! (100,000 goroutines take about 0.7 s; the kernel's ring buffer holds the
//! crashes of that time, and any it drops are counted as always).

use std::time::{Duration, Instant};

use crate::{
    frontends::{
        daemon::{config::Leaks, pipeline::StoreSink},
        goroutine_top::{self, Sampler},
    },
    store::{leaks::NewLeak, timefmt},
    support::{context::unit_of, leak::Policy},
};

/// Most goroutines read for one leak record.
pub const DUMP_LIMIT: usize = 100_000;

pub struct LeakWatch {
    sampler: Sampler,
    policy: Policy,
    started: Instant,
    host: String,
}

impl LeakWatch {
    /// `None` when the configuration turns leak detection off.
    pub fn new(config: &Leaks) -> Option<Self> {
        config.enabled.then(|| Self {
            sampler: Sampler::default(),
            policy: policy(config),
            started: Instant::now(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
        })
    }

    /// A new configuration (SIGHUP): the samples so far are kept.
    pub fn reconfigure(&mut self, config: &Leaks) {
        self.policy = policy(config);
    }

    /// One second's work: sample, publish the counts, store new leaks.
    pub fn tick(&mut self, sink: &mut StoreSink) {
        let at = self.started.elapsed().as_secs_f64();
        let opts = goroutine_top::Options {
            json: true,
            output: None,
            policy: self.policy,
            pids: Vec::new(),
            comms: Vec::new(),
        };
        let leaking = self.sampler.sample(&opts, at);
        let counts = self.sampler.counts().map(|(pid, exe, count)| {
            let unit = unit_of_pid(pid).unwrap_or_default();
            ((exe, unit), count)
        });
        sink.metrics_guard().set_goroutines(counts);
        for pid in leaking {
            let Some(leak) = self.sampler.leak(pid, &opts, DUMP_LIMIT) else {
                continue;
            };
            let unit = unit_of_pid(pid);
            let json = match serde_json::to_string(&leak) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("crashtrace: error: cannot encode the leak of {pid}: {e}");
                    continue;
                }
            };
            let new = NewLeak {
                time_us: timefmt::now_us(),
                host: self.host.clone(),
                pid,
                exe: leak.exe.clone(),
                comm: leak.comm.clone(),
                unit: unit.clone(),
                live: leak.live,
                per_minute: leak.per_minute,
                summary: goroutine_top::summary(&leak),
                json,
            };
            sink.store_leak(&new);
        }
    }
}

fn policy(config: &Leaks) -> Policy {
    Policy {
        window: config.window(),
        ..Policy::default()
    }
}

fn unit_of_pid(pid: u32) -> Option<String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    // cgroup v2: "0::/system.slice/api.service"
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    unit_of(path)
}

/// How often the daemon samples.
pub const PERIOD: Duration = Duration::from_secs(1);
