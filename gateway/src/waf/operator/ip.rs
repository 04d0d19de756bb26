//! `@ipMatch` and `@ipMatchFromFile`: IPv4/IPv6 addresses and CIDR ranges.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

#[derive(Debug)]
pub(super) struct IpSet {
    nets: Vec<IpNet>,
}

impl IpSet {
    /// Comma-separated (spaces allowed) addresses or CIDR ranges.
    pub(super) fn parse(arg: &str) -> Result<Self, String> {
        let nets = arg
            .split([',', ' ', '\t', '\n'])
            .filter(|s| !s.is_empty())
            .map(parse_one)
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err("no addresses".to_string());
        }
        Ok(Self { nets })
    }

    /// One address or range per line; `#` comments and blank lines skipped.
    pub(super) fn from_file(arg: &str, rule_dir: &Path) -> Result<Self, (PathBuf, String)> {
        let path = if Path::new(arg).is_absolute() {
            PathBuf::from(arg)
        } else {
            rule_dir.join(arg)
        };
        let text = std::fs::read_to_string(&path).map_err(|e| (path.clone(), e.to_string()))?;
        let nets = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(parse_one)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (path.clone(), e))?;
        Ok(Self { nets })
    }

    /// Whether the value (an address in text) is in the set; a value that is not an address is not.
    pub(super) fn contains(&self, input: &[u8]) -> bool {
        let Some(ip) = std::str::from_utf8(input)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
        else {
            return false;
        };
        // An IPv4-mapped IPv6 address is its IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

fn parse_one(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ranges() {
        let set = IpSet::parse("127.0.0.1,::1, 10.0.0.0/8,2001:db8::/32").expect("parses");
        assert!(set.contains(b"127.0.0.1"));
        assert!(set.contains(b"::1"));
        assert!(set.contains(b"10.200.3.4"));
        assert!(set.contains(b"::ffff:10.1.1.1"));
        assert!(set.contains(b"2001:db8::42"));
        assert!(!set.contains(b"192.168.1.1"));
        assert!(!set.contains(b"not an ip"));
        assert!(IpSet::parse("300.1.1.1").is_err());
    }

    #[test]
    fn from_file() {
        let dir = std::env::temp_dir().join(format!("waf-ip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("ips.txt"), "# office\n192.168.0.0/16\n\n::1\n").expect("write");
        let set = IpSet::from_file("ips.txt", &dir);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let set = set.expect("loads");
        assert!(set.contains(b"192.168.4.4"));
        assert!(!set.contains(b"10.0.0.1"));
    }
}
