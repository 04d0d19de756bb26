//! Where request stages meet (rate limits, authentication, authorisation, validation, WAF): a
//! small context each stage reads and adds to, and the verdict each returns. A stage never
//! reaches into another stage's internals; what one learns that a later one needs (who the
//! client is) travels here.
//!
//! A stage continues with `Ok(())` or rejects with `Err(Problem)`: the problem carries the status,
//! the stable reason code (its weight in `defense.weights` decides whether it counts against the
//! client) and, optionally, [`Evidence`] for the security event. What a stage notices without
//! rejecting (a detect-only WAF match, a bot signal) goes into [`RequestContext::findings`]:
//! reported to the defense loop and as security events once the request is answered.

use std::net::IpAddr;

use bytes::Bytes;

use super::router::Route;
use crate::tls::TlsInfo;

/// What every stage knows about the request beyond its method, URI and headers.
pub struct RequestContext<'a> {
    pub request_id: &'a str,
    /// The client as every stage sees it: the peer, the PROXY protocol source, or the rightmost
    /// untrusted `X-Forwarded-For`/`Forwarded` hop behind a trusted proxy.
    pub client_ip: IpAddr,
    /// The peer is a trusted proxy: the kernel cannot see this client, so it is blocked at L7.
    pub behind_proxy: bool,
    /// The TLS session, with the verified client certificate when there was one.
    pub tls: Option<&'a TlsInfo>,
    pub route: &'a Route,
    /// The normalised path: the one routing matched and every stage judges.
    pub path: &'a str,
    /// Template parameters of the matched route (`/orders/{id}` -> `id`).
    pub params: &'a [(String, String)],
    /// The request body, when a stage on this route reads it ([`Route::buffer_body`]); already
    /// within `http.max_body_bytes`.
    pub body: Option<&'a Bytes>,
    /// Who the request is from, once authentication ran.
    pub principal: Option<Principal>,
    /// What stages noticed without rejecting.
    pub findings: Vec<Finding>,
    /// Headers stages want on the upstream's response when the request goes through (the
    /// RateLimit fields, CORS): set by the response filters, replacing the upstream's own.
    pub response_headers: http::HeaderMap,
}

/// An authenticated caller, whatever the scheme.
#[derive(Clone, Debug, Default)]
pub struct Principal {
    /// Stable identifier: JWT `sub`, API key id, certificate subject or fingerprint, ...
    pub id: String,
    /// Which scheme authenticated it: `jwt`, `api_key`, `hmac`, `mtls`, `introspection`.
    pub scheme: &'static str,
    /// The named credential source (issuer name, key file, ...), when there is one.
    pub issuer: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Token claims (JWT, introspection); `Null` for schemes without claims.
    pub claims: serde_json::Value,
}

/// Something a stage noticed without rejecting the request.
#[derive(Clone, Debug)]
pub struct Finding {
    /// Stable reason code: its weight in `defense.weights`, `event.reason` in security events.
    pub code: &'static str,
    pub evidence: Evidence,
}

/// Why a stage decided what it did, for security events and the audit trail; never secrets.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// The stage: `ratelimit`, `auth`, `authz`, `validate`, `waf`, `bot`.
    pub stage: &'static str,
    /// Rule ids that matched (WAF rule ids, policy names, limit names).
    pub rule_ids: Vec<String>,
    pub message: String,
    /// Where it matched (`ARGS:q`, `REQUEST_HEADERS:User-Agent`, a JSON pointer).
    pub location: Option<String>,
    /// A short excerpt of the matched value, secrets masked.
    pub excerpt: Option<String>,
    /// Overrides the reason's weight in `defense.weights` (a WAF anomaly score, say).
    pub weight: Option<f64>,
}
