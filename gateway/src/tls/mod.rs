//! TLS termination for listeners: rustls with SNI certificate selection, ALPN h2/http1.1,
//! optional or required client certificates, and certificate reload without dropping
//! established connections.

mod certs;
mod error;
mod settings;
mod socket;

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use rustls::{
    ProtocolVersion, RootCertStore, ServerConfig, ServerConnection, SupportedProtocolVersion,
    server::WebPkiClientVerifier, version,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use x509_parser::{extensions::GeneralName, prelude::FromDer};

pub use error::TlsError;
pub use settings::{CertificatePair, ClientAuth, TlsSettings, TlsVersion};
pub use socket::TlsSocket;

/// Terminates TLS for one listener. Cheap to share (`Arc`); [`reload`](Self::reload) swaps the
/// configuration used by new handshakes.
pub struct TlsAcceptor {
    // Each handshake takes its own `Arc` of the config, so a swap never touches connections
    // already established or in progress.
    config: ArcSwap<ServerConfig>,
}

/// What the handshake established, for routing, authorisation and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// The client chose HTTP/2 by ALPN; otherwise speak HTTP/1.1.
    pub alpn_h2: bool,
    /// The server name the client asked for, if any.
    pub sni: Option<String>,
    /// `"TLSv1.2"` or `"TLSv1.3"`.
    pub version: &'static str,
    /// The verified client certificate, when one was presented.
    pub client: Option<ClientIdentity>,
}

/// A client certificate that chained to the configured CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject DN, e.g. `CN=orders, O=Example`.
    pub subject: String,
    /// SAN values as plain strings: DNS names, URIs, email addresses and IP addresses.
    pub sans: Vec<String>,
    /// SHA-256 of the leaf certificate's DER, lowercase hex: a stable key for pinning and logs.
    pub fingerprint_sha256: String,
}

impl TlsAcceptor {
    /// Validates `settings`, loads every file and builds the configuration.
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsError> {
        Ok(Self {
            config: ArcSwap::from_pointee(build_config(settings)?),
        })
    }

    /// Runs the server handshake. The caller bounds it with its handshake timeout.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(TlsStream<TlsSocket>, TlsInfo), TlsError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let stream = acceptor
            .accept(TlsSocket::new(tcp))
            .await
            .map_err(TlsError::Handshake)?;
        let info = TlsInfo::of(stream.get_ref().1);
        Ok((stream, info))
    }

    /// Replaces certificates, CA and client-auth policy for new handshakes. Everything is loaded
    /// and checked first; on error the running configuration is left as it was.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        // A fresh config also brings a fresh session cache: sessions resumed under the old one
        // could otherwise skip a client-certificate check the new CA would fail.
        self.config.store(Arc::new(build_config(settings)?));
        Ok(())
    }
}

// By hand: the derived form would print every certificate's DER.
impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("resolver", &self.config.load().cert_resolver)
            .finish_non_exhaustive()
    }
}

impl TlsInfo {
    fn of(conn: &ServerConnection) -> Self {
        Self {
            alpn_h2: conn.alpn_protocol() == Some(b"h2"),
            sni: conn.server_name().map(str::to_owned),
            version: match conn.protocol_version() {
                Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
                // Unreachable: only 1.2 and 1.3 are enabled.
                _ => "unknown",
            },
            client: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| ClientIdentity::of(leaf)),
        }
    }
}

impl ClientIdentity {
    fn of(leaf: &[u8]) -> Self {
        let fingerprint_sha256 = Sha256::digest(leaf)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        match x509_parser::certificate::X509Certificate::from_der(leaf) {
            Ok((_, cert)) => Self {
                subject: cert.subject().to_string(),
                sans: cert
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .into_iter()
                    .flat_map(|ext| ext.value.general_names.iter())
                    .filter_map(san_string)
                    .collect(),
                fingerprint_sha256,
            },
            // webpki accepted the chain, so this is a parser disagreement, not an attack on the
            // handshake. Keep the fingerprint; an empty subject and SAN list match no rule.
            Err(e) => {
                tracing::debug!(error = %e, "cannot parse a verified client certificate");
                Self {
                    subject: String::new(),
                    sans: Vec::new(),
                    fingerprint_sha256,
                }
            }
        }
    }
}

fn san_string(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
            Some((*s).to_owned())
        }
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(*bytes)
                .ok()
                .map(|a| IpAddr::from(a).to_string()),
            16 => <[u8; 16]>::try_from(*bytes)
                .ok()
                .map(|a| IpAddr::from(a).to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn build_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    settings.validate().map_err(TlsError::Settings)?;
    // ring's default suites are the modern AEAD ones only (AES-GCM, ChaCha20-Poly1305, ECDHE).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = certs::SniResolver::load(&settings.certificates, &provider)?;

    let versions: &[&SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&version::TLS13, &version::TLS12],
        TlsVersion::Tls13 => &[&version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;

    let verifier = match (settings.client_auth, &settings.client_ca) {
        (ClientAuth::None, _) => WebPkiClientVerifier::no_client_auth(),
        (auth, Some(ca)) => {
            let roots = Arc::new(client_roots(ca)?);
            let builder = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let builder = match auth {
                ClientAuth::Optional => builder.allow_unauthenticated(),
                ClientAuth::None | ClientAuth::Required => builder,
            };
            builder.build().map_err(|e| TlsError::Invalid {
                path: ca.clone(),
                reason: format!("unusable client CA bundle: {e}"),
            })?
        }
        // `validate` refuses this; kept as an error rather than a panic.
        (_, None) => {
            return Err(TlsError::Settings(
                "tls.client_ca: required when client_auth is not `none`".into(),
            ));
        }
    };

    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    // Preference order: h2 first, so clients that speak both get multiplexing.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn client_roots(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs::load_certificates(path)? {
        // One bad CA in a bundle must not silently shrink the trust set to the others.
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            reason: format!("unusable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}
