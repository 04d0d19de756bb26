//! The retry budget: retries may add at most `budget_ratio` to the request rate, measured over a
//! rolling window, plus `min_per_second` retries that are always allowed so that low traffic can
//! still retry. Without it, a failing upstream would see up to `1 + attempts` times its normal
//! load exactly when it can least take it.
//!
//! The window slides by weighting the previous fixed window by how much of it still overlaps
//! (the usual sliding-window-counter estimate). Lock-free: a deposit is one atomic add; a
//! rotation race at a window boundary can misplace a few counts, which a budget can afford.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::config::Retries;

/// Long enough to smooth bursts, short enough that an old quiet period buys nothing.
const WINDOW_MS: u64 = 10_000;

pub(super) struct RetryBudget {
    ratio: f64,
    /// `min_per_second` over one window.
    reserve: f64,
    /// Index of the current window (`now_ms / WINDOW_MS`).
    window: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    prev_requests: AtomicU64,
    prev_retries: AtomicU64,
}

impl RetryBudget {
    pub(super) fn new(config: &Retries) -> Self {
        Self {
            ratio: config.budget_ratio,
            reserve: f64::from(config.min_per_second) * (WINDOW_MS as f64 / 1000.0),
            window: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            prev_requests: AtomicU64::new(0),
            prev_retries: AtomicU64::new(0),
        }
    }

    /// Counts an original request.
    pub(super) fn deposit(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub(super) fn withdraw(&self, now_ms: u64) -> bool {
        self.roll(now_ms);
        // Weight of the previous window: the part of it still inside the sliding window.
        let prev_weight = 1.0 - (now_ms % WINDOW_MS) as f64 / WINDOW_MS as f64;
        let requests = self.prev_requests.load(Relaxed) as f64 * prev_weight
            + self.requests.load(Relaxed) as f64;
        let allowed = self.ratio * requests + self.reserve;
        let earlier = self.prev_retries.load(Relaxed) as f64 * prev_weight;
        // Compare-and-swap, so that concurrent retries cannot all squeeze through the last slot.
        let mut current = self.retries.load(Relaxed);
        loop {
            if earlier + current as f64 + 1.0 > allowed {
                return false;
            }
            match self
                .retries
                .compare_exchange_weak(current, current + 1, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn roll(&self, now_ms: u64) {
        let window = now_ms / WINDOW_MS;
        let seen = self.window.load(Relaxed);
        if window <= seen
            || self
                .window
                .compare_exchange(seen, window, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let requests = self.requests.swap(0, Relaxed);
        let retries = self.retries.swap(0, Relaxed);
        // After a gap of more than one window the old counts no longer overlap the window.
        let adjacent = window == seen + 1;
        self.prev_requests
            .store(if adjacent { requests } else { 0 }, Relaxed);
        self.prev_retries
            .store(if adjacent { retries } else { 0 }, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(&Retries {
            attempts: 2,
            budget_ratio: ratio,
            min_per_second,
        })
    }

    #[test]
    fn ratio_limits_retries() {
        let b = budget(0.2, 0);
        let mut granted = 0;
        for _ in 0..100 {
            b.deposit(5);
            granted += u32::from(b.withdraw(5));
        }
        assert_eq!(granted, 20);
    }

    #[test]
    fn reserve_allows_retries_without_traffic() {
        let b = budget(0.0, 1);
        let granted = (0..50).filter(|_| b.withdraw(1)).count();
        assert_eq!(granted, 10, "1/s over a 10 s window");
    }

    #[test]
    fn old_windows_fade_out() {
        let b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit(0);
        }
        assert!((0..5).all(|_| b.withdraw(0)));
        assert!(!b.withdraw(0), "spent");
        // Half of the previous window still overlaps: 5 requests and 2.5 retries count, so
        // 0.5 * 5 - 2.5 = 0 left.
        assert!(!b.withdraw(WINDOW_MS + WINDOW_MS / 2));
        // Two windows later nothing of it remains, nor any allowance.
        assert!(!b.withdraw(3 * WINDOW_MS));
        b.deposit(3 * WINDOW_MS);
        b.deposit(3 * WINDOW_MS);
        assert!(b.withdraw(3 * WINDOW_MS));
    }
}
