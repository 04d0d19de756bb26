//! Literal factors: strings one of which every match of an operator contains (ASCII case
//! folded), looked up for all rules in one Aho-Corasick pass per value.
//!
//! The byte filter ([`super::required`]) skips rules whose punctuation a value lacks; rules made
//! of words (SQL keywords, shell commands, Java class names, file names) pass it on any text and
//! cost a regex or phrase-matcher call per value: ~2,600 calls for a 2 KB JSON order under CRS
//! PL1. Here each `@rx` is analysed once at load (its syntax tree from `regex-syntax`, the parser
//! the `regex` crate uses) into a set of literal factors, each `@pm` contributes its phrases,
//! the factors of every rule go into one automaton ([`LiteralIndex`]), and per request each
//! value is scanned once: a rule none of whose factors occur in it is skipped without a call.
//! Sound by construction: a factor set is only derived where the syntax guarantees that every
//! match contains one of its strings; the CRS property test in `required` checks it against
//! the regression payloads.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_syntax::hir::{
    Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind,
};

use super::required::ByteSet;

/// Lowercase strings; every match contains one of them, ASCII case-insensitively.
pub type Factors = Vec<Vec<u8>>;

/// Factors shorter than this occur in too much benign text to be worth a lookup.
const MIN_FACTOR: usize = 3;
/// Most strings kept when concatenating exact pieces (a cross product) ...
const MAX_CROSS: usize = 64;
/// ... and when uniting the factors of alternatives (CRS word lists run to hundreds).
const MAX_UNION: usize = 4096;
/// Longest prefix of a factor put in the index (a prefix of a required string is required
/// too): with CRS's phrase lists at full length the automaton took 29 MB, at this one 3 MB
/// (and filters nearly as well: 6.36M against 6.27M instructions per 2 KB request).
const MAX_INDEXED: usize = 6;
/// Largest class, after folding ASCII case, expanded into its bytes (`[cC]` is one; CRS's
/// `[\s\x0b]` is six).
const MAX_CLASS: usize = 6;

/// Bytes whose absence gives factors to patterns written to survive obfuscation, tried in
/// order (see [`for_regex`]): quotes, backslashes and `$` (shell quoting and variable
/// expansion between the letters of a command); then brackets, pipes, `&`, `;` and `<>` too
/// (SQL patterns opened by a quote or closed by `(`: 942190); then separators and whitespace
/// too (command lists whose short words must end in one: 932260, on one-word values such as
/// argument names, numbers, codes). [`super::required`] uses the same sets: a pattern that
/// cannot match at all without one of a set's bytes needs one (932250).
pub(super) const OBFUSCATION: [&[u8]; 3] = [
    b"\"'`\\$",
    b"\"'`\\$()[]{}<>|&;",
    b"\"'`\\$()[]{}<>|&;, \t\n\r\x0b\x0c",
];

/// For a compiled `@rx` pattern (the exact text given to the regex builder): factors, and the
/// bytes a value must lack for them to hold (none if they hold for every value).
///
/// Some patterns admit a match without any fixed string only through bytes that benign text
/// rarely holds (CRS's obfuscation-tolerant RCE patterns allow `"`, `'`, `\` or `$(...)` between
/// any two letters of a command): on a value holding none of those bytes, a match can only use
/// the rest of the pattern, whose factors then hold. A value holding one of them gets the
/// operator call as before.
pub fn for_regex(pattern: &str) -> Option<(Factors, ByteSet)> {
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    if let Some(f) = required(&hir).and_then(useful) {
        return Some((f, ByteSet::default()));
    }
    OBFUSCATION.iter().find_map(|bytes| {
        let unless = ByteSet::of(bytes);
        let within = without(&hir, &unless)?;
        Some((useful(required(&within)?)?, unless))
    })
}

/// Whether `h` can match some input holding none of the bytes `unless`: [`without`]'s answer
/// is `Some`, found without building it (the byte filter asks this of every pattern at load).
pub(super) fn can_match_without(h: &Hir, unless: &ByteSet) -> bool {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(l) => l.0.iter().all(|&b| !unless.contains(b)),
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .iter()
            .any(|r| (r.start()..=r.end()).any(|b| !unless.contains(b))),
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().any(|r| {
            (r.start()..=r.end()).any(|ch| u8::try_from(ch).map_or(true, |b| !unless.contains(b)))
        }),
        HirKind::Capture(c) => can_match_without(&c.sub, unless),
        HirKind::Repetition(r) => r.min == 0 || can_match_without(&r.sub, unless),
        HirKind::Concat(subs) => subs.iter().all(|s| can_match_without(s, unless)),
        HirKind::Alternation(subs) => subs.iter().any(|s| can_match_without(s, unless)),
    }
}

/// `h` for inputs holding none of the bytes `unless`: what a match can use of it (`None` if
/// nothing: no match is possible). Every match of `h` on such an input is a match of the result,
/// so the result's factors hold for those inputs.
fn without(h: &Hir, unless: &ByteSet) -> Option<Hir> {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(h.clone()),
        HirKind::Literal(l) => l.0.iter().all(|&b| !unless.contains(b)).then(|| h.clone()),
        HirKind::Class(Class::Bytes(c)) => {
            let mut c = c.clone();
            c.difference(&ClassBytes::new(
                unless.iter().map(|b| ClassBytesRange::new(b, b)),
            ));
            (!c.ranges().is_empty()).then(|| Hir::class(Class::Bytes(c)))
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut c = c.clone();
            c.difference(&ClassUnicode::new(unless.iter().map(|b| {
                let ch = char::from(b);
                ClassUnicodeRange::new(ch, ch)
            })));
            (!c.ranges().is_empty()).then(|| Hir::class(Class::Unicode(c)))
        }
        HirKind::Capture(c) => without(&c.sub, unless),
        HirKind::Repetition(r) => match without(&r.sub, unless) {
            Some(sub) => Some(Hir::repetition(regex_syntax::hir::Repetition {
                sub: Box::new(sub),
                ..r.clone()
            })),
            None if r.min == 0 => Some(Hir::empty()),
            None => None,
        },
        HirKind::Concat(subs) => {
            let subs: Option<Vec<Hir>> = subs.iter().map(|s| without(s, unless)).collect();
            Some(Hir::concat(subs?))
        }
        HirKind::Alternation(subs) => {
            let subs: Vec<Hir> = subs.iter().filter_map(|s| without(s, unless)).collect();
            (!subs.is_empty()).then(|| Hir::alternation(subs))
        }
    }
}

/// For `@pm` phrases: every match is one of them.
pub fn for_phrases<P: AsRef<[u8]>>(phrases: &[P]) -> Option<Factors> {
    useful(
        phrases
            .iter()
            .map(|p| p.as_ref().to_ascii_lowercase())
            .collect(),
    )
}

fn useful(mut f: Factors) -> Option<Factors> {
    f.sort_unstable();
    f.dedup();
    (!f.is_empty() && f.iter().all(|l| l.len() >= MIN_FACTOR)).then(|| minimal(f))
}

/// Without the factors that contain another one: wherever such a factor occurs the shorter one
/// does too, so it filters nothing more, and cut to its first bytes for the index it filters
/// less (CRS 943110's `^(?:json\.)?(?:...|cfid|...)$` gives `json.cfid` beside `cfid`; cut to
/// `json.c`, it let every JSON argument name starting with `c` through).
fn minimal(f: Factors) -> Factors {
    let all: std::collections::HashSet<&[u8]> = f.iter().map(Vec::as_slice).collect();
    f.iter()
        .filter(|a| !(MIN_FACTOR..a.len()).any(|n| a.windows(n).any(|w| all.contains(w))))
        .cloned()
        .collect()
}

/// Every string `h` can match, when that set is small (lowercased; look-arounds match "").
fn exact(h: &Hir) -> Option<Factors> {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![Vec::new()]),
        HirKind::Literal(l) => Some(vec![l.0.to_ascii_lowercase()]),
        HirKind::Class(c) => class_bytes(c).map(|bs| bs.into_iter().map(|b| vec![b]).collect()),
        HirKind::Capture(c) => exact(&c.sub),
        // `x{n}`, and `x?`, `x{1,3}`: each count's strings.
        HirKind::Repetition(r) if r.max.is_some_and(|max| max <= 4) => {
            let one = exact(&r.sub)?;
            let mut out = vec![Vec::new()];
            for _ in 0..r.min {
                out = cross(&out, &one)?;
            }
            let mut all = out.clone();
            for _ in r.min..r.max.unwrap_or(r.min) {
                out = cross(&out, &one)?;
                all.extend(out.iter().cloned());
                if all.len() > MAX_CROSS {
                    return None;
                }
            }
            Some(all)
        }
        HirKind::Concat(subs) => {
            let mut out = vec![Vec::new()];
            for s in subs {
                out = cross(&out, &exact(s)?)?;
            }
            Some(out)
        }
        HirKind::Alternation(subs) => union(subs, exact, MAX_CROSS),
        HirKind::Repetition(_) => None,
    }
}

/// The bytes of a small class, ASCII case folded.
fn class_bytes(c: &Class) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut add = |lo: u32, hi: u32| -> Option<()> {
        if hi > 0xff || hi - lo >= 2 * MAX_CLASS as u32 {
            return None;
        }
        for b in lo..=hi {
            let b = u8::try_from(b).ok()?.to_ascii_lowercase();
            if !out.contains(&b) {
                out.push(b);
            }
        }
        Some(())
    };
    match c {
        Class::Bytes(b) => {
            for r in b.ranges() {
                add(u32::from(r.start()), u32::from(r.end()))?;
            }
        }
        // Only ASCII ranges are single bytes.
        Class::Unicode(u) => {
            for r in u.ranges() {
                if u32::from(r.end()) > 0x7f {
                    return None;
                }
                add(u32::from(r.start()), u32::from(r.end()))?;
            }
        }
    }
    (out.len() <= MAX_CLASS).then_some(out)
}

/// What `each` gives for every alternative, together; `None` if one gives nothing or the
/// union grows past `limit` strings.
fn union(subs: &[Hir], each: fn(&Hir) -> Option<Factors>, limit: usize) -> Option<Factors> {
    let mut out = Vec::new();
    for s in subs {
        out.extend(each(s)?);
        if out.len() > limit {
            return None;
        }
    }
    Some(out)
}

fn cross(a: &Factors, b: &Factors) -> Option<Factors> {
    cross_within(a, b, MAX_CROSS)
}

/// Strings one of which every match of `h` contains, if the syntax guarantees some.
fn required(h: &Hir) -> Option<Factors> {
    match h.kind() {
        HirKind::Literal(l) => Some(vec![l.0.to_ascii_lowercase()]),
        HirKind::Capture(c) => required(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => required(&r.sub),
        HirKind::Alternation(subs) => union(subs, required, MAX_UNION),
        HirKind::Concat(subs) => {
            // Candidates: each run of adjacent exact pieces (their cross product is a substring
            // of every match), and what each other piece requires. The best one is kept.
            let mut best: Option<Factors> = None;
            let mut consider = |f: Factors| {
                if best.as_ref().is_none_or(|b| score(&f) > score(b)) {
                    best = Some(f);
                }
            };
            let mut run: Factors = vec![Vec::new()];
            for s in subs {
                match exact(s) {
                    Some(e) => match cross(&run, &e) {
                        Some(longer) => run = longer,
                        None => {
                            consider(std::mem::replace(&mut run, e));
                        }
                    },
                    None => {
                        // The run continued by how every match of `s` starts: what words
                        // assembled into a prefix tree (`r(?:e(?:adelf|alpath)|uby...)`) give.
                        if let Some(f) = cross_within(&run, &prefixes(s), MAX_UNION) {
                            consider(f);
                        }
                        consider(std::mem::replace(&mut run, vec![Vec::new()]));
                        if let Some(f) = required(s) {
                            consider(f);
                        }
                    }
                }
            }
            consider(run);
            best
        }
        _ => exact(h),
    }
}

/// Strings one of which every match of `h` starts with (at worst only "").
fn prefixes(h: &Hir) -> Factors {
    match h.kind() {
        HirKind::Capture(c) => prefixes(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => prefixes(&r.sub),
        HirKind::Alternation(subs) => {
            let mut out = Vec::new();
            for s in subs {
                out.extend(prefixes(s));
                if out.len() > MAX_UNION {
                    return vec![Vec::new()];
                }
            }
            out
        }
        HirKind::Concat(subs) => {
            let mut out = vec![Vec::new()];
            for s in subs {
                let (next, whole) = match exact(s) {
                    Some(e) => (e, true),
                    None => (prefixes(s), false),
                };
                match cross_within(&out, &next, MAX_UNION) {
                    Some(longer) if whole => out = longer,
                    Some(longer) => return longer,
                    None => return out,
                }
            }
            out
        }
        _ => exact(h).unwrap_or_else(|| vec![Vec::new()]),
    }
}

/// [`cross`] with its own bound.
fn cross_within(a: &Factors, b: &Factors, limit: usize) -> Option<Factors> {
    if a.len() * b.len() > limit {
        return None;
    }
    Some(
        a.iter()
            .flat_map(|x| b.iter().map(move |y| [x.as_slice(), y].concat()))
            .collect(),
    )
}

/// Longer shortest strings filter better; then fewer strings.
fn score(f: &Factors) -> (usize, std::cmp::Reverse<usize>) {
    let shortest = f.iter().map(Vec::len).min().unwrap_or(0);
    (shortest.min(8), std::cmp::Reverse(f.len()))
}

/// The factors of every filtered operator in one automaton.
pub struct LiteralIndex {
    ac: AhoCorasick,
    /// Per pattern: the filters (operators) it belongs to.
    owners: Vec<Vec<u32>>,
    words: usize,
}

impl LiteralIndex {
    /// Filter `i` is `filters[i]`; `None` when there is nothing to index.
    pub fn new(filters: &[&Factors]) -> Option<Self> {
        let mut ids: std::collections::HashMap<&[u8], u32> = std::collections::HashMap::new();
        let mut patterns: Vec<&[u8]> = Vec::new();
        let mut owners: Vec<Vec<u32>> = Vec::new();
        for (f, factors) in filters.iter().enumerate() {
            for lit in factors.iter() {
                let lit = &lit[..lit.len().min(MAX_INDEXED)];
                let p = *ids.entry(lit).or_insert_with(|| {
                    patterns.push(lit);
                    owners.push(Vec::new());
                    (patterns.len() - 1) as u32
                });
                owners[p as usize].push(f as u32);
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .ok()?;
        Some(Self {
            ac,
            owners,
            words: filters.len().div_ceil(64),
        })
    }

    /// Words of a value's bit set (one bit per filter).
    pub fn words(&self) -> usize {
        self.words
    }

    /// Sets in `bits` the filters one of whose factors occurs in `value`.
    pub fn scan(&self, value: &[u8], bits: &mut [u64]) {
        for m in self.ac.find_overlapping_iter(value) {
            for &f in &self.owners[m.pattern().as_usize()] {
                if let Some(w) = bits.get_mut(f as usize / 64) {
                    *w |= 1 << (f % 64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(p: &str) -> Option<Vec<String>> {
        for_regex(&format!("(?sm-u){p}")).map(|(v, _)| {
            v.into_iter()
                .map(|s| String::from_utf8_lossy(&s).into_owned())
                .collect()
        })
    }

    #[test]
    fn words_inside_patterns_are_factors() {
        // `case` and the whitespace after it (6 strings) beat `when`.
        let case = f(r"(?i)[\s\x0b\(\)]case[\s\x0b]+when").expect("factors");
        assert!(
            case.len() == 6 && case.iter().all(|c| c.starts_with("case")),
            "{case:?}"
        );
        assert_eq!(f(r"(?i)\bunion\b"), Some(vec!["union".into()]));
        assert_eq!(
            f(r"(?:select|insert)\W"),
            Some(vec!["insert".into(), "select".into()])
        );
        // Optional and bounded pieces give each count's strings.
        assert_eq!(
            f(r"c(?:f(?:s?id|token)|i_session)"),
            Some(vec![
                "cfid".into(),
                "cfsid".into(),
                "cftoken".into(),
                "ci_session".into()
            ])
        );
        assert_eq!(
            f(r"ab-{1,2}cd"),
            Some(vec!["ab--cd".into(), "ab-cd".into()])
        );
        // CRS's `[\s\x0b]` multiplies out too (CRS 942230's `if[\s\x0b]?\(`).
        let f_if = f(r"if[\s\x0b]?\(").expect("factors");
        assert_eq!(f_if.len(), 7);
        assert!(f_if.contains(&"if(".to_string()) && f_if.contains(&"if (".to_string()));
        // Small classes multiply out; `\d` does not.
        assert_eq!(f(r"ab[cd]e"), Some(vec!["abce".into(), "abde".into()]));
        // A factor holding another adds nothing: an optional prefix leaves the shorter one.
        assert_eq!(
            f(r"^(?:json\.)?(?:cfid|cftoken|session_id)$"),
            Some(vec!["cfid".into(), "cftoken".into(), "session_id".into()])
        );
    }

    #[test]
    fn words_assembled_into_a_prefix_tree_are_factors() {
        assert_eq!(
            f(r"(?i)r(?:e(?:adelf|alpath)|uby[^\s]{1,10})"),
            Some(vec!["readelf".into(), "realpath".into(), "ruby".into()])
        );
    }

    #[test]
    fn obfuscation_tolerant_words_are_factors_of_values_without_the_obfuscation() {
        // Quotes or backslashes may sit between the letters: `c'a\t` matches, so `cat` is a
        // factor only of values holding none of them.
        let (factors, unless) =
            for_regex(r#"(?sm-u)(?i)c["'\x5c]*a["'\x5c]*t[\s,]"#).expect("factors");
        assert_eq!(factors, vec![b"cat".to_vec()]);
        assert!(unless.contains(b'"') && unless.contains(b'\'') && unless.contains(b'\\'));
        assert!(!unless.contains(b' ') && !unless.contains(b'c'));
        // Where the plain pattern has factors they hold for every value.
        let (_, unless) = for_regex(r"(?sm-u)(?i)\bunion\b").expect("factors");
        assert_eq!(unless, ByteSet::default());
    }

    #[test]
    fn the_cheap_check_agrees_with_the_rewrite() {
        let patterns = [
            r#"(?i)c["'\x5c]*a["'\x5c]*t[\s,]"#,
            r#"(?:ls|cat)["']?[\s,&|].*"#,
            r"(?i)(?:^|;)\s*(?:id|whoami)\b",
            r"[<>]+x?",
            r"(?:\$\(|`)",
            r"a{2,}|b*",
            r"^$",
        ];
        for p in patterns {
            let hir = regex_syntax::ParserBuilder::new()
                .utf8(false)
                .build()
                .parse(&format!("(?sm-u){p}"))
                .expect("parses");
            for set in OBFUSCATION {
                let set = ByteSet::of(set);
                assert_eq!(
                    can_match_without(&hir, &set),
                    without(&hir, &set).is_some(),
                    "{p}"
                );
            }
        }
    }

    #[test]
    fn no_factors_where_a_match_needs_none() {
        assert_eq!(f(r"a?b?c?"), None);
        assert_eq!(f(r"(?:foo|\d+)"), None);
        assert_eq!(f(r"[a-z]+"), None);
        // Too short to filter anything.
        assert_eq!(f(r"(?:ab|cd)"), None);
    }

    #[test]
    fn the_index_reports_each_filter_whose_factor_occurs() {
        let a: Factors = vec![b"union".to_vec(), b"select".to_vec()];
        let b: Factors = vec![b"passwd".to_vec()];
        let idx = LiteralIndex::new(&[&a, &b]).expect("index");
        let mut bits = vec![0u64; idx.words()];
        idx.scan(b"1 UNION ALL", &mut bits);
        assert_eq!(bits[0], 0b01);
        let mut bits = vec![0u64; idx.words()];
        idx.scan(b"/etc/passwd union", &mut bits);
        assert_eq!(bits[0], 0b11);
        let mut bits = vec![0u64; idx.words()];
        idx.scan(b"an order of widgets", &mut bits);
        assert_eq!(bits[0], 0);
    }
}
