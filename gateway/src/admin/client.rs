//! The CLI's side of the admin socket: one request, one JSON answer. Blocking (the CLI has no
//! runtime of its own), with a short connect timeout so a dead daemon is noticed at once.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use super::ACTOR_HEADER;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody answers on the socket: no daemon runs (or it is not ours to reach).
    #[error("no daemon answers on {}: {reason}", socket.display())]
    Unreachable { socket: PathBuf, reason: String },
    /// The daemon answered with an error.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    #[error("admin socket {}: {reason}", socket.display())]
    Protocol { socket: PathBuf, reason: String },
}

pub struct Client {
    socket: PathBuf,
    actor: String,
}

impl Client {
    /// A client naming `actor` (`cli:<user>`) for the audit journal.
    pub fn new(socket: PathBuf, actor: String) -> Self {
        Self { socket, actor }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Sends one request; `Ok` only for a 2xx answer.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.protocol(e.to_string()))?;
        runtime.block_on(self.call_async(method, path, body))
    }

    async fn call_async(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            socket: self.socket.clone(),
            reason,
        };
        let stream = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::UnixStream::connect(&self.socket),
        )
        .await
        .map_err(|_| unreachable("connect timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap_or_default())
            .unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "gateway")
            .header(header::CONTENT_TYPE, "application/json")
            .header(ACTOR_HEADER, &self.actor)
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| self.protocol(e.to_string()))?;
        // A long answer (a million-entry block list) is fine; a daemon that never answers is not.
        let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .map_err(|_| self.protocol("no answer within 60s".into()))?
            .map_err(|e| self.protocol(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e.to_string()))?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("answer is not JSON: {e}")))?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(ClientError::Refused {
                status,
                message: value["error"]
                    .as_str()
                    .map_or_else(|| format!("daemon answered {status}"), str::to_owned),
            })
        }
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            reason,
        }
    }
}
