//! Violation scoring: a decaying score per source, a threshold, and progressive block lengths
//! for repeat offenders. Pure state, no I/O: the escalation loop decides what to do with the
//! verdicts.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ipnet::IpNet;

/// Evidence against a source from any stage (L7 rejections, XDP rate-cap reports, later auth,
/// WAF and rate limits).
#[derive(Clone, Debug)]
pub struct Violation {
    /// A host, or the IPv6 prefix the kernel aggregated.
    pub source: IpNet,
    /// The client reached us through a trusted proxy: the kernel sees the proxy's address, so
    /// this source can only be blocked at L7.
    pub behind_proxy: bool,
    /// Stable reason code (`path_encoded_slash`, `pps-cap`, ...).
    pub reason: &'static str,
    pub weight: f64,
}

/// What crossing the threshold decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    pub source: IpNet,
    pub behind_proxy: bool,
    pub ttl: Duration,
    /// 1 for a first offence in the repeat window, 2 for the second, ...
    pub strike: u32,
    pub reason: &'static str,
    pub score: f64,
}

/// Scoring parameters (from the `defense` section).
#[derive(Clone, Debug)]
pub struct Policy {
    pub threshold: f64,
    pub half_life: Duration,
    /// Block lengths for the 1st, 2nd, ... escalation within `repeat_window`; the last repeats.
    pub ttls: Vec<Duration>,
    pub repeat_window: Duration,
    /// Sources tracked at once; past it the lowest scores are forgotten first.
    pub max_tracked: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    score: f64,
    updated: Instant,
    strikes: u32,
    last_strike: Option<Instant>,
    blocked_until: Option<Instant>,
}

pub struct Scorer {
    policy: Policy,
    entries: HashMap<IpNet, Entry>,
}

impl Scorer {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Adds a violation; returns an escalation when the score crosses the threshold and the
    /// source is not already blocked.
    pub fn record(&mut self, v: &Violation, now: Instant) -> Option<Escalation> {
        if self.entries.len() >= self.policy.max_tracked && !self.entries.contains_key(&v.source) {
            self.evict(now);
        }
        let half_life = self.policy.half_life.as_secs_f64().max(1e-3);
        let entry = self.entries.entry(v.source).or_insert(Entry {
            score: 0.0,
            updated: now,
            strikes: 0,
            last_strike: None,
            blocked_until: None,
        });
        let dt = now.saturating_duration_since(entry.updated).as_secs_f64();
        entry.score = entry.score * 0.5f64.powf(dt / half_life) + v.weight;
        entry.updated = now;
        if entry.blocked_until.is_some_and(|until| until > now)
            || entry.score < self.policy.threshold
        {
            return None;
        }
        let repeat = entry
            .last_strike
            .is_some_and(|t| now.saturating_duration_since(t) <= self.policy.repeat_window);
        entry.strikes = if repeat { entry.strikes + 1 } else { 1 };
        entry.last_strike = Some(now);
        let ladder = &self.policy.ttls;
        let ttl = ladder
            .get((entry.strikes as usize).saturating_sub(1))
            .or(ladder.last())
            .copied()
            .unwrap_or(Duration::from_secs(60));
        entry.blocked_until = Some(now + ttl);
        let score = entry.score;
        entry.score = 0.0;
        Some(Escalation {
            source: v.source,
            behind_proxy: v.behind_proxy,
            ttl,
            strike: entry.strikes,
            reason: v.reason,
            score,
        })
    }

    /// Forgets the tenth of the sources with the lowest current score, never one with a recent
    /// strike (forgetting it would hand a repeat offender a first-offence block).
    fn evict(&mut self, now: Instant) {
        let half_life = self.policy.half_life.as_secs_f64().max(1e-3);
        let window = self.policy.repeat_window;
        let mut candidates: Vec<(IpNet, f64)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.last_strike
                    .is_none_or(|t| now.saturating_duration_since(t) > window)
            })
            .map(|(k, e)| {
                let dt = now.saturating_duration_since(e.updated).as_secs_f64();
                (*k, e.score * 0.5f64.powf(dt / half_life))
            })
            .collect();
        candidates.sort_by(|a, b| a.1.total_cmp(&b.1));
        let n = (self.policy.max_tracked / 10).max(1);
        for (k, _) in candidates.into_iter().take(n) {
            self.entries.remove(&k);
        }
    }

    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            threshold: 10.0,
            half_life: Duration::from_secs(60),
            ttls: vec![
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(3600),
            ],
            repeat_window: Duration::from_secs(86_400),
            max_tracked: 100,
        }
    }

    fn v(ip: &str, weight: f64) -> Violation {
        Violation {
            source: IpNet::from(ip.parse::<std::net::IpAddr>().expect("ip")),
            behind_proxy: false,
            reason: "test",
            weight,
        }
    }

    #[test]
    fn crossing_the_threshold_escalates_once_per_block() {
        let mut s = Scorer::new(policy());
        let t = Instant::now();
        assert!(s.record(&v("192.0.2.1", 4.0), t).is_none());
        assert!(s.record(&v("192.0.2.1", 4.0), t).is_none());
        let e = s
            .record(&v("192.0.2.1", 4.0), t)
            .expect("escalates at 12 >= 10");
        assert_eq!((e.strike, e.ttl), (1, Duration::from_secs(60)));
        // While blocked, more evidence does not escalate again.
        for _ in 0..10 {
            assert!(
                s.record(&v("192.0.2.1", 4.0), t + Duration::from_secs(1))
                    .is_none()
            );
        }
        // Another source is independent.
        assert!(s.record(&v("192.0.2.2", 4.0), t).is_none());
    }

    #[test]
    fn scores_decay_with_the_half_life() {
        let mut s = Scorer::new(policy());
        let t = Instant::now();
        s.record(&v("192.0.2.1", 8.0), t);
        // One half-life later 8 is worth 4: 4 + 4 < 10.
        assert!(
            s.record(&v("192.0.2.1", 4.0), t + Duration::from_secs(60))
                .is_none()
        );
        // Right after, 8 + 4 >= 10.
        assert!(
            s.record(&v("192.0.2.1", 4.0), t + Duration::from_secs(60))
                .is_some()
        );
    }

    #[test]
    fn repeat_offenders_get_longer_blocks_and_the_ladder_tops_out() {
        let mut s = Scorer::new(policy());
        let mut t = Instant::now();
        let mut ttls = Vec::new();
        for _ in 0..4 {
            let e = s.record(&v("192.0.2.1", 10.0), t).expect("escalates");
            ttls.push(e.ttl.as_secs());
            t += e.ttl + Duration::from_secs(1);
        }
        assert_eq!(ttls, vec![60, 600, 3600, 3600]);
        // Outside the repeat window, back to the first rung.
        t += Duration::from_secs(86_401);
        assert_eq!(
            s.record(&v("192.0.2.1", 10.0), t).map(|e| e.ttl.as_secs()),
            Some(60)
        );
    }

    #[test]
    fn memory_is_bounded_without_forgetting_recent_offenders() {
        let mut s = Scorer::new(Policy {
            max_tracked: 50,
            ..policy()
        });
        let t = Instant::now();
        assert!(s.record(&v("192.0.2.1", 10.0), t).is_some());
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            s.record(&v(&ip, 1.0), t);
        }
        assert!(s.tracked() <= 50, "{}", s.tracked());
        // The offender is still known: after its block, a new offence is its second strike.
        let e = s
            .record(&v("192.0.2.1", 10.0), t + Duration::from_secs(61))
            .expect("escalates");
        assert_eq!(e.strike, 2);
    }
}
