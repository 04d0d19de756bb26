//! Calendar quotas (per UTC day or month): a counter per key and period, bounded in memory like
//! the GCRA table (only counters of a past period, which equal a fresh one, are evicted), and
//! snapshotted for the state file so counts survive restarts.

use std::{collections::HashMap, sync::Mutex};

use serde::{Deserialize, Serialize};

/// Calendar-aligned quota periods, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

const DAY: u64 = 86_400;

impl Period {
    /// The period `unix_secs` falls in: days or months since 1970-01.
    pub fn id(self, unix_secs: u64) -> u64 {
        let days = unix_secs / DAY;
        match self {
            Period::Day => days,
            Period::Month => {
                let (y, m, _) = civil_from_days(days);
                (y - 1970) * 12 + (m - 1)
            }
        }
    }

    /// Start of period `id` in unix seconds.
    pub fn start(self, id: u64) -> u64 {
        match self {
            Period::Day => id * DAY,
            Period::Month => days_from_civil(1970 + id / 12, id % 12 + 1) * DAY,
        }
    }

    /// Seconds from `unix_secs` to the start of the next period.
    pub fn until_next(self, unix_secs: u64) -> u64 {
        self.start(self.id(unix_secs) + 1).saturating_sub(unix_secs)
    }

    /// Length of the period `unix_secs` falls in.
    pub fn length(self, unix_secs: u64) -> u64 {
        let id = self.id(unix_secs);
        self.start(id + 1) - self.start(id)
    }
}

/// Days since 1970-01-01 of the first day of `month` in `year` (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The answer for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaCheck {
    /// Counted; `remaining` left this period, which ends in `reset` seconds.
    Allowed { remaining: u64, reset: u64 },
    /// Used up (nothing counted); the next period starts in `reset` seconds.
    Denied { reset: u64 },
}

/// One persisted counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub period: u64,
    pub used: u64,
}

struct Shard {
    used: HashMap<String, (u64, u64)>,
    /// The counter keys share while the shard is full of keys with usage this period.
    overflow: (u64, u64),
}

pub struct QuotaTable {
    limit: u64,
    period: Period,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
}

/// Which counter a decision used, for refunds.
#[derive(Clone, Debug)]
pub struct QuotaSlot {
    key: Option<String>,
    period: u64,
}

const SHARDS: usize = 16;

impl QuotaTable {
    pub fn new(limit: u64, period: Period, max_keys: usize) -> Self {
        let shards = SHARDS.min(max_keys.max(1));
        Self {
            limit,
            period,
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        used: HashMap::new(),
                        overflow: (0, 0),
                    })
                })
                .collect(),
            shard_cap: (max_keys / shards).max(1),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn period(&self) -> Period {
        self.period
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // FNV-1a: stable and cheap; the map inside uses std's keyed hasher against flooding.
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(h as usize) % self.shards.len()]
    }

    /// Counts one request for `key` at `unix_secs` when the period has room.
    pub fn check(&self, key: &str, unix_secs: u64) -> (QuotaCheck, QuotaSlot) {
        let period = self.period.id(unix_secs);
        let reset = self.period.until_next(unix_secs);
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let cap = self.shard_cap;
        let limit = self.limit;
        let count = |state: &mut (u64, u64)| {
            if state.0 != period {
                *state = (period, 0);
            }
            if state.1 >= limit {
                QuotaCheck::Denied { reset }
            } else {
                state.1 += 1;
                QuotaCheck::Allowed {
                    remaining: limit - state.1,
                    reset,
                }
            }
        };
        if !shard.used.contains_key(key) && shard.used.len() >= cap {
            // Counters of a past period equal a fresh one: only those may go.
            shard.used.retain(|_, (p, _)| *p == period);
            if shard.used.len() >= cap {
                let check = count(&mut shard.overflow);
                return (check, QuotaSlot { key: None, period });
            }
        }
        let state = shard.used.entry(key.to_owned()).or_insert((period, 0));
        let check = count(state);
        (
            check,
            QuotaSlot {
                key: Some(key.to_owned()),
                period,
            },
        )
    }

    /// Gives back an admitted request's count (another limit refused the request).
    pub fn refund(&self, slot: &QuotaSlot) {
        let shard_key = slot.key.as_deref().unwrap_or("");
        let mut shard = self
            .shard(shard_key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = match &slot.key {
            Some(k) => shard.used.get_mut(k),
            None => Some(&mut shard.overflow),
        };
        if let Some(state) = state
            && state.0 == slot.period
        {
            state.1 = state.1.saturating_sub(1);
        }
    }

    /// Counters of the current period, for the state file.
    pub fn snapshot(&self, unix_secs: u64) -> Vec<Entry> {
        let period = self.period.id(unix_secs);
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            out.extend(
                shard
                    .used
                    .iter()
                    .filter(|(_, (p, used))| *p == period && *used > 0)
                    .map(|(k, (p, used))| Entry {
                        key: k.clone(),
                        period: *p,
                        used: *used,
                    }),
            );
        }
        out
    }

    /// Restores counters from the state file; past periods are dropped.
    pub fn seed(&self, entries: &[Entry], unix_secs: u64) {
        let period = self.period.id(unix_secs);
        for e in entries.iter().filter(|e| e.period == period) {
            let mut shard = self
                .shard(&e.key)
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if shard.used.len() < self.shard_cap {
                let state = shard.used.entry(e.key.clone()).or_insert((period, 0));
                state.1 = state.1.max(e.used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-02-28T23:59:59Z and friends.
    const FEB_28_2026_END: u64 = 1_772_323_199;

    #[test]
    fn calendar_periods_are_utc_aligned() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 3) * DAY, FEB_28_2026_END + 1);
        assert_eq!(Period::Day.until_next(FEB_28_2026_END), 1);
        assert_eq!(Period::Month.until_next(FEB_28_2026_END), 1);
        assert_eq!(Period::Month.length(FEB_28_2026_END), 28 * DAY);
        assert_eq!(Period::Month.length(FEB_28_2026_END + 1), 31 * DAY);
        // 2024 is a leap year.
        assert_eq!(
            Period::Month.length(days_from_civil(2024, 2) * DAY),
            29 * DAY
        );
        assert_eq!(
            Period::Month.id(FEB_28_2026_END + 1),
            Period::Month.id(FEB_28_2026_END) + 1
        );
    }

    #[test]
    fn quota_counts_resets_at_the_boundary_and_refunds() {
        let q = QuotaTable::new(2, Period::Day, 100);
        let t = FEB_28_2026_END - 10;
        assert_eq!(
            q.check("alice", t).0,
            QuotaCheck::Allowed {
                remaining: 1,
                reset: 11
            }
        );
        let (_, slot) = q.check("alice", t);
        assert_eq!(q.check("alice", t).0, QuotaCheck::Denied { reset: 11 });
        q.refund(&slot);
        assert!(matches!(q.check("alice", t).0, QuotaCheck::Allowed { .. }));
        // Refused requests did not count: after midnight the full quota is back.
        assert!(matches!(
            q.check("alice", t + 11).0,
            QuotaCheck::Allowed { remaining: 1, .. }
        ));
    }

    #[test]
    fn snapshot_and_seed_round_trip() {
        let q = QuotaTable::new(5, Period::Month, 100);
        let t = FEB_28_2026_END;
        for _ in 0..3 {
            let _ = q.check("bob", t);
        }
        let snap = q.snapshot(t);
        let fresh = QuotaTable::new(5, Period::Month, 100);
        fresh.seed(&snap, t);
        assert_eq!(
            fresh.check("bob", t).0,
            QuotaCheck::Allowed {
                remaining: 1,
                reset: 1
            }
        );
        // Next month the old counts are gone.
        let next = QuotaTable::new(5, Period::Month, 100);
        next.seed(&snap, t + 1);
        assert!(matches!(
            next.check("bob", t + 1).0,
            QuotaCheck::Allowed { remaining: 4, .. }
        ));
    }

    #[test]
    fn churn_never_resets_a_used_quota() {
        let q = QuotaTable::new(1, Period::Day, 16);
        let t = FEB_28_2026_END - 1000;
        assert!(matches!(q.check("abuser", t).0, QuotaCheck::Allowed { .. }));
        for i in 0..10_000 {
            let _ = q.check(&format!("k{i}"), t);
        }
        assert!(matches!(q.check("abuser", t).0, QuotaCheck::Denied { .. }));
    }
}
