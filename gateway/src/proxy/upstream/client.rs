//! The keep-alive HTTP clients of one upstream: `http://` endpoints get the gateway's own
//! HTTP/1.1 path (`h1.rs`, one idle list per endpoint); TLS endpoints (ALPN h2, then http/1.1)
//! share one hyper-util client and `h2c://` endpoints an HTTP/2-only one (prior knowledge), both
//! pooling connections per endpoint (hyper-util keys its pool by scheme and authority).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{self, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};

use super::{
    config::{UpstreamConfig, UpstreamTls},
    fields::ResponseFields,
    h1::{H1Body, H1Error, H1Pool},
};
use crate::proxy::{Body, BoxError, headers::Added};

/// A client suited to one endpoint's protocol; cloning shares the connection pool.
#[derive(Clone)]
pub(super) enum Client {
    /// `http://`: the gateway's own HTTP/1.1 path, one pool per endpoint.
    H1(Arc<H1Pool>),
    /// `https://`.
    Https(legacy::Client<HttpsConnector<HttpConnector>, Body>),
    /// `h2c://`: HTTP/2 with prior knowledge.
    H2c(legacy::Client<HttpConnector, Body>),
}

/// Why a request failed on the client side.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClientError {
    #[error(transparent)]
    H1(#[from] H1Error),
    #[error(transparent)]
    Hyper(#[from] legacy::Error),
    /// No response head within the response timeout (hyper-util clients).
    #[error("no response head within the response timeout")]
    Timeout,
}

impl ClientError {
    /// Establishing the connection failed (TCP connect, its timeout, the TLS handshake): nothing
    /// reached the endpoint.
    pub(super) fn is_connect(&self) -> bool {
        match self {
            Self::H1(e) => e.is_connect(),
            Self::Hyper(e) => e.is_connect(),
            Self::Timeout => false,
        }
    }

    /// No response head in time.
    pub(super) fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout | Self::H1(H1Error::Timeout))
    }
}

impl Client {
    /// Sends `req`, waiting up to `timeout` for the response head.
    pub(super) async fn request(
        &self,
        req: http::Request<Body>,
        timeout: std::time::Duration,
    ) -> Result<http::Response<UpstreamBody>, ClientError> {
        let (mut head, body) = req.into_parts();
        let mut response = self
            .send(&mut head, &Added::default(), body, false, timeout)
            .await?;
        UpstreamBody::fields_into_map(&mut response);
        Ok(response)
    }

    /// Sends `head` and `body`, waiting up to `timeout` (from now) for the response head; the
    /// gateway's own HTTP/1.1 client keeps that timer per connection (its pool was built with
    /// the same timeout). `keep_head`: a retry may need `head` again. The gateway's own client
    /// only reads it; hyper-util's takes it, so it gets a copy when it must be kept (copying
    /// every GET's headers in case of a retry was ~3 % of a proxied request).
    pub(super) async fn send(
        &self,
        head: &mut http::request::Parts,
        added: &Added,
        body: Body,
        keep_head: bool,
        timeout: std::time::Duration,
    ) -> Result<http::Response<UpstreamBody>, ClientError> {
        let owned = |head: &mut http::request::Parts, body| {
            let mut parts = if keep_head {
                head.clone()
            } else {
                std::mem::replace(head, http::Request::new(()).into_parts().0)
            };
            added.insert_into(&mut parts.headers);
            http::Request::from_parts(parts, body)
        };
        let response = match self {
            Self::H1(pool) => {
                return Ok(pool.send(head, added, body).await?.map(UpstreamBody::H1));
            }
            Self::Https(client) => {
                tokio::time::timeout(timeout, client.request(owned(head, body))).await
            }
            Self::H2c(client) => {
                tokio::time::timeout(timeout, client.request(owned(head, body))).await
            }
        }
        .map_err(|_| ClientError::Timeout)??;
        Ok(response.map(UpstreamBody::Hyper))
    }
}

/// An upstream response body, from whichever client fetched it.
pub enum UpstreamBody {
    H1(H1Body),
    Hyper(Incoming),
}

impl UpstreamBody {
    /// The header fields of a response read by the gateway's own HTTP/1.1 client, whose map is
    /// left empty for them; `None` from hyper's clients (their maps hold the fields) or once
    /// taken.
    pub fn take_fields(&mut self) -> Option<ResponseFields> {
        match self {
            Self::H1(body) => body.take_fields(),
            Self::Hyper(_) => None,
        }
    }

    /// Moves fields still kept in the body into the response's map, hop-by-hop ones included
    /// (the response as the upstream sent it).
    pub fn fields_into_map(response: &mut http::Response<Self>) {
        if let Some(fields) = response.body_mut().take_fields() {
            fields.append_all_to(response.headers_mut());
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::H1(body) => Pin::new(body).poll_frame(cx),
            Self::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(body) => body.is_end_stream(),
            Self::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::H1(body) => body.size_hint(),
            Self::Hyper(body) => body.size_hint(),
        }
    }
}

/// The hyper-util clients of one upstream, built once and shared by its TLS and h2c endpoints.
pub(super) struct Clients {
    pub(super) https: Client,
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
            https: Client::Https(http),
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
