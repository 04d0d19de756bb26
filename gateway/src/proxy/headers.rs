//! Header hygiene between client and upstream: hop-by-hop headers (RFC 9110 7.6.1, including
//! those named in `Connection`) never cross, forwarding headers are set by us, security headers
//! are added, upstream identity is hidden.

use std::{io::Write as _, net::IpAddr, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::upstream::ResponseFields;
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

/// Every hop-by-hop field name, as text: [`HOP_BY_HOP`] and `upgrade` (what the upstream client
/// marks in a response it keeps as bytes, `upstream::ResponseFields`). One list: a unit test
/// holds the two forms together.
pub(super) const HOP_BY_HOP_NAMES: [&[u8]; 9] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
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
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const ADDED: usize = 6;
/// The headers the gateway sets itself, in the order they are written.
static ADDED_NAMES: [HeaderName; ADDED] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REAL_IP,
    X_REQUEST_ID,
    header::STRICT_TRANSPORT_SECURITY,
];

/// [`ADDED_NAMES`] as the start of an HTTP/1 field line.
const ADDED_PREFIXES: [&[u8]; ADDED] = [
    b"x-forwarded-for: ",
    b"x-forwarded-proto: ",
    b"x-forwarded-host: ",
    b"x-real-ip: ",
    b"x-request-id: ",
    b"strict-transport-security: ",
];

/// A slot of [`Added`]: its index in [`ADDED_NAMES`]. The upstream request's come first, up to
/// `Hsts` (a response's only).
#[derive(Clone, Copy)]
enum Slot {
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    RealIp,
    RequestId,
    Hsts,
}

/// Headers the gateway sets on a message it forwards, kept beside the message's header map
/// instead of inserted into it: the gateway's HTTP/1 encoders write them after the map's own,
/// hyper's encoders get them inserted ([`Added::insert_into`]). Per proxied request that is nine
/// hashed inserts fewer (~2k of ~25k user-space instructions, callgrind). Whoever fills one
/// removes from the map what the peer sent under the same names: no name goes out twice.
#[derive(Clone, Debug, Default)]
pub struct Added {
    /// Set per message, by [`Slot`].
    values: [Option<HeaderValue>; ADDED],
    /// A route's configured security headers, shared by all its responses.
    shared: Option<Arc<SharedHeaders>>,
    /// A response's fields as its HTTP/1.1 upstream sent them (hop-by-hop fields and those
    /// [`ResponsePolicy`] removes not forwarded), when no stage needed them in the map; they go
    /// out before the map's.
    upstream: Option<ResponseFields>,
}

impl Added {
    fn set(&mut self, slot: Slot, value: HeaderValue) {
        self.values[slot as usize] = Some(value);
    }

    /// The response's request id (every response carries it).
    pub fn set_request_id(&mut self, id: HeaderValue) {
        self.set(Slot::RequestId, id);
    }

    /// Every header, in the order it is written.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        ADDED_NAMES
            .iter()
            .zip(&self.values)
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
            .chain(
                self.shared
                    .iter()
                    .flat_map(|s| s.pairs.iter().map(|(n, v)| (n, v))),
            )
    }

    /// Every header as HTTP/1 field lines (`name: value\r\n`): what the gateway's own
    /// encoders write after the map's.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Per response: the prefixes are static and the shared headers one block made at load
        // (a third of the copies `iter()` would take; callgrind).
        for (prefix, value) in ADDED_PREFIXES.iter().zip(&self.values) {
            if let Some(value) = value {
                out.extend_from_slice(prefix);
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if let Some(shared) = &self.shared {
            out.extend_from_slice(&shared.lines);
        }
    }

    /// The upstream's fields kept beside the map, if any.
    pub fn upstream(&self) -> Option<&ResponseFields> {
        self.upstream.as_ref()
    }

    /// Into a header map, for an encoder that only reads maps (hyper's): the upstream's fields
    /// appended, the gateway's inserted.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        if let Some(fields) = &self.upstream {
            fields.append_to(headers);
        }
        for (name, value) in self.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// What the upstream is told about the client: `X-Forwarded-For`/`-Proto`/`-Host`, `X-Real-IP`
/// (`real_ip`, the client as every stage saw it) and the request id. From an untrusted peer,
/// forwarding headers the client sent are dropped first: only a trusted proxy's chain is
/// extended (and its `X-Forwarded-Proto`/`-Host` kept). `peer` is the peer's address as a
/// header value ([`ip_value`], made once per connection).
pub fn forwarding(
    headers: &mut HeaderMap,
    peer_trusted: bool,
    peer: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
    request_id: HeaderValue,
    real_ip: HeaderValue,
) -> Added {
    let mut added = Added::default();
    let mut xff = peer.clone();
    let mut keep_proto = false;
    let mut keep_host = false;
    // Most requests carry none of these: one pass over the names costs less than the hashed
    // removals.
    if headers
        .keys()
        .any(|k| k == header::FORWARDED || ADDED_NAMES[..Slot::Hsts as usize].contains(k))
    {
        if peer_trusted {
            if let Some(prev) = headers.remove(&X_FORWARDED_FOR)
                && let Ok(prev) = prev.to_str()
                && !prev.is_empty()
            {
                let peer = peer.to_str().unwrap_or_default();
                if let Ok(chain) = HeaderValue::from_str(&format!("{prev}, {peer}")) {
                    xff = chain;
                }
            }
            keep_proto = headers.contains_key(&X_FORWARDED_PROTO);
            keep_host = headers.contains_key(&X_FORWARDED_HOST);
        } else {
            for name in [
                header::FORWARDED,
                X_FORWARDED_FOR,
                X_FORWARDED_PROTO,
                X_FORWARDED_HOST,
            ] {
                headers.remove(name);
            }
        }
        headers.remove(&X_REAL_IP);
        headers.remove(&X_REQUEST_ID);
    }
    added.set(Slot::ForwardedFor, xff);
    if !keep_proto {
        added.set(Slot::ForwardedProto, HeaderValue::from_static(proto));
    }
    if let Some(host) = host
        && !keep_host
    {
        added.set(Slot::ForwardedHost, host.clone());
    }
    added.set(Slot::RealIp, real_ip);
    added.set(Slot::RequestId, request_id);
    added
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

/// Headers every response of a route carries, as names and values (hyper's encoders) and as
/// HTTP/1 field lines (the gateway's).
#[derive(Debug)]
struct SharedHeaders {
    pairs: Vec<(HeaderName, HeaderValue)>,
    lines: Vec<u8>,
}

/// A route's response header policy, turned into header names and values once when the
/// configuration loads (per response it is then inserts of shared bytes, no parsing).
#[derive(Clone, Debug)]
pub struct ResponsePolicy {
    /// `Strict-Transport-Security`, sent on TLS only.
    hsts: Option<HeaderValue>,
    /// Sent on every response.
    always: Arc<SharedHeaders>,
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
        let mut lines = Vec::new();
        for (name, value) in &always {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        Self {
            hsts: value(&policy.hsts),
            always: Arc::new(SharedHeaders {
                pairs: always,
                lines,
            }),
            hide_identity,
        }
    }

    /// Hides upstream identity and puts the security headers (HSTS on TLS only) in `added`,
    /// removing what the upstream sent under their names and under `X-Request-Id` (the
    /// gateway's own goes with every response), from the map and from `fields` (the upstream's
    /// fields kept outside the map), which then go into `added`.
    pub fn apply(
        &self,
        headers: &mut HeaderMap,
        fields: Option<ResponseFields>,
        tls: bool,
        added: &mut Added,
    ) {
        let hsts = self.hsts.as_ref().filter(|_| tls);
        // Most upstreams send none of these: one pass over the names costs less than the
        // hashed removals.
        let ours = |k: &HeaderName| {
            k == X_REQUEST_ID
                || (hsts.is_some() && k == header::STRICT_TRANSPORT_SECURITY)
                || self.always.pairs.iter().any(|(name, _)| name == k)
                || (self.hide_identity && (k == header::SERVER || k == X_POWERED_BY))
        };
        if headers.keys().any(ours) {
            let names: Vec<HeaderName> = headers.keys().filter(|k| ours(k)).cloned().collect();
            for name in names {
                headers.remove(name);
            }
        }
        if let Some(mut fields) = fields {
            // Lowercase names: what `HeaderName`s compare as text.
            let ours = |k: &[u8]| {
                k == X_REQUEST_ID.as_str().as_bytes()
                    || (hsts.is_some() && k == b"strict-transport-security")
                    || self
                        .always
                        .pairs
                        .iter()
                        .any(|(name, _)| name.as_str().as_bytes() == k)
                    || (self.hide_identity && (k == b"server" || k == b"x-powered-by"))
            };
            fields.remove_if(ours);
            added.upstream = Some(fields);
        }
        if let Some(v) = hsts {
            added.set(Slot::Hsts, v.clone());
        }
        if !self.always.pairs.is_empty() {
            added.shared = Some(Arc::clone(&self.always));
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

    /// `h` as the upstream gets it: the map's own headers, then the added ones, each name once.
    fn sent(mut h: HeaderMap, trusted: bool, peer: &str, proto: &'static str) -> HeaderMap {
        let peer = ip_value(peer.parse().expect("ip"));
        let host = HeaderValue::from_static("api.example");
        let id = HeaderValue::from_static("req-1");
        let added = forwarding(&mut h, trusted, &peer, proto, Some(&host), id, peer.clone());
        for (name, _) in added.iter() {
            assert!(!h.contains_key(name), "{name} would go out twice");
        }
        added.insert_into(&mut h);
        h
    }

    #[test]
    fn each_forwarding_header_alone_from_an_untrusted_peer_is_dropped() {
        for name in ["forwarded", "x-forwarded-host", "x-real-ip", "x-request-id"] {
            let mut h = HeaderMap::new();
            h.insert(name, "6.6.6.6".parse().expect("v"));
            let h = sent(h, false, "1.2.3.4", "http");
            assert!(
                h.get_all(name).iter().all(|v| v != "6.6.6.6"),
                "{name} crossed"
            );
        }
    }

    #[test]
    fn forwarding_headers_from_untrusted_peers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().expect("v"));
        h.insert("x-forwarded-proto", "https".parse().expect("v"));
        h.insert("x-forwarded-host", "evil.example".parse().expect("v"));
        let h = sent(h, false, "203.0.113.9", "http");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["x-request-id"], "req-1");
    }

    #[test]
    fn a_trusted_proxys_forwarding_chain_is_extended_and_kept() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7".parse().expect("v"));
        h.insert("x-forwarded-proto", "https".parse().expect("v"));
        h.insert("x-forwarded-host", "public.example".parse().expect("v"));
        h.insert("x-real-ip", "6.6.6.6".parse().expect("v"));
        let h = sent(h, true, "10.0.0.1", "http");
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
        assert_eq!(h.len(), 5, "{h:?}");
    }

    #[test]
    fn the_hop_by_hop_names_are_one_list() {
        let maps = [HOP_BY_HOP.as_slice(), &[header::UPGRADE]].concat();
        let names: Vec<&[u8]> = maps.iter().map(|n| n.as_str().as_bytes()).collect();
        assert_eq!(names, HOP_BY_HOP_NAMES);
    }

    /// The HTTP/1 encoders write what hyper's get inserted: the same names and values.
    #[test]
    fn field_lines_say_what_the_map_gets() {
        for (name, prefix) in ADDED_NAMES.iter().zip(ADDED_PREFIXES) {
            assert_eq!(prefix, format!("{name}: ").as_bytes());
        }
        let mut policy = SecurityHeaders::default();
        policy
            .extra
            .insert("Permissions-Policy".into(), "camera=()".into());
        let policy = ResponsePolicy::new(&policy, true);
        let mut added = forwarding(
            &mut HeaderMap::new(),
            false,
            &HeaderValue::from_static("10.0.0.1"),
            "https",
            Some(&HeaderValue::from_static("api.example")),
            HeaderValue::from_static("req-1"),
            HeaderValue::from_static("10.0.0.1"),
        );
        policy.apply(&mut HeaderMap::new(), None, true, &mut added);
        let mut lines = Vec::new();
        added.write_to(&mut lines);
        let expected: String = added
            .iter()
            .map(|(n, v)| format!("{n}: {}\r\n", v.to_str().expect("ascii")))
            .collect();
        assert_eq!(String::from_utf8_lossy(&lines), expected);
        assert!(
            expected.contains("permissions-policy: camera=()\r\n"),
            "{expected}"
        );
        assert!(
            expected.contains("strict-transport-security: "),
            "{expected}"
        );
    }

    #[test]
    fn the_security_headers_replace_the_upstreams_and_identity_is_hidden() {
        let policy = SecurityHeaders::default();
        let policy = ResponsePolicy::new(&policy, true);
        let mut h = HeaderMap::new();
        h.insert(header::SERVER, "nginx/1.0".parse().expect("v"));
        h.insert(header::X_FRAME_OPTIONS, "ALLOWALL".parse().expect("v"));
        h.insert(X_REQUEST_ID, "upstream-id".parse().expect("v"));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().expect("v"));
        let mut added = Added::default();
        added.set_request_id(HeaderValue::from_static("req-1"));
        policy.apply(&mut h, None, true, &mut added);
        for (name, _) in added.iter() {
            assert!(!h.contains_key(name), "{name} would go out twice");
        }
        assert!(!h.contains_key(header::SERVER));
        added.insert_into(&mut h);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[X_REQUEST_ID], "req-1");
        assert!(h.contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert_eq!(h[header::CONTENT_TYPE], "text/plain");

        // The same fields kept as the HTTP/1.1 upstream sent them (any case), outside the map.
        let fields = ResponseFields::from_pairs(&[
            ("Server", "nginx/1.0"),
            ("X-Frame-Options", "ALLOWALL"),
            ("x-request-id", "upstream-id"),
            ("Content-Type", "text/plain"),
            ("X-Powered-By", "PHP"),
            ("Strict-Transport-Security", "max-age=1"),
        ]);
        let mut added = Added::default();
        added.set_request_id(HeaderValue::from_static("req-1"));
        policy.apply(&mut HeaderMap::new(), Some(fields), true, &mut added);
        let forwarded: Vec<_> = added
            .upstream()
            .map(|f| f.iter().collect())
            .unwrap_or_default();
        assert_eq!(forwarded, [(&b"Content-Type"[..], &b"text/plain"[..])]);
        let mut h = HeaderMap::new();
        added.insert_into(&mut h);
        assert_eq!(h[X_REQUEST_ID], "req-1");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CONTENT_TYPE], "text/plain");
        assert_eq!(
            h.get_all(header::STRICT_TRANSPORT_SECURITY).iter().count(),
            1
        );

        let mut plain = Added::default();
        policy.apply(&mut HeaderMap::new(), None, false, &mut plain);
        assert!(
            plain
                .iter()
                .all(|(n, _)| n != header::STRICT_TRANSPORT_SECURITY),
            "HSTS over plain HTTP"
        );
    }
}
