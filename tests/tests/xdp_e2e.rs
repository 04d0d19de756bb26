//! End to end: the real `gateway` binary with its XDP filter attached to a veth in a network
//! namespace, a second namespace holding the client and attacker addresses, real TCP and UDP.
//!
//! Topology (per test): see `tests::topo`.

use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use tests::{
    daemon::{Daemon, Instance},
    frames::{Frame, tcp},
    privileged, raw,
    topo::*,
};

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn blocked_hosts_and_cidrs_cannot_connect_v4_and_v6_while_the_client_can() {
    if !privileged("blocked_hosts_and_cidrs") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("block");
    let _daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    let server = Server::start(&topo);

    for src in [CLIENT, ATTACKER, CLIENT6, ATTACKER6] {
        assert!(connects(&topo, src, &server), "{src} before any block");
    }

    // Exact /32 and /128.
    inst.cli_ok(&["block", "add", ATTACKER, "--reason", "scanner"]);
    inst.cli_ok(&["block", "add", ATTACKER6]);
    assert!(!connects(&topo, ATTACKER, &server), "blocked /32 connected");
    assert!(
        !connects(&topo, ATTACKER6, &server),
        "blocked /128 connected"
    );
    assert!(
        connects(&topo, CLIENT, &server),
        "client hit by a /32 block"
    );
    assert!(
        connects(&topo, CLIENT6, &server),
        "client hit by a /128 block"
    );
    assert!(inst.packets("denylist") > 0, "exact drops not counted");

    // rm restores at once.
    inst.cli_ok(&["block", "rm", ATTACKER]);
    inst.cli_ok(&["block", "rm", ATTACKER6]);
    assert!(
        connects(&topo, ATTACKER, &server),
        "unblocked /32 still dropped"
    );
    assert!(
        connects(&topo, ATTACKER6, &server),
        "unblocked /128 still dropped"
    );

    // CIDR blocks catch every address inside, nothing outside.
    inst.cli_ok(&["block", "add", ATTACKER_NET, "--ttl", "1h"]);
    inst.cli_ok(&["block", "add", ATTACKER6_NET]);
    assert!(!connects(&topo, ATTACKER, &server));
    assert!(!connects(&topo, "198.18.5.67", &server));
    assert!(!connects(&topo, ATTACKER6_SAME64, &server));
    assert!(
        connects(&topo, "198.18.9.9", &server),
        "outside the /24 dropped"
    );
    assert!(connects(&topo, OTHER6, &server), "outside the /64 dropped");
    assert!(inst.packets("denylist-cidr") > 0, "CIDR drops not counted");

    let list: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["block", "list", "--json"])).expect("json");
    let rows = list.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{list}");
    let v4 = rows
        .iter()
        .find(|r| r["address"] == ATTACKER_NET)
        .expect("v4 cidr listed");
    assert_eq!(v4["origin"], "manual");
    let ttl = v4["ttl_seconds"].as_u64().expect("ttl");
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    let v6 = rows
        .iter()
        .find(|r| r["address"] == ATTACKER6_NET)
        .expect("v6 cidr listed");
    assert!(
        v6["ttl_seconds"].is_null(),
        "permanent block has a ttl: {v6}"
    );
}

#[test]
fn expiry_lets_traffic_back_in_and_is_swept() {
    if !privileged("expiry") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("expiry");
    let _daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    let server = Server::start(&topo);

    inst.cli_ok(&["block", "add", ATTACKER, "--ttl", "2s"]);
    let blocked_at = Instant::now();
    assert!(
        !connects(&topo, ATTACKER, &server),
        "block with ttl did not drop"
    );
    wait_until("the block to expire", Duration::from_secs(5), || {
        connects(&topo, ATTACKER, &server)
    });
    assert!(
        blocked_at.elapsed() >= Duration::from_secs(2),
        "traffic came back before the TTL"
    );
    wait_until("the sweeper to remove it", Duration::from_secs(3), || {
        inst.cli_ok(&["block", "list", "--json"]).trim() == "[]"
    });
}

#[test]
fn over_cap_sources_are_dropped_counted_and_reported_under_cap_untouched() {
    if !privileged("rate_cap") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("cap");
    let mut daemon = Daemon::start(
        &inst,
        &topo.gw,
        &xdp_config("  rate_cap: { pps: 200, burst: 200, ipv6_prefix: 64 }\n"),
    );
    let server = Server::start(&topo);

    let before = inst.packets("pps-cap");
    let took = udp_burst(&topo, ATTACKER, 3000, 64);
    let dropped = inst.packets("pps-cap") - before;
    // Admitted: the burst (200) plus 200/s while sending, plus slack for scheduling.
    let admitted_max = 200 + (took.as_secs_f64() * 200.0) as u64 + 50;
    assert!(
        dropped >= 3000 - admitted_max && dropped <= 2800,
        "3000 sent in {took:?}: {dropped} dropped, expected {}..=2800",
        3000 - admitted_max
    );
    daemon.wait_for_log("198.18.5.66/32", Duration::from_secs(3));
    assert!(daemon.logs_contain("packet-rate cap"), "no report logged");

    // A source under its cap is untouched, even right after the flood.
    let before = inst.packets("pps-cap");
    assert!(connects(&topo, CLIENT, &server), "client under cap dropped");
    udp_burst(&topo, CLIENT, 50, 64);
    assert_eq!(inst.packets("pps-cap"), before, "under-cap source dropped");

    // IPv6: one bucket per /64, so a second address in the attacker's /64 gets no fresh budget,
    // while another /64 does.
    udp_burst(&topo, ATTACKER6, 1000, 64);
    let before = inst.packets("pps-cap");
    udp_burst(&topo, ATTACKER6_SAME64, 100, 64);
    let same64 = inst.packets("pps-cap") - before;
    assert!(
        same64 >= 70,
        "rotating inside the /64 escaped the cap: {same64}/100 dropped"
    );
    let before = inst.packets("pps-cap");
    udp_burst(&topo, OTHER6, 100, 64);
    assert_eq!(inst.packets("pps-cap"), before, "another /64 was capped");
    daemon.wait_for_log("2001:db8:0:5::/64", Duration::from_secs(3));
}

#[test]
fn allowlist_beats_denylist_and_caps() {
    if !privileged("allowlist") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("allow");
    let _daemon = Daemon::start(
        &inst,
        &topo.gw,
        &xdp_config(&format!(
            "  management: [{CLIENT}]\n  rate_cap: {{ pps: 50, burst: 50 }}\n"
        )),
    );
    let server = Server::start(&topo);

    // The operator blocks their own management address, and a CIDR around it.
    inst.cli_ok(&["block", "add", CLIENT]);
    inst.cli_ok(&["block", "add", "198.18.0.0/16"]);
    assert!(
        connects(&topo, CLIENT, &server),
        "management address locked out"
    );
    assert!(
        !connects(&topo, "198.18.9.9", &server),
        "CIDR did not apply to others"
    );
    // And floods from it far over the cap.
    let capped = inst.packets("pps-cap");
    udp_burst(&topo, CLIENT, 1000, 64);
    assert_eq!(
        inst.packets("pps-cap"),
        capped,
        "management address was rate-capped"
    );
    assert!(
        inst.packets("allowlist") >= 1000,
        "allowlist passes not counted"
    );

    // An allowlist entry added at run time works the same; removing it restores the block.
    inst.cli_ok(&["allow", "add", "198.18.9.9", "--reason", "partner"]);
    assert!(connects(&topo, "198.18.9.9", &server));
    inst.cli_ok(&["allow", "rm", "198.18.9.9"]);
    assert!(!connects(&topo, "198.18.9.9", &server));
    let allowed = inst.cli_ok(&["allow", "list", "--json"]);
    assert!(
        allowed.contains("198.18.0.10/32") && allowed.contains("\"config\""),
        "{allowed}"
    );
}

#[test]
fn vlan_tagged_traffic_is_filtered_on_the_inner_source() {
    if !privileged("vlan") {
        return;
    }
    // Tagged frames are made by hand: this kernel has no 802.1Q devices, and a veth would carry
    // the tag in skb metadata rather than in the frame anyway. What matters is what XDP sees.
    let topo = topo();
    let inst = Instance::new("vlan");
    let _daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    inst.cli_ok(&["block", "add", ATTACKER]);
    inst.cli_ok(&["block", "add", ATTACKER6]);
    let attacker: IpAddr = ATTACKER.parse().expect("ip");
    let attacker6: IpAddr = ATTACKER6.parse().expect("ip");
    let client: IpAddr = CLIENT.parse().expect("ip");
    let n = 100;
    let repeat = |f: Frame| vec![f.build(); n];

    let (denied, passed, not_ip) = (
        inst.packets("denylist"),
        inst.packets("no-match"),
        inst.packets("not-ip"),
    );
    // 802.1Q, and QinQ (802.1ad outer, 802.1Q inner), IPv4 and IPv6, from blocked sources.
    for frame in [
        Frame::new(attacker).vlan(0x8100).udp(7000),
        Frame::new(attacker).vlan(0x88a8).vlan(0x8100).udp(7000),
        Frame::new(attacker6).vlan(0x8100).tcp(443, tcp::SYN),
        Frame::new(attacker6)
            .vlan(0x88a8)
            .vlan(0x8100)
            .tcp(443, tcp::SYN),
    ] {
        raw::send(&topo.out, "out0", &repeat(frame));
    }
    assert_eq!(
        inst.packets("denylist") - denied,
        4 * n as u64,
        "tagged blocked frames passed"
    );

    // The same shapes from the client pass.
    raw::send(
        &topo.out,
        "out0",
        &repeat(Frame::new(client).vlan(0x88a8).vlan(0x8100).udp(7000)),
    );
    assert_eq!(
        inst.packets("denylist") - denied,
        4 * n as u64,
        "client's tagged frames dropped"
    );
    assert!(
        inst.packets("no-match") - passed >= n as u64,
        "client's tagged frames not passed"
    );

    // Documented limit: two tags are parsed; a third tag hides the IP header, so the frame
    // passes as not-IP (the kernel stack, which has no such VLAN, drops it).
    raw::send(
        &topo.out,
        "out0",
        &repeat(
            Frame::new(attacker)
                .vlan(0x88a8)
                .vlan(0x8100)
                .vlan(0x8100)
                .udp(7000),
        ),
    );
    assert_eq!(inst.packets("not-ip") - not_ip, n as u64);
}

#[test]
fn fragments_of_a_blocked_source_drop_and_others_reassemble() {
    if !privileged("fragments") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("frag");
    let _daemon = Daemon::start(
        &inst,
        &topo.gw,
        // Protected ports on: non-first fragments have no ports and are still filtered.
        &xdp_config("  protected_ports: [udp/7000, tcp/443]\n"),
    );
    let receiver = topo
        .gw
        .run(|| UdpSocket::bind("0.0.0.0:7000").expect("bind"));
    receiver
        .set_read_timeout(Some(Duration::from_millis(800)))
        .expect("timeout");
    let send = |src: &str| {
        topo.out.run(|| {
            let s = UdpSocket::bind(SocketAddr::new(src.parse().expect("src"), 0)).expect("bind");
            s.send_to(
                &[7u8; 4000],
                SocketAddr::new(GW4.parse().expect("gw"), 7000),
            )
            .expect("send");
        });
    };
    inst.cli_ok(&["block", "add", ATTACKER]);
    let before = inst.packets("denylist");
    send(ATTACKER);
    let mut buf = [0u8; 8192];
    assert!(
        receiver.recv_from(&mut buf).is_err(),
        "blocked source's datagram arrived"
    );
    // 4000 bytes over a 1500-byte MTU: three fragments, every one dropped.
    assert_eq!(
        inst.packets("denylist") - before,
        3,
        "not every fragment was dropped"
    );

    send(CLIENT);
    let (n, from) = receiver.recv_from(&mut buf).expect("client's datagram");
    assert_eq!((n, from.ip().to_string()), (4000, CLIENT.to_string()));
}

#[test]
fn counters_match_what_was_sent() {
    if !privileged("counters") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("count");
    let _daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    inst.cli_ok(&["block", "add", ATTACKER]);
    inst.cli_ok(&["block", "add", ATTACKER6_NET]);
    let (exact, net) = (inst.packets("denylist"), inst.packets("denylist-cidr"));
    udp_burst(&topo, ATTACKER, 1234, 100);
    udp_burst(&topo, ATTACKER6, 567, 100);
    // Tolerance: none. Only these sources are denied, and each datagram is one frame.
    assert_eq!(inst.packets("denylist") - exact, 1234);
    assert_eq!(inst.packets("denylist-cidr") - net, 567);
    // Bytes: Ethernet + IPv4 + UDP + payload.
    let stats: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["stats", "--json"])).expect("json");
    let bytes = stats
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["reason"] == "denylist"))
        .and_then(|r| r["bytes"].as_u64())
        .expect("bytes");
    assert_eq!(
        bytes % (14 + 20 + 8 + 100),
        0,
        "byte count {bytes} is not whole frames"
    );
}

#[test]
fn blocks_survive_restart_crash_and_a_wiped_bpffs() {
    if !privileged("restart") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("restart");
    let daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    let server = Server::start(&topo);
    inst.cli_ok(&["block", "add", ATTACKER, "--reason", "ticket SOC-42"]);
    inst.cli_ok(&["block", "add", ATTACKER6_NET, "--ttl", "1h"]);
    inst.cli_ok(&["block", "add", "198.18.9.9", "--ttl", "1s"]);
    assert!(!connects(&topo, ATTACKER, &server));

    // Clean restart: the pinned maps are reused.
    let daemon = daemon.restart(&topo.gw);
    assert!(!connects(&topo, ATTACKER, &server), "block lost on restart");
    assert!(
        !connects(&topo, ATTACKER6_SAME64, &server),
        "CIDR block lost on restart"
    );
    let list = inst.cli_ok(&["block", "list"]);
    assert!(list.contains("ticket SOC-42"), "analyst note lost: {list}");
    // The audit trail says who did it and why.
    let audit = inst.cli_ok(&["audit", "--since", "1h", "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(audit.lines().next().expect("a record")).expect("json line");
    assert_eq!(first["action"], "block");
    assert_eq!(first["target"], format!("{ATTACKER}/32"));
    assert_eq!(first["note"], "ticket SOC-42");
    assert!(
        first["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("cli:")),
        "{first}"
    );

    // kill -9: no cleanup at all, then start again.
    daemon.kill();
    let daemon = Daemon::start_existing(&inst, &topo.gw);
    assert!(
        !connects(&topo, ATTACKER, &server),
        "block lost after kill -9"
    );
    drop(daemon);

    // The maps themselves gone (a reboot clears bpffs): the journal puts operator blocks back,
    // except the one that expired meanwhile.
    std::thread::sleep(Duration::from_millis(1200));
    inst.cli_ok(&["maps", "reset", "--yes"]);
    let mut daemon = Daemon::start_existing(&inst, &topo.gw);
    let replay = daemon.wait_for_log("audit journal replayed", Duration::from_secs(5));
    assert!(replay.contains("\"restored\":2"), "{replay}");
    assert!(replay.contains("\"expired\":1"), "{replay}");
    assert!(
        !connects(&topo, ATTACKER, &server),
        "journal did not restore the block"
    );
    assert!(
        !connects(&topo, ATTACKER6, &server),
        "journal did not restore the CIDR"
    );
    assert!(
        connects(&topo, "198.18.9.9", &server),
        "expired block came back"
    );
    let json: serde_json::Value =
        serde_json::from_str(&inst.cli_ok(&["block", "list", "--json"])).expect("json");
    let v6 = json
        .as_array()
        .and_then(|r| r.iter().find(|r| r["address"] == ATTACKER6_NET))
        .expect("v6 block restored");
    let ttl = v6["ttl_seconds"].as_u64().expect("restored with its ttl");
    assert!((3500..=3600).contains(&ttl), "restored ttl {ttl}");
}

#[test]
fn static_lists_follow_the_file_on_reload_and_a_bad_reload_changes_nothing() {
    if !privileged("reload") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("reload");
    let mut daemon = Daemon::start(
        &inst,
        &topo.gw,
        &xdp_config(&format!("  deny: [{ATTACKER}]\n")),
    );
    let server = Server::start(&topo);
    assert!(
        !connects(&topo, ATTACKER, &server),
        "static deny not applied"
    );
    inst.cli_ok(&["block", "add", "198.18.9.9"]);

    // Broken file: rejected with file:line, nothing changes.
    let good = std::fs::read_to_string(&daemon.config).expect("config");
    std::fs::write(
        &daemon.config,
        good.replace("deny: [", "deny: [300.1.1.1, "),
    )
    .expect("write");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let rejected = daemon.wait_for_log("reload rejected", Duration::from_secs(5));
    assert!(
        rejected.contains("gateway.yaml:"),
        "no file:line in {rejected}"
    );
    assert!(
        !connects(&topo, ATTACKER, &server),
        "bad reload changed the denylist"
    );

    // The static entry leaves the file: it leaves the maps; the operator's block stays.
    std::fs::write(
        &daemon.config,
        good.replace(&format!("deny: [{ATTACKER}]"), "deny: []"),
    )
    .expect("write");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("configuration reloaded", Duration::from_secs(5));
    assert!(
        connects(&topo, ATTACKER, &server),
        "removed static entry still drops"
    );
    assert!(
        !connects(&topo, "198.18.9.9", &server),
        "reload dropped an operator block"
    );
}

#[test]
fn bad_operator_input_exits_2_and_changes_nothing() {
    if !privileged("bad_input") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("badinput");
    let _daemon = Daemon::start(&inst, &topo.gw, &xdp_config(""));
    inst.cli_ok(&["block", "add", ATTACKER]);
    let before = inst.cli_ok(&["block", "list", "--json"]);
    for args in [
        &["block", "add", "10.0.0.300"][..],
        &["block", "add", "10.1.2.3/8"],
        &["block", "add", "2001:db8::/129"],
        &["block", "add", "10.0.0.1", "--ttl", "soon"],
        &["block", "add", "10.0.0.1", "--ttl", "0s"],
        &["block", "rm", "10.9.9.9"],
        &["maps", "dump", "no_such_map"],
        &["allow", "add", "not-an-ip"],
    ] {
        let out = inst.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    assert_eq!(
        inst.cli_ok(&["block", "list", "--json"]),
        before,
        "bad input changed blocks"
    );
    let dump = inst.cli_ok(&["maps", "dump", "deny_v4", "--json"]);
    assert!(dump.contains(ATTACKER), "{dump}");
}

#[test]
fn pinned_maps_of_another_layout_are_refused_with_advice() {
    if !privileged("layout") {
        return;
    }
    let topo = topo();
    let inst = Instance::new("layout");
    drop(Daemon::start(&inst, &topo.gw, &xdp_config("")));
    // Pretend an older gateway made these maps.
    let path = tests::daemon::pin_dir(&inst.name).join("layout");
    let data = aya::maps::MapData::from_pin(&path).expect("layout pinned");
    let mut layout: aya::maps::Array<_, gateway_common::LayoutRecord> =
        aya::maps::Array::try_from(aya::maps::Map::from_map_data(data).expect("map"))
            .expect("array");
    let mut old = gateway_common::LayoutRecord::current();
    old.version = 0;
    layout.set(0, old, 0).expect("write layout");
    drop(layout);

    let config = inst.state_dir.join("gateway.yaml");
    let out = topo
        .gw
        .command(tests::daemon::binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on foreign maps: {stderr}");
    assert!(stderr.contains("maps reset"), "no advice: {stderr}");
}

#[test]
fn check_reports_file_line_and_reason() {
    // No privileges needed: `check` only parses.
    let dir = std::env::temp_dir().join(format!("gw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "instance: a\nxdp:\n  interfaces: [eth0]\n  rate_cap: { pps: 10, burts: 5 }\n",
    )
    .expect("write");
    let out = std::process::Command::new(tests::daemon::binary())
        .arg("check")
        .arg(&file)
        .output()
        .expect("check");
    let mut text = String::new();
    out.stderr
        .as_slice()
        .read_to_string(&mut text)
        .expect("utf8");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bad.yaml:4:"), "{text}");
    assert!(text.contains("burts"), "{text}");
}
