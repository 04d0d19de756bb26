//! OAuth2 token introspection (RFC 7662) for opaque bearer tokens: the gateway asks the
//! authorisation server with its client credentials, caches active answers until the token's
//! `exp` (at most `cache_ttl`) and inactive ones for `negative_ttl`, and refuses the request
//! (503) when the server cannot answer in time: fail closed.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    Failure, Success,
    config::{IntrospectionConfig, read_secret},
    fetch::Fetcher,
    jwt::{claim_path, strings},
};
use crate::proxy::stage::Principal;

/// Longer bearer tokens are refused before anything is sent.
const MAX_TOKEN: usize = 8 * 1024;

/// An answer and until when it may be reused.
type Cached = (Instant, Option<Principal>);

#[derive(Debug)]
pub(crate) struct Introspector {
    name: String,
    url: String,
    basic: HeaderValue,
    fetcher: Fetcher,
    cache_ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    roles_claim: String,
    /// SHA-256 of the token (the token itself is not kept) -> answer and its expiry.
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

/// RFC 6749 section 2.3.1: client id and secret are form-encoded before Basic.
fn form_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Introspector {
    pub(crate) fn build(name: &str, c: &IntrospectionConfig) -> Result<Self, String> {
        let what = format!("auth.introspection.{name}");
        if !(c.url.starts_with("https://") || c.url.starts_with("http://")) {
            return Err(format!("{what}.url: `{}` is not an http(s) URL", c.url));
        }
        let secret = read_secret(
            &format!("{what}.client_secret"),
            c.client_secret_env.as_ref(),
            c.client_secret_file.as_ref(),
        )?;
        let credentials = format!(
            "{}:{}",
            form_encode(c.client_id.as_bytes()),
            form_encode(&secret)
        );
        let mut basic = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
        .map_err(|_| format!("{what}: client credentials are not a valid header"))?;
        basic.set_sensitive(true);
        let fetcher = Fetcher::new(c.timeout, c.ca.as_deref(), c.url.starts_with("https://"))
            .map_err(|e| format!("{what}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            url: c.url.clone(),
            basic,
            fetcher,
            cache_ttl: c.cache_ttl,
            negative_ttl: c.negative_ttl,
            max_entries: c.max_cache_entries.max(1),
            roles_claim: c.roles_claim.clone(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) async fn authenticate(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Option<Success>, Failure> {
        let Some(token) = super::bearer_token(headers)? else {
            return Ok(None);
        };
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN {
            return Err(Failure::rejected(
                "auth_token_too_large",
                "token larger than the limit",
            ));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.cache.lock().ok().and_then(|c| {
            c.get(&digest)
                .filter(|(until, _)| *until > Instant::now())
                .map(|(_, p)| p.clone())
        });
        let answer = match cached {
            Some(answer) => answer,
            None => {
                let (answer, ttl) = self.ask(token).await?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= self.max_entries {
                        let now = Instant::now();
                        cache.retain(|_, (until, _)| *until > now);
                        // Still full of live entries: start over rather than grow.
                        if cache.len() >= self.max_entries {
                            cache.clear();
                        }
                    }
                    if !ttl.is_zero() {
                        cache.insert(digest, (Instant::now() + ttl, answer.clone()));
                    }
                }
                answer
            }
        };
        match answer {
            Some(p) => Ok(Some((p, Vec::new()))),
            None => Err(Failure::invalid_token("token not active")),
        }
    }

    /// One introspection call: the principal (or `None` when inactive) and how long to cache.
    async fn ask(&self, token: &str) -> Result<(Option<Principal>, Duration), Failure> {
        let body = format!(
            "token={}&token_type_hint=access_token",
            form_encode(token.as_bytes())
        );
        let req = Request::post(&self.url)
            .header(header::AUTHORIZATION, self.basic.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Failure::Unavailable("introspection request invalid".into()))?;
        let doc = self.fetcher.json(req).await.map_err(|e| {
            tracing::warn!(endpoint = %self.name, error = %e, "introspection failed: refusing (fail closed)");
            Failure::Unavailable("token introspection unavailable".into())
        })?;
        if doc.get("active").and_then(Value::as_bool) != Some(true) {
            return Ok((None, self.negative_ttl));
        }
        let now = jsonwebtoken::get_current_timestamp();
        let mut ttl = self.cache_ttl;
        if let Some(exp) = doc.get("exp").and_then(Value::as_u64) {
            if exp <= now {
                return Ok((None, self.negative_ttl));
            }
            ttl = ttl.min(Duration::from_secs(exp - now));
        }
        let id = ["sub", "username", "client_id"]
            .iter()
            .find_map(|k| doc.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned();
        let principal = Principal {
            id,
            scheme: "introspection",
            issuer: Some(self.name.clone()),
            roles: strings(claim_path(&doc, &self.roles_claim)),
            scopes: strings(doc.get("scope")),
            claims: doc,
        };
        Ok((Some(principal), ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::form_encode;

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode(b"a b+c/d~"), "a%20b%2Bc%2Fd~");
    }
}
