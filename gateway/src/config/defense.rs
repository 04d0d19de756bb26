//! The `defense:` section: how evidence turns into timed blocks.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use super::de_duration;
use crate::defense::Policy;

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DefenseSection {
    /// Score at which a source is blocked.
    pub threshold: f64,
    /// A source's score halves after this long without new evidence.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub half_life: Duration,
    /// Block lengths for the 1st, 2nd, ... escalation of a source within `repeat_window`.
    #[serde(deserialize_with = "de_durations")]
    #[schemars(with = "Vec<String>")]
    pub ttl: Vec<Duration>,
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub repeat_window: Duration,
    /// Log what would be blocked, block nothing.
    pub dry_run: bool,
    /// Weight per reason code, overriding the defaults (0 ignores a reason).
    pub weights: BTreeMap<String, f64>,
    /// Sources scored at once (memory bound).
    pub max_tracked: usize,
    /// Reputation feeds whose entries go into the kernel denylist (origin `feed`, tagged
    /// `feed:<name>`), refreshed on a schedule; entries that leave a feed are removed.
    pub feeds: Vec<FeedConfig>,
    /// Blocking by country from a `CIDR,CC` file the operator provides.
    pub geo: Option<GeoConfig>,
    /// Blocking a whole prefix once enough sources inside it were blocked by the loop.
    pub aggregate: Option<AggregateConfig>,
}

/// A reputation feed: a file or an http(s) URL.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Letters, digits, `-`, `_`, `.`; entries are tagged `feed:<name>`.
    pub name: String,
    /// `http://` or `https://` URL (system roots).
    #[serde(default)]
    pub url: Option<String>,
    /// A local file (relative to the config file); re-read when it changes.
    #[serde(default)]
    pub file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub format: FeedFormat,
    /// How often the feed is fetched again.
    #[serde(default = "default_refresh", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub refresh: Duration,
}

/// How a feed is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedFormat {
    /// One address or CIDR per line, `#` comments.
    #[default]
    Plain,
    /// Spamhaus DROP/EDROP: `CIDR ; SBLnnn`, `;` comments.
    SpamhausDrop,
    /// FireHOL `.netset`/`.ipset`: `#` comments, one address or CIDR per line.
    Firehol,
}

/// Geo blocking: `file` holds `CIDR,CC` lines (see docs/geo-blocking.md).
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    pub file: std::path::PathBuf,
    /// ISO 3166-1 alpha-2 country codes whose networks are denied (entries tagged `geo:<CC>`).
    pub block: Vec<String>,
    /// How often the file is checked for changes.
    #[serde(default = "default_refresh", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub refresh: Duration,
}

/// When `min_sources` sources inside one prefix are blocked by the defense loop, the prefix is
/// blocked (same TTL ladder), unless it covers an allowlisted or management address.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateConfig {
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub min_sources: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            v4_prefix: 24,
            v6_prefix: 64,
            min_sources: 5,
        }
    }
}

fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}

impl Default for DefenseSection {
    fn default() -> Self {
        Self {
            threshold: 20.0,
            half_life: Duration::from_secs(60),
            ttl: [60, 600, 3600, 86_400].map(Duration::from_secs).to_vec(),
            repeat_window: Duration::from_secs(86_400),
            dry_run: false,
            weights: BTreeMap::new(),
            max_tracked: 100_000,
            feeds: Vec::new(),
            geo: None,
            aggregate: None,
        }
    }
}

/// Built-in weights: requests crafted to slip past normalisation weigh most; what a confused
/// client also does (404, 405) weighs little; the kernel's rate-cap reports weigh a whole
/// threshold by default (see [`DefenseSection::weight`]).
const DEFAULT_WEIGHTS: &[(&str, f64)] = &[
    ("path_encoded_slash", 10.0),
    ("path_backslash", 10.0),
    ("path_nul", 10.0),
    ("path_parameters", 5.0),
    ("path_bad_percent_encoding", 5.0),
    ("path_not_absolute", 5.0),
    ("headers_too_large", 2.0),
    ("uri_too_long", 2.0),
    ("body_too_large", 1.0),
    // A stalled body holds a connection and a buffer: what slow-body attacks do.
    ("body_timeout", 1.0),
    ("waf_body_too_large", 1.0),
    ("waf_too_many_arguments", 1.0),
    ("method_not_allowed", 1.0),
    ("route_not_found", 1.0),
    // Validation: what a buggy client also sends weighs little; shapes only crafted requests
    // have (nesting bombs, probing paths the spec never declared, forged cross-site posts) more.
    ("validation_failed", 1.0),
    ("content_type_unsupported", 1.0),
    ("json_malformed", 1.0),
    ("json_too_large", 1.0),
    ("json_too_deep", 5.0),
    ("openapi_undeclared", 2.0),
    ("csrf_failed", 3.0),
    // A browser on another site asking is not an attack by the client's own doing.
    ("cors_origin_denied", 0.5),
    ("cors_preflight_denied", 0.5),
    // Each 429: a client that keeps hammering a limit escalates; one that backs off decays.
    ("rate_limited", 1.0),
    // Bot signals: a named scanner is near-certain; the rest also fit some real clients.
    ("bot_scanner_agent", 10.0),
    ("bot_missing_user_agent", 1.0),
    ("bot_abnormal_user_agent", 1.0),
    ("bot_request_shape", 0.5),
    ("bot_burst", 0.5),
    // The signal that blocked already carries its weight.
    ("bot_blocked", 0.0),
    // Authentication: guessing credentials (stuffing, forged tokens and signatures, replays)
    // counts; a missing or expired credential is what honest clients send too.
    ("auth_missing", 0.5),
    ("auth_expired", 0.5),
    ("auth_key_rate_limited", 0.5),
    ("auth_clock_skew", 1.0),
    ("auth_invalid_claims", 2.0),
    ("auth_token_too_large", 2.0),
    ("auth_malformed_signature", 2.0),
    ("auth_duplicate_credentials", 3.0),
    ("auth_invalid_token", 3.0),
    ("auth_invalid_key", 3.0),
    ("auth_invalid_signature", 4.0),
    ("auth_replay", 5.0),
    // Authorisation: a valid caller asking for more than it may.
    ("authz_denied", 2.0),
    // A WAF verdict carries the CRS anomaly score as its weight; these apply without one.
    ("waf_blocked", 10.0),
    ("waf_detected", 5.0),
];

impl DefenseSection {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.threshold.is_nan() || self.threshold <= 0.0 {
            return Err(("threshold", "defense.threshold must be above 0".into()));
        }
        if self.ttl.is_empty() || self.ttl.iter().any(Duration::is_zero) {
            return Err((
                "ttl",
                "defense.ttl needs at least one duration, none zero".into(),
            ));
        }
        if self.half_life.is_zero() || self.max_tracked == 0 {
            return Err((
                "half_life",
                "defense.half_life and max_tracked must be above 0".into(),
            ));
        }
        self.validate_sources()?;
        if let Some((k, w)) = self.weights.iter().find(|(_, w)| w.is_nan() || **w < 0.0) {
            return Err((
                "weights",
                format!("defense.weights.{k} must be 0 or more, got {w}"),
            ));
        }
        Ok(())
    }

    /// The weight of a reason code; rate-cap reports default to the threshold (one report
    /// escalates: the kernel already measured the flood).
    pub fn weight(&self, reason: &str) -> f64 {
        if let Some(w) = self.weights.get(reason) {
            return *w;
        }
        if reason == "pps-cap" || reason == "syn-cap" {
            return self.threshold;
        }
        DEFAULT_WEIGHTS
            .iter()
            .find(|(k, _)| *k == reason)
            .map_or(0.0, |(_, w)| *w)
    }

    pub fn policy(&self) -> Policy {
        Policy {
            threshold: self.threshold,
            half_life: self.half_life,
            ttls: self.ttl.clone(),
            repeat_window: self.repeat_window,
            max_tracked: self.max_tracked,
        }
    }
}

impl DefenseSection {
    fn validate_sources(&self) -> Result<(), (&'static str, String)> {
        let mut names = std::collections::HashSet::new();
        for f in &self.feeds {
            let valid = !f.name.is_empty()
                && f.name.len() <= 64
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err((
                    "name",
                    format!(
                        "feed name `{}` must be 1-64 letters, digits, `-`, `_` or `.`",
                        f.name
                    ),
                ));
            }
            if !names.insert(f.name.as_str()) {
                return Err(("name", format!("feed `{}` is defined twice", f.name)));
            }
            match (&f.url, &f.file) {
                (Some(u), None) if u.starts_with("http://") || u.starts_with("https://") => {}
                (Some(u), None) => {
                    return Err((
                        "url",
                        format!("feed `{}`: `{u}` is not an http(s) URL", f.name),
                    ));
                }
                (None, Some(_)) => {}
                _ => {
                    return Err((
                        "feeds",
                        format!("feed `{}` needs exactly one of `url` and `file`", f.name),
                    ));
                }
            }
            if f.refresh < Duration::from_secs(1) {
                return Err((
                    "refresh",
                    format!("feed `{}`: refresh must be 1s or more", f.name),
                ));
            }
        }
        if let Some(g) = &self.geo
            && let Some(cc) = g
                .block
                .iter()
                .find(|c| c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()))
        {
            return Err((
                "block",
                format!("geo.block: `{cc}` is not a two-letter country code"),
            ));
        }
        if let Some(a) = &self.aggregate
            && (!(8..=31).contains(&a.v4_prefix)
                || !(16..=127).contains(&a.v6_prefix)
                || a.min_sources < 2)
        {
            return Err((
                "aggregate",
                "defense.aggregate: v4_prefix 8..=31, v6_prefix 16..=127, min_sources 2 or more"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn de_durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| super::parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::DefenseSection;

    /// Guessing credentials adds up to a block quickly; what honest clients also send (no token
    /// yet, an expired one) takes many repeats.
    #[test]
    fn credential_guessing_outweighs_missing_credentials() {
        let d = DefenseSection::default();
        let stuffing = d.weight("auth_invalid_key");
        assert!(stuffing > 0.0);
        assert!(d.weight("auth_missing") < stuffing);
        assert!(d.weight("auth_expired") < stuffing);
        assert!(d.weight("auth_replay") >= d.weight("auth_invalid_signature"));
        assert!(
            (d.threshold / stuffing) <= 10.0,
            "ten guessed keys block a source"
        );
        assert_eq!(
            d.weight("auth_unavailable"),
            0.0,
            "an IdP outage is not the client's fault"
        );
    }
}
