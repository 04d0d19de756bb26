//! One endpoint of a pool and its live state (requests in flight, active health, passive
//! ejection), and the load balancer that picks among endpoints. Everything here is a plain
//! atomic: picking an endpoint takes no lock and allocates nothing.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed},
};

use http::{
    Version,
    uri::{Authority, PathAndQuery, Scheme, Uri},
};

use super::{
    client::Client,
    config::{Balance, EndpointAddr},
};

/// An endpoint and what is known about it.
pub(super) struct Endpoint {
    /// As configured (`h2c://10.0.0.1:9000`): how errors, logs and the admin API name it.
    pub(super) label: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    version: Version,
    /// The keep-alive client that matches the endpoint's protocol (shared within the upstream).
    pub(super) client: Client,
    /// Requests waiting for response headers, for `least_requests`.
    in_flight: AtomicU32,
    /// The active health checks' verdict. Starts healthy: after a reload the new set must serve
    /// at once instead of waiting `healthy_threshold` intervals with nothing to send to.
    healthy: AtomicBool,
    /// Live-traffic failures in a row, for passive ejection.
    failures: AtomicU32,
    /// Ejected until this time (milliseconds on the upstream's clock); 0 = never ejected.
    ejected_until_ms: AtomicU64,
}

/// Decrements the in-flight count when the attempt ends, however it ends (a cancelled request
/// future included).
pub(super) struct InFlight<'a>(&'a Endpoint);

/// Picks endpoints.
pub(super) struct Balancer {
    policy: Balance,
    /// Round-robin position; also the rotating start of `least_requests` scans, so that ties do
    /// not all go to the first endpoint.
    next: AtomicUsize,
}

impl Endpoint {
    pub(super) fn new(label: &str, addr: EndpointAddr, client: Client) -> Self {
        Self {
            label: Arc::from(label),
            scheme: addr.scheme,
            authority: addr.authority,
            // hyper's HTTP/1 client refuses requests marked HTTP/2; over TLS the version actually
            // spoken is whatever ALPN settles, whatever the request says.
            version: if addr.h2c {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
            client,
            in_flight: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    /// The absolute URI for `path` on this endpoint (scheme and authority are cheap clones of
    /// shared bytes).
    pub(super) fn uri(&self, path: PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        // Scheme, authority and path were each validated already, so the parts always fit
        // together; the fallback only satisfies the type.
        Uri::from_parts(parts).unwrap_or_default()
    }

    pub(super) fn version(&self) -> Version {
        self.version
    }

    /// Whether the endpoint may get traffic now.
    pub(super) fn available(&self, now_ms: u64) -> bool {
        self.healthy.load(Relaxed) && now_ms >= self.ejected_until_ms.load(Relaxed)
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub(super) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }

    pub(super) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }

    /// Counts a live-traffic success (resets the streak).
    pub(super) fn succeeded(&self) {
        // Skip the store when already 0: a write would bounce the cache line between cores on
        // every request.
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// Counts a live-traffic failure; true when the streak reached `threshold` (and restarts).
    pub(super) fn failed(&self, threshold: u32) -> bool {
        let streak = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if streak >= threshold {
            self.failures.store(0, Relaxed);
            return true;
        }
        false
    }

    pub(super) fn eject(&self, until_ms: u64) {
        self.ejected_until_ms.store(until_ms, Relaxed);
    }

    /// Ejected until this time (milliseconds on the upstream's clock); 0 = never ejected.
    pub(super) fn ejected_until(&self) -> u64 {
        self.ejected_until_ms.load(Relaxed)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Balancer {
    pub(super) fn new(policy: Balance) -> Self {
        Self {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// The index of the endpoint for the next attempt: an available endpoint not in `tried`
    /// (bit i = endpoint i), else an available one already tried (a retry on the same endpoint
    /// still beats failing), else none.
    pub(super) fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        tried: u64,
        now_ms: u64,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed) % n;
        let untried = |i: usize| tried & (1u64 << i) == 0;
        match self.policy {
            Balance::RoundRobin => {
                let ring = || (0..n).map(|k| (start + k) % n);
                ring()
                    .find(|&i| untried(i) && endpoints[i].available(now_ms))
                    .or_else(|| ring().find(|&i| endpoints[i].available(now_ms)))
            }
            Balance::LeastRequests => {
                let least = |only_untried: bool| {
                    (0..n)
                        .map(|k| (start + k) % n)
                        .filter(|&i| {
                            (!only_untried || untried(i)) && endpoints[i].available(now_ms)
                        })
                        // `min_by_key` keeps the first minimum, i.e. the one nearest `start`.
                        .min_by_key(|&i| endpoints[i].in_flight.load(Relaxed))
                };
                least(true).or_else(|| least(false))
            }
        }
    }
}
