//! A bounded cache of verified JWTs per issuer, so a client that sends the same token for its
//! whole lifetime pays for the signature check once (ES256/EdDSA cost ~100 us each with ring).
//!
//! Correct by construction:
//! - the key is the SHA-256 of the whole token: a hit means the very same bytes were verified
//!   before (a truncated or non-cryptographic hash could let a forged token collide with a good
//!   one, an authentication bypass);
//! - only tokens that passed every check are inserted, so nothing an attacker sends can poison
//!   the cache or make a refusal sticky;
//! - the checks that depend on the clock (`exp`, `nbf`, `iat`) are redone by the caller on every
//!   hit; everything else depends only on the token and the issuer's configuration, which cannot
//!   change for the life of an issuer (a reload builds new issuers with empty caches);
//! - each entry carries the generation of the key set that verified it: after a JWKS refresh that
//!   changed the keys, older entries are misses and the token is verified again against the new
//!   keys;
//! - `max_ttl` bounds how long a verification is trusted whatever the token's `exp`.
//!
//! Eviction: quick_cache, a sharded concurrent cache (one `RwLock` per shard, reads do not
//! serialise workers) with S3-FIFO-like eviction: scan resistant, so a burst of one-off tokens
//! does not flush the tokens of steady clients, as an LRU or clear-on-full would.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// SHA-256 of a whole token.
pub(crate) type Key = [u8; 32];

/// What a hit gives back: the claims and what the clock checks need.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) claims: Arc<Value>,
    /// `exp` as jsonwebtoken reads it (seconds; a fraction rounded).
    pub(crate) exp: u64,
    pub(crate) nbf: Option<u64>,
    /// The key set that verified the token: 0 for static keys, a fetch generation otherwise.
    pub(crate) generation: u64,
    inserted: Instant,
}

impl Entry {
    /// `None` when `exp` is missing or not a number: never the case for a verified token (the
    /// issuer requires `exp`), but such a token is then simply not cached.
    pub(crate) fn new(claims: Arc<Value>, generation: u64) -> Option<Self> {
        let exp = numeric_date(claims.get("exp")?)?;
        let nbf = match claims.get("nbf") {
            None | Some(Value::Null) => None,
            Some(v) => Some(numeric_date(v)?),
        };
        Some(Self {
            claims,
            exp,
            nbf,
            generation,
            inserted: Instant::now(),
        })
    }
}

/// A JWT NumericDate read as jsonwebtoken 11 reads `exp`/`nbf` (`validation::numeric_type`):
/// a non-negative integer, or a finite non-negative float rounded. Anything else fails, as it
/// fails validation there.
fn numeric_date(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then(|| f.round() as u64)
}

/// Lookups per issuer name since the process started: kept across reloads (which build new
/// caches), as a Prometheus counter must only grow. One entry per configured issuer name.
static LOOKUPS: Mutex<BTreeMap<String, Arc<Lookups>>> = Mutex::new(BTreeMap::new());

#[derive(Debug, Default)]
struct Lookups {
    hits: AtomicU64,
    misses: AtomicU64,
}

fn lookups_for(issuer: &str) -> Arc<Lookups> {
    match LOOKUPS.lock() {
        Ok(mut map) => Arc::clone(map.entry(issuer.to_owned()).or_default()),
        // A panic elsewhere while holding the lock: count privately rather than not at all.
        Err(_) => Arc::default(),
    }
}

/// `(issuer, hits, misses)` of every issuer whose cache was ever on, since the process started.
pub fn lookups() -> Vec<(String, u64, u64)> {
    LOOKUPS.lock().map_or_else(
        |_| Vec::new(),
        |map| {
            map.iter()
                .map(|(name, l)| {
                    (
                        name.clone(),
                        l.hits.load(Ordering::Relaxed),
                        l.misses.load(Ordering::Relaxed),
                    )
                })
                .collect()
        },
    )
}

/// The verified tokens of one issuer.
pub(crate) struct TokenCache {
    entries: quick_cache::sync::Cache<Key, Entry>,
    max_ttl: Duration,
    lookups: Arc<Lookups>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.entries.capacity())
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl TokenCache {
    /// `None` (no cache) when `max_entries` or `max_ttl` is zero.
    pub(crate) fn new(issuer: &str, max_entries: usize, max_ttl: Duration) -> Option<Self> {
        (max_entries > 0 && !max_ttl.is_zero()).then(|| Self {
            entries: quick_cache::sync::Cache::new(max_entries),
            max_ttl,
            lookups: lookups_for(issuer),
        })
    }

    pub(crate) fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The entry for `key` if it was verified with key-set `generation` less than `max_ttl`
    /// ago; a stale entry is dropped. `generation` is `None` while there are no keys at all:
    /// a miss.
    pub(crate) fn get(&self, key: &Key, generation: Option<u64>) -> Option<Entry> {
        let found = generation.and_then(|generation| self.lookup(key, generation));
        let counter = if found.is_some() {
            &self.lookups.hits
        } else {
            &self.lookups.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, key: &Key, generation: u64) -> Option<Entry> {
        self.entries.get(key).filter(|entry| {
            let fresh = entry.generation == generation && entry.inserted.elapsed() < self.max_ttl;
            if !fresh {
                // Only if still the stale one: a concurrent request may have re-verified it.
                self.entries.remove_if(key, |e| {
                    e.generation != generation || e.inserted.elapsed() >= self.max_ttl
                });
            }
            fresh
        })
    }

    pub(crate) fn insert(&self, key: Key, entry: Entry) {
        self.entries.insert(key, entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(exp: Value, generation: u64) -> Entry {
        Entry::new(Arc::new(json!({"sub": "u", "exp": exp})), generation).expect("entry")
    }

    #[test]
    fn off_when_zero() {
        assert!(TokenCache::new("t", 0, Duration::from_secs(300)).is_none());
        assert!(TokenCache::new("t", 10, Duration::ZERO).is_none());
        assert!(TokenCache::new("t", 10, Duration::from_secs(1)).is_some());
    }

    #[test]
    fn keys_are_the_sha256_of_the_whole_token() {
        // FIPS 180-2 example: SHA-256("abc").
        assert_eq!(
            TokenCache::key("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256, not a fast hash"
        );
        // One character anywhere changes the key.
        assert_ne!(TokenCache::key("a.b.c"), TokenCache::key("a.b.d"));
        assert_ne!(TokenCache::key("a.b.c"), TokenCache::key("b.b.c"));
    }

    #[test]
    fn hit_with_the_same_generation_only() {
        let cache = TokenCache::new("t", 10, Duration::from_secs(300)).expect("on");
        let k = TokenCache::key("t1");
        cache.insert(k, entry(json!(4_000_000_000u64), 7));
        let hit = cache.get(&k, Some(7)).expect("hit");
        assert_eq!(hit.claims["sub"], "u");
        assert_eq!(hit.exp, 4_000_000_000);
        // The key set changed: a miss, and the entry is gone even for the old generation.
        assert!(cache.get(&k, Some(8)).is_none());
        assert!(cache.get(&k, Some(7)).is_none());
        assert!(cache.get(&TokenCache::key("t2"), Some(7)).is_none());
    }

    #[test]
    fn max_ttl_expires_entries_whatever_their_exp() {
        let cache = TokenCache::new("t", 10, Duration::from_millis(50)).expect("on");
        let k = TokenCache::key("t");
        cache.insert(k, entry(json!(4_000_000_000u64), 0));
        assert!(cache.get(&k, Some(0)).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&k, Some(0)).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn bounded_by_max_entries() {
        let cache = TokenCache::new("t", 100, Duration::from_secs(300)).expect("on");
        for i in 0..10_000 {
            cache.insert(
                TokenCache::key(&format!("token-{i}")),
                entry(json!(4_000_000_000u64), 0),
            );
            assert!(cache.len() <= 100, "{} entries after {i}", cache.len());
        }
        // The last ones are still there: eviction made room rather than refusing.
        assert!(cache.get(&TokenCache::key("token-9999"), Some(0)).is_some());
    }

    #[test]
    fn exp_and_nbf_read_as_jsonwebtoken_reads_them() {
        let e = Entry::new(
            Arc::new(json!({"exp": 1_700_000_000.6, "nbf": 1_600_000_000u64})),
            0,
        )
        .expect("entry");
        assert_eq!((e.exp, e.nbf), (1_700_000_001, Some(1_600_000_000)));
        for bad in [json!({}), json!({"exp": "soon"}), json!({"exp": -1})] {
            assert!(Entry::new(Arc::new(bad.clone()), 0).is_none(), "{bad}");
        }
        assert!(Entry::new(Arc::new(json!({"exp": 1, "nbf": "x"})), 0).is_none());
    }
}
