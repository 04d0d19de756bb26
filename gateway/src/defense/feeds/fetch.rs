//! Getting a feed's text: a local file, or an http(s) URL through the same hyper/rustls stack
//! the upstreams use (system roots). Bounded in size and time: a feed server that stalls or
//! answers with a gigabyte must not stall or swamp the gateway.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{ClientConfig, RootCertStore};

/// Larger than any public list (FireHOL level 4 is a few MiB).
const MAX_BYTES: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
}

pub(super) async fn read_file(path: &Path) -> Result<String, FeedError> {
    let err = |source| FeedError::File {
        path: path.display().to_string(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(err)?;
    if meta.len() > MAX_BYTES as u64 {
        return Err(err(std::io::Error::other("larger than 64 MiB")));
    }
    tokio::fs::read_to_string(path).await.map_err(err)
}

/// One client for every URL feed (connections are not kept: feeds refresh hourly).
pub(super) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    pub(super) fn new() -> Self {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let tls = tls.unwrap_or_else(|_| {
            // The ring provider always supports the default versions; keep a usable client.
            ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        });
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(https);
        Self { client }
    }

    pub(super) async fn get(&self, url: &str) -> Result<String, FeedError> {
        let err = |reason: String| FeedError::Http {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|e| err(format!("{e}")))?;
        let req = http::Request::get(uri)
            .header(http::header::USER_AGENT, "gateway-feeds/1")
            .body(Empty::new())
            .map_err(|e| err(e.to_string()))?;
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| err(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(err(format!("HTTP {}", resp.status())));
            }
            let body = Limited::new(resp.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|e| err(e.to_string()))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| err("body is not UTF-8 text".into()))
        };
        tokio::time::timeout(TIMEOUT, fetch)
            .await
            .map_err(|_| err(format!("no answer within {TIMEOUT:?}")))?
    }
}
