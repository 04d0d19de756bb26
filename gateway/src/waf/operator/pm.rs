//! `@pm` and `@pmFromFile`: one case-insensitive (ASCII, like ModSecurity's acmp) Aho-Corasick
//! automaton per rule, built when the rules load.

use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::{
    literals::{self, Factors},
    required::Required,
};

#[derive(Debug)]
pub(super) struct Pm {
    ac: Option<AhoCorasick>,
    required: Required,
    /// The phrases, lowercased, for the shared literal index ([`super::literals`]).
    factors: Option<Factors>,
}

impl Pm {
    /// `@pm` phrases: separated by whitespace; `|41 42|` spells bytes in hex (Snort-style content,
    /// as ModSecurity's parser accepts).
    pub(super) fn from_phrases(arg: &str) -> Result<Self, String> {
        let content = decode_hex_content(arg)?;
        let phrases: Vec<&[u8]> = content
            .split(|b| b.is_ascii_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        build(&phrases)
    }

    /// `@pmFromFile a.data b.data`: one phrase per line; blank lines and `#` comments skipped;
    /// relative names resolve against the rule file's directory.
    pub(super) fn from_files(arg: &str, rule_dir: &Path) -> Result<Self, (PathBuf, String)> {
        let mut phrases: Vec<Vec<u8>> = Vec::new();
        for name in arg.split_whitespace() {
            let path = if Path::new(name).is_absolute() {
                PathBuf::from(name)
            } else {
                rule_dir.join(name)
            };
            let data = std::fs::read(&path).map_err(|e| (path.clone(), e.to_string()))?;
            for line in data.split(|&b| b == b'\n') {
                let line = line.trim_ascii();
                if line.is_empty() || line[0] == b'#' {
                    continue;
                }
                phrases.push(line.to_vec());
            }
        }
        if phrases.is_empty() {
            return Err((rule_dir.join(arg), "no phrases in the file(s)".to_string()));
        }
        build(&phrases).map_err(|e| (rule_dir.join(arg), e))
    }

    /// Macro argument: built per evaluation.
    pub(super) fn dynamic() -> Self {
        Self {
            ac: None,
            required: Required::default(),
            factors: None,
        }
    }

    /// Bytes every match needs (see [`Required`]).
    pub(super) fn required(&self) -> &Required {
        &self.required
    }

    pub(super) fn factors(&self) -> Option<&Factors> {
        self.factors.as_ref()
    }

    pub(super) fn is_match(&self, input: &[u8], captures: Option<&mut Vec<Vec<u8>>>) -> bool {
        let Some(ac) = &self.ac else { return false };
        match captures {
            None => ac.is_match(input),
            Some(out) => match ac.find(input) {
                Some(m) => {
                    out.clear();
                    out.push(input[m.start()..m.end()].to_vec());
                    true
                }
                None => false,
            },
        }
    }
}

fn build<P: AsRef<[u8]>>(phrases: &[P]) -> Result<Pm, String> {
    if phrases.is_empty() {
        return Err("no phrases".to_string());
    }
    let ac = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(phrases)
        .map_err(|e| e.to_string())?;
    Ok(Pm {
        ac: Some(ac),
        required: Required::for_phrases(phrases),
        factors: literals::for_phrases(phrases),
    })
}

/// Replaces `|HH HH|` sections by their bytes.
fn decode_hex_content(arg: &str) -> Result<Vec<u8>, String> {
    let bytes = arg.as_bytes();
    if !bytes.contains(&b'|') {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut parts = bytes.split(|&b| b == b'|');
    let mut in_hex = false;
    for part in parts.by_ref() {
        if in_hex {
            let digits: Vec<u8> = part
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
                return Err(format!(
                    "bad hex content |{}|",
                    String::from_utf8_lossy(part)
                ));
            }
            for pair in digits.chunks_exact(2) {
                let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
                out.push(u8::from_str_radix(s, 16).map_err(|e| e.to_string())?);
            }
        } else {
            out.extend_from_slice(part);
        }
        in_hex = !in_hex;
    }
    if !in_hex {
        return Err("unterminated |hex| content".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_match_case_insensitively() {
        let pm = Pm::from_phrases("document.cookie <!-- ( )").expect("builds");
        assert!(pm.is_match(b"x=Document.Cookie", None));
        assert!(pm.is_match(b"a(b", None));
        assert!(!pm.is_match(b"documentcookie", None));
        let mut caps = Vec::new();
        assert!(pm.is_match(b"foo DOCUMENT.COOKIE bar", Some(&mut caps)));
        assert_eq!(caps, vec![b"DOCUMENT.COOKIE".to_vec()]);
    }

    #[test]
    fn hex_content() {
        let pm = Pm::from_phrases("|41 42|c").expect("builds");
        assert!(pm.is_match(b"xxabc", None));
        assert!(Pm::from_phrases("|4").is_err());
    }

    #[test]
    fn from_file_skips_comments_and_resolves_relative_names() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crs/rules");
        let pm = Pm::from_files("lfi-os-files.data", &dir).expect("CRS data file loads");
        assert!(pm.is_match(b"../../etc/passwd", None));
        assert!(!pm.is_match(b"hello world", None));
        assert!(Pm::from_files("missing.data", &dir).is_err());
    }
}
