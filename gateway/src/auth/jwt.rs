//! JWT bearer tokens (jsonwebtoken) from issuers with static keys, a JWKS URL or OIDC discovery.
//!
//! Algorithm confusion is impossible by construction: a key is used only with algorithms of its
//! own family (an RSA key never verifies an HS256 token), an issuer's allowlist cannot mix HMAC
//! with asymmetric algorithms, remote key sets never provide HMAC keys, and `none` cannot even be
//! parsed. Header parameters `jku`, `x5u` and `jwk` are never used as key sources; `kid` is only
//! a map key.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, Jwk, PublicKeyUse},
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    Failure,
    config::{JwtIssuerConfig, NoKeys, StaticKeyConfig, read_secret},
    fetch::Fetcher,
    token_cache::{Entry, TokenCache},
};
use crate::proxy::stage::Principal;

/// Longer `kid`s are refused before any lookup.
const MAX_KID: usize = 256;

/// The last good key set per JWKS/discovery URL, for the whole process: a configuration reload
/// builds new issuers, and they must not start empty (an IdP that is down during a reload would
/// otherwise turn every token away). Only configured URLs ever land here, so it stays small.
static LAST_GOOD: std::sync::Mutex<Option<std::collections::HashMap<String, Arc<Fetched>>>> =
    std::sync::Mutex::new(None);

fn last_good(url: &str) -> Option<Arc<Fetched>> {
    LAST_GOOD.lock().ok()?.as_ref()?.get(url).cloned()
}

fn remember(url: &str, fetched: &Arc<Fetched>) {
    if let Ok(mut map) = LAST_GOOD.lock() {
        map.get_or_insert_with(Default::default)
            .insert(url.to_owned(), Arc::clone(fetched));
    }
}

/// One configured issuer, ready to verify.
#[derive(Debug)]
pub(crate) struct Issuer {
    pub(crate) name: String,
    /// No `audiences` configured: then a token naming any audience was meant for someone else.
    refuse_any_aud: bool,
    /// One validation per allowed algorithm: each pins the algorithm to exactly one.
    validations: Vec<(Algorithm, Validation)>,
    required_claims: Vec<String>,
    leeway: u64,
    pub(crate) forward: Vec<(String, HeaderName)>,
    roles_claim: String,
    scopes_claim: String,
    location: TokenLocation,
    max_token_bytes: usize,
    keys: Keys,
    no_keys: NoKeys,
    /// Verified tokens; `None` when `cache.max_entries` is 0.
    cache: Option<TokenCache>,
}

#[derive(Debug)]
enum TokenLocation {
    Bearer,
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug)]
enum Keys {
    Static(KeySet),
    Remote(Arc<RemoteKeys>),
}

/// Verification keys, each with the family it may verify.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
}

struct VerifyKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: then only that algorithm.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// Keys from a JWKS URL (directly or through discovery), fetched lazily, cached, refreshed.
#[derive(Debug)]
struct RemoteKeys {
    issuer: String,
    /// `jwks_url`, or the discovery document's URL.
    url: String,
    discovery: bool,
    fetcher: Fetcher,
    state: ArcSwapOption<Fetched>,
    fetching: tokio::sync::Mutex<FetchState>,
    refreshing: AtomicBool,
    refresh_interval: Duration,
    min_refetch: Duration,
}

#[derive(Debug)]
struct Fetched {
    keys: KeySet,
    at: Instant,
    /// Changes whenever a fetch brings a different document, never otherwise: cached
    /// verifications are valid for their generation only, and a periodic refresh that finds
    /// the same keys must not throw them all away.
    generation: u64,
    /// SHA-256 of the JWKS document as parsed, to tell whether a refresh changed it.
    digest: [u8; 32],
}

/// Key-set generations, process-wide so that no two fetches of any issuer share one (0 is the
/// static keys').
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    /// From discovery, kept once known.
    jwks_uri: Option<String>,
}

pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("algorithm `none` is never accepted".into());
    }
    name.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm `{name}`"))
}

impl Issuer {
    pub(crate) fn build(name: &str, c: &JwtIssuerConfig) -> Result<Self, String> {
        let what = format!("auth.jwt.{name}");
        if c.algorithms.is_empty() {
            return Err(format!("{what}: `algorithms` must list at least one"));
        }
        let algorithms = c
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a).map_err(|e| format!("{what}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let hmac = algorithms
            .iter()
            .filter(|a| a.family() == AlgorithmFamily::Hmac)
            .count();
        if hmac != 0 && hmac != algorithms.len() {
            return Err(format!(
                "{what}: HMAC algorithms (HS*) cannot be mixed with asymmetric ones"
            ));
        }
        let sources = usize::from(c.jwks_url.is_some())
            + usize::from(c.discovery_url.is_some())
            + usize::from(!c.keys.is_empty());
        if sources != 1 {
            return Err(format!(
                "{what}: set exactly one of `keys`, `jwks_url`, `discovery_url`"
            ));
        }
        let remote_url = c.jwks_url.as_ref().or(c.discovery_url.as_ref());
        if hmac != 0 && remote_url.is_some() {
            return Err(format!(
                "{what}: HMAC algorithms need shared secrets (`keys` with `secret_env`/`secret_file`), not a JWKS"
            ));
        }
        let keys = match remote_url {
            Some(url) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(format!("{what}: `{url}` is not an http(s) URL"));
                }
                let fetcher = Fetcher::new(
                    c.fetch_timeout,
                    c.ca.as_deref(),
                    url.starts_with("https://"),
                )
                .map_err(|e| format!("{what}: {e}"))?;
                Keys::Remote(Arc::new(RemoteKeys {
                    issuer: c.issuer.clone(),
                    url: url.clone(),
                    discovery: c.discovery_url.is_some(),
                    fetcher,
                    // Seeded with what an earlier generation fetched; refreshed as usual.
                    state: ArcSwapOption::new(last_good(url)),
                    fetching: tokio::sync::Mutex::new(FetchState::default()),
                    refreshing: AtomicBool::new(false),
                    refresh_interval: c.refresh_interval,
                    min_refetch: c.min_refetch_interval,
                }))
            }
            None => {
                let mut set = KeySet::default();
                for (i, k) in c.keys.iter().enumerate() {
                    static_key(&mut set, k).map_err(|e| format!("{what}.keys[{i}]: {e}"))?;
                }
                for k in &set.keys {
                    if !algorithms.iter().any(|a| a.family() == k.family) {
                        return Err(format!(
                            "{what}: a {:?} key cannot verify any of the listed algorithms",
                            k.family
                        ));
                    }
                }
                Keys::Static(set)
            }
        };
        let leeway = c.leeway.as_secs();
        let mut required = vec!["exp", "iss"];
        if !c.audiences.is_empty() {
            required.push("aud");
        }
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = leeway;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_issuer(&[&c.issuer]);
                v.validate_aud = !c.audiences.is_empty();
                if !c.audiences.is_empty() {
                    v.set_audience(&c.audiences);
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        let mut forward = Vec::new();
        for (claim, header) in &c.forward_claims {
            let h = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                format!("{what}.forward_claims.{claim}: bad header name `{header}`")
            })?;
            forward.push((claim.clone(), h));
        }
        let location = match (&c.header, &c.cookie) {
            (None, None) => TokenLocation::Bearer,
            (Some(h), None) => TokenLocation::Header(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("{what}.header: bad header name `{h}`"))?,
            ),
            (None, Some(c)) => TokenLocation::Cookie(c.clone()),
            (Some(_), Some(_)) => {
                return Err(format!("{what}: set `header` or `cookie`, not both"));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            refuse_any_aud: c.audiences.is_empty(),
            validations,
            required_claims: c.required_claims.clone(),
            leeway,
            forward,
            roles_claim: c.roles_claim.clone(),
            scopes_claim: c.scopes_claim.clone(),
            location,
            max_token_bytes: c.max_token_bytes,
            keys,
            no_keys: c.no_keys,
            cache: TokenCache::new(name, c.cache.max_entries, c.cache.max_ttl),
        })
    }

    /// `WWW-Authenticate` scheme for this issuer's tokens.
    pub(crate) fn bearer(&self) -> bool {
        matches!(self.location, TokenLocation::Bearer)
    }

    fn token<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, Failure> {
        let token = match &self.location {
            TokenLocation::Bearer => super::bearer_token(headers)?,
            TokenLocation::Header(name) => {
                let mut all = headers.get_all(name).iter();
                let first = all.next();
                if all.next().is_some() {
                    return Err(Failure::duplicate(name.as_str()));
                }
                first
                    .map(|v| {
                        v.to_str()
                            .map_err(|_| Failure::invalid_token("token is not ASCII"))
                    })
                    .transpose()?
            }
            TokenLocation::Cookie(name) => super::cookie(headers, name),
        };
        match token {
            Some(t) if t.len() > self.max_token_bytes => Err(Failure::rejected(
                "auth_token_too_large",
                "token larger than the limit",
            )),
            Some("") => Ok(None),
            other => Ok(other),
        }
    }

    /// Verifies the request's token; `Ok(None)` when it carries none.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(Principal, Vec<(HeaderName, HeaderValue)>)>, Failure> {
        let Some(token) = self.token(headers)? else {
            return Ok(None);
        };
        let claims = self.verify(token).await?;
        let principal = Principal {
            id: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            scheme: "jwt",
            issuer: Some(self.name.clone()),
            roles: strings(claim_path(&claims, &self.roles_claim)),
            scopes: strings(claim_path(&claims, &self.scopes_claim)),
            claims,
        };
        let mut forward = Vec::new();
        for (claim, header) in &self.forward {
            let Some(v) = claim_path(&principal.claims, claim) else {
                continue;
            };
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            match HeaderValue::from_str(&text) {
                Ok(hv) => forward.push((header.clone(), hv)),
                Err(_) => {
                    tracing::warn!(issuer = %self.name, %claim, "claim not forwarded: not a valid header value");
                }
            }
        }
        Ok(Some((principal, forward)))
    }

    /// Signature, algorithm and claims; returns the claims. A token that passed all of them
    /// before comes from the cache, with the checks that depend on the clock done again, so it
    /// gets the same answer it would get uncached.
    pub(crate) async fn verify(&self, token: &str) -> Result<Value, Failure> {
        let Some(cache) = &self.cache else {
            return self.verify_uncached(token).await.map(|(claims, _)| claims);
        };
        let key = TokenCache::key(token);
        if let Some(hit) = cache.get(&key, self.generation()) {
            self.check_clock(&hit.claims, hit.exp, hit.nbf)?;
            return Ok(Value::clone(&hit.claims));
        }
        let (claims, generation) = self.verify_uncached(token).await?;
        if let Some(entry) = Entry::new(Arc::new(claims.clone()), generation) {
            cache.insert(key, entry);
        }
        Ok(claims)
    }

    /// The generation of the keys a verification would use now (for remote keys, refreshed in
    /// the background when due, as a verification would: cache hits must not stop refreshes);
    /// `None` while remote keys were never fetched.
    fn generation(&self) -> Option<u64> {
        match &self.keys {
            Keys::Static(_) => Some(0),
            Keys::Remote(remote) => remote.loaded().map(|f| f.generation),
        }
    }

    /// The checks of [`Self::verify_uncached`] that depend on the clock, in its order and with
    /// its answers: `exp` and `nbf` as jsonwebtoken checks them, then `iat`.
    fn check_clock(&self, claims: &Value, exp: u64, nbf: Option<u64>) -> Result<(), Failure> {
        let now = jsonwebtoken::get_current_timestamp();
        if exp < now.saturating_sub(self.leeway) {
            return Err(expired());
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err(not_yet_valid());
        }
        self.check_iat(claims, now)
    }

    /// jsonwebtoken leaves `iat` alone: a token issued in the future was minted by a wrong
    /// clock or a forger.
    fn check_iat(&self, claims: &Value, now: u64) -> Result<(), Failure> {
        if claims
            .get("iat")
            .and_then(Value::as_f64)
            .is_some_and(|iat| iat > (now + self.leeway) as f64)
        {
            return Err(Failure::rejected(
                "auth_invalid_claims",
                "token issued in the future (iat)",
            ));
        }
        Ok(())
    }

    /// Every check, signature first; the claims and the generation of the keys that verified
    /// them.
    async fn verify_uncached(&self, token: &str) -> Result<(Value, u64), Failure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Failure::invalid_token("malformed token or unsupported algorithm"))?;
        let Some((alg, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg)
        else {
            return Err(Failure::invalid_token(
                "algorithm not allowed for this issuer",
            ));
        };
        let kid = header.kid.as_deref();
        if kid.is_some_and(|k| k.len() > MAX_KID) {
            return Err(Failure::invalid_token("kid too long"));
        }
        let (result, generation) = match &self.keys {
            Keys::Static(set) => (verify_with(set, token, kid, *alg, validation), 0),
            Keys::Remote(remote) => {
                let Some(fetched) = remote.current().await else {
                    return Err(self.no_keys_failure());
                };
                match verify_with(&fetched.keys, token, kid, *alg, validation) {
                    Err(VerifyError::NoKey) => {
                        // Possibly a rotation: refetch (rate-limited), then try once more.
                        remote.refetch().await;
                        match remote.state.load_full() {
                            Some(f) => (
                                verify_with(&f.keys, token, kid, *alg, validation),
                                f.generation,
                            ),
                            None => return Err(self.no_keys_failure()),
                        }
                    }
                    other => (other, fetched.generation),
                }
            }
        };
        let claims = result.map_err(VerifyError::into_failure)?;
        self.check_iat(&claims, jsonwebtoken::get_current_timestamp())?;
        if self.refuse_any_aud && claims.get("aud").is_some() {
            return Err(Failure::rejected(
                "auth_invalid_claims",
                "token names an audience; this issuer accepts none",
            ));
        }
        if let Some(missing) = self
            .required_claims
            .iter()
            .find(|c| claim_path(&claims, c).is_none())
        {
            return Err(Failure::rejected(
                "auth_invalid_claims",
                format!("required claim `{missing}` missing"),
            ));
        }
        Ok((claims, generation))
    }

    fn no_keys_failure(&self) -> Failure {
        match self.no_keys {
            NoKeys::FailClosed => Failure::Unavailable("no signing keys available".into()),
            NoKeys::Unauthenticated => {
                Failure::invalid_token("no signing keys available to verify the token")
            }
        }
    }
}

enum VerifyError {
    NoKey,
    Jwt(ErrorKind),
}

impl VerifyError {
    fn into_failure(self) -> Failure {
        match self {
            Self::NoKey => Failure::invalid_token("no key for this token's kid and algorithm"),
            Self::Jwt(kind) => match kind {
                ErrorKind::ExpiredSignature => expired(),
                ErrorKind::ImmatureSignature => not_yet_valid(),
                ErrorKind::InvalidAudience => {
                    Failure::rejected("auth_invalid_claims", "wrong audience (aud)")
                }
                ErrorKind::InvalidIssuer => {
                    Failure::rejected("auth_invalid_claims", "wrong issuer (iss)")
                }
                ErrorKind::MissingRequiredClaim(c) => Failure::rejected(
                    "auth_invalid_claims",
                    format!("required claim `{c}` missing"),
                ),
                ErrorKind::InvalidSignature => Failure::invalid_token("bad signature"),
                _ => Failure::invalid_token("malformed token"),
            },
        }
    }
}

/// `exp` passed (leeway included); the same answer cached or not.
fn expired() -> Failure {
    Failure::rejected("auth_expired", "token expired")
}

/// `nbf` not reached (leeway included); the same answer cached or not.
fn not_yet_valid() -> Failure {
    Failure::rejected("auth_invalid_claims", "token not valid yet (nbf)")
}

fn verify_with(
    set: &KeySet,
    token: &str,
    kid: Option<&str>,
    alg: Algorithm,
    validation: &Validation,
) -> Result<Value, VerifyError> {
    let mut last = VerifyError::NoKey;
    for key in set.keys.iter().filter(|k| {
        k.family == alg.family()
            && k.alg.is_none_or(|a| a == alg)
            // A key without `kid` is tried for any token; a token without `kid` tries every key
            // of the right family.
            && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
    }) {
        match jsonwebtoken::decode::<Value>(token, &key.key, validation) {
            Ok(data) => return Ok(data.claims),
            // Another key with the same kid (or no kid) may still match.
            Err(e) if *e.kind() == ErrorKind::InvalidSignature => {
                last = VerifyError::Jwt(ErrorKind::InvalidSignature);
            }
            Err(e) => return Err(VerifyError::Jwt(e.into_kind())),
        }
    }
    Err(last)
}

fn static_key(set: &mut KeySet, k: &StaticKeyConfig) -> Result<(), String> {
    let n = usize::from(k.pem_file.is_some())
        + usize::from(k.jwks_file.is_some())
        + usize::from(k.secret_env.is_some() || k.secret_file.is_some());
    if n != 1 {
        return Err("set exactly one of pem_file, jwks_file, secret_env, secret_file".into());
    }
    if let Some(path) = &k.pem_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = DecodingKey::from_rsa_pem(&pem)
            .or_else(|_| DecodingKey::from_ec_pem(&pem))
            .or_else(|_| DecodingKey::from_ed_pem(&pem))
            .map_err(|_| format!("{}: not an RSA, EC or Ed25519 public key", path.display()))?;
        set.keys.push(VerifyKey {
            kid: k.kid.clone(),
            alg: None,
            family: key.family(),
            key,
        });
    } else if let Some(path) = &k.jwks_file {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let parsed = parse_jwks(&doc);
        if parsed.keys.is_empty() {
            return Err(format!("{}: no usable signing key", path.display()));
        }
        set.keys.extend(parsed.keys);
    } else {
        let secret = read_secret("secret", k.secret_env.as_ref(), k.secret_file.as_ref())?;
        let key = DecodingKey::from_secret(&secret);
        set.keys.push(VerifyKey {
            kid: k.kid.clone(),
            alg: None,
            family: AlgorithmFamily::Hmac,
            key,
        });
    }
    Ok(())
}

/// The usable signature keys of a JWKS document; others (encryption keys, symmetric keys,
/// unknown types) are skipped, so one odd key does not cost the whole set.
pub(crate) fn parse_jwks(doc: &Value) -> KeySet {
    let mut set = KeySet::default();
    for raw in doc
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            continue;
        }
        // A shared secret published in a JWKS would let anyone who reads it sign tokens.
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            Some(a) => match Algorithm::try_from(a) {
                Ok(a) => Some(a),
                Err(_) => continue,
            },
            None => None,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        set.keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            family: key.family(),
            key,
        });
    }
    set
}

impl RemoteKeys {
    /// The cached keys (refreshed in the background when older than the interval), or the
    /// first fetch's result.
    async fn current(self: &Arc<Self>) -> Option<Arc<Fetched>> {
        if let Some(f) = self.loaded() {
            return Some(f);
        }
        self.refetch().await;
        self.state.load_full()
    }

    /// The cached keys, if any, starting a background refresh when they are due.
    fn loaded(self: &Arc<Self>) -> Option<Arc<Fetched>> {
        let f = self.state.load_full()?;
        if f.at.elapsed() >= self.refresh_interval && !self.refreshing.swap(true, Ordering::AcqRel)
        {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.refetch().await;
                me.refreshing.store(false, Ordering::Release);
            });
        }
        Some(f)
    }

    /// Fetches unless a fetch happened within `min_refetch` (whatever its outcome): one request
    /// fetches, the others wait for it and use its result. A failure keeps the last good keys.
    async fn refetch(&self) {
        let mut st = self.fetching.lock().await;
        if st
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.min_refetch)
        {
            return;
        }
        st.last_attempt = Some(Instant::now());
        match self.fetch(&mut st).await {
            Ok((keys, digest)) => {
                let generation = match self.state.load().as_ref() {
                    Some(prev) if prev.digest == digest => prev.generation,
                    _ => NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
                };
                tracing::info!(url = %self.url, keys = keys.keys.len(), generation, "JWKS fetched");
                let fetched = Arc::new(Fetched {
                    keys,
                    at: Instant::now(),
                    generation,
                    digest,
                });
                remember(&self.url, &fetched);
                self.state.store(Some(fetched));
            }
            Err(e) => {
                let kept = self.state.load().is_some();
                tracing::warn!(url = %self.url, error = %e, kept_last_good = kept, "JWKS fetch failed");
            }
        }
    }

    /// The key set and the SHA-256 of the document it came from.
    async fn fetch(&self, st: &mut FetchState) -> Result<(KeySet, [u8; 32]), String> {
        let jwks_uri = if self.discovery {
            match &st.jwks_uri {
                Some(u) => u.clone(),
                None => {
                    let doc = self
                        .fetcher
                        .get_json(&self.url)
                        .await
                        .map_err(|e| format!("discovery: {e}"))?;
                    // OIDC Discovery 1.0 section 4.3: the document must name the issuer we trust.
                    if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
                        return Err("discovery: `issuer` differs from the configured issuer".into());
                    }
                    let uri = doc
                        .get("jwks_uri")
                        .and_then(Value::as_str)
                        .ok_or("discovery: no `jwks_uri`")?
                        .to_owned();
                    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                        return Err("discovery: `jwks_uri` is not an http(s) URL".into());
                    }
                    st.jwks_uri = Some(uri.clone());
                    uri
                }
            }
        } else {
            self.url.clone()
        };
        let doc = self
            .fetcher
            .get_json(&jwks_uri)
            .await
            .map_err(|e| format!("jwks: {e}"))?;
        let keys = parse_jwks(&doc);
        if keys.keys.is_empty() {
            return Err("jwks: no usable signing key".into());
        }
        // Serialised from the parsed value: the same document always gives the same bytes.
        let digest = serde_json::to_vec(&doc)
            .map(|bytes| Sha256::digest(&bytes).into())
            .map_err(|e| format!("jwks: {e}"))?;
        Ok((keys, digest))
    }
}

/// `a.b.c` into nested objects; a key containing dots is tried whole first.
pub(crate) fn claim_path<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// Roles or scopes: an array of strings, or one space-separated string (OAuth `scope`).
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_never_an_algorithm() {
        for n in ["none", "None", "NONE", "nOnE"] {
            assert!(parse_algorithm(n).is_err(), "{n}");
        }
        assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
    }

    #[test]
    fn scopes_from_string_or_array() {
        let claims =
            serde_json::json!({"scope": "a b", "scp": ["c", "d"], "realm": {"roles": ["x"]}});
        assert_eq!(strings(claim_path(&claims, "scope")), ["a", "b"]);
        assert_eq!(strings(claim_path(&claims, "scp")), ["c", "d"]);
        assert_eq!(strings(claim_path(&claims, "realm.roles")), ["x"]);
        assert!(strings(claim_path(&claims, "missing")).is_empty());
    }

    #[test]
    fn jwks_skips_symmetric_and_encryption_keys() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "s"},
            {"kty": "OKP", "crv": "Ed25519", "use": "enc", "kid": "e",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ok",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird"}
        ]});
        let set = parse_jwks(&doc);
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("ok"));
        assert_eq!(set.keys[0].family, AlgorithmFamily::Ed);
    }

    #[test]
    fn hmac_cannot_be_mixed_or_fetched() {
        let mut c: JwtIssuerConfig = serde_yaml::from_str(
            "{ issuer: i, jwks_url: 'http://127.0.0.1:1/jwks', algorithms: [HS256] }",
        )
        .expect("yaml");
        assert!(
            Issuer::build("x", &c)
                .expect_err("refused")
                .contains("shared secrets")
        );
        c.algorithms = vec!["RS256".into(), "HS256".into()];
        assert!(
            Issuer::build("x", &c)
                .expect_err("refused")
                .contains("mixed")
        );
        c.algorithms = vec!["none".into()];
        assert!(
            Issuer::build("x", &c)
                .expect_err("refused")
                .contains("never")
        );
    }

    /// A static RS256 issuer (the integration tests' key) with leeway 0 and `extra` YAML.
    fn rsa_issuer(name: &str, extra: &str) -> Issuer {
        let pub_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt-rsa.pub");
        let c: JwtIssuerConfig = serde_yaml::from_str(&format!(
            "{{ issuer: i, keys: [{{ pem_file: '{pub_pem}' }}], algorithms: [RS256], leeway: 0s {extra} }}"
        ))
        .expect("yaml");
        Issuer::build(name, &c).expect("issuer")
    }

    fn rs256(claims: &Value) -> String {
        crate::auth::jwt_crypto::install();
        let pem = include_bytes!("../../tests/fixtures/jwt-rsa.key");
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem).expect("rsa key");
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::RS256), claims, &key)
            .expect("sign")
    }

    fn lookups(issuer: &str) -> (u64, u64) {
        crate::auth::jwt_cache_lookups()
            .into_iter()
            .find(|(name, ..)| name == issuer)
            .map_or((0, 0), |(_, h, m)| (h, m))
    }

    fn answer(r: Result<Value, Failure>) -> String {
        match r {
            Ok(claims) => format!("ok {}", claims["sub"]),
            Err(f) => format!("{f:?}"),
        }
    }

    #[tokio::test]
    async fn a_repeated_token_is_a_hit_and_failures_are_never_cached() {
        let issuer = rsa_issuer("unit-cache-hits", "");
        let now = jsonwebtoken::get_current_timestamp();
        let token = rs256(&serde_json::json!({"iss": "i", "sub": "alice", "exp": now + 300}));
        for round in 0..3u64 {
            assert_eq!(answer(issuer.verify(&token).await), "ok \"alice\"");
            assert_eq!(lookups("unit-cache-hits"), (round, 1), "round {round}");
        }
        // A flipped signature character: refused every time, never stored.
        let at = token.len() - 10;
        let swap = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
        for _ in 0..3 {
            assert!(answer(issuer.verify(&forged).await).contains("bad signature"));
        }
        assert_eq!(issuer.cache.as_ref().expect("on").len(), 1);
        assert_eq!(lookups("unit-cache-hits"), (2, 4));
        // What operators see on /metrics.
        let text = crate::telemetry::metrics::Metrics::new()
            .encode()
            .expect("encode");
        for (result, n) in [("hit", 2.0), ("miss", 4.0)] {
            assert_eq!(
                crate::telemetry::metrics::sample(
                    &text,
                    "gateway_jwt_cache_lookups_total",
                    &[("issuer", "unit-cache-hits"), ("result", result)]
                ),
                Some(n),
                "{text}"
            );
        }
    }

    /// What a cached token gets once the clock moved on is exactly what the same token would
    /// get uncached: entries are planted as a verification long ago would have left them.
    #[tokio::test]
    async fn hits_redo_the_clock_checks_with_the_uncached_answers() {
        let cached = rsa_issuer("unit-cache-clock", "");
        let uncached = rsa_issuer("unit-cache-clock-off", ", cache: { max_entries: 0 }");
        assert!(uncached.cache.is_none());
        let now = jsonwebtoken::get_current_timestamp();
        for (what, claims) in [
            (
                "exp",
                serde_json::json!({"iss": "i", "sub": "a", "exp": now - 5}),
            ),
            (
                "nbf",
                serde_json::json!({"iss": "i", "sub": "a", "exp": now + 300, "nbf": now + 100}),
            ),
            (
                "iat",
                serde_json::json!({"iss": "i", "sub": "a", "exp": now + 300, "iat": now + 100}),
            ),
            (
                "valid",
                serde_json::json!({"iss": "i", "sub": "a", "exp": now + 300, "nbf": now - 1, "iat": now}),
            ),
        ] {
            let token = rs256(&claims);
            let entry = Entry::new(Arc::new(claims), 0).expect("entry");
            let cache = cached.cache.as_ref().expect("on");
            cache.insert(TokenCache::key(&token), entry);
            let (hits, _) = lookups("unit-cache-clock");
            assert_eq!(
                answer(cached.verify(&token).await),
                answer(uncached.verify(&token).await),
                "{what}"
            );
            assert_eq!(lookups("unit-cache-clock").0, hits + 1, "{what}: a hit");
        }
        let expired = rs256(&serde_json::json!({"iss": "i", "sub": "a", "exp": now - 5}));
        assert!(answer(uncached.verify(&expired).await).contains("auth_expired"));
        assert_eq!(
            lookups("unit-cache-clock-off"),
            (0, 0),
            "no cache, no lookups"
        );
    }

    /// RFC 7515 appendix A.1: the HS256 example verifies with its key. Its `exp` (2011) is long
    /// past, so expiry is checked separately: the same token is then refused as expired.
    #[test]
    fn rfc7515_a1_hs256_example() {
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct",
            "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
        }))
        .expect("jwk");
        let key = DecodingKey::from_jwk(&jwk).expect("key");
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.set_required_spec_claims::<&str>(&[]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).expect("A.1 verifies");
        assert_eq!(data.claims["iss"], "joe");
        assert_eq!(data.claims["http://example.com/is_root"], true);
        // One flipped signature character: refused.
        let tampered = format!("{}A", &token[..token.len() - 1]);
        assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &v).is_err());
        v.validate_exp = true;
        let e = jsonwebtoken::decode::<Value>(token, &key, &v).expect_err("expired");
        assert_eq!(*e.kind(), ErrorKind::ExpiredSignature);
    }
}
