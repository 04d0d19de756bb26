//! Prometheus metrics (prometheus-client), served at `/metrics` on the admin listener.
//!
//! Request-path metrics are plain atomics behind label families, updated once per request in
//! `proxy::service::handle`. Everything that already has a source of truth elsewhere (the XDP
//! per-CPU counters, the denylist, upstream health, escalations) is read at scrape time by a
//! [`Collector`], so the request path never pays for it and the numbers cannot drift.

use std::{
    fmt::Write as _,
    sync::{Arc, RwLock},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};

/// Latency buckets in seconds: half a millisecond (a rejection answered by the proxy itself)
/// to ten seconds (a slow upstream).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    reason: &'static str,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// The request path's metrics; cheap to clone (every family is an `Arc`).
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    rejections: Family<RejectionLabels, Counter>,
    waf_matches: Family<RuleLabels, Counter>,
    /// The series of requests that matched no route, resolved on the first one.
    no_route: Arc<std::sync::OnceLock<RouteMetrics>>,
}

/// One route's series, looked up once per route (and configuration) instead of per request:
/// the family lookups hashed the route name with SipHash and built its label `String` on every
/// request (~0.8k of a proxied request's ~34k instructions, callgrind).
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    name: String,
    latency: Histogram,
    /// (method, status) -> the request counter of that series; a route answers with a handful.
    requests: Arc<RwLock<Vec<StatusCounter>>>,
}

/// A request counter of one route, by method and status label.
type StatusCounter = (&'static str, u16, Counter);

/// What one finished request contributes.
pub struct RequestRecord<'a> {
    /// The matched route's series (see [`ProxyMetrics::route`]), or `None`.
    pub route: Option<&'a RouteMetrics>,
    pub method: &'a http::Method,
    pub status: u16,
    pub seconds: f64,
    /// The reason code when the gateway answered itself (a rejection or an upstream failure).
    pub code: Option<&'static str>,
    /// The stage that rejected (from the problem's evidence).
    pub stage: Option<&'static str>,
}

impl ProxyMetrics {
    /// The series of the route named `name`, to keep with the route and pass to [`Self::record`].
    pub fn route(&self, name: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: name.to_owned(),
        };
        RouteMetrics {
            latency: self.latency.get_or_create(&labels).clone(),
            name: labels.route,
            requests: Arc::default(),
        }
    }

    /// Records one answered request.
    pub fn record(&self, r: RequestRecord<'_>) {
        let route = match r.route {
            Some(route) => route,
            None => self.no_route.get_or_init(|| self.route(NO_ROUTE)),
        };
        route.latency.observe(r.seconds);
        self.count_route_request(route, method_label(r.method), r.status);
        if let Some(reason) = r.code {
            let stage = r.stage.unwrap_or(match reason {
                "client_blocked" => "defense",
                r if r.starts_with("upstream") => "upstream",
                _ => "proxy",
            });
            self.rejections
                .get_or_create(&RejectionLabels { reason, stage })
                .inc();
        }
    }

    /// Counts a request of the route with (method, status): found under a read lock and
    /// incremented in place, created in the family (the same series a scrape reads) the first
    /// time.
    fn count_route_request(&self, route: &RouteMetrics, method: &'static str, status: u16) {
        let find =
            |v: &[StatusCounter]| v.iter().position(|(m, s, _)| *m == method && *s == status);
        // A poisoned lock only means a panic elsewhere mid-push: the list is still valid.
        {
            let list = route.requests.read().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = find(&list) {
                list[i].2.inc();
                return;
            }
        }
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                route: route.name.clone(),
                method,
                status,
            })
            .clone();
        counter.inc();
        let mut list = route.requests.write().unwrap_or_else(|e| e.into_inner());
        if find(&list).is_none() {
            list.push((method, status, counter));
        }
    }

    /// Counts WAF rule matches (rejections and detect-only findings alike).
    pub fn waf_matches<'a>(&self, rule_ids: impl IntoIterator<Item = &'a String>) {
        for rule in rule_ids {
            self.waf_matches
                .get_or_create(&RuleLabels { rule: rule.clone() })
                .inc();
        }
    }
}

/// Methods outside the standard set share one label: a client must not be able to mint series.
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The registry of one daemon.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    proxy: ProxyMetrics,
    admin_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let proxy = ProxyMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            rejections: Family::default(),
            waf_matches: Family::default(),
            no_route: Arc::default(),
        };
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status",
            proxy.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from the request head to the response head, by route",
            proxy.latency.clone(),
        );
        registry.register(
            "rejections",
            "Requests the gateway answered itself, by reason code and stage (auth failures, \
             rate limits, validation, WAF, limits, routing, upstream failures)",
            proxy.rejections.clone(),
        );
        registry.register(
            "waf_matches",
            "WAF rule matches by rule id, blocking or detect-only",
            proxy.waf_matches.clone(),
        );
        let admin_refused = Counter::default();
        registry.register(
            "admin_refused",
            "Admin API calls on TCP refused for want of a valid bearer token",
            admin_refused.clone(),
        );
        registry.register_collector(Box::new(Escalations));
        registry.register_collector(Box::new(FnCollector(jwt_cache_snapshot)));
        Self {
            registry,
            proxy,
            admin_refused,
        }
    }

    /// Counts an admin API call refused for want of credentials.
    pub fn admin_refused(&self) {
        self.admin_refused.inc();
    }

    /// The handle the proxy records requests with.
    pub fn proxy(&self) -> ProxyMetrics {
        self.proxy.clone()
    }

    /// Adds metrics read at scrape time.
    pub fn register_collector(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// One sample of a metric read at scrape time.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// A metric read at scrape time: name (without the `gateway_` prefix), help, kind, samples.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub samples: Vec<Sample>,
}

/// A collector backed by a function: the function reads its source of truth (maps, pools) and
/// returns what to expose. Errors are logged and the metric left out of that scrape.
pub struct FnCollector<F>(pub F);

impl<F> std::fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCollector")
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn() -> Vec<Snapshot> + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for snap in (self.0)() {
            encode_snapshot(&mut encoder, &snap)?;
        }
        Ok(())
    }
}

fn encode_snapshot(
    encoder: &mut DescriptorEncoder,
    snap: &Snapshot,
) -> Result<(), std::fmt::Error> {
    let kind = if snap.counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    };
    let mut metric = encoder.encode_descriptor(snap.name, snap.help, None, kind)?;
    for s in &snap.samples {
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let family = metric.encode_family(&labels)?;
        if snap.counter {
            ConstCounter::new(s.value).encode(family)?;
        } else {
            ConstGauge::new(s.value).encode(family)?;
        }
    }
    Ok(())
}

/// Escalations of the defense loop, from its process-wide counters.
#[derive(Debug)]
struct Escalations;

impl Collector for Escalations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = crate::defense::escalation_counts()
            .into_iter()
            .map(|((enforcement, outcome), n)| Sample {
                labels: vec![
                    ("enforcement", enforcement.to_owned()),
                    ("outcome", outcome.to_owned()),
                ],
                value: n as f64,
            })
            .collect();
        encode_snapshot(
            &mut encoder,
            &Snapshot {
                name: "defense_escalations",
                help: "Sources crossing the defense threshold, by where the block was enforced \
                       (xdp, l7) and what happened (blocked, dry_run, allowlisted, failed)",
                counter: true,
                samples,
            },
        )
    }
}

/// The XDP program's counters (summed over CPUs) and the denylist size by origin, read from
/// the pinned maps at scrape time through their own handle (a scrape never waits on the
/// defense loop's writer lock).
pub fn xdp_collector(
    maps: crate::xdp::Maps,
    l7: Arc<crate::defense::L7Blocks>,
) -> FnCollector<impl Fn() -> Vec<Snapshot> + Send + Sync + 'static> {
    let maps = std::sync::Mutex::new(maps);
    FnCollector(move || {
        let maps = maps.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        match maps.stats() {
            Ok(counters) => {
                let rows: Vec<_> = counters
                    .iter()
                    .zip(gateway_common::stat::NAMES)
                    .map(|(c, (verdict, reason))| (verdict, reason, c))
                    .collect();
                let by = |f: fn(&gateway_common::Counter) -> u64| {
                    rows.iter()
                        .map(|(verdict, reason, c)| Sample {
                            labels: vec![
                                ("verdict", (*verdict).to_owned()),
                                ("reason", (*reason).to_owned()),
                            ],
                            value: f(c) as f64,
                        })
                        .collect()
                };
                out.push(Snapshot {
                    name: "xdp_packets",
                    help: "Packets the XDP program judged, by verdict and reason (all CPUs)",
                    counter: true,
                    samples: by(|c| c.packets),
                });
                out.push(Snapshot {
                    name: "xdp_bytes",
                    help: "Bytes the XDP program judged, by verdict and reason (all CPUs)",
                    counter: true,
                    samples: by(|c| c.bytes),
                });
            }
            Err(e) => tracing::warn!(error = %e, "metrics: reading the XDP counters"),
        }
        let mut by_origin: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for e in maps.denied() {
            *by_origin
                .entry(gateway_common::origin::name(e.value.origin))
                .or_default() += 1;
        }
        out.push(denylist_snapshot(by_origin, &l7));
        out
    })
}

/// Verified-JWT cache lookups per issuer (`auth.jwt.<name>.cache`), from process-wide counters.
fn jwt_cache_snapshot() -> Vec<Snapshot> {
    let samples = crate::auth::jwt_cache_lookups()
        .into_iter()
        .flat_map(|(issuer, hits, misses)| {
            [("hit", hits), ("miss", misses)].map(|(result, n)| Sample {
                labels: vec![("issuer", issuer.clone()), ("result", result.to_owned())],
                value: n as f64,
            })
        })
        .collect();
    vec![Snapshot {
        name: "jwt_cache_lookups",
        help: "Verified-JWT cache lookups by issuer and result (hit: signature check skipped)",
        counter: true,
        samples,
    }]
}

/// The denylist size when there is no kernel: only the proxy's own blocks.
pub fn l7_collector(
    l7: Arc<crate::defense::L7Blocks>,
) -> FnCollector<impl Fn() -> Vec<Snapshot> + Send + Sync + 'static> {
    FnCollector(move || vec![denylist_snapshot(Default::default(), &l7)])
}

fn denylist_snapshot(
    mut by_origin: std::collections::BTreeMap<&'static str, u64>,
    l7: &crate::defense::L7Blocks,
) -> Snapshot {
    by_origin.insert("l7-proxy", l7.list().len() as u64);
    Snapshot {
        name: "denylist_entries",
        help: "Deny entries by origin (kernel maps; `l7-proxy` = enforced in the proxy)",
        counter: false,
        samples: by_origin
            .into_iter()
            .map(|(origin, n)| Sample {
                labels: vec![("origin", origin.to_owned())],
                value: n as f64,
            })
            .collect(),
    }
}

/// Upstream endpoint health from a function listing `(upstream, endpoint, up)`.
pub fn upstream_collector(
    health: impl Fn() -> Vec<(String, String, bool)> + Send + Sync + 'static,
) -> FnCollector<impl Fn() -> Vec<Snapshot> + Send + Sync + 'static> {
    FnCollector(move || {
        vec![Snapshot {
            name: "upstream_endpoint_up",
            help: "1 when the endpoint may get traffic (healthy and not ejected), else 0",
            counter: false,
            samples: health()
                .into_iter()
                .map(|(upstream, endpoint, up)| Sample {
                    labels: vec![("upstream", upstream), ("endpoint", endpoint)],
                    value: if up { 1.0 } else { 0.0 },
                })
                .collect(),
        }]
    })
}

/// Reads one sample's value from a text exposition: for tests and `gateway top`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let mut want = String::new();
            let all = labels.iter().all(|(k, v)| {
                want.clear();
                let _ = write!(want, "{k}=\"{v}\"");
                rest.split(',').any(|p| p == want)
            });
            all.then(|| value.parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_rejections_are_counted_by_their_labels() {
        let m = Metrics::new();
        let p = m.proxy();
        let orders = p.route("orders");
        for _ in 0..3 {
            p.record(RequestRecord {
                route: Some(&orders),
                method: &http::Method::GET,
                status: 200,
                seconds: 0.001,
                code: None,
                stage: None,
            });
        }
        // A reloaded configuration's route resolves the same series again.
        let reloaded = p.route("orders");
        for status in [200, 503] {
            p.record(RequestRecord {
                route: Some(&reloaded),
                method: &http::Method::GET,
                status,
                seconds: 0.001,
                code: None,
                stage: None,
            });
        }
        p.record(RequestRecord {
            route: None,
            method: &http::Method::from_bytes(b"BREW").expect("method"),
            status: 404,
            seconds: 0.0001,
            code: Some("route_not_found"),
            stage: None,
        });
        p.waf_matches(&["942100".to_owned(), "942100".to_owned()]);
        let text = m.encode().expect("encode");
        let get = |n, l: &[(&str, &str)]| sample(&text, n, l);
        assert_eq!(
            get(
                "gateway_http_requests_total",
                &[("route", "orders"), ("method", "GET"), ("status", "200")]
            ),
            Some(4.0),
            "{text}"
        );
        assert_eq!(
            get(
                "gateway_http_requests_total",
                &[("route", "orders"), ("method", "GET"), ("status", "503")]
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            get(
                "gateway_http_requests_total",
                &[("route", "none"), ("method", "other"), ("status", "404")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "gateway_rejections_total",
                &[("reason", "route_not_found"), ("stage", "proxy")]
            ),
            Some(1.0)
        );
        assert_eq!(
            get(
                "gateway_http_request_duration_seconds_count",
                &[("route", "orders")]
            ),
            Some(5.0)
        );
        assert_eq!(
            get("gateway_waf_matches_total", &[("rule", "942100")]),
            Some(2.0)
        );
    }

    /// The dashboard in docs/ must only query metrics the gateway exports.
    #[test]
    fn the_grafana_dashboard_queries_exported_metrics_only() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/gateway.json");
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
        let mut m = Metrics::new();
        // Families print once they have a series.
        m.proxy().record(RequestRecord {
            route: None,
            method: &http::Method::GET,
            status: 403,
            seconds: 0.0,
            code: Some("x"),
            stage: None,
        });
        m.proxy().waf_matches(&["1".to_owned()]);
        m.register_collector(upstream_collector(Vec::new));
        m.register_collector(l7_collector(Arc::default()));
        let exported = m.encode().expect("encode");
        // Read from the maps, so absent without XDP here.
        let kernel = ["gateway_xdp_packets", "gateway_xdp_bytes"];
        let mut queried = 0;
        for panel in dash["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("gateway_") {
                        continue;
                    }
                    queried += 1;
                    let base = ["_bucket", "_count", "_sum", "_total"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        kernel.contains(&base) || exported.contains(&format!("# TYPE {base} ")),
                        "the dashboard queries `{word}`, which is not exported"
                    );
                }
            }
        }
        assert!(queried >= 10, "{queried}");
    }

    #[test]
    fn scrape_time_collectors_show_up_with_their_labels() {
        let mut m = Metrics::new();
        m.register_collector(upstream_collector(|| {
            vec![
                ("app".into(), "http://10.0.0.1:80".into(), true),
                ("app".into(), "http://10.0.0.2:80".into(), false),
            ]
        }));
        let l7 = Arc::new(crate::defense::L7Blocks::default());
        l7.insert(
            "192.0.2.1/32".parse().expect("net"),
            std::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        m.register_collector(l7_collector(l7));
        let text = m.encode().expect("encode");
        assert_eq!(
            sample(
                &text,
                "gateway_upstream_endpoint_up",
                &[("endpoint", "http://10.0.0.2:80")]
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "gateway_denylist_entries", &[("origin", "l7-proxy")]),
            Some(1.0)
        );
    }
}
