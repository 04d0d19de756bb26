//! Routes from an OpenAPI 3.0 or 3.1 document: one route per operation with its parameter and
//! body schemas and its security requirements, in the same shape a person writes in `routes`,
//! so `gateway openapi import` output and a spec named in the config behave the same.
//!
//! The spec is read as plain JSON values rather than through a typed OpenAPI crate: the crates
//! each cover one of 3.0 and 3.1, and all this needs is `servers`, `paths`, `parameters`,
//! `requestBody`, `security` and `components`. Schemas are rewritten to draft 2020-12 (3.0's
//! `nullable` and boolean `exclusiveMinimum`), `#/components/schemas/X` becomes `#/$defs/X`,
//! and each route's schema carries the components it reaches.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// `openapi:` entries of the config: routes generated from a spec at load (after `routes`).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiSource {
    /// The spec (YAML or JSON), relative to the config file.
    pub spec: PathBuf,
    /// Upstream pool the generated routes send to.
    pub upstream: String,
    /// Reject requests the spec does not declare (404/405 `openapi_undeclared`) under its base
    /// path, instead of letting later routes or nothing match them.
    #[serde(default)]
    pub strict: bool,
    /// Path prefix of the API; absent means the path of the first `servers` URL.
    #[serde(default)]
    pub base_path: Option<String>,
    /// CORS for every generated route.
    #[serde(default)]
    pub cors: Option<super::CorsConfig>,
    /// CSRF check for every generated route.
    #[serde(default)]
    pub csrf: Option<super::CsrfConfig>,
    /// Enforces the spec's security requirements: each security scheme name of the spec mapped
    /// to a credential source of the `auth:` section (`{ bearerAuth: jwt.idp, api_key:
    /// api_key.main }`). An operation's alternatives become `auth.any_of` (or `all_of` for one
    /// alternative naming several schemes) and its OAuth2/OIDC scopes `require.scopes`. Absent:
    /// the requirements are recorded on the routes but not enforced (a warning says so).
    #[serde(default)]
    pub security: BTreeMap<String, String>,
}

/// What a route must require to enforce its recorded `security`, given the scheme -> source map:
/// `None` for an operation anyone may call (no requirement, or an empty alternative `{}`).
pub fn enforce_security(
    security: &Security,
    sources: &BTreeMap<String, String>,
) -> Result<
    Option<(
        crate::auth::RouteAuthConfig,
        Option<crate::authz::RequireConfig>,
    )>,
    String,
> {
    if security.is_empty() || security.iter().any(BTreeMap::is_empty) {
        return Ok(None);
    }
    let source = |name: &str| {
        sources.get(name).cloned().ok_or_else(|| {
            format!("security scheme `{name}` has no credential source in `openapi[].security`")
        })
    };
    let scopes_of = |alt: &BTreeMap<String, SecurityScheme>| {
        let mut v: Vec<String> = alt.values().flat_map(|s| s.scopes.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let (auth, scopes) = if security.len() == 1 {
        // One alternative: every scheme in it must pass.
        let alt = &security[0];
        let names = alt
            .keys()
            .map(|n| source(n))
            .collect::<Result<Vec<_>, _>>()?;
        let auth = if names.len() == 1 {
            crate::auth::RouteAuthConfig {
                any_of: names,
                all_of: Vec::new(),
            }
        } else {
            crate::auth::RouteAuthConfig {
                any_of: Vec::new(),
                all_of: names,
            }
        };
        (auth, scopes_of(alt))
    } else {
        // Alternatives: expressible when each names one scheme and they need the same scopes
        // (a route has one scope requirement for all of its sources).
        if security.iter().any(|alt| alt.len() > 1) {
            return Err(
                "alternatives that each combine several security schemes cannot be enforced".into(),
            );
        }
        let scopes = scopes_of(&security[0]);
        if security.iter().any(|alt| scopes_of(alt) != scopes) {
            return Err("alternative security schemes that need different scopes cannot be enforced on one route".into());
        }
        let mut names = Vec::new();
        for alt in security {
            for n in alt.keys() {
                let s = source(n)?;
                if !names.contains(&s) {
                    names.push(s);
                }
            }
        }
        (
            crate::auth::RouteAuthConfig {
                any_of: names,
                all_of: Vec::new(),
            },
            scopes,
        )
    };
    let require = (!scopes.is_empty()).then(|| crate::authz::RequireConfig {
        scopes,
        ..Default::default()
    });
    Ok(Some((auth, require)))
}

/// An OpenAPI security requirement, resolved against `components.securitySchemes`. Recorded on
/// the route as data for the authentication stage; validation itself does not enforce it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityScheme {
    /// `http`, `apiKey`, `oauth2`, `openIdConnect`, `mutualTLS`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `bearer`, `basic` (type `http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// `header`, `query`, `cookie` (type `apiKey`).
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Header, query parameter or cookie name (type `apiKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scopes the operation needs (oauth2, openIdConnect).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// Alternatives (any one suffices), each a set of schemes that must all pass.
pub type Security = Vec<BTreeMap<String, SecurityScheme>>;

/// What came out of a spec.
#[derive(Debug)]
pub struct Imported {
    /// `3.0.3`, `3.1.0`.
    pub version: String,
    pub base_path: String,
    /// Route configs, in the order they must be tried.
    pub routes: Vec<Value>,
    /// What was skipped and why (cookie parameters, unsupported path shapes).
    pub notes: Vec<String>,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Reads a spec file (YAML, which includes JSON).
pub fn load(path: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: not YAML/JSON: {e}", path.display()))
}

/// Generates the route set of `spec`.
pub fn import(
    spec: &Value,
    upstream: &str,
    strict: bool,
    base_path: Option<&str>,
) -> Result<Imported, String> {
    let version = spec
        .get("openapi")
        .and_then(Value::as_str)
        .ok_or("not an OpenAPI 3 document (no `openapi` version)")?
        .to_owned();
    let v30 = if version.starts_with("3.0") {
        true
    } else if version.starts_with("3.1") {
        false
    } else {
        return Err(format!(
            "OpenAPI {version} is not supported (3.0 and 3.1 are)"
        ));
    };
    let base = base_path
        .map(str::to_owned)
        .unwrap_or_else(|| server_base(spec));
    let base = base.trim_end_matches('/').to_owned();
    if !base.is_empty() && !base.starts_with('/') {
        return Err(format!("base path `{base}` must start with /"));
    }
    let cx = Cx { spec, v30 };
    let mut notes = Vec::new();
    let mut paths: Vec<(&String, &Value)> = spec
        .get("paths")
        .and_then(Value::as_object)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    // First match wins in the router: literal segments before templated ones, so
    // `/pets/findByStatus` is not taken by `/pets/{petId}`.
    paths.sort_by_key(|(p, _)| {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| u8::from(s.contains('{')))
            .collect::<Vec<_>>()
    });
    let mut routes = Vec::new();
    for (path, item) in paths {
        let item = cx.deref(item);
        if path
            .split('/')
            .any(|s| s.contains('{') && !(s.starts_with('{') && s.ends_with('}')))
        {
            notes.push(format!(
                "{path}: skipped (a parameter must be a whole path segment here)"
            ));
            continue;
        }
        let full = format!("{base}{path}");
        let mut declared = Vec::new();
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            declared.push(method.to_ascii_uppercase());
            routes.push(cx.operation(&full, method, item, op, upstream, &mut notes)?);
        }
        if strict && !declared.is_empty() {
            routes.push(json!({
                "name": format!("undeclared {full}"),
                "match": { "path": full },
                "upstream": upstream,
                "validate": { "undeclared": { "allow": declared } },
            }));
        }
    }
    if strict {
        routes.push(json!({
            "name": if base.is_empty() { "undeclared".to_owned() } else { format!("undeclared {base}") },
            "match": { "prefix": if base.is_empty() { "/" } else { base.as_str() } },
            "upstream": upstream,
            "validate": { "undeclared": {} },
        }));
    }
    Ok(Imported {
        version,
        base_path: base,
        routes,
        notes,
    })
}

/// The path of the first server URL (`https://api.example.com/v1` -> `/v1`); variables give up.
fn server_base(spec: &Value) -> String {
    let Some(url) = spec.pointer("/servers/0/url").and_then(Value::as_str) else {
        return String::new();
    };
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    };
    if path.contains('{') {
        String::new()
    } else {
        path.to_owned()
    }
}

struct Cx<'a> {
    spec: &'a Value,
    v30: bool,
}

impl<'a> Cx<'a> {
    /// Follows local `$ref`s (`#/components/parameters/x`), a few levels at most.
    fn deref(&self, mut v: &'a Value) -> &'a Value {
        for _ in 0..8 {
            match v
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| self.spec.pointer(p))
            {
                Some(target) => v = target,
                None => break,
            }
        }
        v
    }

    fn operation(
        &self,
        path: &str,
        method: &str,
        item: &Value,
        op: &Value,
        upstream: &str,
        notes: &mut Vec<String>,
    ) -> Result<Value, String> {
        let name = op.get("operationId").and_then(Value::as_str).map_or_else(
            || format!("{} {path}", method.to_ascii_uppercase()),
            str::to_owned,
        );
        // Operation parameters override path-item ones with the same name and location.
        let mut params: BTreeMap<(String, String), &Value> = BTreeMap::new();
        for list in [item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
        {
            for p in list.as_array().into_iter().flatten() {
                let p = self.deref(p);
                let (Some(n), Some(i)) = (
                    p.get("name").and_then(Value::as_str),
                    p.get("in").and_then(Value::as_str),
                ) else {
                    continue;
                };
                params.insert((i.to_owned(), n.to_owned()), p);
            }
        }
        let mut validate = Map::new();
        for (location, key) in [("path", "path"), ("query", "query"), ("header", "headers")] {
            let mut props = Map::new();
            let mut required = Vec::new();
            for ((i, n), p) in &params {
                if i != location {
                    continue;
                }
                // OpenAPI: these header parameters are ignored (described elsewhere).
                if location == "header"
                    && ["accept", "content-type", "authorization"]
                        .contains(&n.to_ascii_lowercase().as_str())
                {
                    continue;
                }
                let schema = p
                    .get("schema")
                    .or_else(|| {
                        p.get("content")
                            .and_then(Value::as_object)
                            .and_then(|c| c.values().next())
                            .and_then(|m| m.get("schema"))
                    })
                    .cloned()
                    .unwrap_or(json!({}));
                props.insert(n.clone(), self.schema(&schema));
                if location == "path" || p.get("required").and_then(Value::as_bool) == Some(true) {
                    required.push(Value::String(n.clone()));
                }
            }
            if props.is_empty() {
                continue;
            }
            let mut obj = json!({ "type": "object", "properties": props });
            if !required.is_empty() {
                obj["required"] = Value::Array(required);
            }
            validate.insert(key.into(), self.with_defs(obj));
        }
        if params.keys().any(|(i, _)| i == "cookie") {
            notes.push(format!(
                "{} {path}: cookie parameters are not validated",
                method.to_ascii_uppercase()
            ));
        }
        if let Some(body) = op.get("requestBody").map(|b| self.deref(b)) {
            let content = body.get("content").and_then(Value::as_object);
            let types: Vec<Value> = content
                .map(|c| c.keys().map(|k| Value::String(k.clone())).collect())
                .unwrap_or_default();
            if !types.is_empty() {
                validate.insert("content_types".into(), Value::Array(types));
            }
            let json_schema = content.and_then(|c| {
                c.iter()
                    .find(|(k, _)| {
                        let k = k.to_ascii_lowercase();
                        k.starts_with("application/json") || k.ends_with("+json")
                    })
                    .and_then(|(_, m)| m.get("schema"))
            });
            if let Some(s) = json_schema {
                validate.insert("body".into(), self.with_defs(self.schema(s)));
            }
            if body.get("required").and_then(Value::as_bool) == Some(true) {
                validate.insert("body_required".into(), Value::Bool(true));
            }
        }
        let mut route = json!({
            "name": name,
            "match": { "path": path, "methods": [method.to_ascii_uppercase()] },
            "upstream": upstream,
        });
        let security = self.security(op.get("security").or_else(|| self.spec.get("security")));
        if !security.is_empty() {
            route["security"] = serde_json::to_value(security).map_err(|e| e.to_string())?;
        }
        if !validate.is_empty() {
            route["validate"] = Value::Object(validate);
        }
        Ok(route)
    }

    fn security(&self, reqs: Option<&Value>) -> Security {
        let schemes = self.spec.pointer("/components/securitySchemes");
        let mut out = Vec::new();
        for alt in reqs.and_then(Value::as_array).into_iter().flatten() {
            let Some(alt) = alt.as_object() else { continue };
            // `{}` in the list makes the operation's authentication optional.
            let mut all = BTreeMap::new();
            for (name, scopes) in alt {
                let def = schemes.and_then(|s| s.get(name)).map(|d| self.deref(d));
                let text = |k: &str| {
                    def.and_then(|d| d.get(k))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                all.insert(
                    name.clone(),
                    SecurityScheme {
                        kind: text("type").unwrap_or_else(|| "unknown".into()),
                        scheme: text("scheme").map(|s| s.to_ascii_lowercase()),
                        location: text("in"),
                        name: text("name"),
                        scopes: scopes
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect(),
                    },
                );
            }
            out.push(all);
        }
        out
    }

    /// An OpenAPI schema as draft 2020-12.
    fn schema(&self, s: &Value) -> Value {
        let Some(obj) = s.as_object() else {
            return s.clone();
        };
        let mut out = Map::new();
        for (k, v) in obj {
            let v = match k.as_str() {
                "$ref" => match v
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                {
                    Some(name) => Value::String(format!("#/$defs/{name}")),
                    None => v.clone(),
                },
                // Annotations other validators ignore; dropped to keep the output small.
                "example" | "examples" | "xml" | "externalDocs" | "discriminator" => continue,
                "properties" | "patternProperties" | "$defs" | "dependentSchemas" => Value::Object(
                    v.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(n, s)| (n.clone(), self.schema(s)))
                        .collect(),
                ),
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => Value::Array(
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| self.schema(s))
                        .collect(),
                ),
                "items"
                | "additionalProperties"
                | "not"
                | "contains"
                | "if"
                | "then"
                | "else"
                | "propertyNames"
                | "unevaluatedProperties"
                | "unevaluatedItems" => self.schema(v),
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
        if self.v30 {
            if out.remove("nullable") == Some(Value::Bool(true)) {
                match out.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = std::mem::take(t);
                        out.insert("type".into(), json!([t, "null"]));
                    }
                    Some(Value::Array(ts)) => ts.push(json!("null")),
                    _ => {}
                }
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(b)) = out.get(flag).cloned() {
                    out.remove(flag);
                    if b && let Some(n) = out.remove(bound) {
                        out.insert(flag.into(), n);
                    }
                }
            }
        }
        Value::Object(out)
    }

    /// `schema` with the components it reaches under `$defs`.
    fn with_defs(&self, mut schema: Value) -> Value {
        let components = self.spec.pointer("/components/schemas");
        let mut defs = Map::new();
        let mut todo: Vec<String> = refs(&schema).into_iter().collect();
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(c) = components.and_then(|c| c.get(&name)) {
                let converted = self.schema(c);
                todo.extend(refs(&converted));
                defs.insert(name, converted);
            }
        }
        if !defs.is_empty()
            && let Some(obj) = schema.as_object_mut()
        {
            obj.insert("$defs".into(), Value::Object(defs));
        }
        schema
    }
}

/// Names of `#/$defs/X` references anywhere in `v`.
fn refs(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(name) = m
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                {
                    out.insert(name.to_owned());
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

/// The routes as YAML for people: route keys in reading order, a header saying where they
/// came from.
pub fn to_yaml(imported: &Imported, source: &str) -> Result<String, String> {
    const ORDER: [&str; 5] = ["name", "match", "upstream", "security", "validate"];
    let mut list = Vec::new();
    for r in &imported.routes {
        let mut m = serde_yaml::Mapping::new();
        for k in ORDER {
            if let Some(v) = r.get(k) {
                let v = serde_yaml::to_value(v).map_err(|e| e.to_string())?;
                m.insert(serde_yaml::Value::String(k.into()), v);
            }
        }
        list.push(serde_yaml::Value::Mapping(m));
    }
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("routes".into(), serde_yaml::Value::Sequence(list));
    let body = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    let mut out = format!(
        "# Generated by `gateway openapi import` from {source} (OpenAPI {}), base path `{}`.\n\
         # `security` is recorded for the authentication stage; validation does not enforce it.\n",
        imported.version,
        if imported.base_path.is_empty() {
            "/"
        } else {
            &imported.base_path
        }
    );
    if let Some(last) = imported.routes.last()
        && last.pointer("/validate/undeclared").is_some()
    {
        out.push_str(&format!(
            "# strict: the last route refuses everything under `{}` the spec does not declare;\n\
             # keep routes that must stay reachable there above it.\n",
            last.pointer("/match/prefix")
                .and_then(Value::as_str)
                .unwrap_or("/")
        ));
    }
    for n in &imported.notes {
        out.push_str(&format!("# note: {n}\n"));
    }
    out.push_str(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    #[test]
    fn openapi_30_schemas_become_2020_12() {
        let s = spec(
            r##"
openapi: 3.0.3
info: { title: t, version: "1" }
paths:
  /things/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: integer, minimum: 0, exclusiveMinimum: true } }
    put:
      parameters:
        - { $ref: "#/components/parameters/Trace" }
      requestBody:
        required: true
        content:
          application/json: { schema: { $ref: "#/components/schemas/Thing" } }
      responses: { "200": { description: ok } }
components:
  parameters:
    Trace: { name: X-Trace, in: header, required: true, schema: { type: string } }
  schemas:
    Thing:
      type: object
      required: [name]
      properties:
        name: { type: string, nullable: true, example: rex }
        part: { $ref: "#/components/schemas/Part" }
    Part: { type: object, properties: { n: { type: integer } } }
    Unused: { type: string }
"##,
        );
        let out = import(&s, "up", false, None).expect("import");
        assert_eq!(out.routes.len(), 1);
        let v = &out.routes[0]["validate"];
        assert_eq!(
            v["path"]["properties"]["id"],
            json!({"type": "integer", "exclusiveMinimum": 0})
        );
        assert_eq!(v["headers"]["required"], json!(["X-Trace"]));
        assert_eq!(v["body_required"], json!(true));
        let body = &v["body"];
        assert_eq!(body["$ref"], "#/$defs/Thing");
        assert_eq!(
            body["$defs"]["Thing"]["properties"]["name"],
            json!({"type": ["string", "null"]})
        );
        assert!(body["$defs"].get("Part").is_some());
        assert!(body["$defs"].get("Unused").is_none());
        assert!(
            crate::validate::Validator::compile(
                &serde_json::from_value(v.clone()).expect("validate config")
            )
            .is_ok()
        );
    }

    #[test]
    fn literal_paths_come_before_templates_and_strict_adds_catch_alls() {
        let s = spec(
            r##"
openapi: 3.1.0
info: { title: t, version: "1" }
servers: [{ url: "https://api.example.com/v2/" }]
paths:
  /pets/{petId}: { get: { operationId: getPet, responses: {} } }
  /pets/findByStatus: { get: { operationId: findByStatus, responses: {} } }
  /pets/{petId}.json: { get: { responses: {} } }
"##,
        );
        let out = import(&s, "up", true, None).expect("import");
        let names: Vec<&str> = out
            .routes
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "findByStatus",
                "undeclared /v2/pets/findByStatus",
                "getPet",
                "undeclared /v2/pets/{petId}",
                "undeclared /v2"
            ]
        );
        assert_eq!(out.routes[0]["match"]["path"], "/v2/pets/findByStatus");
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
    }

    #[test]
    fn swagger_2_is_refused() {
        assert!(import(&spec("swagger: '2.0'"), "up", false, None).is_err());
        assert!(import(&spec("openapi: 4.0.0"), "up", false, None).is_err());
    }
}
