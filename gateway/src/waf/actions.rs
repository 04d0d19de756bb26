//! Actions that change the transaction when a rule matches: `setvar` (with arithmetic and macro
//! expansion) and `ctl`, plus the `%{...}` macros `msg`, `logdata` and `setvar` use.

use std::borrow::Cow;

use super::{
    rule::parse_id_ranges,
    seclang,
    variables::{Exclusion, Parsed, parse_target},
};

/// A string with `%{collection.key}` / `%{VAR}` references, split once at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Macro {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    /// Lowercased reference: `tx.anomaly_score`, `matched_var`, `request_headers.host`.
    Ref(String),
}

impl Macro {
    pub fn parse(s: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start + 2..].find('}') else {
                break;
            };
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_owned()));
            }
            parts.push(Part::Ref(
                rest[start + 2..start + 2 + len].to_ascii_lowercase(),
            ));
            rest = &rest[start + 3 + len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Self { parts }
    }

    /// The literal text when there are no references (no expansion needed).
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The references, lowercase (`tx.anomaly_score`).
    pub fn refs(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// The literal text before the first reference (all of it when there is none).
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Lit(s)) => s,
            _ => "",
        }
    }

    /// Expands references with `lookup` (unknown references expand to nothing).
    pub fn expand<'a>(&'a self, lookup: &dyn Fn(&str) -> Option<Cow<'a, str>>) -> Cow<'a, str> {
        match self.parts.as_slice() {
            [] => return Cow::Borrowed(""),
            [Part::Lit(s)] => return Cow::Borrowed(s),
            // A lone reference (`%{tx.allowed_methods}`, most operator arguments): its value,
            // borrowed where it can be (CRS's method, content-type and extension lists are
            // read by a rule each on every request).
            [Part::Ref(r)] => return lookup(r).unwrap_or_default(),
            _ => {}
        }
        // Room for the literals and a short value per reference: one allocation for most.
        let room = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.len(),
                Part::Ref(_) => 32,
            })
            .sum();
        let mut out = String::with_capacity(room);
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Ref(r) => {
                    if let Some(v) = lookup(r) {
                        out.push_str(&v);
                    }
                }
            }
        }
        Cow::Owned(out)
    }
}

#[derive(Clone, Debug)]
pub enum SetOp {
    Set(Macro),
    Add(Macro),
    Sub(Macro),
    Delete,
}

/// What `ctl:ruleEngine=` switches a single request to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineOverride {
    On,
    Off,
    DetectionOnly,
}

#[derive(Clone, Debug)]
pub enum Ctl {
    RuleRemoveById(Vec<(u32, u32)>),
    RuleRemoveByTag(String),
    RuleRemoveTargetById(Vec<(u32, u32)>, Vec<Exclusion>),
    RuleRemoveTargetByTag(String, Vec<Exclusion>),
    RuleEngine(EngineOverride),
    RequestBodyProcessor(&'static str),
    ForceRequestBodyVariable(bool),
    /// Audit/debug log switches: nothing here depends on them.
    Ignored,
}

#[derive(Clone, Debug)]
pub enum Action {
    SetVar {
        /// `tx`, `ip`, `session`, `global`.
        collection: String,
        name: Macro,
        op: SetOp,
    },
    Ctl(Ctl),
}

pub fn parse_action(name: &str, value: &str) -> Result<Action, String> {
    match name {
        "setvar" => parse_setvar(value),
        "ctl" => parse_ctl(value).map(Action::Ctl),
        other => Err(format!("unsupported action `{other}`")),
    }
}

fn parse_setvar(v: &str) -> Result<Action, String> {
    let (delete, v) = match v.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (lhs, rhs) = match v.split_once('=') {
        Some((l, r)) => (l.trim(), Some(r)),
        None => (v.trim(), None),
    };
    let (collection, name) = lhs
        .split_once('.')
        .ok_or_else(|| format!("setvar `{v}` needs collection.name"))?;
    let collection = collection.to_ascii_lowercase();
    if !matches!(
        collection.as_str(),
        "tx" | "ip" | "session" | "global" | "user" | "resource"
    ) {
        return Err(format!("setvar on unsupported collection `{collection}`"));
    }
    let op = if delete {
        SetOp::Delete
    } else {
        match rhs {
            None => SetOp::Set(Macro::parse("1")),
            Some(r) => match r.as_bytes().first() {
                Some(b'+') => SetOp::Add(Macro::parse(&r[1..])),
                Some(b'-') => SetOp::Sub(Macro::parse(&r[1..])),
                _ => SetOp::Set(Macro::parse(r)),
            },
        }
    };
    Ok(Action::SetVar {
        collection,
        name: Macro::parse(&name.to_ascii_lowercase()),
        op,
    })
}

fn exclusions(targets: &str) -> Result<Vec<Exclusion>, String> {
    let mut out = Vec::new();
    for t in seclang::split_targets(targets)? {
        let t = seclang::RawTarget { negated: true, ..t };
        if let Parsed::Exclusion(e) = parse_target(&t)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn parse_ctl(v: &str) -> Result<Ctl, String> {
    let (k, val) = v
        .split_once('=')
        .ok_or_else(|| format!("ctl `{v}` needs name=value"))?;
    let val = val.trim();
    Ok(match k.trim().to_ascii_lowercase().as_str() {
        "ruleremovebyid" => Ctl::RuleRemoveById(
            parse_id_ranges(val).ok_or_else(|| format!("bad id range `{val}`"))?,
        ),
        "ruleremovebytag" => Ctl::RuleRemoveByTag(val.to_owned()),
        "ruleremovetargetbyid" | "ruleremovetargetbytag" => {
            let (sel, targets) = val
                .split_once(';')
                .ok_or_else(|| format!("`{v}` needs rule;TARGET"))?;
            let ex = exclusions(targets)?;
            if k.trim().eq_ignore_ascii_case("ruleremovetargetbyid") {
                Ctl::RuleRemoveTargetById(
                    parse_id_ranges(sel).ok_or_else(|| format!("bad id range `{sel}`"))?,
                    ex,
                )
            } else {
                Ctl::RuleRemoveTargetByTag(sel.to_owned(), ex)
            }
        }
        "ruleengine" => Ctl::RuleEngine(match val.to_ascii_lowercase().as_str() {
            "on" => EngineOverride::On,
            "off" => EngineOverride::Off,
            "detectiononly" => EngineOverride::DetectionOnly,
            _ => return Err(format!("bad ruleEngine `{val}`")),
        }),
        "requestbodyprocessor" => {
            Ctl::RequestBodyProcessor(match val.to_ascii_uppercase().as_str() {
                "URLENCODED" => "URLENCODED",
                "MULTIPART" => "MULTIPART",
                "JSON" => "JSON",
                "XML" => "XML",
                _ => return Err(format!("unsupported body processor `{val}`")),
            })
        }
        "forcerequestbodyvariable" => Ctl::ForceRequestBodyVariable(val.eq_ignore_ascii_case("on")),
        "auditengine" | "auditlogparts" | "debugloglevel" | "requestbodyaccess"
        | "responsebodyaccess" | "requestbodylimit" | "hashengine" | "hashenforcement" => {
            Ctl::Ignored
        }
        other => return Err(format!("unsupported ctl `{other}`")),
    })
}

/// Applies `op` to a numeric-or-text variable as ModSecurity does: `+`/`-` treat both sides as
/// integers (non-numbers count as 0).
pub fn apply_setop(current: Option<&[u8]>, op: &SetOp, arg: &str) -> Option<Vec<u8>> {
    let num = |b: &[u8]| -> i64 {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    match op {
        SetOp::Delete => None,
        SetOp::Set(_) => Some(arg.as_bytes().to_vec()),
        SetOp::Add(_) => Some(
            (num(current.unwrap_or(b"0")).saturating_add(num(arg.as_bytes())))
                .to_string()
                .into_bytes(),
        ),
        SetOp::Sub(_) => Some(
            (num(current.unwrap_or(b"0")).saturating_sub(num(arg.as_bytes())))
                .to_string()
                .into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_expand() {
        let m = Macro::parse("score %{TX.anomaly_score} by %{MATCHED_VAR_NAME}!");
        let out = m.expand(&|r| match r {
            "tx.anomaly_score" => Some("5".into()),
            "matched_var_name" => Some("ARGS:x".into()),
            _ => None,
        });
        assert_eq!(out, "score 5 by ARGS:x!");
        assert_eq!(Macro::parse("plain").literal(), Some("plain"));
    }

    #[test]
    fn setvar_arithmetic() {
        let Ok(Action::SetVar { op, collection, .. }) = parse_action(
            "setvar",
            "tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}",
        ) else {
            panic!("parses")
        };
        assert_eq!(collection, "tx");
        assert_eq!(apply_setop(Some(b"3"), &op, "5"), Some(b"8".to_vec()));
        let Ok(Action::SetVar { op, .. }) = parse_action("setvar", "tx.x=-2") else {
            panic!("parses")
        };
        assert_eq!(apply_setop(None, &op, "2"), Some(b"-2".to_vec()));
        let Ok(Action::SetVar { op, .. }) = parse_action("setvar", "!tx.x") else {
            panic!("parses")
        };
        assert_eq!(apply_setop(Some(b"1"), &op, ""), None);
    }

    #[test]
    fn ctl_forms() {
        assert!(matches!(
            parse_ctl("ruleRemoveTargetById=942100;ARGS:password"),
            Ok(Ctl::RuleRemoveTargetById(r, ex)) if r == vec![(942100, 942100)] && ex.len() == 1
        ));
        assert!(matches!(
            parse_ctl("ruleEngine=DetectionOnly"),
            Ok(Ctl::RuleEngine(EngineOverride::DetectionOnly))
        ));
        assert!(parse_ctl("bogus=1").is_err());
    }
}
