//! Upstream pools: per upstream, a set of endpoints behind keep-alive clients, chosen by a load
//! balancer that skips endpoints failing active health checks or ejected after failing live
//! traffic; each request gets a response timeout, retries (idempotent, bodiless requests only,
//! within a budget) and a circuit breaker.
//!
//! [`Upstream::send`] is the only per-request entry point. Per request it takes one short lock,
//! the endpoint's idle-connection list (twice: checkout and return; the circuit breaker's mutex
//! is only touched while the upstream is failing), and allocates the request head, the response
//! fields' offsets and a copy of the headers when the request may be retried.

mod breaker;
mod budget;
mod client;
mod config;
mod endpoint;
mod error;
mod fields;
mod h1;
/// The upstream response reader against hyper's client (tests and the `http1` fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub use h1::differential as h1_differential;
mod health;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, uri::PathAndQuery};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body as _;
use tokio::{task::AbortHandle, time::Instant};

pub use self::client::{NoVerification, UpstreamBody};
pub use self::fields::ResponseFields;
use self::{
    breaker::{Breaker, millis},
    budget::RetryBudget,
    client::{Client, Clients},
    config::EndpointAddr,
    endpoint::{Balancer, Endpoint},
};
pub use self::{
    config::{
        Balance, CircuitBreaker, HealthCheck, Outlier, Retries, StatusRange, UpstreamConfig,
        UpstreamTls,
    },
    error::{UpstreamError, UpstreamErrorKind},
};
use crate::proxy::{Body, headers::Added};

/// Every upstream of one configuration generation. Dropping it stops its health checks; requests
/// still holding an [`Upstream`] finish normally.
pub struct Upstreams {
    pools: BTreeMap<String, Arc<Upstream>>,
    health_tasks: Vec<AbortHandle>,
}

/// One upstream pool.
pub struct Upstream {
    name: Arc<str>,
    endpoints: Box<[Arc<Endpoint>]>,
    balancer: Balancer,
    response_timeout: Duration,
    outlier_failures: u32,
    eject_for_ms: u64,
    max_retries: u32,
    budget: RetryBudget,
    breaker: Breaker,
    /// Origin of the millisecond clock that ejections, the breaker and the budget use (atomics
    /// hold integers, not `Instant`s). Tokio's clock, so paused-time tests see the same time as
    /// the timeouts.
    epoch: Instant,
}

/// How one attempt ended, judged for outlier ejection, the breaker and retries.
struct Verdict {
    /// Counts against the endpoint (connect error, timeout, protocol error, any 5xx).
    endpoint_failed: bool,
    /// Counts against the upstream (the same, but only 502/503/504 among statuses: a 500 is the
    /// application's answer, not a sign that the service is down).
    upstream_failed: bool,
    /// Worth another attempt if the request allows it.
    retryable: bool,
}

impl Upstreams {
    /// Builds every pool and, for pools with health checks, spawns their checkers on the current
    /// tokio runtime. Validates each configuration first.
    pub fn build(configs: &BTreeMap<String, UpstreamConfig>) -> Result<Self, UpstreamError> {
        Self::build_after(configs, None)
    }

    /// [`Upstreams::build`] for a reload: endpoints that were in `previous` (same upstream name,
    /// same endpoint as written) keep what was learned about them, so a reload does not send
    /// traffic to an endpoint known to be down: the active checks' verdict (when the new
    /// configuration checks that upstream too; without checks nothing could mark it healthy
    /// again, so it starts available) and the rest of a passive ejection. Envoy keeps host health
    /// across cluster updates the same way.
    pub fn build_after(
        configs: &BTreeMap<String, UpstreamConfig>,
        previous: Option<&Upstreams>,
    ) -> Result<Self, UpstreamError> {
        // Built incrementally into `Self`, so that on an error the tasks spawned so far are
        // aborted by `Drop`.
        let mut set = Self {
            pools: BTreeMap::new(),
            health_tasks: Vec::new(),
        };
        for (name, config) in configs {
            let upstream = Upstream::build(name, config)?;
            if let Some(old) = previous.and_then(|p| p.pools.get(name)) {
                upstream.inherit(old, config.health.is_some());
            }
            let upstream = Arc::new(upstream);
            if let Some(check) = &config.health {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(UpstreamError::config(
                        name,
                        "health checks need a tokio runtime to run on".into(),
                    ));
                }
                let path: PathAndQuery = check.path.parse().map_err(|_| {
                    UpstreamError::config(
                        name,
                        format!("health.path: `{}` is not a path", check.path),
                    )
                })?;
                for endpoint in upstream.endpoints.iter() {
                    set.health_tasks.push(health::spawn(
                        Arc::clone(&upstream.name),
                        Arc::clone(endpoint),
                        check.clone(),
                        path.clone(),
                    ));
                }
            }
            set.pools.insert(name.clone(), upstream);
        }
        Ok(set)
    }

    /// Every pool with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Upstream>)> {
        self.pools.iter().map(|(n, u)| (n.as_str(), u))
    }

    /// The pool called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.pools.get(name).cloned()
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        // Each task owns its endpoint and a client handle; aborting them is what lets a replaced
        // configuration's state be freed (and its endpoints stop being probed).
        for task in &self.health_tasks {
            task.abort();
        }
    }
}

impl Upstream {
    fn build(name: &str, config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        config
            .validate()
            .map_err(|e| UpstreamError::config(name, e))?;
        let addrs = config
            .endpoints
            .iter()
            .map(|e| EndpointAddr::parse(e).map(|a| (e, a)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| UpstreamError::config(name, e))?;
        let needs_tls = addrs
            .iter()
            .any(|(_, a)| a.scheme == http::uri::Scheme::HTTPS);
        let clients =
            Clients::build(config, needs_tls).map_err(|e| UpstreamError::config(name, e))?;
        let endpoints = addrs
            .into_iter()
            .map(|(label, addr)| {
                let client = if addr.h2c {
                    clients.h2c.clone()
                } else if addr.scheme == http::uri::Scheme::HTTPS {
                    clients.https.clone()
                } else {
                    Client::H1(Arc::new(h1::H1Pool::new(
                        &addr.authority,
                        config.connect_timeout,
                        config.response_timeout,
                        config.idle_pool_timeout,
                        config.max_idle_per_endpoint,
                    )?))
                };
                Ok(Arc::new(Endpoint::new(label, addr, client)))
            })
            .collect::<Result<_, String>>()
            .map_err(|e| UpstreamError::config(name, e))?;
        Ok(Self {
            name: Arc::from(name),
            endpoints,
            balancer: Balancer::new(config.balance),
            response_timeout: config.response_timeout,
            outlier_failures: config.outlier.consecutive_failures,
            eject_for_ms: millis(config.outlier.eject_for),
            max_retries: config.retries.attempts,
            budget: RetryBudget::new(&config.retries),
            breaker: Breaker::new(&config.circuit_breaker),
            epoch: Instant::now(),
        })
    }

    /// Takes over what `old` (the same upstream in the configuration being replaced) knows about
    /// endpoints that are in both: health (only when `checked`) and the time left of ejections.
    fn inherit(&self, old: &Upstream, checked: bool) {
        let (old_now, now) = (old.now_ms(), self.now_ms());
        for endpoint in self.endpoints.iter() {
            let Some(before) = old.endpoints.iter().find(|e| e.label == endpoint.label) else {
                continue;
            };
            if checked {
                endpoint.set_healthy(before.is_healthy());
            }
            let left = before.ejected_until().saturating_sub(old_now);
            if left > 0 {
                endpoint.eject(now.saturating_add(left));
            }
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `req` (origin-form URI, headers already prepared for the upstream) to an endpoint
    /// and returns the response once its headers arrive.
    ///
    /// An endpoint's own error responses come back as responses, not errors: a 503 from the
    /// application reaches the client as the application sent it (after retries, if allowed).
    /// Retries: only GET, HEAD, OPTIONS, PUT, DELETE and TRACE whose body is known to be empty
    /// (`size_hint().exact() == Some(0)`), only after a connect failure, a timeout or a
    /// 502/503/504, at most `retries.attempts` times, on another endpoint when there is one,
    /// within the retry budget, and not while the breaker is open or half-open.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut response = self.send_with(req, &Added::default()).await?;
        UpstreamBody::fields_into_map(&mut response);
        Ok(response)
    }

    /// [`Upstream::send`] with headers the gateway sets (forwarding, request id) beside
    /// `req`'s own. A response read by the gateway's own HTTP/1.1 client comes with an empty
    /// header map and its fields in the body ([`UpstreamBody::take_fields`]): the proxy's
    /// HTTP/1.1 encoder writes them from the bytes they came in.
    pub async fn send_with(
        &self,
        req: Request<Body>,
        added: &Added,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let now = self.now_ms();
        let Some(mut permit) = self.breaker.admit(now) else {
            return Err(self.error(UpstreamErrorKind::CircuitOpen, None, None));
        };
        // A probe gets exactly one attempt: its outcome must say whether the upstream is back.
        let max_retries = if permit.is_probe() {
            0
        } else {
            self.max_retries
        };
        if max_retries > 0 {
            self.budget.deposit(now);
        }
        let (mut parts, mut body) = req.into_parts();
        // Moved out, not cloned: the first attempt reuses the caller's bytes.
        let path = std::mem::take(&mut parts.uri)
            .into_parts()
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // Whether a retry may follow: the head is kept (the client reads it in place, or copies
        // it when it must take it), the body is not (a retried request is known to have none).
        let replayable =
            max_retries > 0 && is_idempotent(&parts.method) && body.size_hint().exact() == Some(0);

        let mut tried = 0u64;
        let mut retries = 0u32;
        let Some(mut index) = self.balancer.pick(&self.endpoints, tried, now) else {
            return Err(self.error(UpstreamErrorKind::NoHealthyEndpoint, None, None));
        };
        let mut path = Some(path);
        loop {
            tried |= 1u64 << index;
            let endpoint = &self.endpoints[index];
            let path = if replayable {
                path.clone()
            } else {
                path.take()
            };
            parts.uri = endpoint.uri(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
            parts.version = endpoint.version();

            let result = self
                .attempt(endpoint, &mut parts, added, body, replayable)
                .await;
            let now = self.now_ms();
            let verdict = judge(&result);
            self.record_endpoint(index, verdict.endpoint_failed, now);
            permit.record(verdict.upstream_failed, now);

            if verdict.retryable
                && replayable
                && retries < max_retries
                && self.breaker.is_closed()
                && let Some(next) = self.balancer.pick(&self.endpoints, tried, now)
                && self.budget.withdraw(now)
            {
                tracing::debug!(
                    upstream = %self.name,
                    endpoint = %endpoint.label,
                    status = result.as_ref().ok().map(|r| r.status().as_u16()),
                    "retrying on another endpoint"
                );
                retries += 1;
                index = next;
                body = empty();
                continue;
            }
            return result;
        }
    }

    /// Each endpoint (as configured) and whether it may get traffic now: healthy by the active
    /// checks and not ejected. For metrics and the admin API; allocates, so not per request.
    pub fn endpoints_health(&self) -> Vec<(String, bool)> {
        let now = self.now_ms();
        self.endpoints
            .iter()
            .map(|e| (e.label.to_string(), e.available(now)))
            .collect()
    }

    /// One attempt on one endpoint, with the response timeout.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        head: &mut http::request::Parts,
        added: &Added,
        body: Body,
        keep_head: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let _in_flight = endpoint.start();
        let sent = endpoint
            .client
            .send(head, added, body, keep_head, self.response_timeout);
        match sent.await {
            Ok(response) => Ok(response),
            Err(e) if e.is_timeout() => {
                Err(self.error(UpstreamErrorKind::Timeout, Some(endpoint), None))
            }
            Err(e) => {
                // Connector failures (TCP connect, its timeout, TLS handshake) are connect errors;
                // anything later happened on an established connection.
                let kind = if e.is_connect() {
                    UpstreamErrorKind::ConnectFailed
                } else {
                    UpstreamErrorKind::Protocol
                };
                Err(self.error(kind, Some(endpoint), Some(Box::new(e))))
            }
        }
    }

    /// Passive outlier detection for one attempt.
    fn record_endpoint(&self, index: usize, failed: bool, now_ms: u64) {
        let endpoint = &self.endpoints[index];
        if !failed {
            endpoint.succeeded();
            return;
        }
        if !endpoint.failed(self.outlier_failures) {
            return;
        }
        // Never eject the last available endpoint: with nothing left every request would fail
        // for `eject_for` even after the endpoint recovers, whereas the breaker fails fast for a
        // shorter time and probes.
        let others_available = self
            .endpoints
            .iter()
            .enumerate()
            .any(|(i, e)| i != index && e.available(now_ms));
        if others_available {
            endpoint.eject(now_ms.saturating_add(self.eject_for_ms));
            tracing::warn!(
                upstream = %self.name,
                endpoint = %endpoint.label,
                eject_for_ms = self.eject_for_ms,
                "endpoint ejected after consecutive failures"
            );
        }
    }

    fn error(
        &self,
        kind: UpstreamErrorKind,
        endpoint: Option<&Endpoint>,
        cause: Option<crate::proxy::BoxError>,
    ) -> UpstreamError {
        UpstreamError::new(kind, &self.name, endpoint.map(|e| &e.label), cause)
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

fn judge(result: &Result<Response<UpstreamBody>, UpstreamError>) -> Verdict {
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let unavailable = matches!(status, 502..=504);
            Verdict {
                endpoint_failed: response.status().is_server_error(),
                upstream_failed: unavailable,
                retryable: unavailable,
            }
        }
        Err(e) => Verdict {
            endpoint_failed: true,
            upstream_failed: true,
            retryable: e.is_retryable(),
        },
    }
}

/// RFC 9110 9.2.2 idempotent methods (CONNECT and POST/PATCH are not): what may be retried, and
/// sent again after a stale keep-alive connection.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy runs `send` inside hyper services, which must be `Send`.
    #[test]
    fn send_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let upstream: Option<&Upstream> = None;
        if let Some(u) = upstream {
            assert_send(&u.send(Request::new(empty())));
        }
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Upstreams>();
        assert_sync::<Upstream>();
        assert_sync::<UpstreamError>();
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
