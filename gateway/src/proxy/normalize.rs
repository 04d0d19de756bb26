//! The one path normalisation: done once per request, and what routing and every later stage
//! (auth, WAF, rate limits) see. It closes the usual prefix-bypass tricks: encoded dots and
//! duplicate slashes are resolved; encoded slashes, backslashes, NUL, path parameters and broken
//! percent-encoding are refused (400) because upstreams disagree on what they mean.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EncodedSlash,
    Backslash,
    Nul,
    BadPercentEncoding,
    PathParameters,
}

impl PathError {
    /// Stable reason code for the problem response.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAbsolute => "path_not_absolute",
            Self::EncodedSlash => "path_encoded_slash",
            Self::Backslash => "path_backslash",
            Self::Nul => "path_nul",
            Self::BadPercentEncoding => "path_bad_percent_encoding",
            Self::PathParameters => "path_parameters",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Self::NotAbsolute => "the request path must start with /",
            Self::EncodedSlash => "encoded slashes (%2F) are not accepted in paths",
            Self::Backslash => "backslashes are not accepted in paths",
            Self::Nul => "NUL bytes are not accepted in paths",
            Self::BadPercentEncoding => "the path has an invalid percent-encoding",
            Self::PathParameters => "path parameters (;) are not accepted",
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises the path part of a request target (no query).
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: most paths need nothing (no escapes, no empty or dot segments).
    let clean = !bytes.iter().any(|b| matches!(b, b'%' | b'\\' | b';' | 0))
        && !raw.contains("//")
        && !raw.contains("/.");
    if clean {
        return Ok(Cow::Borrowed(raw));
    }
    // 1. Percent-decoding of unreserved characters only; everything else stays encoded (with
    //    upper-case hex) so the upstream sees the same bytes we judged.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let v = h << 4 | l;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    b';' => return Err(PathError::PathParameters),
                    v if unreserved(v) => decoded.push(v as char),
                    v => {
                        decoded.push('%');
                        decoded.push(
                            char::from_digit(u32::from(v >> 4), 16)
                                .map_or('0', |c| c.to_ascii_uppercase()),
                        );
                        decoded.push(
                            char::from_digit(u32::from(v & 0xf), 16)
                                .map_or('0', |c| c.to_ascii_uppercase()),
                        );
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b';' => return Err(PathError::PathParameters),
            _ => {
                // Multi-byte UTF-8 passes through untouched (hyper already rejected raw bytes
                // that are not valid in a request target).
                let ch_len = utf8_len(bytes[i]);
                decoded.push_str(raw.get(i..i + ch_len).unwrap_or(""));
                i += ch_len;
            }
        }
    }
    // 2. Segments: drop empty ones (duplicate slashes) and `.`, resolve `..` (never above /).
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::{PathError::*, normalize};

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, Result<&str, super::PathError>)] = &[
            ("/", Ok("/")),
            ("/admin", Ok("/admin")),
            ("//admin", Ok("/admin")),
            ("/a//b///c", Ok("/a/b/c")),
            ("/a/../admin", Ok("/admin")),
            ("/a/./b/", Ok("/a/b/")),
            ("/../../admin", Ok("/admin")),
            ("/%2e%2e/admin", Ok("/admin")),
            ("/x/%2E%2e/admin", Ok("/admin")),
            ("/a/b/..", Ok("/a/")),
            ("/%61dmin", Ok("/admin")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/a%20b", Ok("/a%20b")),
            ("/admin%2fsecret", Err(EncodedSlash)),
            ("/admin%2Fsecret", Err(EncodedSlash)),
            ("/admin\\secret", Err(Backslash)),
            ("/admin%5csecret", Err(Backslash)),
            ("/admin%00", Err(Nul)),
            ("/admin;jsessionid=1", Err(PathParameters)),
            ("/admin%3bx", Err(PathParameters)),
            ("/admin%zz", Err(BadPercentEncoding)),
            ("/admin%4", Err(BadPercentEncoding)),
            ("admin", Err(NotAbsolute)),
            ("*", Err(NotAbsolute)),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref().map_err(|e| *e), *want, "{raw}");
        }
    }
}
