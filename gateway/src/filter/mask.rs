//! Pattern masking in text: card numbers (Luhn-checked, last four kept), e-mail addresses
//! (local part masked) and bearer tokens / bare JWTs. Masks keep the byte length, so a
//! response's Content-Length stays true; streaming keeps a bounded tail window so a value split
//! across chunks is still masked.

use regex::bytes::Regex;
use serde::Deserialize;

/// A pattern masked wherever it appears in a text body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// 13-19 digits (spaces or dashes between), Luhn-valid; all but the last four masked.
    CardNumber,
    /// `local@domain.tld`: the local part is masked.
    Email,
    /// `Bearer <token>` and bare JWTs (`eyJ...`): the token is masked.
    BearerToken,
}

// Every alternative has bounded repetition, so no match is longer than `MAX_MATCH`: a match
// starting more than `WINDOW` bytes before the end of what has arrived is final.
const CARD: &str = r"\b\d(?:[ \-]?\d){12,18}\b";
const EMAIL: &str =
    r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,8}\.[A-Za-z]{2,24}\b";
const BEARER: &str = r"(?i:\bbearer[ \t]{1,8})[A-Za-z0-9\-._~+/]{8,2048}={0,2}";
const JWT: &str = r"\beyJ[A-Za-z0-9_\-]{4,2048}\.eyJ[A-Za-z0-9_\-]{4,2048}\.[A-Za-z0-9_\-]{0,2048}";
/// Longer than the longest possible match (a JWT: 3 x 2048 + 8), plus look-ahead.
const WINDOW: usize = 6400;
/// Bytes already sent that stay in the buffer as look-behind for `\b`.
const CONTEXT: usize = 8;
/// New bytes gathered before a scan: each scan reads the window again, so tiny chunks would
/// otherwise cost a window's worth of scanning each.
const BATCH: usize = 4096;

/// The compiled patterns of one route.
#[derive(Debug)]
pub struct Masker {
    re: Regex,
    card: bool,
    email: bool,
    bearer: bool,
}

impl Masker {
    pub fn new(patterns: &[Pattern]) -> Result<Self, String> {
        let mut alts = Vec::new();
        let card = patterns.contains(&Pattern::CardNumber);
        let email = patterns.contains(&Pattern::Email);
        let bearer = patterns.contains(&Pattern::BearerToken);
        if card {
            alts.push(format!("(?P<card>{CARD})"));
        }
        if email {
            alts.push(format!("(?P<email>{EMAIL})"));
        }
        if bearer {
            alts.push(format!("(?P<bearer>{BEARER})|(?P<jwt>{JWT})"));
        }
        let re = Regex::new(&format!("(?-u){}", alts.join("|"))).map_err(|e| e.to_string())?;
        Ok(Self {
            re,
            card,
            email,
            bearer,
        })
    }

    pub fn is_empty(&self) -> bool {
        !(self.card || self.email || self.bearer)
    }

    /// Masks matches that start in `buf[from..limit]`; returns the end of the last one (or
    /// `from`). `buf[..from]` is look-behind only.
    fn mask_range(&self, buf: &mut [u8], from: usize, limit: usize) -> usize {
        let mut edits = Vec::new();
        let mut end = from;
        let mut at = from;
        while at < buf.len() {
            let Some(caps) = self.re.captures_at(buf, at) else {
                break;
            };
            let Some(whole) = caps.get(0) else {
                break;
            };
            if whole.start() >= limit {
                break;
            }
            if let Some(m) = caps.name("card") {
                if luhn(&buf[m.range()]) {
                    edits.push((m.start(), m.end(), Kind::Card));
                }
            } else if let Some(m) = caps.name("email") {
                edits.push((m.start(), m.end(), Kind::Email));
            } else if let Some(m) = caps.name("bearer") {
                edits.push((m.start(), m.end(), Kind::Bearer));
            } else if let Some(m) = caps.name("jwt") {
                edits.push((m.start(), m.end(), Kind::Jwt));
            }
            end = end.max(whole.end());
            at = if whole.end() > whole.start() {
                whole.end()
            } else {
                whole.end() + 1
            };
        }
        for (s, e, kind) in edits {
            apply(&mut buf[s..e], kind);
        }
        end
    }

    /// Masks a whole body at once.
    pub fn mask_all(&self, buf: &mut [u8]) {
        if !self.is_empty() {
            let len = buf.len();
            self.mask_range(buf, 0, len);
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Card,
    Email,
    Bearer,
    Jwt,
}

fn apply(m: &mut [u8], kind: Kind) {
    match kind {
        Kind::Card => {
            let digits = m.iter().filter(|b| b.is_ascii_digit()).count();
            let mut seen = 0;
            for b in m.iter_mut() {
                if b.is_ascii_digit() {
                    seen += 1;
                    if seen + 4 <= digits {
                        *b = b'*';
                    }
                }
            }
        }
        Kind::Email => {
            for b in m.iter_mut().take_while(|b| **b != b'@') {
                *b = b'*';
            }
        }
        Kind::Bearer => {
            // Keep the scheme word and the blanks after it.
            let skip = m
                .iter()
                .position(|b| *b == b' ' || *b == b'\t')
                .unwrap_or(0);
            let skip = skip
                + m[skip..]
                    .iter()
                    .take_while(|b| **b == b' ' || **b == b'\t')
                    .count();
            m[skip..].fill(b'*');
        }
        Kind::Jwt => m.fill(b'*'),
    }
}

/// The Luhn checksum (ISO/IEC 7812) over the digits of `s`.
pub fn luhn(s: &[u8]) -> bool {
    let digits: Vec<u32> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Masks a stream: holds back at most `WINDOW + BATCH` bytes (plus the chunk being judged) so a
/// value split across chunks is judged whole.
pub struct StreamMasker {
    masker: std::sync::Arc<Masker>,
    buf: Vec<u8>,
    /// `buf[..sent]` was already sent (look-behind only).
    sent: usize,
}

impl StreamMasker {
    pub fn new(masker: std::sync::Arc<Masker>) -> Self {
        Self {
            masker,
            buf: Vec::new(),
            sent: 0,
        }
    }

    /// Takes a chunk, returns what can be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(chunk);
        let safe = self.buf.len().saturating_sub(WINDOW);
        if safe < self.sent + BATCH {
            return Vec::new();
        }
        // Matches starting before `safe` are whole (no match is longer than the window).
        let end = self.masker.mask_range(&mut self.buf, self.sent, safe);
        let cut = safe.max(end);
        let out = self.buf[self.sent..cut].to_vec();
        let keep_from = cut.saturating_sub(CONTEXT);
        self.buf.drain(..keep_from);
        self.sent = cut - keep_from;
        out
    }

    /// The end of the stream: everything left, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let len = self.buf.len();
        self.masker.mask_range(&mut self.buf, self.sent, len);
        let out = self.buf[self.sent..].to_vec();
        self.buf.clear();
        self.sent = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Masker {
        Masker::new(&[Pattern::CardNumber, Pattern::Email, Pattern::BearerToken]).expect("re")
    }

    fn masked(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        all().mask_all(&mut b);
        String::from_utf8(b).expect("utf8")
    }

    #[test]
    fn luhn_checks() {
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(luhn(b"5500-0000-0000-0004"));
        assert!(!luhn(b"4111 1111 1111 1112"));
        assert!(!luhn(b"1234"));
    }

    #[test]
    fn patterns_are_masked_in_place() {
        assert_eq!(
            masked(r#"{"card":"4111 1111 1111 1111","id":"4111111111111112"}"#),
            r#"{"card":"**** **** **** 1111","id":"4111111111111112"}"#
        );
        assert_eq!(
            masked("mail alice.b@example.co.uk now"),
            "mail *******@example.co.uk now"
        );
        assert_eq!(
            masked("Authorization: Bearer abcDEF123456789.xyz"),
            format!(
                "Authorization: Bearer {}",
                "*".repeat("abcDEF123456789.xyz".len())
            )
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_nature";
        assert_eq!(masked(jwt), "*".repeat(jwt.len()));
        // Order numbers and long digit runs are not cards.
        assert_eq!(
            masked("order 12345678 ref 12345678901234567890123"),
            "order 12345678 ref 12345678901234567890123"
        );
    }

    #[test]
    fn values_split_across_chunks_are_masked() {
        let masker = std::sync::Arc::new(all());
        let text = format!(
            "{}card 4111 1111 1111 1111 and bob@example.com, token Bearer abcdefghijklmnop.{}",
            "x".repeat(7000),
            "y".repeat(9000)
        );
        let mut expected = text.clone().into_bytes();
        masker.mask_all(&mut expected);
        assert!(String::from_utf8_lossy(&expected).contains("**** **** **** 1111"));
        // Every chunk size, including ones that split every value.
        for size in [1, 2, 3, 7, 13, 64, 1000, 6401, 20000] {
            let mut sm = StreamMasker::new(std::sync::Arc::clone(&masker));
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                out.extend(sm.push(chunk));
                assert!(
                    sm.buf.len() <= WINDOW + BATCH + CONTEXT + size,
                    "window unbounded"
                );
            }
            out.extend(sm.finish());
            assert_eq!(out, expected, "chunk size {size}");
        }
    }
}
