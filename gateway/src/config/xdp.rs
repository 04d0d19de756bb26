//! The `xdp:` section: interfaces, attach mode, static lists, caps, protected ports.

use std::time::Duration;

use gateway_common::{XdpConfig, flags};
use serde::Deserialize;

use super::{addr::Net, de_duration};
use crate::xdp::{AttachMode, PortRule};

/// How to attach the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode if the driver has it, else generic (skb) mode.
    #[default]
    Auto,
    Driver,
    Skb,
    /// No kernel fast path: the gateway runs without XDP.
    Off,
}

impl XdpMode {
    pub fn attach_mode(self) -> Option<AttachMode> {
        match self {
            Self::Auto => Some(AttachMode::Auto),
            Self::Driver => Some(AttachMode::Driver),
            Self::Skb => Some(AttachMode::Skb),
            Self::Off => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XdpSection {
    /// Interfaces the filter attaches to.
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub mode: XdpMode,
    /// Always allowed, whatever the denylist or caps say: operators cannot lock themselves out.
    #[serde(default)]
    pub management: Vec<Net>,
    /// Allowlisted sources skip every check.
    #[serde(default)]
    pub allow: Vec<Net>,
    /// Static denylist (origin `config`); entries removed from the file are removed at reload.
    #[serde(default)]
    pub deny: Vec<Net>,
    /// Per-source packet-rate cap; absent means no cap.
    #[serde(default)]
    pub rate_cap: Option<RateCap>,
    /// When set, caps and denylist apply only to these destinations (`tcp/443`, `udp/53`).
    #[serde(default)]
    pub protected_ports: Vec<PortRuleDe>,
    /// At most one report per over-cap source per interval.
    #[serde(default = "one_second", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub report_interval: Duration,
    /// How often expired deny entries are removed from the maps (the kernel already ignores
    /// them).
    #[serde(default = "one_second", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub sweep_interval: Duration,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// A [`PortRule`] read from `tcp/443`.
#[derive(Clone, Copy, Debug)]
pub struct PortRuleDe(pub PortRule);

impl<'de> Deserialize<'de> for PortRuleDe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(PortRuleDe).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateCap {
    /// Packets per second per source.
    pub pps: u64,
    /// Packets a source may send at once above the rate; defaults to `pps`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// TCP SYNs (without ACK) per second per source; absent means no separate SYN budget.
    #[serde(default)]
    pub syn_pps: Option<u64>,
    /// Defaults to `syn_pps`.
    #[serde(default)]
    pub syn_burst: Option<u64>,
    /// IPv6 sources share one bucket per prefix of this length.
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_v6_prefix() -> u8 {
    64
}

impl XdpSection {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.mode != XdpMode::Off && self.interfaces.is_empty() {
            return Err((
                "interfaces",
                "xdp.interfaces is empty: name at least one interface, or set mode: off".into(),
            ));
        }
        if let Some(cap) = &self.rate_cap {
            if cap.pps == 0 || cap.pps > 1_000_000_000 {
                return Err((
                    "pps",
                    format!("rate_cap.pps must be 1..=1000000000, got {}", cap.pps),
                ));
            }
            if cap.burst == Some(0) {
                return Err(("burst", "rate_cap.burst must be at least 1".into()));
            }
            if matches!(cap.syn_pps, Some(0) | Some(1_000_000_001..)) {
                return Err(("syn_pps", "rate_cap.syn_pps must be 1..=1000000000".into()));
            }
            if cap.syn_burst == Some(0) {
                return Err(("syn_burst", "rate_cap.syn_burst must be at least 1".into()));
            }
            if cap.ipv6_prefix == 0 || cap.ipv6_prefix > 128 {
                return Err((
                    "ipv6_prefix",
                    format!(
                        "rate_cap.ipv6_prefix must be 1..=128, got {}",
                        cap.ipv6_prefix
                    ),
                ));
            }
        }
        if self.report_interval.is_zero() || self.sweep_interval.is_zero() {
            return Err(("interval", "intervals must be longer than zero".into()));
        }
        Ok(())
    }

    /// The kernel's view of this section (the `HAS_*` flags are the map writer's business).
    pub fn kernel_config(&self) -> XdpConfig {
        let mut cfg = XdpConfig {
            flags: if self.protected_ports.is_empty() {
                0
            } else {
                flags::PORT_FILTER
            },
            report_interval_ns: self.report_interval.as_nanos() as u64,
            ipv6_prefix_len: 128,
            ..XdpConfig::default()
        };
        if let Some(cap) = &self.rate_cap {
            (cfg.pps_interval_ns, cfg.pps_tolerance_ns) =
                gcra(cap.pps, cap.burst.unwrap_or(cap.pps));
            if let Some(syn) = cap.syn_pps {
                (cfg.syn_interval_ns, cfg.syn_tolerance_ns) =
                    gcra(syn, cap.syn_burst.unwrap_or(syn));
            }
            cfg.ipv6_prefix_len = u32::from(cap.ipv6_prefix);
        }
        cfg.ipv6_mask = prefix_mask(cfg.ipv6_prefix_len);
        cfg
    }

    pub fn ports(&self) -> Vec<PortRule> {
        self.protected_ports.iter().map(|p| p.0).collect()
    }
}

/// GCRA emission interval and tolerance for `rate` per second with `burst` packets at once:
/// the program admits a packet while its theoretical arrival time is at most `tolerance` ahead.
fn gcra(rate: u64, burst: u64) -> (u64, u64) {
    let interval = (1_000_000_000 / rate).max(1);
    (interval, interval * burst.saturating_sub(1))
}

fn prefix_mask(len: u32) -> [u8; 16] {
    let bits = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
    bits.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_exactly_burst_at_once() {
        let (interval, tolerance) = gcra(100, 20);
        assert_eq!(interval, 10_000_000);
        // The n-th packet at the same instant sees tat - now = (n - 1) * interval.
        let admitted = (1..=1000u64)
            .take_while(|n| (n - 1) * interval <= tolerance)
            .count();
        assert_eq!(admitted, 20);
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_mask(64)[..8], [0xff; 8]);
        assert_eq!(prefix_mask(64)[8..], [0; 8]);
        assert_eq!(prefix_mask(56)[6], 0xff);
        assert_eq!(prefix_mask(56)[7], 0);
        assert_eq!(prefix_mask(128), [0xff; 16]);
    }
}

super::string_schema!(
    PortRuleDe,
    "PortRule",
    "PROTOCOL/PORT, e.g. tcp/443 or udp/53"
);
