//! The WAF: a Rust engine for the ModSecurity rule language (SecLang) that runs the OWASP Core
//! Rule Set v4 on the request phases, with CRS anomaly scoring, paranoia levels and
//! detect-only mode. Rules are parsed and compiled once per configuration generation; a request
//! is judged by [`Waf::inspect`] in the WAF stage.
//!
//! Supported SecLang subset: see [`seclang`] (directives), [`variables::Var`] (variables),
//! [`actions`] and [`rule`] (actions), `operator` and `transform` (operators, transformations).
//! Response phases (3, 4) and logging (5) parse and are not run: the gateway inspects requests.

pub mod actions;
pub mod body;
pub mod config;
pub mod engine;
mod fold;
pub mod operator;
pub mod rule;
pub mod seclang;
pub mod stage;
pub mod transform;
mod tx;
pub mod variables;

use std::path::PathBuf;

pub use config::{RouteWaf, WafSection};
pub use engine::{Engine, HttpInput, Mode, Outcome, RuleMatch, Tuning};
pub use stage::Waf;

/// Loading rules failed: which file and line, and why.
#[derive(Debug, thiserror::Error)]
pub enum WafError {
    #[error("{}:{line}: {reason}", file.display())]
    Rule {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("waf: {0}")]
    Config(String),
}

/// Loads rule files (files, directories of `*.conf`, globs) in order into a rule set.
pub fn load_rules(paths: &[PathBuf]) -> Result<rule::RuleSet, WafError> {
    let mut directives = Vec::new();
    for p in paths {
        seclang::read_path(p, &mut directives, 0)?;
    }
    let mut b = rule::Builder::default();
    for d in &directives {
        b.add(d)?;
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn crs_dir() -> PathBuf {
        std::env::var_os("GATEWAY_CRS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crs"))
    }

    fn crs_engine(paranoia: u8, mode: &str) -> Engine {
        let yaml = format!(
            "rules: [\"{}/rules/*.conf\"]\nparanoia: {paranoia}\nmode: {mode}\n",
            crs_dir().display()
        );
        let section: WafSection = serde_yaml::from_str(&yaml).expect("section");
        let rules = load_rules(&section.rules).unwrap_or_else(|e| panic!("CRS loads: {e}"));
        let mode = if mode == "block" {
            Mode::Block
        } else {
            Mode::Detect
        };
        Engine::new(rules, section.setup_vars(), mode)
    }

    fn get<'a>(target: &'a str, headers: Vec<(&'a [u8], &'a [u8])>) -> HttpInput<'a> {
        HttpInput {
            method: "GET",
            target,
            version: "HTTP/1.1",
            headers,
            body: None,
            remote_addr: "127.0.0.1".parse().expect("ip"),
            request_id: "t1",
        }
    }

    const UA: (&[u8], &[u8]) = (b"user-agent", b"Mozilla/5.0 test");
    const HOST: (&[u8], &[u8]) = (b"host", b"api.example");
    const ACCEPT: (&[u8], &[u8]) = (b"accept", b"*/*");

    #[test]
    fn crs_blocks_sqli_at_pl1_and_passes_a_benign_request() {
        let engine = crs_engine(1, "block");
        assert!(engine.rule_count() > 300, "{}", engine.rule_count());
        let out = engine.inspect(
            &get("/search?q=1'%20or%20'1'='1", vec![HOST, UA, ACCEPT]),
            &Tuning::default(),
        );
        let ids: Vec<u32> = out.matches.iter().map(|m| m.id).collect();
        assert_eq!(out.blocked_by, Some(949110), "{ids:?}");
        assert!(
            ids.iter().any(|id| (942000..943000).contains(id)),
            "{ids:?}"
        );
        assert!(out.anomaly_score >= 5);

        let ok = engine.inspect(
            &get("/orders/42?expand=items", vec![HOST, UA, ACCEPT]),
            &Tuning::default(),
        );
        assert!(ok.matches.is_empty(), "{:?}", ok.matches);
        assert_eq!(ok.blocked_by, None);
    }

    #[test]
    fn json_bodies_are_inspected_and_exclusions_apply() {
        let engine = crs_engine(1, "block");
        let body = br#"{"user":{"name":"<script>alert(1)</script>"}}"#;
        let input = HttpInput {
            method: "POST",
            target: "/users",
            version: "HTTP/1.1",
            headers: vec![
                HOST,
                UA,
                ACCEPT,
                (b"content-type", b"application/json"),
                (b"content-length", b"46"),
            ],
            body: Some(body),
            remote_addr: "127.0.0.1".parse().expect("ip"),
            request_id: "t2",
        };
        let out = engine.inspect(&input, &Tuning::default());
        assert!(out.blocked_by.is_some(), "{:?}", out.matches);
        assert!(
            out.matches
                .iter()
                .any(|m| m.variable == "ARGS:json.user.name"),
            "{:?}",
            out.matches
        );
        let excl = stage::compile_exclusions(&[config::WafExclusion {
            targets: vec!["ARGS:json.user.name".into()],
            ..Default::default()
        }])
        .expect("compiles");
        let out = engine.inspect(&input, &excl);
        assert_eq!(out.blocked_by, None, "{:?}", out.matches);
        assert_eq!(out.anomaly_score, 0, "{:?}", out.matches);
    }

    #[test]
    fn phase_scores_are_not_counted_twice() {
        // 920180 (a warning, 3 points) fires in phase 1; CRS resets the aggregate at the start of
        // phase 2 (SecAction 949059) so the request stays under the threshold of 5.
        let engine = crs_engine(1, "block");
        let input = HttpInput {
            method: "POST",
            target: "/x",
            version: "HTTP/1.1",
            headers: vec![HOST, UA, ACCEPT],
            body: None,
            remote_addr: "127.0.0.1".parse().expect("ip"),
            request_id: "t3",
        };
        let out = engine.inspect(&input, &Tuning::default());
        let ids: Vec<u32> = out.matches.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![920180]);
        assert_eq!(out.anomaly_score, 3);
        assert_eq!(out.blocked_by, None);
    }

    #[test]
    fn detect_mode_never_blocks() {
        let engine = crs_engine(1, "detect");
        let out = engine.inspect(
            &get("/?x=/etc/passwd", vec![HOST, UA, ACCEPT]),
            &Tuning::default(),
        );
        assert_eq!(out.blocked_by, None);
        assert!(
            out.matches.iter().any(|m| m.id == 930120),
            "{:?}",
            out.matches
        );
    }
}
