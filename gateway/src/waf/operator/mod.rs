//! Operators (`@rx`, `@pm`, `@detectSQLi`, ...): parsed and compiled once when rules load, matched
//! per variable value on the request path. Semantics follow ModSecurity v3 (what the CRS
//! regression tests assume); each family lives in its own file.

mod compare;
mod ip;
mod libinjection;
mod literals;
mod pm;
mod required;
mod rx;
mod validate;

use std::{borrow::Cow, path::Path};

use super::actions::Macro;

pub use libinjection::{detect_sqli, detect_xss};
pub use literals::{Factors, LiteralIndex};
pub use required::ByteSet;

/// Why an operator could not be built from its rule text.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("unsupported operator @{0}")]
    Unknown(String),
    #[error("@{op}: {reason}")]
    BadArgument { op: String, reason: String },
    #[error("@rx: pattern does not compile: {0}")]
    BadRegex(String),
    #[error("@{op}: cannot read {}: {reason}", path.display())]
    Io {
        op: String,
        path: std::path::PathBuf,
        reason: String,
    },
}

/// A compiled operator with its negation.
#[derive(Debug)]
pub struct Operator {
    kind: Kind,
    negated: bool,
    /// The argument as written, macros unexpanded (for logs and the macro path).
    arg: String,
    macros: bool,
    /// The argument split into literals and references once, when it has macros.
    arg_macro: Option<Macro>,
    /// Byte sets a value must meet each of (hold one of its bytes) for the operator to be able
    /// to match; empty: no such condition. Built once so the engine's per-value check is a
    /// few word ANDs over a slice ([`Self::may_match`]).
    needs: Box<[ByteSet]>,
}

#[derive(Debug)]
enum Kind {
    Rx(rx::Rx),
    Pm(pm::Pm),
    Str(compare::StrOp, compare::StrArg),
    Num(compare::NumOp, compare::NumArg),
    IpMatch(ip::IpSet),
    DetectSqli,
    DetectXss,
    ValidateByteRange(validate::ByteRange),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    Unconditional,
    NoMatch,
}

/// Bytes one of which a value needs for libinjection to call it XSS. Its HTML5 tokenizer, in
/// each of the five contexts it tries, emits a tag, comment or doctype only after `<` and an
/// attribute value after an attribute name only after `=` (the quoted contexts start inside a
/// value that has no attribute name, which is never black); nothing else makes it report XSS.
/// Most benign values hold neither: libinjection's five passes over them are skipped.
const XSS_NEEDS: ByteSet = ByteSet::of_const(b"<=");

/// Bytes one of which a value needs for libinjection to call it SQL injection: anything but
/// ASCII letters, digits and `_`. A value of only those has no quote (so only the plain parse
/// runs), no comment (so no MySQL re-parse), and tokenises into at most two tokens: a number
/// (`1`, `0x1f`, `1e5`, `1d`; `0x`/`0b` alone as a bare word) and then one word, since word
/// characters include digits and nothing in such a value ends a word. The blacklisted
/// fingerprints of one or two tokens are `X`, `1c`, `1U`, `nc`, `sc`, `vc` and `vU`
/// (`sqli_data`): no keyword is of type `X` or `c`, and `1U` with exactly two tokens is
/// whitelisted (libinjection's "1 union" case). API values such as ids, enum names, booleans
/// and integers are most of what this skips.
const SQLI_NEEDS: ByteSet =
    ByteSet::of_const(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
        .complement();

/// Whether a value holding `present` meets every set of `needs` ([`Operator::needs`]).
#[inline]
pub fn admits(needs: &[ByteSet], present: &ByteSet) -> bool {
    needs.iter().all(|s| s.intersects(present))
}

impl Operator {
    /// `name` without '@' ("rx"), `negated` for `!@`, `arg` verbatim with %{..} macros
    /// unexpanded, `rule_dir` resolves @pmFromFile/@ipMatchFromFile relative paths.
    pub fn parse(
        name: &str,
        negated: bool,
        arg: &str,
        rule_dir: &Path,
    ) -> Result<Self, OperatorError> {
        let macros = arg.contains("%{");
        let bad = |reason: String| OperatorError::BadArgument {
            op: name.to_string(),
            reason,
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "rx" => Kind::Rx(if macros {
                rx::Rx::dynamic()
            } else {
                rx::Rx::compile(arg)?
            }),
            "pm" => Kind::Pm(if macros {
                pm::Pm::dynamic()
            } else {
                pm::Pm::from_phrases(arg).map_err(bad)?
            }),
            "pmf" | "pmfromfile" => {
                Kind::Pm(pm::Pm::from_files(arg, rule_dir).map_err(|(path, reason)| {
                    OperatorError::Io {
                        op: name.to_string(),
                        path,
                        reason,
                    }
                })?)
            }
            "streq" => str_op(compare::StrOp::Eq, arg, macros),
            "contains" => str_op(compare::StrOp::Contains, arg, macros),
            "containsword" => str_op(compare::StrOp::ContainsWord, arg, macros),
            "beginswith" => str_op(compare::StrOp::BeginsWith, arg, macros),
            "endswith" => str_op(compare::StrOp::EndsWith, arg, macros),
            "within" => str_op(compare::StrOp::Within, arg, macros),
            "strmatch" => str_op(compare::StrOp::Contains, arg, macros),
            "eq" => num_op(compare::NumOp::Eq, arg, macros),
            "ge" => num_op(compare::NumOp::Ge, arg, macros),
            "gt" => num_op(compare::NumOp::Gt, arg, macros),
            "le" => num_op(compare::NumOp::Le, arg, macros),
            "lt" => num_op(compare::NumOp::Lt, arg, macros),
            "ipmatch" => Kind::IpMatch(ip::IpSet::parse(arg).map_err(bad)?),
            "ipmatchfromfile" | "ipmatchf" => Kind::IpMatch(
                ip::IpSet::from_file(arg, rule_dir).map_err(|(path, reason)| {
                    OperatorError::Io {
                        op: name.to_string(),
                        path,
                        reason,
                    }
                })?,
            ),
            "detectsqli" => Kind::DetectSqli,
            "detectxss" => Kind::DetectXss,
            "validatebyterange" => {
                Kind::ValidateByteRange(validate::ByteRange::parse(arg).map_err(bad)?)
            }
            "validateurlencoding" => Kind::ValidateUrlEncoding,
            "validateutf8encoding" => Kind::ValidateUtf8Encoding,
            "unconditionalmatch" => Kind::Unconditional,
            "nomatch" => Kind::NoMatch,
            _ => return Err(OperatorError::Unknown(name.to_string())),
        };
        // Only operators whose argument is text or a number expand macros; the others take it
        // literally (a file name, a range list) and never call `expand`.
        let macros = macros
            && matches!(
                kind,
                Kind::Rx(_) | Kind::Pm(_) | Kind::Str(..) | Kind::Num(..)
            );
        let needs: Box<[ByteSet]> = if negated || macros {
            Box::default()
        } else {
            match &kind {
                Kind::Rx(rx) => rx.required().sets().into(),
                Kind::Pm(pm) => pm.required().sets().into(),
                Kind::DetectXss => Box::new([XSS_NEEDS]),
                Kind::DetectSqli => Box::new([SQLI_NEEDS]),
                Kind::ValidateByteRange(r) => Box::new([*r.outside()]),
                Kind::ValidateUtf8Encoding => Box::new([ByteSet::NON_ASCII]),
                _ => Box::default(),
            }
        };
        Ok(Self {
            kind,
            negated,
            arg: arg.to_string(),
            macros,
            arg_macro: macros.then(|| Macro::parse(arg)),
            needs,
        })
    }

    /// Whether the argument holds `%{...}` macros: `matches` then calls `expand`.
    pub fn has_macros(&self) -> bool {
        self.macros
    }

    /// Whether a value holding the bytes `present` can make this operator match; `false` means
    /// [`Self::matches`] would return `false` (the engine then skips the call).
    pub fn may_match(&self, present: &ByteSet) -> bool {
        admits(&self.needs, present)
    }

    /// The byte sets behind [`Self::may_match`]: a value must meet each; empty when the
    /// operator has no byte condition. For callers that check many values in a row
    /// ([`admits`]).
    pub fn needs(&self) -> &[ByteSet] {
        &self.needs
    }

    /// Strings one of which every match contains, for the shared literal index, on values
    /// holding none of the returned bytes (`None`: no such guarantee, or a negated or macro
    /// operator).
    pub fn literal_factors(&self) -> Option<(&Factors, ByteSet)> {
        if self.negated || self.macros {
            return None;
        }
        match &self.kind {
            Kind::Rx(rx) => rx.factors(),
            Kind::Pm(pm) => pm.factors().map(|f| (f, ByteSet::default())),
            _ => None,
        }
    }

    /// Whether [`Self::may_match`] can ever say no (worth collecting a value's bytes for).
    pub fn filters(&self) -> bool {
        !self.needs.is_empty()
    }

    /// Whether this is `!@...`.
    pub fn negated(&self) -> bool {
        self.negated
    }

    /// The argument as written.
    pub fn arg(&self) -> &str {
        &self.arg
    }

    /// Negation applied. `expand` resolves %{...} macros in the argument (called only when
    /// [`Self::has_macros`]); `captures` gets TX.0..TX.9 (whole match then groups) when the rule
    /// has `capture` (for @detectSQLi the libinjection fingerprint goes in TX.0, as ModSecurity
    /// does).
    pub fn matches<'s>(
        &'s self,
        input: &[u8],
        expand: &dyn Fn(&'s Macro) -> Cow<'s, str>,
        captures: Option<&mut Vec<Vec<u8>>>,
    ) -> bool {
        self.matches_raw(input, expand, captures) != self.negated
    }

    fn matches_raw<'s>(
        &'s self,
        input: &[u8],
        expand: &dyn Fn(&'s Macro) -> Cow<'s, str>,
        captures: Option<&mut Vec<Vec<u8>>>,
    ) -> bool {
        let expanded = || self.arg_macro.as_ref().map(expand).unwrap_or_default();
        match &self.kind {
            Kind::Rx(rx) => {
                if self.macros {
                    match rx::Rx::compile(&expanded()) {
                        Ok(rx) => rx.is_match(input, captures),
                        Err(e) => {
                            tracing::debug!(error = %e, "@rx pattern after macro expansion does not compile");
                            false
                        }
                    }
                } else {
                    rx.is_match(input, captures)
                }
            }
            Kind::Pm(pm) => {
                if self.macros {
                    pm::Pm::from_phrases(&expanded()).is_ok_and(|pm| pm.is_match(input, captures))
                } else {
                    pm.is_match(input, captures)
                }
            }
            Kind::Str(op, arg) => {
                let owned;
                let param: &[u8] = match arg {
                    compare::StrArg::Static(s) => s,
                    compare::StrArg::Macro => {
                        owned = expanded();
                        owned.as_bytes()
                    }
                };
                let hit = op.matches(input, param);
                if hit && let Some(c) = captures {
                    c.clear();
                    c.push(param.to_vec());
                }
                hit
            }
            Kind::Num(op, arg) => {
                let param = match arg {
                    compare::NumArg::Static(v) => *v,
                    compare::NumArg::Macro => compare::c_atoi(expanded().as_bytes()),
                };
                op.matches(compare::c_atoi(input), param)
            }
            Kind::IpMatch(set) => set.contains(input),
            Kind::DetectSqli => {
                let (hit, fingerprint) = detect_sqli(input);
                if hit && let Some(c) = captures {
                    c.clear();
                    c.push(fingerprint);
                }
                hit
            }
            Kind::DetectXss => detect_xss(input),
            Kind::ValidateByteRange(r) => r.has_byte_outside(input),
            Kind::ValidateUrlEncoding => validate::invalid_url_encoding(input),
            Kind::ValidateUtf8Encoding => std::str::from_utf8(input).is_err(),
            Kind::Unconditional => true,
            Kind::NoMatch => false,
        }
    }
}

fn str_op(op: compare::StrOp, arg: &str, macros: bool) -> Kind {
    Kind::Str(
        op,
        if macros {
            compare::StrArg::Macro
        } else {
            compare::StrArg::Static(arg.as_bytes().to_vec())
        },
    )
}

fn num_op(op: compare::NumOp, arg: &str, macros: bool) -> Kind {
    Kind::Num(
        op,
        if macros {
            compare::NumArg::Macro
        } else {
            compare::NumArg::Static(compare::c_atoi(arg.as_bytes()))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_macros(_: &Macro) -> Cow<'_, str> {
        unreachable!("no macros in this operator")
    }

    fn op(name: &str, negated: bool, arg: &str) -> Operator {
        Operator::parse(name, negated, arg, Path::new(".")).expect("operator parses")
    }

    /// The CRS rule files, continuation lines joined, as (file, `"operator"` text) per SecRule.
    fn crs_operators() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crs/rules");
        let mut out = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("CRS rules at ../shared/crs/rules")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("conf"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path)
                .expect("rule file")
                .replace("\\\n", " ");
            for line in text
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with("SecRule "))
            {
                // SecRule VARIABLES "OPERATOR" "ACTIONS": the first quoted string.
                let Some(start) = line.find('"') else {
                    continue;
                };
                let bytes = line.as_bytes();
                let mut end = start + 1;
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((name, line[start + 1..end.min(line.len())].to_string()));
            }
        }
        out
    }

    /// Splits `!@name arg` (a missing `@name` is `@rx`).
    fn split_operator(text: &str) -> (bool, String, String) {
        let (negated, rest) = match text.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, text),
        };
        match rest.strip_prefix('@') {
            Some(r) => {
                let (name, arg) = r.split_once(' ').unwrap_or((r, ""));
                (negated, name.to_string(), arg.to_string())
            }
            None => (negated, "rx".to_string(), rest.to_string()),
        }
    }

    /// Every operator CRS v4 uses parses, every @rx compiles (with the raised size limits), and
    /// every @pmFromFile data file loads.
    #[test]
    fn every_crs_operator_parses_and_every_regex_compiles() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crs/rules");
        let ops = crs_operators();
        let mut regexes = 0;
        let mut failures = Vec::new();
        for (file, text) in &ops {
            let (negated, name, arg) = split_operator(text);
            // In a quoted SecLang string `\"` is a quote; a regex reads `\"` as a quote too.
            let arg = if name == "rx" {
                arg
            } else {
                arg.replace("\\\"", "\"")
            };
            match Operator::parse(&name, negated, &arg, &dir) {
                Ok(o) => {
                    if matches!(o.kind, Kind::Rx(_)) && !o.has_macros() {
                        regexes += 1;
                    }
                }
                Err(e) => failures.push(format!("{file}: @{name}: {e}")),
            }
        }
        assert!(
            failures.is_empty(),
            "{} operators fail:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(ops.len() > 500, "only {} SecRules found", ops.len());
        assert!(regexes > 250, "only {regexes} regexes compiled");
    }

    #[test]
    fn negation_inverts() {
        assert!(op("streq", false, "POST").matches(b"POST", &no_macros, None));
        assert!(!op("streq", true, "POST").matches(b"POST", &no_macros, None));
        assert!(op("rx", true, "^GET$").matches(b"PUT", &no_macros, None));
        assert!(op("unconditionalMatch", false, "").matches(b"", &no_macros, None));
        assert!(!op("noMatch", false, "").matches(b"x", &no_macros, None));
        assert!(op("noMatch", true, "").matches(b"x", &no_macros, None));
    }

    #[test]
    fn macros_expand_per_call() {
        let within = op("within", true, "%{tx.allowed_methods}");
        assert!(within.has_macros());
        let expand = |m: &Macro| {
            assert_eq!(m, &Macro::parse("%{tx.allowed_methods}"));
            Cow::Borrowed("GET HEAD POST")
        };
        assert!(!within.matches(b"GET", &expand, None));
        assert!(within.matches(b"TRACE", &expand, None));
        let lt = op("lt", false, "%{tx.detection_paranoia_level}");
        assert!(lt.matches(b"1", &|_| Cow::Borrowed("2"), None));
        assert!(!lt.matches(b"2", &|_| Cow::Borrowed("2"), None));
        let rx = op("rx", false, "^%{tx.prefix}");
        assert!(rx.matches(b"abc", &|_| Cow::Borrowed("^ab"), None));
        // Literal-argument operators never expand.
        assert!(!op("validateByteRange", false, "32-126").has_macros());
    }

    /// The `@detectXSS` byte filter only skips values libinjection passes: every sequence of
    /// up to four pieces (the tokenizer's other special bytes, black attribute names, a black
    /// URL scheme; no `<`, no `=`) is skipped and is not XSS to it; with one of the two it runs.
    #[test]
    fn xss_filter_skips_only_what_libinjection_passes() {
        let xss = op("detectXSS", false, "");
        assert!(xss.filters());
        let pieces: [&[u8]; 14] = [
            b" ",
            b"\"",
            b"'",
            b"`",
            b">",
            b"/",
            b"!",
            b"-",
            b"?",
            b"onerror",
            b"style",
            b"javascript:",
            b"href",
            b"\t",
        ];
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = values
                .iter()
                .flat_map(|v| pieces.iter().map(move |p| [v.as_slice(), p].concat()))
                .collect();
            values.extend(longer);
        }
        assert!(values.len() > 40_000);
        for v in &values {
            assert!(!xss.may_match(&ByteSet::of(v)));
            assert!(!detect_xss(v), "{:?}", String::from_utf8_lossy(v));
        }
        for v in [
            &b"<script>alert(1)</script>"[..],
            b"x onerror=alert(1)",
            b"' style=x",
        ] {
            assert!(xss.may_match(&ByteSet::of(v)));
            assert!(detect_xss(v), "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn numeric_comparisons() {
        assert!(op("eq", false, "0").matches(b"0", &no_macros, None));
        assert!(op("eq", false, "0").matches(b"abc", &no_macros, None));
        assert!(op("ge", false, "5").matches(b"5", &no_macros, None));
        assert!(op("gt", false, "5").matches(b"6", &no_macros, None));
        assert!(!op("gt", false, "5").matches(b"5", &no_macros, None));
        assert!(op("le", false, "5").matches(b"-1", &no_macros, None));
        assert!(op("lt", false, "2").matches(b"1", &no_macros, None));
    }

    /// The `@detectSQLi` byte filter only skips values libinjection passes: every SQL keyword
    /// libinjection knows (as written and lower case) between heads and tails (numbers, hex and
    /// binary forms, exponents, Oracle suffixes, word pieces, and also spaces, dots, quotes and
    /// dashes, so that the check also sees what the filter must not skip), and 200,000
    /// pseudo-random strings: whatever the filter skips is not SQLi to libinjection.
    #[test]
    fn sqli_filter_skips_only_what_libinjection_passes() {
        use libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;
        let sqli = op("detectSQLi", false, "");
        assert!(sqli.filters());
        let heads: [&[u8]; 22] = [
            b"",
            b"1",
            b"0",
            b"12",
            b"0x",
            b"0x1f",
            b"0b",
            b"0b1",
            b"1e",
            b"1e5",
            b"1d",
            b"1f",
            b"1fu",
            b"1_",
            b"x",
            b"_",
            b"1 ",
            b"1.",
            b"' ",
            b"-1 ",
            b"1 union ",
            b"1.union.",
        ];
        let tails: [&[u8]; 9] = [
            b"",
            b"1",
            b"_",
            b"x",
            b" 1",
            b".1",
            b"--",
            b" select 1",
            b".select.1",
        ];
        let (mut skipped, mut sqli_seen) = (0, 0);
        let mut check = |v: &[u8]| {
            let hit = detect_sqli(v).0;
            sqli_seen += usize::from(hit);
            if !sqli.may_match(&ByteSet::of(v)) {
                assert!(!hit, "skipped but SQLi: {:?}", String::from_utf8_lossy(v));
                skipped += 1;
            }
        };
        // (Not the fingerprint entries of the same table: those are no words.)
        for k in SQL_KEYWORDS.iter().filter(|k| k.token_type != b'F') {
            for w in [k.word.to_string(), k.word.to_ascii_lowercase()] {
                for h in heads {
                    for t in tails {
                        check(&[h, w.as_bytes(), t].concat());
                    }
                }
            }
        }
        // Pseudo-random strings (xorshift, fixed seed): digits, letters of keywords and number
        // forms, `_`, and a few bytes the filter must let through.
        let alphabet = b"0123456789abcdefxABCDEFXeEdDfFuUnNiIoOsSlL_ .'-";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 12) as usize;
            let v: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (4 * i)) % alphabet.len() as u64) as usize])
                .collect();
            check(&v);
        }
        // The check saw many skipped values, and many SQLi ones among the others.
        assert!(skipped > 50_000, "{skipped}");
        assert!(sqli_seen > 500, "{sqli_seen}");
    }

    #[test]
    fn detect_sqli_captures_the_fingerprint() {
        let sqli = op("detectSQLi", false, "");
        let mut caps = Vec::new();
        assert!(sqli.matches(b"1' OR '1'='1", &no_macros, Some(&mut caps)));
        assert_eq!(caps.len(), 1);
        assert!(!caps[0].is_empty());
        assert!(!sqli.matches(b"hello world", &no_macros, None));
        let xss = op("detectXSS", false, "");
        assert!(xss.matches(b"<script>alert(1)</script>", &no_macros, None));
        assert!(!xss.matches(b"just text", &no_macros, None));
    }

    #[test]
    fn validation_operators_match_invalid_input() {
        assert!(op("validateUtf8Encoding", false, "").matches(b"\xc3\x28", &no_macros, None));
        assert!(op("validateUtf8Encoding", false, "").matches(b"\xc0\xaf", &no_macros, None));
        assert!(!op("validateUtf8Encoding", false, "").matches(
            "héllo".as_bytes(),
            &no_macros,
            None
        ));
        assert!(op("validateUrlEncoding", false, "").matches(b"%g1", &no_macros, None));
        assert!(op("validateByteRange", false, "32-126").matches(b"a\x01", &no_macros, None));
    }

    #[test]
    fn unknown_operators_and_bad_arguments_are_errors() {
        let dir = Path::new(".");
        assert!(matches!(
            Operator::parse("geoLookup", false, "", dir),
            Err(OperatorError::Unknown(_))
        ));
        assert!(matches!(
            Operator::parse("rx", false, "(unclosed", dir),
            Err(OperatorError::BadRegex(_))
        ));
        assert!(matches!(
            Operator::parse("ipMatch", false, "nope", dir),
            Err(OperatorError::BadArgument { .. })
        ));
        assert!(matches!(
            Operator::parse("pmFromFile", false, "nope.data", dir),
            Err(OperatorError::Io { .. })
        ));
    }
}
