//! Per-class token buckets in front of the event writer: a flood of one kind of event (every
//! request of a scanner rejected) cannot fill the disk or starve the others. What a bucket
//! refuses is counted and reported in a periodic `suppressed` record.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

/// Event classes, each with its own bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A request rejected for something the client did.
    Rejected,
    /// Something a stage noticed without rejecting.
    Finding,
    /// Blocks, unblocks, allowlist changes, feed applies (the audit trail).
    Change,
    /// Escalations not applied (dry run, allowlisted source).
    Escalation,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::Rejected,
        Class::Finding,
        Class::Change,
        Class::Escalation,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Class::Rejected => "request_rejected",
            Class::Finding => "request_flagged",
            Class::Change => "change",
            Class::Escalation => "escalation",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets (rate per second, burst) and suppressed counters, one per [`Class`].
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: [Mutex<Bucket>; 4],
    suppressed: [AtomicU64; 4],
}

impl Limiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        let now = Instant::now();
        let burst = f64::from(burst.max(1));
        let bucket = || {
            Mutex::new(Bucket {
                tokens: burst,
                last: now,
            })
        };
        Self {
            rate,
            burst,
            buckets: [bucket(), bucket(), bucket(), bucket()],
            suppressed: Default::default(),
        }
    }

    /// Takes a token for `class` at `now`; a refusal is counted as suppressed.
    pub fn allow(&self, class: Class, now: Instant) -> bool {
        let mut b = self.buckets[class.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now.max(b.last);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            drop(b);
            self.suppress(class);
            false
        }
    }

    /// Counts an event dropped for another reason (a full queue, a dead output).
    pub fn suppress(&self, class: Class) {
        self.suppressed[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call, reset to zero; `None` when nothing was suppressed.
    pub fn take_suppressed(&self) -> Option<Vec<(Class, u64)>> {
        let counts: Vec<(Class, u64)> = Class::ALL
            .iter()
            .map(|c| (*c, self.suppressed[c.index()].swap(0, Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        (!counts.is_empty()).then_some(counts)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_the_rest_counted() {
        let l = Limiter::new(10.0, 5);
        let t = Instant::now();
        let passed = (0..100).filter(|_| l.allow(Class::Rejected, t)).count();
        assert_eq!(passed, 5);
        // Another class has its own bucket.
        assert!(l.allow(Class::Change, t));
        assert_eq!(l.take_suppressed(), Some(vec![(Class::Rejected, 95)]));
        // Counters reset once reported.
        assert_eq!(l.take_suppressed(), None);
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let l = Limiter::new(10.0, 5);
        let t = Instant::now();
        while l.allow(Class::Finding, t) {}
        // 300 ms at 10/s: three more.
        let later = t + Duration::from_millis(300);
        let passed = (0..10).filter(|_| l.allow(Class::Finding, later)).count();
        assert_eq!(passed, 3);
    }
}
