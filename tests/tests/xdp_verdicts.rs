//! Verdicts of the XDP filter on crafted frames, run with `BPF_PROG_TEST_RUN` (nothing attached,
//! no namespaces). Each test loads the object with its own pinned maps, writes them the way the
//! daemon does (`gateway::xdp::Maps`) and checks, per frame, the action and the stats slot that
//! counted it: what an operator sees in `gateway stats`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use gateway::xdp::{Maps, PortRule, boot_ns_now, open_object, pin::BPFFS, programs::FILTER};
use gateway_common::{DenyValue, flags, origin, reason, stat};
use ipnet::IpNet;
use tests::{
    frames::{ETH_P_8021AD, ETH_P_8021Q, Ext, Frame, IPPROTO_ICMP, arp, tcp, truncate},
    privileged,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const SECOND: u64 = 1_000_000_000;

/// Removes the instance's pin directory, also when the test panics.
struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

/// The filter program loaded (not attached) with the maps of a private instance.
struct Filter {
    ebpf: Ebpf,
    maps: Maps,
    _pins: PinGuard,
}

impl Filter {
    fn load(test: &str) -> Self {
        let instance = format!("vt-{test}-{}", std::process::id());
        let bpffs = Path::new(BPFFS);
        let guard = PinGuard(bpffs.join("gateway").join(&instance));
        let (pins, mut ebpf) = open_object(bpffs, &instance).expect("loading the XDP object");
        let program: &mut Xdp = ebpf
            .program_mut(FILTER)
            .expect("filter program in the object")
            .try_into()
            .expect("filter is an XDP program");
        program.load().expect("the verifier accepts the filter");
        let maps = Maps::open(&pins).expect("opening the pinned maps");
        Self {
            ebpf,
            maps,
            _pins: guard,
        }
    }

    fn test_run(&self, frame: &[u8]) -> Result<u32, aya::programs::ProgramError> {
        let program: &Xdp = self
            .ebpf
            .program(FILTER)
            .expect("filter program")
            .try_into()
            .expect("XDP program");
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            })
            .map(|r| r.return_value)
    }

    /// Runs one frame: its action and the one stats slot it was counted in (with its length).
    fn run(&self, frame: &[u8]) -> (u32, u32) {
        let before = self.maps.stats().expect("reading stats");
        let action = self.test_run(frame).expect("BPF_PROG_TEST_RUN");
        let after = self.maps.stats().expect("reading stats");
        let counted: Vec<u32> = (0..stat::COUNT)
            .filter(|&s| after[s as usize] != before[s as usize])
            .collect();
        let [slot] = counted[..] else {
            panic!("one frame changed stats slots {counted:?}, expected exactly one");
        };
        let (b, a) = (before[slot as usize], after[slot as usize]);
        assert_eq!(
            (a.packets - b.packets, a.bytes - b.bytes),
            (1, frame.len() as u64),
            "slot {slot} counts one packet of the frame's length"
        );
        (action, slot)
    }

    /// Asserts that `frame` gets the verdict of stats slot `slot` (drop slots drop, others pass).
    #[track_caller]
    fn expect(&self, what: &str, frame: &[u8], slot: u32) {
        let (action, got) = self.run(frame);
        let want = if slot >= stat::DROP_DENY {
            XDP_DROP
        } else {
            XDP_PASS
        };
        assert_eq!(
            describe(action, got),
            describe(want, slot),
            "{what}: wrong verdict"
        );
    }

    /// Like [`Filter::expect`] for several cases of one rule, reporting every case that fails.
    #[track_caller]
    fn expect_all(&self, cases: &[(&str, Vec<u8>, u32)]) {
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|(what, frame, slot)| {
                let (action, got) = self.run(frame);
                let want = if *slot >= stat::DROP_DENY {
                    XDP_DROP
                } else {
                    XDP_PASS
                };
                (describe(action, got) != describe(want, *slot)).then(|| {
                    format!(
                        "{what}: got {}, expected {}",
                        describe(action, got),
                        describe(want, *slot)
                    )
                })
            })
            .collect();
        assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
    }

    fn deny(&mut self, net: &str, expires_ns: u64) {
        let value = DenyValue {
            expires_ns,
            created_unix: gateway::xdp::unix_now(),
            reason: reason::OPERATOR,
            origin: origin::MANUAL,
            _pad: [0; 5],
        };
        self.maps
            .deny(prefix(net), value)
            .expect("adding a deny entry");
    }

    fn allow(&mut self, net: &str) {
        self.maps
            .allow(prefix(net), origin::MANUAL)
            .expect("adding an allow entry");
    }

    /// Turns the protected-ports filter on for `rules` ("tcp/443").
    fn protect(&mut self, rules: &[&str]) {
        let rules: Vec<PortRule> = rules
            .iter()
            .map(|r| r.parse().expect("port rule"))
            .collect();
        self.maps
            .set_ports(&rules)
            .expect("writing the ports bitmap");
        let mut cfg = self.maps.config().expect("reading config");
        cfg.flags |= flags::PORT_FILTER;
        self.maps.set_config(cfg).expect("writing config");
    }

    /// Sets the caps: `(pps, burst)` for all packets and for TCP SYNs, IPv6 bucket prefix.
    fn caps(&mut self, pps: Option<(u64, u64)>, syn: Option<(u64, u64)>, ipv6_prefix: u32) {
        let mut cfg = self.maps.config().expect("reading config");
        (cfg.pps_interval_ns, cfg.pps_tolerance_ns) = pps.map_or((0, 0), gcra);
        (cfg.syn_interval_ns, cfg.syn_tolerance_ns) = syn.map_or((0, 0), gcra);
        cfg.report_interval_ns = SECOND;
        cfg.ipv6_prefix_len = ipv6_prefix;
        cfg.ipv6_mask = (u128::MAX.checked_shl(128 - ipv6_prefix).unwrap_or(0)).to_be_bytes();
        self.maps.set_config(cfg).expect("writing config");
    }
}

/// GCRA interval and tolerance for `pps` packets per second with bursts of `burst` packets.
fn gcra((pps, burst): (u64, u64)) -> (u64, u64) {
    let interval = SECOND / pps;
    (interval, interval * (burst - 1))
}

fn describe(action: u32, slot: u32) -> String {
    let action = match action {
        XDP_DROP => "XDP_DROP".to_owned(),
        XDP_PASS => "XDP_PASS".to_owned(),
        other => format!("action {other}"),
    };
    let (verdict, reason) = stat::NAMES[slot as usize];
    format!("{action}, counted as {verdict}/{reason}")
}

fn prefix(s: &str) -> IpNet {
    s.parse()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .expect("test address or prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A TCP SYN to port 443 from `src`.
fn syn(src: &str) -> Vec<u8> {
    Frame::new(ip(src)).build()
}

#[test]
fn denylisted_hosts_drop_and_other_sources_pass() {
    if !privileged("denylisted_hosts_drop_and_other_sources_pass") {
        return;
    }
    let mut f = Filter::load("host");
    f.deny("192.0.2.1", 0);
    f.deny("2001:db8::1", 0);

    f.expect("denied v4 SYN", &syn("192.0.2.1"), stat::DROP_DENY);
    f.expect("denied v6 SYN", &syn("2001:db8::1"), stat::DROP_DENY);
    f.expect("other v4 source", &syn("192.0.2.2"), stat::PASS);
    f.expect("other v6 source", &syn("2001:db8::2"), stat::PASS);
    let udp = Frame::new(ip("192.0.2.1")).udp(53).build();
    f.expect("denied v4, UDP", &udp, stat::DROP_DENY);

    let stats = f.maps.stats().expect("stats");
    assert_eq!(stats[stat::DROP_DENY as usize].packets, 3);
    assert_eq!(stats[stat::PASS as usize].packets, 2);
    let v4_syn_len = syn("192.0.2.1").len() as u64;
    let v6_syn_len = syn("2001:db8::1").len() as u64;
    assert_eq!(
        stats[stat::PASS as usize].bytes,
        v4_syn_len + v6_syn_len,
        "bytes counted per frame"
    );
}

#[test]
fn cidr_deny_drops_inside_the_prefix_only() {
    if !privileged("cidr_deny_drops_inside_the_prefix_only") {
        return;
    }
    let mut f = Filter::load("cidr");
    f.deny("198.51.100.0/24", 0);
    f.deny("2001:db8:aa::/48", 0);

    f.expect("v4 first", &syn("198.51.100.0"), stat::DROP_DENY_NET);
    f.expect("v4 last", &syn("198.51.100.255"), stat::DROP_DENY_NET);
    f.expect("v4 below", &syn("198.51.99.255"), stat::PASS);
    f.expect("v4 above", &syn("198.51.101.0"), stat::PASS);
    f.expect("v6 inside", &syn("2001:db8:aa::1"), stat::DROP_DENY_NET);
    f.expect(
        "v6 inside, last",
        &syn("2001:db8:aa:ffff:ffff:ffff:ffff:ffff"),
        stat::DROP_DENY_NET,
    );
    f.expect("v6 next /48", &syn("2001:db8:ab::1"), stat::PASS);
    f.expect("v6 previous /48", &syn("2001:db8:a9:ffff::1"), stat::PASS);
}

#[test]
fn deny_entries_expire_on_the_boot_clock() {
    if !privileged("deny_entries_expire_on_the_boot_clock") {
        return;
    }
    let mut f = Filter::load("expiry");
    let now = boot_ns_now();
    f.deny("192.0.2.1", now - SECOND);
    f.deny("192.0.2.2", now + 3600 * SECOND);
    f.deny("192.0.2.3", 0);
    f.deny("2001:db8:1::/48", now - SECOND);
    f.deny("2001:db8:2::/48", now + 3600 * SECOND);

    f.expect("expired host", &syn("192.0.2.1"), stat::PASS);
    f.expect("host expiring later", &syn("192.0.2.2"), stat::DROP_DENY);
    f.expect("permanent host", &syn("192.0.2.3"), stat::DROP_DENY);
    f.expect("expired prefix", &syn("2001:db8:1::9"), stat::PASS);
    f.expect(
        "prefix expiring later",
        &syn("2001:db8:2::9"),
        stat::DROP_DENY_NET,
    );
}

#[test]
fn allowlist_overrides_deny_and_caps() {
    if !privileged("allowlist_overrides_deny_and_caps") {
        return;
    }
    let mut f = Filter::load("allow");
    f.allow("192.0.2.0/24");
    f.allow("2001:db8:1::/48");
    f.deny("192.0.2.7", 0);
    f.deny("192.0.2.0/25", 0);
    f.deny("2001:db8:1::7", 0);
    f.deny("2001:db8:1:0::/64", 0);
    f.deny("2001:db8:2::1", 0);
    f.caps(Some((1, 1)), None, 64);

    for _ in 0..3 {
        f.expect(
            "allowed + denied host",
            &syn("192.0.2.7"),
            stat::PASS_ALLOWLIST,
        );
        f.expect(
            "allowed + denied net",
            &syn("192.0.2.8"),
            stat::PASS_ALLOWLIST,
        );
        f.expect(
            "allowed + denied v6 host",
            &syn("2001:db8:1::7"),
            stat::PASS_ALLOWLIST,
        );
        f.expect(
            "allowed + denied v6 net",
            &syn("2001:db8:1::8"),
            stat::PASS_ALLOWLIST,
        );
    }
    // Over the cap (burst 1): the first packet is within it, the rest would be capped.
    f.expect("allowed, first", &syn("192.0.2.200"), stat::PASS);
    f.expect("allowed, capped", &syn("192.0.2.200"), stat::PASS_ALLOWLIST);
    f.expect("allowed, capped", &syn("192.0.2.200"), stat::PASS_ALLOWLIST);
    // The same cap drops a source outside the allowlist.
    f.expect("not allowed, first", &syn("203.0.113.9"), stat::PASS);
    f.expect(
        "not allowed, capped",
        &syn("203.0.113.9"),
        stat::DROP_PPS_CAP,
    );
    f.expect(
        "denied, not allowed",
        &syn("2001:db8:2::1"),
        stat::DROP_DENY,
    );
}

#[test]
fn vlan_tags_up_to_two_are_walked() {
    if !privileged("vlan_tags_up_to_two_are_walked") {
        return;
    }
    let mut f = Filter::load("vlan");
    f.deny("192.0.2.1", 0);
    f.deny("2001:db8::1", 0);

    for src in ["192.0.2.1", "2001:db8::1"] {
        let frame = Frame::new(ip(src));
        f.expect(
            "802.1Q",
            &frame.clone().vlan(ETH_P_8021Q).build(),
            stat::DROP_DENY,
        );
        f.expect(
            "QinQ",
            &frame.clone().vlan(ETH_P_8021AD).vlan(ETH_P_8021Q).build(),
            stat::DROP_DENY,
        );
        f.expect(
            "802.1Q in 802.1Q",
            &frame.clone().vlan(ETH_P_8021Q).vlan(ETH_P_8021Q).build(),
            stat::DROP_DENY,
        );
        // The parser stops after two tags: the third tag's TPID is not an IP ethertype.
        let three = frame
            .vlan(ETH_P_8021AD)
            .vlan(ETH_P_8021Q)
            .vlan(ETH_P_8021Q)
            .build();
        f.expect("three tags", &three, stat::PASS_NOT_IP);
    }
    f.expect(
        "QinQ, other source",
        &Frame::new(ip("192.0.2.2"))
            .vlan(ETH_P_8021AD)
            .vlan(ETH_P_8021Q)
            .build(),
        stat::PASS,
    );
    // A tag cut before its inner ethertype.
    let cut = truncate(&Frame::new(ip("192.0.2.1")).vlan(ETH_P_8021Q).build(), 17);
    f.expect("tag cut short", &cut, stat::PASS_NOT_IP);
}

#[test]
fn ipv4_options_do_not_hide_the_port() {
    if !privileged("ipv4_options_do_not_hide_the_port") {
        return;
    }
    let mut f = Filter::load("v4opts");
    f.deny("192.0.2.1", 0);
    f.protect(&["tcp/443"]);

    let frame = Frame::new(ip("192.0.2.1")).ipv4_options(10);
    assert_eq!(frame.build()[frame.l3_offset()], 0x4f, "IHL = 15");
    f.expect(
        "tcp/443",
        &frame.clone().tcp(443, tcp::SYN).build(),
        stat::DROP_DENY,
    );
    f.expect(
        "tcp/80",
        &frame.clone().tcp(80, tcp::SYN).build(),
        stat::PASS_UNPROTECTED,
    );
    f.expect(
        "udp/443",
        &frame.clone().udp(443).build(),
        stat::PASS_UNPROTECTED,
    );
    f.expect(
        "ICMP",
        &frame.protocol(IPPROTO_ICMP).build(),
        stat::PASS_UNPROTECTED,
    );
    // Without options, the same.
    f.expect("no options, tcp/443", &syn("192.0.2.1"), stat::DROP_DENY);
    let plain = Frame::new(ip("192.0.2.1")).tcp(80, tcp::SYN).build();
    f.expect("no options, tcp/80", &plain, stat::PASS_UNPROTECTED);
}

#[test]
fn fragments_without_ports_are_protected() {
    if !privileged("fragments_without_ports_are_protected") {
        return;
    }
    let mut f = Filter::load("frag");
    f.deny("192.0.2.1", 0);
    f.deny("2001:db8::1", 0);
    f.protect(&["tcp/443"]);

    // Non-first fragments: the bytes after the IP header are data, even if they look like a
    // header for an unprotected port.
    let v4 = Frame::new(ip("192.0.2.1")).tcp(80, tcp::SYN);
    f.expect(
        "v4, offset 185, MF",
        &v4.clone().ipv4_fragment(185, true).build(),
        stat::DROP_DENY,
    );
    f.expect(
        "v4, last fragment",
        &v4.clone().ipv4_fragment(1, false).build(),
        stat::DROP_DENY,
    );
    let v6 = Frame::new(ip("2001:db8::1")).tcp(80, tcp::SYN);
    f.expect(
        "v6, offset 185, M",
        &v6.clone()
            .ext(Ext::Fragment {
                offset: 185,
                more: true,
            })
            .build(),
        stat::DROP_DENY,
    );
    f.expect(
        "v6, last fragment after hop-by-hop",
        &v6.clone()
            .ext(Ext::HopByHop(0))
            .ext(Ext::Fragment {
                offset: 1,
                more: false,
            })
            .build(),
        stat::DROP_DENY,
    );
    // First fragments carry the transport header.
    f.expect(
        "v4 first fragment, tcp/80",
        &v4.ipv4_fragment(0, true).build(),
        stat::PASS_UNPROTECTED,
    );
    let first = Ext::Fragment {
        offset: 0,
        more: true,
    };
    f.expect(
        "v6 first fragment, tcp/80",
        &v6.ext(first).build(),
        stat::PASS_UNPROTECTED,
    );
    let v6_443 = Frame::new(ip("2001:db8::1")).ext(first).build();
    f.expect("v6 first fragment, tcp/443", &v6_443, stat::DROP_DENY);
    // A non-first fragment from a source nobody denied passes.
    let other = Frame::new(ip("192.0.2.2"))
        .ipv4_fragment(185, false)
        .build();
    f.expect("other source, fragment", &other, stat::PASS);
}

#[test]
fn ipv6_extension_chains_are_walked_to_the_port() {
    if !privileged("ipv6_extension_chains_are_walked_to_the_port") {
        return;
    }
    let mut f = Filter::load("v6ext");
    f.deny("2001:db8::1", 0);
    f.protect(&["tcp/443", "udp/443"]);

    let chain = Frame::new(ip("2001:db8::1"))
        .ext(Ext::HopByHop(0))
        .ext(Ext::DestOpts(1))
        .ext(Ext::Routing(2));
    f.expect(
        "hbh + dstopts + routing, tcp/443",
        &chain.clone().tcp(443, tcp::SYN).build(),
        stat::DROP_DENY,
    );
    f.expect(
        "hbh + dstopts + routing, tcp/80",
        &chain.clone().tcp(80, tcp::SYN).build(),
        stat::PASS_UNPROTECTED,
    );
    f.expect(
        "hbh + dstopts + routing, udp/443",
        &chain.clone().udp(443).build(),
        stat::DROP_DENY,
    );
    f.expect(
        "hbh + dstopts + routing, udp/53",
        &chain.clone().udp(53).build(),
        stat::PASS_UNPROTECTED,
    );
    f.expect(
        "hbh + dstopts + routing, ICMPv6",
        &chain.clone().protocol(58).build(),
        stat::PASS_UNPROTECTED,
    );

    // Seven extension headers: too long to walk, so the port is unknown and the source filtered.
    let mut seven = Frame::new(ip("2001:db8::1"));
    for _ in 0..7 {
        seven = seven.ext(Ext::DestOpts(0));
    }
    f.expect(
        "7 headers, tcp/80",
        &seven.tcp(80, tcp::SYN).build(),
        stat::DROP_DENY,
    );

    // A chain cut anywhere after the source address: the port is unknown, the source filtered.
    let frame = chain.tcp(80, tcp::SYN);
    let bytes = frame.build();
    let source_end = frame.l3_offset() + 24;
    for len in source_end..frame.l4_offset() + 14 {
        f.expect(
            &format!("chain cut at {len} of {}", bytes.len()),
            &truncate(&bytes, len),
            stat::DROP_DENY,
        );
    }
    // Cut inside the source address: nothing to filter on.
    f.expect(
        "cut inside the source",
        &truncate(&bytes, source_end - 1),
        stat::PASS_MALFORMED,
    );
    // Only the transport header's first 14 bytes are needed.
    f.expect(
        "TCP header up to its flags",
        &truncate(&bytes, frame.l4_offset() + 14),
        stat::PASS_UNPROTECTED,
    );
}

/// The program walks at most 6 extension headers; a chain of exactly 6 must still reach the
/// transport header (only longer chains are "too long to walk").
#[test]
fn ipv6_six_extension_headers_still_reach_the_port() {
    if !privileged("ipv6_six_extension_headers_still_reach_the_port") {
        return;
    }
    let mut f = Filter::load("v6six");
    f.deny("2001:db8::1", 0);
    f.protect(&["tcp/443"]);

    let chain = |n| {
        (0..n).fold(Frame::new(ip("2001:db8::1")), |frame, _| {
            frame.ext(Ext::DestOpts(0))
        })
    };
    f.expect_all(&[
        (
            "5 headers, tcp/80",
            chain(5).tcp(80, tcp::SYN).build(),
            stat::PASS_UNPROTECTED,
        ),
        (
            "6 headers, tcp/443",
            chain(6).tcp(443, tcp::SYN).build(),
            stat::DROP_DENY,
        ),
        (
            "6 headers, tcp/80",
            chain(6).tcp(80, tcp::SYN).build(),
            stat::PASS_UNPROTECTED,
        ),
        (
            "6 headers, udp/53",
            chain(6).udp(53).build(),
            stat::PASS_UNPROTECTED,
        ),
    ]);
}

/// AH's length field counts 4-byte units minus 2 (RFC 4302), unlike the other extension
/// headers (8-byte units minus 1): the walk must use the unit of the header it is skipping.
#[test]
fn ipv6_authentication_header_length_in_4_byte_units() {
    if !privileged("ipv6_authentication_header_length_in_4_byte_units") {
        return;
    }
    let mut f = Filter::load("v6ah");
    f.deny("2001:db8::1", 0);
    f.protect(&["tcp/443"]);

    let src = || Frame::new(ip("2001:db8::1"));
    f.expect_all(&[
        (
            "AH, tcp/443",
            src().ext(Ext::Ah(3)).tcp(443, tcp::SYN).build(),
            stat::DROP_DENY,
        ),
        (
            "AH (24 bytes), tcp/80",
            src().ext(Ext::Ah(3)).tcp(80, tcp::SYN).build(),
            stat::PASS_UNPROTECTED,
        ),
        (
            "hop-by-hop (8 bytes) + AH (24 bytes), tcp/80",
            src()
                .ext(Ext::HopByHop(0))
                .ext(Ext::Ah(3))
                .tcp(80, tcp::SYN)
                .build(),
            stat::PASS_UNPROTECTED,
        ),
        (
            "hop-by-hop (16 bytes) + AH (24 bytes), tcp/80",
            src()
                .ext(Ext::HopByHop(1))
                .ext(Ext::Ah(3))
                .tcp(80, tcp::SYN)
                .build(),
            stat::PASS_UNPROTECTED,
        ),
        (
            "AH (32 bytes) + dest-opts, tcp/80",
            src()
                .ext(Ext::Ah(5))
                .ext(Ext::DestOpts(0))
                .tcp(80, tcp::SYN)
                .build(),
            stat::PASS_UNPROTECTED,
        ),
    ]);
}

#[test]
fn truncated_headers() {
    if !privileged("truncated_headers") {
        return;
    }
    let mut f = Filter::load("trunc");
    f.deny("192.0.2.1", 0);
    f.deny("2001:db8::1", 0);
    f.protect(&["tcp/443", "udp/443"]);

    // IPv4 cut before the end of the source address: nothing to filter on, passes (the kernel
    // stack drops it), even though the would-be source is denied.
    let v4 = Frame::new(ip("192.0.2.1")).tcp(80, tcp::SYN);
    let bytes = v4.build();
    let l3 = v4.l3_offset();
    for len in [l3, l3 + 1, l3 + 12, l3 + 15] {
        f.expect(
            &format!("IPv4 cut at {len}"),
            &truncate(&bytes, len),
            stat::PASS_MALFORMED,
        );
    }
    // Source present, transport header cut: ports unknown, so protected.
    for len in [l3 + 16, l3 + 20, v4.l4_offset() + 4, v4.l4_offset() + 13] {
        f.expect(
            &format!("IPv4 TCP cut at {len}"),
            &truncate(&bytes, len),
            stat::DROP_DENY,
        );
    }
    let other = Frame::new(ip("192.0.2.2")).tcp(80, tcp::SYN);
    f.expect(
        "other source, TCP cut",
        &truncate(&other.build(), other.l4_offset() + 4),
        stat::PASS,
    );
    let udp = Frame::new(ip("192.0.2.1")).udp(53);
    f.expect(
        "UDP cut at 3 bytes",
        &truncate(&udp.build(), udp.l4_offset() + 3),
        stat::DROP_DENY,
    );
    f.expect(
        "UDP with its ports",
        &truncate(&udp.build(), udp.l4_offset() + 4),
        stat::PASS_UNPROTECTED,
    );
    // An IHL below 5 is not an IPv4 header.
    let mut bad_ihl = bytes.clone();
    bad_ihl[l3] = 0x44;
    f.expect("IHL 4", &bad_ihl, stat::PASS_MALFORMED);

    let v6 = Frame::new(ip("2001:db8::1")).tcp(80, tcp::SYN);
    let bytes = v6.build();
    let l3 = v6.l3_offset();
    f.expect(
        "IPv6 cut inside the source",
        &truncate(&bytes, l3 + 23),
        stat::PASS_MALFORMED,
    );
    f.expect(
        "IPv6 without payload",
        &truncate(&bytes, l3 + 40),
        stat::DROP_DENY,
    );
    f.expect(
        "IPv6 TCP cut",
        &truncate(&bytes, v6.l4_offset() + 13),
        stat::DROP_DENY,
    );
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
    if !privileged("frames_shorter_than_ethernet_are_refused_by_the_kernel") {
        return;
    }
    let f = Filter::load("short");
    let bytes = syn("192.0.2.1");
    for len in [0, 1, 13] {
        assert!(
            f.test_run(&truncate(&bytes, len)).is_err(),
            "BPF_PROG_TEST_RUN accepted a {len}-byte frame"
        );
    }
    // 14 bytes, an IP ethertype and nothing else: the program runs, the header is missing.
    f.expect(
        "Ethernet header only",
        &truncate(&bytes, 14),
        stat::PASS_MALFORMED,
    );
}

#[test]
fn non_ip_frames_pass() {
    if !privileged("non_ip_frames_pass") {
        return;
    }
    let mut f = Filter::load("nonip");
    f.deny("192.0.2.0/24", 0);
    f.caps(Some((1, 1)), None, 64);

    for _ in 0..3 {
        f.expect(
            "ARP from a denied address",
            &arp("192.0.2.1".parse().expect("address")),
            stat::PASS_NOT_IP,
        );
    }
    let mut lldp = syn("192.0.2.1");
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    f.expect("LLDP ethertype", &lldp, stat::PASS_NOT_IP);
}

#[test]
fn pps_cap_admits_exactly_the_burst() {
    if !privileged("pps_cap_admits_exactly_the_burst") {
        return;
    }
    let mut f = Filter::load("pps");
    // 1 pps with bursts of 5: the loop below takes microseconds, far below the 1 s interval.
    f.caps(Some((1, 5)), None, 64);

    let capped = syn("192.0.2.1");
    let verdicts: Vec<u32> = (0..20).map(|_| f.run(&capped).1).collect();
    let mut want = vec![stat::PASS; 5];
    want.resize(20, stat::DROP_PPS_CAP);
    assert_eq!(verdicts, want, "first 5 pass, the rest are capped");
    for _ in 0..5 {
        f.expect("another source", &syn("192.0.2.2"), stat::PASS);
    }
    f.expect(
        "another source over its burst",
        &syn("192.0.2.2"),
        stat::DROP_PPS_CAP,
    );
    f.expect("still capped", &capped, stat::DROP_PPS_CAP);
    let stats = f.maps.stats().expect("stats");
    assert_eq!(stats[stat::DROP_PPS_CAP as usize].packets, 17);
}

#[test]
fn ipv6_sources_share_a_bucket_per_prefix() {
    if !privileged("ipv6_sources_share_a_bucket_per_prefix") {
        return;
    }
    let mut f = Filter::load("v6pps");
    f.caps(Some((1, 5)), None, 64);

    for _ in 0..5 {
        f.expect("first address", &syn("2001:db8:1:1::1"), stat::PASS);
    }
    f.expect(
        "first address over",
        &syn("2001:db8:1:1::1"),
        stat::DROP_PPS_CAP,
    );
    f.expect(
        "second address, same /64",
        &syn("2001:db8:1:1:ffff:ffff:ffff:ffff"),
        stat::DROP_PPS_CAP,
    );
    for _ in 0..5 {
        f.expect("another /64", &syn("2001:db8:1:2::1"), stat::PASS);
    }
    f.expect(
        "another /64 over",
        &syn("2001:db8:1:2::2"),
        stat::DROP_PPS_CAP,
    );
}

#[test]
fn syn_cap_limits_syns_not_acks() {
    if !privileged("syn_cap_limits_syns_not_acks") {
        return;
    }
    let mut f = Filter::load("syn");
    // A generous packet cap and 1 SYN/s with bursts of 3.
    f.caps(Some((1000, 1000)), Some((1, 3)), 64);

    for src in ["192.0.2.1", "2001:db8::1"] {
        let frame = Frame::new(ip(src));
        let syn = frame.clone().tcp(443, tcp::SYN).build();
        let verdicts: Vec<u32> = (0..10).map(|_| f.run(&syn).1).collect();
        let mut want = vec![stat::PASS; 3];
        want.resize(10, stat::DROP_SYN_CAP);
        assert_eq!(
            verdicts, want,
            "{src}: first 3 SYNs pass, the rest are capped"
        );
        let ack = frame.clone().tcp(443, tcp::ACK).build();
        let syn_ack = frame.clone().tcp(443, tcp::SYN | tcp::ACK).build();
        let udp = frame.udp(443).build();
        for _ in 0..10 {
            f.expect("ACK", &ack, stat::PASS);
            f.expect("SYN+ACK", &syn_ack, stat::PASS);
            f.expect("UDP", &udp, stat::PASS);
        }
    }
    f.expect("another source's SYN", &syn("192.0.2.2"), stat::PASS);
}

/// A SYN dropped by the SYN cap is a dropped packet: it must not use up the source's packet
/// budget, or a client that opens connections too fast also loses its established flows.
#[test]
fn syn_capped_packets_do_not_use_the_pps_budget() {
    if !privileged("syn_capped_packets_do_not_use_the_pps_budget") {
        return;
    }
    let mut f = Filter::load("synpps");
    // 10 pps in bursts of 10, 1 SYN/s in bursts of 1.
    f.caps(Some((10, 10)), Some((1, 1)), 64);

    let frame = Frame::new(ip("192.0.2.1"));
    let syn = frame.clone().tcp(443, tcp::SYN).build();
    let verdicts: Vec<u32> = (0..10).map(|_| f.run(&syn).1).collect();
    let mut want = vec![stat::PASS];
    want.resize(10, stat::DROP_SYN_CAP);
    assert_eq!(verdicts, want, "one SYN passes, the rest are SYN-capped");
    // One packet admitted so far: 9 more fit in the burst.
    let ack = frame.tcp(443, tcp::ACK).build();
    f.expect_all(&[
        ("ACK 1 after the capped SYNs", ack.clone(), stat::PASS),
        ("ACK 2", ack.clone(), stat::PASS),
        ("ACK 3", ack, stat::PASS),
    ]);
}
