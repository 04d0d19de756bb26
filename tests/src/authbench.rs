//! What `cargo xtask bench auth` measures with, in one place so that the load generator, the
//! in-process cost measurement and the test that keeps both honest use the same keys, tokens,
//! signatures and gateway configuration.
//!
//! [`prepare`] writes into a directory: the gateway's configuration (one route per scheme:
//! none, JWT RS256 / ES256 / EdDSA with static keys, JWT ES256 from a JWKS URL, API key,
//! HMAC-SHA256 signing), the public keys, the JWKS document, the HMAC secret, and
//! `clients.json`, which [`Client::load`] turns into the credentials a request carries. JWTs are
//! signed once (they stay valid for a day); HMAC requests are signed per request ([`Client::apply`]),
//! because the gateway refuses a nonce it has seen.
//!
//! JWT rows come in two kinds. `jwt-rs256`, `jwt-es256`, `jwt-eddsa` and `jwt-es256-jwks` turn
//! the gateway's verified-token cache off (`cache: { max_entries: 0 }`): they measure the full
//! verification, signature included, on every request. `jwt-*-cached` send the same tokens to
//! issuers with the cache on (the default), as real clients do (one token for its whole
//! lifetime): after the first request, a SHA-256 lookup and the clock checks.
//!
//! Keys: ES256, EdDSA and the JWKS key are generated per run with rcgen; the RSA key is the
//! gateway tests' fixture, because ring (rcgen's backend) cannot generate RSA keys and the `rsa`
//! crate takes seconds for it in a debug build.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use gateway::{
    auth::signing::{self, CanonicalInput},
    config::Config,
    proxy::{
        problem::Problem,
        router::{Route, Router},
        stage::{Principal, RequestContext},
    },
};
use http_body_util::Full;
use hyper::{
    Response,
    header::{HeaderMap, HeaderName, HeaderValue},
    http,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The RSA fixture of the gateway's tests (2048 bits).
const RSA_PRIVATE_PEM: &str = include_str!("../../gateway/tests/fixtures/jwt-rsa.key");
const RSA_PUBLIC_PEM: &str = include_str!("../../gateway/tests/fixtures/jwt-rsa.pub");

const ISSUER: &str = "https://idp.bench.example";
const AUDIENCE: &str = "api://orders";
const JWKS_KID: &str = "bench-jwks-1";
const API_KEY_ID: &str = "bench-key";
const HMAC_CLIENT: &str = "bench-client";

/// The routes, in configuration order: scheme name, path, `auth.any_of` source.
pub const SCHEMES: &[(&str, &str, Option<&str>)] = &[
    ("none", "/none", None),
    ("jwt-rs256", "/jwt-rs256", Some("jwt.rs256")),
    ("jwt-es256", "/jwt-es256", Some("jwt.es256")),
    ("jwt-eddsa", "/jwt-eddsa", Some("jwt.eddsa")),
    ("jwt-es256-jwks", "/jwt-es256-jwks", Some("jwt.jwks")),
    (
        "jwt-rs256-cached",
        "/jwt-rs256-cached",
        Some("jwt.rs256-cached"),
    ),
    (
        "jwt-es256-cached",
        "/jwt-es256-cached",
        Some("jwt.es256-cached"),
    ),
    (
        "jwt-eddsa-cached",
        "/jwt-eddsa-cached",
        Some("jwt.eddsa-cached"),
    ),
    ("api-key", "/api-key", Some("api_key.main")),
    ("hmac-sha256", "/hmac-sha256", Some("hmac.partners")),
];

/// Where the benchmark's processes listen.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The gateway's plain-HTTP listener.
    pub gateway: u16,
    pub backend: u16,
    /// The JWKS server ([`serve_jwks`]).
    pub jwks: u16,
}

/// What a request of one scheme carries: fixed headers, or an HMAC signature made per request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientSpec {
    pub scheme: String,
    pub path: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub hmac: Option<HmacSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HmacSpec {
    pub id: String,
    pub secret: String,
}

/// Writes keys, tokens, secrets, `jwks.json`, `clients.json` and `gateway.yaml` into `dir`.
/// `nonce_cache` bounds the HMAC replay cache: it must exceed the number of HMAC requests
/// sent within the clock-skew window (5 minutes), or the gateway starts refusing them.
pub fn prepare(dir: &Path, ports: Ports, nonce_cache: usize) -> anyhow::Result<Vec<ClientSpec>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = unix_now();
    let claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-8f14e45f-ceea-467e-a5d0-3c4b6a0e5d21",
        "scope": "orders:read orders:write profile",
        "roles": ["customer"],
        "iat": now,
        "nbf": now,
        "exp": now + 24 * 3600,
        "jti": format!("bench-{now}"),
    });

    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let rs256_pub = write("rs256.pub.pem", RSA_PUBLIC_PEM)?;
    let rs256 = sign(
        Algorithm::RS256,
        None,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes())?,
        &claims,
    )?;
    let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let es256_pub = write("es256.pub.pem", &es.public_key_pem())?;
    let es256 = sign(
        Algorithm::ES256,
        None,
        &EncodingKey::from_ec_pem(es.serialize_pem().as_bytes())?,
        &claims,
    )?;
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let eddsa_pub = write("eddsa.pub.pem", &ed.public_key_pem())?;
    let eddsa = sign(
        Algorithm::EdDSA,
        None,
        &EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes())?,
        &claims,
    )?;
    let jk = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = jk.public_key_raw();
    anyhow::ensure!(
        raw.len() == 65,
        "P-256 public key is not an uncompressed point"
    );
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": JWKS_KID, "alg": "ES256", "use": "sig",
        "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..]),
    }]});
    write("jwks.json", &jwks.to_string())?;
    let jwks_token = sign(
        Algorithm::ES256,
        Some(JWKS_KID),
        &EncodingKey::from_ec_pem(jk.serialize_pem().as_bytes())?,
        &claims,
    )?;

    // 32 random bytes as keys and secrets are made (rcgen's key material is the random source
    // at hand: the SHA-256 of a fresh private key).
    let random = || {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|k| hex(&Sha256::digest(k.serialize_der())))
    };
    let api_key = format!("gwk_{}", random()?);
    let api_key_sha = hex(&Sha256::digest(api_key.as_bytes()));
    let hmac_secret = random()?;
    let hmac_file = write("hmac.secret", &hmac_secret)?;

    let bearer = |t: &str| vec![("authorization".to_owned(), format!("Bearer {t}"))];
    let mut clients = Vec::new();
    for (scheme, path, _) in SCHEMES {
        let (headers, hmac) = match *scheme {
            "none" => (Vec::new(), None),
            "jwt-rs256" | "jwt-rs256-cached" => (bearer(&rs256), None),
            "jwt-es256" | "jwt-es256-cached" => (bearer(&es256), None),
            "jwt-eddsa" | "jwt-eddsa-cached" => (bearer(&eddsa), None),
            "jwt-es256-jwks" => (bearer(&jwks_token), None),
            "api-key" => (vec![("x-api-key".to_owned(), api_key.clone())], None),
            "hmac-sha256" => (
                Vec::new(),
                Some(HmacSpec {
                    id: HMAC_CLIENT.into(),
                    secret: hmac_secret.clone(),
                }),
            ),
            other => anyhow::bail!("no credentials for scheme {other}"),
        };
        clients.push(ClientSpec {
            scheme: (*scheme).into(),
            path: (*path).into(),
            headers,
            hmac,
        });
    }
    write("clients.json", &serde_json::to_string_pretty(&clients)?)?;

    // `cache` is the issuer's verified-token cache: off for the rows that measure the
    // signature check, the default bound for the `-cached` rows.
    let jwt = |name: &str, alg: &str, keys: String, cache: &str| {
        format!(
            "    {name}:\n      issuer: \"{ISSUER}\"\n      algorithms: [{alg}]\n      audiences: [\"{AUDIENCE}\"]\n      required_claims: [sub, scope]\n      {keys}\n      cache: {cache}\n"
        )
    };
    let (off, on) = ("{ max_entries: 0 }", "{ max_entries: 10000, max_ttl: 5m }");
    let pem = |p: &Path| format!("keys: [{{ pem_file: \"{}\" }}]", p.display());
    let mut routes = String::new();
    for (scheme, path, source) in SCHEMES {
        routes.push_str(&format!(
            "  - {{ name: {scheme}, match: {{ prefix: {path} }}, upstream: backend{} }}\n",
            source.map_or(String::new(), |s| format!(", auth: {{ any_of: [{s}] }}"))
        ));
    }
    let config = format!(
        r#"# Written by `cargo xtask bench auth` (tests/src/authbench.rs).
instance: bench-auth
state_dir: "{state}"
workers: 1
access_log: off
listeners:
  - {{ name: main, address: "127.0.0.1:{gateway}" }}
upstreams:
  backend: {{ endpoints: ["http://127.0.0.1:{backend}"] }}
auth:
  jwt:
{rs}{es}{ed}{jw}{rsc}{esc}{edc}  api_keys:
    main:
      header: X-Api-Key
      keys: [{{ id: {API_KEY_ID}, sha256: "{api_key_sha}", scopes: [orders:read] }}]
  hmac:
    partners:
      clients: [{{ id: {HMAC_CLIENT}, secret_file: "{hmac_file}" }}]
      nonce_cache: {nonce_cache}
routes:
{routes}"#,
        state = dir.join("state").display(),
        gateway = ports.gateway,
        backend = ports.backend,
        rs = jwt("rs256", "RS256", pem(&rs256_pub), off),
        es = jwt("es256", "ES256", pem(&es256_pub), off),
        ed = jwt("eddsa", "EdDSA", pem(&eddsa_pub), off),
        rsc = jwt("rs256-cached", "RS256", pem(&rs256_pub), on),
        esc = jwt("es256-cached", "ES256", pem(&es256_pub), on),
        edc = jwt("eddsa-cached", "EdDSA", pem(&eddsa_pub), on),
        // Refreshed hourly: every run measures warm keys, none a background refetch.
        jw = jwt(
            "jwks",
            "ES256",
            format!(
                "jwks_url: \"http://127.0.0.1:{}/jwks.json\"\n      refresh_interval: 1h",
                ports.jwks
            ),
            off,
        ),
        hmac_file = hmac_file.display(),
    );
    write("gateway.yaml", &config)?;
    Ok(clients)
}

fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &Value,
) -> anyhow::Result<String> {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

/// The credentials of one scheme, ready to put on requests.
pub struct Client {
    pub scheme: String,
    pub path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    hmac: Option<HmacSpec>,
}

/// Makes every nonce of this process distinct, and distinct from other processes' (pid and
/// start time in the prefix).
static NONCE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Client {
    /// Every scheme's client from `clients.json` in `dir`.
    pub fn load_all(dir: &Path) -> anyhow::Result<Vec<Self>> {
        let path = dir.join("clients.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let specs: Vec<ClientSpec> = serde_json::from_str(&text)?;
        specs.into_iter().map(Self::new).collect()
    }

    /// The client of `scheme` from `clients.json` in `dir`.
    pub fn load(dir: &Path, scheme: &str) -> anyhow::Result<Self> {
        Self::load_all(dir)?
            .into_iter()
            .find(|c| c.scheme == scheme)
            .with_context(|| format!("no scheme `{scheme}` in {}", dir.display()))
    }

    fn new(spec: ClientSpec) -> anyhow::Result<Self> {
        let headers = spec
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes())?,
                    HeaderValue::from_str(v)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            scheme: spec.scheme,
            path: spec.path,
            headers,
            hmac: spec.hmac,
        })
    }

    /// Adds this scheme's credentials to a bodiless request of `method` to `path` (no query)
    /// for `host`; an HMAC signature is made now, with the current time and a fresh nonce.
    pub fn apply(&self, method: &str, path: &str, host: &str, headers: &mut HeaderMap) {
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        let Some(h) = &self.hmac else {
            return;
        };
        let timestamp = unix_now().to_string();
        let nonce = format!(
            "{:x}-{:x}-{:x}",
            std::process::id(),
            *PROCESS_START,
            NONCE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let signed = [("host".to_owned(), host.to_owned())];
        let canonical = signing::canonical_request(&CanonicalInput {
            algorithm: signing::Algorithm::Sha256,
            method,
            path,
            query: None,
            headers: &signed,
            timestamp: &timestamp,
            nonce: &nonce,
            body: b"",
        });
        let signature = signing::sign(signing::Algorithm::Sha256, h.secret.as_bytes(), &canonical);
        let authorization = format!(
            "GW-HMAC-SHA256 Credential={}, SignedHeaders=host, Signature={signature}",
            h.id
        );
        // Built from hex, digits and the client id: always valid header values.
        for (name, value) in [
            (hyper::header::AUTHORIZATION, authorization),
            (
                HeaderName::from_static(signing::TIMESTAMP_HEADER),
                timestamp,
            ),
            (HeaderName::from_static(signing::NONCE_HEADER), nonce),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
}

/// Nanoseconds of the Unix clock when the process first signed (part of every nonce).
static PROCESS_START: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
});

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves `doc` (the JWKS) as `application/json` to every request until the task is dropped.
pub async fn serve_jwks(listener: tokio::net::TcpListener, doc: Bytes) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let doc = doc.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| {
                let doc = doc.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(hyper::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(doc))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// The gateway's authentication stage built from `gateway.yaml` in `dir`, called directly as
/// the proxy calls it (no network but the JWKS fetch).
pub struct Stage {
    router: Router,
    auth: gateway::auth::Auth,
    body: Bytes,
}

impl Stage {
    pub fn build(dir: &Path) -> anyhow::Result<Self> {
        let config = Config::load(&dir.join("gateway.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut router =
            Router::build(&config.routes).map_err(|(i, e)| anyhow::anyhow!("route {i}: {e}"))?;
        let built = gateway::auth::build(config.auth.as_ref(), &config.routes)
            .map_err(|e| anyhow::anyhow!(e))?;
        // As the proxy's `runtime()` binds them.
        for (route, (authn, _)) in router.routes_mut().iter_mut().zip(built.routes) {
            route.buffer_body |= authn.as_ref().is_some_and(|a| a.needs_body());
            route.auth = authn;
        }
        Ok(Self {
            router,
            auth: built.auth,
            body: Bytes::new(),
        })
    }

    pub fn route(&self, scheme: &str) -> anyhow::Result<&Route> {
        self.router
            .routes()
            .iter()
            .find(|r| r.name == scheme)
            .with_context(|| format!("no route `{scheme}`"))
    }

    /// A `GET` of `client`'s route for `host`, with its credentials (signed now for HMAC).
    pub fn request(client: &Client, host: &str) -> anyhow::Result<http::request::Parts> {
        let (mut parts, ()) = http::Request::get(client.path.as_str())
            .header(hyper::header::HOST, host)
            .body(())?
            .into_parts();
        client.apply("GET", &client.path, host, &mut parts.headers);
        Ok(parts)
    }

    /// Runs the authentication stage on `parts` for `route`: the principal it found, or the
    /// refusal.
    pub async fn authenticate(
        &self,
        route: &Route,
        parts: &mut http::request::Parts,
    ) -> Result<Option<Principal>, Problem> {
        let path = parts.uri.path().to_owned();
        let mut ctx = RequestContext {
            request_id: "bench",
            client_ip: [127, 0, 0, 1].into(),
            behind_proxy: false,
            tls: None,
            route,
            path: &path,
            params: &[],
            body: route.buffer_body.then_some(&self.body),
            principal: None,
            findings: Vec::new(),
            response_headers: HeaderMap::new(),
        };
        self.auth.authenticate(&mut ctx, parts).await?;
        Ok(ctx.principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "authbench-test-{}-{}",
                std::process::id(),
                NONCE_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The benchmark must measure success paths: every credential the load generator sends is
    /// accepted by the gateway's authentication stage (a 401 costs less than a verification),
    /// and the stage really checks them (a replayed signature and a tampered token are refused).
    #[tokio::test]
    async fn the_load_generators_credentials_are_accepted_by_the_auth_stage() {
        let dir = TempDir::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind jwks");
        let jwks_port = listener.local_addr().expect("addr").port();
        let clients = prepare(
            &dir.0,
            Ports {
                gateway: 9,
                backend: 9,
                jwks: jwks_port,
            },
            1000,
        )
        .expect("prepare");
        let doc = std::fs::read(dir.0.join("jwks.json")).expect("jwks.json");
        let server = tokio::spawn(serve_jwks(listener, Bytes::from(doc)));
        let config =
            Config::load(&dir.0.join("gateway.yaml")).expect("the gateway accepts the config");
        assert_eq!(config.routes.len(), SCHEMES.len());

        let stage = Stage::build(&dir.0).expect("stage");
        let loaded = Client::load_all(&dir.0).expect("clients");
        assert_eq!(loaded.len(), clients.len());
        for client in &loaded {
            let route = stage.route(&client.scheme).expect("route");
            // Twice: HMAC must sign afresh (a second nonce), JWKS keys are warm the second time.
            for _ in 0..2 {
                let mut parts = Stage::request(client, "127.0.0.1:8080").expect("request");
                let principal = stage
                    .authenticate(route, &mut parts)
                    .await
                    .unwrap_or_else(|p| panic!("{}: refused: {p:?}", client.scheme));
                match client.scheme.as_str() {
                    "none" => assert!(principal.is_none()),
                    scheme => {
                        let p = principal.unwrap_or_else(|| panic!("{scheme}: no principal"));
                        let expected = match scheme {
                            "api-key" => API_KEY_ID,
                            "hmac-sha256" => HMAC_CLIENT,
                            _ => "user-8f14e45f-ceea-467e-a5d0-3c4b6a0e5d21",
                        };
                        assert_eq!(p.id, expected, "{scheme}");
                        if scheme.starts_with("jwt") {
                            assert!(p.scopes.iter().any(|s| s == "orders:write"), "{scheme}");
                        }
                    }
                }
            }
        }

        // The stage is not waving everything through.
        let hmac = loaded
            .iter()
            .find(|c| c.scheme == "hmac-sha256")
            .expect("hmac client");
        let route = stage.route("hmac-sha256").expect("route");
        let mut parts = Stage::request(hmac, "127.0.0.1:8080").expect("request");
        let replay = parts.clone();
        assert!(stage.authenticate(route, &mut parts).await.is_ok());
        let mut replay = replay;
        let refused = stage
            .authenticate(route, &mut replay)
            .await
            .expect_err("a replayed signature is refused");
        assert_eq!(refused.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(refused.code, "auth_replay");
        // The `-cached` rows' tokens were just cached: a changed token must still be refused.
        for scheme in [
            "jwt-rs256",
            "jwt-es256",
            "jwt-eddsa",
            "jwt-es256-jwks",
            "jwt-rs256-cached",
            "jwt-es256-cached",
            "jwt-eddsa-cached",
        ] {
            let client = loaded.iter().find(|c| c.scheme == scheme).expect("client");
            let mut parts = Stage::request(client, "127.0.0.1:8080").expect("request");
            let token = parts.headers[hyper::header::AUTHORIZATION]
                .to_str()
                .expect("ascii")
                .to_owned();
            // Change one character inside the signature (not the last: its low bits may be
            // padding).
            let at = token.len() - 10;
            let swap = if &token[at..=at] == "A" { "B" } else { "A" };
            let flipped = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
            parts.headers.insert(
                hyper::header::AUTHORIZATION,
                HeaderValue::from_str(&flipped).expect("header"),
            );
            let route = stage.route(scheme).expect("route");
            assert!(
                stage.authenticate(route, &mut parts).await.is_err(),
                "{scheme}: a tampered token is refused"
            );
        }
        // The rows measure what they say: the `-cached` issuers answered the second request
        // from the cache, the others never looked (their cache is off).
        let lookups = gateway::auth::jwt_cache_lookups();
        let of = |issuer: &str| {
            lookups
                .iter()
                .find(|(name, ..)| name == issuer)
                .map(|(_, hits, misses)| (*hits, *misses))
        };
        for issuer in ["rs256-cached", "es256-cached", "eddsa-cached"] {
            let (hits, misses) = of(issuer).unwrap_or_else(|| panic!("{issuer}: no lookups"));
            assert!(
                hits >= 1 && misses >= 1,
                "{issuer}: {hits} hits, {misses} misses"
            );
        }
        for issuer in ["rs256", "es256", "eddsa", "jwks"] {
            assert_eq!(of(issuer), None, "{issuer}: the cache is off");
        }
        server.abort();
    }
}
