//! The `telemetry:` section: where security events go.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::de_duration;

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Security events: one ECS JSON object per blocking or flagging decision.
    pub events: Option<EventsConfig>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Append JSON lines to this file (relative to the config file).
    pub file: Option<PathBuf>,
    /// Write JSON lines to stdout.
    pub stdout: bool,
    /// Also send each event to a syslog collector.
    pub syslog: Option<SyslogConfig>,
    /// Events per second per class (rejected, flagged, change, escalation); the rest are
    /// counted and reported in periodic `suppressed` records.
    pub rate: f64,
    /// Events a class may send at once before `rate` applies.
    pub burst: u32,
    /// How often the counts of suppressed events are written.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub summary_interval: Duration,
    /// Events waiting for the writer; when full, events are counted as suppressed.
    pub queue: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            file: None,
            stdout: false,
            syslog: None,
            rate: 50.0,
            burst: 200,
            summary_interval: Duration::from_secs(10),
            queue: 4096,
        }
    }
}

impl EventsConfig {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.file.is_none() && !self.stdout && self.syslog.is_none() {
            return Err((
                "events",
                "telemetry.events needs a `file`, `stdout: true` or `syslog`".into(),
            ));
        }
        if self.rate.is_nan() || self.rate <= 0.0 || self.burst == 0 || self.queue == 0 {
            return Err((
                "rate",
                "telemetry.events: rate, burst and queue must be above 0".into(),
            ));
        }
        if self.summary_interval.is_zero() {
            return Err((
                "summary_interval",
                "telemetry.events.summary_interval must be above 0".into(),
            ));
        }
        if let Some(s) = &self.syslog
            && !s.address.contains(':')
        {
            return Err((
                "address",
                format!("syslog address `{}` must be HOST:PORT", s.address),
            ));
        }
        Ok(())
    }
}

/// A syslog collector (RFC 5424).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `HOST:PORT` of the collector.
    pub address: String,
    /// `udp` (one message per datagram), `tcp` or `tls` (octet-counted framing).
    #[serde(default)]
    pub transport: SyslogTransport,
    #[serde(default)]
    pub facility: Facility,
    /// APP-NAME of every message.
    #[serde(default = "default_app")]
    pub app_name: String,
    /// CA bundle (PEM) that signs the collector's certificate (`tls`); system roots otherwise.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Name to verify the collector's certificate against; the address's host by default.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_app() -> String {
    "gateway".into()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// Syslog facility.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Auth,
    Daemon,
    Authpriv,
    #[default]
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    pub const fn code(self) -> u8 {
        match self {
            Facility::Auth => 4,
            Facility::Daemon => 3,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, FeedFormat};

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(Path::new("/etc/gw/gw.yaml"), text)
    }

    #[test]
    fn events_and_feeds_parse_with_paths_relative_to_the_file() {
        let c = parse(
            "telemetry:\n  events:\n    file: log/events.json\n    syslog: { address: \"10.0.0.5:6514\", transport: tls, ca: ca.pem }\n\
             defense:\n  feeds:\n    - { name: drop, url: \"https://example.test/drop.txt\", format: spamhaus_drop, refresh: 12h }\n\
             \x20   - { name: local, file: lists/bad.txt }\n  geo: { file: geo.csv, block: [cn, RU] }\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let e = c.telemetry.events.expect("events");
        assert_eq!(
            e.file.as_deref(),
            Some(Path::new("/etc/gw/log/events.json"))
        );
        assert_eq!(
            e.syslog.and_then(|s| s.ca),
            Some(Path::new("/etc/gw/ca.pem").to_owned())
        );
        let d = c.defense.expect("defense");
        assert_eq!(d.feeds[0].format, FeedFormat::SpamhausDrop);
        assert_eq!(d.feeds[0].refresh.as_secs(), 12 * 3600);
        assert_eq!(d.feeds[1].format, FeedFormat::Plain);
        assert_eq!(
            d.feeds[1].file.as_deref(),
            Some(Path::new("/etc/gw/lists/bad.txt"))
        );
        assert_eq!(d.geo.expect("geo").file, Path::new("/etc/gw/geo.csv"));
    }

    #[test]
    fn bad_sections_are_reported_on_their_line() {
        let cases = [
            ("telemetry:\n  events:\n    rate: 10\n", 2, "needs a `file`"),
            (
                "defense:\n  feeds:\n    - { name: a, url: \"ftp://x/y\" }\n",
                3,
                "not an http(s) URL",
            ),
            (
                "defense:\n  feeds:\n    - { name: a, file: x, url: \"http://x/y\" }\n",
                2,
                "exactly one of",
            ),
            (
                "defense:\n  feeds:\n    - { name: \"a/b\", file: x }\n",
                3,
                "feed name",
            ),
            (
                "defense:\n  geo: { file: g.csv, block: [CHN] }\n",
                2,
                "two-letter",
            ),
            ("defense:\n  aggregate: { v4_prefix: 32 }\n", 2, "v4_prefix"),
        ];
        for (text, line, reason) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.reason.contains(reason), "{text}: {e}");
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }
}
