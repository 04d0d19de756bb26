//! Request validation: the cheapest, quietest protection an API has. Per route: content types
//! (415), body size (413), JSON well-formedness within depth and size limits, JSON Schema for
//! bodies and for query, header and path parameters (400 naming JSON pointers and rules, never
//! values), requests an OpenAPI spec does not declare (strict mode), CORS and CSRF.
//!
//! Routes can be generated from an OpenAPI 3.0/3.1 spec ([`openapi`]): the same route shape a
//! person writes, so `gateway openapi import` output and a spec referenced from the config are
//! enforced by the same code.

pub mod cors;
pub mod csrf;
mod json;
pub mod openapi;
pub mod schema;

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, header, request::Parts};
use serde::Deserialize;
use serde_json::Value;

pub use cors::{Cors, CorsConfig};
pub use csrf::{Csrf, CsrfConfig};
use schema::{ParamSchema, Schema, Violation};

use crate::proxy::{
    problem::Problem,
    stage::{Evidence, RequestContext},
};

/// `validate:` on a route.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// Media types a request body may have: `application/json`, `application/*+json`,
    /// `text/*`. A body of another type gets 415. Empty allows any, except with `json` or
    /// `body`: then only JSON, so a JSON body labelled otherwise cannot skip its rules.
    #[serde(default)]
    pub content_types: Vec<String>,
    /// Larger request bodies get 413 (`http.max_body_bytes` still applies), e.g. `64KiB`.
    #[serde(default, deserialize_with = "de_opt_size")]
    #[schemars(with = "Option<String>")]
    pub max_body: Option<u64>,
    /// JSON bodies must be well-formed within these limits (on by default with `body`).
    #[serde(default)]
    pub json: Option<JsonLimits>,
    /// JSON Schema (draft 2020-12) of JSON request bodies; other media types are not judged.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub body: Option<Value>,
    /// A request without a body is refused (OpenAPI `requestBody.required`).
    #[serde(default)]
    pub body_required: bool,
    /// Object schema of the query parameters (each a property; values typed before checking).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub query: Option<Value>,
    /// Object schema of request headers (property names are matched case-insensitively).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub headers: Option<Value>,
    /// Object schema of the path template parameters (`/pets/{petId}` -> `petId`).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub path: Option<Value>,
    /// Reject everything this route matches as undeclared by an OpenAPI spec (strict mode):
    /// 405 when `allow` lists the methods declared for this path, else 404.
    #[serde(default)]
    pub undeclared: Option<Undeclared>,
}

/// Limits on JSON request bodies.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JsonLimits {
    /// Deeper nesting of arrays and objects: 400 `json_too_deep`.
    pub max_depth: usize,
    /// Larger JSON bodies: 413 `json_too_large`; absent means `max_body` / `http.max_body_bytes`.
    #[serde(deserialize_with = "de_opt_size")]
    #[schemars(with = "Option<String>")]
    pub max_bytes: Option<u64>,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_bytes: None,
        }
    }
}

/// What a strict OpenAPI route set answers for requests the spec does not declare.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Undeclared {
    /// Methods the spec declares for this path: the answer is 405 with `Allow`.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A route's compiled validation.
#[derive(Debug, Default)]
pub struct Validator {
    content_types: Vec<String>,
    max_body: Option<u64>,
    json: Option<JsonLimits>,
    body: Option<Schema>,
    body_required: bool,
    query: Option<ParamSchema>,
    headers: Option<ParamSchema>,
    path: Option<ParamSchema>,
    undeclared: Option<Vec<Method>>,
}

/// Everything this module compiles for one route.
#[derive(Clone, Debug, Default)]
pub struct RouteChecks {
    pub validate: Option<Arc<Validator>>,
    pub cors: Option<Arc<Cors>>,
    pub csrf: Option<Arc<Csrf>>,
}

impl RouteChecks {
    pub fn compile(
        validate: Option<&ValidateConfig>,
        cors: Option<&CorsConfig>,
        csrf: Option<&CsrfConfig>,
    ) -> Result<Self, String> {
        let cors = cors.map(Cors::compile).transpose()?;
        let csrf = csrf.map(|c| Csrf::compile(c, cors.as_ref())).transpose()?;
        Ok(Self {
            validate: validate.map(Validator::compile).transpose()?.map(Arc::new),
            cors: cors.map(Arc::new),
            csrf: csrf.map(Arc::new),
        })
    }

    /// The body is read whole before the stages run only when a body rule needs it.
    pub fn reads_body(&self) -> bool {
        self.validate.as_ref().is_some_and(|v| v.reads_body())
    }

    /// The route's own body limit, within the global one.
    pub fn body_limit(&self, global: u64) -> u64 {
        self.validate
            .as_ref()
            .and_then(|v| v.max_body)
            .map_or(global, |m| m.min(global))
    }

    /// The validation stage: CSRF first (a forged request is refused whatever it carries), CORS
    /// response headers for allowed origins, then the request rules.
    pub fn check(&self, ctx: &mut RequestContext<'_>, parts: &Parts) -> Result<(), Problem> {
        if let Some(csrf) = &self.csrf {
            csrf.check(&parts.method, &parts.headers)?;
        }
        if let Some(v) = &self.validate {
            v.check(ctx, parts)?;
        }
        // Refusals get theirs where the pipeline meets a failing stage (`Cors::decorate`).
        if let Some(cors) = &self.cors {
            cors.response_headers(&parts.headers, &mut ctx.response_headers);
        }
        Ok(())
    }
}

impl Validator {
    pub fn compile(c: &ValidateConfig) -> Result<Self, String> {
        let mut content_types = Vec::new();
        for t in &c.content_types {
            let t = t.trim().to_ascii_lowercase();
            if t.split_once('/')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
            {
                return Err(format!("content type `{t}` is not `type/subtype`"));
            }
            content_types.push(t);
        }
        let schema = |v: &Option<Value>, what: &str| {
            v.as_ref()
                .map(Schema::compile)
                .transpose()
                .map_err(|e| format!("validate.{what}: {e}"))
        };
        let params = |v: &Option<Value>, what: &str, fold: bool| {
            v.as_ref()
                .map(|s| ParamSchema::compile(s, fold))
                .transpose()
                .map_err(|e| format!("validate.{what}: {e}"))
        };
        let undeclared = match &c.undeclared {
            None => None,
            Some(u) => {
                let mut methods = Vec::new();
                for m in &u.allow {
                    methods.push(
                        Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                            .map_err(|_| format!("unknown method `{m}`"))?,
                    );
                }
                Some(methods)
            }
        };
        let body = schema(&c.body, "body")?;
        if content_types.is_empty() && (c.json.is_some() || body.is_some()) {
            content_types = vec!["application/json".into(), "application/*+json".into()];
        }
        Ok(Self {
            content_types,
            max_body: c.max_body,
            json: c
                .json
                .clone()
                .or_else(|| body.as_ref().map(|_| JsonLimits::default())),
            body,
            body_required: c.body_required,
            query: params(&c.query, "query", false)?,
            headers: params(&c.headers, "headers", true)?,
            path: params(&c.path, "path", false)?,
            undeclared,
        })
    }

    fn reads_body(&self) -> bool {
        self.json.is_some() || self.body.is_some() || self.body_required
    }

    /// Runs the rules in order of cost: head-only checks first, the body last.
    pub fn check(&self, ctx: &mut RequestContext<'_>, parts: &Parts) -> Result<(), Problem> {
        if let Some(allow) = &self.undeclared {
            return Err(undeclared(allow));
        }
        let headers = &parts.headers;
        let content_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body_len = ctx.body.map(|b| b.len() as u64).or(content_length);
        let has_body = body_len.map_or(headers.contains_key(header::TRANSFER_ENCODING), |n| n > 0);
        let media = media_type(headers);
        if has_body && !self.content_types.is_empty() {
            let ok = media
                .as_deref()
                .is_some_and(|m| self.content_types.iter().any(|p| media_matches(p, m)));
            if !ok {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content_type_unsupported",
                )
                .detail(format!("accepted: {}", self.content_types.join(", ")))
                .evidence(evidence("content type not accepted", Some("Content-Type"))));
            }
        }
        if let (Some(max), Some(n)) = (self.max_body, body_len)
            && n > max
        {
            return Err(
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                    .detail(format!("bodies on this route are limited to {max} bytes")),
            );
        }

        let mut violations = Vec::new();
        self.check_params(ctx.params, parts.uri.query(), &mut violations);
        if let Some(h) = &self.headers {
            h.check(
                "header",
                headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
                &mut violations,
            );
        }

        let body = ctx.body.filter(|b| !b.is_empty());
        if body.is_none() && self.body_required {
            violations.push(Violation {
                location: "body",
                pointer: String::new(),
                rule: "required".into(),
            });
        }
        let is_json = media.as_deref().is_some_and(is_json_media);
        if let (Some(bytes), Some(limits), true) = (body, &self.json, is_json) {
            if limits.max_bytes.is_some_and(|m| bytes.len() as u64 > m) {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "json_too_large",
                ));
            }
            if json::depth(bytes, limits.max_depth) > limits.max_depth {
                return Err(Problem::new(StatusCode::BAD_REQUEST, "json_too_deep")
                    .detail(format!(
                        "JSON nesting is limited to {} levels",
                        limits.max_depth
                    ))
                    .evidence(evidence("JSON nested too deep", Some("body"))));
            }
            let doc: Value = match serde_json::from_slice(bytes) {
                Ok(doc) => doc,
                Err(e) => {
                    // Line and column only: serde's message can quote the input.
                    let at = format!("line {} column {}", e.line(), e.column());
                    return Err(Problem::new(StatusCode::BAD_REQUEST, "json_malformed")
                        .detail(format!("the body is not well-formed JSON ({at})"))
                        .evidence(evidence("malformed JSON", Some(&at))));
                }
            };
            if let Some(schema) = &self.body {
                schema.check("body", &doc, &mut violations);
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(failed(violations))
        }
    }
}

impl Validator {
    /// What validation says about a request known only by its path parameters and query (an
    /// access log line): `None` when it passes. Headers and bodies are not judged.
    pub fn judge_logged(
        &self,
        params: &[(String, String)],
        query: Option<&str>,
    ) -> Option<Problem> {
        if let Some(allow) = &self.undeclared {
            return Some(undeclared(allow));
        }
        let mut violations = Vec::new();
        self.check_params(params, query, &mut violations);
        (!violations.is_empty()).then(|| failed(violations))
    }

    fn check_params(
        &self,
        params: &[(String, String)],
        query: Option<&str>,
        violations: &mut Vec<Violation>,
    ) {
        if let Some(p) = &self.path {
            p.check(
                "path",
                params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                violations,
            );
        }
        if let Some(q) = &self.query {
            let pairs: Vec<(String, String)> = query
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            q.check(
                "query",
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                violations,
            );
        }
    }
}

/// The 400 for schema failures: `detail` lists `in pointer: rule`, `errors` carries the same
/// as data. Values are never included.
fn failed(violations: Vec<Violation>) -> Problem {
    let detail = violations
        .iter()
        .map(|v| {
            let p = if v.pointer.is_empty() {
                "/"
            } else {
                &v.pointer
            };
            format!("{} {}: {}", v.location, p, v.rule)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let first = violations
        .first()
        .map(|v| format!("{}:{}", v.location, v.pointer));
    let rules = violations.iter().map(|v| v.rule.clone()).collect();
    Problem::new(StatusCode::BAD_REQUEST, "validation_failed")
        .detail(detail)
        .extension(
            "errors",
            serde_json::to_value(&violations).unwrap_or_default(),
        )
        .evidence(Evidence {
            stage: "validate",
            rule_ids: rules,
            message: "request does not match its schema".into(),
            location: first,
            ..Evidence::default()
        })
}

fn undeclared(allow: &[Method]) -> Problem {
    if allow.is_empty() {
        return Problem::new(StatusCode::NOT_FOUND, "openapi_undeclared")
            .detail("the API specification declares no such path")
            .evidence(evidence("path not in the OpenAPI spec", None));
    }
    let list = allow
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut p = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "openapi_undeclared")
        .detail("the API specification declares no such method for this path")
        .evidence(evidence("method not in the OpenAPI spec", None));
    if let Ok(v) = http::HeaderValue::from_str(&list) {
        p = p.header(header::ALLOW, v);
    }
    p
}

fn evidence(message: &str, location: Option<&str>) -> Evidence {
    Evidence {
        stage: "validate",
        message: message.into(),
        location: location.map(str::to_owned),
        ..Evidence::default()
    }
}

/// `application/json` from `Application/JSON; charset=utf-8`.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let m = v.split(';').next()?.trim().to_ascii_lowercase();
    (!m.is_empty()).then_some(m)
}

fn is_json_media(m: &str) -> bool {
    m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
}

/// `application/json`, `application/*`, `*/*`, `application/*+json` against a media type.
fn media_matches(pattern: &str, media: &str) -> bool {
    if pattern == "*/*" || pattern == media {
        return true;
    }
    let (Some((pt, ps)), Some((mt, ms))) = (pattern.split_once('/'), media.split_once('/')) else {
        return false;
    };
    if pt != mt {
        return false;
    }
    match ps.strip_prefix('*') {
        Some(suffix) => ms.ends_with(suffix),
        None => false,
    }
}

fn de_opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(n)),
        Some(Raw::S(s)) => crate::config::parse_size(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ranges() {
        for (p, m, want) in [
            ("application/json", "application/json", true),
            ("application/*", "application/xml", true),
            ("*/*", "text/plain", true),
            ("application/*+json", "application/problem+json", true),
            ("application/*+json", "application/json", false),
            ("application/json", "text/json", false),
            ("text/*", "application/text", false),
        ] {
            assert_eq!(media_matches(p, m), want, "{p} {m}");
        }
        assert!(is_json_media("application/merge-patch+json"));
        assert!(!is_json_media("text/plain"));
    }

    #[test]
    fn bad_config_is_refused() {
        let bad: ValidateConfig = serde_yaml::from_str("content_types: [json]").expect("yaml");
        assert!(Validator::compile(&bad).is_err());
        let bad: ValidateConfig = serde_yaml::from_str("body: { type: nope }").expect("yaml");
        assert!(Validator::compile(&bad).is_err());
        let ok: ValidateConfig = serde_yaml::from_str(
            "{ content_types: [application/json], max_body: 1KiB, body: { type: object } }",
        )
        .expect("yaml");
        let v = Validator::compile(&ok).expect("compiles");
        assert_eq!(v.max_body, Some(1024));
        assert!(v.reads_body());
    }
}
