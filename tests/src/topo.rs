//! The end-to-end topology: a `gw` namespace holding the gateway side of a veth
//! (`gw0`: 198.18.0.1/16, 2001:db8::1/48), an `out` namespace holding client and attacker
//! addresses on `out0`; blackhole routes in the root namespace keep everything local.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{Blackhole, NetNs, veth};

pub const CLIENT: &str = "198.18.0.10";
pub const ATTACKER: &str = "198.18.5.66";
pub const ATTACKER_NET: &str = "198.18.5.0/24";
pub const CLIENT6: &str = "2001:db8:0:1::10";
pub const ATTACKER6: &str = "2001:db8:0:5::66";
pub const ATTACKER6_SAME64: &str = "2001:db8:0:5::67";
pub const OTHER6: &str = "2001:db8:0:6::66";
pub const ATTACKER6_NET: &str = "2001:db8:0:5::/64";
pub const GW4: &str = "198.18.0.1";
pub const GW6: &str = "2001:db8::1";
pub const GW_MAC: &str = "02:00:5e:00:00:01";

pub struct Topo {
    pub gw: NetNs,
    pub out: NetNs,
    _blackhole: Blackhole,
}

/// The two namespaces, addresses and static neighbours every end-to-end test starts from.
pub fn topo() -> Topo {
    let blackhole = Blackhole::new();
    let gw = NetNs::new("gwe2e");
    let out = NetNs::new("oute2e");
    veth(&gw, "gw0", &out, "out0");
    // Fixed MAC and static neighbours: a blocked source cannot resolve the gateway (its ARP
    // passes, but its IPv6 neighbour solicitations are IP from a blocked source and drop), and
    // the tests measure the filter, not neighbour discovery.
    gw.ip(&["link", "set", "gw0", "address", GW_MAC]);
    gw.ip(&["addr", "add", "198.18.0.1/16", "dev", "gw0"]);
    gw.ip(&["addr", "add", "2001:db8::1/48", "dev", "gw0", "nodad"]);
    for a in [CLIENT, ATTACKER, "198.18.5.67", "198.18.9.9"] {
        out.ip(&["addr", "add", &format!("{a}/16"), "dev", "out0"]);
    }
    for a in [CLIENT6, ATTACKER6, ATTACKER6_SAME64, OTHER6] {
        out.ip(&["addr", "add", &format!("{a}/48"), "dev", "out0", "nodad"]);
    }
    for gw_addr in [GW4, GW6] {
        out.ip(&[
            "neigh",
            "replace",
            gw_addr,
            "lladdr",
            GW_MAC,
            "dev",
            "out0",
            "nud",
            "permanent",
        ]);
    }
    Topo {
        gw,
        out,
        _blackhole: blackhole,
    }
}

/// An `xdp:` section attaching to `gw0`, plus `extra` lines.
pub fn xdp_config(extra: &str) -> String {
    format!("xdp:\n  interfaces: [gw0]\n  mode: auto\n  sweep_interval: 200ms\n{extra}")
}

/// A TCP server in the gateway namespace that accepts and closes, on IPv4 and IPv6.
pub struct Server {
    pub port: u16,
}

impl Server {
    pub fn start(topo: &Topo) -> Self {
        let (v4, v6) = topo.gw.run(|| {
            let v4 = TcpListener::bind("0.0.0.0:0").expect("bind v4");
            let port = v4.local_addr().expect("addr").port();
            let v6 = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).expect("socket");
            v6.set_only_v6(true).expect("v6only");
            v6.bind(&SockAddr::from(SocketAddr::new(
                "::".parse().expect("ip"),
                port,
            )))
            .expect("bind v6");
            v6.listen(128).expect("listen");
            (v4, TcpListener::from(v6))
        });
        let port = v4.local_addr().expect("addr").port();
        for l in [v4, v6] {
            std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    drop(s);
                }
            });
        }
        Self { port }
    }
}

/// Whether a TCP connection from `src` (in the outside namespace) to the gateway opens.
pub fn connects(topo: &Topo, src: &str, server: &Server) -> bool {
    let src: IpAddr = src.parse().expect("src");
    let dst: IpAddr = if src.is_ipv4() { GW4 } else { GW6 }.parse().expect("dst");
    topo.out.run(|| {
        let domain = if src.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        s.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .expect("bind source");
        s.connect_timeout(
            &SockAddr::from(SocketAddr::new(dst, server.port)),
            Duration::from_millis(800),
        )
        .is_ok()
    })
}

/// Sends `count` UDP datagrams of `size` bytes from `src` to the gateway's port 9 as fast as it
/// can; returns how long sending took.
pub fn udp_burst(topo: &Topo, src: &str, count: usize, size: usize) -> Duration {
    let src: IpAddr = src.parse().expect("src");
    let dst: IpAddr = if src.is_ipv4() { GW4 } else { GW6 }.parse().expect("dst");
    topo.out.run(|| {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind");
        let payload = vec![0x5a; size];
        let start = Instant::now();
        for _ in 0..count {
            // ICMP errors coming back may fail a send; the packet count is what matters.
            let _ = s.send_to(&payload, SocketAddr::new(dst, 9));
        }
        start.elapsed()
    })
}

/// A minimal HTTP/1.1 server in `ns` on `port` (0: any) answering 200 `ok` to everything: the
/// origin behind the gateway's proxy in end-to-end tests and the demo.
pub fn http_server(ns: &NetNs, port: u16) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = ns.run(|| TcpListener::bind(("0.0.0.0", port)).expect("bind http server"));
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                );
            });
        }
    });
    port
}
