//! `cargo xtask demo`: a client and an attacker in their own network namespaces, the gateway
//! between them with XDP on both links and its L7 proxy in front of an origin. The attacker
//! floods (capped in the kernel), sends requests built to slip past the proxy (blocked, then
//! escalated to a kernel block), and is finally blocked by an analyst; the client keeps being
//! served throughout. Everything is bounded and cleaned up.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
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
const PROBER: &str = "198.18.2.66";
const FLOODER: &str = "198.18.2.67";
const LAST: &str = "198.18.2.68";
const PROXY_PORT: u16 = 8080;
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
    for a in [PROBER, FLOODER, LAST] {
        attacker.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"]);
    }
    attacker.ip(&["route", "add", "default", "via", GW_ATTACKER_SIDE]);

    let origin = http_server(&gw, 0);
    let inst = Instance::new("demo");
    let daemon = Daemon::start(
        &inst,
        &gw,
        &format!(
            "xdp:\n  interfaces: [gw0, gw1]\n  mode: auto\n  management: [{CLIENT}/32]\n  \
             rate_cap: {{ pps: 1000, burst: 2000, syn_pps: 20, syn_burst: 40 }}\n  \
             protected_ports: [tcp/{PROXY_PORT}, udp/{PROXY_PORT}]\n\
             listeners: [{{ name: web, address: \"0.0.0.0:{PROXY_PORT}\" }}]\naccess_log: off\n\
             upstreams: {{ origin: {{ endpoints: [\"http://127.0.0.1:{origin}\"] }} }}\n\
             routes: [{{ match: {{ prefix: / }}, upstream: origin }}]\n\
             # Spoofed SYN sources are not escalated: blocking forged addresses could block\n\
             # innocents; the kernel's per-source SYN budget is the answer to them.\n\
             defense: {{ threshold: 20, ttl: [10m, 1h, 24h], weights: {{ syn-cap: 0 }} }}\n"
        ),
    );
    println!(
        "== gateway running: XDP on gw0 (client side) and gw1 (attacker side), proxy on :{PROXY_PORT}\n"
    );

    step("1. the client is served through the proxy");
    println!(
        "   client: {}/20 requests answered 200\n",
        client_requests(&client, 20)
    );

    step("2. the attacker probes the proxy with requests built to slip past path rules");
    for target in [
        "/admin%2f..%2fconfig",
        "/files/..%5c..%5cwin.ini",
        "/api;jsessionid=x/admin",
    ] {
        println!(
            "   GET {target:<28} -> {}",
            request(&attacker, PROBER, target).map_or("no connection".into(), |s| s.to_string())
        );
    }
    let started = Instant::now();
    while request(&attacker, PROBER, "/").is_some() && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    match request(&attacker, PROBER, "/") {
        None => println!(
            "   the defense loop escalated: {PROBER} can no longer connect (its SYNs drop in XDP)"
        ),
        Some(s) => println!("   NOT escalated: {PROBER} still gets {s}"),
    }
    println!(
        "   client: {}/20 requests answered 200\n",
        client_requests(&client, 20)
    );

    step("3. another address floods UDP at the API port (bounded)");
    let before = counters(&inst);
    let (sent, took) = udp_flood(&attacker, FLOODER);
    report(&inst, &before, sent, took);
    println!("   the kernel reported it over its cap; the defense loop made that a timed block");
    println!(
        "   client during/after the flood: {}/20 requests answered 200\n",
        client_requests(&client, 20)
    );

    step("4. a SYN flood from 512 spoofed sources, 100 SYNs each (raw frames)");
    let before = counters(&inst);
    let start = Instant::now();
    let frames: Vec<Vec<u8>> = (0..SPOOFED_SOURCES * SYNS_PER_SOURCE)
        .map(|i| {
            let n = i % SPOOFED_SOURCES;
            let src = IpAddr::from([198, 18, 64 + (n >> 8) as u8, n as u8]);
            Frame::new(src).tcp(PROXY_PORT, tcp::SYN).build()
        })
        .collect();
    raw::send(&attacker, "eth0", &frames);
    report(&inst, &before, frames.len(), start.elapsed());
    println!(
        "   (each source has its own SYN budget: 40 at once, then 20/s; the rest drop in XDP)\n"
    );

    step("5. a SOC analyst blocks the attacker's whole /24 for an hour");
    println!("   $ gateway block add 198.18.2.0/24 --ttl 1h --reason \"botnet, ticket SOC-1\"");
    print!(
        "   {}",
        inst.cli_ok(&[
            "block",
            "add",
            "198.18.2.0/24",
            "--ttl",
            "1h",
            "--reason",
            "botnet, ticket SOC-1"
        ])
    );
    let before = counters(&inst);
    let (sent, took) = udp_flood(&attacker, LAST);
    report(&inst, &before, sent, took);
    println!(
        "   client: {}/20 requests answered 200\n",
        client_requests(&client, 20)
    );

    step("6. what the SOC sees: gateway block list");
    for line in inst.cli_ok(&["block", "list"]).lines() {
        println!("   {line}");
    }
    step("7. what the kernel counted: gateway stats");
    for line in inst.cli_ok(&["stats"]).lines() {
        println!("   {line}");
    }
    step("8. security events the daemon logged");
    for e in daemon
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"target\":\"security\""))
        .take(6)
    {
        println!("   {e}");
    }
    println!("\n== done; namespaces, pinned maps and processes are removed on exit");
}

fn step(title: &str) {
    println!("-- {title}");
}

/// One request through the proxy from `src`; the status, or `None` without a connection.
fn request(ns: &NetNs, src: &str, target: &str) -> Option<u16> {
    let src: IpAddr = src.parse().ok()?;
    let gw = if ns.name.contains("client") {
        GW_CLIENT_SIDE
    } else {
        GW_ATTACKER_SIDE
    };
    ns.run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
        s.bind(&SockAddr::from(SocketAddr::new(src, 0))).ok()?;
        let dst = SocketAddr::new(gw.parse().ok()?, PROXY_PORT);
        s.connect_timeout(&SockAddr::from(dst), Duration::from_millis(500))
            .ok()?;
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(
            format!("GET {target} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split_whitespace().nth(1)?.parse().ok()
    })
}

fn client_requests(client: &NetNs, n: usize) -> usize {
    (0..n)
        .filter(|_| request(client, CLIENT, "/") == Some(200))
        .count()
}

fn udp_flood(attacker: &NetNs, src: &str) -> (usize, Duration) {
    attacker.run(|| {
        let s = UdpSocket::bind(format!("{src}:0")).expect("bind");
        let dst = SocketAddr::new(GW_ATTACKER_SIDE.parse().expect("ip"), PROXY_PORT);
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
