//! Bytes an operator's every match needs: a per-value test that lets the engine skip operators
//! that cannot match, without running them.
//!
//! Most CRS patterns need some punctuation (`<`, `'`, `(`, `;`, `|`, `$`, `../`) that benign API
//! values rarely hold, while the regex crate's own prefilters still cost a call, an input setup
//! and a scan per (rule, value). Here each `@rx` is analysed once at load (its syntax tree from
//! `regex-syntax`, the parser the `regex` crate itself uses) into up to [`MAX_CONDITIONS`] byte
//! sets that every match must draw from; per request each value's bytes are collected once
//! (cached with its transformation) and a rule whose conditions the value cannot meet is skipped
//! with a few word operations. Sound by construction: a condition is only derived where the
//! syntax guarantees it (a literal, a class, a repetition of at least one), so a skipped operator
//! would not have matched; `tests` checks that against the CRS regression payloads.

use regex_syntax::hir::{Class, Hir, HirKind};

use super::literals::{OBFUSCATION, can_match_without};

/// At most this many conditions are kept per operator (the rarest ones).
const MAX_CONDITIONS: usize = 3;

/// A set of bytes, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    /// The bytes `value` holds.
    pub fn of(value: &[u8]) -> Self {
        let mut s = Self::default();
        for &b in value {
            s.insert(b);
        }
        s
    }

    /// The bytes of `bytes`, as a constant.
    pub const fn of_const(bytes: &[u8]) -> Self {
        let mut s = [0u64; 4];
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            s[(b >> 6) as usize] |= 1 << (b & 63);
            i += 1;
        }
        Self(s)
    }

    /// The bytes 0x80-0xFF, without which a value is ASCII and so valid UTF-8.
    pub const NON_ASCII: Self = Self([0, 0, u64::MAX, u64::MAX]);

    /// Every byte this set lacks.
    pub const fn complement(self) -> Self {
        let [a, b, c, d] = self.0;
        Self([!a, !b, !c, !d])
    }

    pub fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn insert_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.insert(b);
        }
    }

    /// The bytes `pred` holds for.
    pub fn where_(pred: impl Fn(u8) -> bool) -> Self {
        let mut s = Self::default();
        for b in (0..=255u8).filter(|&b| pred(b)) {
            s.insert(b);
        }
        s
    }

    pub fn union(&mut self, o: &Self) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a |= b;
        }
    }

    /// Branch-free: called for most (rule, value) pairs of a request.
    pub fn intersects(&self, o: &Self) -> bool {
        let [a, b, c, d] = self.0;
        let [e, f, g, h] = o.0;
        (a & e) | (b & f) | (c & g) | (d & h) != 0
    }

    pub fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&b| self.contains(b))
    }

    /// How common these bytes are in benign API text: lower is a better filter.
    fn weight(&self) -> u32 {
        self.iter().map(benign_frequency).sum()
    }
}

/// A rough rank of how often a byte occurs in benign values (JSON strings, names, header
/// values): letters, digits and space everywhere, a few separators often, other punctuation and
/// control bytes rarely.
fn benign_frequency(b: u8) -> u32 {
    match b {
        b'a'..=b'z' => 40,
        b'A'..=b'Z' | b'0'..=b'9' | b' ' => 30,
        b'.' | b'-' | b'_' | b'/' | b',' | b':' | b'=' | b'@' | b'+' => 12,
        b'(' | b')' | b';' | b'&' | b'?' | b'%' | b'#' | b'*' | b'!' => 4,
        _ => 1,
    }
}

/// Conditions every match meets: for each set, the matched text holds one of its bytes.
/// Empty: no condition known (the operator must always run).
#[derive(Clone, Debug, Default)]
pub struct Required(Vec<ByteSet>);

impl Required {
    /// The sets a value must each meet ([`super::admits`]); empty: no condition.
    pub fn sets(&self) -> &[ByteSet] {
        &self.0
    }

    /// For a compiled `@rx` pattern (the exact text given to the regex builder).
    pub fn for_regex(pattern: &str) -> Self {
        let parsed = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(pattern);
        match parsed {
            Ok(hir) => {
                let mut conds = needs(&hir);
                // A pattern that cannot match at all without one of a set's bytes needs that
                // set (CRS 932250 ends every alternative with a separator or a quote, which
                // `needs` does not see through the alternatives): the smallest such set.
                if let Some(set) = OBFUSCATION
                    .iter()
                    .map(|b| ByteSet::of(b))
                    .find(|set| !can_match_without(&hir, set))
                {
                    conds.push(set);
                }
                Self(best(conds))
            }
            // The regex crate compiled it, so this does not happen; no filter if it does.
            Err(_) => Self::default(),
        }
    }

    /// For `@pm` phrases (ASCII case-insensitive): every match is one phrase, so it holds the
    /// rarest byte of one of them, in either case.
    pub fn for_phrases<P: AsRef<[u8]>>(phrases: &[P]) -> Self {
        let mut set = ByteSet::default();
        for p in phrases {
            let Some(b) = p.as_ref().iter().copied().min_by_key(|&b| {
                benign_frequency(b.to_ascii_lowercase()) + benign_frequency(b.to_ascii_uppercase())
            }) else {
                // An empty phrase matches anywhere.
                return Self::default();
            };
            set.insert(b.to_ascii_lowercase());
            set.insert(b.to_ascii_uppercase());
        }
        Self(vec![set])
    }
}

/// The rarest conditions, at most [`MAX_CONDITIONS`]; sets that admit almost any text dropped.
fn best(mut conds: Vec<ByteSet>) -> Vec<ByteSet> {
    conds.sort_by_key(ByteSet::weight);
    conds.dedup();
    conds.truncate(MAX_CONDITIONS);
    // A condition any lowercase word meets filters nothing and costs a check.
    conds.retain(|c| c.weight() < 26 * 40);
    conds
}

/// Conditions every match of `h` meets (a conjunction; empty when `h` can match without any).
fn needs(h: &Hir) -> Vec<ByteSet> {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Vec::new(),
        HirKind::Literal(lit) => lit
            .0
            .iter()
            .map(|&b| {
                let mut s = ByteSet::default();
                s.insert(b);
                s
            })
            .collect(),
        HirKind::Class(class) => {
            let mut s = ByteSet::default();
            match class {
                Class::Bytes(c) => {
                    for r in c.iter() {
                        s.insert_range(r.start(), r.end());
                    }
                }
                Class::Unicode(c) => {
                    // A code point's UTF-8 encoding starts with the byte itself (ASCII) or with
                    // a lead byte 0xC2..=0xF4: take every lead byte.
                    for r in c.iter() {
                        let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                        if lo < 0x80 {
                            s.insert_range(lo as u8, hi.min(0x7f) as u8);
                        }
                        if hi >= 0x80 {
                            s.insert_range(0xc0, 0xff);
                        }
                    }
                }
            }
            if s == ByteSet::default() {
                // An empty class never matches; any condition is sound, keep none.
                return Vec::new();
            }
            vec![s]
        }
        HirKind::Repetition(rep) => {
            if rep.min == 0 {
                Vec::new()
            } else {
                needs(&rep.sub)
            }
        }
        HirKind::Capture(cap) => needs(&cap.sub),
        HirKind::Concat(subs) => best(subs.iter().flat_map(needs).collect()),
        HirKind::Alternation(subs) => {
            // One branch matches: the union of one condition per branch holds.
            let mut u = ByteSet::default();
            for s in subs {
                let Some(c) = needs(s).into_iter().min_by_key(ByteSet::weight) else {
                    return Vec::new();
                };
                u.union(&c);
            }
            vec![u]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(pattern: &str, value: &[u8]) -> bool {
        crate::waf::operator::admits(
            Required::for_regex(&format!("(?sm-u){pattern}")).sets(),
            &ByteSet::of(value),
        )
    }

    #[test]
    fn literal_punctuation_is_required() {
        assert!(!admits("<script", b"hello world"));
        assert!(admits("<script", b"<script>"));
        assert!(!admits("(?i)union.{0,9}select\\(", b"union select x"));
    }

    #[test]
    fn alternation_needs_one_branch_and_optional_parts_need_nothing() {
        assert!(admits("a?b*", b""));
        assert!(admits("'|\"|;", b"x;y"));
        assert!(!admits("'|\"|;", b"xy"));
        assert!(admits("x|\\w+", b"zz"));
        assert!(admits("^$", b""));
    }

    #[test]
    fn case_folded_literals_and_classes() {
        // Either case of each letter is a condition.
        assert!(admits("(?i)select", b"xSeLeCtx"));
        assert!(!admits("(?i)select", b"hello"));
        // A class of any lowercase letter filters nothing and is dropped.
        assert!(Required::for_regex("(?sm-u)[a-z]+").sets().is_empty());
        assert!(admits("[<>]", b">"));
        assert!(!admits("[<>]", b"a"));
    }

    #[test]
    fn a_pattern_that_cannot_match_without_a_separator_needs_one() {
        // CRS 932250's shape: every command ends in a separator, but each alternative lends
        // `needs` its rarest byte (the `7` of `7z`), which alone admits any value with a 7.
        let p =
            r#"(?i)(?:l["'\x5c]*s["']?[\s,&|]|c["'\x5c]*a["'\x5c]*t["']?[\s,&|]|7z["']?[\s,&|])"#;
        assert!(!admits(p, b"item7z"));
        assert!(admits(p, b"7z x"));
        assert!(admits(p, b"c'at,"));
    }

    #[test]
    fn phrases_match_in_either_case() {
        let r = Required::for_phrases(&["<?php", "eval("]);
        assert!(crate::waf::operator::admits(
            r.sets(),
            &ByteSet::of(b"EVAL(1)")
        ));
        assert!(!crate::waf::operator::admits(
            r.sets(),
            &ByteSet::of(b"evaluate")
        ));
    }
}

/// The filter against the real thing: for every CRS rule and the strings of the CRS regression
/// payloads (request line, headers, body, decoded arguments) after each rule's transformations,
/// every operator call the filter would skip is made anyway and must not match. Each test's
/// strings go through the links of the rule it targets, and every 8th test's through all links.
#[cfg(test)]
mod crs_property {
    use std::path::{Path, PathBuf};

    use super::ByteSet;
    use crate::waf::{
        body, load_rules,
        operator::LiteralIndex,
        rule::{Item, Link},
    };

    fn shared() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
    }

    fn strings(case: &serde_json::Value) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let s = |k: &str| case.get(k).and_then(|v| v.as_str()).map(str::as_bytes);
        for k in ["uri", "body", "data_raw", "method"] {
            if let Some(v) = s(k) {
                out.push(v.to_vec());
                out.push(body::url_decode(v).0);
                let query = if k == "uri" {
                    v.splitn(2, |&b| b == b'?').nth(1).unwrap_or(b"")
                } else {
                    v
                };
                for (name, value) in body::parse_urlencoded(query).0 {
                    out.push(name);
                    out.push(value);
                }
            }
        }
        for h in case
            .get("headers")
            .and_then(|h| h.as_array())
            .into_iter()
            .flatten()
        {
            for part in h.as_array().into_iter().flatten() {
                if let Some(p) = part.as_str() {
                    out.push(p.as_bytes().to_vec());
                }
            }
        }
        out
    }

    /// Panics if the byte filter or the literal index skips `link` on `raw` (transformed)
    /// although its operator matches.
    fn check(
        id: u32,
        link: &Link,
        literals: Option<&LiteralIndex>,
        raw: &[u8],
        skipped: &mut [usize; 2],
    ) {
        let Some(op) = &link.op else { return };
        let mut value = raw.to_vec();
        for t in link.transforms.iter() {
            value = t.apply(&value).into_owned();
        }
        let by_bytes = op.filters() && !op.may_match(&ByteSet::of(&value));
        let by_literals = match (link.literal_filter, literals) {
            (Some(f), Some(index)) if f.applies(&ByteSet::of(&value)) => {
                let mut bits = vec![0u64; index.words()];
                index.scan(&value, &mut bits);
                bits[f.bit as usize / 64] & (1 << (f.bit % 64)) == 0
            }
            _ => false,
        };
        if !by_bytes && !by_literals {
            return;
        }
        skipped[usize::from(by_literals)] += 1;
        fn no_macros(_: &crate::waf::actions::Macro) -> std::borrow::Cow<'_, str> {
            unreachable!("filtered operators have no macros")
        }
        assert_eq!(
            op.matches(&value, &no_macros, None),
            op.negated(),
            "rule {id}: the filter skips @{} on {:?}",
            op.arg(),
            String::from_utf8_lossy(&value)
        );
    }

    #[test]
    fn the_filter_never_skips_a_crs_rule_that_matches_a_crs_regression_payload() {
        let set = load_rules(&[shared().join("crs/rules/*.conf")]).expect("CRS loads");
        let links: Vec<(u32, &Link)> = set
            .phases
            .iter()
            .flat_map(|p| &p.items)
            .filter_map(|i| match i {
                Item::Rule(r) => Some(r),
                Item::Marker(_) => None,
            })
            .flat_map(|r| r.links.iter().map(move |l| (r.id, l)))
            .filter(|(_, l)| {
                l.op.as_ref().is_some_and(|o| o.filters()) || l.literal_filter.is_some()
            })
            .collect();
        assert!(links.len() > 250, "only {} links filtered", links.len());
        let corpus = std::fs::read_to_string(shared().join("corpora/crs-regression.jsonl"))
            .expect("corpus at ../shared/corpora");
        let (mut skipped, mut cases) = ([0, 0], 0);
        for (n, line) in corpus.lines().enumerate() {
            let case: serde_json::Value = serde_json::from_str(line).expect("jsonl");
            let rule_id = case.get("rule_id").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
            let values = strings(&case);
            cases += 1;
            for &(id, link) in &links {
                if id != rule_id && n % 8 != 0 {
                    continue;
                }
                for v in &values {
                    check(id, link, set.literals.as_ref(), v, &mut skipped);
                }
            }
        }
        assert!(cases > 5000, "{cases}");
        assert!(
            skipped[0] > 100_000 && skipped[1] > 500_000,
            "only {skipped:?} skipped calls checked (bytes, literals)"
        );
    }
}
