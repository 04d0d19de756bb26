//! String and number comparisons: `@streq`, `@contains`, `@containsWord`, `@beginsWith`,
//! `@endsWith`, `@within`, `@eq`/`@ge`/`@gt`/`@le`/`@lt`. All case-sensitive, like ModSecurity.

#[derive(Debug, Clone, Copy)]
pub(super) enum StrOp {
    Eq,
    Contains,
    ContainsWord,
    BeginsWith,
    EndsWith,
    /// The parameter contains the input (`@within GET POST`).
    Within,
}

#[derive(Debug)]
pub(super) enum StrArg {
    Static(Vec<u8>),
    /// Expanded per call.
    Macro,
}

impl StrOp {
    pub(super) fn matches(self, input: &[u8], param: &[u8]) -> bool {
        match self {
            Self::Eq => input == param,
            Self::Contains => memchr::memmem::find(input, param).is_some(),
            Self::ContainsWord => contains_word(input, param),
            Self::BeginsWith => input.starts_with(param),
            Self::EndsWith => input.ends_with(param),
            // ModSecurity: an empty value is within anything.
            Self::Within => memchr::memmem::find(param, input).is_some(),
        }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `param` occurs in `input` with a non-word character (or the edge) on both sides.
fn contains_word(input: &[u8], param: &[u8]) -> bool {
    if param.is_empty() {
        return true;
    }
    memchr::memmem::find_iter(input, param).any(|pos| {
        let end = pos + param.len();
        (pos == 0 || !is_word(input[pos - 1])) && (end == input.len() || !is_word(input[end]))
    })
}

#[derive(Debug, Clone, Copy)]
pub(super) enum NumOp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Debug)]
pub(super) enum NumArg {
    Static(i64),
    Macro,
}

impl NumOp {
    pub(super) fn matches(self, input: i64, param: i64) -> bool {
        match self {
            Self::Eq => input == param,
            Self::Ge => input >= param,
            Self::Gt => input > param,
            Self::Le => input <= param,
            Self::Lt => input < param,
        }
    }
}

/// ModSecurity's `std::stoi` with its `catch (...) { 0 }`: leading whitespace, an optional sign,
/// the leading digits ("12abc" is 12); no digits or an `int` overflow is 0. (Coraza's `Atoi`
/// makes "12abc" 0; CRS only compares counters and lengths, where both agree.)
pub(super) fn c_atoi(s: &[u8]) -> i64 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut v: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v * 10 + i64::from(s[i] - b'0');
        if v > i64::from(i32::MAX) + 1 {
            return 0;
        }
        i += 1;
    }
    if i == start {
        return 0;
    }
    let v = if neg { -v } else { v };
    if v > i64::from(i32::MAX) || v < i64::from(i32::MIN) {
        0
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_follows_stoi() {
        assert_eq!(c_atoi(b"42"), 42);
        assert_eq!(c_atoi(b"  -7"), -7);
        assert_eq!(c_atoi(b"+3x"), 3);
        assert_eq!(c_atoi(b"12abc"), 12);
        assert_eq!(c_atoi(b"abc"), 0);
        assert_eq!(c_atoi(b""), 0);
        assert_eq!(c_atoi(b"99999999999"), 0);
        assert_eq!(c_atoi(b"-2147483648"), i64::from(i32::MIN));
    }

    #[test]
    fn string_ops() {
        assert!(StrOp::Eq.matches(b"POST", b"POST"));
        assert!(!StrOp::Eq.matches(b"post", b"POST"));
        assert!(StrOp::Contains.matches(b"a<!--b", b"<!--"));
        assert!(StrOp::Contains.matches(b"x", b""));
        assert!(StrOp::ContainsWord.matches(b"select * from", b"select"));
        assert!(StrOp::ContainsWord.matches(b"1;select", b"select"));
        assert!(!StrOp::ContainsWord.matches(b"selected", b"select"));
        assert!(StrOp::ContainsWord.matches(b"selected select", b"select"));
        assert!(!StrOp::ContainsWord.matches(b"_select", b"select"));
        assert!(StrOp::BeginsWith.matches(b"GET /", b"GET"));
        assert!(StrOp::EndsWith.matches(b"file.pdf", b".pdf"));
        assert!(StrOp::Within.matches(b"GET", b"GET HEAD POST"));
        assert!(!StrOp::Within.matches(b"PUT", b"GET HEAD POST"));
        assert!(StrOp::Within.matches(b"", b"GET"));
    }
}
