//! The L7 reverse proxy: listeners, the per-request pipeline, routing, upstream pools.

pub mod upstream;

/// Errors carried inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type requests are forwarded with (streamed, never buffered whole).
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;
