//! The HTTP client auth uses toward identity providers (JWKS, discovery, introspection) and
//! OPA: the same hyper-util + hyper-rustls stack as the upstream pools, with a timeout and a
//! response size cap on every call.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{self, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// Identity documents are small; anything larger is refused rather than buffered.
const MAX_RESPONSE: usize = 1024 * 1024;

#[derive(Clone)]
pub(crate) struct Fetcher {
    client: legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a fetch failed; printed in logs, never sent to clients.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("invalid JSON: {0}")]
    Json(String),
}

impl Fetcher {
    /// `https` is whether any URL used is `https://` (system roots are only loaded then).
    pub(crate) fn new(timeout: Duration, ca: Option<&Path>, https: bool) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let mut roots = RootCertStore::empty();
        if let Some(path) = ca {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca: {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("ca: {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca: {}: {e}", path.display()))?;
            }
        } else if https {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        let tls = builder.with_root_certificates(roots).with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { client, timeout })
    }

    /// GET a JSON document.
    pub(crate) async fn get_json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        let req = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        self.json(req).await
    }

    /// Sends `req` and parses a 2xx JSON answer, all within the timeout.
    pub(crate) async fn json(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<serde_json::Value, FetchError> {
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(FetchError::Status(status));
            }
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| FetchError::Transport(e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| FetchError::Json(e.to_string()))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }
}
