//! A throwaway PKI for tests: a CA plus server and client certificates, written as PEM files to
//! a temporary directory that is removed when the [`Pki`] is dropped.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use gateway::tls::CertificatePair;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and the directory its certificates are written to.
pub struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    /// The CA certificate, PEM: use it as `client_ca` or as a client's trust anchor.
    pub ca_pem: PathBuf,
}

/// A certificate and its key, on disk and in memory.
pub struct Issued {
    /// PEM certificate file.
    pub cert: PathBuf,
    /// PEM private key file (PKCS#8).
    pub key: PathBuf,
    /// The certificate's DER, to compare with what a peer saw.
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    /// A fresh CA in a fresh temporary directory.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gateway-test-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover from a killed run with the same pid would otherwise mix old files in.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PKI directory");

        let mut params = CertificateParams::default();
        params.distinguished_name = dn("Gateway Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write CA");
        Self {
            dir,
            ca,
            ca_key,
            ca_pem,
        }
    }

    /// The directory the files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `name` in the PKI directory (for deliberately broken files).
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    /// A CA-signed server certificate for `dns_names` (wildcards like `*.example.net` allowed),
    /// written as `<stem>.pem` and `<stem>.key`.
    pub fn server(&self, stem: &str, dns_names: &[&str]) -> Issued {
        let mut params = CertificateParams::new(
            dns_names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("server names");
        params.distinguished_name = dn(dns_names.first().copied().unwrap_or(stem));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, params, true)
    }

    /// A CA-signed client certificate with subject `CN=<common_name>, O=Gateway Tests` and the
    /// given SANs.
    pub fn client(&self, stem: &str, common_name: &str, sans: Vec<SanType>) -> Issued {
        self.issue(stem, client_params(common_name, sans), true)
    }

    /// A self-signed client certificate: well-formed, but no listener should trust it.
    pub fn self_signed_client(&self, stem: &str, common_name: &str) -> Issued {
        self.issue(stem, client_params(common_name, Vec::new()), false)
    }

    /// A trust store holding only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.der().clone())
            .expect("CA is a valid anchor");
        roots
    }

    /// A client trusting this CA, limited to `versions`, offering `alpn` and presenting
    /// `identity` when given.
    pub fn client_config(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&str],
        identity: Option<&Issued>,
    ) -> ClientConfig {
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("protocol versions")
                .with_root_certificates(self.roots());
        let mut config = match identity {
            Some(id) => builder
                .with_client_auth_cert(vec![id.der.clone()], id.key_der())
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }

    fn issue(&self, stem: &str, params: CertificateParams, ca_signed: bool) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let cert = if ca_signed {
            params.signed_by(&key, &self.ca, &self.ca_key)
        } else {
            params.self_signed(&key)
        }
        .expect("leaf certificate");
        let cert_path = self.write(&format!("{stem}.pem"), cert.pem());
        let key_path = self.write(&format!("{stem}.key"), key.serialize_pem());
        Issued {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Issued {
    /// The `certificates[]` entry for this certificate.
    pub fn pair(&self) -> CertificatePair {
        CertificatePair {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// The private key, for a rustls client or server built in the test itself.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }
}

fn client_params(common_name: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Gateway Tests");
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}
