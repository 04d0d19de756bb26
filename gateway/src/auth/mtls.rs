//! Client-certificate identities: the certificate the TLS layer already verified against the
//! listener's `client_ca`, mapped by subject, SAN or fingerprint to a principal with roles.

use super::{Failure, config::MtlsConfig};
use crate::{proxy::stage::Principal, tls::TlsInfo};

#[derive(Debug)]
pub(crate) struct Identities {
    name: String,
    entries: Vec<Entry>,
    allow_unlisted: bool,
}

#[derive(Debug)]
struct Entry {
    id: Option<String>,
    subject: Option<String>,
    san: Option<String>,
    /// Lowercase hex without colons.
    fingerprint: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
}

impl Identities {
    pub(crate) fn build(name: &str, c: &MtlsConfig) -> Result<Self, String> {
        let what = format!("auth.mtls.{name}");
        let mut entries = Vec::new();
        for (i, e) in c.identities.iter().enumerate() {
            if e.subject.is_none() && e.san.is_none() && e.fingerprint.is_none() {
                return Err(format!(
                    "{what}.identities[{i}]: set subject, san or fingerprint"
                ));
            }
            let fingerprint = e
                .fingerprint
                .as_ref()
                .map(|f| {
                    let f: String = f
                        .chars()
                        .filter(|c| *c != ':')
                        .collect::<String>()
                        .to_ascii_lowercase();
                    if f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Ok(f)
                    } else {
                        Err(format!(
                            "{what}.identities[{i}].fingerprint: 64 hex digits expected"
                        ))
                    }
                })
                .transpose()?;
            entries.push(Entry {
                id: e.id.clone(),
                subject: e.subject.clone(),
                san: e.san.clone(),
                fingerprint,
                roles: e.roles.clone(),
                scopes: e.scopes.clone(),
            });
        }
        if entries.is_empty() && !c.allow_unlisted {
            return Err(format!(
                "{what}: no identities and allow_unlisted is off: nobody could pass"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            entries,
            allow_unlisted: c.allow_unlisted,
        })
    }

    pub(crate) fn authenticate(&self, tls: Option<&TlsInfo>) -> Result<Option<Principal>, Failure> {
        let Some(cert) = tls.and_then(|t| t.client.as_ref()) else {
            return Ok(None);
        };
        let entry = self.entries.iter().find(|e| {
            e.subject.as_ref().is_none_or(|s| *s == cert.subject)
                && e.san.as_ref().is_none_or(|s| cert.sans.contains(s))
                && e.fingerprint
                    .as_ref()
                    .is_none_or(|f| *f == cert.fingerprint_sha256)
        });
        let principal = match entry {
            Some(e) => Principal {
                id: e.id.clone().unwrap_or_else(|| cert.subject.clone()),
                scheme: "mtls",
                issuer: Some(self.name.clone()),
                roles: e.roles.clone(),
                scopes: e.scopes.clone(),
                claims: cert_claims(cert),
            },
            None if self.allow_unlisted => Principal {
                id: cert.subject.clone(),
                scheme: "mtls",
                issuer: Some(self.name.clone()),
                claims: cert_claims(cert),
                ..Principal::default()
            },
            None => {
                tracing::info!(set = %self.name, fingerprint = %cert.fingerprint_sha256, "client certificate not mapped to an identity");
                return Err(Failure::rejected(
                    "auth_invalid_key",
                    "client certificate not recognised",
                ));
            }
        };
        Ok(Some(principal))
    }
}

/// What policies may look at: subject, SANs, fingerprint.
fn cert_claims(cert: &crate::tls::ClientIdentity) -> serde_json::Value {
    serde_json::json!({
        "subject": cert.subject,
        "sans": cert.sans,
        "fingerprint_sha256": cert.fingerprint_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ClientIdentity;

    fn info(subject: &str, sans: &[&str], fp: &str) -> TlsInfo {
        TlsInfo {
            alpn_h2: false,
            sni: None,
            version: "TLSv1.3",
            client: Some(ClientIdentity {
                subject: subject.into(),
                sans: sans.iter().map(|s| (*s).to_owned()).collect(),
                fingerprint_sha256: fp.into(),
            }),
        }
    }

    #[test]
    fn maps_by_subject_san_and_fingerprint() {
        let fp = "ab".repeat(32);
        let c: MtlsConfig = serde_yaml::from_str(&format!(
            "identities:\n - {{ subject: 'CN=a', roles: [ra] }}\n - {{ san: 'spiffe://x/b', id: b }}\n - {{ fingerprint: '{}', id: c }}\n",
            "AB:".repeat(31) + "AB"
        ))
        .expect("yaml");
        let m = Identities::build("m", &c).expect("build");
        let p = m
            .authenticate(Some(&info("CN=a", &[], "00")))
            .expect("ok")
            .expect("p");
        assert_eq!(
            (p.id.as_str(), p.roles.as_slice()),
            ("CN=a", &["ra".to_owned()][..])
        );
        let p = m
            .authenticate(Some(&info("CN=z", &["spiffe://x/b"], "00")))
            .expect("ok")
            .expect("p");
        assert_eq!(p.id, "b");
        let p = m
            .authenticate(Some(&info("CN=z", &[], &fp)))
            .expect("ok")
            .expect("p");
        assert_eq!(p.id, "c");
        assert!(m.authenticate(Some(&info("CN=z", &[], "00"))).is_err());
        assert!(m.authenticate(None).expect("ok").is_none());
    }
}
