//! CORS per route: the gateway answers preflights itself (the upstream never sees them, so an
//! upstream cannot loosen the policy) and decides the CORS headers of actual responses. An
//! origin that is not allowed gets no CORS headers at all; its preflight gets a 403 problem.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use serde::Deserialize;

use crate::proxy::{Body, problem::Problem, stage::Evidence};

/// `cors:` on a route.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: `https://app.example.com`, a pattern `https://*.example.com` (one or more
    /// labels), or `*` (any origin; not with `credentials`).
    pub origins: Vec<String>,
    /// Methods a cross-origin request may use.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Request headers a cross-origin request may send (beyond the CORS-safelisted ones).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers scripts may read (`Access-Control-Expose-Headers`).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and HTTP authentication (`Access-Control-Allow-Credentials: true`).
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers may cache a preflight answer (`Access-Control-Max-Age`).
    #[serde(
        default = "default_max_age",
        deserialize_with = "crate::config::de_duration"
    )]
    #[schemars(with = "String")]
    pub max_age: Duration,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

fn default_max_age() -> Duration {
    Duration::from_secs(600)
}

/// An origin rule.
#[derive(Clone, Debug)]
pub(crate) enum OriginRule {
    Any,
    Exact(String),
    /// `https://*.example.com` as scheme `https://` and suffix `.example.com`.
    Wildcard {
        scheme: String,
        suffix: String,
    },
}

impl OriginRule {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
        if s == "*" {
            return Ok(Self::Any);
        }
        let Some((scheme, host)) = s.split_once("://") else {
            return Err(format!("origin `{s}` must look like https://host[:port]"));
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("origin `{s}` must look like https://host[:port]"));
        }
        if let Some(rest) = host.strip_prefix("*.") {
            if rest.contains('*') || rest.is_empty() {
                return Err(format!("origin `{s}`: only a leading `*.` wildcard"));
            }
            return Ok(Self::Wildcard {
                scheme: format!("{scheme}://"),
                suffix: format!(".{rest}"),
            });
        }
        if host.contains('*') {
            return Err(format!("origin `{s}`: only a leading `*.` wildcard"));
        }
        Ok(Self::Exact(s))
    }

    pub(crate) fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(o) => o.eq_ignore_ascii_case(origin),
            Self::Wildcard { scheme, suffix } => {
                let origin = origin.to_ascii_lowercase();
                origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && host[..host.len() - suffix.len()]
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                })
            }
        }
    }
}

/// A route's compiled CORS policy.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<OriginRule>,
    methods: Vec<Method>,
    /// Lower-case.
    headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

impl Cors {
    pub fn compile(c: &CorsConfig) -> Result<Self, String> {
        let origins = c
            .origins
            .iter()
            .map(|o| OriginRule::parse(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cors: {e}"))?;
        if origins.is_empty() {
            return Err("cors: `origins` lists no origin".into());
        }
        if c.credentials && origins.iter().any(|o| matches!(o, OriginRule::Any)) {
            return Err(
                "cors: origin `*` with `credentials` would let any site act as the user".into(),
            );
        }
        let mut methods = Vec::new();
        for m in &c.methods {
            methods.push(
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("cors: unknown method `{m}`"))?,
            );
        }
        let join = |items: &[String]| items.join(", ");
        let value = |s: String| {
            HeaderValue::from_str(&s).map_err(|_| format!("cors: `{s}` is not a header value"))
        };
        let method_list = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            origins,
            headers: c.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            allow_methods: value(method_list)?,
            allow_headers: (!c.headers.is_empty())
                .then(|| value(join(&c.headers)))
                .transpose()?,
            expose: (!c.expose_headers.is_empty())
                .then(|| value(join(&c.expose_headers)))
                .transpose()?,
            methods,
            credentials: c.credentials,
            max_age: value(c.max_age.as_secs().to_string())?,
        })
    }

    pub(crate) fn origins(&self) -> &[OriginRule] {
        &self.origins
    }

    fn allowed_origin<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let s = origin.to_str().ok()?;
        self.origins.iter().any(|r| r.matches(s)).then_some(origin)
    }

    /// Every origin gets the same answer (`*`): caches need not key on `Origin`.
    pub(crate) fn any_origin(&self) -> bool {
        !self.credentials && self.origins.iter().all(|o| matches!(o, OriginRule::Any))
    }

    fn allow_origin(&self, origin: &HeaderValue, out: &mut HeaderMap) {
        if self.any_origin() {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// A preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answers a preflight: 204 with the policy, or 403 when the origin, method or a requested
    /// header is not allowed.
    pub fn preflight(&self, headers: &HeaderMap) -> Result<Response<Body>, Problem> {
        let Some(origin) = self.allowed_origin(headers) else {
            return Err(Problem::new(StatusCode::FORBIDDEN, "cors_origin_denied")
                .detail("this origin may not call this API from a browser")
                .evidence(evidence("preflight from an origin not allowed")));
        };
        let method_ok = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        let headers_ok = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .all(|h| self.headers.contains(&h));
        if !method_ok || !headers_ok {
            return Err(Problem::new(StatusCode::FORBIDDEN, "cors_preflight_denied")
                .detail(if method_ok {
                    "a requested header is not allowed cross-origin"
                } else {
                    "the requested method is not allowed cross-origin"
                })
                .evidence(evidence(
                    "preflight asked for a method or header not allowed",
                )));
        }
        let mut resp = Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.allow_origin(origin, h);
        if !self.any_origin() {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if let Some(v) = &self.allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(resp)
    }

    /// Headers for the actual response of an allowed origin; nothing for others.
    pub fn response_headers(&self, request: &HeaderMap, out: &mut HeaderMap) {
        if let Some(origin) = self.allowed_origin(request) {
            self.allow_origin(origin, out);
            if let Some(v) = &self.expose {
                out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
        }
    }

    /// A refusal made by a stage: the same CORS headers as a response would get.
    pub fn decorate(&self, mut problem: Problem, request: &HeaderMap) -> Problem {
        let mut h = HeaderMap::new();
        self.response_headers(request, &mut h);
        if !self.any_origin() {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        for (name, value) in &h {
            problem = problem.header(name.clone(), value.clone());
        }
        problem
    }

    /// On the upstream's response, before the stage headers go in: the upstream's own CORS
    /// headers go (the gateway's policy is the only one), and `Vary: Origin` is added for every
    /// origin, allowed or not, so a shared cache never serves one origin's answer to another.
    pub fn on_response(&self, headers: &mut HeaderMap) {
        Self::strip_upstream(headers);
        if !self.any_origin() {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    fn strip_upstream(headers: &mut HeaderMap) {
        for h in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(h);
        }
    }
}

fn evidence(message: &str) -> Evidence {
    Evidence {
        stage: "validate",
        message: message.into(),
        location: Some("REQUEST_HEADERS:Origin".into()),
        ..Evidence::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        let c: CorsConfig = serde_yaml::from_str(yaml).expect("yaml");
        Cors::compile(&c).expect("compiles")
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn origin_patterns() {
        let r = OriginRule::parse("https://*.example.com").expect("rule");
        assert!(r.matches("https://app.example.com"));
        assert!(r.matches("https://a.b.example.com"));
        assert!(!r.matches("https://example.com"));
        assert!(!r.matches("http://app.example.com"));
        assert!(!r.matches("https://evilexample.com"));
        assert!(!r.matches("https://app.example.com.evil.net"));
        assert!(!r.matches("https://x/.example.com"));
        let e = OriginRule::parse("https://App.Example.com/").expect("rule");
        assert!(e.matches("https://app.example.com"));
        assert!(!e.matches("https://app.example.com:8443"));
        assert!(OriginRule::parse("app.example.com").is_err());
        assert!(OriginRule::parse("https://a.*.com").is_err());
    }

    #[test]
    fn credentials_with_any_origin_is_refused() {
        let c: CorsConfig =
            serde_yaml::from_str("{ origins: ['*'], credentials: true }").expect("yaml");
        assert!(Cors::compile(&c).is_err());
    }

    #[test]
    fn preflight_matrix() {
        let c = cors(
            "{ origins: [https://app.example.com, 'https://*.example.org'], methods: [GET, PUT], \
             headers: [Content-Type, X-Api-Key], expose_headers: [X-Request-Id], credentials: true, max_age: 1h }",
        );
        // (origin, method, requested headers, allowed)
        let cases = [
            (
                "https://app.example.com",
                "PUT",
                "content-type, x-api-key",
                Ok(()),
            ),
            ("https://a.example.org", "GET", "", Ok(())),
            (
                "https://evil.example.net",
                "GET",
                "",
                Err("cors_origin_denied"),
            ),
            (
                "https://app.example.com",
                "DELETE",
                "",
                Err("cors_preflight_denied"),
            ),
            (
                "https://app.example.com",
                "GET",
                "x-other",
                Err("cors_preflight_denied"),
            ),
        ];
        for (origin, method, hdrs, want) in cases {
            let mut pairs = vec![
                ("origin", origin),
                ("access-control-request-method", method),
            ];
            if !hdrs.is_empty() {
                pairs.push(("access-control-request-headers", hdrs));
            }
            let got = c.preflight(&request(&pairs));
            match (got, want) {
                (Ok(resp), Ok(())) => {
                    let h = resp.headers();
                    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
                    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], origin);
                    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
                    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
                    assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "3600");
                    assert_eq!(h[header::VARY], "Origin");
                }
                (Err(p), Err(code)) => {
                    assert_eq!(p.code, code, "{origin} {method} {hdrs}");
                    assert_eq!(p.status, StatusCode::FORBIDDEN);
                }
                (got, want) => panic!(
                    "{origin} {method} {hdrs}: got {:?}, want {want:?}",
                    got.map(|r| r.status())
                ),
            }
        }
    }

    #[test]
    fn actual_responses_get_headers_only_for_allowed_origins() {
        let c = cors("{ origins: [https://app.example.com], expose_headers: [X-Request-Id] }");
        let mut out = HeaderMap::new();
        c.response_headers(&request(&[("origin", "https://app.example.com")]), &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(out[header::ACCESS_CONTROL_EXPOSE_HEADERS], "X-Request-Id");
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let mut out = HeaderMap::new();
        c.response_headers(&request(&[("origin", "https://evil.example")]), &mut out);
        assert!(out.is_empty());
        let any = cors("{ origins: ['*'] }");
        let mut out = HeaderMap::new();
        any.response_headers(&request(&[("origin", "https://x.test")]), &mut out);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[test]
    fn upstream_cors_headers_are_replaced_by_the_policy() {
        let c = cors("{ origins: [https://app.example.com] }");
        let mut upstream = request(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("vary", "Accept-Encoding"),
        ]);
        c.on_response(&mut upstream);
        assert!(!upstream.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!upstream.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let vary: Vec<_> = upstream.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    }
}
