//! Addresses and prefixes as operators write them: `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// Parses an address (a host prefix) or a CIDR. Host bits in a CIDR are an error, not silently
/// cleared: `10.1.2.3/8` usually means a typo.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!("`{s}` is not an IP address or CIDR (e.g. 192.0.2.1, 192.0.2.0/24, 2001:db8::/32)")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `IpNet` read with [`parse_net`] from YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net(pub IpNet);

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_net(&s).map(Net).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_prefixes() {
        assert_eq!(
            parse_net("192.0.2.1").map(|n| n.to_string()),
            Ok("192.0.2.1/32".into())
        );
        assert_eq!(
            parse_net("2001:db8::/32").map(|n| n.to_string()),
            Ok("2001:db8::/32".into())
        );
        assert_eq!(parse_net("2001:db8::1").map(|n| n.prefix_len()), Ok(128));
    }

    #[test]
    fn garbage_and_host_bits_are_errors() {
        assert!(parse_net("300.1.1.1").is_err());
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
        let e = parse_net("10.1.2.3/8").expect_err("host bits");
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }
}

super::string_schema!(
    Net,
    "AddressOrCidr",
    "An IP address or CIDR: 192.0.2.1, 192.0.2.0/24, 2001:db8::/32"
);
