//! The `listeners[].tls` section of the YAML file, and the checks serde cannot express.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Deserializer, de};

/// How a listener terminates TLS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate/key pairs; the handshake picks one by SNI (exact name, then wildcard) from the
    /// certificates' SAN DNS names. The first pair is the default for clients that send no SNI
    /// or a name no certificate covers. At least one.
    pub certificates: Vec<CertificatePair>,
    /// Whether clients present certificates: `none`, `optional` (verified when presented) or
    /// `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// PEM bundle of the CAs that issue client certificates; required unless `client_auth` is
    /// `none`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Oldest protocol version accepted: `"1.2"` (default) or `"1.3"`. Older versions are never
    /// offered.
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// One certificate chain and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM file: the leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file holding the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Client certificate policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate is requested.
    #[default]
    None,
    /// A certificate is requested; clients without one are accepted, clients with one that does
    /// not chain to `client_ca` are refused.
    Optional,
    /// Clients without a certificate chaining to `client_ca` are refused.
    Required,
}

/// The oldest TLS version a listener accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsSettings {
    /// Checks what the types cannot: at least one certificate, files that exist, a CA bundle when
    /// client certificates are requested. The error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.certificates.is_empty() {
            return Err("tls.certificates: at least one certificate/key pair is required".into());
        }
        for (i, pair) in self.certificates.iter().enumerate() {
            must_be_file(&format!("tls.certificates[{i}].cert"), &pair.cert)?;
            must_be_file(&format!("tls.certificates[{i}].key"), &pair.key)?;
        }
        match (self.client_auth, &self.client_ca) {
            (ClientAuth::None, Some(ca)) => Err(format!(
                // Setting a CA and forgetting `client_auth` would look like mTLS while
                // accepting everyone; say so rather than ignore the CA.
                "tls.client_ca: `{}` is set but client_auth is `none`; set client_auth to \
                 `optional` or `required`, or remove client_ca",
                ca.display()
            )),
            (ClientAuth::Optional | ClientAuth::Required, None) => Err(format!(
                "tls.client_ca: required when client_auth is `{}`",
                self.client_auth.as_str()
            )),
            (ClientAuth::Optional | ClientAuth::Required, Some(ca)) => {
                must_be_file("tls.client_ca", ca)
            }
            (ClientAuth::None, None) => Ok(()),
        }
    }
}

impl ClientAuth {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

fn must_be_file(field: &str, path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{field}: `{}` is not a file", path.display())),
        Err(e) => Err(format!("{field}: `{}`: {e}", path.display())),
    }
}

// Hand-written because YAML reads an unquoted `min_version: 1.2` as a float; both that and the
// quoted string should work.
impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Version;

        impl de::Visitor<'_> for Version {
            type Value = TlsVersion;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""1.2" or "1.3""#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TlsVersion, E> {
                match v {
                    "1.2" => Ok(TlsVersion::Tls12),
                    "1.3" => Ok(TlsVersion::Tls13),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TlsVersion, E> {
                #[expect(clippy::float_cmp, reason = "both sides are the same parsed literal")]
                let version = if v == 1.2 {
                    TlsVersion::Tls12
                } else if v == 1.3 {
                    TlsVersion::Tls13
                } else {
                    return Err(E::invalid_value(de::Unexpected::Float(v), &self));
                };
                Ok(version)
            }
        }

        d.deserialize_any(Version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TlsSettings, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn defaults() {
        let s = parse("certificates: [{ cert: a.pem, key: a.key }]").expect("valid");
        assert_eq!(s.client_auth, ClientAuth::None);
        assert_eq!(s.min_version, TlsVersion::Tls12);
        assert_eq!(s.client_ca, None);
    }

    #[test]
    fn min_version_quoted_or_not() {
        for (text, want) in [
            ("\"1.3\"", TlsVersion::Tls13),
            ("1.3", TlsVersion::Tls13),
            ("'1.2'", TlsVersion::Tls12),
            ("1.2", TlsVersion::Tls12),
        ] {
            let s = parse(&format!(
                "certificates: [{{ cert: a, key: b }}]\nmin_version: {text}"
            ))
            .expect(text);
            assert_eq!(s.min_version, want, "{text}");
        }
        for bad in ["1.1", "\"1.0\"", "tls13"] {
            let e = parse(&format!(
                "certificates: [{{ cert: a, key: b }}]\nmin_version: {bad}"
            ))
            .expect_err(bad);
            assert!(e.to_string().contains("\"1.2\" or \"1.3\""), "{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("certificates: []\nclient_cert: required").expect_err("typo");
        assert!(e.to_string().contains("client_cert"), "{e}");
        let e = parse("certificates: [{ cert: a, key: b, chain: c }]").expect_err("typo");
        assert!(e.to_string().contains("chain"), "{e}");
    }

    #[test]
    fn empty_certificates_is_invalid() {
        let s = parse("certificates: []").expect("parses");
        let e = s.validate().expect_err("empty");
        assert!(e.starts_with("tls.certificates"), "{e}");
    }

    #[test]
    fn ca_without_client_auth_is_invalid() {
        let mut s = parse("certificates: []").expect("parses");
        // Point at files that exist so only the client-auth rule can fail.
        let this = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        s.certificates.push(CertificatePair {
            cert: this.clone(),
            key: this.clone(),
        });
        s.client_ca = Some(this);
        let e = s.validate().expect_err("ca without client_auth");
        assert!(e.starts_with("tls.client_ca"), "{e}");
    }
}

crate::config::string_schema!(
    TlsVersion,
    "TlsVersion",
    "Lowest TLS version accepted: \"1.2\" or \"1.3\""
);
