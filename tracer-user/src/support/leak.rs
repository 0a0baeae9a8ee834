//! When a growing count is a leak.
//!
//! Goroutines (or threads) that pile up until memory or threads run out
//! are a slow death. A count that is merely high is not one (a service
//! that holds 50,000 idle connections), nor is a burst that drains (a
//! spike of requests). The policy here calls a count leaking when, over the
//! whole window:
//!
//! - it grew by at least [`Policy::min_growth`] and by at least
//!   [`Policy::min_ratio`] of where it started;
//! - the growth is sustained: each quarter of the window ends higher than
//!   the quarter before ended;
//! - and it has not fallen back: the latest sample is within 10% of the
//!   window's highest.
//!
//! One sample per process per second is kept, for one window: memory is
//! bounded by the window, whatever the process does.

use std::{collections::VecDeque, time::Duration};

/// The leak policy's thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// How long growth must be sustained.
    pub window: Duration,
    /// Least growth over the window, in goroutines (or threads).
    pub min_growth: u64,
    /// Least growth relative to the window's first sample (0.5: +50%).
    pub min_ratio: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            min_growth: 1000,
            min_ratio: 0.5,
        }
    }
}

/// A leak, as seen over one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub first: u64,
    pub last: u64,
    /// Growth per minute over the window.
    pub per_minute: f64,
}

/// The samples of one process's count.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// (seconds since an arbitrary start, count), oldest first.
    samples: VecDeque<(f64, u64)>,
}

impl Series {
    /// Adds a sample taken at `at` seconds, dropping those older than the
    /// window (keeping the one just before it, so the window is spanned).
    pub fn push(&mut self, at: f64, count: u64, policy: &Policy) {
        self.samples.push_back((at, count));
        let horizon = at - policy.window.as_secs_f64();
        while self.samples.len() > 2 && self.samples[1].0 <= horizon {
            self.samples.pop_front();
        }
    }

    pub fn latest(&self) -> Option<u64> {
        self.samples.back().map(|s| s.1)
    }

    /// Growth per minute between the oldest and the latest sample.
    pub fn per_minute(&self) -> Option<f64> {
        let (&(t0, c0), &(t1, c1)) = (self.samples.front()?, self.samples.back()?);
        (t1 > t0).then(|| (c1 as f64 - c0 as f64) * 60.0 / (t1 - t0))
    }

    /// The leak verdict, once the samples span a whole window.
    pub fn verdict(&self, policy: &Policy) -> Option<Verdict> {
        let (&(t0, first), &(t1, last)) = (self.samples.front()?, self.samples.back()?);
        let window = policy.window.as_secs_f64();
        if t1 - t0 < window * 0.95 {
            return None;
        }
        let growth = last.checked_sub(first)?;
        if growth < policy.min_growth || (growth as f64) < first as f64 * policy.min_ratio {
            return None;
        }
        let highest = self.samples.iter().map(|s| s.1).max()?;
        if (last as f64) < highest as f64 * 0.9 {
            return None;
        }
        // Each quarter ends higher than the previous one.
        let mut previous = first;
        for q in 1..=4 {
            let end = t0 + window * f64::from(q) / 4.0;
            let at_end = self
                .samples
                .iter()
                .take_while(|s| s.0 <= end + 0.5)
                .last()
                .map(|s| s.1)?;
            if at_end <= previous {
                return None;
            }
            previous = at_end;
        }
        Some(Verdict {
            first,
            last,
            per_minute: growth as f64 * 60.0 / (t1 - t0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            window: Duration::from_secs(60),
            ..Default::default()
        }
    }

    fn series(f: impl Fn(u64) -> u64, seconds: u64) -> Series {
        let mut s = Series::default();
        for t in 0..=seconds {
            s.push(t as f64, f(t), &policy());
        }
        s
    }

    #[test]
    fn steady_growth_is_a_leak() {
        let s = series(|t| 100 + 50 * t, 120);
        let v = s.verdict(&policy()).expect("a leak");
        assert_eq!((v.first, v.last), (100 + 50 * 60, 100 + 50 * 120));
        assert!((v.per_minute - 3000.0).abs() < 1.0, "{v:?}");
    }

    #[test]
    fn a_high_steady_count_is_not() {
        assert_eq!(series(|_| 50_000, 120).verdict(&policy()), None);
        // Noise around a high count.
        assert_eq!(
            series(|t| 50_000 + (t * 7919) % 300, 120).verdict(&policy()),
            None
        );
    }

    #[test]
    fn a_burst_that_drains_is_not() {
        let burst = |t: u64| if (20..40).contains(&t) { 20_000 } else { 100 };
        assert_eq!(series(burst, 70).verdict(&policy()), None);
        // Rising for most of the window, then drained.
        let drained = |t: u64| if t < 55 { 100 + 200 * t } else { 200 };
        assert_eq!(series(drained, 60).verdict(&policy()), None);
    }

    #[test]
    fn growth_too_small_or_too_short_is_not() {
        assert_eq!(series(|t| 100 + 5 * t, 120).verdict(&policy()), None);
        assert_eq!(
            series(|t| 1_000_000 + 100 * t, 120).verdict(&policy()),
            None
        );
        assert_eq!(series(|t| 100 + 500 * t, 30).verdict(&policy()), None);
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let s = series(|t| t, 100_000);
        assert!(s.samples.len() <= 62, "{}", s.samples.len());
    }
}
