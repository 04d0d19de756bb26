//! An external OPA over HTTP: `POST {"input": ...}`, allowed when `result` is `true` (or
//! `result.allow` is). Identical inputs within `cache_ttl` reuse the decision.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::OpaConfig;
use crate::auth::fetch::Fetcher;

pub(super) struct Opa {
    url: String,
    fetcher: Fetcher,
    cache_ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<[u8; 32], (Instant, bool)>>,
}

impl Opa {
    pub(super) fn build(c: &OpaConfig) -> Result<Self, String> {
        if !(c.url.starts_with("https://") || c.url.starts_with("http://")) {
            return Err(format!("`{}` is not an http(s) URL", c.url));
        }
        Ok(Self {
            url: c.url.clone(),
            fetcher: Fetcher::new(c.timeout, c.ca.as_deref(), c.url.starts_with("https://"))?,
            cache_ttl: c.cache_ttl,
            max_entries: c.max_cache_entries.max(1),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub(super) async fn decide(&self, input: Value) -> Result<bool, String> {
        let body = serde_json::to_vec(&serde_json::json!({ "input": input }))
            .map_err(|e| e.to_string())?;
        let key: [u8; 32] = Sha256::digest(&body).into();
        if let Some(hit) = self.cache.lock().ok().and_then(|c| {
            c.get(&key)
                .filter(|(until, _)| *until > Instant::now())
                .map(|(_, d)| *d)
        }) {
            return Ok(hit);
        }
        let req = Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let doc = self.fetcher.json(req).await.map_err(|e| e.to_string())?;
        let decision = match doc.get("result") {
            Some(Value::Bool(b)) => *b,
            Some(r) => r.get("allow").and_then(Value::as_bool).unwrap_or(false),
            // Undefined decision: OPA's way of saying no rule matched.
            None => false,
        };
        if !self.cache_ttl.is_zero()
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= self.max_entries {
                let now = Instant::now();
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= self.max_entries {
                    cache.clear();
                }
            }
            cache.insert(key, (Instant::now() + self.cache_ttl, decision));
        }
        Ok(decision)
    }
}
