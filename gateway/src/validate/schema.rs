//! JSON Schema (draft 2020-12, the `jsonschema` crate) for bodies and for parameters. Failures
//! are reported as JSON pointers and rule names only: the crate's messages quote the offending
//! value, which may be a secret, so they never leave this module.

use std::collections::BTreeMap;

use serde_json::Value;

/// One failed rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// `body`, `query`, `header`, `path`.
    #[serde(rename = "in")]
    pub location: &'static str,
    /// JSON pointer into the body, or `/name` of the parameter.
    pub pointer: String,
    /// The schema keyword that failed (`type`, `maximum`, `required`, ...).
    pub rule: String,
}

/// At most this many violations are reported per request: enough to fix a request, too few to
/// turn the gateway into a schema oracle or a large response.
pub const MAX_VIOLATIONS: usize = 10;

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Compiles a draft 2020-12 schema; formats are checked (`uuid`, `date-time`, `email`, ...).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            // Patterns without lookaround run on the linear `regex` engine; the rest may
            // backtrack only this far on client input (ReDoS).
            .with_pattern_options(
                jsonschema::PatternOptions::fancy_regex().backtrack_limit(100_000),
            )
            .build(schema)
            .map_err(|e| format!("invalid JSON Schema: {}", e.masked()))?;
        Ok(Self { validator })
    }

    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// Adds the failures of `instance` to `out` (up to [`MAX_VIOLATIONS`]).
    pub fn check(&self, location: &'static str, instance: &Value, out: &mut Vec<Violation>) {
        for e in self.validator.iter_errors(instance) {
            if out.len() >= MAX_VIOLATIONS {
                return;
            }
            let mut pointer = e.instance_path().to_string();
            // A missing property is named by the schema, not the client: point at it.
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                && let Some(name) = property.as_str()
            {
                pointer.push('/');
                pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
            }
            out.push(Violation {
                location,
                pointer,
                rule: e.kind().keyword().to_owned(),
            });
        }
    }
}

/// A schema over request parameters (query, headers, path) seen as one object whose properties
/// are the parameters. Parameters arrive as strings: each is converted to the type its property
/// schema declares before validation, and a parameter given more than once becomes an array
/// (so `?limit=1&limit=2` fails `type: integer` instead of one value silently winning).
#[derive(Debug)]
pub struct ParamSchema {
    schema: Schema,
    types: BTreeMap<String, Types>,
    /// Header names are matched lower-case.
    fold_case: bool,
}

#[derive(Clone, Debug, Default)]
struct Types {
    scalar: Vec<String>,
    /// `type: array`: values collected into an array of `items` types.
    items: Option<Vec<String>>,
}

impl ParamSchema {
    pub fn compile(schema: &Value, fold_case: bool) -> Result<Self, String> {
        if schema.get("type").is_some_and(|t| t != "object") {
            return Err("a parameter schema is an object schema (`type: object`)".into());
        }
        let mut schema = schema.clone();
        if fold_case {
            lower_property_names(&mut schema);
        }
        let mut types = BTreeMap::new();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let prop = resolve(&schema, prop);
                let scalar = type_names(prop);
                let items = scalar.iter().any(|t| t == "array").then(|| {
                    prop.get("items")
                        .map(|i| type_names(resolve(&schema, i)))
                        .unwrap_or_default()
                });
                types.insert(name.clone(), Types { scalar, items });
            }
        }
        Ok(Self {
            schema: Schema::compile(&schema)?,
            types,
            fold_case,
        })
    }

    /// Validates parameters given as (name, raw value) pairs.
    pub fn check<'a>(
        &self,
        location: &'static str,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        out: &mut Vec<Violation>,
    ) {
        let mut grouped: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, value) in params {
            let name = if self.fold_case {
                name.to_ascii_lowercase()
            } else {
                name.to_owned()
            };
            grouped.entry(name).or_default().push(value);
        }
        let mut object = serde_json::Map::new();
        for (name, values) in grouped {
            let types = self.types.get(&name).cloned().unwrap_or_default();
            let value = match &types.items {
                Some(items) => Value::Array(
                    values
                        .iter()
                        .flat_map(|v| v.split(','))
                        .map(|v| coerce(v, items))
                        .collect(),
                ),
                None if values.len() == 1 => coerce(values[0], &types.scalar),
                None => Value::Array(values.iter().map(|v| coerce(v, &types.scalar)).collect()),
            };
            object.insert(name, value);
        }
        self.schema.check(location, &Value::Object(object), out);
    }
}

/// A `$ref` into the same document (`#/$defs/x`), one level; anything else as it is.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
        .unwrap_or(schema)
}

fn type_names(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The raw string as the first declared type it parses as; a string when none fits (the schema
/// then reports `type`).
fn coerce(raw: &str, types: &[String]) -> Value {
    if types.is_empty() || types.iter().any(|t| t == "string") {
        return Value::String(raw.to_owned());
    }
    for t in types {
        match t.as_str() {
            "integer" => {
                if let Ok(n) = raw.parse::<i64>() {
                    return Value::from(n);
                }
            }
            "number" => {
                if let Some(n) = raw
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .and_then(serde_json::Number::from_f64)
                {
                    return Value::Number(n);
                }
            }
            "boolean" => match raw {
                "true" => return Value::Bool(true),
                "false" => return Value::Bool(false),
                _ => {}
            },
            "null" if raw.is_empty() => return Value::Null,
            _ => {}
        }
    }
    Value::String(raw.to_owned())
}

fn lower_property_names(schema: &mut Value) {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        let lowered: serde_json::Map<String, Value> = std::mem::take(props)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        *props = lowered;
    }
    if let Some(req) = schema.get_mut("required").and_then(Value::as_array_mut) {
        for r in req {
            if let Some(s) = r.as_str() {
                *r = Value::String(s.to_ascii_lowercase());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body_violations(schema: &Value, instance: &Value) -> Vec<(String, String)> {
        let s = Schema::compile(schema).expect("schema");
        let mut out = Vec::new();
        s.check("body", instance, &mut out);
        out.into_iter().map(|v| (v.pointer, v.rule)).collect()
    }

    #[test]
    fn body_acceptance_and_rejection_table() {
        let pet = json!({
            "type": "object",
            "required": ["id", "name"],
            "additionalProperties": false,
            "properties": {
                "id": { "type": "integer", "minimum": 1 },
                "name": { "type": "string", "minLength": 1, "maxLength": 20 },
                "tag": { "type": "string", "enum": ["cat", "dog"] },
                "email": { "type": "string", "format": "email" },
                "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 2 },
                "owner": { "$ref": "#/$defs/owner" }
            },
            "$defs": { "owner": { "type": "object", "required": ["uid"], "properties": { "uid": { "type": "string", "pattern": "^u[0-9]+$" } } } }
        });
        let ok = [
            json!({"id": 1, "name": "rex"}),
            json!({"id": 2, "name": "tom", "tag": "cat", "tags": ["a"], "owner": {"uid": "u1"}}),
            json!({"id": 3, "name": "x", "email": "a@example.com"}),
        ];
        for doc in &ok {
            assert!(body_violations(&pet, doc).is_empty(), "{doc}");
        }
        let bad: [(Value, &str, &str); 10] = [
            (json!({"name": "rex"}), "/id", "required"),
            (json!({"id": 0, "name": "rex"}), "/id", "minimum"),
            (json!({"id": "1", "name": "rex"}), "/id", "type"),
            (json!({"id": 1, "name": ""}), "/name", "minLength"),
            (
                json!({"id": 1, "name": "rex", "tag": "cow"}),
                "/tag",
                "enum",
            ),
            (
                json!({"id": 1, "name": "rex", "x": 1}),
                "",
                "additionalProperties",
            ),
            (
                json!({"id": 1, "name": "rex", "tags": [1]}),
                "/tags/0",
                "type",
            ),
            (
                json!({"id": 1, "name": "rex", "tags": ["a", "b", "c"]}),
                "/tags",
                "maxItems",
            ),
            (
                json!({"id": 1, "name": "rex", "owner": {"uid": "x"}}),
                "/owner/uid",
                "pattern",
            ),
            (
                json!({"id": 1, "name": "rex", "email": "not-mail"}),
                "/email",
                "format",
            ),
        ];
        for (doc, pointer, rule) in bad {
            let v = body_violations(&pet, &doc);
            assert!(
                v.contains(&(pointer.to_owned(), rule.to_owned())),
                "{doc}: {v:?}"
            );
        }
        assert_eq!(
            body_violations(&pet, &json!([])),
            vec![(String::new(), "type".into())]
        );
    }

    #[test]
    fn failures_never_quote_values() {
        let s = Schema::compile(&json!({"properties": {"pw": {"maxLength": 3}}})).expect("s");
        let mut out = Vec::new();
        s.check("body", &json!({"pw": "hunter2-secret"}), &mut out);
        let text = serde_json::to_string(&out).expect("json");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("maxLength"), "{text}");
    }

    #[test]
    fn parameters_are_typed_before_validation() {
        let p = ParamSchema::compile(
            &json!({
                "type": "object",
                "required": ["limit"],
                "properties": {
                    "limit": { "type": "integer", "maximum": 100 },
                    "ratio": { "type": "number" },
                    "debug": { "type": "boolean" },
                    "tags": { "type": "array", "items": { "type": "integer" } },
                    "name": { "type": "string", "maxLength": 3 }
                }
            }),
            false,
        )
        .expect("compile");
        let run = |pairs: &[(&str, &str)]| {
            let mut out = Vec::new();
            p.check("query", pairs.iter().copied(), &mut out);
            out.into_iter()
                .map(|v| format!("{}:{}", v.pointer, v.rule))
                .collect::<Vec<_>>()
        };
        assert!(run(&[("limit", "10")]).is_empty());
        assert!(run(&[("limit", "1"), ("ratio", "0.5"), ("debug", "true")]).is_empty());
        assert!(run(&[("limit", "1"), ("tags", "1,2"), ("tags", "3")]).is_empty());
        assert!(run(&[("limit", "1"), ("name", "123")]).is_empty());
        assert_eq!(run(&[]), ["/limit:required"]);
        assert_eq!(run(&[("limit", "abc")]), ["/limit:type"]);
        assert_eq!(run(&[("limit", "101")]), ["/limit:maximum"]);
        assert_eq!(run(&[("limit", "1"), ("limit", "2")]), ["/limit:type"]);
        assert_eq!(run(&[("limit", "1"), ("debug", "yes")]), ["/debug:type"]);
        assert_eq!(run(&[("limit", "1"), ("tags", "1,x")]), ["/tags/1:type"]);
        assert_eq!(
            run(&[("limit", "1"), ("name", "1234")]),
            ["/name:maxLength"]
        );
    }

    #[test]
    fn header_names_fold_case() {
        let p = ParamSchema::compile(
            &json!({"type": "object", "required": ["X-Tenant"], "properties": {"X-Tenant": {"type": "string", "pattern": "^[a-z]+$"}}}),
            true,
        )
        .expect("compile");
        let mut out = Vec::new();
        p.check("header", [("x-tenant", "acme")], &mut out);
        assert!(out.is_empty(), "{out:?}");
        p.check("header", [("X-TENANT", "ACME")], &mut out);
        assert_eq!(out[0].pointer, "/x-tenant");
        assert_eq!(out[0].rule, "pattern");
    }

    #[test]
    fn catastrophic_patterns_do_not_hang() {
        // Nested quantifiers: linear engine, no backtracking blow-up.
        let s = Schema::compile(&json!({"type": "string", "pattern": "^(a+)+$"})).expect("s");
        let evil = format!("{}!", "a".repeat(5000));
        assert!(!s.is_valid(&json!(evil)));
        assert!(s.is_valid(&json!("aaaa")));
        // Lookaround needs backtracking: bounded, and a pathological input is refused.
        let s = Schema::compile(&json!({"type": "string", "pattern": "^(?=(a+)+b)"})).expect("s");
        assert!(s.is_valid(&json!("aab")));
        let mut out = Vec::new();
        s.check("body", &json!(format!("{}!", "a".repeat(64))), &mut out);
        assert!(
            !out.is_empty(),
            "a pattern that cannot be decided in time is a failure"
        );
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(Schema::compile(&json!({"type": 12})).is_err());
        assert!(ParamSchema::compile(&json!({"type": "string"}), false).is_err());
    }
}
