//! API keys from a header or query parameter, stored only as SHA-256 hashes. SHA-256 rather
//! than a password hash (argon2) because keys are random and long: there is nothing to brute
//! force, and a deliberately slow hash would cost every request milliseconds of CPU. Every
//! stored hash is compared in constant time (`subtle`), the key id (never the key) is logged,
//! and the key file is re-read when it changes.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Uri, request::Parts};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::{
    Failure, Success,
    config::{ApiKeyEntry, ApiKeysConfig},
};
use crate::proxy::stage::Principal;

/// The key file is looked at (one `stat`) at most this often.
const FILE_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct ApiKeys {
    name: String,
    location: Location,
    inline: Vec<Key>,
    file: Option<PathBuf>,
    /// Inline keys plus the file's, swapped whole when the file changes.
    keys: ArcSwap<Vec<Key>>,
    file_state: Mutex<FileState>,
    /// Per key id with a rate limit: tokens left and when they were counted.
    buckets: Mutex<std::collections::HashMap<String, (f64, Instant)>>,
}

#[derive(Debug)]
enum Location {
    Header(HeaderName),
    Query(String),
}

#[derive(Debug)]
struct FileState {
    checked: Instant,
    modified: Option<SystemTime>,
}

#[derive(Clone)]
struct Key {
    id: String,
    digest: [u8; 32],
    owner: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    expires: Option<SystemTime>,
    /// Burst and refill per second.
    limit: Option<(f64, f64)>,
}

// By hand: the digest has no business in logs either.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<ApiKeyEntry>,
}

fn compile(entries: &[ApiKeyEntry], what: &str) -> Result<Vec<Key>, String> {
    entries
        .iter()
        .map(|e| {
            let digest: [u8; 32] = super::unhex(e.sha256.trim())
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| format!("{what}: key `{}`: sha256 must be 64 hex digits", e.id))?;
            let expires = e
                .expires
                .as_deref()
                .map(|t| {
                    humantime::parse_rfc3339_weak(t)
                        .map_err(|err| format!("{what}: key `{}`: expires `{t}`: {err}", e.id))
                })
                .transpose()?;
            let limit = match &e.rate_limit {
                None => None,
                Some(r) if r.requests == 0 || r.per.is_zero() => {
                    return Err(format!(
                        "{what}: key `{}`: rate_limit needs requests and per above 0",
                        e.id
                    ));
                }
                Some(r) => Some((
                    f64::from(r.requests),
                    f64::from(r.requests) / r.per.as_secs_f64(),
                )),
            };
            Ok(Key {
                limit,
                id: e.id.clone(),
                digest,
                owner: e.owner.clone(),
                roles: e.roles.clone(),
                scopes: e.scopes.clone(),
                expires,
            })
        })
        .collect()
}

fn read_file(path: &PathBuf, what: &str) -> Result<(Vec<Key>, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{what}: {}: {e}", path.display()))?;
    let file: KeyFile =
        serde_yaml::from_str(&text).map_err(|e| format!("{what}: {}: {e}", path.display()))?;
    Ok((compile(&file.keys, what)?, modified))
}

impl ApiKeys {
    pub(crate) fn build(name: &str, c: &ApiKeysConfig) -> Result<Self, String> {
        let what = format!("auth.api_keys.{name}");
        let location = match (&c.header, &c.query) {
            (Some(_), Some(_)) => return Err(format!("{what}: set `header` or `query`, not both")),
            (None, Some(q)) => Location::Query(q.clone()),
            (h, None) => {
                let h = h.as_deref().unwrap_or("x-api-key");
                Location::Header(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("{what}.header: bad header name `{h}`"))?,
                )
            }
        };
        let inline = compile(&c.keys, &what)?;
        let mut all = inline.clone();
        let mut modified = None;
        if let Some(path) = &c.file {
            let (keys, m) = read_file(path, &what)?;
            all.extend(keys);
            modified = m;
        }
        if all.is_empty() {
            return Err(format!("{what}: no keys (set `keys` or `file`)"));
        }
        Ok(Self {
            name: name.to_owned(),
            location,
            inline,
            file: c.file.clone(),
            keys: ArcSwap::from_pointee(all),
            file_state: Mutex::new(FileState {
                checked: Instant::now(),
                modified,
            }),
            buckets: Mutex::new(std::collections::HashMap::new()),
        })
    }

    pub(crate) fn challenge(&self) -> String {
        match &self.location {
            Location::Header(h) => format!("ApiKey realm=\"gateway\", header=\"{h}\""),
            Location::Query(q) => format!("ApiKey realm=\"gateway\", query=\"{q}\""),
        }
    }

    /// Re-reads the key file when its modification time changed; a broken file keeps the
    /// keys in use (and says so).
    fn maybe_reload(&self) {
        let Some(path) = &self.file else { return };
        // Whoever holds the lock is already checking.
        let Ok(mut st) = self.file_state.try_lock() else {
            return;
        };
        if st.checked.elapsed() < FILE_CHECK {
            return;
        }
        st.checked = Instant::now();
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified == st.modified {
            return;
        }
        match read_file(path, &format!("auth.api_keys.{}", self.name)) {
            Ok((keys, m)) => {
                let mut all = self.inline.clone();
                all.extend(keys);
                tracing::info!(set = %self.name, file = %path.display(), keys = all.len(), "API key file reloaded");
                self.keys.store(Arc::new(all));
                st.modified = m;
            }
            Err(e) => {
                st.modified = modified;
                tracing::warn!(set = %self.name, error = %e, "API key file not reloaded: keeping the keys in use");
            }
        }
    }

    pub(crate) fn authenticate(&self, parts: &mut Parts) -> Result<Option<Success>, Failure> {
        let presented: String = match &self.location {
            Location::Header(h) => match super::single(&parts.headers, h)? {
                None => return Ok(None),
                Some(v) => v
                    .to_str()
                    .map_err(|_| Failure::rejected("auth_invalid_key", "API key is not ASCII"))?
                    .trim()
                    .to_owned(),
            },
            Location::Query(name) => {
                let mut found = None;
                for pair in parts.uri.query().unwrap_or("").split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if percent_decode(k).as_deref() == Some(name.as_str()) {
                        if found.is_some() {
                            return Err(Failure::duplicate(name));
                        }
                        found = Some(percent_decode(v).ok_or_else(|| {
                            Failure::rejected("auth_invalid_key", "API key is badly encoded")
                        })?);
                    }
                }
                match found {
                    None => return Ok(None),
                    Some(k) => k,
                }
            }
        };
        if presented.is_empty() {
            return Ok(None);
        }
        self.maybe_reload();
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let keys = self.keys.load();
        // Every stored hash is compared, whichever matches: the time taken says nothing about
        // which key (or how much of one) matched.
        let mut hit: Option<&Key> = None;
        for k in keys.iter() {
            if bool::from(k.digest.ct_eq(&digest)) {
                hit = Some(k);
            }
        }
        let Some(key) = hit else {
            return Err(Failure::rejected("auth_invalid_key", "unknown API key"));
        };
        if key.expires.is_some_and(|t| t <= SystemTime::now()) {
            tracing::info!(set = %self.name, key_id = %key.id, "expired API key presented");
            return Err(Failure::rejected("auth_expired", "API key expired"));
        }
        if let Some((burst, per_sec)) = key.limit {
            let mut buckets = self
                .buckets
                .lock()
                .map_err(|_| Failure::Unavailable("rate limit state unavailable".into()))?;
            let now = Instant::now();
            let (tokens, at) = buckets.entry(key.id.clone()).or_insert((burst, now));
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(burst);
            *at = now;
            if *tokens < 1.0 {
                let wait = ((1.0 - *tokens) / per_sec).ceil() as u64;
                tracing::info!(set = %self.name, key_id = %key.id, "API key over its rate limit");
                return Err(Failure::RateLimited(wait));
            }
            *tokens -= 1.0;
        }
        // The upstream never sees the key.
        match &self.location {
            Location::Header(h) => {
                parts.headers.remove(h);
            }
            Location::Query(name) => strip_query_param(&mut parts.uri, name),
        }
        let principal = Principal {
            id: key.id.clone(),
            scheme: "api_key",
            issuer: Some(self.name.clone()),
            roles: key.roles.clone(),
            scopes: key.scopes.clone(),
            claims: match &key.owner {
                Some(o) => serde_json::json!({ "owner": o }),
                None => serde_json::Value::Null,
            },
        };
        Ok(Some((principal, Vec::<(HeaderName, HeaderValue)>::new())))
    }
}

fn strip_query_param(uri: &mut Uri, name: &str) {
    let Some(q) = uri.query() else { return };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(k).as_deref() != Some(name)
        })
        .collect();
    let target = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    if let Ok(u) = target.parse() {
        *uri = u;
    }
}

/// `application/x-www-form-urlencoded` value decoding (`+` is a space); `None` when invalid.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(yaml: &str) -> ApiKeys {
        let c: ApiKeysConfig = serde_yaml::from_str(yaml).expect("yaml");
        ApiKeys::build("main", &c).expect("build")
    }

    fn sha(k: &str) -> String {
        super::super::hex(&Sha256::digest(k.as_bytes()))
    }

    fn parts(uri: &str, key: Option<&str>) -> Parts {
        let mut b = http::Request::get(uri);
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn hash_match_expiry_and_unknown() {
        let k = keys(&format!(
            "keys: [{{ id: live, sha256: {}, roles: [r] }}, {{ id: old, sha256: {}, expires: '2001-01-01T00:00:00Z' }}]",
            sha("live-key"),
            sha("old-key")
        ));
        let mut p = parts("/x", Some("live-key"));
        let (principal, _) = k.authenticate(&mut p).expect("ok").expect("principal");
        assert_eq!(principal.id, "live");
        assert_eq!(principal.roles, ["r"]);
        assert!(p.headers.get("x-api-key").is_none(), "key not forwarded");
        let e = k
            .authenticate(&mut parts("/x", Some("old-key")))
            .expect_err("expired");
        assert_eq!(e.code(), "auth_expired");
        let e = k
            .authenticate(&mut parts("/x", Some("nope")))
            .expect_err("unknown");
        assert_eq!(e.code(), "auth_invalid_key");
        assert!(
            k.authenticate(&mut parts("/x", None))
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn query_keys_are_decoded_and_removed() {
        let k = keys(&format!(
            "query: api_key\nkeys: [{{ id: q, sha256: {} }}]",
            sha("a b/c")
        ));
        let mut p = parts("/x?z=1&api_key=a+b%2Fc&y=2", None);
        let (principal, _) = k.authenticate(&mut p).expect("ok").expect("principal");
        assert_eq!(principal.id, "q");
        assert_eq!(p.uri.query(), Some("z=1&y=2"));
        let e = k
            .authenticate(&mut parts("/x?api_key=1&api_key=2", None))
            .expect_err("twice");
        assert!(matches!(e, Failure::Duplicate(_)));
    }

    #[test]
    fn per_key_rate_limit() {
        let k = keys(&format!(
            "keys: [{{ id: a, sha256: {}, rate_limit: {{ requests: 2, per: 1h }} }}, {{ id: b, sha256: {} }}]",
            sha("key-a"),
            sha("key-b")
        ));
        for _ in 0..2 {
            assert!(k.authenticate(&mut parts("/x", Some("key-a"))).is_ok());
        }
        let e = k
            .authenticate(&mut parts("/x", Some("key-a")))
            .expect_err("third in the hour");
        assert!(matches!(e, Failure::RateLimited(s) if s > 0), "{e:?}");
        // Other keys have their own (here: no) limit.
        for _ in 0..5 {
            assert!(k.authenticate(&mut parts("/x", Some("key-b"))).is_ok());
        }
    }

    #[test]
    fn bad_hash_is_a_config_error() {
        let c: ApiKeysConfig =
            serde_yaml::from_str("keys: [{ id: a, sha256: 'abc' }]").expect("yaml");
        assert!(
            ApiKeys::build("m", &c)
                .expect_err("refused")
                .contains("64 hex")
        );
    }
}
