//! Feed formats: plain (one address or CIDR per line, `#` comments), Spamhaus DROP
//! (`CIDR ; SBLnnn`, `;` comments) and FireHOL netsets (`#` comments, one address or CIDR per
//! line), plus the operator's geo file (`CIDR,CC`). Bad lines are reported with their number and
//! skipped; one typo must not drop a whole feed.

use std::{collections::HashSet, net::IpAddr};

use ipnet::IpNet;

use crate::config::FeedFormat;

/// What a feed said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Distinct networks, host bits cleared, in file order.
    pub entries: Vec<IpNet>,
    /// (1-based line, why) for every line that was not understood.
    pub bad: Vec<(usize, String)>,
}

/// Which lines to take from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Feed(FeedFormat),
    /// `CIDR,CC` lines; only those of this country (ISO 3166 alpha-2, any case).
    Geo(String),
}

pub fn parse(format: &Format, text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = match format {
            Format::Feed(FeedFormat::SpamhausDrop) => raw.split(';').next().unwrap_or(""),
            Format::Feed(_) | Format::Geo(_) => raw.split('#').next().unwrap_or(""),
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let token = match format {
            Format::Geo(cc) => {
                let Some((net, country)) = line.split_once(',') else {
                    out.bad.push((i + 1, format!("`{line}` is not CIDR,CC")));
                    continue;
                };
                // ipdeny/ip2location conversions sometimes quote fields.
                let country = country.trim().trim_matches('"');
                if !country.eq_ignore_ascii_case(cc) {
                    continue;
                }
                net.trim().trim_matches('"')
            }
            // Anything after the address (FireHOL and plain lists sometimes carry a comment
            // without `#`) is ignored.
            Format::Feed(_) => line.split_whitespace().next().unwrap_or(""),
        };
        match net(token) {
            Ok(n) => {
                if seen.insert(n) {
                    out.entries.push(n);
                }
            }
            Err(e) => out.bad.push((i + 1, e)),
        }
    }
    out
}

/// An address or CIDR; host bits are cleared (lists are not always canonical).
fn net(s: &str) -> Result<IpNet, String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("`{s}` is not an IP address or CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(p: &Parsed) -> Vec<String> {
        p.entries.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn plain_lists_take_addresses_and_cidrs_and_report_bad_lines() {
        let text = "# my list\n192.0.2.1\n\n198.51.100.0/24  # office scanner\n2001:db8::/32\nnot-an-ip\n192.0.2.1\n10.0.0.300\n";
        let p = parse(&Format::Feed(FeedFormat::Plain), text);
        assert_eq!(
            nets(&p),
            ["192.0.2.1/32", "198.51.100.0/24", "2001:db8::/32"]
        );
        assert_eq!(p.bad.len(), 2);
        assert_eq!(p.bad[0].0, 6);
        assert!(p.bad[0].1.contains("not-an-ip"));
        assert_eq!(p.bad[1].0, 8);
    }

    #[test]
    fn spamhaus_drop_lines_carry_an_sbl_reference() {
        let text = "; Spamhaus DROP List 2024/01/01 - (c) 2024 The Spamhaus Project\n\
                    ; https://www.spamhaus.org/drop/drop.txt\n\
                    ; Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\n\
                    1.10.16.0/20 ; SBL256894\n\
                    1.19.0.0/16 ; SBL434604\n\
                    garbage ; SBL1\n";
        let p = parse(&Format::Feed(FeedFormat::SpamhausDrop), text);
        assert_eq!(nets(&p), ["1.10.16.0/20", "1.19.0.0/16"]);
        assert_eq!(
            p.bad,
            vec![(6, "`garbage` is not an IP address or CIDR".into())]
        );
    }

    #[test]
    fn firehol_netsets_with_header_comments_and_host_bits() {
        let text = "#\n# firehol_level1\n#\n# Maintainer      : FireHOL\n#\n0.0.0.0/8\n1.2.3.4\n5.6.7.9/30\n";
        let p = parse(&Format::Feed(FeedFormat::Firehol), text);
        assert_eq!(nets(&p), ["0.0.0.0/8", "1.2.3.4/32", "5.6.7.8/30"]);
        assert!(p.bad.is_empty());
    }

    #[test]
    fn geo_files_take_one_country() {
        let text = "# CIDR,CC\n1.0.1.0/24,CN\n\"1.0.2.0/23\",\"cn\"\n5.8.0.0/19,RU\n2001:250::/35,CN\nbroken line\n";
        let cn = parse(&Format::Geo("CN".into()), text);
        assert_eq!(nets(&cn), ["1.0.1.0/24", "1.0.2.0/23", "2001:250::/35"]);
        assert_eq!(cn.bad.len(), 1);
        assert_eq!(cn.bad[0].0, 6);
        let ru = parse(&Format::Geo("RU".into()), text);
        assert_eq!(nets(&ru), ["5.8.0.0/19"]);
    }
}
