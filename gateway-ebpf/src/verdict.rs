//! The maps and the per-packet decision.
//!
//! Order, chosen for cost: the protected-port check and the `HAS_*` flags come first because they
//! are reads of an array slot already in cache; the exact denylist before the CIDR tries because a
//! hash lookup is cheaper than a trie walk; the allowlist is consulted only when a packet is about
//! to be dropped, so ordinary traffic never pays for it (the outcome is the same as checking it
//! first: an allowlisted source is never dropped).

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC, BPF_NOEXIST, xdp_action},
    helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use gateway_common::{
    AllowValue, Counter, DenyValue, LayoutRecord, RateEvent, RateState, XdpConfig, capacity, flags,
    port_slot, stat,
};

use crate::packet::{self, Parsed, Source, Transport};

#[map(name = "allow_v4")]
static ALLOW_V4: LpmTrie<[u8; 4], AllowValue> = LpmTrie::pinned(capacity::ALLOW, 0);
#[map(name = "allow_v6")]
static ALLOW_V6: LpmTrie<[u8; 16], AllowValue> = LpmTrie::pinned(capacity::ALLOW, 0);

#[map(name = "deny_v4")]
static DENY_V4: HashMap<[u8; 4], DenyValue> = HashMap::pinned(capacity::DENY_V4, BPF_F_NO_PREALLOC);
#[map(name = "deny_v6")]
static DENY_V6: HashMap<[u8; 16], DenyValue> =
    HashMap::pinned(capacity::DENY_V6, BPF_F_NO_PREALLOC);

#[map(name = "deny_net_v4")]
static DENY_NET_V4: LpmTrie<[u8; 4], DenyValue> = LpmTrie::pinned(capacity::DENY_NET, 0);
#[map(name = "deny_net_v6")]
static DENY_NET_V6: LpmTrie<[u8; 16], DenyValue> = LpmTrie::pinned(capacity::DENY_NET, 0);

// Per-CPU LRU lists (`BPF_F_NO_COMMON_LRU`): the common LRU list's lock is what made a shared
// LRU token bucket slower than iptables on this kind of machine (TOOLCHAIN.md).
#[map(name = "rate_v4")]
static RATE_V4: LruHashMap<[u8; 4], RateState> =
    LruHashMap::pinned(capacity::RATE_V4, BPF_F_NO_COMMON_LRU);
#[map(name = "rate_v6")]
static RATE_V6: LruHashMap<[u8; 16], RateState> =
    LruHashMap::pinned(capacity::RATE_V6, BPF_F_NO_COMMON_LRU);

#[map(name = "config")]
static CONFIG: Array<XdpConfig> = Array::pinned(1, 0);
#[map(name = "ports")]
static PORTS: Array<u64> = Array::pinned(capacity::PORT_WORDS, 0);
#[map(name = "stats")]
static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(stat::COUNT, 0);
#[map(name = "events")]
static EVENTS: RingBuf = RingBuf::pinned(capacity::EVENTS_BYTES, 0);
#[map(name = "layout")]
static LAYOUT: Array<LayoutRecord> = Array::pinned(1, 0);

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let (slot, action) = decide(ctx);
    count(ctx, slot);
    action
}

#[inline(always)]
fn count(ctx: &XdpContext, slot: u32) {
    if let Some(c) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot: nothing else writes it while this program runs on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> (u32, u32) {
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;

    let Some(cfg) = CONFIG.get(0) else {
        return (stat::PASS, PASS);
    };
    let (src, l4) = match packet::parse(ctx) {
        Parsed::NotIp => return (stat::PASS_NOT_IP, PASS),
        Parsed::Malformed => return (stat::PASS_MALFORMED, PASS),
        Parsed::Ip { src, l4 } => (src, l4),
    };
    let syn = match l4 {
        Transport::Port { udp, port, syn } => {
            if cfg.flags & flags::PORT_FILTER != 0 && !port_protected(udp, port) {
                return (stat::PASS_UNPROTECTED, PASS);
            }
            syn
        }
        // Without ports a packet cannot be placed: `Other` protocols are not protected when a
        // port filter is set; fragments and truncated headers are (they may belong to a
        // protected flow, and the source address is all the filter needs).
        Transport::Other => {
            if cfg.flags & flags::PORT_FILTER != 0 {
                return (stat::PASS_UNPROTECTED, PASS);
            }
            false
        }
        Transport::Unknown => false,
    };

    let drop_slot = match &src {
        Source::V4(addr) => check_v4(cfg, addr, syn),
        Source::V6(addr) => check_v6(cfg, addr, syn),
    };
    match drop_slot {
        None => (stat::PASS, PASS),
        Some(slot) => {
            if allowlisted(cfg, &src) {
                (stat::PASS_ALLOWLIST, PASS)
            } else {
                (slot, DROP)
            }
        }
    }
}

#[inline(always)]
fn port_protected(udp: bool, port: u16) -> bool {
    let (word, bit) = port_slot(udp, port);
    PORTS.get(word).is_some_and(|w| w & bit != 0)
}

#[inline(always)]
fn allowlisted(cfg: &XdpConfig, src: &Source) -> bool {
    match src {
        Source::V4(addr) => {
            cfg.flags & flags::HAS_ALLOW_V4 != 0 && ALLOW_V4.get(Key::new(32, *addr)).is_some()
        }
        Source::V6(addr) => {
            cfg.flags & flags::HAS_ALLOW_V6 != 0 && ALLOW_V6.get(Key::new(128, *addr)).is_some()
        }
    }
}

#[inline(always)]
fn denied(value: Option<&DenyValue>) -> bool {
    // SAFETY: the helper has no preconditions.
    value.is_some_and(|v| v.expires_ns == 0 || v.is_active(unsafe { bpf_ktime_get_boot_ns() }))
}

/// The drop slot for an IPv4 source, or `None` to pass.
#[inline(always)]
fn check_v4(cfg: &XdpConfig, addr: &[u8; 4], syn: bool) -> Option<u32> {
    if cfg.flags & flags::HAS_DENY_V4 != 0 {
        // SAFETY: entries are only replaced whole by userspace (BPF_F_NO_PREALLOC hash).
        if denied(unsafe { DENY_V4.get(addr) }) {
            return Some(stat::DROP_DENY);
        }
    }
    if cfg.flags & flags::HAS_DENY_NET_V4 != 0 && denied(DENY_NET_V4.get(Key::new(32, *addr))) {
        return Some(stat::DROP_DENY_NET);
    }
    if cfg.pps_interval_ns | cfg.syn_interval_ns == 0 {
        return None;
    }
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(addr);
    rate_check(cfg, &RATE_V4, addr, key, 4, 32, syn)
}

#[inline(always)]
fn check_v6(cfg: &XdpConfig, addr: &[u8; 16], syn: bool) -> Option<u32> {
    if cfg.flags & flags::HAS_DENY_V6 != 0 {
        // SAFETY: as for IPv4.
        if denied(unsafe { DENY_V6.get(addr) }) {
            return Some(stat::DROP_DENY);
        }
    }
    if cfg.flags & flags::HAS_DENY_NET_V6 != 0 && denied(DENY_NET_V6.get(Key::new(128, *addr))) {
        return Some(stat::DROP_DENY_NET);
    }
    if cfg.pps_interval_ns | cfg.syn_interval_ns == 0 {
        return None;
    }
    // One bucket per prefix, so rotating addresses inside it buys nothing.
    let mut prefix = [0u8; 16];
    for i in 0..16 {
        prefix[i] = addr[i] & cfg.ipv6_mask[i];
    }
    rate_check(
        cfg,
        &RATE_V6,
        &prefix,
        prefix,
        6,
        cfg.ipv6_prefix_len as u8,
        syn,
    )
}

/// GCRA per source: admit while the theoretical arrival time is at most `tolerance` ahead of
/// now, and advance it by one interval per admitted packet. A dropped packet does not advance
/// it, so a source that slows down is admitted again at once. Updates race benignly across CPUs
/// (a lost update admits a packet more), which the cap tolerates.
#[inline(always)]
fn rate_check<K>(
    cfg: &XdpConfig,
    map: &LruHashMap<K, RateState>,
    key: &K,
    event_addr: [u8; 16],
    family: u8,
    prefix_len: u8,
    syn: bool,
) -> Option<u32> {
    // The coarse clock (one tick, a few ms) costs ~20 ns less per packet than the precise one,
    // measured on the rate-cap drop path (121 -> ~102 ns). Within a tick GCRA still admits at
    // most the burst; across ticks the rate is exact. Expiries keep the boot clock.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(state) = map.get_ptr_mut(key) else {
        let fresh = RateState {
            tat_ns: now + cfg.pps_interval_ns,
            syn_tat_ns: if syn { now + cfg.syn_interval_ns } else { now },
            last_report_ns: 0,
            dropped: 0,
        };
        // A concurrent insert for the same source may win; either is a fresh bucket.
        let _ = map.insert(key, fresh, BPF_NOEXIST as u64);
        return None;
    };
    // SAFETY: the pointer is valid for this program run; concurrent writers are tolerated above.
    let state = unsafe { &mut *state };
    // Both budgets are checked before either is charged: a packet dropped by one cap must not
    // spend the other (a SYN-capped client keeps its established connections).
    let mut over = 0;
    let mut pps_tat = state.tat_ns;
    if cfg.pps_interval_ns != 0 {
        let tat = if state.tat_ns > now {
            state.tat_ns
        } else {
            now
        };
        if tat - now > cfg.pps_tolerance_ns {
            over = stat::DROP_PPS_CAP;
        } else {
            pps_tat = tat + cfg.pps_interval_ns;
        }
    }
    let mut syn_tat = state.syn_tat_ns;
    if over == 0 && syn && cfg.syn_interval_ns != 0 {
        let tat = if state.syn_tat_ns > now {
            state.syn_tat_ns
        } else {
            now
        };
        if tat - now > cfg.syn_tolerance_ns {
            over = stat::DROP_SYN_CAP;
        } else {
            syn_tat = tat + cfg.syn_interval_ns;
        }
    }
    if over == 0 {
        state.tat_ns = pps_tat;
        state.syn_tat_ns = syn_tat;
        return None;
    }
    state.dropped += 1;
    if now - state.last_report_ns >= cfg.report_interval_ns
        && let Some(mut entry) = EVENTS.reserve::<RateEvent>(0)
    {
        entry.write(RateEvent {
            addr: event_addr,
            boot_ns: now,
            dropped: state.dropped,
            family,
            kind: over as u8,
            prefix_len,
            _pad: [0; 5],
        });
        entry.submit(0);
        state.last_report_ns = now;
        state.dropped = 0;
    }
    Some(over)
}
