//! Bot signals: a missing or abnormal User-Agent, known scanner agents, request shapes real
//! clients do not send, and bursts. Each is a weighted finding for the defense loop (weights in
//! `defense.weights`, codes `bot_*`); only the signals listed in `bot.block` reject (403
//! `bot_blocked`), because every one of them also fires on some legitimate client.

use std::{hash::BuildHasher as _, net::IpAddr, sync::Arc, time::Instant};

use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use crate::{
    proxy::{
        problem::Problem,
        stage::{Evidence, Finding, RequestContext},
    },
    ratelimit::{Check, GcraTable, Rate, client_network},
};

/// The top-level `bot:` section; absent means no bot signals are checked.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BotSection {
    /// User-Agent substrings (case-insensitive) of scanners, in addition to the built-in list
    /// (sqlmap, nikto, nmap, masscan, zgrab, nuclei, ...).
    pub scanner_agents: Vec<String>,
    /// Signals answered with 403 `bot_blocked` instead of only reported.
    pub block: Vec<Signal>,
    /// Requests per client (IPv6 per /64) above which a burst is reported: `rate` like `20/s`
    /// and `burst` requests at once. Absent: bursts are not judged here.
    pub burst: Option<BurstConfig>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BurstConfig {
    pub rate: String,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A bot signal; its finding's reason code is `bot_<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    MissingUserAgent,
    AbnormalUserAgent,
    ScannerAgent,
    RequestShape,
    Burst,
}

impl Signal {
    pub fn code(self) -> &'static str {
        match self {
            Signal::MissingUserAgent => "bot_missing_user_agent",
            Signal::AbnormalUserAgent => "bot_abnormal_user_agent",
            Signal::ScannerAgent => "bot_scanner_agent",
            Signal::RequestShape => "bot_request_shape",
            Signal::Burst => "bot_burst",
        }
    }
}

/// Tools that announce themselves; matched as lowercase substrings of the User-Agent.
const SCANNERS: &[&str] = &[
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "wpscan",
    "dirbuster",
    "gobuster",
    "feroxbuster",
    "fuzz faster u fool",
    "ffuf",
    "acunetix",
    "netsparker",
    "nessus",
    "openvas",
    "w3af",
    "arachni",
    "skipfish",
    "havij",
    "whatweb",
    "jaeles",
    "commix",
    "zmeu",
    "hydra",
    "wfuzz",
];

/// User-Agents longer than this are abnormal (browsers send ~150 bytes).
const MAX_USER_AGENT: usize = 512;

/// Bot signals of one runtime generation.
pub struct Detector {
    scanners: Vec<String>,
    block: Vec<Signal>,
    burst: Option<Arc<GcraTable>>,
    hasher: std::hash::RandomState,
    epoch: Instant,
    v4: u8,
    v6: u8,
}

impl BotSection {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(b) = &self.burst {
            burst_rate(b).map_err(|e| ("burst", format!("bot.burst: {e}")))?;
        }
        if self.scanner_agents.iter().any(|s| s.trim().is_empty()) {
            return Err(("scanner_agents", "bot.scanner_agents: empty entry".into()));
        }
        Ok(())
    }
}

fn burst_rate(b: &BurstConfig) -> Result<Rate, String> {
    let (n, unit) = b
        .rate
        .split_once('/')
        .ok_or_else(|| format!("rate `{}` is not like 20/s", b.rate))?;
    let n: u64 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("rate `{}`: count must be above 0", b.rate))?;
    let unit_ns: u64 = match unit.trim() {
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        other => return Err(format!("rate `{}`: unit `{other}` (s, m)", b.rate)),
    };
    let burst = b.burst.unwrap_or(u32::try_from(n).unwrap_or(u32::MAX));
    if burst == 0 {
        return Err("burst must be at least 1".into());
    }
    Ok(Rate {
        interval: unit_ns.div_ceil(n),
        burst,
    })
}

impl Detector {
    /// Built per generation: burst state restarts on reload (it is a signal, not a limit).
    pub fn new(section: &BotSection, v4: u8, v6: u8, max_keys: usize) -> Self {
        let mut scanners: Vec<String> = SCANNERS.iter().map(|s| (*s).to_owned()).collect();
        scanners.extend(
            section
                .scanner_agents
                .iter()
                .map(|s| s.to_ascii_lowercase()),
        );
        Self {
            scanners,
            block: section.block.clone(),
            burst: section
                .burst
                .as_ref()
                .and_then(|b| burst_rate(b).ok())
                .map(|rate| Arc::new(GcraTable::new(rate, max_keys))),
            hasher: std::hash::RandomState::new(),
            epoch: Instant::now(),
            v4,
            v6,
        }
    }

    /// Adds a finding per signal; rejects when one of them is configured to block.
    pub fn check(
        &self,
        ctx: &mut RequestContext<'_>,
        parts: &http::request::Parts,
    ) -> Result<(), Problem> {
        let found = self.signals(ctx.client_ip, parts);
        let mut blocking = None;
        for (signal, evidence) in found {
            if blocking.is_none() && self.block.contains(&signal) {
                blocking = Some(evidence.clone());
            }
            ctx.findings.push(Finding {
                code: signal.code(),
                evidence,
            });
        }
        match blocking {
            Some(evidence) => Err(Problem::new(StatusCode::FORBIDDEN, "bot_blocked")
                .detail("automated client refused")
                .evidence(Evidence {
                    // The signal's finding already carries its weight.
                    weight: None,
                    ..evidence
                })),
            None => Ok(()),
        }
    }

    fn signals(&self, client: IpAddr, parts: &http::request::Parts) -> Vec<(Signal, Evidence)> {
        let mut out = Vec::new();
        let h = &parts.headers;
        let evidence =
            |rule: &str, message: String, location: &str, excerpt: Option<String>| Evidence {
                stage: "bot",
                rule_ids: vec![rule.to_owned()],
                message,
                location: Some(location.to_owned()),
                excerpt,
                weight: None,
            };
        let ua = h
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match ua.as_deref().map(str::trim) {
            None | Some("") => out.push((
                Signal::MissingUserAgent,
                evidence(
                    "missing_user_agent",
                    "no User-Agent".into(),
                    "REQUEST_HEADERS:User-Agent",
                    None,
                ),
            )),
            Some(agent) => {
                let lower = agent.to_ascii_lowercase();
                let excerpt = Some(agent.chars().take(64).collect::<String>());
                if let Some(tool) = self.scanners.iter().find(|s| lower.contains(s.as_str())) {
                    out.push((
                        Signal::ScannerAgent,
                        evidence(
                            "scanner_agent",
                            format!("scanner User-Agent ({tool})"),
                            "REQUEST_HEADERS:User-Agent",
                            excerpt,
                        ),
                    ));
                } else if let Some(why) = abnormal_agent(agent) {
                    out.push((
                        Signal::AbnormalUserAgent,
                        evidence(
                            "abnormal_user_agent",
                            why.into(),
                            "REQUEST_HEADERS:User-Agent",
                            excerpt,
                        ),
                    ));
                }
            }
        }
        let shape = request_shape(parts.version, &parts.uri, h);
        if !shape.is_empty() {
            out.push((
                Signal::RequestShape,
                evidence("request_shape", shape.join(", "), "REQUEST_LINE", None),
            ));
        }
        if let Some(table) = &self.burst {
            let key = self
                .hasher
                .hash_one(client_network(client, self.v4, self.v6));
            let now = self.epoch.elapsed().as_nanos() as u64 + 1;
            if let (Check::Denied { .. }, _) = table.check(key, now) {
                out.push((
                    Signal::Burst,
                    evidence(
                        "burst",
                        "request burst above the configured rate".into(),
                        "REMOTE_ADDR",
                        None,
                    ),
                ));
            }
        }
        out
    }
}

/// Why a present User-Agent is not one a real client sends, if it is not.
fn abnormal_agent(agent: &str) -> Option<&'static str> {
    if agent.len() > MAX_USER_AGENT {
        return Some("User-Agent longer than any real client sends");
    }
    if agent.chars().any(|c| c.is_control()) || agent.contains('\u{fffd}') {
        return Some("control or non-text bytes in User-Agent");
    }
    // Every real client names itself `product/version` (RFC 9110 section 10.1.5).
    let has_product = agent.split_whitespace().any(|tok| {
        tok.split_once('/')
            .is_some_and(|(p, v)| !p.is_empty() && !v.is_empty())
    });
    if !has_product {
        return Some("User-Agent without a product/version token");
    }
    None
}

/// Shapes real clients do not send, named for the evidence.
fn request_shape(version: http::Version, uri: &http::Uri, h: &HeaderMap) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !h.contains_key(header::ACCEPT) {
        out.push("no Accept header");
    }
    if version <= http::Version::HTTP_10 {
        out.push("HTTP/1.0 or older");
    }
    if h.get_all(header::HOST).iter().count() > 1 {
        out.push("several Host headers");
    }
    if let (Some(authority), Some(host)) = (
        uri.authority(),
        h.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) && version < http::Version::HTTP_2
        && !authority.as_str().eq_ignore_ascii_case(host)
    {
        out.push("absolute request target names another host than Host");
    }
    if let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) {
        let bare = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        if bare.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            out.push("Host is an IP address");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    fn detector(yaml: &str) -> Detector {
        let section: BotSection = serde_yaml::from_str(yaml).expect("section");
        section.validate().expect("valid");
        Detector::new(&section, 32, 64, 1000)
    }

    fn codes(d: &Detector, req: http::Request<()>) -> Vec<&'static str> {
        d.signals("192.0.2.1".parse().expect("ip"), &parts(req))
            .into_iter()
            .map(|(s, _)| s.code())
            .collect()
    }

    fn browser() -> http::request::Builder {
        http::Request::get("/x")
            .header("host", "api.example.com")
            .header("accept", "application/json")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            )
    }

    #[test]
    fn a_normal_client_raises_nothing() {
        let d = detector("{}");
        assert!(codes(&d, browser().body(()).expect("req")).is_empty());
        let curl = http::Request::get("/x")
            .header("host", "api.example.com")
            .header("accept", "*/*")
            .header("user-agent", "curl/8.5.0")
            .body(())
            .expect("req");
        assert!(codes(&d, curl).is_empty());
    }

    #[test]
    fn each_signal_is_reported() {
        let d = detector("{ scanner_agents: [EvilBot] }");
        let no_ua = http::Request::get("/x")
            .header("host", "api.example.com")
            .header("accept", "*/*")
            .body(())
            .expect("req");
        assert_eq!(codes(&d, no_ua), ["bot_missing_user_agent"]);
        for agent in [
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "Mozilla/5.0 Nikto",
            "evilbot/2",
        ] {
            let r = http::Request::get("/x")
                .header("host", "api.example.com")
                .header("accept", "*/*")
                .header("user-agent", agent)
                .body(())
                .expect("req");
            assert_eq!(codes(&d, r), ["bot_scanner_agent"], "{agent}");
        }
        let weird = http::Request::get("/x")
            .header("host", "api.example.com")
            .header("accept", "*/*")
            .header("user-agent", "x")
            .body(())
            .expect("req");
        assert_eq!(codes(&d, weird), ["bot_abnormal_user_agent"]);
        let old = http::Request::get("/x")
            .version(http::Version::HTTP_10)
            .header("host", "10.0.0.1")
            .header("user-agent", "curl/8.5.0")
            .body(())
            .expect("req");
        let found = d.signals("192.0.2.1".parse().expect("ip"), &parts(old));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Signal::RequestShape);
        assert!(found[0].1.message.contains("HTTP/1.0"), "{:?}", found[0].1);
        assert!(found[0].1.message.contains("no Accept"));
        assert!(found[0].1.message.contains("IP address"));
    }

    #[test]
    fn bursts_are_reported_once_over_the_rate() {
        let d = detector("{ burst: { rate: 1/m, burst: 3 } }");
        for _ in 0..3 {
            assert!(codes(&d, browser().body(()).expect("req")).is_empty());
        }
        assert_eq!(codes(&d, browser().body(()).expect("req")), ["bot_burst"]);
    }
}
