//! The `waf:` section and a route's `waf:` switch.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

/// The WAF: which rules, how strict, and whether a match blocks.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WafSection {
    /// Rule files, directories (their `*.conf`, sorted) or globs, loaded in this order: a CRS
    /// `rules/` directory (Debian: `/usr/share/modsecurity-crs/rules`), then your own files.
    /// The CRS setup (`crs-setup.conf`) is generated from the fields below; do not list it.
    pub rules: Vec<PathBuf>,
    /// CRS paranoia level 1-4 (blocking and detection).
    #[serde(default = "one")]
    pub paranoia: u8,
    /// Detect at a higher paranoia level than blocks (scores of the extra rules are logged).
    #[serde(default)]
    pub detection_paranoia: Option<u8>,
    /// `block`: a request over the anomaly threshold gets 403; `detect`: it is only reported.
    #[serde(default)]
    pub mode: WafMode,
    /// CRS inbound anomaly score threshold (CRS default 5: one critical match).
    #[serde(default = "five")]
    pub inbound_threshold: u32,
    /// CRS outbound anomaly score threshold (kept for CRS; response phases are not run).
    #[serde(default = "four")]
    pub outbound_threshold: u32,
    /// HTTP methods CRS allows (rule 911100). An API gateway's default includes PUT, PATCH
    /// and DELETE.
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    /// Request content types CRS allows (rule 920420). The default is CRS's list (forms,
    /// multipart, XML, JSON) and the JSON media types APIs exchange (`merge-patch+json`,
    /// `json-patch+json`, JSON:API's `vnd.api+json`, ...): every `+json` body is parsed as JSON,
    /// so its values are inspected as arguments like a plain JSON body's. Bodies no processor
    /// parses (`text/plain`, `text/csv`, NDJSON, raw GraphQL) stay refused unless listed here.
    #[serde(default = "default_content_types")]
    pub allowed_content_types: Vec<String>,
    /// Any other CRS setting, as `crs-setup.conf` would set it (`tx.NAME` without `tx.`):
    /// `max_num_args: "255"`, `crs_validate_utf8_encoding: "1"`. Applied last.
    #[serde(default)]
    pub setup: BTreeMap<String, String>,
    /// Rule exclusions for every route.
    #[serde(default)]
    pub exclusions: Vec<WafExclusion>,
    /// One JSON line per request that matched a rule: request id, rule ids, messages, matched
    /// variables. For tuning and conformance runs.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Most request body bytes the WAF inspects (ModSecurity's `SecRequestBodyNoFilesLimit`,
    /// same default, 128KiB). Every byte costs rule evaluations: this bounds the CPU one request
    /// can take.
    #[serde(
        default = "default_body_limit",
        deserialize_with = "crate::config::de_size"
    )]
    #[schemars(with = "String")]
    pub body_limit: usize,
    /// A body over `body_limit`: `reject` (413 `waf_body_too_large`; ModSecurity's default) or
    /// `partial` (only the first `body_limit` bytes are inspected, ModSecurity's
    /// `ProcessPartial`; a JSON or XML body cut there no longer parses, which CRS rule 200002
    /// flags). In detect mode nothing is refused: the body is inspected partially and a
    /// `waf_body_truncated` finding reports it.
    #[serde(default)]
    pub body_limit_action: BodyLimitAction,
    /// Most arguments a body yields to the rules (ModSecurity's `SecArgumentsLimit`, the
    /// default of its recommended configuration and Coraza's): URL-encoded and JSON arguments,
    /// multipart parts (and part header lines), XML attribute values. Every argument costs rule
    /// evaluations and memory: a 128 KiB JSON array of zeros is 65,535 arguments. Past the limit `body_limit_action` decides: `reject` answers 413
    /// `waf_too_many_arguments`, `partial` (and detect mode) inspects the first ones and
    /// reports a `waf_arguments_truncated` finding.
    #[serde(default = "default_max_args")]
    pub max_args: usize,
}

fn default_max_args() -> usize {
    super::engine::DEFAULT_MAX_ARGS
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyLimitAction {
    #[default]
    Reject,
    Partial,
}

fn default_body_limit() -> usize {
    128 * 1024
}

fn one() -> u8 {
    1
}
fn five() -> u32 {
    5
}
fn four() -> u32 {
    4
}
fn default_content_types() -> Vec<String> {
    [
        // CRS 4's own default (rule 901162).
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/xml",
        "application/xml",
        "application/soap+xml",
        "application/json",
        // JSON media types of API standards, parsed by the JSON body processor.
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/vnd.api+json",
        "application/problem+json",
        "application/ld+json",
        "application/hal+json",
        // Not CloudEvents: CRS keeps them out by default on purpose (its tests 920420-19/20).
    ]
    .map(String::from)
    .to_vec()
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WafMode {
    #[default]
    Block,
    Detect,
}

/// Removes rules (by id or tag), or only some of their targets.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WafExclusion {
    /// Rule ids or ranges: `942100`, `942100-942199`.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Rule tags: `attack-sqli`, `paranoia-level/2`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Targets the rules above (all rules when none are named) no longer inspect:
    /// `ARGS:password`, `REQUEST_COOKIES:/^session/`, `REQUEST_HEADERS:User-Agent`. Without
    /// targets the rules are removed entirely.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// A route's WAF: `on`, `off`, or `{ exclusions: [...] }` (on, with exclusions).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RouteWaf {
    Switch(OnOff),
    Detailed(RouteWafDetail),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteWafDetail {
    /// Defaults to on.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Exclusions for this route only, on top of `waf.exclusions`.
    #[serde(default)]
    pub exclusions: Vec<WafExclusion>,
    /// The route serves GraphQL over HTTP: a `query` argument (query string) or `query` member
    /// (JSON body, batches too) that parses as a GraphQL document is judged by its literal values
    /// (strings, numbers) and its comments, not by its syntax, which CRS misreads as injection.
    /// One that does not parse is judged as it is.
    #[serde(default)]
    pub graphql: bool,
}

fn yes() -> bool {
    true
}

impl RouteWaf {
    pub fn enabled(&self) -> bool {
        match self {
            RouteWaf::Switch(s) => *s == OnOff::On,
            RouteWaf::Detailed(d) => d.enabled,
        }
    }

    pub fn graphql(&self) -> bool {
        matches!(self, RouteWaf::Detailed(d) if d.graphql)
    }

    pub fn exclusions(&self) -> &[WafExclusion] {
        match self {
            RouteWaf::Switch(_) => &[],
            RouteWaf::Detailed(d) => &d.exclusions,
        }
    }
}

impl WafSection {
    /// The TX settings every transaction starts with: the crs-setup.conf equivalent.
    pub fn setup_vars(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![
            ("crs_setup_version".into(), "4290".into()),
            ("blocking_paranoia_level".into(), self.paranoia.to_string()),
            (
                "detection_paranoia_level".into(),
                self.detection_paranoia
                    .unwrap_or(self.paranoia)
                    .max(self.paranoia)
                    .to_string(),
            ),
            (
                "inbound_anomaly_score_threshold".into(),
                self.inbound_threshold.to_string(),
            ),
            (
                "outbound_anomaly_score_threshold".into(),
                self.outbound_threshold.to_string(),
            ),
            ("allowed_methods".into(), self.allowed_methods.join(" ")),
        ];
        let content_types = self
            .allowed_content_types
            .iter()
            .map(|c| format!("|{}|", c.to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join(" ");
        v.push(("allowed_request_content_type".into(), content_types));
        for (k, val) in &self.setup {
            v.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
            v.push((k.to_ascii_lowercase(), val.clone()));
        }
        v
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=4).contains(&self.paranoia) {
            return Err(("paranoia", "waf.paranoia must be 1 to 4".into()));
        }
        if self
            .detection_paranoia
            .is_some_and(|p| !(1..=4).contains(&p))
        {
            return Err((
                "detection_paranoia",
                "waf.detection_paranoia must be 1 to 4".into(),
            ));
        }
        if self.body_limit == 0 {
            return Err(("body_limit", "waf.body_limit must be above 0".into()));
        }
        if self.max_args == 0 {
            return Err(("max_args", "waf.max_args must be above 0".into()));
        }
        if self.rules.is_empty() {
            return Err((
                "rules",
                "waf.rules needs at least one file or directory".into(),
            ));
        }
        Ok(())
    }
}
