//! Per-service rate limits: a token bucket per unit (or executable), so a
//! crash-looping service cannot take the host's CPU or disk.
//!
//! The limit is checked before a report is built, because building one
//! (unwinding and symbolizing) is the expensive part. A crash past the
//! limit is counted as suppressed in the group of its key's most recently
//! recorded crash: within a burst of one program the crash site rarely
//! changes, and a count with the right group beats a full record nobody
//! can afford.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Most keys tracked; beyond this, the idlest half is forgotten (a
/// forgotten key starts again with a full bucket).
const MAX_KEYS: usize = 4096;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(burst: u32, per_minute: f64) -> Self {
        Self {
            burst: f64::from(burst),
            per_sec: per_minute / 60.0,
            buckets: HashMap::new(),
        }
    }

    /// Changes the limits (on reload), keeping each key's current level.
    pub fn set_limits(&mut self, burst: u32, per_minute: f64) {
        self.burst = f64::from(burst);
        self.per_sec = per_minute / 60.0;
        for b in self.buckets.values_mut() {
            b.tokens = b.tokens.min(self.burst);
        }
    }

    /// Takes a token for `key` at `now`; false when the key is over its
    /// limit.
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= MAX_KEYS {
            self.forget_idle(now);
        }
        let (burst, per_sec) = (self.burst, self.per_sec);
        let bucket = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * per_sec).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn forget_idle(&mut self, now: Instant) {
        let mut ages: Vec<Duration> = self
            .buckets
            .values()
            .map(|b| now.saturating_duration_since(b.updated))
            .collect();
        ages.sort_unstable();
        let cutoff = ages[ages.len() / 2];
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.updated) < cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let mut r = RateLimiter::new(3, 60.0);
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| r.allow("a", t0)).count();
        assert_eq!(allowed, 3);
        assert!(r.allow("b", t0), "keys are independent");
        assert!(!r.allow("a", t0 + Duration::from_millis(500)));
        assert!(r.allow("a", t0 + Duration::from_millis(1600)));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| r.allow("a", later)).count(), 3);
    }

    #[test]
    fn zero_rate_means_burst_only_and_keys_stay_bounded() {
        let mut r = RateLimiter::new(1, 0.0);
        let t0 = Instant::now();
        assert!(r.allow("a", t0));
        assert!(!r.allow("a", t0 + Duration::from_secs(1000)));
        for i in 0..(MAX_KEYS * 3) {
            r.allow(&i.to_string(), t0 + Duration::from_millis(i as u64));
        }
        assert!(r.buckets.len() <= MAX_KEYS);
    }
}
