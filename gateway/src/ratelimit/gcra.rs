//! GCRA (the generic cell rate algorithm, a token bucket stored as one timestamp per key) in a
//! sharded table whose memory is bounded by eviction that can only forget keys whose state equals
//! a fresh bucket.
//!
//! Per key we keep the theoretical arrival time `tat` (nanoseconds on the limiter's monotonic
//! clock). A request at `now` is admitted when `max(tat, now) + T - now <= burst * T` and then
//! moves `tat` to `max(tat, now) + T`. Within any window of length `L` a key is admitted at most
//! `burst + floor(L / T)` times; `T` is rounded up to whole nanoseconds, so rounding can only
//! admit fewer, never more. Each shard is one mutex: decisions are exact under concurrency.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::Mutex,
};

/// A limit: one request per `interval` nanoseconds, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    pub interval: u64,
    pub burst: u32,
}

impl Rate {
    /// How far ahead of `now` a key's `tat` may run: the whole bucket.
    fn capacity(&self) -> u64 {
        self.interval.saturating_mul(u64::from(self.burst))
    }
}

/// The answer for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Admitted; `remaining` more would be admitted right now, the bucket is full again after
    /// `reset` nanoseconds.
    Allowed { remaining: u64, reset: u64 },
    /// Refused without consuming anything; one request is admitted after `retry_after`.
    Denied { retry_after: u64, reset: u64 },
}

/// Keys are already keyed-SipHash outputs: hashing them again buys nothing.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Shard {
    tats: HashMap<u64, u64, BuildHasherDefault<Identity>>,
    /// No sweep before this time: the earliest `tat` left after the last sweep (an entry can
    /// only become evictable when its `tat` passes), so a shard full of active keys is not
    /// rescanned on every new key.
    next_sweep: u64,
    /// The bucket keys share while the shard is full of active keys.
    overflow: u64,
}

/// One limit's buckets for every key.
pub struct GcraTable {
    rate: Rate,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
}

/// Which bucket a decision used, for refunds.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    key: u64,
    overflow: bool,
}

const SHARDS: usize = 64;

impl GcraTable {
    /// `max_keys` bounds the keys held (split evenly over the shards, at least one per shard).
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        let shards = SHARDS.min(max_keys.max(1));
        Self {
            rate,
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        tats: HashMap::default(),
                        next_sweep: 0,
                        overflow: 0,
                    })
                })
                .collect(),
            shard_cap: (max_keys / shards).max(1),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // High bits pick the shard; the map inside uses the low ones.
        &self.shards[((key >> 40) as usize) % self.shards.len()]
    }

    /// Decides for `key` at `now`, consuming only when admitted.
    pub fn check(&self, key: u64, now: u64) -> (Check, Slot) {
        let rate = self.rate;
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tat) = shard.tats.get_mut(&key) {
            return (
                decide(rate, tat, now),
                Slot {
                    key,
                    overflow: false,
                },
            );
        }
        if shard.tats.len() >= self.shard_cap && now >= shard.next_sweep {
            // Only buckets that are full again (`tat <= now`) go: they equal a fresh one, so
            // forgetting them gives nobody anything.
            shard.tats.retain(|_, tat| *tat > now);
            shard.next_sweep = shard.tats.values().copied().min().unwrap_or(now);
        }
        if shard.tats.len() >= self.shard_cap {
            let check = decide(rate, &mut shard.overflow, now);
            return (
                check,
                Slot {
                    key,
                    overflow: true,
                },
            );
        }
        let mut tat = 0;
        let check = decide(rate, &mut tat, now);
        if matches!(check, Check::Allowed { .. }) {
            shard.tats.insert(key, tat);
        }
        (
            check,
            Slot {
                key,
                overflow: false,
            },
        )
    }

    /// Gives back what an admitted request consumed (another limit refused the request).
    /// Exact: `tat` is additive, and a bucket that was full before stays full.
    pub fn refund(&self, slot: Slot) {
        let mut shard = self
            .shard(slot.key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let interval = self.rate.interval;
        if slot.overflow {
            shard.overflow = shard.overflow.saturating_sub(interval);
        } else if let Some(tat) = shard.tats.get_mut(&slot.key) {
            *tat = tat.saturating_sub(interval);
        }
    }

    /// Keys held now.
    pub fn key_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.tats.len()))
            .sum()
    }
}

fn decide(rate: Rate, tat: &mut u64, now: u64) -> Check {
    let base = (*tat).max(now);
    let next = base.saturating_add(rate.interval);
    let ahead = next - now;
    let capacity = rate.capacity();
    if ahead > capacity {
        Check::Denied {
            retry_after: ahead - capacity,
            reset: base - now,
        }
    } else {
        *tat = next;
        Check::Allowed {
            remaining: (capacity - ahead) / rate.interval.max(1),
            reset: ahead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn allowed(c: Check) -> bool {
        matches!(c, Check::Allowed { .. })
    }

    #[test]
    fn burst_then_steady_rate() {
        // 10/s, burst 3.
        let t = GcraTable::new(
            Rate {
                interval: SEC / 10,
                burst: 3,
            },
            100,
        );
        let now = 5 * SEC;
        assert_eq!(
            t.check(1, now).0,
            Check::Allowed {
                remaining: 2,
                reset: SEC / 10
            }
        );
        assert!(allowed(t.check(1, now).0));
        assert!(allowed(t.check(1, now).0));
        let Check::Denied { retry_after, .. } = t.check(1, now).0 else {
            panic!("fourth at once must be refused");
        };
        assert_eq!(retry_after, SEC / 10);
        assert!(!allowed(t.check(1, now + SEC / 10 - 1).0));
        assert!(allowed(t.check(1, now + SEC / 10).0));
        // Another key has its own bucket.
        assert!(allowed(t.check(2, now).0));
    }

    #[test]
    fn refused_requests_consume_nothing() {
        let t = GcraTable::new(
            Rate {
                interval: SEC,
                burst: 2,
            },
            100,
        );
        let now = 10 * SEC;
        assert!(allowed(t.check(7, now).0));
        assert!(allowed(t.check(7, now).0));
        // A client hammering while refused...
        for i in 0..1000 {
            assert!(!allowed(t.check(7, now + i * 1000).0));
        }
        // ...is admitted exactly when the first token is back.
        assert!(allowed(t.check(7, now + SEC).0));
    }

    #[test]
    fn admitted_count_within_bound_under_concurrency() {
        // 8 threads x 500 requests over 1 simulated second at 100/s, burst 10: the bound is
        // burst + floor(L / T) = 10 + 100 = 110, and GCRA reaches it exactly.
        let t = std::sync::Arc::new(GcraTable::new(
            Rate {
                interval: SEC / 100,
                burst: 10,
            },
            100,
        ));
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for th in 0..8u64 {
                let t = &t;
                let admitted = &admitted;
                s.spawn(move || {
                    for i in 0..500u64 {
                        let now = 100 * SEC + (i * 8 + th) * (SEC / 4000);
                        if allowed(t.check(42, now).0) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let n = admitted.into_inner();
        assert!(n <= 110, "admitted {n}, bound 110");
        // Threads interleave out of time order, which can only make GCRA stricter; the burst
        // is always there.
        assert!(n >= 10, "admitted {n}: not even the burst");
    }

    #[test]
    fn refund_restores_the_token() {
        let t = GcraTable::new(
            Rate {
                interval: SEC,
                burst: 1,
            },
            100,
        );
        let (c, slot) = t.check(3, SEC);
        assert!(allowed(c));
        assert!(!allowed(t.check(3, SEC).0));
        t.refund(slot);
        assert!(allowed(t.check(3, SEC).0));
    }

    #[test]
    fn churn_never_resets_an_active_key() {
        // Room for 64 keys (one per shard); an abuser drains its bucket, then a million other
        // keys pass by: the abuser's bucket must still be empty.
        let t = GcraTable::new(
            Rate {
                interval: 60 * SEC,
                burst: 5,
            },
            64,
        );
        let abuser = 0xdead_beef_u64 << 20;
        let now = 1000 * SEC;
        for _ in 0..5 {
            assert!(allowed(t.check(abuser, now).0));
        }
        assert!(!allowed(t.check(abuser, now).0));
        for k in 0..200_000u64 {
            let key = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let _ = t.check(key, now + k * 1000);
            assert!(t.key_count() <= 64, "table grew past its cap");
        }
        assert!(
            !allowed(t.check(abuser, now + SEC).0),
            "churn handed the abuser a fresh bucket"
        );
    }

    #[test]
    fn idle_keys_make_room() {
        let t = GcraTable::new(
            Rate {
                interval: SEC,
                burst: 1,
            },
            1,
        );
        assert!(allowed(t.check(1, SEC).0));
        // Key 2 arrives while key 1 is active: the shared overflow bucket answers.
        let (_, slot) = t.check(2, SEC);
        assert!(slot.overflow);
        // Once key 1's bucket is full again it is evicted and key 2 gets its own.
        let (c, slot) = t.check(2, 3 * SEC);
        assert!(allowed(c) && !slot.overflow);
        assert_eq!(t.key_count(), 1);
    }
}
