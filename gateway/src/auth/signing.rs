//! HMAC request signing (docs/hmac-signing.md): the client signs a canonical form of the request
//! (method, path, sorted query, chosen headers, timestamp, nonce, body digest) with a per-client
//! secret; the gateway recomputes it, checks the clock-skew window, and remembers nonces so a
//! captured request cannot be replayed inside the window.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use http::{HeaderName, HeaderValue, header, request::Parts};
use sha2::{Digest as _, Sha256, Sha512};

use super::{
    Failure, Success,
    config::{HmacConfig, read_secret},
};
use crate::proxy::stage::Principal;

/// Unix seconds of the signing time.
pub const TIMESTAMP_HEADER: &str = "x-gw-timestamp";
/// A fresh random value per request (16-128 characters of `A-Za-z0-9-_.`).
pub const NONCE_HEADER: &str = "x-gw-nonce";

/// The two signature algorithms, named as in the `Authorization` scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Sha256 => "GW-HMAC-SHA256",
            Self::Sha512 => "GW-HMAC-SHA512",
        }
    }
}

/// The request as the signature covers it.
pub struct CanonicalInput<'a> {
    pub algorithm: Algorithm,
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded), without the query.
    pub path: &'a str,
    /// The query exactly as sent, without `?`.
    pub query: Option<&'a str>,
    /// `(lowercase name, value)` of each signed header, in `SignedHeaders` order.
    pub headers: &'a [(String, String)],
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub body: &'a [u8],
}

/// The canonical request, one field per line (see docs/hmac-signing.md).
pub fn canonical_request(c: &CanonicalInput<'_>) -> String {
    let mut query: Vec<&str> = c
        .query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    query.sort_unstable();
    let mut out = String::with_capacity(256);
    out.push_str(c.algorithm.scheme());
    out.push('\n');
    out.push_str(c.timestamp);
    out.push('\n');
    out.push_str(c.nonce);
    out.push('\n');
    out.push_str(c.method);
    out.push('\n');
    out.push_str(c.path);
    out.push('\n');
    out.push_str(&query.join("&"));
    out.push('\n');
    for (name, value) in c.headers {
        out.push_str(name);
        out.push(':');
        out.push_str(value.trim());
        out.push('\n');
    }
    out.push_str(
        &c.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(";"),
    );
    out.push('\n');
    out.push_str(&super::hex(&Sha256::digest(c.body)));
    out
}

/// The signature of a canonical request, lowercase hex.
pub fn sign(algorithm: Algorithm, secret: &[u8], canonical: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    match algorithm {
        Algorithm::Sha256 => <Hmac<Sha256>>::new_from_slice(secret)
            .map(|mut m| {
                m.update(canonical.as_bytes());
                super::hex(&m.finalize().into_bytes())
            })
            .unwrap_or_default(),
        Algorithm::Sha512 => <Hmac<Sha512>>::new_from_slice(secret)
            .map(|mut m| {
                m.update(canonical.as_bytes());
                super::hex(&m.finalize().into_bytes())
            })
            .unwrap_or_default(),
    }
}

/// Constant-time check (the `hmac` crate compares with `subtle`).
fn verify(algorithm: Algorithm, secret: &[u8], canonical: &str, signature: &[u8]) -> bool {
    match algorithm {
        Algorithm::Sha256 => <Hmac<Sha256>>::new_from_slice(secret).is_ok_and(|mut m| {
            m.update(canonical.as_bytes());
            m.verify_slice(signature).is_ok()
        }),
        Algorithm::Sha512 => <Hmac<Sha512>>::new_from_slice(secret).is_ok_and(|mut m| {
            m.update(canonical.as_bytes());
            m.verify_slice(signature).is_ok()
        }),
    }
}

#[derive(Debug)]
pub(crate) struct Verifier {
    name: String,
    clients: HashMap<String, Client>,
    required: Vec<String>,
    skew: Duration,
    nonces: Mutex<NonceCache>,
}

struct Client {
    secret: Vec<u8>,
    roles: Vec<String>,
    scopes: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Nonces seen inside the skew window, bounded. When full, the oldest entry is dropped and its
/// timestamp becomes a floor: requests signed at or before it are refused, so a dropped nonce
/// can never be replayed (the cost: under a flood of valid requests, slow clients must re-sign).
#[derive(Debug)]
struct NonceCache {
    seen: HashSet<String>,
    order: VecDeque<(String, i64)>,
    capacity: usize,
    floor: i64,
}

impl NonceCache {
    /// `Ok` when the nonce is new (and now remembered).
    fn check_and_insert(
        &mut self,
        key: String,
        ts: i64,
        now: i64,
        window: i64,
    ) -> Result<(), &'static str> {
        while self.order.front().is_some_and(|(_, t)| *t < now - window) {
            if let Some((k, _)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
        if ts <= self.floor {
            return Err("timestamp older than the nonces still remembered; sign again");
        }
        if self.seen.contains(&key) {
            return Err("nonce already used");
        }
        while self.order.len() >= self.capacity {
            if let Some((k, t)) = self.order.pop_front() {
                self.seen.remove(&k);
                self.floor = self.floor.max(t);
            }
        }
        if ts <= self.floor {
            return Err("timestamp older than the nonces still remembered; sign again");
        }
        self.seen.insert(key.clone());
        self.order.push_back((key, ts));
        Ok(())
    }
}

/// `GW-HMAC-SHA256 Credential=<id>, SignedHeaders=<a;b>, Signature=<hex>`.
struct AuthHeader<'a> {
    algorithm: Algorithm,
    credential: &'a str,
    signed: Vec<&'a str>,
    signature: &'a str,
}

fn parse_header(v: &str) -> Option<Result<AuthHeader<'_>, &'static str>> {
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let algorithm = if scheme.eq_ignore_ascii_case("GW-HMAC-SHA256") {
        Algorithm::Sha256
    } else if scheme.eq_ignore_ascii_case("GW-HMAC-SHA512") {
        Algorithm::Sha512
    } else {
        return None;
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Some(Err("malformed Authorization parameters"));
        };
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Some(Err("unknown Authorization parameter")),
        };
        if slot.replace(v).is_some() {
            return Some(Err("Authorization parameter repeated"));
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Some(Err("Credential, SignedHeaders and Signature are required"));
    };
    Some(Ok(AuthHeader {
        algorithm,
        credential,
        signed: signed.split(';').filter(|s| !s.is_empty()).collect(),
        signature,
    }))
}

impl Verifier {
    pub(crate) fn build(name: &str, c: &HmacConfig) -> Result<Self, String> {
        let what = format!("auth.hmac.{name}");
        if c.nonce_cache == 0 {
            return Err(format!("{what}.nonce_cache must be above 0"));
        }
        let mut clients = HashMap::new();
        for cl in &c.clients {
            let secret = read_secret(
                &format!("{what}.clients.{}", cl.id),
                cl.secret_env.as_ref(),
                cl.secret_file.as_ref(),
            )?;
            let client = Client {
                secret,
                roles: cl.roles.clone(),
                scopes: cl.scopes.clone(),
            };
            if clients.insert(cl.id.clone(), client).is_some() {
                return Err(format!("{what}: client `{}` listed twice", cl.id));
            }
        }
        Ok(Self {
            name: name.to_owned(),
            clients,
            required: c
                .required_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            skew: c.clock_skew,
            nonces: Mutex::new(NonceCache {
                seen: HashSet::new(),
                order: VecDeque::new(),
                capacity: c.nonce_cache,
                floor: i64::MIN,
            }),
        })
    }

    pub(crate) fn authenticate(
        &self,
        parts: &Parts,
        body: Option<&Bytes>,
    ) -> Result<Option<Success>, Failure> {
        let malformed = |r: &'static str| Failure::rejected("auth_malformed_signature", r);
        let Some(v) = super::single(&parts.headers, &header::AUTHORIZATION)? else {
            return Ok(None);
        };
        let Ok(v) = v.to_str() else {
            return Err(malformed("Authorization is not ASCII"));
        };
        let h = match parse_header(v) {
            None => return Ok(None),
            Some(r) => r.map_err(malformed)?,
        };
        let Some(client) = self.clients.get(h.credential) else {
            return Err(Failure::rejected(
                "auth_invalid_key",
                "unknown signing client",
            ));
        };
        let header_value = |name: &str| -> Result<Option<String>, Failure> {
            let hn = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| malformed("bad header name in SignedHeaders"))?;
            match super::single(&parts.headers, &hn)? {
                Some(v) => Ok(Some(
                    v.to_str()
                        .map_err(|_| malformed("signed header is not ASCII"))?
                        .to_owned(),
                )),
                None if name == "host" => Ok(parts.uri.authority().map(|a| a.to_string())),
                None => Ok(None),
            }
        };
        let timestamp = header_value(TIMESTAMP_HEADER)?
            .ok_or_else(|| malformed("X-Gw-Timestamp header missing"))?;
        let nonce =
            header_value(NONCE_HEADER)?.ok_or_else(|| malformed("X-Gw-Nonce header missing"))?;
        if !(16..=128).contains(&nonce.len())
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(malformed("nonce must be 16-128 characters of A-Za-z0-9-_."));
        }
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| malformed("X-Gw-Timestamp is not unix seconds"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let window = self.skew.as_secs() as i64;
        if (now - ts).abs() > window {
            return Err(Failure::rejected(
                "auth_clock_skew",
                format!("timestamp outside the allowed clock skew of {window}s"),
            ));
        }
        let mut sorted = h.signed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted != h.signed || h.signed.iter().any(|s| *s != s.to_ascii_lowercase()) {
            return Err(malformed(
                "SignedHeaders must be lowercase, sorted, without repeats",
            ));
        }
        if let Some(missing) = self
            .required
            .iter()
            .find(|r| !h.signed.contains(&r.as_str()))
        {
            return Err(Failure::rejected(
                "auth_malformed_signature",
                format!("header `{missing}` must be signed"),
            ));
        }
        let mut headers = Vec::with_capacity(h.signed.len());
        for name in &h.signed {
            if *name == TIMESTAMP_HEADER || *name == NONCE_HEADER {
                return Err(malformed(
                    "timestamp and nonce are always signed; do not list them",
                ));
            }
            let value = header_value(name)?.ok_or_else(|| {
                Failure::rejected(
                    "auth_malformed_signature",
                    format!("signed header `{name}` missing"),
                )
            })?;
            headers.push(((*name).to_owned(), value));
        }
        let Some(signature) = super::unhex(h.signature) else {
            return Err(malformed("Signature must be hex"));
        };
        let Some(body) = body else {
            // The route buffers bodies whenever it uses HMAC; never verify without one.
            return Err(Failure::Unavailable(
                "request body not available for signing".into(),
            ));
        };
        let canonical = canonical_request(&CanonicalInput {
            algorithm: h.algorithm,
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &headers,
            timestamp: &timestamp,
            nonce: &nonce,
            body,
        });
        if !verify(h.algorithm, &client.secret, &canonical, &signature) {
            return Err(Failure::rejected(
                "auth_invalid_signature",
                "signature does not match the request",
            ));
        }
        // Only after the signature holds: forged requests cannot fill the cache.
        let key = format!("{}\n{nonce}", h.credential);
        self.nonces
            .lock()
            .map_err(|_| Failure::Unavailable("nonce cache unavailable".into()))?
            .check_and_insert(key, ts, now, window)
            .map_err(|r| Failure::rejected("auth_replay", r))?;
        let principal = Principal {
            id: h.credential.to_owned(),
            scheme: "hmac",
            issuer: Some(self.name.clone()),
            roles: client.roles.clone(),
            scopes: client.scopes.clone(),
            claims: serde_json::Value::Null,
        };
        Ok(Some((principal, Vec::<(HeaderName, HeaderValue)>::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1, 2 and 6 for HMAC-SHA-256 and HMAC-SHA-512 through the same
    /// `sign` the gateway verifies with.
    #[test]
    fn rfc4231_vectors() {
        let cases: [(&[u8], &[u8], &str, &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
            ),
        ];
        for (key, data, want256, want512) in cases {
            let data = std::str::from_utf8(data).expect("ascii");
            assert_eq!(sign(Algorithm::Sha256, key, data), want256);
            assert_eq!(sign(Algorithm::Sha512, key, data), want512);
            assert!(verify(
                Algorithm::Sha256,
                key,
                data,
                &super::super::unhex(want256).expect("hex")
            ));
            assert!(!verify(
                Algorithm::Sha256,
                b"wrong",
                data,
                &super::super::unhex(want256).expect("hex")
            ));
        }
    }

    /// The worked example in docs/hmac-signing.md (produced by the Python client printed
    /// there) matches what the gateway computes, canonical string and signature.
    #[test]
    fn documented_example_matches() {
        let doc = include_str!("../../../docs/hmac-signing.md");
        let block = |tag: &str| -> String {
            let start = doc
                .find(&format!("```text {tag}\n"))
                .unwrap_or_else(|| panic!("{tag} block"));
            let rest = &doc[start..];
            let body = &rest[rest.find('\n').expect("newline") + 1..];
            body[..body.find("\n```").expect("end")].to_owned()
        };
        let canonical = canonical_request(&CanonicalInput {
            algorithm: Algorithm::Sha256,
            method: "POST",
            path: "/orders/42/items",
            query: Some("b=2&a=1&a=0"),
            headers: &[
                ("content-type".into(), "application/json".into()),
                ("host".into(), "api.example.com".into()),
            ],
            timestamp: "1700000000",
            nonce: "4f1c2d3e4f5a6b7c8d9e",
            body: br#"{"qty":3}"#,
        });
        assert_eq!(canonical, block("canonical"));
        assert_eq!(
            sign(Algorithm::Sha256, b"s3cr3t-example", &canonical),
            block("signature")
        );
    }

    #[test]
    fn nonce_cache_refuses_replays_and_keeps_a_floor_when_full() {
        let mut c = NonceCache {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: 2,
            floor: i64::MIN,
        };
        assert!(c.check_and_insert("a".into(), 100, 100, 300).is_ok());
        assert!(c.check_and_insert("a".into(), 100, 100, 300).is_err());
        assert!(c.check_and_insert("b".into(), 101, 101, 300).is_ok());
        assert!(c.check_and_insert("c".into(), 102, 102, 300).is_ok());
        // `a` was dropped to make room; its replay is still refused by the floor.
        assert!(c.check_and_insert("a".into(), 100, 102, 300).is_err());
        assert!(c.order.len() <= 2);
    }

    #[test]
    fn header_parsing() {
        let h = parse_header("GW-HMAC-SHA512 Credential=c1, SignedHeaders=host;x-a, Signature=ab")
            .expect("ours")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.algorithm, Algorithm::Sha512);
        assert_eq!(h.credential, "c1");
        assert_eq!(h.signed, ["host", "x-a"]);
        assert!(parse_header("Bearer x").is_none());
        assert!(
            parse_header("GW-HMAC-SHA256 Credential=c1")
                .expect("ours")
                .is_err()
        );
    }
}
