//! The L7 sections: listeners, HTTP limits, routes, access log. Upstream pools and TLS settings
//! are defined next to the code that uses them (`proxy::upstream`, `tls`).

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::de_duration;
use crate::tls::TlsSettings;

/// A socket the proxy accepts connections on.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Names the listener in logs and metrics.
    pub name: String,
    /// `ip:port`; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// Expect a PROXY protocol v1/v2 header first; only accepted from `trusted_proxies`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Terminate TLS here; absent means plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Plain listeners only: answer every request with a redirect to HTTPS on this port.
    #[serde(default)]
    pub redirect_https_port: Option<u16>,
}

/// Limits that protect workers from oversized or slow clients.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// More request headers than this: 431.
    pub max_headers: usize,
    /// Total bytes of request header names and values: above, 431.
    #[serde(deserialize_with = "de_size")]
    #[schemars(with = "String")]
    pub max_header_bytes: usize,
    /// Longer request targets (path + query): 414.
    #[serde(deserialize_with = "de_size")]
    #[schemars(with = "String")]
    pub max_uri_bytes: usize,
    /// Larger request bodies: 413, detected while streaming, never buffered.
    #[serde(deserialize_with = "de_size")]
    #[schemars(with = "String")]
    pub max_body_bytes: u64,
    /// Time a client gets to send a request's headers (slowloris): then the connection closes.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body (a client that trickles or stalls its
    /// body, slowloris on the body): 408 and the connection closes. nginx's `client_body_timeout`.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub body_timeout: Duration,
    /// Time a TLS handshake may take.
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub handshake_timeout: Duration,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_streams: u32,
    /// HTTP/2: streams reset by the client before completing, per connection, before it is
    /// closed (CVE-2023-44487 rapid reset).
    pub h2_max_pending_resets: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            h2_max_streams: 200,
            h2_max_pending_resets: 20,
        }
    }
}

/// A route: which requests go where, and what happens on the way.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in logs; defaults to its position.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Upstream pool name (a key of `upstreams`).
    pub upstream: String,
    /// Removed from the front of the path before forwarding (segment-wise).
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Put in front of the (stripped) path before forwarding.
    #[serde(default)]
    pub add_prefix: Option<String>,
    /// Response headers set on every response of this route.
    #[serde(default)]
    pub security_headers: SecurityHeaders,
    /// Remove `Server` and `X-Powered-By` from upstream responses.
    #[serde(default = "yes")]
    pub hide_upstream_identity: bool,
    /// L7 rate limits and quotas (GCRA; see docs/rate-limits.md), e.g.
    /// `[{ key: client_ip, rate: 10/s, burst: 20 }, { key: [principal, route], rate: 1000/h }]`.
    #[serde(default)]
    pub rate_limits: Vec<crate::ratelimit::LimitConfig>,
    /// Bot signals (with a top-level `bot` section); `false` skips them on this route.
    #[serde(default = "yes")]
    pub bot_signals: bool,
    /// Masking and a size cap on response bodies.
    #[serde(default)]
    pub response_filter: Option<crate::filter::ResponseFilterConfig>,
    /// Request validation: content types, body size, JSON limits, JSON Schemas of body and
    /// parameters.
    #[serde(default)]
    pub validate: Option<crate::validate::ValidateConfig>,
    /// CORS: allowed origins; preflights are answered by the gateway.
    #[serde(default)]
    pub cors: Option<crate::validate::CorsConfig>,
    /// CSRF check for cookie-authenticated routes (Origin/Referer or double-submit token).
    #[serde(default)]
    pub csrf: Option<crate::validate::CsrfConfig>,
    /// OpenAPI security requirements (alternatives; each maps scheme names to what they need),
    /// written by `gateway openapi import`: data for the authentication stage.
    #[serde(default)]
    pub security: crate::validate::openapi::Security,
    /// Who may call: credential sources of the `auth:` section (`any_of: [jwt.idp,
    /// api_key.main]` or `all_of`). Absent: no authentication.
    #[serde(default)]
    pub auth: Option<crate::auth::RouteAuthConfig>,
    /// What the caller needs: `roles` (any one), `scopes` (all), a `policy`, per-method extras.
    /// Needs `auth`.
    #[serde(default)]
    pub require: Option<crate::authz::RequireConfig>,
    /// The WAF on this route: `on`, `off` (default), or `{ exclusions: [...] }`.
    #[serde(default)]
    pub waf: Option<crate::waf::RouteWaf>,
}

fn yes() -> bool {
    true
}

/// What a route matches. Paths are compared after the one normalisation every stage uses.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// `api.example.com` or `*.example.com` (one label); absent matches any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Exact path or template: `/orders/{id}`, `/files/{*rest}` (catch-all, last segment only).
    #[serde(default)]
    pub path: Option<String>,
    /// Segment-wise prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Allowed methods; absent allows all. Others get 405 with `Allow`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Compare paths case-insensitively (for upstreams that do, e.g. on Windows), so `/Admin`
    /// cannot slip past a rule written for `/admin`.
    #[serde(default)]
    pub case_insensitive: bool,
}

/// Security response headers. `hsts` is only sent on TLS listeners.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security` value; empty disables.
    pub hsts: String,
    /// `X-Content-Type-Options`.
    pub content_type_options: String,
    /// `Referrer-Policy`.
    pub referrer_policy: String,
    /// `X-Frame-Options`.
    pub frame_options: String,
    /// Extra headers, set as given.
    pub extra: std::collections::BTreeMap<String, String>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            hsts: "max-age=31536000; includeSubDomains".into(),
            content_type_options: "nosniff".into(),
            referrer_policy: "no-referrer".into(),
            frame_options: "DENY".into(),
            extra: Default::default(),
        }
    }
}

/// Where access log lines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    #[default]
    Stdout,
    Off,
}

/// `1MiB`, `512KiB`, `64KB`, `1024`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 1MiB, 64KiB or 1024"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

pub(crate) fn de_size<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(
    d: D,
) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    let n = match Raw::deserialize(d)? {
        Raw::N(n) => n,
        Raw::S(s) => parse_size(&s).map_err(serde::de::Error::custom)?,
    };
    T::try_from(n).map_err(|_| serde::de::Error::custom("size out of range"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
