//! End to end: L7 detections become kernel drops. The real binary with XDP on `gw0` and its
//! proxy listening in the gateway namespace; attackers in the outside namespace send requests
//! built to slip past path normalisation; the defense loop blocks them in the XDP denylist.
//! Also: the time from the offending request to the first packet dropped in XDP, clients behind
//! a trusted proxy blocked at L7 only, allowlisted sources never blocked, rate-cap reports
//! escalated to timed blocks.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tests::{
    daemon::{Daemon, Instance},
    privileged,
    topo::*,
};

const PROXY_PORT: u16 = 8080;

/// These tests measure latency: one at a time, so they do not measure each other.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
const LB: &str = "198.18.0.77";

fn config(backend: u16, defense: &str) -> String {
    format!(
        "{}trusted_proxies: [{LB}/32]\nlisteners: [{{ name: web, address: \"0.0.0.0:{PROXY_PORT}\" }}]\n\
         access_log: off\nupstreams: {{ app: {{ endpoints: [\"http://127.0.0.1:{backend}\"] }} }}\n\
         routes: [{{ match: {{ prefix: / }}, upstream: app }}]\ndefense: {{ {defense} }}\n",
        xdp_config(&format!(
            "  management: [{CLIENT}]\n  rate_cap: {{ pps: 300, burst: 300 }}\n"
        ))
    )
}

/// One HTTP request from `src` through the gateway's proxy; the status, or `None` when no
/// connection could be made.
fn request(topo: &Topo, src: &str, target: &str, extra: &str) -> Option<u16> {
    let src: IpAddr = src.parse().expect("src");
    topo.out.run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        s.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .expect("bind");
        let dst = SocketAddr::new(GW4.parse().expect("gw"), PROXY_PORT);
        s.connect_timeout(&SockAddr::from(dst), Duration::from_millis(800))
            .ok()?;
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(
            format!("GET {target} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
        .ok()?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split_whitespace().nth(1)?.parse().ok()
    })
}

fn add_addrs(topo: &Topo, addrs: &[String]) {
    for a in addrs {
        topo.out
            .ip(&["addr", "add", &format!("{a}/16"), "dev", "out0"]);
    }
}

fn blocks(inst: &Instance) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&inst.cli_ok(&["block", "list", "--json"]))
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn an_offending_request_becomes_an_xdp_drop_within_milliseconds() {
    if !privileged("defense_latency") {
        return;
    }
    let _serial = serial();
    let topo = topo();
    let backend = http_server(&topo.gw, 0);
    let inst = Instance::new("dlat");
    let mut daemon = Daemon::start(&inst, &topo.gw, &config(backend, "threshold: 10"));
    daemon.wait_for_log("defense loop on", Duration::from_secs(2));
    assert_eq!(request(&topo, CLIENT, "/ok", ""), Some(200));

    // A UDP receiver in the gateway namespace remembers the last sequence number per source.
    let receiver = topo
        .gw
        .run(|| UdpSocket::bind("0.0.0.0:9999").expect("bind"));
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let last_seen: Arc<Mutex<HashMap<IpAddr, u32>>> = Arc::default();
    let sink = Arc::clone(&last_seen);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_rx = Arc::clone(&stop);
    let rx = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        while !stop_rx.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = receiver.recv_from(&mut buf)
                && n == 4
            {
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let mut m = sink.lock().unwrap_or_else(|p| p.into_inner());
                let e = m.entry(from.ip()).or_insert(0);
                *e = (*e).max(seq);
            }
        }
    });

    let trials: Vec<String> = (0..10).map(|i| format!("198.18.7.{}", 10 + i)).collect();
    add_addrs(&topo, &trials);
    let mut latencies = Vec::new();
    for src in &trials {
        // Packets every millisecond from the attacker, each stamped with its send time.
        let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let stamps = Arc::clone(&sent);
        let src_ip: IpAddr = src.parse().expect("ip");
        let out = topo.out.file();
        let sender = std::thread::spawn(move || {
            nix::sched::setns(&out, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let s = UdpSocket::bind(SocketAddr::new(src_ip, 0)).expect("bind");
            let start = Instant::now();
            for seq in 0u32..600 {
                let _ = s.send_to(
                    &seq.to_be_bytes(),
                    SocketAddr::new(GW4.parse().expect("gw"), 9999),
                );
                stamps
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Instant::now());
                let next = start + Duration::from_millis(u64::from(seq) + 1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(
            request(&topo, src, "/files/..%2f..%2fetc%2fpasswd", ""),
            Some(400)
        );
        sender.join().expect("sender");
        let last = last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&src_ip)
            .copied()
            .expect("no packet arrived at all");
        let stamps = sent.lock().unwrap_or_else(|p| p.into_inner());
        let first_dropped = stamps
            .get(last as usize + 1)
            .unwrap_or_else(|| panic!("{src}: no packet was dropped within 600 ms"));
        latencies.push(first_dropped.saturating_duration_since(t0));
        assert_eq!(
            request(&topo, src, "/ok", ""),
            None,
            "{src} still connects after escalation"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rx.join().expect("receiver");
    latencies.sort();
    let p99 = *latencies.last().expect("trials");
    eprintln!(
        "request -> first XDP drop over {} trials: min {:?}, median {:?}, max (p99) {:?}",
        latencies.len(),
        latencies[0],
        latencies[latencies.len() / 2],
        p99
    );
    let applied: Vec<String> = daemon
        .logs()
        .into_iter()
        .filter(|l| l.contains("source blocked"))
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l).ok()?;
            Some(format!("{}us", v["took_us"]))
        })
        .collect();
    eprintln!("block applied in (kernel entry + journal fsync): {applied:?}");
    assert!(
        p99 < Duration::from_millis(50),
        "p99 {p99:?}: {latencies:?}"
    );

    // Each is a kernel block with origin l7, the first rung of the ladder, and an audit note.
    let list = blocks(&inst);
    for src in &trials {
        let b = list
            .iter()
            .find(|b| b["address"] == format!("{src}/32"))
            .unwrap_or_else(|| panic!("{src} not in {list:?}"));
        assert_eq!(b["origin"], "l7");
        assert_eq!(b["reason"], "protocol-abuse");
        let ttl = b["ttl_seconds"].as_u64().expect("timed");
        // The first rung is 1m; the trials above took some of it.
        assert!((20..=60).contains(&ttl), "ttl {ttl}");
        assert!(
            b["note"]
                .as_str()
                .is_some_and(|n| n.contains("path_encoded_slash")),
            "{b}"
        );
        assert_eq!(b["actor"], "auto:defense");
    }
    assert!(inst.packets("denylist") > 0);
}

#[test]
fn clients_behind_a_trusted_proxy_are_blocked_at_l7_and_the_proxy_never_in_the_kernel() {
    if !privileged("defense_proxy") {
        return;
    }
    let _serial = serial();
    let topo = topo();
    add_addrs(&topo, &[LB.to_owned()]);
    let backend = http_server(&topo.gw, 0);
    let inst = Instance::new("dproxy");
    let mut daemon = Daemon::start(&inst, &topo.gw, &config(backend, "threshold: 10"));
    let via = |client: &str| format!("X-Forwarded-For: {client}\r\n");
    assert_eq!(request(&topo, LB, "/ok", &via("198.18.200.5")), Some(200));
    assert_eq!(
        request(&topo, LB, "/a%2fb", &via("198.18.200.5")),
        Some(400)
    );
    daemon.wait_for_log("source blocked", Duration::from_secs(3));
    assert_eq!(
        request(&topo, LB, "/ok", &via("198.18.200.5")),
        Some(403),
        "client not blocked at L7"
    );
    assert_eq!(
        request(&topo, LB, "/ok", &via("198.18.200.6")),
        Some(200),
        "other clients hit"
    );
    assert_eq!(
        request(&topo, LB, "/ok", ""),
        Some(200),
        "the proxy itself was blocked"
    );
    // `block list` (through the daemon) shows the client as enforced in the proxy; the kernel
    // maps hold nothing, least of all the proxy's address.
    let list = blocks(&inst);
    assert!(
        list.iter().all(|b| b["origin"] == "l7-proxy"),
        "kernel maps got {list:?}"
    );
    assert!(
        list.iter().any(|b| b["address"] == "198.18.200.5/32"),
        "{list:?}"
    );
    assert!(!list.iter().any(|b| b["address"] == format!("{LB}/32")));
    let journal = std::fs::read_to_string(inst.state_dir.join(&inst.name).join("journal.jsonl"))
        .expect("journal");
    assert!(
        journal.contains("198.18.200.5") && journal.contains("l7-proxy"),
        "{journal}"
    );

    // kill -9 and a fresh start: the proxy-enforced block comes back from the journal.
    daemon.kill();
    let _daemon = Daemon::start_existing(&inst, &topo.gw);
    assert_eq!(
        request(&topo, LB, "/ok", &via("198.18.200.5")),
        Some(403),
        "L7 block lost in the restart"
    );
    assert_eq!(request(&topo, LB, "/ok", &via("198.18.200.6")), Some(200));
}

#[test]
fn allowlisted_sources_are_never_blocked_and_rate_cap_reports_escalate() {
    if !privileged("defense_allow") {
        return;
    }
    let _serial = serial();
    let topo = topo();
    let backend = http_server(&topo.gw, 0);
    let inst = Instance::new("dallow");
    let mut daemon = Daemon::start(&inst, &topo.gw, &config(backend, "threshold: 10"));
    // The management address misbehaves: evidence is logged, nothing blocked.
    for _ in 0..3 {
        assert_eq!(request(&topo, CLIENT, "/a%2fb", ""), Some(400));
    }
    daemon.wait_for_log("escalation skipped", Duration::from_secs(3));
    assert_eq!(request(&topo, CLIENT, "/ok", ""), Some(200));
    assert!(blocks(&inst).is_empty());

    // A flood over the kernel's cap: the ring-buffer report is evidence enough for a timed block.
    udp_burst(&topo, ATTACKER, 3000, 64);
    daemon.wait_for_log("source blocked", Duration::from_secs(3));
    let list = blocks(&inst);
    let b = list
        .iter()
        .find(|b| b["address"] == format!("{ATTACKER}/32"))
        .unwrap_or_else(|| panic!("flooder not blocked: {list:?}"));
    assert_eq!(
        (b["origin"].as_str(), b["reason"].as_str()),
        (Some("l7"), Some("pps-cap"))
    );
    assert_eq!(request(&topo, ATTACKER, "/ok", ""), None);
}

/// The OWASP CRS rules beside the repository (`../shared/crs`, or `GATEWAY_CRS_DIR`).
fn crs_dir() -> std::path::PathBuf {
    std::env::var_os("GATEWAY_CRS_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crs"),
        std::path::PathBuf::from,
    )
}

#[test]
fn waf_detections_escalate_to_an_xdp_drop() {
    if !privileged("defense_waf") {
        return;
    }
    let _serial = serial();
    let topo = topo();
    let backend = http_server(&topo.gw, 0);
    let inst = Instance::new("dwaf");
    let crs = crs_dir();
    assert!(
        crs.join("rules").is_dir(),
        "CRS rules not found at {}",
        crs.display()
    );
    let cfg = format!(
        "{}listeners: [{{ name: web, address: \"0.0.0.0:{PROXY_PORT}\" }}]\naccess_log: off\n\
         upstreams: {{ app: {{ endpoints: [\"http://127.0.0.1:{backend}\"] }} }}\n\
         waf: {{ rules: [\"{}/rules/*.conf\"], paranoia: 1, mode: block }}\n\
         routes: [{{ match: {{ prefix: / }}, upstream: app, waf: on }}]\n\
         defense: {{ threshold: 20 }}\n",
        xdp_config(&format!("  management: [{CLIENT}]\n")),
        crs.display()
    );
    let mut daemon = Daemon::start(&inst, &topo.gw, &cfg);
    daemon.wait_for_log("defense loop on", Duration::from_secs(5));
    assert_eq!(request(&topo, ATTACKER, "/search?q=shoes", ""), Some(200));

    // SQL injection: refused by CRS (403) until the scores reach the threshold, then the
    // attacker's packets are dropped in XDP and it cannot even connect.
    let attack = "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--";
    let mut refused = 0;
    let mut cut_off = false;
    for _ in 0..20 {
        match request(&topo, ATTACKER, attack, "") {
            Some(403) => refused += 1,
            None => {
                cut_off = true;
                break;
            }
            other => panic!("attack answered {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused >= 1, "the WAF never refused the attack");
    assert!(
        cut_off,
        "the attacker can still connect after {refused} refusals"
    );
    assert_eq!(request(&topo, ATTACKER, "/search?q=shoes", ""), None);
    let list = blocks(&inst);
    assert!(
        list.iter()
            .any(|b| b["address"] == format!("{ATTACKER}/32") && b["origin"] == "l7"),
        "{list:?}"
    );
    // Everyone else is still served, and the journal says why.
    assert_eq!(request(&topo, CLIENT, "/search?q=shoes", ""), Some(200));
    let journal = std::fs::read_to_string(inst.state_dir.join(&inst.name).join("journal.jsonl"))
        .expect("journal");
    assert!(journal.contains("waf_blocked"), "{journal}");
}
