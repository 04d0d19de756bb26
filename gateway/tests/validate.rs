//! Request validation through the real proxy in process, in front of a real upstream: the
//! public Petstore OpenAPI 3.0 spec and a 3.1 variant enforced end to end (parameters, bodies,
//! strict mode), `gateway openapi import` output accepted by `gateway check` and enforced,
//! `gateway openapi diff` on a crafted access log, CORS preflights and CSRF.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use gateway::{config::Config, proxy::server::Proxy};
use support::backend::Backend;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// The public Petstore example of OpenAPI 3.0 (OAI/OpenAPI-Specification, examples/v3.0).
const PETSTORE_30: &str = r##"openapi: "3.0.0"
info:
  version: 1.0.0
  title: Swagger Petstore
  license:
    name: MIT
servers:
  - url: http://petstore.swagger.io/v1
paths:
  /pets:
    get:
      summary: List all pets
      operationId: listPets
      tags:
        - pets
      parameters:
        - name: limit
          in: query
          description: How many items to return at one time (max 100)
          required: false
          schema:
            type: integer
            maximum: 100
            format: int32
      responses:
        '200':
          description: A paged array of pets
          headers:
            x-next:
              description: A link to the next page of responses
              schema:
                type: string
          content:
            application/json:
              schema:
                $ref: "#/components/schemas/Pets"
        default:
          description: unexpected error
          content:
            application/json:
              schema:
                $ref: "#/components/schemas/Error"
    post:
      summary: Create a pet
      operationId: createPets
      tags:
        - pets
      requestBody:
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/Pet'
        required: true
      responses:
        '201':
          description: Null response
        default:
          description: unexpected error
          content:
            application/json:
              schema:
                $ref: "#/components/schemas/Error"
  /pets/{petId}:
    get:
      summary: Info for a specific pet
      operationId: showPetById
      tags:
        - pets
      parameters:
        - name: petId
          in: path
          required: true
          description: The id of the pet to retrieve
          schema:
            type: string
      responses:
        '200':
          description: Expected response to a valid request
          content:
            application/json:
              schema:
                $ref: "#/components/schemas/Pet"
        default:
          description: unexpected error
          content:
            application/json:
              schema:
                $ref: "#/components/schemas/Error"
components:
  schemas:
    Pet:
      type: object
      required:
        - id
        - name
      properties:
        id:
          type: integer
          format: int64
        name:
          type: string
        tag:
          type: string
    Pets:
      type: array
      maxItems: 100
      items:
        $ref: "#/components/schemas/Pet"
    Error:
      type: object
      required:
        - code
        - message
      properties:
        code:
          type: integer
          format: int32
        message:
          type: string
"##;

/// The same API in OpenAPI 3.1: numeric `exclusiveMinimum`, `type` lists, a header parameter
/// and security requirements.
const PETSTORE_31: &str = r##"openapi: 3.1.0
info: { version: 1.0.0, title: Swagger Petstore, license: { name: MIT, identifier: MIT } }
servers:
  - url: https://petstore.example.com/v2
security:
  - api_key: []
paths:
  /pets:
    get:
      operationId: listPets
      parameters:
        - { name: limit, in: query, schema: { type: integer, maximum: 100 } }
        - { name: X-Tenant, in: header, required: true, schema: { type: string, pattern: "^[a-z]+$" } }
      responses: { '200': { description: ok } }
    post:
      operationId: createPets
      security:
        - petstore_auth: ["write:pets"]
      requestBody:
        required: true
        content:
          application/json: { schema: { $ref: '#/components/schemas/Pet' } }
      responses: { '201': { description: created } }
  /pets/{petId}:
    get:
      operationId: showPetById
      parameters:
        - { name: petId, in: path, required: true, schema: { type: integer, exclusiveMinimum: 0 } }
      responses: { '200': { description: ok } }
components:
  schemas:
    Pet:
      type: object
      required: [id, name]
      additionalProperties: false
      properties:
        id: { type: integer, format: int64 }
        name: { type: string, minLength: 1 }
        tag: { type: [string, "null"] }
  securitySchemes:
    api_key: { type: apiKey, name: X-Api-Key, in: header }
    petstore_auth:
      type: oauth2
      flows:
        implicit:
          authorizationUrl: https://petstore.example.com/oauth/authorize
          scopes: { "write:pets": modify pets, "read:pets": read pets }
"##;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gateway-validate-{tag}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 request with `headers` (each `Name: value`) and an optional body, read to EOF.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[&str],
    body: Option<&str>,
) -> Raw {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Raw {
        status,
        head: head.to_owned(),
        body,
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

async fn start_file(path: &Path) -> Proxy {
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    Proxy::start(&config).await.expect("proxy starts")
}

fn base_yaml(backend: &Backend) -> String {
    format!(
        "listeners: [{{ name: main, address: \"127.0.0.1:0\" }}]\naccess_log: off\nupstreams:\n  pets: {{ endpoints: [\"{}\"] }}\n",
        backend.url()
    )
}

#[tokio::test]
async fn petstore_30_from_the_config_is_enforced_in_strict_mode() {
    let backend = Backend::start("pets").await;
    let dir = TempDir::new("p30");
    dir.write("petstore.yaml", PETSTORE_30);
    let cfg = dir.write(
        "gateway.yaml",
        &format!(
            "{}openapi:\n  - {{ spec: petstore.yaml, upstream: pets, strict: true }}\n",
            base_yaml(&backend)
        ),
    );
    let proxy = start_file(&cfg).await;
    let addr = proxy.addr("main").expect("listener");
    let json = ["Content-Type: application/json"];

    // Declared and valid: through to the upstream.
    let r = send(addr, "GET", "/v1/pets?limit=10", &[], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/v1/pets?limit=10");
    let r = send(addr, "GET", "/v1/pets/rex", &[], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        addr,
        "POST",
        "/v1/pets",
        &json,
        Some(r#"{"id": 7, "name": "rex"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["body_len"],
        24,
        "the validated body reaches the upstream whole"
    );
    let hits = backend.hits();

    // A query parameter over its schema's maximum: 400 naming the pointer and the rule.
    let r = send(addr, "GET", "/v1/pets?limit=1000", &[], None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "validation_failed"),
        "{r:?}"
    );
    let j = r.json();
    assert_eq!(
        j["errors"],
        serde_json::json!([{ "in": "query", "pointer": "/limit", "rule": "maximum" }])
    );
    assert!(
        j["detail"]
            .as_str()
            .is_some_and(|d| d.contains("query /limit: maximum"))
    );
    assert!(
        !r.body.contains("1000"),
        "the value is never echoed: {}",
        r.body
    );
    let r = send(addr, "GET", "/v1/pets?limit=ten", &[], None).await;
    assert_eq!(r.json()["errors"][0]["rule"], "type", "{r:?}");

    // Bodies: schema, well-formedness, depth, media type, presence.
    let r = send(
        addr,
        "POST",
        "/v1/pets",
        &json,
        Some(r#"{"id": "hunter2-secret", "tag": 5}"#),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let errors = r.json()["errors"].clone();
    for (pointer, rule) in [("/id", "type"), ("/name", "required"), ("/tag", "type")] {
        assert!(
            errors.as_array().is_some_and(|e| e
                .iter()
                .any(|x| x["pointer"] == pointer && x["rule"] == rule)),
            "{pointer} {rule}: {errors}"
        );
    }
    assert!(!r.body.contains("hunter2"), "{}", r.body);
    let r = send(
        addr,
        "POST",
        "/v1/pets",
        &json,
        Some(r#"{"id": 1, "name": "#),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "json_malformed"),
        "{r:?}"
    );
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let r = send(addr, "POST", "/v1/pets", &json, Some(&deep)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "json_too_deep"),
        "{r:?}"
    );
    let r = send(
        addr,
        "POST",
        "/v1/pets",
        &["Content-Type: text/plain"],
        Some("id=1"),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (415, "content_type_unsupported"),
        "{r:?}"
    );
    let r = send(addr, "POST", "/v1/pets", &json, Some("")).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["errors"][0]["rule"], "required");

    // Strict: undeclared paths and methods never reach the upstream.
    let r = send(addr, "GET", "/v1/admin/users", &[], None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "openapi_undeclared"),
        "{r:?}"
    );
    let r = send(addr, "DELETE", "/v1/pets/rex", &[], None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (405, "openapi_undeclared"),
        "{r:?}"
    );
    assert_eq!(r.header("allow").as_deref(), Some("GET"));
    let r = send(addr, "PUT", "/v1/pets", &json, Some("{}")).await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST"));
    assert_eq!(
        backend.hits(),
        hits,
        "no rejected request reached the upstream"
    );
    // Outside the spec's base path, strict mode says nothing: no route.
    let r = send(addr, "GET", "/other", &[], None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "route_not_found"),
        "{r:?}"
    );
}

#[tokio::test]
async fn petstore_31_parameters_and_security_are_enforced_or_recorded() {
    let backend = Backend::start("pets").await;
    let dir = TempDir::new("p31");
    dir.write("petstore.yaml", PETSTORE_31);
    let cfg = dir.write(
        "gateway.yaml",
        &format!(
            "{}openapi:\n  - {{ spec: petstore.yaml, upstream: pets, cors: {{ origins: [https://app.example.com], headers: [X-Tenant] }} }}\n",
            base_yaml(&backend)
        ),
    );
    let config = Config::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    // Security requirements travel on the routes as data for the authentication stage.
    let create = config
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("createPets"))
        .expect("createPets route");
    assert_eq!(create.security.len(), 1);
    let oauth = &create.security[0]["petstore_auth"];
    assert_eq!(
        (oauth.kind.as_str(), oauth.scopes.clone()),
        ("oauth2", vec!["write:pets".to_owned()])
    );
    let list = config
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("listPets"))
        .expect("listPets route");
    let key = &list.security[0]["api_key"];
    assert_eq!(
        (
            key.kind.as_str(),
            key.location.as_deref(),
            key.name.as_deref()
        ),
        ("apiKey", Some("header"), Some("X-Api-Key"))
    );

    let proxy = Proxy::start(&config).await.expect("proxy");
    let addr = proxy.addr("main").expect("listener");
    let r = send(addr, "GET", "/v2/pets/5", &[], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    for (target, rule) in [("/v2/pets/0", "exclusiveMinimum"), ("/v2/pets/abc", "type")] {
        let r = send(addr, "GET", target, &[], None).await;
        assert_eq!(r.status, 400, "{target}: {r:?}");
        assert_eq!(
            r.json()["errors"],
            serde_json::json!([{ "in": "path", "pointer": "/petId", "rule": rule }]),
            "{target}"
        );
    }
    // Header parameters: required, and by pattern.
    let r = send(addr, "GET", "/v2/pets", &["X-Tenant: acme"], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(addr, "GET", "/v2/pets", &[], None).await;
    assert_eq!(r.json()["errors"][0]["pointer"], "/x-tenant", "{r:?}");
    let r = send(addr, "GET", "/v2/pets", &["X-Tenant: ACME"], None).await;
    assert_eq!(r.json()["errors"][0]["rule"], "pattern", "{r:?}");
    // 3.1 types: `tag` may be null; unknown properties are refused by this spec.
    let json = ["Content-Type: application/json"];
    let r = send(
        addr,
        "POST",
        "/v2/pets",
        &json,
        Some(r#"{"id":1,"name":"a","tag":null}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = send(
        addr,
        "POST",
        "/v2/pets",
        &json,
        Some(r#"{"id":1,"name":"a","admin":true}"#),
    )
    .await;
    assert_eq!(
        r.json()["errors"][0]["rule"],
        "additionalProperties",
        "{r:?}"
    );
    // CORS from the `openapi` entry applies to every generated route.
    let r = send(
        addr,
        "OPTIONS",
        "/v2/pets",
        &[
            "Origin: https://app.example.com",
            "Access-Control-Request-Method: GET",
            "Access-Control-Request-Headers: x-tenant",
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    // Not strict: an undeclared method falls through to the router's own 405.
    let r = send(addr, "DELETE", "/v2/pets/5", &[], None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (405, "method_not_allowed"),
        "{r:?}"
    );
}

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .output()
        .expect("gateway runs")
}

#[tokio::test]
async fn imported_routes_pass_check_and_are_enforced() {
    let backend = Backend::start("pets").await;
    let dir = TempDir::new("import");
    let spec = dir.write("petstore.yaml", PETSTORE_30);
    let out = gateway(&[
        "openapi",
        "import",
        spec.to_str().expect("utf-8"),
        "--upstream",
        "pets",
        "--strict",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes = String::from_utf8(out.stdout).expect("utf-8");
    assert!(routes.contains("name: listPets"), "{routes}");
    let cfg = dir.write("gateway.yaml", &format!("{}{routes}", base_yaml(&backend)));
    let check = gateway(&["check", cfg.to_str().expect("utf-8")]);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // A broken edit of the output is caught by `check` with its line.
    let broken = routes.replace("maximum: 100", "maximum: lots");
    let bad = dir.write("bad.yaml", &format!("{}{broken}", base_yaml(&backend)));
    let check = gateway(&["check", bad.to_str().expect("utf-8")]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("bad.yaml:"));

    let proxy = start_file(&cfg).await;
    let addr = proxy.addr("main").expect("listener");
    assert_eq!(
        send(addr, "GET", "/v1/pets?limit=5", &[], None)
            .await
            .status,
        200
    );
    let r = send(addr, "GET", "/v1/pets?limit=101", &[], None).await;
    assert_eq!(r.json()["errors"][0]["pointer"], "/limit", "{r:?}");
    let r = send(addr, "GET", "/v1/secret", &[], None).await;
    assert_eq!(r.code(), "openapi_undeclared");
}

#[test]
fn diff_shows_what_the_spec_would_reject_from_the_access_log() {
    let dir = TempDir::new("diff");
    let spec = dir.write("petstore.yaml", PETSTORE_30);
    let line = |method: &str, path: &str, query: Option<&str>| {
        serde_json::json!({
            "@timestamp": "2026-01-01T00:00:00.000Z",
            "http": { "request": { "id": "r", "method": method }, "response": { "status_code": 200 } },
            "url": { "path": path, "query": query },
            "gateway": { "route": "public", "reason": null },
        })
        .to_string()
    };
    let log = [
        line("GET", "/v1/pets", Some("limit=10")),
        line("GET", "/v1/pets", Some("limit=500")),
        line("GET", "/v1/pets", Some("limit=500")),
        line("GET", "/v1/pets/1", None),
        line("DELETE", "/v1/pets/1", None),
        line("GET", "/v1/internal/debug", None),
        line("GET", "/healthz", None),
        "not json".to_owned(),
    ]
    .join("\n");
    let log = dir.write("access.log", &log);
    let out = gateway(&[
        "openapi",
        "diff",
        spec.to_str().expect("utf-8"),
        log.to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["requests"], 7, "{j}");
    assert_eq!(j["rejected"], 4, "{j}");
    assert_eq!(j["outside_base_path"], 1, "{j}");
    assert_eq!(j["unreadable_lines"], 1, "{j}");
    let findings = j["findings"].as_array().expect("findings");
    let has = |status: u64, code: &str, target: &str, count: u64| {
        findings.iter().any(|f| {
            f["status"] == status
                && f["code"] == code
                && f["target"] == target
                && f["count"] == count
        })
    };
    assert!(has(400, "validation_failed", "listPets", 2), "{j}");
    assert!(has(405, "openapi_undeclared", "/v1/pets/1", 1), "{j}");
    assert!(
        has(404, "openapi_undeclared", "/v1/internal/debug", 1),
        "{j}"
    );
    // The table for people says the same.
    let out = gateway(&[
        "openapi",
        "diff",
        spec.to_str().expect("utf-8"),
        log.to_str().expect("utf-8"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("7 requests read: 4 would be rejected"),
        "{text}"
    );
    assert!(text.contains("query /limit: maximum"), "{text}");
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_gateway() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("cors");
    let cfg = dir.write(
        "gateway.yaml",
        &format!(
            r#"{}routes:
  - name: app
    match: {{ prefix: /api, methods: [GET, PUT] }}
    upstream: pets
    cors:
      origins: [https://app.example.com, "https://*.example.org"]
      methods: [GET, PUT]
      headers: [Content-Type, X-Api-Key]
      expose_headers: [X-Request-Id]
      credentials: true
      max_age: 10m
    validate:
      query: {{ type: object, properties: {{ n: {{ type: integer }} }} }}
"#,
            base_yaml(&backend)
        ),
    );
    let proxy = start_file(&cfg).await;
    let addr = proxy.addr("main").expect("listener");
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| async move {
        let mut h = vec![
            format!("Origin: {origin}"),
            format!("Access-Control-Request-Method: {method}"),
        ];
        if !headers.is_empty() {
            h.push(format!("Access-Control-Request-Headers: {headers}"));
        }
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        send(addr, "OPTIONS", "/api/items", &h, None).await
    };
    // (origin, method, headers, status, code)
    let matrix = [
        (
            "https://app.example.com",
            "PUT",
            "content-type,x-api-key",
            204,
            "",
        ),
        ("https://shop.example.org", "GET", "", 204, ""),
        (
            "https://evil.example.net",
            "GET",
            "",
            403,
            "cors_origin_denied",
        ),
        (
            "https://app.example.com.evil.net",
            "GET",
            "",
            403,
            "cors_origin_denied",
        ),
        (
            "https://app.example.com",
            "DELETE",
            "",
            403,
            "cors_preflight_denied",
        ),
        (
            "https://app.example.com",
            "GET",
            "x-admin",
            403,
            "cors_preflight_denied",
        ),
    ];
    for (origin, method, headers, status, code) in matrix {
        let r = preflight(origin, method, headers).await;
        assert_eq!(r.status, status, "{origin} {method} {headers}: {r:?}");
        if status == 204 {
            assert_eq!(
                r.header("access-control-allow-origin").as_deref(),
                Some(origin)
            );
            assert_eq!(
                r.header("access-control-allow-credentials").as_deref(),
                Some("true")
            );
            assert_eq!(
                r.header("access-control-allow-methods").as_deref(),
                Some("GET, PUT")
            );
            assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
        } else {
            assert_eq!(r.code(), code);
            assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
        }
    }
    assert_eq!(backend.hits(), 0, "preflights never reach the upstream");

    // Actual requests: allowed origins get the headers, others none (and still the answer).
    let r = send(
        addr,
        "GET",
        "/api/items",
        &["Origin: https://app.example.com"],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-expose-headers").as_deref(),
        Some("X-Request-Id")
    );
    assert_eq!(r.header("vary").as_deref(), Some("Origin"));
    let r = send(
        addr,
        "GET",
        "/api/items",
        &["Origin: https://evil.example.net"],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
    assert_eq!(
        r.header("vary").as_deref(),
        Some("Origin"),
        "caches key on Origin"
    );
    // A refusal still tells an allowed browser app why.
    let r = send(
        addr,
        "GET",
        "/api/items?n=x",
        &["Origin: https://app.example.com"],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let r = send(
        addr,
        "GET",
        "/api/items?n=x",
        &["Origin: https://evil.example.net"],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.header("access-control-allow-origin").is_none(), "{r:?}");
    // An OPTIONS that is no preflight on a route without OPTIONS: 405.
    let r = send(addr, "OPTIONS", "/api/items", &[], None).await;
    assert_eq!(r.status, 405, "{r:?}");
}

#[tokio::test]
async fn csrf_double_submit_and_origin_checks() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("csrf");
    let cfg = dir.write(
        "gateway.yaml",
        &format!(
            r#"{}routes:
  - name: token
    match: {{ prefix: /token }}
    upstream: pets
    csrf: {{ mode: double_submit, cookie: csrf, header: X-CSRF-Token }}
  - name: origin
    match: {{ prefix: /origin }}
    upstream: pets
    csrf: {{ mode: origin, origins: [https://app.example.com] }}
"#,
            base_yaml(&backend)
        ),
    );
    let proxy = start_file(&cfg).await;
    let addr = proxy.addr("main").expect("listener");
    let post = |target: &'static str, headers: Vec<&'static str>| async move {
        send(addr, "POST", target, &headers, Some("")).await
    };
    let cases = [
        (
            "/token",
            vec!["Cookie: sid=1; csrf=abc123", "X-CSRF-Token: abc123"],
            200,
        ),
        ("/token", vec!["Cookie: sid=1; csrf=abc123"], 403),
        (
            "/token",
            vec!["Cookie: sid=1; csrf=abc123", "X-CSRF-Token: abc124"],
            403,
        ),
        ("/token", vec!["Cookie: sid=1", "X-CSRF-Token: abc123"], 403),
        (
            "/origin",
            vec!["Cookie: sid=1", "Origin: https://app.example.com"],
            200,
        ),
        (
            "/origin",
            vec!["Cookie: sid=1", "Referer: https://app.example.com/form"],
            200,
        ),
        (
            "/origin",
            vec!["Cookie: sid=1", "Origin: https://evil.example"],
            403,
        ),
        ("/origin", vec!["Cookie: sid=1"], 403),
        // No cookie, no ambient credential to forge: not judged.
        ("/origin", vec!["Origin: https://evil.example"], 200),
    ];
    for (target, headers, status) in cases {
        let r = post(target, headers.clone()).await;
        assert_eq!(r.status, status, "{target} {headers:?}: {r:?}");
        if status == 403 {
            assert_eq!(r.code(), "csrf_failed");
        }
    }
    let r = send(addr, "GET", "/token", &["Cookie: csrf=abc"], None).await;
    assert_eq!(r.status, 200, "safe methods are not judged");
}

#[tokio::test]
async fn route_rules_without_a_spec() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("rules");
    let cfg = dir.write(
        "gateway.yaml",
        &format!(
            r#"{}routes:
  - name: upload
    match: {{ prefix: /upload }}
    upstream: pets
    validate: {{ content_types: [application/octet-stream, "image/*"], max_body: 1KiB }}
  - name: doc
    match: {{ prefix: /doc }}
    upstream: pets
    validate:
      content_types: [application/json, "application/*+json"]
      json: {{ max_depth: 3, max_bytes: 64 }}
      query:
        type: object
        additionalProperties: false
        properties: {{ page: {{ type: integer, minimum: 1 }} }}
  - name: schema-only
    match: {{ prefix: /schema-only }}
    upstream: pets
    validate: {{ body: {{ type: object, required: [a] }} }}
"#,
            base_yaml(&backend)
        ),
    );
    let proxy = start_file(&cfg).await;
    let addr = proxy.addr("main").expect("listener");
    let big = "x".repeat(2048);
    let small = "x".repeat(100);
    let bin = ["Content-Type: application/octet-stream"];
    assert_eq!(
        send(addr, "POST", "/upload", &bin, Some(&small))
            .await
            .status,
        200
    );
    assert_eq!(
        send(
            addr,
            "POST",
            "/upload",
            &["Content-Type: image/png"],
            Some(&small)
        )
        .await
        .status,
        200
    );
    let r = send(addr, "POST", "/upload", &bin, Some(&big)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "body_too_large"),
        "{r:?}"
    );
    let r = send(
        addr,
        "POST",
        "/upload",
        &["Content-Type: text/html"],
        Some(&small),
    )
    .await;
    assert_eq!(r.status, 415, "{r:?}");
    assert_eq!(
        send(addr, "GET", "/upload", &[], None).await.status,
        200,
        "no body, no type needed"
    );

    let pj = ["Content-Type: application/merge-patch+json"];
    assert_eq!(
        send(addr, "POST", "/doc?page=2", &pj, Some(r#"{"a":[{"b":1}]}"#))
            .await
            .status,
        200
    );
    let r = send(addr, "POST", "/doc", &pj, Some(r#"{"a":[{"b":[1]}]}"#)).await;
    assert_eq!(r.code(), "json_too_deep", "{r:?}");
    let r = send(
        addr,
        "POST",
        "/doc",
        &pj,
        Some(&format!(r#"{{"a":"{small}"}}"#)),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (413, "json_too_large"),
        "{r:?}"
    );
    let r = send(addr, "GET", "/doc?page=0&debug=1", &[], None).await;
    let errors = r.json()["errors"].clone();
    assert_eq!(r.status, 400);
    assert!(
        errors.to_string().contains("minimum")
            && errors.to_string().contains("additionalProperties"),
        "{errors}"
    );
    // A schema without `content_types` accepts JSON only: relabelling cannot skip the schema.
    let r = send(
        addr,
        "POST",
        "/schema-only",
        &["Content-Type: text/plain"],
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 415, "{r:?}");
    let r = send(addr, "POST", "/schema-only", &[], Some("{}")).await;
    assert_eq!(r.status, 415, "{r:?}");
    let r = send(
        addr,
        "POST",
        "/schema-only",
        &["Content-Type: application/json"],
        Some("{}"),
    )
    .await;
    assert_eq!(r.json()["errors"][0]["pointer"], "/a", "{r:?}");
}

#[test]
fn a_broken_spec_reference_is_a_config_error_with_its_line() {
    let dir = TempDir::new("badspec");
    dir.write("swagger.yaml", "swagger: '2.0'\n");
    for (spec, want) in [
        ("missing.yaml", "cannot read"),
        ("swagger.yaml", "not an OpenAPI 3"),
    ] {
        let cfg = dir.write(
            "gateway.yaml",
            &format!("upstreams:\n  pets: {{ endpoints: [\"http://127.0.0.1:9\"] }}\nopenapi:\n  - {{ spec: {spec}, upstream: pets }}\n"),
        );
        let e = Config::load(&cfg).expect_err("refused");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains(want), "{e}");
    }
}

#[tokio::test]
async fn a_reload_rereads_the_spec() {
    let backend = Backend::start("pets").await;
    let dir = TempDir::new("reload");
    dir.write("petstore.yaml", PETSTORE_30);
    let cfg = dir.write(
        "gateway.yaml",
        &format!(
            "{}openapi:\n  - {{ spec: petstore.yaml, upstream: pets }}\n",
            base_yaml(&backend)
        ),
    );
    let proxy = start_file(&cfg).await;
    let addr = proxy.addr("main").expect("listener");
    assert_eq!(
        send(addr, "GET", "/v1/pets?limit=50", &[], None)
            .await
            .status,
        200
    );
    dir.write(
        "petstore.yaml",
        &PETSTORE_30.replace("maximum: 100", "maximum: 20"),
    );
    let config = Config::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    proxy.reload(&config).expect("reload");
    let r = send(addr, "GET", "/v1/pets?limit=50", &[], None).await;
    assert_eq!(r.status, 400, "{r:?}");
    // A spec broken on disk is refused by the load; the running rules stay.
    dir.write("petstore.yaml", "openapi: [");
    assert!(Config::load(&cfg).is_err());
    assert_eq!(
        send(addr, "GET", "/v1/pets?limit=10", &[], None)
            .await
            .status,
        200
    );
}

/// Hex SHA-256, the form API keys are configured in.
fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn petstore_security_requirements_are_enforced_through_auth_sources() {
    let backend = Backend::start("pets").await;
    let dir = TempDir::new("p31sec");
    dir.write("petstore.yaml", PETSTORE_31);
    let (reader, writer, nowrite) = (
        "reader-7c1e0d4f9a2b8c3d",
        "writer-5a6b7c8d9e0f1a2b",
        "nowrite-0f9e8d7c6b5a4f3e",
    );
    let cfg = dir.write(
        "gateway.yaml",
        &format!(
            "{}auth:\n  api_keys:\n    main: {{ keys: [{{ id: reader, sha256: \"{}\" }}] }}\n    writers: {{ keys: [{{ id: writer, sha256: \"{}\", scopes: [\"write:pets\"] }}, {{ id: nowrite, sha256: \"{}\" }}] }}\nopenapi:\n  - {{ spec: petstore.yaml, upstream: pets, security: {{ api_key: api_key.main, petstore_auth: api_key.writers }} }}\n",
            base_yaml(&backend),
            sha256_hex(reader),
            sha256_hex(writer),
            sha256_hex(nowrite),
        ),
    );
    let proxy = start_file(&cfg).await;
    let addr = proxy.addr("main").expect("listener");
    let tenant = "X-Tenant: acme";

    // The spec's global `api_key` requirement: no key 401, the reader's key passes.
    let r = send(addr, "GET", "/v2/pets", &[tenant], None).await;
    assert_eq!(r.status, 401, "{r:?}");
    let key = format!("X-Api-Key: {reader}");
    let r = send(addr, "GET", "/v2/pets", &[tenant, &key], None).await;
    assert_eq!(r.status, 200, "{r:?}");

    // createPets needs petstore_auth with scope write:pets: the reader's key is not a source
    // of it (401), a writer key without the scope is refused (403), the writer passes.
    let json = "Content-Type: application/json";
    let pet = Some(r#"{"id": 1, "name": "rex"}"#);
    let r = send(addr, "POST", "/v2/pets", &[json, &key], pet).await;
    assert_eq!(r.status, 401, "{r:?}");
    let key = format!("X-Api-Key: {nowrite}");
    let r = send(addr, "POST", "/v2/pets", &[json, &key], pet).await;
    assert_eq!(r.status, 403, "{r:?}");
    let key = format!("X-Api-Key: {writer}");
    let r = send(addr, "POST", "/v2/pets", &[json, &key], pet).await;
    assert_eq!(r.status, 200, "{r:?}");

    // A scheme the map does not name is a config error naming the operation.
    let bad = dir.write(
        "bad.yaml",
        &format!(
            "{}auth:\n  api_keys:\n    main: {{ keys: [{{ id: reader, sha256: \"{}\" }}] }}\nopenapi:\n  - {{ spec: petstore.yaml, upstream: pets, security: {{ api_key: api_key.main }} }}\n",
            base_yaml(&backend),
            sha256_hex(reader),
        ),
    );
    let err = Config::load(&bad).expect_err("unmapped scheme").to_string();
    assert!(
        err.contains("createPets") && err.contains("petstore_auth"),
        "{err}"
    );
}
