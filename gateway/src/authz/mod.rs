//! Authorisation: what the authenticated caller may do on this route. Required roles (any one)
//! and scopes (all), per route and per method, then an optional policy: Rego evaluated
//! in-process (regorus) or an external OPA asked over HTTP with a timeout and a decision cache.
//! Refusals are 403 `authz_denied`; a policy that cannot decide refuses too (fail closed).

mod opa;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue, Method, StatusCode, header, request::Parts};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    config::de_duration,
    proxy::{
        problem::Problem,
        stage::{Evidence, Principal, RequestContext},
    },
};

/// Per route: `require: { roles, scopes, policy, methods: { DELETE: { roles: [admin] } } }`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireConfig {
    /// The principal needs at least one of these roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The principal needs every one of these scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A policy of `auth.policies` that must allow the request.
    #[serde(default)]
    pub policy: Option<String>,
    /// Extra requirements for some methods, checked on top of the above.
    #[serde(default)]
    pub methods: BTreeMap<String, MethodRequire>,
}

/// Requirements for one method.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodRequire {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub policy: Option<String>,
}

/// A named policy: Rego in-process (`file` or `rego`) or an external OPA (`opa`).
///
/// The input document is `{principal: {id, scheme, issuer, roles, scopes}, claims, method,
/// path (normalised), params (route template parameters), headers (those listed), client_ip}`;
/// the request is allowed when `query` evaluates to `true`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A `.rego` file (Rego v1 syntax: `allow if { ... }`).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Rego source inline.
    #[serde(default)]
    pub rego: Option<String>,
    /// The rule deciding (Rego only).
    #[serde(default = "default_query")]
    pub query: String,
    /// Request headers (lowercase) copied into `input.headers`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Ask an external OPA instead.
    #[serde(default)]
    pub opa: Option<OpaConfig>,
}

/// An external OPA decision endpoint (`POST {"input": ...}` -> `{"result": true}`).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpaConfig {
    /// e.g. `http://127.0.0.1:8181/v1/data/gateway/allow`.
    pub url: String,
    /// Time OPA may take; then the request is refused (503).
    #[serde(default = "default_opa_timeout", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Decisions are cached this long per identical input (0 disables).
    #[serde(default = "default_opa_cache", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub cache_ttl: Duration,
    /// Decisions cached at most.
    #[serde(default = "default_opa_entries")]
    pub max_cache_entries: usize,
    /// PEM CA bundle for an https OPA; absent uses the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_query() -> String {
    "data.gateway.allow".into()
}
fn default_opa_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_opa_cache() -> Duration {
    Duration::from_secs(5)
}
fn default_opa_entries() -> usize {
    10_000
}

/// A compiled policy.
pub(crate) struct Policy {
    name: String,
    headers: Vec<HeaderName>,
    engine: Engine,
}

enum Engine {
    Rego(regorus::CompiledPolicy),
    Opa(Box<opa::Opa>),
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A route's compiled requirements.
#[derive(Debug)]
pub struct RouteRequire {
    base: Rule,
    methods: Vec<(Method, Rule)>,
}

#[derive(Debug, Default)]
struct Rule {
    roles: Vec<String>,
    scopes: Vec<String>,
    policy: Option<Arc<Policy>>,
}

/// Compiles every policy once per generation; errors name the policy.
pub(crate) fn build_policies(
    configs: &BTreeMap<String, PolicyConfig>,
) -> Result<BTreeMap<String, Arc<Policy>>, String> {
    let mut out = BTreeMap::new();
    for (name, c) in configs {
        let what = format!("auth.policies.{name}");
        let headers = c
            .headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("{what}.headers: bad header name `{h}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let engine = match (&c.file, &c.rego, &c.opa) {
            (Some(path), None, None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{what}: {}: {e}", path.display()))?;
                Engine::Rego(
                    compile(&path.display().to_string(), text, &c.query)
                        .map_err(|e| format!("{what}: {e}"))?,
                )
            }
            (None, Some(text), None) => Engine::Rego(
                compile(&format!("{name}.rego"), text.clone(), &c.query)
                    .map_err(|e| format!("{what}: {e}"))?,
            ),
            (None, None, Some(o)) => Engine::Opa(Box::new(
                opa::Opa::build(o).map_err(|e| format!("{what}.opa: {e}"))?,
            )),
            _ => return Err(format!("{what}: set exactly one of file, rego, opa")),
        };
        out.insert(
            name.clone(),
            Arc::new(Policy {
                name: name.clone(),
                headers,
                engine,
            }),
        );
    }
    Ok(out)
}

fn compile(path: &str, text: String, query: &str) -> Result<regorus::CompiledPolicy, String> {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(path.to_owned(), text)
        .map_err(|e| e.to_string())?;
    let rule: regorus::Rc<str> = regorus::Rc::from(query);
    engine
        .compile_with_entrypoint(&rule)
        .map_err(|e| e.to_string())
}

impl RouteRequire {
    pub(crate) fn build(
        c: &RequireConfig,
        policies: &BTreeMap<String, Arc<Policy>>,
    ) -> Result<Self, String> {
        let policy = |name: &Option<String>| -> Result<Option<Arc<Policy>>, String> {
            name.as_ref()
                .map(|n| {
                    policies
                        .get(n)
                        .cloned()
                        .ok_or_else(|| format!("policy `{n}` is not defined in auth.policies"))
                })
                .transpose()
        };
        let mut methods = Vec::new();
        for (m, r) in &c.methods {
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("require.methods: unknown method `{m}`"))?;
            methods.push((
                method,
                Rule {
                    roles: r.roles.clone(),
                    scopes: r.scopes.clone(),
                    policy: policy(&r.policy)?,
                },
            ));
        }
        Ok(Self {
            base: Rule {
                roles: c.roles.clone(),
                scopes: c.scopes.clone(),
                policy: policy(&c.policy)?,
            },
            methods,
        })
    }

    /// The authorisation stage: `Ok` to continue, 403 (or 503/500 when a policy cannot
    /// decide) otherwise.
    pub async fn authorize(&self, ctx: &RequestContext<'_>, parts: &Parts) -> Result<(), Problem> {
        let Some(principal) = ctx.principal.as_ref() else {
            return Err(Problem::new(StatusCode::UNAUTHORIZED, "auth_missing"));
        };
        let rules = std::iter::once(&self.base).chain(
            self.methods
                .iter()
                .filter(|(m, _)| *m == parts.method)
                .map(|(_, r)| r),
        );
        for rule in rules {
            if !rule.roles.is_empty() && !rule.roles.iter().any(|r| principal.roles.contains(r)) {
                return Err(deny(
                    ctx,
                    principal,
                    "role",
                    format!("one of roles {:?} required", rule.roles),
                    None,
                ));
            }
            if let Some(missing) = rule.scopes.iter().find(|s| !principal.scopes.contains(s)) {
                // RFC 6750 section 3.1: tell a bearer client which scope it lacks.
                let challenge = matches!(principal.scheme, "jwt" | "introspection")
                    .then(|| {
                        HeaderValue::from_str(&format!(
                            "Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"{}\"",
                            rule.scopes.join(" ")
                        ))
                        .ok()
                    })
                    .flatten();
                return Err(deny(
                    ctx,
                    principal,
                    "scope",
                    format!("scope `{missing}` required"),
                    challenge,
                ));
            }
            if let Some(policy) = &rule.policy {
                policy.check(ctx, parts, principal).await?;
            }
        }
        tracing::debug!(request_id = ctx.request_id, route = %ctx.route.name, principal = %principal.id, "authorised");
        Ok(())
    }
}

fn deny(
    ctx: &RequestContext<'_>,
    principal: &Principal,
    rule: &str,
    reason: String,
    challenge: Option<HeaderValue>,
) -> Problem {
    tracing::info!(
        request_id = ctx.request_id,
        route = %ctx.route.name,
        client = %ctx.client_ip,
        principal = %principal.id,
        scheme = principal.scheme,
        rule,
        reason = %reason,
        "authorisation denied"
    );
    let mut p = Problem::new(StatusCode::FORBIDDEN, "authz_denied")
        .detail(reason.clone())
        .evidence(Evidence {
            stage: "authz",
            rule_ids: vec![rule.to_owned()],
            message: reason,
            ..Evidence::default()
        });
    if let Some(c) = challenge {
        p = p.header(header::WWW_AUTHENTICATE, c);
    }
    p
}

impl Policy {
    async fn check(
        &self,
        ctx: &RequestContext<'_>,
        parts: &Parts,
        principal: &Principal,
    ) -> Result<(), Problem> {
        let input = self.input(ctx, parts, principal);
        let decision = match &self.engine {
            Engine::Rego(compiled) => compiled
                .eval_with_input(regorus::Value::from(input))
                .map(|v| v == regorus::Value::from(true))
                .map_err(|e| {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "authz_policy_error",
                        e.to_string(),
                    )
                }),
            Engine::Opa(opa) => opa
                .decide(input)
                .await
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, "authz_unavailable", e)),
        };
        match decision {
            Ok(true) => Ok(()),
            Ok(false) => Err(deny(
                ctx,
                principal,
                &format!("policy:{}", self.name),
                format!("policy `{}` denied the request", self.name),
                None,
            )),
            Err((status, code, error)) => {
                tracing::warn!(request_id = ctx.request_id, policy = %self.name, %error, "policy could not decide: refusing (fail closed)");
                Err(Problem::new(status, code).detail("the authorisation policy could not decide"))
            }
        }
    }

    fn input(&self, ctx: &RequestContext<'_>, parts: &Parts, principal: &Principal) -> Value {
        let params: Map<String, Value> = ctx
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .filter_map(|h| {
                let v = parts.headers.get(h)?.to_str().ok()?;
                Some((h.as_str().to_owned(), Value::String(v.to_owned())))
            })
            .collect();
        serde_json::json!({
            "principal": {
                "id": principal.id,
                "scheme": principal.scheme,
                "issuer": principal.issuer,
                "roles": principal.roles,
                "scopes": principal.scopes,
            },
            "claims": principal.claims,
            "method": parts.method.as_str(),
            "path": ctx.path,
            "params": params,
            "headers": headers,
            "client_ip": ctx.client_ip.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rego_decides_on_params_and_claims() {
        let policy = compile(
            "t.rego",
            r#"package gateway
import rego.v1
default allow := false
allow if {
    input.params.id == input.claims.account
    input.method == "GET"
}"#
            .into(),
            "data.gateway.allow",
        )
        .expect("compiles");
        let eval = |id: &str, method: &str| {
            policy
                .eval_with_input(regorus::Value::from(serde_json::json!({
                    "params": {"id": id}, "claims": {"account": "42"}, "method": method
                })))
                .expect("evaluates")
                == regorus::Value::from(true)
        };
        assert!(eval("42", "GET"));
        assert!(!eval("43", "GET"));
        assert!(!eval("42", "DELETE"));
    }

    #[test]
    fn broken_rego_is_a_config_error() {
        assert!(compile("t.rego", "package x\nallow if {".into(), "data.x.allow").is_err());
    }
}
