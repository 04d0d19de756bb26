//! `@validateByteRange`, `@validateUrlEncoding` (and `@validateUtf8Encoding`, inline in mod.rs):
//! each *matches* when the value is invalid.

use super::ByteSet;

/// `@validateByteRange 9,10,13,32-126`, kept as the bytes outside the ranges.
#[derive(Debug)]
pub(super) struct ByteRange {
    /// The bytes not allowed: a value holding none of them is valid.
    outside: ByteSet,
}

impl ByteRange {
    pub(super) fn parse(arg: &str) -> Result<Self, String> {
        let mut allowed = ByteSet::default();
        let mut any = false;
        for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let num = |s: &str| {
                s.trim()
                    .parse::<u8>()
                    .map_err(|_| format!("{s:?} is not a byte value (0-255)"))
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let v = num(part)?;
                    (v, v)
                }
            };
            if lo > hi {
                return Err(format!("range {part:?} is reversed"));
            }
            for b in lo..=hi {
                allowed.insert(b);
            }
            any = true;
        }
        if !any {
            return Err("no ranges".to_string());
        }
        Ok(Self {
            outside: ByteSet::where_(|b| !allowed.contains(b)),
        })
    }

    /// The bytes outside the range: the operator matches exactly the values holding one.
    pub(super) fn outside(&self) -> &ByteSet {
        &self.outside
    }

    pub(super) fn has_byte_outside(&self, input: &[u8]) -> bool {
        input.iter().any(|&b| self.outside.contains(b))
    }
}

/// A `%` not followed by two hex digits.
pub(super) fn invalid_url_encoding(input: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'%', &input[i..]) {
        let p = i + off;
        if p + 2 >= input.len()
            || !input[p + 1].is_ascii_hexdigit()
            || !input[p + 2].is_ascii_hexdigit()
        {
            return true;
        }
        i = p + 3;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        let r = ByteRange::parse("9,10,13,32-126").expect("parses");
        assert!(!r.has_byte_outside(b"hello world\r\n"));
        assert!(r.has_byte_outside(b"a\x00b"));
        assert!(r.has_byte_outside(b"\x7f"));
        assert!(!r.has_byte_outside(b""));
        for v in [&b"hello world\r\n"[..], b"a\x00b", b"\x7f", b""] {
            assert_eq!(
                r.outside().intersects(&ByteSet::of(v)),
                r.has_byte_outside(v)
            );
        }
        let all = ByteRange::parse("1-255").expect("parses");
        assert!(all.has_byte_outside(b"\x00"));
        assert!(ByteRange::parse("1-300").is_err());
        assert!(ByteRange::parse("").is_err());
    }

    #[test]
    fn url_encoding() {
        assert!(!invalid_url_encoding(b"a%20b%2F"));
        assert!(invalid_url_encoding(b"a%2"));
        assert!(invalid_url_encoding(b"a%zz"));
        assert!(invalid_url_encoding(b"%"));
        assert!(!invalid_url_encoding(b"plain"));
    }
}
