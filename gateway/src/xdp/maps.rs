//! Typed access to an instance's pinned maps: what `defense` (the single writer), the daemon and
//! the operator CLI read and write. Every mutation keeps the `HAS_*` flags in `config` true for a
//! non-empty map, so the program never skips a map that holds an entry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapInfo, MapType, PerCpuArray, lpm_trie::Key,
};
use gateway_common::{
    AllowValue, Counter, DenyValue, LayoutRecord, RateState, XdpConfig, capacity, flags, map_names,
    port_slot, stat,
};
use ipnet::IpNet;
use serde::Serialize;

use super::{PinDir, XdpError};

/// A transport protocol of the protected-ports filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// `tcp/443`: a destination port the caps and denylist protect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRule {
    pub protocol: Protocol,
    pub port: u16,
}

impl std::fmt::Display for PortRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{p}/{}", self.port)
    }
}

impl std::str::FromStr for PortRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, port) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not PROTOCOL/PORT, e.g. tcp/443"))?;
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(format!("unknown protocol `{proto}` in `{s}` (tcp or udp)")),
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{port}` in `{s}` is not a port (1-65535)"))?;
        Ok(Self { protocol, port })
    }
}

/// A deny entry as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyEntry {
    pub net: IpNet,
    pub value: DenyValue,
}

/// One row of `gateway maps list`.
#[derive(Clone, Debug, Serialize)]
pub struct MapSummary {
    pub name: &'static str,
    pub kind: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Entries present (hash maps and tries; `None` for arrays and ring buffers).
    pub entries: Option<usize>,
}

type Lpm4<V> = LpmTrie<MapData, [u8; 4], V>;
type Lpm6<V> = LpmTrie<MapData, [u8; 16], V>;

/// The maps one writer or reader needs, opened from the pin directory.
pub struct Maps {
    allow_v4: Lpm4<AllowValue>,
    allow_v6: Lpm6<AllowValue>,
    deny_v4: HashMap<MapData, [u8; 4], DenyValue>,
    deny_v6: HashMap<MapData, [u8; 16], DenyValue>,
    deny_net_v4: Lpm4<DenyValue>,
    deny_net_v6: Lpm6<DenyValue>,
    config: Array<MapData, XdpConfig>,
    ports: Array<MapData, u64>,
    stats: PerCpuArray<MapData, Counter>,
}

fn open(pins: &PinDir, name: &'static str) -> Result<Map, XdpError> {
    let path = pins.map_path(name);
    if !path.exists() {
        return Err(pins.not_pinned());
    }
    let data = MapData::from_pin(&path).map_err(XdpError::map(name))?;
    Map::from_map_data(data).map_err(XdpError::map(name))
}

impl Maps {
    pub fn open(pins: &PinDir) -> Result<Self, XdpError> {
        Ok(Self {
            allow_v4: typed(pins, map_names::ALLOW_V4)?,
            allow_v6: typed(pins, map_names::ALLOW_V6)?,
            deny_v4: typed(pins, map_names::DENY_V4)?,
            deny_v6: typed(pins, map_names::DENY_V6)?,
            deny_net_v4: typed(pins, map_names::DENY_NET_V4)?,
            deny_net_v6: typed(pins, map_names::DENY_NET_V6)?,
            config: typed(pins, map_names::CONFIG)?,
            ports: typed(pins, map_names::PORTS)?,
            stats: typed(pins, map_names::STATS)?,
        })
    }

    pub fn config(&self) -> Result<XdpConfig, XdpError> {
        self.config
            .get(&0, 0)
            .map_err(XdpError::map(map_names::CONFIG))
    }

    /// Replaces the caps and port-filter switch, keeping the `HAS_*` flags as the maps say.
    pub fn set_config(&mut self, mut cfg: XdpConfig) -> Result<(), XdpError> {
        const HAS: u32 = flags::HAS_ALLOW_V4
            | flags::HAS_ALLOW_V6
            | flags::HAS_DENY_V4
            | flags::HAS_DENY_V6
            | flags::HAS_DENY_NET_V4
            | flags::HAS_DENY_NET_V6;
        cfg.flags = (cfg.flags & !HAS) | self.has_flags()?;
        self.config
            .set(0, cfg, 0)
            .map_err(XdpError::map(map_names::CONFIG))
    }

    fn has_flags(&self) -> Result<u32, XdpError> {
        let mut f = 0;
        let pairs = [
            (self.allow_v4.keys().next().is_some(), flags::HAS_ALLOW_V4),
            (self.allow_v6.keys().next().is_some(), flags::HAS_ALLOW_V6),
            (self.deny_v4.keys().next().is_some(), flags::HAS_DENY_V4),
            (self.deny_v6.keys().next().is_some(), flags::HAS_DENY_V6),
            (
                self.deny_net_v4.keys().next().is_some(),
                flags::HAS_DENY_NET_V4,
            ),
            (
                self.deny_net_v6.keys().next().is_some(),
                flags::HAS_DENY_NET_V6,
            ),
        ];
        for (non_empty, bit) in pairs {
            if non_empty {
                f |= bit;
            }
        }
        Ok(f)
    }

    /// Re-derives the `HAS_*` flags after a change.
    fn refresh_flags(&mut self) -> Result<(), XdpError> {
        let cfg = self.config()?;
        self.set_config(cfg)
    }

    /// Adds or replaces a deny entry: a host goes to the exact map, a prefix to the trie.
    pub fn deny(&mut self, net: IpNet, value: DenyValue) -> Result<(), XdpError> {
        self.deny_many(std::iter::once((net, value)))
    }

    /// Adds many deny entries with one flag update (feeds, benchmarks, journal replay).
    pub fn deny_many(
        &mut self,
        entries: impl IntoIterator<Item = (IpNet, DenyValue)>,
    ) -> Result<(), XdpError> {
        for (net, value) in entries {
            let net = net.trunc();
            match net {
                IpNet::V4(n) if n.prefix_len() == 32 => self
                    .deny_v4
                    .insert(n.addr().octets(), value, 0)
                    .map_err(XdpError::map(map_names::DENY_V4))?,
                IpNet::V6(n) if n.prefix_len() == 128 => self
                    .deny_v6
                    .insert(n.addr().octets(), value, 0)
                    .map_err(XdpError::map(map_names::DENY_V6))?,
                IpNet::V4(n) => self
                    .deny_net_v4
                    .insert(
                        &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
                        value,
                        0,
                    )
                    .map_err(XdpError::map(map_names::DENY_NET_V4))?,
                IpNet::V6(n) => self
                    .deny_net_v6
                    .insert(
                        &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
                        value,
                        0,
                    )
                    .map_err(XdpError::map(map_names::DENY_NET_V6))?,
            }
        }
        self.refresh_flags()
    }

    /// Removes many deny entries with one flag update (feed entries that left their feed);
    /// returns how many were there.
    pub fn undeny_many(
        &mut self,
        nets: impl IntoIterator<Item = IpNet>,
    ) -> Result<usize, XdpError> {
        let mut removed = 0;
        for net in nets {
            let net = net.trunc();
            let result = match net {
                IpNet::V4(n) if n.prefix_len() == 32 => self
                    .deny_v4
                    .remove(&n.addr().octets())
                    .map_err(|e| (map_names::DENY_V4, e)),
                IpNet::V6(n) if n.prefix_len() == 128 => self
                    .deny_v6
                    .remove(&n.addr().octets())
                    .map_err(|e| (map_names::DENY_V6, e)),
                IpNet::V4(n) => self
                    .deny_net_v4
                    .remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets()))
                    .map_err(|e| (map_names::DENY_NET_V4, e)),
                IpNet::V6(n) => self
                    .deny_net_v6
                    .remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets()))
                    .map_err(|e| (map_names::DENY_NET_V6, e)),
            };
            match result {
                Ok(()) => removed += 1,
                Err((_, e)) if not_found(&e) => {}
                Err((name, source)) => return Err(XdpError::Map { name, source }),
            }
        }
        self.refresh_flags()?;
        Ok(removed)
    }

    /// Removes a deny entry; `Ok(None)` when there was none.
    pub fn undeny(&mut self, net: IpNet) -> Result<Option<DenyValue>, XdpError> {
        let net = net.trunc();
        let old = self.deny_get(net)?;
        if old.is_some() {
            match net {
                IpNet::V4(n) if n.prefix_len() == 32 => self
                    .deny_v4
                    .remove(&n.addr().octets())
                    .map_err(XdpError::map(map_names::DENY_V4))?,
                IpNet::V6(n) if n.prefix_len() == 128 => self
                    .deny_v6
                    .remove(&n.addr().octets())
                    .map_err(XdpError::map(map_names::DENY_V6))?,
                IpNet::V4(n) => self
                    .deny_net_v4
                    .remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets()))
                    .map_err(XdpError::map(map_names::DENY_NET_V4))?,
                IpNet::V6(n) => self
                    .deny_net_v6
                    .remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets()))
                    .map_err(XdpError::map(map_names::DENY_NET_V6))?,
            }
            self.refresh_flags()?;
        }
        Ok(old)
    }

    /// The entry stored for exactly this address or prefix.
    pub fn deny_get(&self, net: IpNet) -> Result<Option<DenyValue>, XdpError> {
        let net = net.trunc();
        let found = match net {
            IpNet::V4(n) if n.prefix_len() == 32 => self.deny_v4.get(&n.addr().octets(), 0),
            IpNet::V6(n) if n.prefix_len() == 128 => self.deny_v6.get(&n.addr().octets(), 0),
            IpNet::V4(n) => {
                // The trie's lookup is longest-prefix; keep only an exact-length hit.
                return Ok(self
                    .deny_net_v4
                    .iter()
                    .filter_map(Result::ok)
                    .find(|(k, _)| {
                        k.prefix_len() == u32::from(n.prefix_len()) && k.data() == n.addr().octets()
                    })
                    .map(|(_, v)| v));
            }
            IpNet::V6(n) => {
                return Ok(self
                    .deny_net_v6
                    .iter()
                    .filter_map(Result::ok)
                    .find(|(k, _)| {
                        k.prefix_len() == u32::from(n.prefix_len()) && k.data() == n.addr().octets()
                    })
                    .map(|(_, v)| v));
            }
        };
        match found {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(XdpError::Map {
                name: map_names::DENY_V4,
                source: e,
            }),
        }
    }

    /// Every deny entry, exact and CIDR, IPv4 then IPv6.
    pub fn denied(&self) -> Vec<DenyEntry> {
        let mut out = Vec::new();
        for (k, value) in self.deny_v4.iter().filter_map(Result::ok) {
            out.push(DenyEntry {
                net: IpNet::from(IpAddr::V4(Ipv4Addr::from(k))),
                value,
            });
        }
        for (k, value) in self.deny_net_v4.iter().filter_map(Result::ok) {
            if let Some(net) = v4net(k.data(), k.prefix_len()) {
                out.push(DenyEntry { net, value });
            }
        }
        for (k, value) in self.deny_v6.iter().filter_map(Result::ok) {
            out.push(DenyEntry {
                net: IpNet::from(IpAddr::V6(Ipv6Addr::from(k))),
                value,
            });
        }
        for (k, value) in self.deny_net_v6.iter().filter_map(Result::ok) {
            if let Some(net) = v6net(k.data(), k.prefix_len()) {
                out.push(DenyEntry { net, value });
            }
        }
        out
    }

    /// Removes expired deny entries (the program already ignores them); returns how many.
    pub fn sweep_expired(&mut self, now_boot_ns: u64) -> Result<usize, XdpError> {
        let expired: Vec<IpNet> = self
            .denied()
            .into_iter()
            .filter(|e| !e.value.is_active(now_boot_ns))
            .map(|e| e.net)
            .collect();
        for net in &expired {
            self.undeny(*net)?;
        }
        Ok(expired.len())
    }

    pub fn allow(&mut self, net: IpNet, origin: u8) -> Result<(), XdpError> {
        let net = net.trunc();
        let value = AllowValue {
            origin,
            _pad: [0; 7],
        };
        match net {
            IpNet::V4(n) => self
                .allow_v4
                .insert(
                    &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
                    value,
                    0,
                )
                .map_err(XdpError::map(map_names::ALLOW_V4))?,
            IpNet::V6(n) => self
                .allow_v6
                .insert(
                    &Key::new(u32::from(n.prefix_len()), n.addr().octets()),
                    value,
                    0,
                )
                .map_err(XdpError::map(map_names::ALLOW_V6))?,
        }
        self.refresh_flags()
    }

    /// Removes an allowlist prefix; `false` when it was not there.
    pub fn disallow(&mut self, net: IpNet) -> Result<bool, XdpError> {
        let net = net.trunc();
        let removed = match net {
            IpNet::V4(n) => self
                .allow_v4
                .remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets())),
            IpNet::V6(n) => self
                .allow_v6
                .remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets())),
        };
        match removed {
            Ok(()) => {
                self.refresh_flags()?;
                Ok(true)
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(XdpError::Map {
                name: map_names::ALLOW_V4,
                source: e,
            }),
        }
    }

    /// Every allowlist prefix with its origin.
    pub fn allowed(&self) -> Vec<(IpNet, u8)> {
        let v4 = self
            .allow_v4
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| v4net(k.data(), k.prefix_len()).map(|n| (n, v.origin)));
        let v6 = self
            .allow_v6
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| v6net(k.data(), k.prefix_len()).map(|n| (n, v.origin)));
        v4.chain(v6).collect()
    }

    /// Replaces the protected-ports bitmap.
    pub fn set_ports(&mut self, rules: &[PortRule]) -> Result<(), XdpError> {
        let mut words = vec![0u64; capacity::PORT_WORDS as usize];
        for r in rules {
            let (word, bit) = port_slot(r.protocol == Protocol::Udp, r.port);
            words[word as usize] |= bit;
        }
        for (i, w) in words.into_iter().enumerate() {
            self.ports
                .set(i as u32, w, 0)
                .map_err(XdpError::map(map_names::PORTS))?;
        }
        Ok(())
    }

    /// The protected ports in the bitmap.
    pub fn ports(&self) -> Vec<PortRule> {
        read_ports(&self.ports)
    }

    /// Counters per slot of `stat`, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<Counter>, XdpError> {
        (0..stat::COUNT)
            .map(|slot| {
                let per_cpu = self
                    .stats
                    .get(&slot, 0)
                    .map_err(XdpError::map(map_names::STATS))?;
                Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                }))
            })
            .collect()
    }
}

fn read_ports(ports: &Array<MapData, u64>) -> Vec<PortRule> {
    let mut out = Vec::new();
    for (i, word) in ports.iter().enumerate() {
        let Ok(mut word) = word else { continue };
        while word != 0 {
            let bit = word.trailing_zeros();
            word &= word - 1;
            let protocol = if i >= 1024 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            let port = ((i % 1024) as u32 * 64 + bit) as u16;
            out.push(PortRule { protocol, port });
        }
    }
    out
}

fn v4net(addr: [u8; 4], prefix: u32) -> Option<IpNet> {
    IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), prefix as u8).ok()
}

fn v6net(addr: [u8; 16], prefix: u32) -> Option<IpNet> {
    IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), prefix as u8).ok()
}

fn kind_name(t: Result<MapType, aya::maps::MapError>) -> String {
    match t {
        Ok(MapType::Hash) => "hash".into(),
        Ok(MapType::LpmTrie) => "lpm-trie".into(),
        Ok(MapType::LruHash) => "lru-hash".into(),
        Ok(MapType::Array) => "array".into(),
        Ok(MapType::PerCpuArray) => "percpu-array".into(),
        Ok(MapType::RingBuf) => "ringbuf".into(),
        Ok(other) => format!("{other:?}").to_lowercase(),
        Err(_) => "unknown".into(),
    }
}

/// `gateway maps list`: every map of the instance with its shape and fill.
pub fn list_maps(pins: &PinDir) -> Result<Vec<MapSummary>, XdpError> {
    if !pins.exists() {
        return Err(pins.not_pinned());
    }
    let mut out = Vec::new();
    for name in map_names::ALL {
        let info = MapInfo::from_pin(pins.map_path(name)).map_err(XdpError::map(name))?;
        let kind = info.map_type();
        let entries = count_entries(pins, name)?;
        out.push(MapSummary {
            name,
            kind: kind_name(kind),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            entries,
        });
    }
    Ok(out)
}

/// `gateway maps dump NAME`: the map's entries as JSON values (keys rendered as addresses).
pub fn dump_map(pins: &PinDir, name: &str) -> Result<serde_json::Value, XdpError> {
    use serde_json::json;
    let name: &'static str = map_names::ALL
        .into_iter()
        .find(|n| *n == name)
        .ok_or_else(|| XdpError::UnknownMap(name.to_owned()))?;
    let clock = super::BootClock::now();
    let deny_json = |net: IpNet, v: &DenyValue| deny_row(&clock, net, v);
    let value = match name {
        map_names::DENY_V4
        | map_names::DENY_V6
        | map_names::DENY_NET_V4
        | map_names::DENY_NET_V6 => {
            let maps = Maps::open(pins)?;
            let rows: Vec<_> = maps
                .denied()
                .into_iter()
                .filter(|e| {
                    let host = e.net.prefix_len() == e.net.max_prefix_len();
                    match name {
                        map_names::DENY_V4 => e.net.addr().is_ipv4() && host,
                        map_names::DENY_V6 => e.net.addr().is_ipv6() && host,
                        map_names::DENY_NET_V4 => e.net.addr().is_ipv4() && !host,
                        _ => e.net.addr().is_ipv6() && !host,
                    }
                })
                .map(|e| deny_json(e.net, &e.value))
                .collect();
            json!(rows)
        }
        map_names::ALLOW_V4 | map_names::ALLOW_V6 => {
            let maps = Maps::open(pins)?;
            let v6 = name == map_names::ALLOW_V6;
            let rows: Vec<_> = maps
                .allowed()
                .into_iter()
                .filter(|(n, _)| n.addr().is_ipv6() == v6)
                .map(|(n, o)| json!({"prefix": n.to_string(), "origin": gateway_common::origin::name(o)}))
                .collect();
            json!(rows)
        }
        map_names::RATE_V4 => {
            let map: HashMap<MapData, [u8; 4], RateState> = typed(pins, name)?;
            let rows: Vec<_> = map
                .iter()
                .filter_map(Result::ok)
                .map(|(k, s)| rate_row(IpAddr::V4(Ipv4Addr::from(k)).to_string(), &s))
                .collect();
            json!(rows)
        }
        map_names::RATE_V6 => {
            let map: HashMap<MapData, [u8; 16], RateState> = typed(pins, name)?;
            let rows: Vec<_> = map
                .iter()
                .filter_map(Result::ok)
                .map(|(k, s)| rate_row(IpAddr::V6(Ipv6Addr::from(k)).to_string(), &s))
                .collect();
            json!(rows)
        }
        map_names::CONFIG => {
            let maps = Maps::open(pins)?;
            let c = maps.config()?;
            json!({
                "flags": format!("{:#x}", c.flags),
                "port_filter": c.flags & flags::PORT_FILTER != 0,
                "pps_interval_ns": c.pps_interval_ns,
                "pps_tolerance_ns": c.pps_tolerance_ns,
                "syn_interval_ns": c.syn_interval_ns,
                "syn_tolerance_ns": c.syn_tolerance_ns,
                "report_interval_ns": c.report_interval_ns,
                "ipv6_prefix_len": c.ipv6_prefix_len,
            })
        }
        map_names::PORTS => {
            let ports: Array<MapData, u64> = typed(pins, name)?;
            json!(
                read_ports(&ports)
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            )
        }
        map_names::STATS => {
            let maps = Maps::open(pins)?;
            let rows: Vec<_> = maps
                .stats()?
                .iter()
                .zip(stat::NAMES)
                .map(|(c, (verdict, reason))| json!({"verdict": verdict, "reason": reason, "packets": c.packets, "bytes": c.bytes}))
                .collect();
            json!(rows)
        }
        map_names::LAYOUT => {
            let layout: Array<MapData, LayoutRecord> = typed(pins, name)?;
            let r = layout.get(&0, 0).map_err(XdpError::map(name))?;
            json!({"magic": format!("{:#x}", r.magic), "version": r.version, "fingerprint": format!("{:08x}", r.fingerprint)})
        }
        // The ring buffer has no entries to list: its reader is the daemon.
        _ => json!({"note": "ring buffer: events are read and logged by `gateway run`"}),
    };
    Ok(value)
}

/// A deny entry as JSON, shared by `maps dump` and `block list --json`.
pub(crate) fn deny_row(clock: &super::BootClock, net: IpNet, v: &DenyValue) -> serde_json::Value {
    serde_json::json!({
        "address": net.to_string(),
        "origin": gateway_common::origin::name(v.origin),
        "reason": gateway_common::reason::name(v.reason),
        "created": v.created_unix,
        "expires": clock.expires_unix(v.expires_ns),
        "ttl_seconds": clock.remaining(v.expires_ns).map(|d| d.as_secs()),
        "active": v.is_active(clock.boot_ns),
    })
}

fn rate_row(source: String, s: &RateState) -> serde_json::Value {
    // Rate state runs on the monotonic clock (see the XDP program's `rate_check`).
    let now = super::clock::monotonic_ns_now();
    serde_json::json!({
        "source": source,
        "pps_tat_ahead_ns": s.tat_ns.saturating_sub(now),
        "syn_tat_ahead_ns": s.syn_tat_ns.saturating_sub(now),
        "dropped_unreported": s.dropped,
    })
}

/// Entries in a hash map or trie (`None` for arrays and the ring buffer).
fn count_entries(pins: &PinDir, name: &'static str) -> Result<Option<usize>, XdpError> {
    Ok(Some(match name {
        map_names::ALLOW_V4 => typed::<Lpm4<AllowValue>>(pins, name)?.keys().count(),
        map_names::ALLOW_V6 => typed::<Lpm6<AllowValue>>(pins, name)?.keys().count(),
        map_names::DENY_V4 => typed::<HashMap<MapData, [u8; 4], DenyValue>>(pins, name)?
            .keys()
            .count(),
        map_names::DENY_V6 => typed::<HashMap<MapData, [u8; 16], DenyValue>>(pins, name)?
            .keys()
            .count(),
        map_names::DENY_NET_V4 => typed::<Lpm4<DenyValue>>(pins, name)?.keys().count(),
        map_names::DENY_NET_V6 => typed::<Lpm6<DenyValue>>(pins, name)?.keys().count(),
        map_names::RATE_V4 => typed::<HashMap<MapData, [u8; 4], RateState>>(pins, name)?
            .keys()
            .count(),
        map_names::RATE_V6 => typed::<HashMap<MapData, [u8; 16], RateState>>(pins, name)?
            .keys()
            .count(),
        _ => return Ok(None),
    }))
}

/// A delete of a key that is not there (the kernel says ENOENT).
fn not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    pins: &PinDir,
    name: &'static str,
) -> Result<T, XdpError> {
    T::try_from(open(pins, name)?).map_err(XdpError::map(name))
}
