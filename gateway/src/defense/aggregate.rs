//! Prefix aggregation: when `min_sources` addresses inside one /24 (or /64) have been blocked by
//! the loop and their blocks still run, the prefix itself is blocked (a scanner rotating through
//! its neighbours' addresses), on the same TTL ladder and audited like any block, never when the
//! prefix covers an allowlisted or management address.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use gateway_common::{origin, reason};
use ipnet::IpNet;

use super::{Block, Enforcement, Policy};
use crate::config::AggregateConfig;

/// A prefix to block.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefixBlock {
    pub prefix: IpNet,
    pub ttl: Duration,
    pub sources: usize,
    pub strike: u32,
}

pub struct Aggregator {
    config: AggregateConfig,
    policy: Policy,
    /// Blocked sources per prefix, with when their block ends.
    members: HashMap<IpNet, HashMap<IpAddr, Instant>>,
    /// Per prefix: strikes in the repeat window, the last one's time, and when its block ends.
    prefixes: HashMap<IpNet, (u32, Instant, Instant)>,
}

impl Aggregator {
    pub fn new(config: AggregateConfig, policy: Policy) -> Self {
        Self {
            config,
            policy,
            members: HashMap::new(),
            prefixes: HashMap::new(),
        }
    }

    /// Records a kernel block of `source` for `ttl`; returns the prefix to block when this one
    /// completes it.
    pub fn record(&mut self, source: IpNet, ttl: Duration, now: Instant) -> Option<PrefixBlock> {
        if source.prefix_len() != source.max_prefix_len() {
            return None;
        }
        let len = match source.addr() {
            IpAddr::V4(_) => self.config.v4_prefix,
            IpAddr::V6(_) => self.config.v6_prefix,
        };
        let prefix = IpNet::new(source.addr(), len).ok()?.trunc();
        let members = self.members.entry(prefix).or_default();
        members.retain(|_, until| *until > now);
        members.insert(source.addr(), now + ttl);
        let sources = members.len();
        if sources < self.config.min_sources {
            return None;
        }
        let window = self.policy.repeat_window;
        let entry = self.prefixes.entry(prefix).or_insert((0, now, now));
        if entry.2 > now {
            // Already blocked: the members were counted for the next time.
            return None;
        }
        let strike = if now.duration_since(entry.1) <= window && entry.0 > 0 {
            entry.0 + 1
        } else {
            1
        };
        let rung = (strike as usize - 1).min(self.policy.ttls.len().saturating_sub(1));
        let ttl = self.policy.ttls.get(rung).copied().unwrap_or(ttl);
        *entry = (strike, now, now + ttl);
        members.clear();
        // Bounded memory: forget prefixes whose members all expired.
        if self.members.len() > self.policy.max_tracked {
            self.members.retain(|_, m| m.values().any(|u| *u > now));
        }
        Some(PrefixBlock {
            prefix,
            ttl,
            sources,
            strike,
        })
    }
}

/// Blocks the prefix in the kernel, unless it covers an allowlisted or management address.
pub(super) fn block_prefix(enforcement: &Enforcement, p: &PrefixBlock, cause: &str) {
    let Some(defense) = &enforcement.kernel else {
        return;
    };
    let overlaps = |n: &IpNet| p.prefix.contains(&n.addr()) || n.contains(&p.prefix.addr());
    let allowed = enforcement.never.iter().any(overlaps)
        || defense
            .maps()
            .map(|m| m.allowed().iter().any(|(n, _)| overlaps(n)))
            .unwrap_or(true);
    if allowed {
        tracing::warn!(target: "security", prefix = %p.prefix, sources = p.sources,
            "prefix block skipped: it covers an allowlisted address");
        if let Some(ev) = &enforcement.events {
            ev.escalation_not_applied(p.prefix, cause, 0.0, p.ttl, false);
        }
        return;
    }
    let block = Block {
        net: p.prefix,
        ttl: Some(p.ttl),
        reason: reason::PROTOCOL_ABUSE,
        origin: origin::L7,
        note: Some(format!(
            "auto: aggregate, {} sources blocked inside (last: {cause}; strike {})",
            p.sources, p.strike
        )),
        actor: "auto:aggregate".into(),
    };
    match defense.block_automatic(&block) {
        Ok(()) => tracing::warn!(target: "security", prefix = %p.prefix, sources = p.sources,
            ttl_seconds = p.ttl.as_secs(), strike = p.strike, "prefix blocked"),
        Err(e) => {
            tracing::error!(target: "security", prefix = %p.prefix, error = %e, "blocking prefix failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            threshold: 10.0,
            half_life: Duration::from_secs(60),
            ttls: vec![Duration::from_secs(60), Duration::from_secs(600)],
            repeat_window: Duration::from_secs(3600),
            max_tracked: 1000,
        }
    }

    fn ip(s: &str) -> IpNet {
        IpNet::from(s.parse::<IpAddr>().expect("ip"))
    }

    #[test]
    fn the_nth_source_in_a_prefix_blocks_the_prefix_and_repeats_climb_the_ladder() {
        let cfg = AggregateConfig {
            v4_prefix: 24,
            v6_prefix: 64,
            min_sources: 3,
        };
        let mut a = Aggregator::new(cfg, policy());
        let t = Instant::now();
        let ttl = Duration::from_secs(60);
        assert_eq!(a.record(ip("198.51.100.1"), ttl, t), None);
        // Another prefix does not count.
        assert_eq!(a.record(ip("198.51.101.2"), ttl, t), None);
        assert_eq!(a.record(ip("198.51.100.2"), ttl, t), None);
        let p = a.record(ip("198.51.100.3"), ttl, t).expect("third source");
        assert_eq!(p.prefix.to_string(), "198.51.100.0/24");
        assert_eq!(
            (p.sources, p.strike, p.ttl),
            (3, 1, Duration::from_secs(60))
        );
        // While it is blocked, nothing new.
        assert_eq!(a.record(ip("198.51.100.4"), ttl, t), None);

        // After it expired, three more within the window: second strike, second rung.
        let later = t + Duration::from_secs(120);
        assert_eq!(a.record(ip("198.51.100.5"), ttl, later), None);
        assert_eq!(a.record(ip("198.51.100.6"), ttl, later), None);
        let p = a.record(ip("198.51.100.7"), ttl, later).expect("again");
        assert_eq!((p.strike, p.ttl), (2, Duration::from_secs(600)));
    }

    #[test]
    fn expired_member_blocks_do_not_count_and_v6_uses_its_prefix() {
        let cfg = AggregateConfig {
            v4_prefix: 24,
            v6_prefix: 64,
            min_sources: 2,
        };
        let mut a = Aggregator::new(cfg, policy());
        let t = Instant::now();
        let ttl = Duration::from_secs(60);
        assert_eq!(a.record(ip("192.0.2.1"), ttl, t), None);
        assert_eq!(
            a.record(ip("192.0.2.2"), ttl, t + Duration::from_secs(61)),
            None
        );
        assert_eq!(a.record(ip("2001:db8:0:1::1"), ttl, t), None);
        let p = a.record(ip("2001:db8:0:1::ff"), ttl, t).expect("v6");
        assert_eq!(p.prefix.to_string(), "2001:db8:0:1::/64");
    }
}
