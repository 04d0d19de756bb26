//! Bearer tokens for the TCP admin listener: loaded once at start from files or environment
//! variables, compared in constant time.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::AdminError;
use crate::config::AdminToken;

/// The tokens of the TCP listener, kept as SHA-256 digests: comparing digests makes the time
/// independent of the tokens' lengths as well as their contents.
#[derive(Default)]
pub struct Tokens {
    digests: Vec<(String, [u8; 32])>,
}

impl Tokens {
    /// Reads every token; a missing or empty one stops the start (a typo must not open the
    /// listener with fewer credentials than the operator meant).
    pub fn load(tokens: &[AdminToken]) -> Result<Self, AdminError> {
        let mut digests = Vec::new();
        for t in tokens {
            let err = |reason: String| AdminError::Token {
                id: t.id.clone(),
                reason,
            };
            let secret = match (&t.file, &t.env) {
                (Some(file), _) => std::fs::read_to_string(file)
                    .map_err(|e| err(format!("reading {}: {e}", file.display())))?,
                (None, Some(var)) => std::env::var(var)
                    .map_err(|_| err(format!("environment variable {var} is not set")))?,
                (None, None) => return Err(err("no `file` or `env`".into())),
            };
            let secret = secret.trim();
            if secret.len() < 16 {
                return Err(err("the token must be at least 16 characters".into()));
            }
            digests.push((t.id.clone(), digest(secret)));
        }
        Ok(Self { digests })
    }

    /// Tokens from memory (tests, embedding).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            digests: pairs
                .into_iter()
                .map(|(id, secret)| (id.to_owned(), digest(secret)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The id of the token `presented` matches. Every token is compared, match or not.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let d = digest(presented);
        let mut found = None;
        for (id, want) in &self.digests {
            if bool::from(want.ct_eq(&d)) {
                found = Some(id.as_str());
            }
        }
        found
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches_and_names_its_id() {
        let t = Tokens::from_pairs([
            ("ops", "s3cret-token-abcdef"),
            ("prom", "other-token-123456"),
        ]);
        assert_eq!(t.verify("s3cret-token-abcdef"), Some("ops"));
        assert_eq!(t.verify("other-token-123456"), Some("prom"));
        assert_eq!(t.verify("s3cret-token-abcde"), None);
        assert_eq!(t.verify(""), None);
    }
}
