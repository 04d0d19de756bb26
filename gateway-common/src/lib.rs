//! The contract between the XDP program (`gateway-ebpf`) and userspace (`gateway`): map names,
//! capacities, `#[repr(C)]` keys and values, reason and origin codes, counter slots.
//!
//! Every type here is read by the kernel and by userspace byte for byte, so each one is
//! `#[repr(C)]` with explicit padding fields and a compile-time size check: implicit padding in a
//! hash key would become part of the key.
#![no_std]

/// Bumped whenever a key, value or map definition below changes incompatibly. A daemon refuses
/// to reuse pinned maps whose [`LayoutRecord`] differs (xdp-filter's lesson: kept maps must say
/// which layout and policy made them).
pub const LAYOUT_VERSION: u32 = 1;

/// `"GWXD"`: tells our layout record from any other map that happens to be pinned there.
pub const LAYOUT_MAGIC: u32 = 0x4757_5844;

/// Map names as pinned under `/sys/fs/bpf/gateway/<instance>/`. Operators see these names in
/// `gateway maps list`; they are stable. Kernel map names are limited to 15 bytes.
pub mod map_names {
    pub const ALLOW_V4: &str = "allow_v4";
    pub const ALLOW_V6: &str = "allow_v6";
    pub const DENY_V4: &str = "deny_v4";
    pub const DENY_V6: &str = "deny_v6";
    pub const DENY_NET_V4: &str = "deny_net_v4";
    pub const DENY_NET_V6: &str = "deny_net_v6";
    pub const RATE_V4: &str = "rate_v4";
    pub const RATE_V6: &str = "rate_v6";
    pub const CONFIG: &str = "config";
    pub const PORTS: &str = "ports";
    pub const STATS: &str = "stats";
    pub const EVENTS: &str = "events";
    pub const LAYOUT: &str = "layout";

    /// Every map, in the order `gateway maps list` shows them.
    pub const ALL: [&str; 13] = [
        ALLOW_V4,
        ALLOW_V6,
        DENY_V4,
        DENY_V6,
        DENY_NET_V4,
        DENY_NET_V6,
        RATE_V4,
        RATE_V6,
        CONFIG,
        PORTS,
        STATS,
        EVENTS,
        LAYOUT,
    ];
}

/// Map capacities. The exact denylists and tries are allocated on demand (`BPF_F_NO_PREALLOC`),
/// so a large capacity costs memory only when it is used; the rate maps are LRU and preallocated.
pub mod capacity {
    pub const ALLOW: u32 = 16_384;
    pub const DENY_V4: u32 = 1 << 21;
    pub const DENY_V6: u32 = 1 << 19;
    pub const DENY_NET: u32 = 262_144;
    pub const RATE_V4: u32 = 262_144;
    pub const RATE_V6: u32 = 131_072;
    /// One bit per port, 64 ports per word: TCP words first, then UDP.
    pub const PORT_WORDS: u32 = 2 * 1024;
    /// Ring buffer for rate-cap events, in bytes (a power of two, page aligned).
    pub const EVENTS_BYTES: u32 = 256 * 1024;
}

/// Where a deny entry came from. Shown to operators and kept across restarts.
pub mod origin {
    pub const MANUAL: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const FEED: u8 = 3;
    pub const RATE_CAP: u8 = 4;
    pub const L7: u8 = 5;
    pub const CLUSTER: u8 = 6;

    pub const fn name(origin: u8) -> &'static str {
        match origin {
            MANUAL => "manual",
            CONFIG => "config",
            FEED => "feed",
            RATE_CAP => "rate-cap",
            L7 => "l7",
            CLUSTER => "cluster",
            _ => "unknown",
        }
    }

    pub fn parse(name: &str) -> Option<u8> {
        [MANUAL, CONFIG, FEED, RATE_CAP, L7, CLUSTER]
            .into_iter()
            .find(|&o| self::name(o) == name)
    }
}

/// Why a source is denied: a stable code, so SIEM rules can match on it.
pub mod reason {
    pub const UNSPECIFIED: u16 = 0;
    pub const OPERATOR: u16 = 1;
    pub const STATIC_LIST: u16 = 2;
    pub const PPS_CAP: u16 = 3;
    pub const SYN_CAP: u16 = 4;
    pub const WAF: u16 = 5;
    pub const AUTH_FAILURE: u16 = 6;
    pub const RATE_LIMIT: u16 = 7;
    pub const BOT: u16 = 8;
    pub const REPUTATION: u16 = 9;
    /// Requests built to slip past the gateway (encoded slashes, path parameters, oversized or
    /// malformed heads): someone probing, not a confused client.
    pub const PROTOCOL_ABUSE: u16 = 10;
    /// The operator blocks the source's country (`defense.geo`).
    pub const GEO: u16 = 11;

    pub const fn name(reason: u16) -> &'static str {
        match reason {
            OPERATOR => "operator",
            STATIC_LIST => "static-list",
            PPS_CAP => "pps-cap",
            SYN_CAP => "syn-cap",
            WAF => "waf",
            AUTH_FAILURE => "auth-failure",
            RATE_LIMIT => "rate-limit",
            BOT => "bot",
            REPUTATION => "reputation",
            PROTOCOL_ABUSE => "protocol-abuse",
            GEO => "geo",
            _ => "unspecified",
        }
    }
}

/// Bits of [`XdpConfig::flags`]. The `HAS_*` bits let the program skip a lookup in an empty map
/// (a miss in a large map costs a cache miss per packet); the single map writer keeps them true
/// whenever the map holds an entry.
pub mod flags {
    /// Caps and denylist apply only to the ports in the `ports` bitmap.
    pub const PORT_FILTER: u32 = 1 << 0;
    pub const HAS_ALLOW_V4: u32 = 1 << 1;
    pub const HAS_ALLOW_V6: u32 = 1 << 2;
    pub const HAS_DENY_V4: u32 = 1 << 3;
    pub const HAS_DENY_V6: u32 = 1 << 4;
    pub const HAS_DENY_NET_V4: u32 = 1 << 5;
    pub const HAS_DENY_NET_V6: u32 = 1 << 6;
}

/// Runtime configuration, slot 0 of the `config` array map: caps change without a reload.
/// Intervals are the GCRA emission interval (1 s / rate) and tolerance (interval * burst); 0
/// disables that cap. Computed by userspace so the program never divides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    pub flags: u32,
    /// IPv6 sources share one rate bucket per prefix of this length.
    pub ipv6_prefix_len: u32,
    pub pps_interval_ns: u64,
    pub pps_tolerance_ns: u64,
    pub syn_interval_ns: u64,
    pub syn_tolerance_ns: u64,
    /// At most one ring-buffer report per source and interval.
    pub report_interval_ns: u64,
    /// `ipv6_prefix_len` as a mask, network order.
    pub ipv6_mask: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<XdpConfig>() == 64);

/// A deny entry (exact or CIDR).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyValue {
    /// Absolute expiry on CLOCK_BOOTTIME in ns (`bpf_ktime_get_boot_ns`); 0 = permanent.
    pub expires_ns: u64,
    /// Wall-clock creation time (Unix seconds), for operators.
    pub created_unix: u64,
    pub reason: u16,
    pub origin: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<DenyValue>() == 24);

impl DenyValue {
    /// An expired entry never drops, even before userspace sweeps it out.
    #[inline(always)]
    pub const fn is_active(&self, now_boot_ns: u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_boot_ns
    }
}

/// Value of the allowlist tries; the key's presence is what counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowValue {
    pub origin: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<AllowValue>() == 8);

/// Per-source rate state: GCRA "theoretical arrival times" for all packets and for TCP SYNs
/// (one u64 each instead of tokens + timestamp), plus the report throttle.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub tat_ns: u64,
    pub syn_tat_ns: u64,
    pub last_report_ns: u64,
    /// Packets dropped since the last report.
    pub dropped: u64,
}
const _: () = assert!(core::mem::size_of::<RateState>() == 32);

/// Ring-buffer record: a source went over a cap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateEvent {
    /// IPv4 sources use the first 4 bytes.
    pub addr: [u8; 16],
    pub boot_ns: u64,
    /// Packets dropped since the previous report for this source.
    pub dropped: u64,
    /// 4 or 6.
    pub family: u8,
    /// [`stat::DROP_PPS_CAP`] or [`stat::DROP_SYN_CAP`].
    pub kind: u8,
    /// Bits of `addr` that identify the source (32, or the IPv6 aggregation prefix).
    pub prefix_len: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(core::mem::size_of::<RateEvent>() == 40);

/// One per-CPU counter slot of the `stats` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

/// Slots of the `stats` map: one per verdict and reason.
pub mod stat {
    pub const PASS: u32 = 0;
    pub const PASS_ALLOWLIST: u32 = 1;
    pub const PASS_NOT_IP: u32 = 2;
    pub const PASS_UNPROTECTED: u32 = 3;
    pub const PASS_MALFORMED: u32 = 4;
    pub const DROP_DENY: u32 = 5;
    pub const DROP_DENY_NET: u32 = 6;
    pub const DROP_PPS_CAP: u32 = 7;
    pub const DROP_SYN_CAP: u32 = 8;
    pub const COUNT: u32 = 9;

    /// `(verdict, reason)` for display, indexed by slot.
    pub const NAMES: [(&str, &str); COUNT as usize] = [
        ("pass", "no-match"),
        ("pass", "allowlist"),
        ("pass", "not-ip"),
        ("pass", "unprotected-port"),
        ("pass", "malformed"),
        ("drop", "denylist"),
        ("drop", "denylist-cidr"),
        ("drop", "pps-cap"),
        ("drop", "syn-cap"),
    ];
}

/// Slot 0 of the `layout` array map, written when the maps are created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayoutRecord {
    pub magic: u32,
    pub version: u32,
    /// Fingerprint of every shared type's size; catches a layout change nobody versioned.
    pub fingerprint: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<LayoutRecord>() == 16);

impl LayoutRecord {
    pub const fn current() -> Self {
        Self {
            magic: LAYOUT_MAGIC,
            version: LAYOUT_VERSION,
            fingerprint: layout_fingerprint(),
            _pad: 0,
        }
    }
}

const fn layout_fingerprint() -> u32 {
    let sizes = [
        core::mem::size_of::<XdpConfig>(),
        core::mem::size_of::<DenyValue>(),
        core::mem::size_of::<AllowValue>(),
        core::mem::size_of::<RateState>(),
        core::mem::size_of::<RateEvent>(),
        core::mem::size_of::<Counter>(),
        stat::COUNT as usize,
        capacity::PORT_WORDS as usize,
    ];
    // FNV-1a over the sizes.
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < sizes.len() {
        hash ^= sizes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// Index into the `ports` bitmap for a protocol and port: (word, bit).
#[inline(always)]
pub const fn port_slot(udp: bool, port: u16) -> (u32, u64) {
    let base = if udp { 1024 } else { 0 };
    (base + (port as u32 >> 6), 1u64 << (port & 63))
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is #[repr(C)], made only of integers and byte arrays, with explicit
    // padding fields (checked by the size asserts above), so any bit pattern is valid.
    unsafe impl aya::Pod for super::XdpConfig {}
    unsafe impl aya::Pod for super::DenyValue {}
    unsafe impl aya::Pod for super::AllowValue {}
    unsafe impl aya::Pod for super::RateState {}
    unsafe impl aya::Pod for super::RateEvent {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::LayoutRecord {}
}
