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
    ("method_not_allowed", 1.0),
    ("route_not_found", 1.0),
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

fn de_durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| super::parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}
