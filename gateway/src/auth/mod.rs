//! Authentication: who is calling. Named credential sources (JWT issuers, API key sets, HMAC
//! signing clients, client-certificate maps, introspection endpoints) are built once per
//! configuration generation; each route combines them with `any_of` / `all_of`.
//!
//! Missing or invalid credentials answer 401 with a `WWW-Authenticate` naming the route's
//! schemes; a duplicated credential header 400; an identity provider that cannot answer 503
//! (fail closed). Insufficient rights are `authz`'s 403. Every decision is logged with its
//! reason, never with a secret.

mod api_key;
mod config;
pub(crate) mod fetch;
mod introspection;
mod jwt;
pub mod jwt_crypto;
mod mtls;
pub mod signing;
mod token_cache;

use std::{borrow::Cow, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};

use crate::{
    config::RouteConfig,
    proxy::{
        problem::Problem,
        stage::{Evidence, Principal, RequestContext},
    },
};
pub use config::{
    ApiKeyEntry, ApiKeysConfig, AuthSection, HmacClientConfig, HmacConfig, IntrospectionConfig,
    JwtCacheConfig, JwtIssuerConfig, KeyRateLimit, MtlsConfig, MtlsIdentity, NoKeys,
    RouteAuthConfig, StaticKeyConfig,
};
pub use token_cache::lookups as jwt_cache_lookups;

/// What authentication needs on every request, whatever the route.
#[derive(Debug, Default)]
pub struct Auth {
    /// Identity headers the gateway sets upstream: removed from every client request.
    strip: Vec<HeaderName>,
    principal_header: Option<HeaderName>,
}

/// One route's compiled requirement.
#[derive(Debug)]
pub struct RouteAuth {
    all: bool,
    sources: Vec<(String, Source)>,
}

#[derive(Debug)]
enum Source {
    Jwt(Arc<jwt::Issuer>),
    ApiKey(Arc<api_key::ApiKeys>),
    Hmac(Arc<signing::Verifier>),
    Mtls(Arc<mtls::Identities>),
    Introspection(Arc<introspection::Introspector>),
}

/// Why one source did not authenticate.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 401 with this reason code.
    Rejected {
        code: &'static str,
        reason: Cow<'static, str>,
    },
    /// 400: a credential header sent twice (which one wins differs between proxies).
    Duplicate(String),
    /// 503: the identity provider cannot answer; refused (fail closed).
    Unavailable(Cow<'static, str>),
    /// 429: a valid API key over its own rate limit; retry after this many seconds.
    RateLimited(u64),
}

impl Failure {
    pub(crate) fn rejected(code: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Rejected {
            code,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_token(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::rejected("auth_invalid_token", reason)
    }

    pub(crate) fn duplicate(header: &str) -> Self {
        Self::Duplicate(header.to_owned())
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Rejected { code, .. } => code,
            Self::Duplicate(_) => "auth_duplicate_credentials",
            Self::Unavailable(_) => "auth_unavailable",
            Self::RateLimited(_) => "auth_key_rate_limited",
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Rejected { reason, .. } => reason.to_string(),
            Self::Duplicate(h) => format!("header `{h}` sent more than once"),
            Self::Unavailable(r) => r.to_string(),
            Self::RateLimited(_) => "API key over its rate limit".to_owned(),
        }
    }
}

/// A source's success: who, and headers to send upstream.
type Success = (Principal, Vec<(HeaderName, HeaderValue)>);

/// One route's authentication requirement and authorisation rules.
pub type RouteRules = (
    Option<Arc<RouteAuth>>,
    Option<Arc<crate::authz::RouteRequire>>,
);

/// Everything built from the `auth:` section for one generation: the per-request part and,
/// per route (in file order), its authentication requirement and authorisation rules.
pub struct Built {
    pub auth: Auth,
    pub routes: Vec<RouteRules>,
}

/// Builds every source the routes use and compiles each route's requirement. Reads key files
/// and secrets, fetches nothing. Errors name the offending key.
pub fn build(section: Option<&AuthSection>, routes: &[RouteConfig]) -> Result<Built, String> {
    jwt_crypto::install();
    let empty = AuthSection::default();
    let section = section.unwrap_or(&empty);
    let mut strip = Vec::new();
    let principal_header = section
        .principal_header
        .as_ref()
        .map(|h| {
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("auth.principal_header: bad header name `{h}`"))
        })
        .transpose()?;
    strip.extend(principal_header.clone());
    let mut jwts = std::collections::BTreeMap::new();
    for (name, c) in &section.jwt {
        let issuer = jwt::Issuer::build(name, c)?;
        strip.extend(issuer.forward.iter().map(|(_, h)| h.clone()));
        jwts.insert(name.as_str(), Arc::new(issuer));
    }
    let mut api_keys = std::collections::BTreeMap::new();
    for (name, c) in &section.api_keys {
        api_keys.insert(name.as_str(), Arc::new(api_key::ApiKeys::build(name, c)?));
    }
    let mut hmacs = std::collections::BTreeMap::new();
    for (name, c) in &section.hmac {
        hmacs.insert(name.as_str(), Arc::new(signing::Verifier::build(name, c)?));
    }
    let mut mtlss = std::collections::BTreeMap::new();
    for (name, c) in &section.mtls {
        mtlss.insert(name.as_str(), Arc::new(mtls::Identities::build(name, c)?));
    }
    let mut intros = std::collections::BTreeMap::new();
    for (name, c) in &section.introspection {
        intros.insert(
            name.as_str(),
            Arc::new(introspection::Introspector::build(name, c)?),
        );
    }
    let policies = crate::authz::build_policies(&section.policies)?;

    let mut compiled = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let route_name = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
        let what = format!("route {i} (`{route_name}`)");
        let auth = match &r.auth {
            None => None,
            Some(a) => {
                let (all, refs) = match (a.any_of.is_empty(), a.all_of.is_empty()) {
                    (false, true) => (false, &a.any_of),
                    (true, false) => (true, &a.all_of),
                    _ => return Err(format!("{what}: auth needs exactly one of any_of, all_of")),
                };
                let mut sources = Vec::new();
                for reference in refs {
                    let (kind, name) = reference.split_once('.').ok_or_else(|| {
                        format!("{what}: auth source `{reference}` must be <kind>.<name>")
                    })?;
                    let unknown = || format!("{what}: auth source `{reference}` is not defined");
                    let source = match kind {
                        "jwt" => Source::Jwt(Arc::clone(jwts.get(name).ok_or_else(unknown)?)),
                        "api_key" | "api_keys" => {
                            Source::ApiKey(Arc::clone(api_keys.get(name).ok_or_else(unknown)?))
                        }
                        "hmac" => Source::Hmac(Arc::clone(hmacs.get(name).ok_or_else(unknown)?)),
                        "mtls" => Source::Mtls(Arc::clone(mtlss.get(name).ok_or_else(unknown)?)),
                        "introspection" => {
                            Source::Introspection(Arc::clone(intros.get(name).ok_or_else(unknown)?))
                        }
                        other => {
                            return Err(format!(
                                "{what}: unknown auth kind `{other}` (jwt, api_key, hmac, mtls, introspection)"
                            ));
                        }
                    };
                    sources.push((reference.clone(), source));
                }
                Some(Arc::new(RouteAuth { all, sources }))
            }
        };
        let require = match &r.require {
            None => None,
            Some(req) => {
                if auth.is_none() {
                    return Err(format!(
                        "{what}: `require` needs `auth` (who would the rules apply to?)"
                    ));
                }
                Some(Arc::new(
                    crate::authz::RouteRequire::build(req, &policies)
                        .map_err(|e| format!("{what}: {e}"))?,
                ))
            }
        };
        compiled.push((auth, require));
    }
    strip.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    strip.dedup();
    Ok(Built {
        auth: Auth {
            strip,
            principal_header,
        },
        routes: compiled,
    })
}

impl RouteAuth {
    /// HMAC signatures cover the body: the route must buffer it.
    pub fn needs_body(&self) -> bool {
        self.sources
            .iter()
            .any(|(_, s)| matches!(s, Source::Hmac(_)))
    }

    /// The `WWW-Authenticate` challenges of this route's schemes.
    fn challenges(&self, bearer_error: Option<&str>) -> Option<HeaderValue> {
        let mut out: Vec<String> = Vec::new();
        for (_, s) in &self.sources {
            let c = match s {
                Source::Jwt(i) if !i.bearer() => continue,
                Source::Jwt(_) | Source::Introspection(_) => match bearer_error {
                    Some(e) => format!("Bearer realm=\"gateway\", error=\"{e}\""),
                    None => "Bearer realm=\"gateway\"".to_owned(),
                },
                Source::ApiKey(k) => k.challenge(),
                Source::Hmac(_) => "GW-HMAC-SHA256 realm=\"gateway\"".to_owned(),
                Source::Mtls(_) => continue,
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
        if out.is_empty() {
            return None;
        }
        HeaderValue::from_str(&out.join(", ")).ok()
    }
}

impl Source {
    async fn authenticate(
        &self,
        ctx: &RequestContext<'_>,
        parts: &mut Parts,
    ) -> Result<Option<Success>, Failure> {
        match self {
            Self::Jwt(i) => i.authenticate(&parts.headers).await,
            Self::ApiKey(k) => k.authenticate(parts),
            Self::Hmac(v) => v.authenticate(parts, ctx.body),
            Self::Mtls(m) => Ok(m.authenticate(ctx.tls)?.map(|p| (p, Vec::new()))),
            Self::Introspection(i) => i.authenticate(&parts.headers).await,
        }
    }
}

impl Auth {
    /// The authentication stage: strips client-sent identity headers, then, on routes that
    /// require it, sets `ctx.principal` or rejects.
    pub async fn authenticate(
        &self,
        ctx: &mut RequestContext<'_>,
        parts: &mut Parts,
    ) -> Result<(), Problem> {
        for h in &self.strip {
            parts.headers.remove(h);
        }
        let route = ctx.route;
        let Some(req) = route.auth.as_deref() else {
            return Ok(());
        };
        let mut found: Vec<(&str, Principal)> = Vec::new();
        let mut forward = Vec::new();
        let mut failure: Option<(&str, Failure)> = None;
        for (name, source) in &req.sources {
            // Boxed: a source's future (a JWKS or introspection fetch) is kilobytes, and held
            // inline it would be copied with every proxied request's future, authenticated or
            // not.
            match Box::pin(source.authenticate(ctx, parts)).await {
                Ok(Some((principal, headers))) => {
                    forward.extend(headers);
                    found.push((name, principal));
                    if !req.all {
                        break;
                    }
                }
                Ok(None) if req.all => {
                    failure.get_or_insert((
                        name,
                        Failure::rejected("auth_missing", "credentials missing"),
                    ));
                    break;
                }
                Ok(None) => {}
                Err(f) => {
                    // Ambiguous or unverifiable: refuse at once rather than let another source
                    // decide.
                    let decisive = matches!(
                        f,
                        Failure::Duplicate(_) | Failure::Unavailable(_) | Failure::RateLimited(_)
                    );
                    if failure.is_none() || decisive {
                        failure = Some((name, f));
                    }
                    if req.all || decisive {
                        break;
                    }
                }
            }
        }
        let ok = if req.all {
            failure.is_none() && found.len() == req.sources.len()
        } else {
            !found.is_empty()
        };
        if ok {
            let mut found = found.into_iter();
            let Some((first_source, mut principal)) = found.next() else {
                return Err(self.reject(ctx, req, None));
            };
            for (_, p) in found {
                merge(&mut principal.roles, p.roles);
                merge(&mut principal.scopes, p.scopes);
                if principal.claims.is_null() {
                    principal.claims = p.claims;
                }
            }
            tracing::debug!(
                request_id = ctx.request_id,
                route = %route.name,
                source = first_source,
                scheme = principal.scheme,
                principal = %principal.id,
                "authenticated"
            );
            for (h, v) in forward {
                parts.headers.insert(h, v);
            }
            if let Some(h) = &self.principal_header
                && let Ok(v) =
                    HeaderValue::from_str(&format!("{}:{}", principal.scheme, principal.id))
            {
                parts.headers.insert(h.clone(), v);
            }
            ctx.principal = Some(principal);
            return Ok(());
        }
        Err(self.reject(ctx, req, failure))
    }

    fn reject(
        &self,
        ctx: &RequestContext<'_>,
        req: &RouteAuth,
        failure: Option<(&str, Failure)>,
    ) -> Problem {
        let (source, failure) = match failure {
            Some((s, f)) => (s, f),
            None => ("", Failure::rejected("auth_missing", "credentials missing")),
        };
        let code = failure.code();
        let reason = failure.reason();
        tracing::info!(
            request_id = ctx.request_id,
            route = %ctx.route.name,
            client = %ctx.client_ip,
            source,
            code,
            reason = %reason,
            "authentication refused"
        );
        let (status, bearer_error) = match &failure {
            Failure::Duplicate(_) => (StatusCode::BAD_REQUEST, Some("invalid_request")),
            Failure::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            Failure::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, None),
            Failure::Rejected { code, .. } if *code == "auth_missing" => {
                (StatusCode::UNAUTHORIZED, None)
            }
            Failure::Rejected { .. } => (StatusCode::UNAUTHORIZED, Some("invalid_token")),
        };
        let mut p = Problem::new(status, code)
            .detail(reason.clone())
            .evidence(Evidence {
                stage: "auth",
                rule_ids: if source.is_empty() {
                    Vec::new()
                } else {
                    vec![source.to_owned()]
                },
                message: reason,
                ..Evidence::default()
            });
        if status == StatusCode::UNAUTHORIZED
            && let Some(v) = req.challenges(bearer_error)
        {
            p = p.header(header::WWW_AUTHENTICATE, v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            p = p.header(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Failure::RateLimited(secs) = failure {
            p = p.header(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        p
    }
}

fn merge(into: &mut Vec<String>, from: Vec<String>) {
    for v in from {
        if !into.contains(&v) {
            into.push(v);
        }
    }
}

/// The `Authorization: Bearer` token; `None` without one (or with another scheme). Two
/// `Authorization` headers are refused.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, Failure> {
    let Some(v) = single(headers, &header::AUTHORIZATION)? else {
        return Ok(None);
    };
    let Ok(v) = v.to_str() else {
        return Err(Failure::invalid_token("Authorization is not ASCII"));
    };
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Ok(None),
    }
}

/// The only value of `name`, refusing duplicates.
pub(crate) fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, Failure> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(Failure::duplicate(name.as_str()));
    }
    Ok(first)
}

/// A cookie's value from every `Cookie` header.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Hex into bytes (either case); `None` when it is not hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(bearer_token(&h).expect("ok").is_none());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&h).expect("ok"), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9v"),
        );
        assert!(bearer_token(&h).expect("ok").is_none());
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(matches!(bearer_token(&h), Err(Failure::Duplicate(_))));
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=tok; b=2"),
        );
        assert_eq!(cookie(&h, "session"), Some("tok"));
        assert_eq!(cookie(&h, "sess"), None);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 171, 255]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 171, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
