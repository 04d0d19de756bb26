//! Why a request to an upstream failed: which upstream and endpoint, what kind of failure, the
//! status and stable reason code the client sees, and whether another attempt may help (the
//! pingora idea of recording where an error came from and whether it is retryable).

use std::{fmt, sync::Arc};

use http::StatusCode;

use crate::proxy::BoxError;

/// What went wrong, independent of where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// The upstream could not be built from its configuration (TLS roots, runtime).
    Config,
    /// Every endpoint is unhealthy or ejected.
    NoHealthyEndpoint,
    /// The circuit breaker is open: the request was refused without touching the network.
    CircuitOpen,
    /// TCP connect or TLS handshake failed (or timed out).
    ConnectFailed,
    /// No response headers within `response_timeout`.
    Timeout,
    /// The connection broke or the endpoint spoke malformed HTTP after connecting.
    Protocol,
}

/// A failed upstream request (or upstream set-up), with the upstream and endpoint it concerns.
///
/// The message carries the whole cause chain (`Connection refused` sits several levels below
/// hyper's "client error (Connect)"), because the proxy logs errors with `Display`; the cause is
/// therefore not also exposed through `source()`, where chain-walking reporters would print it
/// twice.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{upstream}`{}: {kind}{}", At(self.endpoint.as_deref()), Chain(self.cause.as_deref()))]
pub struct UpstreamError {
    kind: UpstreamErrorKind,
    upstream: Arc<str>,
    endpoint: Option<Arc<str>>,
    cause: Option<BoxError>,
}

impl UpstreamError {
    pub(super) fn new(
        kind: UpstreamErrorKind,
        upstream: &Arc<str>,
        endpoint: Option<&Arc<str>>,
        cause: Option<BoxError>,
    ) -> Self {
        Self {
            kind,
            upstream: Arc::clone(upstream),
            endpoint: endpoint.cloned(),
            cause,
        }
    }

    /// A configuration problem found while building the upstream.
    pub(super) fn config(upstream: &str, reason: String) -> Self {
        Self {
            kind: UpstreamErrorKind::Config,
            upstream: Arc::from(upstream),
            endpoint: None,
            cause: Some(reason.into()),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> UpstreamErrorKind {
        self.kind
    }

    /// The upstream's name.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The endpoint the failed attempt went to, when one was chosen.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The status the client gets: 502 when an endpoint could not be reached or misbehaved, 503
    /// when the gateway would not try (nothing healthy, breaker open), 504 on a timeout.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            UpstreamErrorKind::Config => StatusCode::INTERNAL_SERVER_ERROR,
            UpstreamErrorKind::NoHealthyEndpoint | UpstreamErrorKind::CircuitOpen => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamErrorKind::ConnectFailed | UpstreamErrorKind::Protocol => {
                StatusCode::BAD_GATEWAY
            }
            UpstreamErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable, machine-matchable reason code for problem responses, logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            UpstreamErrorKind::Config => "upstream_config",
            UpstreamErrorKind::NoHealthyEndpoint => "upstream_unavailable",
            UpstreamErrorKind::CircuitOpen => "upstream_circuit_open",
            UpstreamErrorKind::ConnectFailed => "upstream_connect_failed",
            UpstreamErrorKind::Timeout => "upstream_timeout",
            UpstreamErrorKind::Protocol => "upstream_protocol_error",
        }
    }

    /// Whether another attempt (on another endpoint) could succeed where this one failed,
    /// provided the request is safe to repeat: the request never reached an application
    /// (connect failure) or the endpoint did not answer in time. A broken connection after the
    /// request was sent is not retryable: the endpoint may have acted on it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::ConnectFailed | UpstreamErrorKind::Timeout
        )
    }
}

impl fmt::Display for UpstreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "invalid configuration",
            Self::NoHealthyEndpoint => "no healthy endpoint",
            Self::CircuitOpen => "circuit breaker open",
            Self::ConnectFailed => "connection failed",
            Self::Timeout => "no response headers in time",
            Self::Protocol => "protocol error",
        })
    }
}

/// ` endpoint http://10.0.0.1:80`, or nothing.
struct At<'a>(Option<&'a str>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(endpoint) => write!(f, " endpoint {endpoint}"),
            None => Ok(()),
        }
    }
}

/// `: cause: its cause: ...`, or nothing.
struct Chain<'a>(Option<&'a (dyn std::error::Error + Send + Sync + 'static)>);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut next: Option<&(dyn std::error::Error + 'static)> = match self.0 {
            Some(e) => Some(e),
            None => None,
        };
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}
