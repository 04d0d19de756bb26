//! Event bodies with Elastic Common Schema names (`event.*`, `source.ip`, `url.*`, `http.*`,
//! `rule.*`); what ECS has no field for goes under `gateway.*`. Never headers (credentials,
//! cookies), never query values under sensitive names; excerpts arrive masked and are cut short.

use std::{net::IpAddr, time::Duration};

use serde_json::{Value, json};

use super::{Class, host_ip};
use crate::{
    defense::{Action, Record},
    proxy::{access_log::redact_query, problem::Problem, stage::Evidence, stage::Finding},
};

pub const REJECTED: &str = "request_rejected";
pub const FLAGGED: &str = "request_flagged";
pub const SIMULATED: &str = "block_simulated";
pub const SKIPPED: &str = "escalation_skipped";
pub const SUPPRESSED: &str = "suppressed";
pub const EXPIRED: &str = "block_expired";

/// The request an event is about.
pub struct RequestInfo<'a> {
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub behind_proxy: bool,
    pub method: &'a http::Method,
    /// As the client sent it (the query is redacted here).
    pub uri: &'a http::Uri,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// At most `max` characters: an excerpt is evidence, not a copy of the payload.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn request(
    req: &RequestInfo<'_>,
    action: &str,
    reason: &str,
    evidence: Option<&Evidence>,
    weight: f64,
) -> Value {
    let rejected = action == REJECTED;
    let mut v = json!({
        "@timestamp": now(),
        "ecs": { "version": "8.11.0" },
        "event": {
            "kind": "alert",
            "category": ["web", "intrusion_detection"],
            "type": [if rejected { "denied" } else { "info" }],
            "action": action,
            "reason": reason,
            "outcome": if req.status < 400 { "success" } else { "failure" },
            "dataset": "gateway.security",
        },
        "message": evidence.map_or_else(|| reason.to_owned(), |e| cut(&e.message, 500)),
        "source": { "ip": req.client_ip.to_string() },
        "url": { "path": req.uri.path(), "query": req.uri.query().map(redact_query) },
        "http": {
            "request": { "id": req.request_id, "method": req.method.as_str() },
            "response": { "status_code": req.status },
        },
        "rule": { "name": reason },
        "gateway": {
            "listener": req.listener,
            "route": req.route,
            "weight": weight,
            "behind_proxy": req.behind_proxy,
        },
    });
    if let Some(e) = evidence {
        if let Some(id) = e.rule_ids.first() {
            v["rule"]["id"] = json!(id);
        }
        v["rule"]["ruleset"] = json!(e.stage);
        let g = &mut v["gateway"];
        g["stage"] = json!(e.stage);
        if !e.rule_ids.is_empty() {
            g["rule_ids"] = json!(e.rule_ids);
        }
        if let Some(l) = &e.location {
            g["location"] = json!(cut(l, 200));
        }
        if let Some(x) = &e.excerpt {
            g["excerpt"] = json!(cut(x, 200));
        }
    }
    v
}

pub fn rejected(req: &RequestInfo<'_>, problem: &Problem, weight: f64) -> Value {
    request(
        req,
        REJECTED,
        problem.code,
        problem.evidence.as_deref(),
        weight,
    )
}

pub fn flagged(req: &RequestInfo<'_>, finding: &Finding, weight: f64) -> Value {
    request(req, FLAGGED, finding.code, Some(&finding.evidence), weight)
}

/// `event.action` and syslog severity of a journal record.
pub fn audit_action(r: &Record) -> (&'static str, u8) {
    match r.action {
        Action::Block if r.target.contains('/') && !is_host(&r.target) => ("prefix_blocked", 4),
        Action::Block => ("source_blocked", 4),
        Action::Unblock => ("source_unblocked", 5),
        Action::Allow => ("allowlist_added", 5),
        Action::Disallow => ("allowlist_removed", 5),
        Action::Feed => ("feed_applied", 5),
    }
}

fn is_host(target: &str) -> bool {
    target
        .parse::<ipnet::IpNet>()
        .is_ok_and(|n| n.prefix_len() == n.max_prefix_len())
}

pub fn audit(r: &Record, action: &'static str) -> Value {
    let (category, kind_type): (&[&str], &[&str]) = match r.action {
        Action::Block => (&["network", "intrusion_detection"], &["denied", "creation"]),
        Action::Unblock => (&["network", "intrusion_detection"], &["deletion"]),
        Action::Allow => (&["network", "configuration"], &["allowed", "creation"]),
        Action::Disallow => (&["network", "configuration"], &["deletion"]),
        Action::Feed => (&["threat", "network"], &["indicator", "change"]),
    };
    let source = r
        .target
        .parse::<ipnet::IpNet>()
        .ok()
        .and_then(|n| host_ip(&n));
    json!({
        "@timestamp": now(),
        "ecs": { "version": "8.11.0" },
        "event": {
            "kind": "event",
            "category": category,
            "type": kind_type,
            "action": action,
            "reason": r.reason,
            "outcome": "success",
            "dataset": "gateway.security",
        },
        "message": r.note.as_deref().map_or_else(|| format!("{action} {}", r.target), |n| cut(n, 500)),
        "source": { "ip": source.map(|s| s.to_string()) },
        "rule": { "name": r.reason },
        "gateway": {
            "target": r.target,
            "origin": r.origin,
            "actor": r.actor,
            "expires": r.expires,
            "ttl_seconds": r.expires.map(|e| e.saturating_sub(r.ts)),
            "enforcement": if r.origin == "l7-proxy" { "l7" } else { "xdp" },
        },
    })
}

pub fn expired(target: ipnet::IpNet, origin: &str, reason: &str) -> Value {
    json!({
        "@timestamp": now(),
        "ecs": { "version": "8.11.0" },
        "event": {
            "kind": "event",
            "category": ["network", "intrusion_detection"],
            "type": ["deletion", "end"],
            "action": EXPIRED,
            "reason": reason,
            "outcome": "success",
            "dataset": "gateway.security",
        },
        "message": format!("block on {target} expired"),
        "source": { "ip": host_ip(&target).map(|s| s.to_string()) },
        "rule": { "name": reason },
        "gateway": { "target": target.to_string(), "origin": origin, "enforcement": "xdp" },
    })
}

pub fn not_applied(
    action: &'static str,
    source: ipnet::IpNet,
    reason: &str,
    score: f64,
    ttl: Duration,
) -> Value {
    json!({
        "@timestamp": now(),
        "ecs": { "version": "8.11.0" },
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": [if action == SIMULATED { "info" } else { "allowed" }],
            "action": action,
            "reason": reason,
            "outcome": "unknown",
            "dataset": "gateway.security",
        },
        "message": if action == SIMULATED { "dry run: would block" } else { "escalation skipped: source is allowlisted" },
        "source": { "ip": host_ip(&source).map(|s| s.to_string()) },
        "rule": { "name": reason },
        "gateway": { "target": source.to_string(), "score": score, "ttl_seconds": ttl.as_secs() },
    })
}

pub fn suppressed(counts: &[(Class, u64)]) -> Value {
    let by_class: serde_json::Map<String, Value> = counts
        .iter()
        .map(|(c, n)| (c.name().to_owned(), json!(n)))
        .collect();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    json!({
        "@timestamp": now(),
        "ecs": { "version": "8.11.0" },
        "event": {
            "kind": "metric",
            "category": ["host"],
            "type": ["info"],
            "action": SUPPRESSED,
            "outcome": "unknown",
            "dataset": "gateway.security",
        },
        "message": format!("{total} security events suppressed by the rate limit"),
        "gateway": { "suppressed": by_class, "suppressed_total": total },
    })
}
