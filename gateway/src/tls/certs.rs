//! Loading PEM certificates and keys, and choosing a server certificate by SNI.

use std::{
    collections::{HashMap, hash_map::Entry},
    path::Path,
    sync::Arc,
};

use rustls::{
    InconsistentKeys,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use super::{CertificatePair, TlsError};

/// Picks the certificate for a handshake: exact SNI match, then a `*.` wildcard covering exactly
/// one more label, then the first configured certificate.
pub(super) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`: `*.example.net` is stored as `example.net`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// Loads every pair; the first is the default. Fails on the first unusable file so that a
    /// reload never serves half of a new set.
    pub(super) fn load(
        pairs: &[CertificatePair],
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for pair in pairs {
            let (key, names) = load_pair(pair, provider)?;
            let key = Arc::new(key);
            default.get_or_insert_with(|| Arc::clone(&key));
            for name in names {
                let (map, name) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent.to_owned()),
                    None => (&mut exact, name),
                };
                // Several certificates may cover one name (e.g. during a migration); the one
                // listed first wins, so the order in the file is the operator's priority.
                if let Entry::Vacant(slot) = map.entry(name) {
                    slot.insert(Arc::clone(&key));
                }
            }
        }
        let default = default.ok_or_else(|| {
            TlsError::Settings(
                "tls.certificates: at least one certificate/key pair is required".into(),
            )
        })?;
        Ok(Self {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(sni) = sni else {
            return &self.default;
        };
        let sni = normalise(sni);
        if let Some(key) = self.exact.get(&sni) {
            return key;
        }
        // `*.example.net` covers `a.example.net` only: the wildcard stands for one whole label
        // (RFC 6125 6.4.3), never for the parent itself or two labels.
        if let Some((label, parent)) = sni.split_once('.')
            && !label.is_empty()
            && let Some(key) = self.wildcard.get(parent)
        {
            return key;
        }
        &self.default
    }
}

// By hand: names are what an operator debugging selection needs, not the certificates' DER.
impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut exact: Vec<_> = self.exact.keys().collect();
        let mut wildcard: Vec<_> = self.wildcard.keys().map(|k| format!("*.{k}")).collect();
        exact.sort();
        wildcard.sort();
        f.debug_struct("SniResolver")
            .field("exact", &exact)
            .field("wildcard", &wildcard)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.pick(hello.server_name())))
    }
}

/// The certificates in a PEM file, in file order (other block types are skipped).
pub(super) fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A chain and its key, checked to belong together, with the leaf's SAN DNS names.
fn load_pair(
    pair: &CertificatePair,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Vec<String>), TlsError> {
    let chain = load_certificates(&pair.cert)?;
    let names = leaf_dns_names(&pair.cert, &chain[0])?;

    let key_pem = read(&pair.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: pair.key.clone(),
        },
        e => TlsError::Pem {
            path: pair.key.clone(),
            reason: e.to_string(),
        },
    })?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Invalid {
            path: pair.key.clone(),
            reason: format!("unusable private key: {e}"),
        })?;

    let certified = CertifiedKey::new(chain, signer);
    // A mismatched pair would load fine and fail every handshake; catch it at load time.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: pair.cert.clone(),
                key: pair.key.clone(),
            });
        }
        Err(e) => {
            return Err(TlsError::Invalid {
                path: pair.cert.clone(),
                reason: format!("unusable certificate: {e}"),
            });
        }
    }
    Ok((certified, names))
}

/// The leaf's SAN DNS names, lowercased. Warns (does not fail) on what still works but is
/// probably a mistake, so that a reload is not blocked by a certificate about to be renewed.
fn leaf_dns_names(path: &Path, leaf: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
        .map_err(|e| invalid(format!("cannot parse the first certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| invalid(format!("cannot parse subjectAltName: {e}")))?;
    let names: Vec<String> = san
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some(normalise(name)),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        tracing::warn!(
            file = %path.display(),
            "certificate has no SAN DNS names: it is only served as the default certificate"
        );
    }
    if !cert.validity().is_valid() {
        tracing::warn!(
            file = %path.display(),
            not_before = %cert.validity().not_before,
            not_after = %cert.validity().not_after,
            "certificate is outside its validity period; clients will refuse it"
        );
    }
    Ok(names)
}

/// DNS names compare case-insensitively and a trailing dot means the same name.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}
