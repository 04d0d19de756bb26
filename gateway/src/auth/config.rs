//! The `auth:` section (named credential sources) and the per-route `auth:` requirement that
//! picks among them. Secrets are read from files or environment variables, never inline.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::config::{de_duration, de_size};

/// Credential sources by kind and name; routes refer to them as `<kind>.<name>`
/// (`jwt.idp`, `api_key.main`, `hmac.partners`, `mtls.internal`, `introspection.corp`).
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// JWT issuers by name.
    #[serde(default)]
    pub jwt: BTreeMap<String, JwtIssuerConfig>,
    /// API key sets by name.
    #[serde(default)]
    pub api_keys: BTreeMap<String, ApiKeysConfig>,
    /// HMAC request-signing client sets by name (docs/hmac-signing.md).
    #[serde(default)]
    pub hmac: BTreeMap<String, HmacConfig>,
    /// Client-certificate identity maps by name (needs a listener with `client_auth`).
    #[serde(default)]
    pub mtls: BTreeMap<String, MtlsConfig>,
    /// OAuth2 token introspection endpoints (RFC 7662) by name, for opaque tokens.
    #[serde(default)]
    pub introspection: BTreeMap<String, IntrospectionConfig>,
    /// Rego policies by name; routes name them in `require.policy`.
    #[serde(default)]
    pub policies: BTreeMap<String, crate::authz::PolicyConfig>,
    /// Sent upstream with `<scheme>:<principal id>` of every authenticated request, and removed
    /// from every client request so clients cannot claim an identity.
    #[serde(default)]
    pub principal_header: Option<String>,
}

/// Where a route's credentials come from: `any_of` (the first that succeeds wins) or `all_of`
/// (every one must succeed; roles and scopes are merged).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthConfig {
    /// Sources as `<kind>.<name>`, tried in order.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// Sources as `<kind>.<name>`, all required.
    #[serde(default)]
    pub all_of: Vec<String>,
}

/// One JWT issuer. Keys come from exactly one of `keys`, `jwks_url` or `discovery_url`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Expected `iss`, compared exactly.
    pub issuer: String,
    /// A JWKS document (`{"keys": [...]}`), cached and refreshed. Use `https://` in
    /// production: whoever can alter this answer can mint tokens.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// OIDC discovery (`.../.well-known/openid-configuration`): its `jwks_uri` is used and its
    /// `issuer` must equal `issuer`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Static keys.
    #[serde(default)]
    pub keys: Vec<StaticKeyConfig>,
    /// Accepted `alg` values, e.g. `[RS256, ES256]`. `none` is never accepted; HMAC algorithms
    /// (`HS256`...) only with `secret_*` keys and never alongside asymmetric ones.
    pub algorithms: Vec<String>,
    /// Accepted `aud` values (the token's `aud`, string or array, must contain one). Empty: a
    /// token with `aud` is rejected (it was meant for someone else).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub leeway: Duration,
    /// Claims that must be present besides `exp` and `iss`.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claims sent upstream as headers (`sub: X-User-Id`); these header names are removed from
    /// every client request first. Arrays are comma-joined, objects JSON.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Claim holding roles (dots descend into objects: `realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim holding scopes: a space-separated string (`scope`) or an array (`scp`).
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
    /// Read the token from this header instead of `Authorization: Bearer`.
    #[serde(default)]
    pub header: Option<String>,
    /// Read the token from this cookie instead of `Authorization: Bearer`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Longer tokens are rejected before any parsing.
    #[serde(default = "default_max_token", deserialize_with = "de_size")]
    #[schemars(with = "String")]
    pub max_token_bytes: usize,
    /// Remote keys: refetched this often (in the background; requests keep using the cached set).
    #[serde(default = "default_refresh", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub refresh_interval: Duration,
    /// Remote keys: at most one fetch per this interval for tokens with an unknown `kid`, so
    /// forged `kid`s cannot make the gateway hammer the IdP.
    #[serde(default = "default_min_refetch", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub min_refetch_interval: Duration,
    /// Remote keys: time a JWKS or discovery fetch may take.
    #[serde(default = "default_fetch_timeout", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub fetch_timeout: Duration,
    /// Remote keys: PEM CA bundle for the IdP; absent uses the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// What happens while no key was ever fetched (IdP down since start).
    #[serde(default)]
    pub no_keys: NoKeys,
    /// Verified tokens remembered so that a token sent again skips the signature check.
    #[serde(default)]
    pub cache: JwtCacheConfig,
}

/// The verified-token cache of one issuer. Keyed by the SHA-256 of the whole token; only tokens
/// that passed every check are kept (a refused token is checked again each time, so no request
/// can poison the cache); `exp`, `nbf` and `iat` are checked again on every hit; entries verified
/// with remote keys that a JWKS refresh changed are verified again.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtCacheConfig {
    /// Tokens kept (the least useful are evicted beyond); `0` turns the cache off.
    #[serde(default = "default_jwt_cache_entries")]
    pub max_entries: usize,
    /// A verification is trusted this long at most, even when the token's `exp` is later;
    /// `0s` turns the cache off.
    #[serde(default = "default_jwt_cache_ttl", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub max_ttl: Duration,
}

impl Default for JwtCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: default_jwt_cache_entries(),
            max_ttl: default_jwt_cache_ttl(),
        }
    }
}

/// The policy when an issuer has no keys at all. Last good keys are always kept, so this only
/// applies before the first successful fetch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoKeys {
    /// 503 `auth_unavailable`: the request is refused whatever other sources say.
    #[default]
    FailClosed,
    /// The token counts as invalid, so another source of an `any_of` may still admit the
    /// request.
    Unauthenticated,
}

/// A static verification key: exactly one of the fields.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticKeyConfig {
    /// `kid` this key answers to; absent: tried for every token.
    #[serde(default)]
    pub kid: Option<String>,
    /// PEM public key (RSA, EC P-256/P-384 or Ed25519).
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`); each key's own `kid` is used.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// HMAC secret from this environment variable (HS* algorithms only).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// HMAC secret from this file, trailing newline removed (HS* algorithms only).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// A set of API keys, stored only as SHA-256 hashes.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// Header carrying the key (default `X-Api-Key` unless `query` is set).
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter carrying the key instead of a header (keys in URLs end up in logs:
    /// prefer a header).
    #[serde(default)]
    pub query: Option<String>,
    /// Keys inline.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// A YAML file `keys: [...]` with the same entries; re-read when it changes (checked at
    /// most once a second), so keys rotate without a restart.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// One API key. The key itself is never stored: `sha256` is the hex SHA-256 of the key
/// (`printf %s "$KEY" | sha256sum`). Keys must be random (32+ bytes): a fast hash is then safe,
/// and a slow password hash (argon2) would cost every request milliseconds.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Names the key in logs and becomes the principal id.
    pub id: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Who the key belongs to (logs, policies).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339 time after which the key is refused (`2027-01-01T00:00:00Z`).
    #[serde(default)]
    pub expires: Option<String>,
    /// At most this many requests with this key (429 `auth_key_rate_limited` beyond).
    #[serde(default)]
    pub rate_limit: Option<KeyRateLimit>,
}

/// A token bucket per key: `requests` at once, refilled evenly over `per`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRateLimit {
    pub requests: u32,
    #[serde(deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub per: Duration,
}

/// HMAC request signing (docs/hmac-signing.md).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// Clients and their secrets.
    pub clients: Vec<HmacClientConfig>,
    /// Headers every signature must cover (besides the timestamp and nonce, always covered).
    #[serde(default = "default_signed_headers")]
    pub required_headers: Vec<String>,
    /// How far a request's timestamp may be from the gateway's clock, either way.
    #[serde(default = "default_skew", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub clock_skew: Duration,
    /// Nonces remembered (memory bound); see docs/hmac-signing.md for what happens when full.
    #[serde(default = "default_nonce_cache")]
    pub nonce_cache: usize,
}

/// One signing client.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacClientConfig {
    /// The `Credential=` value; the principal id.
    pub id: String,
    /// Secret from this environment variable.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Secret from this file, trailing newline removed.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Principals for verified client certificates.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// Certificates matched in order; the first match names the principal.
    #[serde(default)]
    pub identities: Vec<MtlsIdentity>,
    /// A verified certificate no identity matches still authenticates (principal = subject, no
    /// roles). Off: such a client gets 401.
    #[serde(default)]
    pub allow_unlisted: bool,
}

/// One certificate identity: set one or more of `subject`, `san`, `fingerprint` (all must
/// match).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsIdentity {
    /// Principal id; defaults to the certificate subject.
    #[serde(default)]
    pub id: Option<String>,
    /// The subject DN as the gateway prints it: `CN=orders, O=Example`.
    #[serde(default)]
    pub subject: Option<String>,
    /// A SAN value (DNS name, URI such as a SPIFFE id, email or IP).
    #[serde(default)]
    pub san: Option<String>,
    /// SHA-256 of the certificate DER, hex (colons allowed).
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// An RFC 7662 introspection endpoint.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint (POST, form-encoded).
    pub url: String,
    /// Client credentials (HTTP Basic) toward the endpoint.
    pub client_id: String,
    /// Client secret from this environment variable.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Client secret from this file, trailing newline removed.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Time the endpoint may take; then the request is refused (fail closed, 503).
    #[serde(
        default = "default_introspection_timeout",
        deserialize_with = "de_duration"
    )]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Active tokens are cached this long at most, and never past their `exp`.
    #[serde(default = "default_cache_ttl", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub cache_ttl: Duration,
    /// Inactive tokens are cached this long.
    #[serde(default = "default_negative_ttl", deserialize_with = "de_duration")]
    #[schemars(with = "String")]
    pub negative_ttl: Duration,
    /// Tokens cached at most (memory bound).
    #[serde(default = "default_cache_entries")]
    pub max_cache_entries: usize,
    /// Claim holding roles in the introspection response.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// PEM CA bundle for the endpoint; absent uses the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_scopes_claim() -> String {
    "scope".into()
}
fn default_max_token() -> usize {
    8 * 1024
}
fn default_jwt_cache_entries() -> usize {
    10_000
}
fn default_jwt_cache_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_signed_headers() -> Vec<String> {
    vec!["host".into()]
}
fn default_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_nonce_cache() -> usize {
    100_000
}
fn default_introspection_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_cache_entries() -> usize {
    10_000
}

/// Reads a secret from exactly one of an environment variable or a file.
pub(crate) fn read_secret(
    what: &str,
    env: Option<&String>,
    file: Option<&PathBuf>,
) -> Result<Vec<u8>, String> {
    match (env, file) {
        (Some(var), None) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("{what}: environment variable `{var}` is not set")),
        (None, Some(path)) => {
            let mut bytes = std::fs::read(path)
                .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            Ok(bytes)
        }
        _ => Err(format!("{what}: set exactly one of `*_env` or `*_file`")),
    }
    .and_then(|s| {
        if s.is_empty() {
            Err(format!("{what}: the secret is empty"))
        } else {
            Ok(s)
        }
    })
}
