//! What a limit counts together: the client identity (IPv6 aggregated to a prefix), the
//! principal, a claim, a header, the route, or a combination.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::proxy::stage::RequestContext;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyPart {
    ClientIp,
    /// `ctx.principal.id`: API key id, JWT subject, certificate subject.
    Principal,
    /// A claim of the principal: a top-level name or a JSON pointer (`/org/id`).
    Claim(String),
    Header(HeaderName),
    Route,
}

impl KeyPart {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s {
            "client_ip" | "ip" => KeyPart::ClientIp,
            "principal" | "consumer" => KeyPart::Principal,
            "route" => KeyPart::Route,
            _ => {
                if let Some(name) = s.strip_prefix("header:") {
                    KeyPart::Header(
                        HeaderName::from_bytes(name.trim().as_bytes())
                            .map_err(|_| format!("`{name}` is not a header name"))?,
                    )
                } else if let Some(claim) = s.strip_prefix("claim:") {
                    if claim.is_empty() {
                        return Err("`claim:` needs a claim name or JSON pointer".into());
                    }
                    KeyPart::Claim(claim.trim().to_owned())
                } else {
                    return Err(format!(
                        "unknown key `{s}` (client_ip, principal, route, header:NAME, claim:NAME)"
                    ));
                }
            }
        })
    }

    /// Needs authentication to have run.
    pub fn needs_principal(&self) -> bool {
        matches!(self, KeyPart::Principal | KeyPart::Claim(_))
    }

    pub fn describe(&self) -> String {
        match self {
            KeyPart::ClientIp => "client_ip".into(),
            KeyPart::Principal => "principal".into(),
            KeyPart::Route => "route".into(),
            KeyPart::Header(h) => format!("header:{h}"),
            KeyPart::Claim(c) => format!("claim:{c}"),
        }
    }
}

/// The client as limits see it: IPv4 to `v4` bits, IPv6 to `v6` bits (a /64 is one subscriber:
/// rotating addresses inside it must not buy fresh buckets). IPv4-mapped IPv6 counts as IPv4.
pub fn client_network(ip: IpAddr, v4: u8, v6: u8) -> String {
    let ip = match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4addr => v4addr,
    };
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if v4 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(v4.min(32)))
            };
            format!("{}/{}", std::net::Ipv4Addr::from(bits & mask), v4.min(32))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if v6 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(v6.min(128)))
            };
            format!("{}/{}", std::net::Ipv6Addr::from(bits & mask), v6.min(128))
        }
    }
}

/// One part's value for this request, `None` when the request has none (no principal, no such
/// claim or header).
pub fn value(
    part: &KeyPart,
    ctx: &RequestContext<'_>,
    headers: &HeaderMap,
    v4: u8,
    v6: u8,
) -> Option<String> {
    match part {
        KeyPart::ClientIp => Some(client_network(ctx.client_ip, v4, v6)),
        KeyPart::Route => Some(ctx.route.name.clone()),
        KeyPart::Principal => ctx.principal.as_ref().map(|p| p.id.clone()),
        KeyPart::Header(name) => headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        KeyPart::Claim(claim) => {
            let claims = &ctx.principal.as_ref()?.claims;
            let v = if claim.starts_with('/') {
                claims.pointer(claim)
            } else {
                claims.get(claim)
            }?;
            match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_rotation_inside_a_prefix_is_one_client() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_network(a, 32, 64), client_network(b, 32, 64));
        assert_ne!(client_network(a, 32, 64), client_network(c, 32, 64));
        assert_eq!(client_network(a, 32, 64), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(client_network(mapped, 32, 64), "192.0.2.7/32");
        assert_eq!(
            client_network("192.0.2.7".parse().expect("ip"), 24, 64),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn key_parts_parse() {
        assert_eq!(KeyPart::parse("client_ip"), Ok(KeyPart::ClientIp));
        assert_eq!(
            KeyPart::parse("claim:/org/id"),
            Ok(KeyPart::Claim("/org/id".into()))
        );
        assert!(matches!(
            KeyPart::parse("header:X-Tenant"),
            Ok(KeyPart::Header(_))
        ));
        assert!(KeyPart::parse("cookie:x").is_err());
        assert!(KeyPart::parse("header:bad header").is_err());
    }
}
