//! What `upstreams.<name>` in the YAML file says: endpoints, balancing, health checks, outlier
//! ejection, timeouts, retries, circuit breaker and TLS. Pure data plus [`UpstreamConfig::validate`];
//! nothing here touches the network or the file system.

use std::{fmt, path::PathBuf, time::Duration};

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use serde::Deserialize;

use crate::config::de_duration;

/// Endpoints are tracked in a 64-bit "already tried" mask during retries; an upstream with more
/// endpoints than this is better split or fronted by a load balancer of its own.
pub(super) const MAX_ENDPOINTS: usize = 64;

/// Each retry multiplies the load a failing upstream sees; more than this is never useful.
const MAX_RETRY_ATTEMPTS: u32 = 10;

/// One upstream (a named pool of equivalent endpoints).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Where requests go: `http://host:port`, `https://host:port` (TLS; ALPN offers h2, then
    /// http/1.1) or `h2c://host:port` (cleartext HTTP/2 with prior knowledge). At least one; no
    /// path, query or user info.
    pub endpoints: Vec<String>,
    /// How an endpoint is chosen for each request.
    #[serde(default)]
    pub balance: Balance,
    /// Active health checks; absent means endpoints are only judged by live traffic.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// Passive ejection of endpoints that fail live traffic.
    #[serde(default)]
    pub outlier: Outlier,
    /// Limit on establishing the TCP connection to an endpoint.
    #[serde(default = "two_seconds", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// Limit per attempt from sending the request to receiving the response headers (connection
    /// set-up and TLS included). The response body is not limited here.
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub response_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    #[serde(default = "ninety_seconds", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub idle_pool_timeout: Duration,
    /// Idle keep-alive connections kept per endpoint (0 disables connection reuse).
    #[serde(default = "default_max_idle")]
    pub max_idle_per_endpoint: usize,
    /// Retries of idempotent requests on another endpoint.
    #[serde(default)]
    pub retries: Retries,
    /// Fails requests fast while the whole upstream is failing.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// TLS settings for `https://` endpoints.
    #[serde(default)]
    pub tls: UpstreamTls,
}

/// Load-balancing policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each available endpoint in turn.
    #[default]
    RoundRobin,
    /// The available endpoint with the fewest requests waiting for response headers (ties go
    /// round robin).
    LeastRequests,
}

/// Active health checks: `GET <path>` on every endpoint, every `interval`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path (and optional query) requested, e.g. `/healthz`.
    pub path: String,
    /// Time between two checks of one endpoint.
    #[serde(default = "five_seconds", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// A check not answered (headers and body) within this counts as failed.
    #[serde(default = "one_second", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Consecutive passed checks that bring an unhealthy endpoint back.
    #[serde(default = "two")]
    pub healthy_threshold: u32,
    /// Consecutive failed checks that take a healthy endpoint out of rotation.
    #[serde(default = "three")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass: a code (`204`) or an inclusive range (`"200-399"`).
    #[serde(default)]
    pub expected_status: StatusRange,
}

/// An inclusive range of HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest accepted code.
    pub from: u16,
    /// Highest accepted code.
    pub to: u16,
}

/// Passive outlier detection: an endpoint whose live requests fail (connect error, timeout,
/// protocol error or a 5xx status) `consecutive_failures` times in a row is taken out of
/// rotation for `eject_for`. The last available endpoint is never ejected: a whole upstream
/// being down is the circuit breaker's business, which probes it back sooner.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint gets no traffic.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub eject_for: Duration,
}

/// Retries. Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) whose request body
/// is known to be empty are retried, and only after a connect failure, a timeout before the
/// response headers, or a 502/503/504 from the endpoint. Requests with a body are never
/// retried: the body is streamed, not buffered, so it cannot be sent twice.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Extra attempts after the first one (0 disables retries).
    pub attempts: u32,
    /// Retries may add at most this fraction to the request rate (over a rolling 10 s window).
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the ratio says, so that low traffic can still retry.
    pub min_per_second: u32,
}

/// The circuit breaker (per upstream). It opens after `consecutive_failures` failed attempts in
/// a row (connect error, timeout, protocol error, or 502/503/504), rejects every request with
/// 503 for `open_for` without touching the network, then lets `half_open_probes` requests
/// through: if they all succeed it closes, if one fails it opens again.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Failed attempts in a row (across all endpoints) that open the breaker.
    pub consecutive_failures: u32,
    /// How long an open breaker rejects requests before probing.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub open_for: Duration,
    /// Probe requests let through at once while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

/// TLS to `https://` endpoints.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// Verify the endpoint's certificate chain and name. Turning this off is for test rigs only.
    pub verify: bool,
    /// PEM file of CA certificates to trust; absent means the operating system's roots.
    pub ca: Option<PathBuf>,
    /// Name sent as SNI and checked against the certificate; absent means the endpoint's host.
    pub server_name: Option<String>,
    /// PEM certificate chain the gateway presents to endpoints that require client
    /// certificates (mTLS to upstreams); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// What an endpoint string says, checked once at validation and used to build the pool.
#[derive(Clone, Debug)]
pub(super) struct EndpointAddr {
    /// `http` or `https` (an `h2c://` endpoint connects as `http`).
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
    /// HTTP/2 with prior knowledge over cleartext.
    pub(super) h2c: bool,
}

fn two_seconds() -> Duration {
    Duration::from_secs(2)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn ninety_seconds() -> Duration {
    Duration::from_secs(90)
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn default_max_idle() -> usize {
    32
}

fn two() -> u32 {
    2
}

fn three() -> u32 {
    3
}

impl Default for StatusRange {
    fn default() -> Self {
        Self { from: 200, to: 399 }
    }
}

impl StatusRange {
    /// Whether `status` is in the range.
    pub fn contains(&self, status: http::StatusCode) -> bool {
        (self.from..=self.to).contains(&status.as_u16())
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StatusRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code like 204 or an inclusive range like \"200-399\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StatusRange, E> {
                let code =
                    u16::try_from(v).map_err(|_| E::custom(format!("{v} is not a status")))?;
                Ok(StatusRange {
                    from: code,
                    to: code,
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StatusRange, E> {
                let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is not a status")))?;
                self.visit_u64(v)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StatusRange, E> {
                let parse = |p: &str| p.trim().parse::<u16>().ok();
                let range = match s.split_once('-') {
                    Some((a, b)) => parse(a).zip(parse(b)),
                    None => parse(s).map(|c| (c, c)),
                };
                range
                    .map(|(from, to)| StatusRange { from, to })
                    .ok_or_else(|| E::custom(format!("`{s}` is not a status range like 200-399")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            eject_for: Duration::from_secs(30),
        }
    }
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 2,
            budget_ratio: 0.2,
            min_per_second: 10,
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            consecutive_failures: 10,
            open_for: Duration::from_secs(10),
            half_open_probes: 1,
        }
    }
}

impl Default for UpstreamTls {
    fn default() -> Self {
        Self {
            verify: true,
            ca: None,
            server_name: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl UpstreamConfig {
    /// Checks what the types cannot. The error starts with the offending key (relative to this
    /// upstream), e.g. `endpoints[1]: ...`.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("endpoints: at least one endpoint is needed".into());
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(format!(
                "endpoints: at most {MAX_ENDPOINTS} endpoints per upstream ({} given)",
                self.endpoints.len()
            ));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            EndpointAddr::parse(endpoint).map_err(|e| format!("endpoints[{i}]: {e}"))?;
        }
        if let Some(health) = &self.health {
            health.validate()?;
        }
        positive(
            "outlier.consecutive_failures",
            self.outlier.consecutive_failures,
        )?;
        nonzero("outlier.eject_for", self.outlier.eject_for)?;
        nonzero("connect_timeout", self.connect_timeout)?;
        nonzero("response_timeout", self.response_timeout)?;
        nonzero("idle_pool_timeout", self.idle_pool_timeout)?;
        if self.retries.attempts > MAX_RETRY_ATTEMPTS {
            return Err(format!(
                "retries.attempts: at most {MAX_RETRY_ATTEMPTS} ({} given)",
                self.retries.attempts
            ));
        }
        let ratio = self.retries.budget_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "retries.budget_ratio: {ratio} is not between 0 and 1"
            ));
        }
        positive(
            "circuit_breaker.consecutive_failures",
            self.circuit_breaker.consecutive_failures,
        )?;
        nonzero("circuit_breaker.open_for", self.circuit_breaker.open_for)?;
        positive(
            "circuit_breaker.half_open_probes",
            self.circuit_breaker.half_open_probes,
        )?;
        if let Some(name) = &self.tls.server_name {
            rustls_pki_types::ServerName::try_from(name.as_str())
                .map_err(|e| format!("tls.server_name: `{name}`: {e}"))?;
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return Err(
                "tls.client_cert: a client certificate needs its key (tls.client_key), \
                        and a key its certificate"
                    .into(),
            );
        }
        Ok(())
    }
}

impl HealthCheck {
    fn validate(&self) -> Result<(), String> {
        let path_ok = self.path.starts_with('/') && self.path.parse::<PathAndQuery>().is_ok();
        if !path_ok {
            return Err(format!(
                "health.path: `{}` is not a path like /healthz",
                self.path
            ));
        }
        nonzero("health.interval", self.interval)?;
        nonzero("health.timeout", self.timeout)?;
        positive("health.healthy_threshold", self.healthy_threshold)?;
        positive("health.unhealthy_threshold", self.unhealthy_threshold)?;
        let StatusRange { from, to } = self.expected_status;
        if !(100..=599).contains(&from) || !(100..=599).contains(&to) || from > to {
            return Err(format!(
                "health.expected_status: {from}-{to} is not a range of statuses within 100-599"
            ));
        }
        Ok(())
    }
}

impl EndpointAddr {
    /// Reads `http://host:port`, `https://host:port` or `h2c://host:port` (the port defaults to
    /// 80, 443 and 80).
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        let shape =
            "is not an endpoint like http://host:port, https://host:port or h2c://host:port";
        let uri: Uri = s.parse().map_err(|_| format!("`{s}` {shape}"))?;
        let (scheme, h2c) = match uri.scheme_str() {
            Some("http") => (Scheme::HTTP, false),
            Some("https") => (Scheme::HTTPS, false),
            Some("h2c") => (Scheme::HTTP, true),
            _ => return Err(format!("`{s}` {shape}")),
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!("`{s}` {shape}"));
        };
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(format!(
                "`{s}` {shape} (a host is needed, user info is not allowed)"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{s}` {shape} (no path or query: routes say what is forwarded)"
            ));
        }
        Ok(Self {
            scheme,
            authority,
            h2c,
        })
    }
}

fn positive(key: &str, value: u32) -> Result<(), String> {
    if value == 0 {
        return Err(format!("{key}: must be at least 1"));
    }
    Ok(())
}

fn nonzero(key: &str, value: Duration) -> Result<(), String> {
    if value.is_zero() {
        return Err(format!("{key}: must be longer than 0s"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(yaml: &str) -> Result<UpstreamConfig, String> {
        let config: UpstreamConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn minimal_upstream_takes_defaults() {
        let c = parse("endpoints: [\"http://10.0.1.5:8080\"]").expect("valid");
        assert_eq!(c.balance, Balance::RoundRobin);
        assert!(c.health.is_none());
        assert_eq!(c.outlier.consecutive_failures, 5);
        assert_eq!(c.outlier.eject_for, Duration::from_secs(30));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.response_timeout, Duration::from_secs(30));
        assert_eq!(c.idle_pool_timeout, Duration::from_secs(90));
        assert_eq!(c.max_idle_per_endpoint, 32);
        assert_eq!(c.retries.attempts, 2);
        assert!((c.retries.budget_ratio - 0.2).abs() < f64::EPSILON);
        assert_eq!(c.retries.min_per_second, 10);
        assert_eq!(c.circuit_breaker.consecutive_failures, 10);
        assert_eq!(c.circuit_breaker.open_for, Duration::from_secs(10));
        assert_eq!(c.circuit_breaker.half_open_probes, 1);
        assert!(c.tls.verify);
    }

    #[test]
    fn design_sketch_parses() {
        let yaml = r#"
orders: { endpoints: ["http://10.0.1.5:8080"], balance: round_robin, health: { path: /healthz, interval: 5s } }
users:
  endpoints: ["https://users.internal", "h2c://10.0.2.1:9000"]
  balance: least_requests
  health: { path: /ready, expected_status: 204, healthy_threshold: 1 }
  outlier: { eject_for: 10s }
  retries: { attempts: 1, budget_ratio: 0.1 }
  circuit_breaker: { consecutive_failures: 3, open_for: 500ms }
  tls: { ca: /etc/gateway/ca.pem, server_name: users.internal }
"#;
        let all: BTreeMap<String, UpstreamConfig> = serde_yaml::from_str(yaml).expect("valid");
        for c in all.values() {
            c.validate().expect("valid");
        }
        let users = &all["users"];
        let health = users.health.as_ref().expect("valid");
        assert_eq!(health.expected_status, StatusRange { from: 204, to: 204 });
        assert_eq!(health.interval, Duration::from_secs(5));
        assert_eq!(users.outlier.consecutive_failures, 5);
        assert_eq!(users.outlier.eject_for, Duration::from_secs(10));
        assert_eq!(users.circuit_breaker.open_for, Duration::from_millis(500));
        assert_eq!(
            all["orders"]
                .health
                .as_ref()
                .expect("valid")
                .expected_status,
            StatusRange::default()
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err =
            parse("endpoints: [\"http://a:1\"]\nretry: { attempts: 1 }").expect_err("invalid");
        assert!(err.contains("unknown field `retry`"), "{err}");
        let err =
            parse("endpoints: [\"http://a:1\"]\noutlier: { failures: 1 }").expect_err("invalid");
        assert!(err.contains("unknown field `failures`"), "{err}");
    }

    #[test]
    fn endpoint_shapes() {
        for good in [
            "http://a:1",
            "https://a",
            "h2c://[::1]:9000",
            "http://10.0.0.1:80/",
        ] {
            EndpointAddr::parse(good).expect("valid");
        }
        let h2c = EndpointAddr::parse("h2c://b:2").expect("valid");
        assert!(h2c.h2c && h2c.scheme == Scheme::HTTP);
        for bad in [
            "a:1",
            "ftp://a:1",
            "http://a:1/api",
            "http://a:1?x=1",
            "http://u@a:1",
            "/x",
        ] {
            assert!(EndpointAddr::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn semantic_errors_name_their_key() {
        let cases = [
            ("endpoints: []", "endpoints:"),
            (
                "endpoints: [\"http://a:1\", \"gopher://b\"]",
                "endpoints[1]:",
            ),
            (
                "endpoints: [\"http://a:1\"]\nhealth: { path: healthz }",
                "health.path:",
            ),
            (
                "endpoints: [\"http://a:1\"]\nhealth: { path: /h, interval: 0s }",
                "health.interval:",
            ),
            (
                "endpoints: [\"http://a:1\"]\nhealth: { path: /h, expected_status: \"400-200\" }",
                "health.expected_status:",
            ),
            (
                "endpoints: [\"http://a:1\"]\noutlier: { consecutive_failures: 0 }",
                "outlier.",
            ),
            (
                "endpoints: [\"http://a:1\"]\nretries: { budget_ratio: 1.5 }",
                "retries.budget_ratio:",
            ),
            (
                "endpoints: [\"http://a:1\"]\nretries: { attempts: 50 }",
                "retries.attempts:",
            ),
            (
                "endpoints: [\"http://a:1\"]\nresponse_timeout: 0s",
                "response_timeout:",
            ),
            (
                "endpoints: [\"http://a:1\"]\ncircuit_breaker: { half_open_probes: 0 }",
                "circuit_breaker.half_open_probes:",
            ),
            (
                "endpoints: [\"https://a:1\"]\ntls: { server_name: \"bad name!\" }",
                "tls.server_name:",
            ),
            (
                "endpoints: [\"https://a:1\"]\ntls: { client_cert: /etc/c.pem }",
                "tls.client_cert:",
            ),
        ];
        for (yaml, key) in cases {
            let err = parse(yaml).expect_err("invalid");
            assert!(err.starts_with(key), "{yaml}: {err}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("\"http://h{i}:80\"")).collect();
        let err = parse(&format!("endpoints: [{}]", many.join(","))).expect_err("invalid");
        assert!(err.starts_with("endpoints:"), "{err}");
    }

    #[test]
    fn status_range_forms() {
        let r: StatusRange = serde_yaml::from_str("\"200-299\"").expect("valid");
        assert_eq!(r, StatusRange { from: 200, to: 299 });
        assert!(r.contains(http::StatusCode::NO_CONTENT));
        assert!(!r.contains(http::StatusCode::FOUND));
        let r: StatusRange = serde_yaml::from_str("204").expect("valid");
        assert_eq!(r, StatusRange { from: 204, to: 204 });
        assert!(serde_yaml::from_str::<StatusRange>("\"2xx\"").is_err());
    }
}

crate::config::string_schema!(
    StatusRange,
    "StatusRange",
    "A status (204) or an inclusive range (\"200-399\")"
);
