//! Every response the gateway makes itself: `application/problem+json` (RFC 9457) with a stable
//! reason code and the request id, never internals. Made in this one place.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};

use super::{Body, stage::Evidence};

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    /// Stable, machine-matchable: `route_not_found`, `upstream_timeout`, ...
    pub code: &'static str,
    pub detail: Option<String>,
    /// Why, for the security event; never sent to the client.
    pub evidence: Option<Box<Evidence>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// RFC 9457 extension members (`errors` of a validation failure), never secrets.
    extensions: Vec<(&'static str, serde_json::Value)>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str) -> Self {
        Self {
            status,
            code,
            detail: None,
            evidence: None,
            headers: Vec::new(),
            extensions: Vec::new(),
        }
    }

    /// Attaches what the security event should say about this rejection.
    pub fn evidence(mut self, evidence: Evidence) -> Self {
        self.evidence = Some(Box::new(evidence));
        self
    }

    /// A sentence for the client; must never carry internals or secrets.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds an extension member to the body; must never carry secrets.
    pub fn extension(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extensions.push((name, value));
        self
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut body = serde_json::json!({
            "type": format!("urn:gateway:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
            "request_id": request_id,
        });
        if let Some(map) = body.as_object_mut() {
            for (k, v) in self.extensions {
                map.entry(k).or_insert(v);
            }
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = Response::new(
            Full::new(Bytes::from(bytes))
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        resp
    }
}
