//! CSRF protection for routes authenticated by cookies: a state-changing request that carries a
//! cookie must prove it comes from the site itself, either by its `Origin` (or `Referer`) being
//! an allowed origin, or by a double-submit token (a header equal to a cookie, which another
//! site can neither read nor set). Requests without cookies carry no ambient credential to
//! forge and are not judged.

use http::{HeaderMap, Method, StatusCode, header};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::cors::{Cors, OriginRule};
use crate::proxy::{problem::Problem, stage::Evidence};

/// `csrf:` on a route.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsrfConfig {
    /// `origin`: `Origin` (else `Referer`) must be an allowed origin; `double_submit`: the
    /// `header` must equal the `cookie`.
    pub mode: CsrfMode,
    /// Allowed origins for `origin` mode (patterns as in `cors`); empty means the route's
    /// `cors.origins`.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Cookie holding the token (`double_submit`).
    #[serde(default = "default_cookie")]
    pub cookie: String,
    /// Header echoing the token (`double_submit`).
    #[serde(default = "default_header")]
    pub header: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CsrfMode {
    Origin,
    DoubleSubmit,
}

fn default_cookie() -> String {
    "csrf_token".into()
}

fn default_header() -> String {
    "x-csrf-token".into()
}

#[derive(Debug)]
pub struct Csrf {
    mode: CsrfMode,
    origins: Vec<OriginRule>,
    cookie: String,
    header: http::HeaderName,
}

impl Csrf {
    pub fn compile(c: &CsrfConfig, cors: Option<&Cors>) -> Result<Self, String> {
        let mut origins = c
            .origins
            .iter()
            .map(|o| OriginRule::parse(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("csrf: {e}"))?;
        if origins.is_empty()
            && let Some(cors) = cors
        {
            origins = cors.origins().to_vec();
        }
        if c.mode == CsrfMode::Origin && origins.is_empty() {
            return Err("csrf: `origin` mode needs `origins` (or a `cors` section)".into());
        }
        if origins.iter().any(|o| matches!(o, OriginRule::Any)) && c.mode == CsrfMode::Origin {
            return Err("csrf: origin `*` would accept any site".into());
        }
        Ok(Self {
            mode: c.mode,
            origins,
            cookie: c.cookie.clone(),
            header: http::HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("csrf: `{}` is not a header name", c.header))?,
        })
    }

    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Problem> {
        if method.is_safe() || !headers.contains_key(header::COOKIE) {
            return Ok(());
        }
        let ok = match self.mode {
            CsrfMode::Origin => {
                let origin = headers
                    .get(header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .filter(|o| *o != "null")
                    .map(str::to_owned)
                    .or_else(|| {
                        headers
                            .get(header::REFERER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(referer_origin)
                    });
                origin.is_some_and(|o| self.origins.iter().any(|r| r.matches(&o)))
            }
            CsrfMode::DoubleSubmit => {
                let sent = headers.get(&self.header).map(|v| v.as_bytes());
                let cookie = cookie_value(headers, &self.cookie);
                match (sent, cookie) {
                    (Some(h), Some(c)) if !h.is_empty() => bool::from(h.ct_eq(c.as_bytes())),
                    _ => false,
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Problem::new(StatusCode::FORBIDDEN, "csrf_failed")
                .detail(match self.mode {
                    CsrfMode::Origin => "the request's origin is not allowed for this action",
                    CsrfMode::DoubleSubmit => "the CSRF token is missing or does not match",
                })
                .evidence(Evidence {
                    stage: "validate",
                    message: "cross-site request forgery check failed".into(),
                    location: Some(match self.mode {
                        CsrfMode::Origin => "REQUEST_HEADERS:Origin".into(),
                        CsrfMode::DoubleSubmit => format!("REQUEST_HEADERS:{}", self.header),
                    }),
                    ..Evidence::default()
                }))
        }
    }
}

/// `https://a.example.com:8443` from a Referer URL.
fn referer_origin(referer: &str) -> Option<String> {
    let (scheme, rest) = referer.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn csrf(yaml: &str) -> Csrf {
        let c: CsrfConfig = serde_yaml::from_str(yaml).expect("yaml");
        Csrf::compile(&c, None).expect("compiles")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
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
    fn origin_mode() {
        let c = csrf("{ mode: origin, origins: [https://app.example.com] }");
        let post = Method::POST;
        let cookie = ("cookie", "session=abc");
        let ok = |h: &[(&str, &str)]| c.check(&post, &headers(h)).is_ok();
        assert!(ok(&[cookie, ("origin", "https://app.example.com")]));
        assert!(ok(&[
            cookie,
            ("referer", "https://app.example.com/page?x=1")
        ]));
        assert!(!ok(&[cookie]), "missing origin and referer");
        assert!(!ok(&[cookie, ("origin", "https://evil.example")]));
        assert!(!ok(&[cookie, ("origin", "null")]));
        assert!(!ok(&[
            cookie,
            ("referer", "https://app.example.com.evil.net/")
        ]));
        // Safe methods and cookie-less requests are not judged.
        assert!(c.check(&Method::GET, &headers(&[cookie])).is_ok());
        assert!(ok(&[("origin", "https://evil.example")]));
        let p = c.check(&post, &headers(&[cookie])).expect_err("refused");
        assert_eq!((p.status, p.code), (StatusCode::FORBIDDEN, "csrf_failed"));
    }

    #[test]
    fn double_submit_mode() {
        let c = csrf("{ mode: double_submit, cookie: csrf, header: X-CSRF }");
        let ok = |h: &[(&str, &str)]| c.check(&Method::DELETE, &headers(h)).is_ok();
        assert!(ok(&[
            ("cookie", "session=s; csrf=t0k3n"),
            ("x-csrf", "t0k3n")
        ]));
        assert!(
            !ok(&[("cookie", "session=s; csrf=t0k3n")]),
            "missing header"
        );
        assert!(
            !ok(&[("cookie", "session=s"), ("x-csrf", "t0k3n")]),
            "missing cookie"
        );
        assert!(
            !ok(&[("cookie", "csrf=t0k3n"), ("x-csrf", "other")]),
            "mismatch"
        );
        assert!(!ok(&[("cookie", "csrf="), ("x-csrf", "")]), "empty");
    }

    #[test]
    fn origin_mode_needs_origins() {
        let c: CsrfConfig = serde_yaml::from_str("{ mode: origin }").expect("yaml");
        assert!(Csrf::compile(&c, None).is_err());
    }
}
