//! Authentication and authorisation through the whole proxy on loopback: a real identity
//! provider (JWKS, OIDC discovery, RFC 7662 introspection) written with hyper, real upstreams,
//! real TLS with client certificates. The attack catalogue of the issue runs against it.

mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use gateway::{
    auth::signing::{self, CanonicalInput},
    config::Config,
    proxy::server::Proxy,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::{backend::Backend, pki::Pki};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A real identity provider.

/// An ES256 signing key with its public JWK.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate().expect("P-256 key");
        let raw = kp.public_key_raw();
        assert_eq!(raw.len(), 65, "uncompressed point");
        Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("ec pem"),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..]),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        encode_jwt(&h, claims, &self.encoding)
    }
}

#[derive(Default)]
struct IdpState {
    jwks: Mutex<Value>,
    /// `issuer` in the discovery document.
    discovery_issuer: Mutex<String>,
    /// Token -> introspection answer.
    introspection: Mutex<HashMap<String, Value>>,
    down: AtomicBool,
    /// Introspection never answers (the gateway's timeout must fire).
    hang: AtomicBool,
    hits: Mutex<HashMap<String, usize>>,
}

struct Idp {
    addr: SocketAddr,
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind idp");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(IdpState::default());
        *state.jwks.lock().expect("lock") = json!({"keys": []});
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(idp_answer(addr, &state, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        *state.discovery_issuer.lock().expect("lock") = format!("http://{addr}");
        Self { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.state.jwks.lock().expect("lock") =
            json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    }

    fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn idp_answer(
    addr: SocketAddr,
    state: &IdpState,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    *state
        .hits
        .lock()
        .expect("lock")
        .entry(path.clone())
        .or_default() += 1;
    let reply = |status: StatusCode, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("v"));
        r
    };
    if state.down.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, json!({}));
    }
    match path.as_str() {
        "/jwks" => reply(StatusCode::OK, state.jwks.lock().expect("lock").clone()),
        "/.well-known/openid-configuration" => reply(
            StatusCode::OK,
            json!({
                "issuer": state.discovery_issuer.lock().expect("lock").clone(),
                "jwks_uri": format!("http://{addr}/jwks"),
            }),
        ),
        "/introspect" => {
            if state.hang.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("gateway:intro-secret")
            );
            if req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(expected.as_str())
            {
                return reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
            }
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let form = String::from_utf8_lossy(&body).into_owned();
            let token = form
                .split('&')
                .find_map(|p| p.strip_prefix("token="))
                .unwrap_or_default()
                .to_owned();
            let answer = state
                .introspection
                .lock()
                .expect("lock")
                .get(&token)
                .cloned()
                .unwrap_or(json!({"active": false}));
            reply(StatusCode::OK, answer)
        }
        // An OPA decision endpoint: allows reading order 1 only.
        "/opa" => {
            if state.hang.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let allow = doc["input"]["params"]["id"] == "1" && doc["input"]["method"] == "GET";
            reply(StatusCode::OK, json!({ "result": allow }))
        }
        _ => reply(StatusCode::NOT_FOUND, json!({})),
    }
}

// ---------------------------------------------------------------------------------------------
// Proxy and client helpers.

/// Signs a token. The daemon puts ring behind jsonwebtoken before any token is handled; the
/// tests do the same before their first signature so that what they check is what runs.
fn encode_jwt(header: &Header, claims: &impl serde::Serialize, key: &EncodingKey) -> String {
    gateway::auth::jwt_crypto::install();
    jsonwebtoken::encode(header, claims, key).expect("sign")
}

fn config(yaml: &str) -> Config {
    Config::parse(Path::new("test.yaml"), yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

async fn start(yaml: &str) -> Proxy {
    Proxy::start(&config(yaml)).await.expect("proxy starts")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
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

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    /// A header the echo backend received.
    fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> Raw {
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    exchange(TcpStream::connect(addr).await.expect("connect"), request).await
}

async fn get(addr: SocketAddr, target: &str, extra: &str) -> Raw {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await
}

async fn bearer(addr: SocketAddr, target: &str, token: &str) -> Raw {
    get(addr, target, &format!("Authorization: Bearer {token}\r\n")).await
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gateway-test-auth-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
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

fn sha_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn claims(iss: &str, extra: Value) -> Value {
    let mut c = json!({"iss": iss, "sub": "user-1", "aud": "api://orders", "exp": now() + 300, "iat": now()});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

fn header_and_payload(header: &Value, payload: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    )
}

// ---------------------------------------------------------------------------------------------
// JWT with JWKS.

fn jwks_yaml(idp: &Idp, backend: &Backend, issuer_extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  jwt:
    idp:
      issuer: "{iss}"
      jwks_url: "{jwks}"
      algorithms: [ES256]
      audiences: ["api://orders"]
      forward_claims: {{ sub: X-User-Id }}
      {issuer_extra}
routes:
  - {{ name: private, match: {{ prefix: /private }}, upstream: app, auth: {{ any_of: [jwt.idp] }} }}
  - {{ name: public, match: {{ prefix: / }}, upstream: app }}
"#,
        backend = backend.url(),
        iss = idp.issuer(),
        jwks = idp.url("/jwks"),
    )
}

#[tokio::test]
async fn rotated_key_is_accepted_after_refetch_on_unknown_kid() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    let b = SigningKey::new("key-b");
    idp.publish(&[&a]);
    let proxy = start(&jwks_yaml(&idp, &backend, "min_refetch_interval: 0s")).await;
    let addr = proxy.addr("main").expect("listener");
    let iss = idp.issuer();

    let r = bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({})))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("user-1"));
    assert_eq!(idp.hits("/jwks"), 1);

    // The IdP rotates: only `key-b` is published now. No restart, no waiting for a cache TTL.
    idp.publish(&[&b]);
    let r = bearer(
        addr,
        "/private/x",
        &b.sign(&claims(&iss, json!({"sub": "user-2"}))),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("user-2"));
    assert_eq!(idp.hits("/jwks"), 2);
    // The old key is gone from the IdP's set, and so from ours.
    let r = bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({})))).await;
    assert_eq!(r.status, 401, "{r:?}");
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_everywhere() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    idp.publish(&[&a]);
    let proxy = start(&jwks_yaml(&idp, &backend, "")).await;
    let addr = proxy.addr("main").expect("listener");

    // A public route: the client's X-User-Id never reaches the upstream.
    let r = get(addr, "/public", "X-User-Id: admin\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-user-id"), None);
    // An authenticated route: the verified claim replaces the client's value.
    let token = a.sign(&claims(&idp.issuer(), json!({})));
    let r = get(
        addr,
        "/private/x",
        &format!("X-User-Id: admin\r\nAuthorization: Bearer {token}\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.upstream_header("x-user-id").as_deref(), Some("user-1"));

    // The algorithm is allowed here (ES256) and the kid is the trusted one: only the key
    // source differs, and it is never used.
    for (name, token) in embedded_key_tokens("key-a", &claims(&idp.issuer(), json!({}))) {
        let r = bearer(addr, "/private/x", &token).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "auth_invalid_token"),
            "{name}: {r:?}"
        );
    }
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited_and_a_down_idp_keeps_last_good_keys() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    idp.publish(&[&a]);
    // Refresh on every request (interval 0s), but unknown-kid refetches at most once an hour.
    let proxy = start(&jwks_yaml(
        &idp,
        &backend,
        "min_refetch_interval: 1h\n      refresh_interval: 1h",
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");
    let iss = idp.issuer();
    assert_eq!(
        bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({}))))
            .await
            .status,
        200
    );
    assert_eq!(idp.hits("/jwks"), 1);

    // An attacker sprays tokens with made-up kids: the IdP is not asked again.
    for i in 0..10 {
        let forged = SigningKey::new(&format!("forged-{i}"));
        let r = bearer(addr, "/private/x", &forged.sign(&claims(&iss, json!({})))).await;
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.code(), "auth_invalid_token");
    }
    assert_eq!(idp.hits("/jwks"), 1, "unknown kids must not hammer the IdP");

    // The IdP goes down; the cached keys keep working, also across a configuration reload.
    idp.set_down(true);
    for _ in 0..3 {
        assert_eq!(
            bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({}))))
                .await
                .status,
            200
        );
    }
    proxy
        .reload(&config(&jwks_yaml(
            &idp,
            &backend,
            "min_refetch_interval: 1h",
        )))
        .expect("reload");
    let r = bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({})))).await;
    assert_eq!(r.status, 200, "last good keys survive a reload: {r:?}");
}

#[tokio::test]
async fn idp_down_with_refresh_due_keeps_serving_with_last_good_keys() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    idp.publish(&[&a]);
    // Every request finds the keys due for refresh and every refetch is allowed.
    let proxy = start(&jwks_yaml(
        &idp,
        &backend,
        "min_refetch_interval: 0s\n      refresh_interval: 0s",
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");
    let iss = idp.issuer();
    assert_eq!(
        bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({}))))
            .await
            .status,
        200
    );
    idp.set_down(true);
    let before = idp.hits("/jwks");
    for _ in 0..5 {
        let r = bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({})))).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // A token with an unknown kid makes the gateway ask (and fail) again, synchronously.
    let other = SigningKey::new("key-c");
    let r = bearer(addr, "/private/x", &other.sign(&claims(&iss, json!({})))).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(idp.hits("/jwks") > before, "the gateway did try to refresh");
    assert_eq!(
        bearer(addr, "/private/x", &a.sign(&claims(&iss, json!({}))))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn no_keys_fails_closed_by_default_and_can_defer_to_another_source() {
    let idp = Idp::start().await;
    idp.set_down(true);
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    let yaml = format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  jwt:
    closed: {{ issuer: "{iss}", jwks_url: "{jwks}", algorithms: [ES256] }}
    open: {{ issuer: "{iss}", jwks_url: "{jwks}", algorithms: [ES256], no_keys: unauthenticated }}
  api_keys:
    main: {{ keys: [{{ id: k1, sha256: "{hash}" }}] }}
routes:
  - {{ name: closed, match: {{ prefix: /closed }}, upstream: app, auth: {{ any_of: [jwt.closed, api_key.main] }} }}
  - {{ name: open, match: {{ prefix: /open }}, upstream: app, auth: {{ any_of: [jwt.open, api_key.main] }} }}
"#,
        backend = backend.url(),
        iss = idp.issuer(),
        // A URL no other test uses: the process-wide last-good cache must not seed it.
        jwks = idp.url("/jwks?test=no-keys"),
        hash = sha_hex("key-one-0123456789abcdef0123456789"),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");
    let token = a.sign(&claims(&idp.issuer(), json!({"aud": null})));
    let key = "X-Api-Key: key-one-0123456789abcdef0123456789\r\n";

    let r = get(
        addr,
        "/closed",
        &format!("Authorization: Bearer {token}\r\n{key}"),
    )
    .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.code(), "auth_unavailable");
    let r = get(
        addr,
        "/open",
        &format!("Authorization: Bearer {token}\r\n{key}"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = bearer(addr, "/open", &token).await;
    assert_eq!(r.status, 401, "{r:?}");
}

#[tokio::test]
async fn oidc_discovery_finds_the_jwks_and_checks_the_issuer() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    idp.publish(&[&a]);
    let yaml = format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  jwt:
    oidc: {{ issuer: "{iss}", discovery_url: "{disco}", algorithms: [ES256], audiences: ["api://orders"] }}
routes:
  - {{ match: {{ prefix: / }}, upstream: app, auth: {{ any_of: [jwt.oidc] }} }}
"#,
        backend = backend.url(),
        iss = idp.issuer(),
        disco = idp.url("/.well-known/openid-configuration"),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");
    let r = bearer(addr, "/x", &a.sign(&claims(&idp.issuer(), json!({})))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(idp.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(idp.hits("/jwks"), 1);

    // A discovery document naming another issuer is not trusted: no keys, fail closed.
    let idp2 = Idp::start().await;
    idp2.publish(&[&a]);
    *idp2.state.discovery_issuer.lock().expect("lock") = "https://evil.example".into();
    let yaml2 = yaml
        .replace(&idp.addr.to_string(), &idp2.addr.to_string())
        // A URL no other test uses: the process-wide last-good cache must not seed it.
        .replace(
            "openid-configuration\"",
            "openid-configuration?test=mismatch\"",
        );
    let proxy2 = start(&yaml2).await;
    let r = bearer(
        proxy2.addr("main").expect("listener"),
        "/x",
        &a.sign(&claims(&idp2.issuer(), json!({}))),
    )
    .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(idp2.hits("/jwks"), 0);
}

// ---------------------------------------------------------------------------------------------
// The attack catalogue against a static RSA issuer.

/// Tokens signed by an attacker's ES256 key that point at it through `jku`, `x5u` or an
/// embedded `jwk`, claiming the trusted `kid`.
fn embedded_key_tokens(kid: &str, payload: &Value) -> Vec<(String, String)> {
    let attacker = SigningKey::new(kid);
    let mut out = Vec::new();
    for field in ["jku", "x5u", "jwk"] {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        match field {
            "jku" => h.jku = Some("http://127.0.0.1:1/jwks".into()),
            "x5u" => h.x5u = Some("http://127.0.0.1:1/cert.pem".into()),
            _ => h.jwk = serde_json::from_value(attacker.jwk.clone()).ok(),
        }
        out.push((
            format!("{field} header"),
            encode_jwt(&h, payload, &attacker.encoding),
        ));
    }
    out
}

fn rsa_yaml(backend: &Backend, extra_routes: &str) -> String {
    format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  jwt:
    rsa:
      issuer: "https://idp.test"
      keys: [{{ pem_file: "{pem}", kid: rsa-1 }}]
      algorithms: [RS256]
      audiences: ["api://orders", "api://other"]
      leeway: 5s
      required_claims: [sub]
      max_token_bytes: 4KiB
routes:
{extra_routes}
  - {{ name: api, match: {{ prefix: / }}, upstream: app, auth: {{ any_of: [jwt.rsa] }} }}
"#,
        backend = backend.url(),
        pem = fixture("jwt-rsa.pub").display(),
    )
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rsa.key")).expect("fixture key"))
        .expect("rsa key")
}

fn rs256(claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    encode_jwt(&h, claims, &rsa_key())
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::Mac as _;
    let input = header_and_payload(header, claims);
    let mut mac = <hmac::Hmac<Sha256>>::new_from_slice(secret).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn jwt_attack_catalogue() {
    let backend = Backend::start("app").await;
    let proxy = start(&rsa_yaml(&backend, "")).await;
    let addr = proxy.addr("main").expect("listener");
    let iss = "https://idp.test";
    let good = rs256(&claims(iss, json!({})));
    assert_eq!(bearer(addr, "/x", &good).await.status, 200);

    // No token: 401 naming the scheme, small weight.
    let r = get(addr, "/x", "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_missing"),
        "{r:?}"
    );
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"gateway\"")
    );

    let payload = claims(iss, json!({}));
    let mut cases: Vec<(String, String, &str)> = Vec::new();
    // `alg: none` in every case variant, with and without a signature part.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let hp = header_and_payload(&json!({"alg": alg, "typ": "JWT"}), &payload);
        cases.push((format!("alg {alg}"), format!("{hp}."), "auth_invalid_token"));
        cases.push((
            format!("alg {alg} sig"),
            format!("{hp}.{}", B64.encode("x")),
            "auth_invalid_token",
        ));
    }
    // Algorithm confusion: HS256 keyed with the RSA public key the gateway trusts.
    let public_pem = std::fs::read(fixture("jwt-rsa.pub")).expect("pub");
    cases.push((
        "HS256 with the RSA public key".into(),
        hs256(
            &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
            &payload,
            &public_pem,
        ),
        "auth_invalid_token",
    ));
    // Stripped signature.
    let (hp, _) = good.rsplit_once('.').expect("three parts");
    cases.push((
        "stripped signature".into(),
        format!("{hp}."),
        "auth_invalid_token",
    ));
    cases.push(("two parts".into(), hp.to_owned(), "auth_invalid_token"));
    // Signature of another token.
    let other = rs256(&claims(iss, json!({"sub": "other"})));
    cases.push((
        "swapped signature".into(),
        format!("{hp}.{}", other.rsplit_once('.').expect("sig").1),
        "auth_invalid_token",
    ));
    // Claims.
    cases.push((
        "expired".into(),
        rs256(&claims(iss, json!({"exp": now() - 60}))),
        "auth_expired",
    ));
    cases.push((
        "nbf in the future".into(),
        rs256(&claims(iss, json!({"nbf": now() + 600}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "iat in the future".into(),
        rs256(&claims(iss, json!({"iat": now() + 600}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "wrong iss".into(),
        rs256(&claims("https://evil.test", json!({}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "no iss".into(),
        rs256(&claims(iss, json!({"iss": null}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "wrong aud".into(),
        rs256(&claims(iss, json!({"aud": "api://billing"}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "wrong aud array".into(),
        rs256(&claims(iss, json!({"aud": ["api://billing", "x"]}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "no aud".into(),
        rs256(&claims(iss, json!({"aud": null}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "no exp".into(),
        rs256(&claims(iss, json!({"exp": null}))),
        "auth_invalid_claims",
    ));
    cases.push((
        "required sub missing".into(),
        rs256(&claims(iss, json!({"sub": null}))),
        "auth_invalid_claims",
    ));
    // kid games: path traversal, injection, none of which is ever a file or query.
    for kid in [
        "../../../../dev/null",
        "' OR '1'='1",
        "rsa-1\u{0}x",
        &"k".repeat(300),
    ] {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.to_owned());
        cases.push((
            format!("kid {kid:.20}"),
            encode_jwt(&h, &payload, &rsa_key()),
            "auth_invalid_token",
        ));
    }
    // jku / x5u / embedded jwk pointing at an attacker's key: never used as a key source.
    for (name, token) in embedded_key_tokens("rsa-1", &payload) {
        cases.push((name, token, "auth_invalid_token"));
    }
    // Malformed base64 and JSON.
    cases.push((
        "bad base64".into(),
        "eyJ!!!.eyJ@@@.c2ln".into(),
        "auth_invalid_token",
    ));
    cases.push((
        "not json".into(),
        format!("{}.{}.c2ln", B64.encode("nope"), B64.encode("{")),
        "auth_invalid_token",
    ));
    // Oversized.
    cases.push((
        "oversized".into(),
        rs256(&claims(iss, json!({"pad": "x".repeat(5000)}))),
        "auth_token_too_large",
    ));

    for (name, token, code) in cases {
        let r = bearer(addr, "/x", &token).await;
        assert_eq!(r.status, 401, "{name}: {r:?}");
        assert_eq!(r.code(), code, "{name}: {r:?}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
    }

    // An `aud` array with one accepted value passes; so does leeway-sized expiry.
    let r = bearer(
        addr,
        "/x",
        &rs256(&claims(iss, json!({"aud": ["x", "api://other"]}))),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = bearer(addr, "/x", &rs256(&claims(iss, json!({"exp": now() - 1})))).await;
    assert_eq!(r.status, 200, "inside the 5s leeway: {r:?}");

    // Two Authorization headers: refused, whichever would win elsewhere.
    let r = get(
        addr,
        "/x",
        &format!("Authorization: Bearer {good}\r\nAuthorization: Bearer garbage\r\n"),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "auth_duplicate_credentials"),
        "{r:?}"
    );
}

#[test]
fn configurations_that_would_allow_algorithm_confusion_are_refused() {
    let pem = fixture("jwt-rsa.pub");
    for (algs, keys) in [
        (
            "[RS256, HS256]",
            format!("[{{ pem_file: \"{}\" }}]", pem.display()),
        ),
        (
            "[HS256]",
            format!("[{{ pem_file: \"{}\" }}]", pem.display()),
        ),
        ("[none]", format!("[{{ pem_file: \"{}\" }}]", pem.display())),
    ] {
        let yaml =
            format!("auth:\n  jwt:\n    x: {{ issuer: i, keys: {keys}, algorithms: {algs} }}\n");
        let e = Config::parse(Path::new("t.yaml"), &yaml).expect_err(&yaml);
        assert_eq!(e.line, 1, "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// API keys.

#[tokio::test]
async fn api_keys_match_hashes_expire_and_rotate_without_restart() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("keys");
    let key1 = "k1-3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c";
    let key2 = "k2-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let file = dir.write(
        "keys.yaml",
        &format!(
            "keys: [{{ id: partner-1, sha256: {}, roles: [reader] }}]\n",
            sha_hex(key1)
        ),
    );
    let yaml = format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  principal_header: X-Principal
  api_keys:
    main:
      file: "{file}"
      keys:
        - {{ id: retired, sha256: "{old}", expires: "2020-01-01T00:00:00Z" }}
        - {{ id: metered, sha256: "{metered}", rate_limit: {{ requests: 1, per: 1h }} }}
    query: {{ query: key, keys: [{{ id: q, sha256: "{q}" }}] }}
routes:
  - {{ name: q, match: {{ prefix: /q }}, upstream: app, auth: {{ any_of: [api_key.query] }} }}
  - {{ match: {{ prefix: / }}, upstream: app, auth: {{ any_of: [api_key.main] }} }}
"#,
        backend = backend.url(),
        file = file.display(),
        old = sha_hex("retired-key-000000000000000000000"),
        q = sha_hex("query-key-1111111111111111111111"),
        metered = sha_hex("metered-key-22222222222222222222"),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");

    let r = get(
        addr,
        "/x",
        &format!("X-Api-Key: {key1}\r\nX-Principal: api_key:admin\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.upstream_header("x-principal").as_deref(),
        Some("api_key:partner-1")
    );
    assert_eq!(
        r.upstream_header("x-api-key"),
        None,
        "the key is not forwarded"
    );

    let r = get(addr, "/x", "X-Api-Key: wrong-key-000000000000000000000\r\n").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_invalid_key"),
        "{r:?}"
    );
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("ApiKey"),
        "{r:?}"
    );
    let r = get(
        addr,
        "/x",
        "X-Api-Key: retired-key-000000000000000000000\r\n",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_expired"),
        "{r:?}"
    );
    let r = get(addr, "/x", "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_missing"),
        "{r:?}"
    );

    // A key with its own rate limit: one request an hour.
    let metered = "X-Api-Key: metered-key-22222222222222222222\r\n";
    assert_eq!(get(addr, "/x", metered).await.status, 200);
    let r = get(addr, "/x", metered).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (429, "auth_key_rate_limited"),
        "{r:?}"
    );
    assert!(r.header("retry-after").is_some(), "{r:?}");

    let r = get(addr, "/q?a=1&key=query-key-1111111111111111111111", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/q?a=1", "the key is not forwarded");

    // Rotation: the file now holds key2 only; the running gateway picks it up.
    std::fs::write(
        &file,
        format!("keys: [{{ id: partner-1b, sha256: {} }}]\n", sha_hex(key2)),
    )
    .expect("rewrite");
    let mut accepted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(addr, "/x", &format!("X-Api-Key: {key2}\r\n"))
            .await
            .status
            == 200
        {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the new key is accepted without a restart");
    assert_eq!(
        get(addr, "/x", &format!("X-Api-Key: {key1}\r\n"))
            .await
            .status,
        401
    );
}

// ---------------------------------------------------------------------------------------------
// HMAC request signing.

struct Signed<'a> {
    client: &'a str,
    secret: &'a [u8],
    method: &'a str,
    target: &'a str,
    body: &'a [u8],
    ts: i64,
    nonce: &'a str,
}

impl Signed<'_> {
    fn request(&self, tamper_body: Option<&[u8]>) -> Vec<u8> {
        let (path, query) = self
            .target
            .split_once('?')
            .map_or((self.target, None), |(p, q)| (p, Some(q)));
        let ts = self.ts.to_string();
        let headers = [
            ("content-type".to_owned(), "application/json".to_owned()),
            ("host".to_owned(), "api.test".to_owned()),
        ];
        let canonical = signing::canonical_request(&CanonicalInput {
            algorithm: signing::Algorithm::Sha256,
            method: self.method,
            path,
            query,
            headers: &headers,
            timestamp: &ts,
            nonce: self.nonce,
            body: self.body,
        });
        let sig = signing::sign(signing::Algorithm::Sha256, self.secret, &canonical);
        let body = tamper_body.unwrap_or(self.body);
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Gw-Timestamp: {ts}\r\nX-Gw-Nonce: {}\r\nAuthorization: GW-HMAC-SHA256 Credential={}, SignedHeaders=content-type;host, Signature={sig}\r\n\r\n",
            self.method,
            self.target,
            body.len(),
            self.nonce,
            self.client,
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }
}

#[tokio::test]
async fn hmac_signatures_skew_replay_and_tampering() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("hmac");
    let secret_file = dir.write("partner.secret", "partner-secret-value\n");
    let yaml = format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  hmac:
    partners:
      clients: [{{ id: partner-1, secret_file: "{secret}", roles: [writer] }}]
      required_headers: [host, content-type]
      clock_skew: 60s
routes:
  - {{ match: {{ prefix: / }}, upstream: app, auth: {{ any_of: [hmac.partners] }}, require: {{ roles: [writer] }} }}
"#,
        backend = backend.url(),
        secret = secret_file.display(),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");
    let body = br#"{"qty":3}"#;
    let now = now() as i64;
    let signed = |nonce: &'static str, ts: i64| Signed {
        client: "partner-1",
        secret: b"partner-secret-value",
        method: "POST",
        target: "/orders/42/items?b=2&a=1",
        body,
        ts,
        nonce,
    };

    let ok = signed("nonce-0000000000000001", now).request(None);
    let r = raw(addr, &ok).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["body_len"],
        body.len(),
        "the body still reaches the upstream"
    );

    // The very same bytes again: a replay.
    let r = raw(addr, &ok).await;
    assert_eq!((r.status, r.code().as_str()), (401, "auth_replay"), "{r:?}");

    let r = raw(
        addr,
        &signed("nonce-0000000000000002", now - 3600).request(None),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_clock_skew"),
        "{r:?}"
    );
    let r = raw(
        addr,
        &signed("nonce-0000000000000003", now + 3600).request(None),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_clock_skew"),
        "{r:?}"
    );

    let r = raw(
        addr,
        &signed("nonce-0000000000000004", now).request(Some(br#"{"qty":300}"#)),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_invalid_signature"),
        "{r:?}"
    );

    let mut wrong = signed("nonce-0000000000000005", now);
    wrong.secret = &b"guessed"[..];
    let r = raw(addr, &wrong.request(None)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_invalid_signature"),
        "{r:?}"
    );
    // A failed attempt does not burn the nonce: the genuine request with it still passes.
    let r = raw(addr, &signed("nonce-0000000000000005", now).request(None)).await;
    assert_eq!(r.status, 200, "{r:?}");

    let mut unknown = signed("nonce-0000000000000006", now);
    unknown.client = "stranger";
    let r = raw(addr, &unknown.request(None)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_invalid_key"),
        "{r:?}"
    );

    let r = raw(
        addr,
        b"POST /x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_missing"),
        "{r:?}"
    );
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("GW-HMAC-SHA256")
    );
}

// ---------------------------------------------------------------------------------------------
// mTLS.

#[tokio::test]
async fn client_certificates_become_principals_with_roles() {
    let pki = Pki::new();
    let server = pki.server("server", &["api.test"]);
    let orders = pki.client("orders", "orders", Vec::new());
    let other = pki.client("other", "other", Vec::new());
    let backend = Backend::start("app").await;
    let yaml = format!(
        r#"
listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls: {{ certificates: [{{ cert: "{cert}", key: "{key}" }}], client_auth: optional, client_ca: "{ca}" }}
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  principal_header: X-Principal
  mtls:
    internal:
      identities:
        - {{ subject: "CN=orders, O=Gateway Tests", id: orders-svc, roles: [service] }}
routes:
  - {{ match: {{ prefix: / }}, upstream: app, auth: {{ any_of: [mtls.internal] }}, require: {{ roles: [service] }} }}
"#,
        cert = server.cert.display(),
        key = server.key.display(),
        ca = pki.ca_pem.display(),
        backend = backend.url(),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("tls").expect("listener");
    let send = |identity: Option<&support::pki::Issued>| {
        let config = pki.client_config(rustls::ALL_VERSIONS, &["http/1.1"], identity);
        async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let name = rustls_pki_types::ServerName::try_from("api.test").expect("name");
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .expect("handshake");
            exchange(
                tls,
                b"GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
            )
            .await
        }
    };
    let r = send(Some(&orders)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.upstream_header("x-principal").as_deref(),
        Some("mtls:orders-svc")
    );
    let r = send(Some(&other)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_invalid_key"),
        "{r:?}"
    );
    let r = send(None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_missing"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Introspection.

#[tokio::test]
async fn introspection_caches_answers_and_fails_closed() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    {
        let mut answers = idp.state.introspection.lock().expect("lock");
        answers.insert(
            "opaque-good".into(),
            json!({"active": true, "sub": "svc-7", "scope": "orders:read", "exp": now() + 600}),
        );
        answers.insert(
            "opaque-expired".into(),
            json!({"active": true, "sub": "svc-8", "exp": now() - 5}),
        );
    }
    let dir = TempDir::new("intro");
    let secret = dir.write("client.secret", "intro-secret\n");
    let yaml = format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  introspection:
    corp: {{ url: "{url}", client_id: gateway, client_secret_file: "{secret}", timeout: 300ms, cache_ttl: 5m, negative_ttl: 5m }}
routes:
  - {{ match: {{ prefix: / }}, upstream: app, auth: {{ any_of: [introspection.corp] }}, require: {{ scopes: ["orders:read"] }} }}
"#,
        backend = backend.url(),
        url = idp.url("/introspect"),
        secret = secret.display(),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");

    for _ in 0..3 {
        let r = bearer(addr, "/x", "opaque-good").await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(idp.hits("/introspect"), 1, "active answers are cached");
    for _ in 0..3 {
        let r = bearer(addr, "/x", "opaque-unknown").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "auth_invalid_token"),
            "{r:?}"
        );
    }
    assert_eq!(idp.hits("/introspect"), 2, "inactive answers are cached");
    let r = bearer(addr, "/x", "opaque-expired").await;
    assert_eq!(r.status, 401, "active but past exp: {r:?}");

    // Endpoint down, then hanging: a token not in the cache is refused (fail closed); a cached
    // one still passes.
    idp.set_down(true);
    let r = bearer(addr, "/x", "opaque-new-1").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "auth_unavailable"),
        "{r:?}"
    );
    idp.set_down(false);
    idp.state.hang.store(true, Ordering::SeqCst);
    let r = bearer(addr, "/x", "opaque-new-2").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "auth_unavailable"),
        "{r:?}"
    );
    assert_eq!(bearer(addr, "/x", "opaque-good").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Authorisation: roles, scopes, per-method rules, Rego.

#[tokio::test]
async fn roles_scopes_and_rego_policies_decide_403() {
    let backend = Backend::start("app").await;
    let routes = r#"
  - name: orders
    match: { path: "/orders/{id}" }
    upstream: app
    auth: { any_of: [jwt.rsa] }
    require: { scopes: ["orders:read"], methods: { DELETE: { roles: [admin] } } }
  - name: accounts
    match: { path: "/accounts/{account}/statements" }
    upstream: app
    auth: { any_of: [jwt.rsa] }
    require: { policy: own-account }"#;
    let yaml = rsa_yaml(&backend, routes).replace(
        "routes:",
        r#"  policies:
    own-account:
      rego: |
        package gateway
        import rego.v1
        default allow := false
        allow if {
          input.params.account == input.claims.account
          input.method == "GET"
        }
        allow if "auditor" in input.principal.roles
routes:"#,
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");
    let iss = "https://idp.test";

    let reader = rs256(&claims(
        iss,
        json!({"scope": "orders:read profile", "account": "42"}),
    ));
    let admin = rs256(&claims(
        iss,
        json!({"scope": "orders:read", "roles": ["admin"]}),
    ));
    let nobody = rs256(&claims(iss, json!({"scope": "profile"})));
    let auditor = rs256(&claims(iss, json!({"roles": ["auditor"]})));

    assert_eq!(bearer(addr, "/orders/1", &reader).await.status, 200);
    let r = bearer(addr, "/orders/1", &nobody).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "authz_denied"),
        "{r:?}"
    );
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("insufficient_scope")
    );
    let delete = |token: &str| {
        format!(
            "DELETE /orders/1 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
    };
    let r = raw(addr, delete(&reader).as_bytes()).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "authz_denied"),
        "{r:?}"
    );
    assert_eq!(raw(addr, delete(&admin).as_bytes()).await.status, 200);

    // Rego on path parameters and claims.
    assert_eq!(
        bearer(addr, "/accounts/42/statements", &reader)
            .await
            .status,
        200
    );
    let r = bearer(addr, "/accounts/43/statements", &reader).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "authz_denied"),
        "{r:?}"
    );
    assert_eq!(
        bearer(addr, "/accounts/43/statements", &auditor)
            .await
            .status,
        200
    );
    // Unauthenticated still means 401, not 403.
    assert_eq!(get(addr, "/accounts/42/statements", "").await.status, 401);
}

#[tokio::test]
async fn external_opa_decides_with_a_cache_and_fails_closed() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let routes = r#"
  - name: orders
    match: { path: "/orders/{id}" }
    upstream: app
    auth: { any_of: [jwt.rsa] }
    require: { policy: opa }"#;
    let yaml = rsa_yaml(&backend, routes).replace(
        "routes:",
        &format!(
            "  policies:\n    opa: {{ opa: {{ url: \"{}\", timeout: 300ms, cache_ttl: 5m }} }}\nroutes:",
            idp.url("/opa")
        ),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");
    let token = rs256(&claims("https://idp.test", json!({})));
    for _ in 0..3 {
        assert_eq!(bearer(addr, "/orders/1", &token).await.status, 200);
    }
    assert_eq!(idp.hits("/opa"), 1, "identical inputs reuse the decision");
    let r = bearer(addr, "/orders/2", &token).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "authz_denied"),
        "{r:?}"
    );
    // OPA stops answering: a decision not cached is refused.
    idp.state.hang.store(true, Ordering::SeqCst);
    let r = bearer(addr, "/orders/3", &token).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "authz_unavailable"),
        "{r:?}"
    );
    assert_eq!(bearer(addr, "/orders/1", &token).await.status, 200);
}

#[tokio::test]
async fn cookie_tokens_and_all_of_requirements() {
    let backend = Backend::start("app").await;
    let yaml = format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  jwt:
    web:
      issuer: "https://idp.test"
      keys: [{{ pem_file: "{pem}" }}]
      algorithms: [RS256]
      audiences: ["api://orders"]
      cookie: session
    noaud: {{ issuer: "https://idp.test", keys: [{{ pem_file: "{pem}" }}], algorithms: [RS256] }}
  api_keys:
    tenant: {{ header: X-Tenant-Key, keys: [{{ id: tenant-9, sha256: "{tenant}", roles: [tenant] }}] }}
routes:
  - {{ name: both, match: {{ prefix: /both }}, upstream: app, auth: {{ all_of: [jwt.web, api_key.tenant] }}, require: {{ roles: [tenant], scopes: ["orders:read"] }} }}
  - {{ name: noaud, match: {{ prefix: /noaud }}, upstream: app, auth: {{ any_of: [jwt.noaud] }} }}
  - {{ name: web, match: {{ prefix: / }}, upstream: app, auth: {{ any_of: [jwt.web] }} }}
"#,
        backend = backend.url(),
        pem = fixture("jwt-rsa.pub").display(),
        tenant = sha_hex("tenant-key-99999999999999999999999"),
    );
    let proxy = start(&yaml).await;
    let addr = proxy.addr("main").expect("listener");
    let token = rs256(&claims("https://idp.test", json!({"scope": "orders:read"})));

    let r = get(
        addr,
        "/x",
        &format!("Cookie: theme=dark; session={token}\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // This issuer reads the cookie only: a bearer header is not where its tokens live.
    let r = bearer(addr, "/x", &token).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_missing"),
        "{r:?}"
    );

    // all_of: both credentials, and the merged principal carries the key's role and the
    // token's scope.
    let tenant = "X-Tenant-Key: tenant-key-99999999999999999999999\r\n";
    let r = get(
        addr,
        "/both",
        &format!("Cookie: session={token}\r\n{tenant}"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(addr, "/both", &format!("Cookie: session={token}\r\n")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_missing"),
        "{r:?}"
    );
    let r = get(addr, "/both", tenant).await;
    assert_eq!(r.status, 401, "{r:?}");

    // An issuer configured without audiences: a token minted for some audience is refused.
    let r = bearer(addr, "/noaud", &token).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "auth_invalid_claims"),
        "{r:?}"
    );
    let r = bearer(
        addr,
        "/noaud",
        &rs256(&claims("https://idp.test", json!({"aud": null}))),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// The verified-token cache (`auth.jwt.<name>.cache`). Each test names its issuers uniquely: the
// hit/miss counters are per issuer name and process-wide.

/// Hits and misses of one issuer's cache so far.
fn cache_lookups(issuer: &str) -> (u64, u64) {
    gateway::auth::jwt_cache_lookups()
        .into_iter()
        .find(|(name, ..)| name == issuer)
        .map_or((0, 0), |(_, hits, misses)| (hits, misses))
}

/// Two ES256 issuers on the same JWKS, `<name>` with the cache as configured by `cache` and
/// `<name>-off` without it, on routes `/on` and `/off`; leeway 0.
fn cache_yaml(idp: &Idp, backend: &Backend, name: &str, extra: &str) -> String {
    format!(
        r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
access_log: off
upstreams: {{ app: {{ endpoints: ["{backend}"] }} }}
auth:
  jwt:
    {name}:
      issuer: "{iss}"
      jwks_url: "{jwks}"
      algorithms: [ES256]
      audiences: ["api://orders"]
      leeway: 0s
      min_refetch_interval: 0s
      {extra}
    {name}-off:
      issuer: "{iss}"
      jwks_url: "{jwks}"
      algorithms: [ES256]
      audiences: ["api://orders"]
      leeway: 0s
      min_refetch_interval: 0s
      cache: {{ max_entries: 0 }}
routes:
  - {{ name: on, match: {{ prefix: /on }}, upstream: app, auth: {{ any_of: [jwt.{name}] }} }}
  - {{ name: off, match: {{ prefix: /off }}, upstream: app, auth: {{ any_of: [jwt.{name}-off] }} }}
"#,
        backend = backend.url(),
        iss = idp.issuer(),
        jwks = idp.url("/jwks"),
    )
}

/// The answer a client sees, for comparing the cached and the uncached path.
fn outcome(r: &Raw) -> (u16, String, String) {
    if r.status == 200 {
        return (200, String::new(), String::new());
    }
    let doc = r.json();
    (
        r.status,
        doc["code"].as_str().unwrap_or_default().to_owned(),
        doc["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_cached_token_is_accepted_until_it_expires_then_refused_as_if_uncached() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    idp.publish(&[&a]);
    let proxy = start(&cache_yaml(&idp, &backend, "cache-expiry", "")).await;
    let addr = proxy.addr("main").expect("listener");
    let iss = idp.issuer();

    // Valid for this second and the next (leeway 0).
    let exp = now() + 1;
    let token = a.sign(&claims(&iss, json!({ "exp": exp })));
    for i in 0..3u64 {
        let r = bearer(addr, "/on/x", &token).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.upstream_header("x-user-id"), None);
        assert_eq!(cache_lookups("cache-expiry"), (i, 1), "request {i}");
    }
    assert_eq!(bearer(addr, "/off/x", &token).await.status, 200);

    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (hits, _) = cache_lookups("cache-expiry");
    let cached = bearer(addr, "/on/x", &token).await;
    assert_eq!(
        cache_lookups("cache-expiry").0,
        hits + 1,
        "answered from the cache"
    );
    let uncached = bearer(addr, "/off/x", &token).await;
    let never_seen = bearer(
        addr,
        "/on/x",
        &a.sign(&claims(&iss, json!({ "exp": now() - 1 }))),
    )
    .await;
    assert_eq!(
        outcome(&cached),
        (401, "auth_expired".into(), "token expired".into()),
        "{cached:?}"
    );
    assert_eq!(outcome(&cached), outcome(&uncached));
    assert_eq!(outcome(&cached), outcome(&never_seen));
    assert_eq!(
        cache_lookups("cache-expiry-off"),
        (0, 0),
        "max_entries: 0 turns the cache off"
    );
}

#[tokio::test]
async fn a_cached_token_whose_key_left_the_jwks_is_refused_after_the_refetch() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    let b = SigningKey::new("key-b");
    idp.publish(&[&a]);
    let proxy = start(&cache_yaml(&idp, &backend, "cache-rotation", "")).await;
    let addr = proxy.addr("main").expect("listener");
    let iss = idp.issuer();

    let old = a.sign(&claims(&iss, json!({})));
    for _ in 0..2 {
        assert_eq!(bearer(addr, "/on/x", &old).await.status, 200);
    }
    assert_eq!(
        cache_lookups("cache-rotation"),
        (1, 1),
        "the second was a hit"
    );

    // The IdP rotates `key-a` out; a token with the new kid makes the gateway refetch.
    idp.publish(&[&b]);
    let new = b.sign(&claims(&iss, json!({"sub": "user-2"})));
    let r = bearer(addr, "/on/x", &new).await;
    assert_eq!(r.status, 200, "{r:?}");
    let fetches = idp.hits("/jwks");
    for _ in 0..2 {
        let r = bearer(addr, "/on/x", &old).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "auth_invalid_token"),
            "the cached token of a removed key: {r:?}"
        );
    }
    assert!(
        idp.hits("/jwks") > fetches,
        "re-verified against the IdP's keys"
    );
    assert_eq!(bearer(addr, "/on/x", &new).await.status, 200);
}

#[tokio::test]
async fn cache_hits_still_refresh_the_keys_and_an_unchanged_jwks_keeps_the_cache() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    let b = SigningKey::new("key-b");
    idp.publish(&[&a]);
    // Every request finds the keys due and refreshes them in the background.
    let proxy = start(&cache_yaml(
        &idp,
        &backend,
        "cache-refresh",
        "refresh_interval: 0s",
    ))
    .await;
    let addr = proxy.addr("main").expect("listener");
    let token = a.sign(&claims(&idp.issuer(), json!({})));
    assert_eq!(bearer(addr, "/on/x", &token).await.status, 200);
    // Let background refreshes of the same document happen: the entry stays valid.
    for _ in 0..3 {
        let fetches = idp.hits("/jwks");
        assert_eq!(bearer(addr, "/on/x", &token).await.status, 200);
        tokio::time::timeout(WAIT, async {
            while idp.hits("/jwks") == fetches {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a hit starts the due refresh");
    }
    let (hits, misses) = cache_lookups("cache-refresh");
    assert!(
        hits >= 3,
        "refreshes that find the same keys keep the cache: {hits} hits"
    );
    assert_eq!(misses, 1);

    // Rotation without any unknown kid: only the background refresh can notice it.
    idp.publish(&[&b]);
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            let r = bearer(addr, "/on/x", &token).await;
            if r.status != 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the cached token is refused once the refresh removed its key");
    assert_eq!(refused.code(), "auth_invalid_token", "{refused:?}");
}

#[tokio::test]
async fn bad_signatures_and_tampered_payloads_never_hit_the_cache() {
    let idp = Idp::start().await;
    let backend = Backend::start("app").await;
    let a = SigningKey::new("key-a");
    idp.publish(&[&a]);
    let proxy = start(&cache_yaml(&idp, &backend, "cache-tamper", "")).await;
    let addr = proxy.addr("main").expect("listener");
    let good = a.sign(&claims(&idp.issuer(), json!({})));
    for _ in 0..2 {
        assert_eq!(bearer(addr, "/on/x", &good).await.status, 200);
    }
    assert_eq!(cache_lookups("cache-tamper"), (1, 1));

    let parts: Vec<&str> = good.split('.').collect();
    // Same header and signature, another subject.
    let mut payload: Value =
        serde_json::from_slice(&B64.decode(parts[1]).expect("b64")).expect("json");
    payload["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(payload.to_string()),
        parts[2]
    );
    // The signature of the cached token with one character changed.
    let at = good.len() - 10;
    let swap = if &good[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &good[..at], &good[at + 1..]);
    for token in [&tampered, &forged] {
        for _ in 0..3 {
            let r = bearer(addr, "/on/x", token).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (401, "auth_invalid_token"),
                "{r:?}"
            );
        }
    }
    assert_eq!(
        cache_lookups("cache-tamper"),
        (1, 7),
        "every refused request was a miss: failures are never cached"
    );
    let r = bearer(addr, "/on/x", &good).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(cache_lookups("cache-tamper"), (2, 7));
}

#[test]
fn cache_settings_are_checked() {
    let base = |cache: &str| {
        format!(
            r#"
listeners: [{{ name: main, address: "127.0.0.1:0" }}]
upstreams: {{ app: {{ endpoints: ["http://127.0.0.1:9"] }} }}
auth:
  jwt:
    idp: {{ issuer: i, jwks_url: "http://127.0.0.1:9/jwks", algorithms: [ES256], cache: {cache} }}
routes:
  - {{ match: {{ prefix: / }}, upstream: app }}
"#
        )
    };
    for ok in [
        "{ max_entries: 0 }",
        "{ max_entries: 50000, max_ttl: 1m }",
        "{}",
    ] {
        Config::parse(Path::new("t.yaml"), &base(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["{ size: 10 }", "{ max_ttl: soon }", "{ max_entries: -1 }"] {
        assert!(
            Config::parse(Path::new("t.yaml"), &base(bad)).is_err(),
            "{bad} accepted"
        );
    }
}
