//! End to end: prefix aggregation and security events from the real daemon. Two sources inside
//! one /24 are escalated by the defense loop; the /24 itself is then blocked in XDP (a third
//! address in it cannot connect), audited as `auto:aggregate`; a /24 holding the management
//! address is never blocked. Every decision reaches a real syslog receiver (UDP, in the
//! gateway's namespace) as an RFC 5424 message carrying the ECS JSON event.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tests::{
    daemon::{Daemon, Instance},
    privileged,
    topo::*,
};

const PROXY_PORT: u16 = 8080;

/// One HTTP request from `src`; the status, or `None` when no connection could be made.
fn request(topo: &Topo, src: &str, target: &str) -> Option<u16> {
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
            format!("GET {target} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split_whitespace().nth(1)?.parse().ok()
    })
}

fn blocks(inst: &Instance) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&inst.cli_ok(&["block", "list", "--json"]))
        .expect("json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// (MSGID, JSON) of every RFC 5424 datagram received until `want` MSGIDs were all seen.
fn collect(rx: &UdpSocket, want: &[&str], timeout: Duration) -> Vec<(String, serde_json::Value)> {
    let deadline = Instant::now() + timeout;
    let mut out: Vec<(String, serde_json::Value)> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !want.iter().all(|w| out.iter().any(|(m, _)| m == w)) {
        assert!(Instant::now() < deadline, "missing {want:?} in {out:?}");
        let Ok(n) = rx.recv(&mut buf) else { continue };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        // <PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG
        assert!(text.starts_with('<'), "{text}");
        let fields: Vec<&str> = text.splitn(8, ' ').collect();
        assert_eq!(fields.len(), 8, "{text}");
        assert!(fields[0].ends_with(">1"), "{text}");
        assert_eq!(fields[3], "gateway", "{text}");
        assert_eq!(fields[6], "-", "{text}");
        let json = serde_json::from_str(fields[7]).unwrap_or_else(|e| panic!("{e}: {text}"));
        out.push((fields[5].to_owned(), json));
    }
    out
}

#[test]
fn neighbours_escalated_together_block_their_prefix_and_events_reach_syslog() {
    if !privileged("aggregate") {
        return;
    }
    let topo = topo();
    let backend = http_server(&topo.gw, 0);
    let receiver = topo
        .gw
        .run(|| UdpSocket::bind("127.0.0.1:0").expect("bind syslog receiver"));
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let syslog = receiver.local_addr().expect("addr");
    let attackers = [
        "198.18.7.10",
        "198.18.7.11",
        "198.18.7.50",
        "198.18.0.20",
        "198.18.0.21",
    ];
    for a in attackers {
        topo.out
            .ip(&["addr", "add", &format!("{a}/16"), "dev", "out0"]);
    }
    let inst = Instance::new("aggr");
    let config = format!(
        "{}listeners: [{{ name: web, address: \"0.0.0.0:{PROXY_PORT}\" }}]\naccess_log: off\n\
         upstreams: {{ app: {{ endpoints: [\"http://127.0.0.1:{backend}\"] }} }}\n\
         routes: [{{ match: {{ prefix: / }}, upstream: app }}]\n\
         defense: {{ threshold: 10, aggregate: {{ v4_prefix: 24, min_sources: 2 }} }}\n\
         telemetry: {{ events: {{ file: events.json, syslog: {{ address: \"{syslog}\", transport: udp }} }} }}\n",
        xdp_config(&format!("  management: [{CLIENT}]\n"))
    );
    let mut daemon = Daemon::start(&inst, &topo.gw, &config);

    // Two sources in 198.18.7.0/24 probe the path normalisation: each is blocked, then the /24.
    assert_eq!(request(&topo, "198.18.7.10", "/a%2fb"), Some(400));
    daemon.wait_for_log("source blocked", Duration::from_secs(3));
    assert_eq!(
        request(&topo, "198.18.7.50", "/ok"),
        Some(200),
        "one source must not block its neighbours"
    );
    assert_eq!(request(&topo, "198.18.7.11", "/a%2fb"), Some(400));
    daemon.wait_for_log("prefix blocked", Duration::from_secs(3));
    assert_eq!(
        request(&topo, "198.18.7.50", "/ok"),
        None,
        "a third address in the blocked /24 still connects"
    );
    let list = blocks(&inst);
    let p = list
        .iter()
        .find(|b| b["address"] == "198.18.7.0/24")
        .unwrap_or_else(|| panic!("prefix not blocked: {list:?}"));
    assert_eq!(p["origin"], "l7");
    assert!(p["ttl_seconds"].as_u64().is_some_and(|t| t <= 60), "{p}");
    assert!(inst.packets("denylist-cidr") > 0, "no CIDR drop counted");
    let audit = inst.cli_ok(&["audit", "--json"]);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("198.18.7.0/24") && l.contains("auto:aggregate")),
        "{audit}"
    );

    // Two sources in the management address's /24: blocked one by one, never the prefix.
    assert_eq!(request(&topo, "198.18.0.20", "/a%2fb"), Some(400));
    assert_eq!(request(&topo, "198.18.0.21", "/a%2fb"), Some(400));
    daemon.wait_for_log("prefix block skipped", Duration::from_secs(3));
    assert!(
        !blocks(&inst)
            .iter()
            .any(|b| b["address"] == "198.18.0.0/24"),
        "prefix covering the management address blocked"
    );
    assert_eq!(request(&topo, CLIENT, "/ok"), Some(200));

    // The syslog receiver saw every kind of decision, as ECS JSON.
    let frames = collect(
        &receiver,
        &[
            "request_rejected",
            "source_blocked",
            "prefix_blocked",
            "escalation_skipped",
        ],
        Duration::from_secs(5),
    );
    let rejected = frames
        .iter()
        .find(|(m, _)| m == "request_rejected")
        .map(|(_, j)| j)
        .expect("rejected");
    assert_eq!(rejected["event"]["reason"], "path_encoded_slash");
    assert_eq!(rejected["url"]["path"], "/a%2fb");
    let prefix = frames
        .iter()
        .find(|(m, _)| m == "prefix_blocked")
        .map(|(_, j)| j)
        .expect("prefix");
    assert_eq!(prefix["gateway"]["target"], "198.18.7.0/24");
    assert_eq!(prefix["gateway"]["actor"], "auto:aggregate");
    assert_eq!(prefix["event"]["type"][0], "denied");

    // `gateway top` reads requests/s from the daemon's metrics and shows the prefix block.
    let top = inst.cli_ok(&["top", "--once", "--interval", "500ms"]);
    let rps = top
        .split("requests/s: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default();
    assert!(rps.parse::<f64>().is_ok(), "no requests/s in {top}");
    assert!(top.contains("198.18.7.0/24"), "{top}");
    assert!(top.contains("auto:aggregate"), "{top}");

    // An analyst's timed block: its creation and its expiry are both events.
    inst.cli_ok(&[
        "block",
        "add",
        "198.18.9.9",
        "--ttl",
        "1s",
        "--reason",
        "test",
    ]);
    let events_file = inst.state_dir.join("events.json");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&events_file).unwrap_or_default();
        let kinds: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["gateway"]["target"] == "198.18.9.9/32")
            .filter_map(|e| e["event"]["action"].as_str().map(str::to_owned))
            .collect();
        if kinds == ["source_blocked", "block_expired"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events for 198.18.9.9: {kinds:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
