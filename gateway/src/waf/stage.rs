//! The WAF as a request stage: the engine of this configuration generation, the compiled
//! exclusions, the audit log, and how an outcome becomes a 403 or a finding.

use std::{io::Write as _, path::Path, sync::Mutex};

use http::StatusCode;

use super::{
    WafError,
    config::{BodyLimitAction, WafExclusion, WafMode, WafSection},
    engine::{Engine, HttpInput, Mode, Outcome, RuleSel, Tuning},
    load_rules, rule, seclang,
    variables::{Parsed, parse_target},
};
use crate::proxy::{
    problem::Problem,
    stage::{Evidence, Finding, RequestContext},
};

/// One generation's WAF.
pub struct Waf {
    engine: Engine,
    global: Tuning,
    /// `global` for a route that serves GraphQL and has no exclusions of its own: made once,
    /// not cloned per request.
    global_graphql: Tuning,
    audit: Option<Mutex<std::fs::File>>,
    body_limit: usize,
    /// Refuse bodies over `body_limit` (block mode with `reject`); else inspect their start.
    reject_oversized: bool,
}

/// Compiles `waf.exclusions`-style entries.
pub fn compile_exclusions(list: &[WafExclusion]) -> Result<Tuning, WafError> {
    let mut out = Tuning::default();
    for e in list {
        let mut ranges = Vec::new();
        for id in &e.ids {
            ranges.extend(
                rule::parse_id_ranges(id)
                    .ok_or_else(|| WafError::Config(format!("bad rule id or range `{id}`")))?,
            );
        }
        if e.targets.is_empty() {
            if ranges.is_empty() && e.tags.is_empty() {
                return Err(WafError::Config(
                    "an exclusion needs ids, tags or targets".into(),
                ));
            }
            out.ids.extend(ranges);
            out.tags.extend(e.tags.iter().cloned());
            continue;
        }
        let mut excl = Vec::new();
        for t in &e.targets {
            for raw in seclang::split_targets(t).map_err(WafError::Config)? {
                let raw = seclang::RawTarget {
                    negated: true,
                    ..raw
                };
                if let Parsed::Exclusion(x) = parse_target(&raw).map_err(WafError::Config)? {
                    excl.push(x);
                }
            }
        }
        let mut sels = Vec::new();
        if !ranges.is_empty() {
            sels.push(RuleSel::Ids(ranges));
        }
        sels.extend(e.tags.iter().map(|t| RuleSel::Tag(t.clone())));
        if sels.is_empty() {
            sels.push(RuleSel::All);
        }
        for s in &sels {
            for x in &excl {
                out.targets.push((s.clone(), x.clone()));
            }
        }
    }
    Ok(out)
}

/// Variable names whose values are never shown in evidence or the audit log.
const SECRET_HINTS: &[&str] = &[
    "authorization",
    "cookie",
    "pass",
    "pwd",
    "secret",
    "token",
    "api-key",
    "api_key",
    "apikey",
    "session",
    "jwt",
    "auth",
];

/// A short, printable excerpt of a matched value, masked when the variable holds secrets.
pub fn excerpt(variable: &str, value: &[u8]) -> String {
    let lower = variable.to_ascii_lowercase();
    if SECRET_HINTS.iter().any(|h| lower.contains(h)) {
        return "[masked]".into();
    }
    let mut out = String::new();
    let mut digits = 0;
    for &b in value.iter().take(64) {
        let c = if b.is_ascii_graphic() || b == b' ' {
            b as char
        } else {
            '.'
        };
        digits = if c.is_ascii_digit() { digits + 1 } else { 0 };
        out.push(c);
    }
    // Long digit runs look like card or account numbers.
    if digits >= 12
        || out
            .as_bytes()
            .windows(12)
            .any(|w| w.iter().all(u8::is_ascii_digit))
    {
        return "[masked]".into();
    }
    if value.len() > 64 {
        out.push_str("...");
    }
    out
}

/// Rules that report the score rather than an attack.
fn is_scoring_rule(id: u32) -> bool {
    (949000..950000).contains(&id) || (980000..981000).contains(&id)
}

impl Waf {
    /// Loads and compiles the rules named in `section`; opens the audit log.
    pub fn build(section: &WafSection) -> Result<Self, WafError> {
        section
            .validate()
            .map_err(|(_, reason)| WafError::Config(reason))?;
        let rules = load_rules(&section.rules)?;
        let mode = match section.mode {
            WafMode::Block => Mode::Block,
            WafMode::Detect => Mode::Detect,
        };
        let engine = Engine::new(rules, section.setup_vars(), mode).with_max_args(section.max_args);
        let global = compile_exclusions(&section.exclusions)?;
        let audit = match &section.audit_log {
            Some(p) => Some(Mutex::new(open_append(p)?)),
            None => None,
        };
        let global_graphql = Tuning {
            graphql: true,
            ..global.clone()
        };
        Ok(Self {
            engine,
            global,
            global_graphql,
            audit,
            body_limit: section.body_limit,
            reject_oversized: section.mode == WafMode::Block
                && section.body_limit_action == BodyLimitAction::Reject,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs the engine with the global and `route` exclusions.
    pub fn inspect(&self, input: &HttpInput<'_>, route: &Tuning) -> Outcome {
        if route.ids.is_empty() && route.tags.is_empty() && route.targets.is_empty() {
            let global = if route.graphql {
                &self.global_graphql
            } else {
                &self.global
            };
            return self.engine.inspect(input, global);
        }
        let mut all = self.global.clone();
        all.graphql = route.graphql;
        all.ids.extend_from_slice(&route.ids);
        all.tags.extend_from_slice(&route.tags);
        all.targets.extend(route.targets.iter().cloned());
        self.engine.inspect(input, &all)
    }

    /// The stage: judges the request in `ctx`/`parts`; blocks (403 `waf_blocked`) or records a
    /// finding (`waf_detected`).
    pub fn judge(
        &self,
        route: &Tuning,
        ctx: &mut RequestContext<'_>,
        parts: &http::request::Parts,
    ) -> Result<(), Problem> {
        let target = match parts.uri.path_and_query() {
            Some(pq) if parts.uri.scheme().is_none() => pq.as_str().to_owned(),
            _ => parts.uri.to_string(),
        };
        let version = match parts.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        };
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
            .collect();
        // What the rules see of the body: at most `body_limit` bytes (CPU per request is
        // linear in what is inspected).
        let mut body = ctx.body.map(|b| b.as_ref());
        if let Some(b) = body
            && b.len() > self.body_limit
        {
            self.over_limit(
                &mut ctx.findings,
                format!(
                    "request body of {} bytes over waf.body_limit ({} bytes)",
                    b.len(),
                    self.body_limit
                ),
                (
                    "waf_body_too_large",
                    "the request body is larger than the firewall inspects",
                ),
                "waf_body_truncated",
            )?;
            body = Some(&b[..self.body_limit]);
        }
        let input = HttpInput {
            method: parts.method.as_str(),
            target: &target,
            version,
            headers,
            body,
            remote_addr: ctx.client_ip,
            request_id: ctx.request_id,
        };
        let outcome = self.inspect(&input, route);
        if outcome.args_truncated {
            self.over_limit(
                &mut ctx.findings,
                format!(
                    "request body with more than waf.max_args ({}) arguments",
                    self.engine.max_args()
                ),
                (
                    "waf_too_many_arguments",
                    "the request body has more arguments than the firewall inspects",
                ),
                "waf_arguments_truncated",
            )?;
        }
        if outcome.matches.is_empty() && outcome.blocked_by.is_none() {
            return Ok(());
        }
        self.audit(ctx.request_id, &outcome);
        let evidence = evidence(&outcome);
        if outcome.blocked_by.is_some() {
            let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::FORBIDDEN);
            return Err(Problem::new(status, "waf_blocked")
                .detail("the request was refused by the web application firewall")
                .evidence(evidence));
        }
        ctx.findings.push(Finding {
            code: "waf_detected",
            evidence,
        });
        Ok(())
    }

    /// A body past an inspection limit: refused with 413 (`code`, `detail`) when the limit's
    /// action is `reject` in block mode, else reported as the `truncated` finding (the
    /// request is then inspected in part).
    fn over_limit(
        &self,
        findings: &mut Vec<Finding>,
        message: String,
        (code, detail): (&'static str, &'static str),
        truncated: &'static str,
    ) -> Result<(), Problem> {
        let evidence = Evidence {
            stage: "waf",
            message,
            ..Evidence::default()
        };
        if self.reject_oversized {
            return Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, code)
                .detail(detail)
                .evidence(evidence));
        }
        findings.push(Finding {
            code: truncated,
            evidence,
        });
        Ok(())
    }

    fn audit(&self, request_id: &str, outcome: &Outcome) {
        let Some(file) = &self.audit else { return };
        let line = serde_json::json!({
            "request_id": request_id,
            "blocked_by": outcome.blocked_by,
            "anomaly_score": outcome.anomaly_score,
            "rule_ids": outcome.matches.iter().map(|m| m.id).collect::<Vec<_>>(),
            "matches": outcome.matches.iter().map(|m| serde_json::json!({
                "id": m.id,
                "msg": m.msg,
                "variable": m.variable,
                "excerpt": excerpt(&m.variable, &m.value),
            })).collect::<Vec<_>>(),
        });
        let mut text = line.to_string();
        text.push('\n');
        if let Ok(mut f) = file.lock()
            && let Err(e) = f.write_all(text.as_bytes())
        {
            tracing::warn!(error = %e, "waf audit log write failed");
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, WafError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| WafError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn evidence(outcome: &Outcome) -> Evidence {
    let primary = outcome
        .matches
        .iter()
        .find(|m| !is_scoring_rule(m.id))
        .or(outcome.matches.first());
    Evidence {
        stage: "waf",
        rule_ids: outcome.matches.iter().map(|m| m.id.to_string()).collect(),
        message: primary.map(|m| m.msg.clone()).unwrap_or_default(),
        location: primary.map(|m| m.variable.clone()),
        excerpt: primary.map(|m| excerpt(&m.variable, &m.value)),
        weight: Some(outcome.anomaly_score as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_mask_secrets() {
        assert_eq!(
            excerpt("REQUEST_HEADERS:authorization", b"Bearer x"),
            "[masked]"
        );
        assert_eq!(excerpt("ARGS:password", b"' or 1=1"), "[masked]");
        assert_eq!(excerpt("ARGS:q", b"4111111111111111"), "[masked]");
        assert_eq!(excerpt("ARGS:q", b"a\x00b"), "a.b");
        assert!(excerpt("ARGS:q", &[b'a'; 100]).ends_with("..."));
    }
}
