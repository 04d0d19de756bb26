//! The keep-alive HTTP clients of one upstream: HTTP/1.1 and TLS (ALPN h2, then http/1.1) share
//! one hyper-util client; `h2c://` endpoints get an HTTP/2-only client (prior knowledge). Both
//! pool connections per endpoint (hyper-util keys its pool by scheme and authority).

use std::sync::Arc;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{self, ResponseFuture, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};

use super::config::{UpstreamConfig, UpstreamTls};
use crate::proxy::Body;

/// A client suited to one endpoint's protocol; cloning shares the connection pool.
#[derive(Clone)]
pub(super) enum Client {
    /// `http://` and `https://`.
    Http(legacy::Client<HttpsConnector<HttpConnector>, Body>),
    /// `h2c://`: HTTP/2 with prior knowledge.
    H2c(legacy::Client<HttpConnector, Body>),
}

impl Client {
    pub(super) fn request(&self, req: http::Request<Body>) -> ResponseFuture {
        match self {
            Self::Http(client) => client.request(req),
            Self::H2c(client) => client.request(req),
        }
    }
}

/// The clients of one upstream, built once and shared by its endpoints.
pub(super) struct Clients {
    pub(super) http: Client,
    pub(super) h2c: Client,
}

impl Clients {
    /// `needs_tls`: whether any endpoint is `https://` (only then are roots loaded).
    pub(super) fn build(config: &UpstreamConfig, needs_tls: bool) -> Result<Self, String> {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(config.connect_timeout));
        // Requests are small and latency matters more than packet count.
        tcp.set_nodelay(true);

        let mut builder = legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(config.idle_pool_timeout)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            // Without a timer hyper-util never expires idle connections.
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());

        let h2c = builder.clone().http2_only(true).build(tcp.clone());

        // The TLS wrapper decides by scheme, so the inner connector must accept `https` URIs.
        tcp.enforce_http(false);
        let tls = if needs_tls {
            tls_config(&config.tls)?
        } else {
            // Never used (no https endpoint), but the connector type wants one; loading the
            // system roots for nothing would slow every reload.
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("tls: {e}"))?
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        };
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let https = match &config.tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| format!("tls.server_name: `{name}`: {e}"))?;
                https.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => https,
        };
        let http = builder.build(https.enable_all_versions().wrap_connector(tcp));
        Ok(Self {
            http: Client::Http(http),
            h2c: Client::H2c(h2c),
        })
    }
}

/// ring, chosen explicitly rather than through the process-wide default, so that the upstream
/// clients work whatever other TLS code installs (or fails to install).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(tls: &UpstreamTls) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let identity = client_identity(tls)?;
    if !tls.verify {
        tracing::warn!("upstream TLS certificate verification is off: test rigs only");
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)));
        return match identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("tls.client_key: {e}")),
            None => Ok(builder.with_no_client_auth()),
        };
    }
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("tls.ca: {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("tls.ca: {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.ca: {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "tls.ca: {}: no certificate in the file",
                    path.display()
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            // Some unparsable system certificates are common and harmless; no usable root at all
            // means nothing https could ever be verified.
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                let why = native
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "tls: no system root certificates found{why}; set tls.ca to a CA file"
                ));
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    match identity {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("tls.client_key: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The certificate chain and key the gateway presents to upstreams that ask for one.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(tls: &UpstreamTls) -> Result<Option<Identity>, String> {
    let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.client_cert: {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.client_cert: {}: no certificate in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls.client_key: {}: {e}", key.display()))?;
    Ok(Some((certs, key)))
}

/// `tls.verify: false`: accepts any certificate and name, but still checks that the handshake
/// is signed by the key of the certificate presented.
#[derive(Debug)]
pub struct NoVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
