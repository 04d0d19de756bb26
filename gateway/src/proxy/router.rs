//! Route matching on host, normalised path and method. Routes are tried in file order and the
//! first match wins (as in Envoy): put specific routes before general ones.

use http::Method;

use crate::config::RouteConfig;

#[derive(Clone, Debug)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`: one label in front.
    Wildcard(String),
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    Param(String),
    CatchAll(String),
}

#[derive(Clone, Debug)]
enum PathMatch {
    Any,
    Template(Vec<Segment>),
    Prefix(Vec<String>),
}

/// A route ready to match, with what later stages need.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub upstream: String,
    pub strip_prefix: Option<Vec<String>>,
    pub add_prefix: Option<String>,
    /// Security headers and upstream identity hiding, ready to apply.
    pub response_policy: super::headers::ResponsePolicy,
    /// A stage on this route reads the body (validation, WAF): it is read whole (within
    /// `http.max_body_bytes`) before the stages run, instead of streamed.
    pub buffer_body: bool,
    /// Rate limits and quotas, split by the stage they run in.
    pub rate_limits: crate::ratelimit::RouteLimits,
    /// Bot signals apply here (when the `bot` section exists).
    pub bot_signals: bool,
    /// Masking and the size cap on responses.
    pub response_filter: Option<std::sync::Arc<crate::filter::ResponseFilter>>,
    /// Validation, CORS and CSRF of this route.
    pub checks: crate::validate::RouteChecks,
    /// Credentials this route requires (`auth`), compiled against the `auth:` section.
    pub auth: Option<std::sync::Arc<crate::auth::RouteAuth>>,
    /// Rights this route requires (`authz`).
    pub require: Option<std::sync::Arc<crate::authz::RouteRequire>>,
    /// The WAF runs on this route, with these route-level exclusions.
    pub waf: Option<std::sync::Arc<crate::waf::Tuning>>,
    /// Its Prometheus series, resolved on the first request it answers.
    pub metrics: std::sync::OnceLock<crate::telemetry::metrics::RouteMetrics>,
    host: HostMatch,
    path: PathMatch,
    methods: Vec<Method>,
    case_insensitive: bool,
}

/// The outcome of routing.
pub enum Found<'a> {
    Route {
        route: &'a Route,
        params: Vec<(String, String)>,
    },
    /// The path matched routes, none for this method: 405 with these in `Allow`.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

impl Router {
    /// Compiles the routes; an error names the route index and the problem.
    pub fn build(configs: &[RouteConfig]) -> Result<Self, (usize, String)> {
        let mut routes = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let m = &c.matches;
            let host = match m.host.as_deref() {
                None => HostMatch::Any,
                Some(h) if h.starts_with("*.") => HostMatch::Wildcard(h[1..].to_ascii_lowercase()),
                Some(h) if h.contains('*') => {
                    return Err((
                        i,
                        format!("host `{h}`: only a leading `*.` wildcard is supported"),
                    ));
                }
                Some(h) => HostMatch::Exact(h.to_ascii_lowercase()),
            };
            let fold = |s: &str| {
                if m.case_insensitive {
                    s.to_ascii_lowercase()
                } else {
                    s.to_owned()
                }
            };
            let path = match (&m.path, &m.prefix) {
                (Some(_), Some(_)) => return Err((i, "set `path` or `prefix`, not both".into())),
                (None, None) => PathMatch::Any,
                (None, Some(p)) => {
                    if !p.starts_with('/') {
                        return Err((i, format!("prefix `{p}` must start with /")));
                    }
                    PathMatch::Prefix(segments(p).into_iter().map(fold).collect())
                }
                (Some(p), None) => {
                    if !p.starts_with('/') {
                        return Err((i, format!("path `{p}` must start with /")));
                    }
                    let segs = segments(p);
                    let mut out = Vec::with_capacity(segs.len());
                    for (n, s) in segs.iter().enumerate() {
                        let seg = if let Some(name) =
                            s.strip_prefix("{*").and_then(|r| r.strip_suffix('}'))
                        {
                            if n + 1 != segs.len() {
                                return Err((
                                    i,
                                    format!("catch-all `{s}` must be the last segment"),
                                ));
                            }
                            Segment::CatchAll(name.to_owned())
                        } else if let Some(name) =
                            s.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
                        {
                            Segment::Param(name.to_owned())
                        } else if s.contains(['{', '}']) {
                            return Err((
                                i,
                                format!("segment `{s}`: a parameter takes a whole segment"),
                            ));
                        } else {
                            Segment::Literal(fold(s))
                        };
                        out.push(seg);
                    }
                    PathMatch::Template(out)
                }
            };
            let mut methods = Vec::new();
            for name in &m.methods {
                let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                    .map_err(|_| (i, format!("unknown method `{name}`")))?;
                methods.push(method);
            }
            let route_name = c.name.clone().unwrap_or_else(|| format!("route-{i}"));
            let rate_limits = crate::ratelimit::RouteLimits::compile(&route_name, &c.rate_limits)
                .map_err(|e| (i, e))?;
            let response_filter = match &c.response_filter {
                Some(f) => Some(std::sync::Arc::new(
                    crate::filter::ResponseFilter::compile(f).map_err(|e| (i, e))?,
                )),
                None => None,
            };
            let checks = crate::validate::RouteChecks::compile(
                c.validate.as_ref(),
                c.cors.as_ref(),
                c.csrf.as_ref(),
            )
            .map_err(|e| (i, e))?;
            let waf = match &c.waf {
                Some(w) if w.enabled() => {
                    let mut route = crate::waf::stage::compile_exclusions(w.exclusions())
                        .map_err(|e| (i, e.to_string()))?;
                    route.graphql = w.graphql();
                    Some(std::sync::Arc::new(route))
                }
                _ => None,
            };
            routes.push(Route {
                name: c.name.clone().unwrap_or_else(|| format!("route-{i}")),
                upstream: c.upstream.clone(),
                strip_prefix: c
                    .strip_prefix
                    .as_deref()
                    .map(|p| segments(p).into_iter().map(str::to_owned).collect()),
                add_prefix: c.add_prefix.clone(),
                response_policy: super::headers::ResponsePolicy::new(
                    &c.security_headers,
                    c.hide_upstream_identity,
                ),
                // Validation and the WAF (phase 2) read the body.
                buffer_body: checks.reads_body() || waf.is_some(),
                rate_limits,
                bot_signals: c.bot_signals,
                response_filter,
                checks,
                auth: None,
                require: None,
                waf,
                metrics: std::sync::OnceLock::new(),
                host,
                path,
                methods,
                case_insensitive: m.case_insensitive,
            });
        }
        Ok(Self { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// For attaching what later stages compiled per route (in file order).
    pub fn routes_mut(&mut self) -> &mut [Route] {
        &mut self.routes
    }

    /// `host` without port, any case; `path` normalised.
    pub fn find(&self, host: &str, path: &str, method: &Method) -> Found<'_> {
        let segs = segments(path);
        let mut allowed: Vec<Method> = Vec::new();
        for route in &self.routes {
            let host_ok = match &route.host {
                HostMatch::Any => true,
                HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
                HostMatch::Wildcard(suffix) => {
                    host.len() > suffix.len()
                        && host.is_char_boundary(host.len() - suffix.len())
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                        && !host[..host.len() - suffix.len()].contains('.')
                }
            };
            if !host_ok {
                continue;
            }
            let Some(params) = route.match_path(path, &segs) else {
                continue;
            };
            // A CORS route takes its preflights whatever methods it serves: the gateway answers.
            if route.methods.is_empty()
                || route.methods.contains(method)
                || (method == Method::OPTIONS && route.checks.cors.is_some())
            {
                return Found::Route { route, params };
            }
            allowed.extend(route.methods.iter().cloned());
        }
        if allowed.is_empty() {
            Found::NotFound
        } else {
            allowed.dedup();
            Found::MethodNotAllowed(allowed)
        }
    }
}

impl Route {
    /// The route's own method list allows `method` (empty allows all).
    pub fn serves(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    fn match_path(&self, path: &str, segs: &[&str]) -> Option<Vec<(String, String)>> {
        let eq = |pattern: &str, seg: &str| {
            if self.case_insensitive {
                pattern.eq_ignore_ascii_case(seg)
            } else {
                pattern == seg
            }
        };
        match &self.path {
            PathMatch::Any => Some(Vec::new()),
            PathMatch::Prefix(prefix) => (segs.len() >= prefix.len()
                && prefix.iter().zip(segs).all(|(p, s)| eq(p, s)))
            .then(Vec::new),
            PathMatch::Template(template) => {
                let mut params = Vec::new();
                for (i, t) in template.iter().enumerate() {
                    match t {
                        Segment::Literal(l) => {
                            if !segs.get(i).is_some_and(|s| eq(l, s)) {
                                return None;
                            }
                        }
                        Segment::Param(name) => {
                            params.push((name.clone(), (*segs.get(i)?).to_owned()));
                        }
                        Segment::CatchAll(name) => {
                            let rest = segs[i.min(segs.len())..].join("/");
                            params.push((name.clone(), rest));
                            return Some(params);
                        }
                    }
                }
                // Exact length; a trailing slash is the same resource.
                let _ = path;
                (segs.len() == template.len()).then_some(params)
            }
        }
    }

    /// The path to send upstream: prefix stripped, prefix added.
    /// Whether the upstream sees another path than the client's normalised one.
    pub fn rewrites_path(&self) -> bool {
        self.strip_prefix.is_some() || self.add_prefix.is_some()
    }

    pub fn upstream_path(&self, path: &str) -> String {
        let mut rest = path;
        if let Some(strip) = &self.strip_prefix {
            let mut cut = 0;
            let mut segs = path.split('/').filter(|s| !s.is_empty());
            for want in strip {
                match segs.next() {
                    Some(s) if s == want => cut += 1 + s.len(),
                    _ => {
                        cut = 0;
                        break;
                    }
                }
            }
            rest = &path[cut..];
        }
        let mut out = String::with_capacity(rest.len() + 16);
        if let Some(add) = &self.add_prefix {
            out.push_str(add.trim_end_matches('/'));
        }
        if rest.is_empty() {
            out.push('/');
        } else {
            out.push_str(rest);
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(yaml: &str) -> Router {
        let routes: Vec<RouteConfig> = serde_yaml::from_str(yaml).expect("yaml");
        Router::build(&routes).expect("routes")
    }

    fn hit(
        r: &Router,
        host: &str,
        path: &str,
        method: Method,
    ) -> Option<(String, Vec<(String, String)>)> {
        match r.find(host, path, &method) {
            Found::Route { route, params } => Some((route.name.clone(), params)),
            _ => None,
        }
    }

    #[test]
    fn hosts_paths_methods() {
        let r = router(
            r#"
- { name: orders, match: { host: api.example.com, path: "/orders/{id}", methods: [GET, DELETE] }, upstream: o }
- { name: files, match: { path: "/files/{*rest}" }, upstream: f }
- { name: wild, match: { host: "*.example.net", prefix: /api }, upstream: w }
- { name: ci, match: { prefix: /admin, case_insensitive: true }, upstream: a }
"#,
        );
        assert_eq!(
            hit(&r, "API.example.com", "/orders/42", Method::GET),
            Some(("orders".into(), vec![("id".into(), "42".into())]))
        );
        assert!(
            matches!(r.find("api.example.com", "/orders/42", &Method::POST), Found::MethodNotAllowed(m) if m == vec![Method::GET, Method::DELETE])
        );
        assert!(hit(&r, "other.com", "/orders/42", Method::GET).is_none());
        assert!(hit(&r, "api.example.com", "/orders/42/x", Method::GET).is_none());
        assert_eq!(
            hit(&r, "x", "/files/a/b/c", Method::GET),
            Some(("files".into(), vec![("rest".into(), "a/b/c".into())]))
        );
        assert_eq!(
            hit(&r, "a.example.net", "/api/v1", Method::GET).map(|h| h.0),
            Some("wild".into())
        );
        assert!(hit(&r, "example.net", "/api", Method::GET).is_none());
        assert!(hit(&r, "a.b.example.net", "/api", Method::GET).is_none());
        assert!(hit(&r, "a.example.net", "/apix", Method::GET).is_none());
        assert_eq!(
            hit(&r, "x", "/ADMIN/users", Method::GET).map(|h| h.0),
            Some("ci".into())
        );
        assert!(matches!(
            r.find("x", "/nothing", &Method::GET),
            Found::NotFound
        ));
    }

    #[test]
    fn upstream_paths() {
        let r = router(
            r#"
- { match: { prefix: /api }, upstream: o, strip_prefix: /api, add_prefix: /v2 }
- { match: { prefix: /x }, upstream: o, strip_prefix: /x }
"#,
        );
        assert_eq!(r.routes()[0].upstream_path("/api/orders/1"), "/v2/orders/1");
        assert_eq!(r.routes()[0].upstream_path("/api"), "/v2/");
        assert_eq!(r.routes()[1].upstream_path("/x"), "/");
        assert_eq!(r.routes()[1].upstream_path("/x/y/"), "/y/");
    }

    #[test]
    fn bad_routes_are_refused() {
        for yaml in [
            r#"[{ match: { path: "/a/{*r}/b" }, upstream: o }]"#,
            r#"[{ match: { path: "/a{id}" }, upstream: o }]"#,
            r#"[{ match: { path: /a, prefix: /a }, upstream: o }]"#,
            r#"[{ match: { host: "a.*.com" }, upstream: o }]"#,
            r#"[{ match: { prefix: a }, upstream: o }]"#,
        ] {
            let routes: Vec<RouteConfig> = serde_yaml::from_str(yaml).expect("yaml");
            assert!(Router::build(&routes).is_err(), "{yaml}");
        }
    }
}
