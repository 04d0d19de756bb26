//! `cargo xtask demo`: a client and an attacker in their own network namespaces, the gateway
//! with XDP on the links between them. The attacker floods, gets capped in the kernel, is
//! blocked by an analyst; the client keeps being served. Everything is bounded and cleaned up.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use tests::{
    daemon::{Daemon, Instance},
    frames::{Frame, tcp},
    netns::{Blackhole, NetNs, veth},
    raw,
    topo::http_server,
};

const GW_CLIENT_SIDE: &str = "198.18.1.1";
const GW_ATTACKER_SIDE: &str = "198.18.2.1";
const CLIENT: &str = "198.18.1.10";
const ATTACKER: &str = "198.18.2.66";
const FLOOD_PACKETS: usize = 300_000;
const SPOOFED_SOURCES: u32 = 512;
const SYNS_PER_SOURCE: u32 = 100;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the demo needs root (network namespaces, XDP): sudo -E cargo xtask demo");
        std::process::exit(1);
    }
    let _blackhole = Blackhole::new();
    let gw = NetNs::new("demo-gw");
    let client = NetNs::new("demo-client");
    let attacker = NetNs::new("demo-attacker");
    veth(&gw, "gw0", &client, "eth0");
    veth(&gw, "gw1", &attacker, "eth0");
    gw.ip(&["addr", "add", "198.18.1.1/24", "dev", "gw0"]);
    gw.ip(&["addr", "add", "198.18.2.1/24", "dev", "gw1"]);
    client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"]);
    client.ip(&["route", "add", "default", "via", GW_CLIENT_SIDE]);
    attacker.ip(&["addr", "add", "198.18.2.66/24", "dev", "eth0"]);
    attacker.ip(&["route", "add", "default", "via", GW_ATTACKER_SIDE]);

    let inst = Instance::new("demo");
    let daemon = Daemon::start(
        &inst,
        &gw,
        &format!(
            "xdp:\n  interfaces: [gw0, gw1]\n  mode: auto\n  management: [{CLIENT}/32]\n  \
             rate_cap: {{ pps: 1000, burst: 2000, syn_pps: 20, syn_burst: 40 }}\n  \
             protected_ports: [tcp/8080, udp/8080]\n"
        ),
    );
    let port = http_server(&gw, 8080);
    println!("== gateway running with XDP on gw0 (client side) and gw1 (attacker side)\n");

    step("1. the client is served");
    let (ok, total) = client_requests(&client, port, 20);
    println!("   client: {ok}/{total} HTTP requests answered 200\n");

    step("2. the attacker floods UDP to the API port from one address (bounded)");
    let before = counters(&inst);
    let (sent, took) = udp_flood(&attacker, port);
    let (ok, total) = client_requests(&client, port, 20);
    report(&inst, &before, sent, took);
    println!("   client during/after the flood: {ok}/{total} requests answered 200\n");

    step("3. a SYN flood from 512 spoofed sources, 100 SYNs each (raw frames)");
    let before = counters(&inst);
    let start = Instant::now();
    let frames: Vec<Vec<u8>> = (0..SPOOFED_SOURCES * SYNS_PER_SOURCE)
        .map(|i| {
            let n = i % SPOOFED_SOURCES;
            let src = IpAddr::from([198, 18, 64 + (n >> 8) as u8, n as u8]);
            Frame::new(src).tcp(8080, tcp::SYN).build()
        })
        .collect();
    raw::send(&attacker, "eth0", &frames);
    report(&inst, &before, frames.len(), start.elapsed());
    println!(
        "   (each source has its own SYN budget: 40 at once, then 20/s; the rest drop in XDP)\n"
    );

    step("4. a SOC analyst blocks the attacker's /24 for 10 minutes");
    println!("   $ gateway block add 198.18.2.0/24 --ttl 10m --reason \"UDP flood, ticket SOC-1\"");
    print!(
        "   {}",
        inst.cli_ok(&[
            "block",
            "add",
            "198.18.2.0/24",
            "--ttl",
            "10m",
            "--reason",
            "UDP flood, ticket SOC-1"
        ])
    );
    println!("   $ gateway block list");
    for line in inst.cli_ok(&["block", "list"]).lines() {
        println!("   {line}");
    }
    let before = counters(&inst);
    let (sent, took) = udp_flood(&attacker, port);
    report(&inst, &before, sent, took);
    let (ok, total) = client_requests(&client, port, 20);
    println!("   client: {ok}/{total} requests answered 200\n");

    step("5. what the kernel counted (gateway stats)");
    for line in inst.cli_ok(&["stats"]).lines() {
        println!("   {line}");
    }
    step("6. security events the daemon logged (rate-cap reports from the XDP ring buffer)");
    let events: Vec<String> = daemon
        .logs()
        .into_iter()
        .filter(|l| l.contains("packet-rate cap"))
        .collect();
    println!("   {} reports, first ones:", events.len());
    for e in events.iter().take(3) {
        println!("   {e}");
    }
    println!("\n== done; namespaces, pinned maps and processes are removed on exit");
}

fn step(title: &str) {
    println!("-- {title}");
}

fn client_requests(client: &NetNs, port: u16, n: usize) -> (usize, usize) {
    let ok = client.run(|| {
        (0..n)
            .filter(|_| {
                let addr = SocketAddr::new(GW_CLIENT_SIDE.parse().expect("ip"), port);
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: api\r\n\r\n");
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                resp.starts_with("HTTP/1.1 200")
            })
            .count()
    });
    (ok, n)
}

fn udp_flood(attacker: &NetNs, port: u16) -> (usize, Duration) {
    attacker.run(|| {
        let s = UdpSocket::bind(format!("{ATTACKER}:0")).expect("bind");
        let dst = SocketAddr::new(GW_ATTACKER_SIDE.parse().expect("ip"), port);
        let start = Instant::now();
        let mut sent = 0;
        // Bounded in packets and time.
        while sent < FLOOD_PACKETS && start.elapsed() < Duration::from_secs(5) {
            if s.send_to(&[0u8; 64], dst).is_ok() {
                sent += 1;
            }
        }
        (sent, start.elapsed())
    })
}

fn counters(inst: &Instance) -> serde_json::Value {
    serde_json::from_str(&inst.cli_ok(&["stats", "--json"])).expect("stats json")
}

fn report(inst: &Instance, before: &serde_json::Value, sent: usize, took: Duration) {
    let after = counters(inst);
    println!(
        "   sent {sent} packets in {:.2}s ({:.0} pps); XDP verdicts meanwhile:",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64()
    );
    let (Some(b), Some(a)) = (before.as_array(), after.as_array()) else {
        return;
    };
    for (b, a) in b.iter().zip(a) {
        let delta = a["packets"].as_u64().unwrap_or(0) - b["packets"].as_u64().unwrap_or(0);
        if delta > 0 {
            println!(
                "     {:<5} {:<17} {delta}",
                a["verdict"].as_str().unwrap_or(""),
                a["reason"].as_str().unwrap_or("")
            );
        }
    }
}
