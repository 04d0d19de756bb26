//! Crafted Ethernet frames for running the XDP program with `BPF_PROG_TEST_RUN`: up to any number
//! of VLAN tags, IPv4 (options, fragments) or IPv6 (any chain of extension headers), TCP, UDP or
//! another protocol. Checksums are left at zero: the filter never reads them.
//!
//! ```text
//! let frame = Frame::new(src).vlan(ETH_P_8021AD).vlan(ETH_P_8021Q).tcp(443, tcp::SYN).build();
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// TCP flag bits.
pub mod tcp {
    pub const SYN: u8 = 0x02;
    pub const ACK: u8 = 0x10;
}

const DST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const SRC_PORT: u16 = 40_000;

/// An IPv6 extension header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options (0), `hdr_ext_len` extra 8-byte units after the first 8 bytes.
    HopByHop(u8),
    /// Routing (43), sized like [`Ext::HopByHop`].
    Routing(u8),
    /// Destination options (60), sized like [`Ext::HopByHop`].
    DestOpts(u8),
    /// Fragment (44): offset in 8-byte units and the more-fragments flag.
    Fragment { offset: u16, more: bool },
    /// Authentication header (51) with `icv_words` 4-byte words of ICV (3 = HMAC-SHA1-96, 24
    /// bytes in all); its length field counts 4-byte units minus 2.
    Ah(u8),
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop(_) => 0,
            Ext::Routing(_) => 43,
            Ext::Fragment { .. } => 44,
            Ext::Ah(_) => 51,
            Ext::DestOpts(_) => 60,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        let mut h = match self {
            Ext::HopByHop(n) | Ext::Routing(n) | Ext::DestOpts(n) => {
                let mut h = vec![0; (usize::from(n) + 1) * 8];
                h[1] = n;
                h
            }
            Ext::Fragment { offset, more } => {
                let mut h = vec![0; 8];
                h[2..4].copy_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
                h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
                h
            }
            Ext::Ah(icv_words) => {
                let mut h = vec![0; 12 + 4 * usize::from(icv_words)];
                h[1] = 1 + icv_words;
                h
            }
        };
        h[0] = next;
        h
    }
}

#[derive(Clone, Debug)]
enum L4 {
    Tcp {
        port: u16,
        flags: u8,
    },
    Udp {
        port: u16,
    },
    /// Another protocol number with 8 bytes of payload.
    Other(u8),
}

/// A frame under construction. [`Frame::build`] lays it out; the offset helpers say where the
/// IP and transport headers start, for truncation.
#[derive(Clone, Debug)]
pub struct Frame {
    tags: Vec<u16>,
    src: IpAddr,
    v4_option_words: u8,
    v4_fragment: (u16, bool),
    v6_exts: Vec<Ext>,
    l4: L4,
}

impl Frame {
    /// An untagged frame from `src` (IPv4 or IPv6) carrying a TCP SYN to port 443.
    pub fn new(src: impl Into<IpAddr>) -> Self {
        Self {
            tags: Vec::new(),
            src: src.into(),
            v4_option_words: 0,
            v4_fragment: (0, false),
            v6_exts: Vec::new(),
            l4: L4::Tcp {
                port: 443,
                flags: tcp::SYN,
            },
        }
    }

    /// Adds a VLAN tag with this TPID, outermost first.
    pub fn vlan(mut self, tpid: u16) -> Self {
        self.tags.push(tpid);
        self
    }

    /// IPv4 only: `words` 4-byte words of options (NOPs), so IHL = 5 + words (at most 10).
    pub fn ipv4_options(mut self, words: u8) -> Self {
        assert!(
            self.src.is_ipv4() && words <= 10,
            "IPv4 options: 0..=10 words"
        );
        self.v4_option_words = words;
        self
    }

    /// IPv4 only: fragment offset (8-byte units) and the more-fragments flag.
    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        assert!(
            self.src.is_ipv4() && offset < 0x2000,
            "IPv4 fragment offset"
        );
        self.v4_fragment = (offset, more);
        self
    }

    /// IPv6 only: appends an extension header to the chain (in order).
    pub fn ext(mut self, ext: Ext) -> Self {
        assert!(self.src.is_ipv6(), "extension headers are IPv6");
        self.v6_exts.push(ext);
        self
    }

    pub fn tcp(mut self, port: u16, flags: u8) -> Self {
        self.l4 = L4::Tcp { port, flags };
        self
    }

    pub fn udp(mut self, port: u16) -> Self {
        self.l4 = L4::Udp { port };
        self
    }

    /// Another transport protocol (ICMP, GRE, ...), 8 bytes of payload.
    pub fn protocol(mut self, proto: u8) -> Self {
        self.l4 = L4::Other(proto);
        self
    }

    /// Where the IP header starts.
    pub fn l3_offset(&self) -> usize {
        self.layers().0.len()
    }

    /// Where the transport header starts (after IPv4 options or IPv6 extension headers).
    pub fn l4_offset(&self) -> usize {
        let (eth, ip, _) = self.layers();
        eth.len() + ip.len()
    }

    pub fn build(&self) -> Vec<u8> {
        let (eth, ip, l4) = self.layers();
        [eth, ip, l4].concat()
    }

    fn layers(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (proto, l4) = match self.l4 {
            L4::Tcp { port, flags } => {
                let mut h = vec![0; 20];
                h[0..2].copy_from_slice(&SRC_PORT.to_be_bytes());
                h[2..4].copy_from_slice(&port.to_be_bytes());
                h[4..8].copy_from_slice(&1u32.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&65_535u16.to_be_bytes());
                (IPPROTO_TCP, h)
            }
            L4::Udp { port } => {
                let mut h = vec![0; 8];
                h[0..2].copy_from_slice(&SRC_PORT.to_be_bytes());
                h[2..4].copy_from_slice(&port.to_be_bytes());
                h[4..6].copy_from_slice(&8u16.to_be_bytes());
                (IPPROTO_UDP, h)
            }
            L4::Other(proto) => (proto, vec![0; 8]),
        };
        let (ethertype, ip) = match self.src {
            IpAddr::V4(src) => (ETH_P_IPV4, self.ipv4(src, proto, l4.len())),
            IpAddr::V6(src) => (ETH_P_IPV6, self.ipv6(src, proto, l4.len())),
        };
        (ethernet(&self.tags, ethertype), ip, l4)
    }

    fn ipv4(&self, src: Ipv4Addr, proto: u8, payload: usize) -> Vec<u8> {
        let ihl = 5 + self.v4_option_words;
        let mut h = vec![0; usize::from(ihl) * 4];
        h[0] = 0x40 | ihl;
        let total = (h.len() + payload) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        let (offset, more) = self.v4_fragment;
        let frag = offset | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&DST_V4.octets());
        // Options: NOPs.
        h[20..].fill(1);
        h
    }

    fn ipv6(&self, src: Ipv6Addr, proto: u8, payload: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        for (i, ext) in self.v6_exts.iter().enumerate() {
            let next = self.v6_exts.get(i + 1).map_or(proto, |e| e.number());
            exts.extend(ext.bytes(next));
        }
        let first = self.v6_exts.first().map_or(proto, |e| e.number());
        let mut h = vec![0; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&((exts.len() + payload) as u16).to_be_bytes());
        h[6] = first;
        h[7] = 64;
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&DST_V6.octets());
        h.extend(exts);
        h
    }
}

/// Destination and source MAC, the tags (TPID + a VLAN id), then the ethertype.
fn ethernet(tags: &[u16], ethertype: u16) -> Vec<u8> {
    let mut h = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for (i, tpid) in tags.iter().enumerate() {
        h.extend(tpid.to_be_bytes());
        h.extend((100 + i as u16).to_be_bytes());
    }
    h.extend(ethertype.to_be_bytes());
    h
}

/// An ARP request ("who has 192.0.2.254, tell `sender`"), broadcast.
pub fn arp(sender: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet(&[], ETH_P_ARP);
    f[..6].fill(0xff);
    f.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend([0x02, 0, 0, 0, 0, 0x02]);
    f.extend(sender.octets());
    f.extend([0; 6]);
    f.extend(DST_V4.octets());
    f
}

/// The first `len` bytes of `frame`.
pub fn truncate(frame: &[u8], len: usize) -> Vec<u8> {
    assert!(
        len <= frame.len(),
        "truncating {} bytes to {len}",
        frame.len()
    );
    frame[..len].to_vec()
}
