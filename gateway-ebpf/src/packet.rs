//! Header parsing with bounds checks the verifier accepts. Offsets stay small and bounded.

use aya_ebpf::programs::XdpContext;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up on finding the transport header.
const IPV6_MAX_EXT: usize = 6;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// The source, as the filter sees it.
pub enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// What the filter needs from the transport header.
pub enum Transport {
    /// TCP or UDP with a destination port; `syn` is a TCP SYN without ACK.
    Port { udp: bool, port: u16, syn: bool },
    /// Another protocol (ICMP, GRE, ...): no ports.
    Other,
    /// A non-first fragment, a truncated header or an extension chain too long to walk:
    /// the ports cannot be known.
    Unknown,
}

pub enum Parsed {
    /// Not IPv4 or IPv6 (ARP, NDP is IPv6 so it does parse, LLDP, ...).
    NotIp,
    /// An IP ethertype whose header is cut short before the source address.
    Malformed,
    Ip {
        src: Source,
        l4: Transport,
    },
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies inside the packet; unaligned reads are
    // fine in BPF.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(mut proto) = read_be16(ctx, 12) else {
        return Parsed::NotIp;
    };
    let mut off = ETH_HLEN;
    // Up to two tags: 802.1ad outer + 802.1Q inner (QinQ), or one 802.1Q.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let Some(inner) = read_be16(ctx, off + 2) else {
            return Parsed::NotIp;
        };
        proto = inner;
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let Some(inner) = read_be16(ctx, off + 2) else {
                return Parsed::NotIp;
            };
            proto = inner;
            off += 4;
        }
    }
    match proto {
        ETH_P_IPV4 => parse_ipv4(ctx, off),
        ETH_P_IPV6 => parse_ipv6(ctx, off),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Parsed {
    let (Some(ver_ihl), Some(src)) = (read::<u8>(ctx, off), read::<[u8; 4]>(ctx, off + 12)) else {
        return Parsed::Malformed;
    };
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        return Parsed::Malformed;
    }
    let src = Source::V4(src);
    let (Some(frag), Some(proto)) = (read_be16(ctx, off + 6), read::<u8>(ctx, off + 9)) else {
        return Parsed::Malformed;
    };
    // A non-first fragment carries no transport header.
    if frag & 0x1fff != 0 {
        return Parsed::Ip {
            src,
            l4: Transport::Unknown,
        };
    }
    Parsed::Ip {
        src,
        l4: transport(ctx, proto, off + ihl),
    }
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize) -> Parsed {
    let (Some(next), Some(src)) = (read::<u8>(ctx, off + 6), read::<[u8; 16]>(ctx, off + 8)) else {
        return Parsed::Malformed;
    };
    let src = Source::V6(src);
    let mut next = next;
    let mut l4 = off + 40;
    for _ in 0..IPV6_MAX_EXT {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH => {
                let Some([nh, len]) = read::<[u8; 2]>(ctx, l4) else {
                    return Parsed::Ip {
                        src,
                        l4: Transport::Unknown,
                    };
                };
                // AH counts 4-byte units minus 2, the others 8-byte units minus 1: the unit is
                // the skipped header's, not the next one's.
                l4 += if next == IPV6_AH {
                    (len as usize + 2) * 4
                } else {
                    (len as usize + 1) * 8
                };
                next = nh;
            }
            IPV6_FRAGMENT => {
                // One read of the first 4 bytes: next header, reserved, offset + flags.
                let Some([nh, _, frag_hi, frag_lo]) = read::<[u8; 4]>(ctx, l4) else {
                    return Parsed::Ip {
                        src,
                        l4: Transport::Unknown,
                    };
                };
                if u16::from_be_bytes([frag_hi, frag_lo]) & 0xfff8 != 0 {
                    return Parsed::Ip {
                        src,
                        l4: Transport::Unknown,
                    };
                }
                next = nh;
                l4 += 8;
            }
            _ => break,
        }
    }
    let l4 = match next {
        // Still inside the chain after IPV6_MAX_EXT headers: give up on the ports.
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT => Transport::Unknown,
        _ => transport(ctx, next, l4),
    };
    Parsed::Ip { src, l4 }
}

/// Reads at a variable offset are single multi-byte reads: one bounds check the verifier can
/// follow (it loses track of a 1-byte read checked as `ptr >= end`).
#[inline(always)]
fn transport(ctx: &XdpContext, proto: u8, off: usize) -> Transport {
    match proto {
        IPPROTO_TCP => match read::<[u8; 14]>(ctx, off) {
            Some(h) => Transport::Port {
                udp: false,
                port: u16::from_be_bytes([h[2], h[3]]),
                syn: h[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN,
            },
            None => Transport::Unknown,
        },
        IPPROTO_UDP => match read::<[u8; 4]>(ctx, off) {
            Some(h) => Transport::Port {
                udp: true,
                port: u16::from_be_bytes([h[2], h[3]]),
                syn: false,
            },
            None => Transport::Unknown,
        },
        _ => Transport::Other,
    }
}
