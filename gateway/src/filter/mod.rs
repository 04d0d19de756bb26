//! Response filters: masking of configured JSON fields and of patterns (card numbers, e-mail
//! addresses, bearer tokens) in response bodies, and a response size cap.
//!
//! - Pattern masking streams: a bounded tail window is held back so a value split across
//!   chunks is still seen whole; masks keep the byte length, so Content-Length stays true.
//! - Field masking needs the whole document: JSON responses up to `json_buffer` are buffered
//!   (Content-Length rewritten); larger ones pass through with pattern masking only (logged).
//! - The size cap: a Content-Length above it is answered 502 `response_too_large` before any
//!   byte is sent; a body that grows past it mid-stream is aborted (the connection or stream
//!   is reset), never cut cleanly: a silently truncated 200 would be taken for the whole answer.
//! - Compressed bodies cannot be masked: routes that mask ask the upstream for identity
//!   encoding, and a compressed answer anyway is refused (502 `response_unmaskable`).

mod json;
mod mask;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, SizeHint};
use serde::Deserialize;

pub use json::{FieldRule, mask_fields};
pub use mask::{Masker, Pattern, StreamMasker, luhn};

use crate::proxy::{Body, BoxError, problem::Problem};

/// A route's `response_filter:`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseFilterConfig {
    /// JSON fields whose values become `"****"`: a key name at any depth (case-insensitive) or
    /// a JSON pointer (`/user/ssn`, `/items/*/card`).
    #[serde(default)]
    pub mask_fields: Vec<String>,
    /// Patterns masked anywhere in text bodies: `card_number`, `email`, `bearer_token`.
    #[serde(default)]
    pub mask_patterns: Vec<Pattern>,
    /// JSON responses up to this size are buffered for field masking; larger ones pass with
    /// pattern masking only.
    #[serde(default = "default_json_buffer", deserialize_with = "de_size")]
    #[schemars(with = "String")]
    pub json_buffer: u64,
    /// Response bodies larger than this: 502 when the upstream announces it, an aborted
    /// stream when it only shows mid-body. Absent: no cap.
    #[serde(default, deserialize_with = "de_opt_size")]
    #[schemars(with = "Option<String>")]
    pub max_body_bytes: Option<u64>,
}

fn default_json_buffer() -> u64 {
    1 << 20
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => crate::config::parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn de_opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

/// A route's compiled response filter.
#[derive(Debug)]
pub struct ResponseFilter {
    fields: Vec<FieldRule>,
    masker: Option<Arc<Masker>>,
    json_buffer: u64,
    max_body: Option<u64>,
}

impl ResponseFilter {
    pub fn compile(c: &ResponseFilterConfig) -> Result<Self, String> {
        let fields = c
            .mask_fields
            .iter()
            .map(|f| FieldRule::parse(f).map_err(|e| format!("response_filter.mask_fields: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let masker = if c.mask_patterns.is_empty() {
            None
        } else {
            Some(Arc::new(Masker::new(&c.mask_patterns)?))
        };
        if c.max_body_bytes == Some(0) {
            return Err("response_filter.max_body_bytes must be above 0".into());
        }
        Ok(Self {
            fields,
            masker,
            json_buffer: c.json_buffer,
            max_body: c.max_body_bytes,
        })
    }

    fn masks(&self) -> bool {
        !self.fields.is_empty() || self.masker.is_some()
    }

    /// Before the request goes upstream: a route that masks asks for an uncompressed answer.
    pub fn prepare_request(&self, headers: &mut HeaderMap) {
        if self.masks() {
            headers.remove(header::ACCEPT_ENCODING);
        }
    }

    /// Filters the upstream's response body; `Err` is the problem to answer instead.
    pub async fn apply<B>(
        &self,
        parts: &mut http::response::Parts,
        body: B,
    ) -> Result<Body, Problem>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let body = body.map_err(Into::into).boxed();
        if parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED {
            return Ok(body);
        }
        let length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let (Some(cap), Some(n)) = (self.max_body, length)
            && n > cap
        {
            return Err(Problem::new(StatusCode::BAD_GATEWAY, "response_too_large")
                .detail("the upstream's response is larger than this route allows"));
        }
        if !self.masks() {
            return Ok(FilteredBody::new(body, None, self.max_body, None).boxed());
        }
        let encoded = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if encoded {
            return Err(Problem::new(StatusCode::BAD_GATEWAY, "response_unmaskable")
                .detail("the upstream answered with a compressed body this route must mask"));
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let json = essence == "application/json" || essence.ends_with("+json");
        let textual = essence.is_empty()
            || json
            || essence.starts_with("text/")
            || essence.ends_with("+xml")
            || matches!(
                essence,
                "application/xml"
                    | "application/javascript"
                    | "application/x-www-form-urlencoded"
                    | "application/x-ndjson"
            );
        if !textual {
            return Ok(FilteredBody::new(body, None, self.max_body, None).boxed());
        }
        let streamer = self
            .masker
            .as_ref()
            .map(|m| StreamMasker::new(Arc::clone(m)));
        let buffer_json =
            json && !self.fields.is_empty() && length.is_none_or(|n| n <= self.json_buffer);
        if !buffer_json {
            if json && !self.fields.is_empty() {
                tracing::debug!(
                    limit = self.json_buffer,
                    "JSON response above json_buffer: fields pass unmasked, patterns masked"
                );
            }
            return Ok(FilteredBody::new(body, streamer, self.max_body, None).boxed());
        }
        // Buffer up to json_buffer (and never past the size cap).
        let mut body = body;
        let mut collected = Vec::new();
        let limit = self.json_buffer.min(self.max_body.unwrap_or(u64::MAX));
        let mut trailers = None;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "upstream response body failed");
                    return Err(Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_body_failed",
                    ));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        collected.extend_from_slice(&data);
                        if collected.len() as u64 > limit {
                            if self
                                .max_body
                                .is_some_and(|cap| collected.len() as u64 > cap)
                            {
                                return Err(Problem::new(
                                    StatusCode::BAD_GATEWAY,
                                    "response_too_large",
                                )
                                .detail(
                                    "the upstream's response is larger than this route allows",
                                ));
                            }
                            tracing::debug!(
                                limit = self.json_buffer,
                                "JSON response above json_buffer: fields pass unmasked, patterns masked"
                            );
                            return Ok(FilteredBody::new(
                                body,
                                streamer,
                                self.max_body,
                                Some(Bytes::from(collected)),
                            )
                            .boxed());
                        }
                    }
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        break;
                    }
                },
            }
        }
        let mut out = mask_fields(&collected, &self.fields).unwrap_or(collected);
        if let Some(m) = &self.masker {
            m.mask_all(&mut out);
        }
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        let full = http_body_util::Full::new(Bytes::from(out)).map_err(|never| match never {});
        Ok(match trailers {
            None => full.boxed(),
            Some(t) => full.with_trailers(async move { Some(Ok(t)) }).boxed(),
        })
    }
}

/// Response body error: grew past the route's cap mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("response body larger than the route's max_body_bytes")]
pub struct ResponseTooLarge;

/// A response body through pattern masking and the size cap.
pub struct FilteredBody {
    inner: Body,
    masker: Option<StreamMasker>,
    cap: Option<u64>,
    seen: u64,
    /// Bytes read before streaming began (a JSON body past `json_buffer`).
    prefix: Option<Bytes>,
    /// Trailers waiting for the masker's held-back tail to go out first.
    trailers: Option<HeaderMap>,
    done: bool,
    exact: bool,
}

impl FilteredBody {
    fn new(
        inner: Body,
        masker: Option<StreamMasker>,
        cap: Option<u64>,
        prefix: Option<Bytes>,
    ) -> Self {
        let seen = prefix.as_ref().map_or(0, |p| p.len() as u64);
        Self {
            exact: prefix.is_none(),
            inner,
            masker,
            cap,
            seen,
            prefix,
            trailers: None,
            done: false,
        }
    }

    fn data(&mut self, data: &[u8]) -> Option<Bytes> {
        let out = match &mut self.masker {
            Some(m) => Bytes::from(m.push(data)),
            None => Bytes::copy_from_slice(data),
        };
        (!out.is_empty()).then_some(out)
    }
}

impl hyper::body::Body for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(prefix) = this.prefix.take()
            && let Some(out) = this.data(&prefix)
        {
            return Poll::Ready(Some(Ok(Frame::data(out))));
        }
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.seen += data.len() as u64;
                        if this.cap.is_some_and(|cap| this.seen > cap) {
                            this.done = true;
                            tracing::warn!(cap = ?this.cap, "response body past the route's cap: aborted");
                            return Poll::Ready(Some(Err(Box::new(ResponseTooLarge))));
                        }
                        if let Some(out) = this.data(&data) {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: flush the held-back tail first.
                        this.trailers = frame.into_trailers().ok();
                        this.done = true;
                        if let Some(out) = this.masker.as_mut().map(StreamMasker::finish)
                            && !out.is_empty()
                        {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    if let Some(out) = this.masker.as_mut().map(StreamMasker::finish)
                        && !out.is_empty()
                    {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Masks keep the length, so the upstream's exact size still holds.
        if self.exact {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(yaml: &str) -> ResponseFilter {
        let c: ResponseFilterConfig = serde_yaml::from_str(yaml).expect("config");
        ResponseFilter::compile(&c).expect("valid")
    }

    fn response(headers: &[(&str, &str)]) -> http::response::Parts {
        let mut b = http::Response::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("resp").into_parts().0
    }

    #[tokio::test]
    async fn json_fields_and_patterns_are_masked_and_length_rewritten() {
        let f = filter("{ mask_fields: [password], mask_patterns: [email] }");
        let doc = r#"{"password":"hunter2","contact":"ann@example.com"}"#;
        let mut parts = response(&[
            ("content-type", "application/json"),
            ("content-length", &doc.len().to_string()),
        ]);
        let body = http_body_util::Full::new(Bytes::from(doc)).map_err(|never| match never {});
        let out = f.apply(&mut parts, body).await.expect("filtered");
        let bytes = out.collect().await.expect("body").to_bytes();
        assert_eq!(
            &bytes[..],
            br#"{"password":"****","contact":"***@example.com"}"#
        );
        assert_eq!(
            parts.headers.get(header::CONTENT_LENGTH),
            Some(&HeaderValue::from(bytes.len()))
        );
    }

    #[tokio::test]
    async fn announced_oversize_is_refused() {
        let f = filter("{ max_body_bytes: 10 }");
        let mut parts = response(&[("content-length", "11")]);
        let body =
            http_body_util::Full::new(Bytes::from("x".repeat(11))).map_err(|never| match never {});
        let err = f.apply(&mut parts, body).await.expect_err("refused");
        assert_eq!(err.code, "response_too_large");
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn compressed_bodies_are_not_passed_unmasked() {
        let f = filter("{ mask_patterns: [card_number] }");
        let mut parts = response(&[("content-encoding", "gzip")]);
        let body = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {});
        let err = f.apply(&mut parts, body).await.expect_err("refused");
        assert_eq!(err.code, "response_unmaskable");
    }

    #[test]
    fn bad_configs_are_refused() {
        let c: ResponseFilterConfig =
            serde_yaml::from_str("{ max_body_bytes: 0 }").expect("parses");
        assert!(ResponseFilter::compile(&c).is_err());
        assert!(serde_yaml::from_str::<ResponseFilterConfig>("{ mask_patterns: [ssn] }").is_err());
    }
}
