//! Active health checks: one task per endpoint sends `GET <path>` every `interval` and flips the
//! endpoint's health after `unhealthy_threshold` failures or `healthy_threshold` passes in a row.
//! The tasks belong to the [`Upstreams`](super::Upstreams) set that spawned them and are aborted
//! when it is dropped (a reload replaces the whole set).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use rand::Rng;
use tokio::time::MissedTickBehavior;

use super::{config::HealthCheck, endpoint::Endpoint};
use crate::proxy::Body;

/// Health endpoints answer with a few bytes; reading the body (rather than dropping it) lets the
/// connection go back to the pool, and the cap keeps a misbehaving endpoint from making us read
/// megabytes every interval.
const MAX_BODY: usize = 64 * 1024;

/// Spawns the checker of one endpoint on the current runtime.
pub(super) fn spawn(
    upstream: Arc<str>,
    endpoint: Arc<Endpoint>,
    check: HealthCheck,
    path: http::uri::PathAndQuery,
) -> tokio::task::AbortHandle {
    tokio::spawn(run(upstream, endpoint, check, path)).abort_handle()
}

async fn run(
    upstream: Arc<str>,
    endpoint: Arc<Endpoint>,
    check: HealthCheck,
    path: http::uri::PathAndQuery,
) {
    // A random first delay spreads the checks of many endpoints (and of every reload) over the
    // interval instead of firing them all at once.
    let interval_ms = u64::try_from(check.interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let jitter = Duration::from_millis(rand::rng().random_range(0..interval_ms));
    tokio::time::sleep(jitter).await;
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        ticker.tick().await;
        let outcome = probe(&endpoint, &check, path.clone()).await;
        match outcome {
            Ok(()) => {
                failures = 0;
                passes = passes.saturating_add(1);
                if !endpoint.is_healthy() && passes >= check.healthy_threshold {
                    endpoint.set_healthy(true);
                    tracing::info!(upstream = %upstream, endpoint = %endpoint.label, "endpoint healthy");
                }
            }
            Err(why) => {
                passes = 0;
                failures = failures.saturating_add(1);
                if endpoint.is_healthy() && failures >= check.unhealthy_threshold {
                    endpoint.set_healthy(false);
                    tracing::warn!(upstream = %upstream, endpoint = %endpoint.label, reason = %why, "endpoint unhealthy");
                }
            }
        }
    }
}

/// One check: `Err` says why it failed.
async fn probe(
    endpoint: &Endpoint,
    check: &HealthCheck,
    path: http::uri::PathAndQuery,
) -> Result<(), String> {
    let mut req = Request::new(empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = endpoint.uri(path);
    *req.version_mut() = endpoint.version();
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("gateway-health-check"),
    );
    let exchange = async {
        let response = endpoint
            .client
            .request(req, check.timeout)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        if check.expected_status.contains(status) {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
