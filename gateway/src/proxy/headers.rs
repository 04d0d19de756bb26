//! Header hygiene between client and upstream: hop-by-hop headers (RFC 9110 7.6.1, including
//! those named in `Connection`) never cross, forwarding headers are set by us, security headers
//! are added, upstream identity is hidden.

use std::{io::Write as _, net::IpAddr};

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::SecurityHeaders;

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Per request, twice: most messages carry none of these, and one pass over their few names
    // costs less than nine hashed removals (comparing standard names is comparing small
    // integers; a `match` on the name's text measured slower).
    if !headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(k) || k == header::UPGRADE)
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What the upstream is told about the client. From an untrusted peer, forwarding headers the
/// client sent are dropped first: only a trusted proxy's chain is extended. `peer` is the
/// peer's address as a header value ([`ip_value`], made once per connection).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer_trusted: bool,
    peer: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    let xff = if peer_trusted {
        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => {
                let peer = peer.to_str().unwrap_or_default();
                HeaderValue::from_str(&format!("{prev}, {peer}")).ok()
            }
            _ => Some(peer.clone()),
        }
    } else {
        // Most requests carry none of these: one pass over the names costs less than five
        // hashed removals.
        let names = [
            header::FORWARDED,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REAL_IP,
        ];
        if headers.keys().any(|k| names.contains(k)) {
            for h in names {
                headers.remove(h);
            }
        }
        Some(peer.clone())
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !peer_trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if let Some(host) = host
        && (!peer_trusted || !headers.contains_key(&X_FORWARDED_HOST))
    {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// An address as a header value, formatted on the stack (per request: no `String` in between).
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    // Digits, dots, colons and hex letters: always a valid header value.
    HeaderValue::from_str(format_addr(&mut buf, ip, None))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// An address (with the port when there is one) formatted on the stack: `Display` for IPv4
/// goes through the formatting machinery per octet and cost more than the rest of the line.
pub fn format_addr(buf: &mut [u8; 64], ip: IpAddr, port: Option<u16>) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                len += write_decimal(&mut buf[len..], u32::from(octet));
            }
            if let Some(port) = port {
                buf[len] = b':';
                len += 1;
                len += write_decimal(&mut buf[len..], u32::from(port));
            }
            len
        }
        IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = match port {
                Some(port) => write!(cursor, "[{v6}]:{port}"),
                None => write!(cursor, "{v6}"),
            };
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// `n` in decimal at the start of `out`; how many bytes that took (at most 10).
fn write_decimal(out: &mut [u8], n: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

/// A route's response header policy, turned into header names and values once when the
/// configuration loads (per response it is then inserts of shared bytes, no parsing).
#[derive(Clone, Debug)]
pub struct ResponsePolicy {
    /// `Strict-Transport-Security`, sent on TLS only.
    hsts: Option<HeaderValue>,
    /// Sent on every response.
    always: Vec<(HeaderName, HeaderValue)>,
    /// Remove `Server` and `X-Powered-By` from upstream responses.
    hide_identity: bool,
}

const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

impl ResponsePolicy {
    /// Empty values disable a header; names or values that are not valid HTTP are left out (the
    /// configuration check reports them).
    pub fn new(policy: &SecurityHeaders, hide_identity: bool) -> Self {
        let value = |v: &str| {
            (!v.is_empty())
                .then(|| HeaderValue::from_str(v).ok())
                .flatten()
        };
        let mut always = Vec::new();
        for (name, v) in [
            (header::X_CONTENT_TYPE_OPTIONS, &policy.content_type_options),
            (header::REFERRER_POLICY, &policy.referrer_policy),
            (header::X_FRAME_OPTIONS, &policy.frame_options),
        ] {
            if let Some(v) = value(v) {
                always.push((name, v));
            }
        }
        for (k, v) in &policy.extra {
            if let (Ok(name), Some(v)) = (HeaderName::from_bytes(k.as_bytes()), value(v)) {
                always.push((name, v));
            }
        }
        Self {
            hsts: value(&policy.hsts),
            always,
            hide_identity,
        }
    }

    /// Adds the security headers (HSTS on TLS only) and hides upstream identity.
    pub fn apply(&self, headers: &mut HeaderMap, tls: bool) {
        // Most upstreams send neither: one pass over the names costs less than two hashed
        // removals.
        if self.hide_identity
            && headers
                .keys()
                .any(|k| k == header::SERVER || k == X_POWERED_BY)
        {
            headers.remove(header::SERVER);
            headers.remove(X_POWERED_BY);
        }
        if tls && let Some(v) = &self.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
        for (name, v) in &self.always {
            headers.insert(name.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_formatted_as_display_does() {
        let mut buf = [0u8; 64];
        for text in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.4:8080",
            "[2001:db8::1]:443",
            "[::ffff:192.0.2.1]:1",
        ] {
            let addr: std::net::SocketAddr = text.parse().expect("address");
            assert_eq!(format_addr(&mut buf, addr.ip(), Some(addr.port())), text);
            assert_eq!(
                format_addr(&mut buf, addr.ip(), None),
                addr.ip().to_string()
            );
        }
    }

    #[test]
    fn addresses_become_header_values() {
        for ip in [
            "203.0.113.7",
            "2001:db8::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let addr: std::net::IpAddr = ip.parse().expect("address");
            assert_eq!(
                ip_value(addr).to_str().expect("ascii"),
                addr.to_string(),
                "{ip}"
            );
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Secret-Hop".parse().expect("v"),
        );
        h.insert("x-secret-hop", "1".parse().expect("v"));
        h.insert("keep-alive", "timeout=5".parse().expect("v"));
        h.insert(header::TE, "trailers".parse().expect("v"));
        h.insert("x-kept", "1".parse().expect("v"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), "x".parse().expect("v"));
            h.insert("x-kept", "1".parse().expect("v"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} crossed");
            assert!(h.contains_key("x-kept"));
        }
    }

    #[test]
    fn each_forwarding_header_alone_from_an_untrusted_peer_is_dropped() {
        for name in ["forwarded", "x-forwarded-host", "x-real-ip"] {
            let mut h = HeaderMap::new();
            h.insert(name, "6.6.6.6".parse().expect("v"));
            set_forwarded(&mut h, false, &"1.2.3.4".parse().expect("v"), "http", None);
            assert!(!h.contains_key(name), "{name} crossed");
        }
    }

    #[test]
    fn forwarding_headers_from_untrusted_peers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().expect("v"));
        h.insert("x-forwarded-proto", "https".parse().expect("v"));
        set_forwarded(
            &mut h,
            false,
            &ip_value("203.0.113.9".parse().expect("ip")),
            "http",
            None,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7".parse().expect("v"));
        set_forwarded(
            &mut h,
            true,
            &ip_value("10.0.0.1".parse().expect("ip")),
            "https",
            None,
        );
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 10.0.0.1");
    }
}
