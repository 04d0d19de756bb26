//! The L7 reverse proxy: listeners, the per-request pipeline, routing, upstream pools.

pub mod access_log;
mod deadline;
pub mod headers;
pub mod http1;
pub mod identity;
pub mod normalize;
pub mod problem;
pub mod proxy_protocol;
pub mod router;
pub mod server;
mod service;
pub mod stage;
pub mod upstream;

/// Errors carried inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type requests are forwarded with (streamed, never buffered whole).
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;
