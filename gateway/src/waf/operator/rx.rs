//! `@rx` on the `regex` crate's bytes API.
//!
//! ModSecurity compiles with PCRE_DOTALL | PCRE_MULTILINE and matches bytes (no UTF mode); Coraza
//! prefixes `(?sm)`. Here: `(?sm-u)`: dot-all, multi-line anchors, and Unicode off, so `.` and
//! negated classes match any byte (also invalid UTF-8), `\w`, `\d`, `\s`, `\b` and `(?i)` are ASCII
//! like PCRE without UTF, and `\xHH` is the byte HH. `\x{HH}` is the byte HH too, as in PCRE
//! without UTF (CRS 941310 and 934110 spell bytes that way); the `regex` crate reads it as a code
//! point, so it is rewritten to `\xHH` first. Size limits are raised so the largest CRS regexes
//! (assembled from thousands of words) compile.

use super::{
    OperatorError,
    literals::{self, Factors},
    required::{ByteSet, Required},
};

/// Compiled size limit: the biggest CRS v4 patterns need tens of MiB as NFAs.
const SIZE_LIMIT: usize = 256 << 20;
const DFA_SIZE_LIMIT: usize = 64 << 20;

#[derive(Debug)]
pub(super) struct Rx {
    re: Option<regex::bytes::Regex>,
    required: Required,
    /// The pattern matches every input whole (`^.*$`, `.*`, empty: dot-all and multi-line
    /// anchors make it so). CRS 920450 runs `^.*$` with `capture` on every header name only to
    /// copy it into TX.0; answered without a regex engine.
    whole: bool,
    /// Strings one of which every match contains on values holding none of the set's bytes
    /// ([`super::literals::for_regex`]).
    factors: Option<(Factors, ByteSet)>,
}

/// Patterns that, under `(?sm)`, match every input from its first byte to its last.
const WHOLE_INPUT: [&str; 5] = ["", ".*", "^.*", ".*$", "^.*$"];

impl Rx {
    pub(super) fn compile(pattern: &str) -> Result<Self, OperatorError> {
        // ModSecurity: an empty pattern matches everything.
        let pattern = if pattern.is_empty() { ".*" } else { pattern };
        let full = format!("(?sm-u){}", braced_hex_to_bytes(pattern));
        let re = regex::bytes::RegexBuilder::new(&full)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| OperatorError::BadRegex(e.to_string()))?;
        Ok(Self {
            re: Some(re),
            required: Required::for_regex(&full),
            whole: WHOLE_INPUT.contains(&pattern),
            factors: literals::for_regex(&full),
        })
    }

    /// A pattern with macros, compiled per evaluation from its expansion.
    pub(super) fn dynamic() -> Self {
        Self {
            re: None,
            required: Required::default(),
            whole: false,
            factors: None,
        }
    }

    /// Bytes every match needs (see [`Required`]).
    pub(super) fn required(&self) -> &Required {
        &self.required
    }

    pub(super) fn factors(&self) -> Option<(&Factors, ByteSet)> {
        self.factors.as_ref().map(|(f, unless)| (f, *unless))
    }

    pub(super) fn is_match(&self, input: &[u8], captures: Option<&mut Vec<Vec<u8>>>) -> bool {
        let Some(re) = &self.re else { return false };
        if self.whole {
            if let Some(out) = captures {
                out.clear();
                out.push(input.to_vec());
            }
            return true;
        }
        match captures {
            None => re.is_match(input),
            Some(out) => {
                // `captures` allocates and runs a capturing engine; most values do not match,
                // and `is_match` answers that from the lazy DFA alone.
                if !re.is_match(input) {
                    return false;
                }
                let Some(caps) = re.captures(input) else {
                    return false;
                };
                out.clear();
                // TX.0 is the whole match, TX.1..TX.9 the groups; ModSecurity stops at 9.
                for g in caps.iter().take(10) {
                    out.push(g.map(|m| m.as_bytes().to_vec()).unwrap_or_default());
                }
                true
            }
        }
    }
}

/// Rewrites `\x{H}` / `\x{HH}` to `\xHH`, leaving escaped backslashes and wider code points alone.
fn braced_hex_to_bytes(pattern: &str) -> std::borrow::Cow<'_, str> {
    if !pattern.contains("\\x{") {
        return std::borrow::Cow::Borrowed(pattern);
    }
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if i + 2 < b.len() && b[i + 1] == b'x' && b[i + 2] == b'{' {
            let digits_start = i + 3;
            let mut j = digits_start;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            let n = j - digits_start;
            if j < b.len() && b[j] == b'}' && (1..=2).contains(&n) {
                out.push_str(&pattern[copied..i]);
                out.push_str("\\x");
                if n == 1 {
                    out.push('0');
                }
                out.push_str(&pattern[digits_start..j]);
                i = j + 1;
                copied = i;
                continue;
            }
        }
        // Skip the escaped character (this also skips the second backslash of `\\`).
        i += 2;
    }
    out.push_str(&pattern[copied..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(p: &str) -> Rx {
        Rx::compile(p).expect("pattern compiles")
    }

    #[test]
    fn dot_matches_newline_and_any_byte() {
        assert!(rx("a.b").is_match(b"a\nb", None));
        assert!(rx("a.b").is_match(b"a\xffb", None));
        assert!(rx("[^x]z").is_match(b"\xc3z", None));
        assert!(rx(r"\xff").is_match(b"\xff", None));
    }

    #[test]
    fn braced_hex_is_a_byte() {
        assert_eq!(
            braced_hex_to_bytes(r"[\x7f-\x{ff}]\x{a}"),
            r"[\x7f-\xff]\x0a"
        );
        assert_eq!(braced_hex_to_bytes(r"\\x{41}"), r"\\x{41}");
        assert_eq!(braced_hex_to_bytes(r"\x{263a}"), r"\x{263a}");
        assert!(rx(r"\x{bc}[^>\x{be}]*\x{be}").is_match(b"\xbcscript\xbe", None));
        assert!(!rx(r"^\x{bc}$").is_match("\u{bc}".as_bytes(), None));
    }

    #[test]
    fn anchors_are_multiline() {
        assert!(rx("^b$").is_match(b"a\nb\nc", None));
    }

    #[test]
    fn case_insensitivity_and_classes_are_ascii() {
        assert!(rx("(?i)select").is_match(b"SeLeCt", None));
        assert!(!rx(r"^\w+$").is_match("é".as_bytes(), None));
        assert!(rx(r"\bor\b").is_match(b"1 or 1", None));
    }

    #[test]
    fn captures_fill_tx_0_to_9() {
        let mut caps = Vec::new();
        assert!(rx(r"(a)(b)?(c)").is_match(b"xac", Some(&mut caps)));
        assert_eq!(
            caps,
            vec![b"ac".to_vec(), b"a".to_vec(), Vec::new(), b"c".to_vec()]
        );
        let many = rx("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)");
        assert!(many.is_match(b"abcdefghijk", Some(&mut caps)));
        assert_eq!(caps.len(), 10);
    }

    #[test]
    fn empty_pattern_matches_everything() {
        assert!(rx("").is_match(b"anything", None));
    }

    #[test]
    fn whole_input_patterns_answer_as_the_regex_engine_does() {
        for p in WHOLE_INPUT {
            let fast = rx(p);
            assert!(fast.whole, "{p}");
            let mut slow = rx(p);
            slow.whole = false;
            for input in [
                &b""[..],
                b"x-api-key",
                b"two\nlines\n",
                b"\xff\x00bytes",
                b"\n",
            ] {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                assert_eq!(
                    fast.is_match(input, Some(&mut a)),
                    slow.is_match(input, Some(&mut b)),
                    "{p} on {input:?}"
                );
                assert_eq!(a, b, "{p} on {input:?}");
                assert_eq!(a, vec![input.to_vec()], "{p} on {input:?}");
            }
        }
        assert!(!rx("^.+$").whole);
        assert!(!rx("^a.*$").whole);
    }
}
