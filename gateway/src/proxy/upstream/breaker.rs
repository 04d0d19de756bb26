//! The per-upstream circuit breaker: consecutive failed attempts open it, an open breaker
//! refuses requests for `open_for`, then a few probe requests decide whether it closes.
//!
//! Consecutive failures rather than a failure ratio: it needs no window or minimum request
//! count to be meaningful, reacts as fast at 1 request/s as at 10,000, and partial failure (one
//! bad endpoint among good ones) is already handled per endpoint by outlier ejection, whose
//! failures are interleaved with successes and so never trip the breaker.
//!
//! The closed state, where all healthy traffic is, costs one atomic load per request and no
//! lock; the mutex is only taken while the upstream is failing, and never across an await.

use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU32, Ordering},
};

use super::config::CircuitBreaker;

/// The breaker of one upstream.
pub(super) struct Breaker {
    threshold: u32,
    open_for_ms: u64,
    probes: u32,
    /// Mirrors `state == Closed` for the lock-free fast path.
    closed: AtomicBool,
    /// Failed attempts in a row while closed.
    failures: AtomicU32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Bumped on every transition, so that a probe admitted in an earlier half-open period
    /// cannot count in a later one.
    generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// Leave to send a request. A probe permit releases its slot if dropped without an outcome (the
/// client went away), so an abandoned probe cannot wedge the breaker half-open.
pub(super) struct Permit<'a> {
    breaker: &'a Breaker,
    /// `Some(generation)` for a half-open probe whose outcome has not been recorded yet.
    probe: Option<u64>,
    is_probe: bool,
}

impl Breaker {
    pub(super) fn new(config: &CircuitBreaker) -> Self {
        Self {
            threshold: config.consecutive_failures.max(1),
            open_for_ms: millis(config.open_for),
            probes: config.half_open_probes.max(1),
            closed: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            state: Mutex::new(State {
                phase: Phase::Closed,
                generation: 0,
            }),
        }
    }

    /// A permit, or `None` when the request must be refused.
    pub(super) fn admit(&self, now_ms: u64) -> Option<Permit<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Permit {
                breaker: self,
                probe: None,
                is_probe: false,
            });
        }
        let mut state = self.lock();
        let generation = state.generation;
        match state.phase {
            Phase::Closed => Some(Permit {
                breaker: self,
                probe: None,
                is_probe: false,
            }),
            Phase::Open { until_ms } if now_ms < until_ms => None,
            Phase::Open { .. } => {
                state.generation += 1;
                state.phase = Phase::HalfOpen {
                    in_flight: 1,
                    successes: 0,
                };
                tracing::info!("circuit breaker half-open: probing");
                Some(Permit {
                    breaker: self,
                    probe: Some(generation + 1),
                    is_probe: true,
                })
            }
            Phase::HalfOpen {
                in_flight,
                successes,
            } if in_flight + successes < self.probes => {
                state.phase = Phase::HalfOpen {
                    in_flight: in_flight + 1,
                    successes,
                };
                Some(Permit {
                    breaker: self,
                    probe: Some(generation),
                    is_probe: true,
                })
            }
            Phase::HalfOpen { .. } => None,
        }
    }

    /// Whether the breaker is closed (a retry is only worth it then).
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Poisoning only means another thread panicked between two plain assignments; the state is
    /// still a valid state, so keep using it rather than take the proxy down.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self, state: &mut State, now_ms: u64) {
        state.generation += 1;
        state.phase = Phase::Open {
            until_ms: now_ms.saturating_add(self.open_for_ms),
        };
        self.closed.store(false, Ordering::Release);
    }

    fn normal_outcome(&self, failed: bool, now_ms: u64) {
        if !failed {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let streak = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if streak < self.threshold {
            return;
        }
        let mut state = self.lock();
        // Requests admitted before the breaker opened keep reporting; only the first report
        // over the threshold while closed opens it.
        if state.phase == Phase::Closed {
            self.open(&mut state, now_ms);
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(failures = streak, "circuit breaker open");
        }
    }

    fn probe_outcome(&self, generation: u64, failed: Option<bool>, now_ms: u64) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let Phase::HalfOpen {
            in_flight,
            successes,
        } = state.phase
        else {
            return;
        };
        let in_flight = in_flight.saturating_sub(1);
        match failed {
            // Abandoned: free the slot for another probe.
            None => {
                state.phase = Phase::HalfOpen {
                    in_flight,
                    successes,
                }
            }
            Some(true) => {
                self.open(&mut state, now_ms);
                tracing::warn!("circuit breaker probe failed: open again");
            }
            Some(false) if successes + 1 >= self.probes => {
                state.generation += 1;
                state.phase = Phase::Closed;
                self.failures.store(0, Ordering::Relaxed);
                self.closed.store(true, Ordering::Release);
                tracing::info!("circuit breaker closed");
            }
            Some(false) => {
                state.phase = Phase::HalfOpen {
                    in_flight,
                    successes: successes + 1,
                }
            }
        }
    }
}

impl Permit<'_> {
    /// Whether this request is a half-open probe (it then gets one attempt, no retries, so that
    /// its outcome is a clean answer).
    pub(super) fn is_probe(&self) -> bool {
        self.is_probe
    }

    /// Records the outcome of one attempt. A probe's first outcome is its verdict; later calls
    /// on a probe permit are ignored.
    pub(super) fn record(&mut self, failed: bool, now_ms: u64) {
        if !self.is_probe {
            self.breaker.normal_outcome(failed, now_ms);
        } else if let Some(generation) = self.probe.take() {
            self.breaker.probe_outcome(generation, Some(failed), now_ms);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(generation) = self.probe.take() {
            self.breaker.probe_outcome(generation, None, 0);
        }
    }
}

pub(super) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker(failures: u32, probes: u32) -> Breaker {
        Breaker::new(&CircuitBreaker {
            consecutive_failures: failures,
            open_for: Duration::from_millis(100),
            half_open_probes: probes,
        })
    }

    fn attempt(b: &Breaker, failed: bool, now: u64) -> bool {
        match b.admit(now) {
            Some(mut p) => {
                p.record(failed, now);
                true
            }
            None => false,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 1);
        assert!(attempt(&b, true, 0) && attempt(&b, true, 0));
        assert!(attempt(&b, false, 0), "a success resets the streak");
        assert!(attempt(&b, true, 0) && attempt(&b, true, 0) && attempt(&b, true, 0));
        assert!(!b.is_closed());
        assert!(b.admit(50).is_none(), "open: refused");
    }

    #[test]
    fn one_probe_after_open_for_then_closes_or_reopens() {
        let b = breaker(1, 1);
        attempt(&b, true, 0);
        assert!(b.admit(99).is_none());
        let mut probe = b.admit(100).expect("half-open admits a probe");
        assert!(probe.is_probe());
        assert!(b.admit(100).is_none(), "only one probe at a time");
        probe.record(true, 100);
        drop(probe);
        assert!(b.admit(150).is_none(), "failed probe reopens for open_for");
        let mut probe = b.admit(200).expect("probe");
        probe.record(false, 200);
        drop(probe);
        assert!(b.is_closed());
        assert!(b.admit(200).is_some_and(|p| !p.is_probe()));
    }

    #[test]
    fn abandoned_probe_frees_its_slot() {
        let b = breaker(1, 1);
        attempt(&b, true, 0);
        let probe = b.admit(100).expect("probe");
        drop(probe);
        assert!(b.admit(100).is_some(), "the slot is free again");
    }

    #[test]
    fn all_probes_must_succeed() {
        let b = breaker(1, 2);
        attempt(&b, true, 0);
        let mut p1 = b.admit(100).expect("probe 1");
        let mut p2 = b.admit(100).expect("probe 2");
        assert!(b.admit(100).is_none());
        p1.record(false, 100);
        assert!(!b.is_closed(), "one of two probes is not enough");
        p2.record(false, 100);
        assert!(b.is_closed());
    }

    #[test]
    fn stale_probe_does_not_count_later() {
        let b = breaker(1, 1);
        attempt(&b, true, 0);
        let mut old = b.admit(100).expect("probe");
        // An unrelated failure report cannot reopen from half-open; the probe decides.
        old.record(true, 100);
        let mut fresh = b.admit(200).expect("new probe");
        drop(old);
        fresh.record(false, 200);
        assert!(b.is_closed());
    }
}
