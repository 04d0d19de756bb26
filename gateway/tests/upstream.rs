//! Upstream pools against real hyper backends on loopback (port 0): load balancing, active
//! health checks, passive ejection, retries and their budget, timeouts, the circuit breaker,
//! h2c and TLS endpoints, and health-check tasks ending with their configuration.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use bytes::Bytes;
use gateway::proxy::{
    Body,
    upstream::{Upstream, UpstreamConfig, UpstreamError, UpstreamErrorKind, Upstreams},
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    net::TcpListener,
    task::JoinSet,
    time::{Instant, sleep},
};

const WAIT: Duration = Duration::from_secs(5);

/// How a backend speaks.
#[derive(Clone)]
enum Proto {
    Http1,
    /// HTTP/2 only, cleartext: prior knowledge or nothing.
    H2c,
    /// TLS, then whatever ALPN settled.
    Tls(tokio_rustls::TlsAcceptor),
}

/// What a backend counts and how it answers (changeable while it runs).
struct State {
    /// Requests other than health checks.
    hits: AtomicUsize,
    health_hits: AtomicUsize,
    connections: AtomicUsize,
    status: AtomicU16,
    health_status: AtomicU16,
    delay_ms: AtomicU64,
}

/// A backend server on 127.0.0.1:0; stops (connections included) when dropped.
struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(proto: Proto) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            status: AtomicU16::new(200),
            health_status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            // Owned by the accept loop, so aborting it aborts every connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.connections.fetch_add(1, Relaxed);
                let state = Arc::clone(&shared);
                let proto = proto.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&state), req));
                    match proto {
                        Proto::Http1 => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Proto::H2c => {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Proto::Tls(acceptor) => {
                            let Ok(tls) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await;
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, state, task }
    }

    async fn http() -> Self {
        Self::start(Proto::Http1).await
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Relaxed)
    }

    fn health_hits(&self) -> usize {
        self.state.health_hits.load(Relaxed)
    }

    fn set_status(&self, status: u16) {
        self.state.status.store(status, Relaxed);
    }

    fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Relaxed);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `/healthz` answers `health_status`; `/slow...` waits 1.5 s; anything else waits `delay_ms`
/// and answers `status`. Every answer says which HTTP version it came over.
async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let version = format!("{:?}", req.version());
    let path = req.uri().path().to_owned();
    let _ = req.into_body().collect().await;
    let status = if path == "/healthz" {
        state.health_hits.fetch_add(1, Relaxed);
        state.health_status.load(Relaxed)
    } else {
        state.hits.fetch_add(1, Relaxed);
        let delay = if path.starts_with("/slow") {
            1500
        } else {
            state.delay_ms.load(Relaxed)
        };
        if delay > 0 {
            sleep(Duration::from_millis(delay)).await;
        }
        state.status.load(Relaxed)
    };
    let response = Response::builder()
        .status(status)
        .header("x-version", version)
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("valid response");
    Ok(response)
}

/// `http://127.0.0.1:<port>` where nothing listens: bound, then closed.
async fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

/// One upstream called `u` with `endpoints` and the YAML lines in `extra` (indented 2).
fn upstreams(endpoints: &[String], extra: &str) -> Upstreams {
    try_upstreams(endpoints, extra).expect("upstreams build")
}

fn try_upstreams(endpoints: &[String], extra: &str) -> Result<Upstreams, UpstreamError> {
    Upstreams::build(&configs(endpoints, extra))
}

fn configs(endpoints: &[String], extra: &str) -> BTreeMap<String, UpstreamConfig> {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let yaml = format!("u:\n  endpoints: [{}]\n{extra}", list.join(", "));
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}"))
}

fn pool(set: &Upstreams) -> Arc<Upstream> {
    set.get("u").expect("upstream u")
}

fn request(method: Method, path: &str, body: Option<&'static str>) -> Request<Body> {
    let body = match body {
        Some(text) => Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
        None => Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    };
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().expect("origin-form path");
    req
}

/// Sends and reads the whole response (so the connection can be reused); the status and the
/// HTTP version the backend saw.
async fn send(
    upstream: &Upstream,
    req: Request<Body>,
) -> Result<(StatusCode, String), UpstreamError> {
    let response = upstream.send(req).await?;
    let status = response.status();
    let version = response
        .headers()
        .get("x-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    response.into_body().collect().await.expect("response body");
    Ok((status, version))
}

async fn get(upstream: &Upstream, path: &str) -> Result<StatusCode, UpstreamError> {
    send(upstream, request(Method::GET, path, None))
        .await
        .map(|(status, _)| status)
}

/// Polls `condition` every 10 ms until it holds; panics naming `what` after `WAIT`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

fn health_of(upstream: &Upstream, endpoint: &str) -> bool {
    upstream
        .endpoints_health()
        .into_iter()
        .find(|(e, _)| e == endpoint)
        .map(|(_, healthy)| healthy)
        .expect("endpoint listed")
}

/// Breaker and outlier detection out of the way, for tests about something else.
const LENIENT: &str = "  circuit_breaker: { consecutive_failures: 1000 }\n  outlier: { consecutive_failures: 1000 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_and_reuses_connections() {
    let backends = [
        Backend::http().await,
        Backend::http().await,
        Backend::http().await,
    ];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let set = upstreams(&urls, "");
    let u = pool(&set);
    for _ in 0..30 {
        assert_eq!(get(&u, "/").await.expect("request"), StatusCode::OK);
    }
    for b in &backends {
        assert!((9..=11).contains(&b.hits()), "uneven spread: {}", b.hits());
        // Keep-alive: sequential requests reuse the pooled connection.
        let connections = b.state.connections.load(Relaxed);
        assert!(
            connections < 5,
            "{connections} connections for {} requests",
            b.hits()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_prefers_the_idle_endpoint() {
    let backends = [Backend::http().await, Backend::http().await];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let set = upstreams(
        &urls,
        "  balance: least_requests\n  retries: { attempts: 0 }\n",
    );
    let u = pool(&set);
    let slow = tokio::spawn({
        let u = Arc::clone(&u);
        async move { get(&u, "/slow").await }
    });
    eventually("the slow request to arrive", || {
        backends.iter().any(|b| b.hits() == 1)
    })
    .await;
    let (busy, idle) = if backends[0].hits() == 1 {
        (0, 1)
    } else {
        (1, 0)
    };
    for _ in 0..10 {
        assert_eq!(get(&u, "/fast").await.expect("request"), StatusCode::OK);
    }
    assert_eq!(
        backends[idle].hits(),
        10,
        "every fast request went to the idle endpoint"
    );
    assert_eq!(backends[busy].hits(), 1, "none joined the slow one");
    assert_eq!(
        slow.await.expect("task").expect("slow request"),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_check_ejects_and_restores() {
    let backends = [
        Backend::http().await,
        Backend::http().await,
        Backend::http().await,
    ];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let health = "  health: { path: /healthz, interval: 100ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 2 }\n";
    let set = upstreams(&urls, health);
    let u = pool(&set);
    let sick = &backends[2];
    sick.set_health(500);
    let start = Instant::now();
    eventually("the failing endpoint to be ejected", || {
        !health_of(&u, &urls[2])
    })
    .await;
    // interval * threshold plus up to one interval of start-up jitter, with slack for CI.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );

    let before = sick.hits();
    for _ in 0..30 {
        assert_eq!(get(&u, "/").await.expect("request"), StatusCode::OK);
    }
    assert_eq!(sick.hits(), before, "an unhealthy endpoint gets no traffic");
    assert_eq!(backends[0].hits() + backends[1].hits(), 30);

    sick.set_health(200);
    eventually("the recovered endpoint to return", || {
        health_of(&u, &urls[2])
    })
    .await;
    for _ in 0..30 {
        get(&u, "/").await.expect("request");
    }
    assert!(
        sick.hits() > before,
        "a recovered endpoint gets traffic again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_sending_nothing_to_an_endpoint_known_to_be_down() {
    let backends = [Backend::http().await, Backend::http().await];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    // A long interval: after the reload, only what was carried over can keep the endpoint out.
    let health = "  health: { path: /healthz, interval: 300ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }\n";
    let set = upstreams(&urls, health);
    let sick = &backends[1];
    sick.set_health(500);
    eventually("the failing endpoint to be marked down", || {
        !health_of(&pool(&set), &urls[1])
    })
    .await;

    // The same file applied again, as `gateway reload` does.
    let next = Upstreams::build_after(&configs(&urls, health), Some(&set)).expect("reload");
    drop(set);
    let u = pool(&next);
    assert!(
        !health_of(&u, &urls[1]),
        "still down right after the reload"
    );
    let before = sick.hits();
    for _ in 0..20 {
        // POST: never retried, so a request sent to the sick endpoint would show.
        let (status, _) = send(&u, request(Method::POST, "/", Some("{}")))
            .await
            .expect("request");
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        sick.hits(),
        before,
        "no traffic to the endpoint known to be down"
    );

    // The new set's own checks take over: it comes back once it passes.
    sick.set_health(200);
    eventually("the recovered endpoint to return", || {
        health_of(&u, &urls[1])
    })
    .await;

    // A configuration without health checks has nothing that could mark it up again: it
    // starts available, whatever was known.
    sick.set_health(500);
    eventually("the endpoint to be marked down again", || {
        !health_of(&u, &urls[1])
    })
    .await;
    let unchecked = Upstreams::build_after(&configs(&urls, ""), Some(&next)).expect("reload");
    assert!(health_of(&pool(&unchecked), &urls[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_endpoint_is_503_without_traffic() {
    let backend = Backend::http().await;
    let health = "  health: { path: /healthz, interval: 50ms, unhealthy_threshold: 1 }\n";
    let set = upstreams(&[backend.url()], health);
    let u = pool(&set);
    backend.set_health(503);
    eventually("the endpoint to be unhealthy", || {
        !health_of(&u, &backend.url())
    })
    .await;
    let err = get(&u, "/").await.expect_err("nothing to send to");
    assert_eq!(err.kind(), UpstreamErrorKind::NoHealthyEndpoint);
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.reason(), "upstream_unavailable");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_endpoint_is_ejected_while_retries_hide_it() {
    let backends = [Backend::http().await, Backend::http().await];
    let closed = closed_endpoint().await;
    let urls = vec![backends[0].url(), backends[1].url(), closed.clone()];
    let set = upstreams(
        &urls,
        "  outlier: { consecutive_failures: 2, eject_for: 30s }\n  circuit_breaker: { consecutive_failures: 1000 }\n",
    );
    let u = pool(&set);
    for i in 0..30 {
        let status = get(&u, "/")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, StatusCode::OK);
    }
    assert!(!health_of(&u, &closed), "the refusing endpoint is ejected");
    assert!(health_of(&u, &urls[0]) && health_of(&u, &urls[1]));
    assert_eq!(
        backends[0].hits() + backends[1].hits(),
        30,
        "every request served once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_available_endpoint_is_never_ejected() {
    let closed = closed_endpoint().await;
    let set = upstreams(
        std::slice::from_ref(&closed),
        "  outlier: { consecutive_failures: 1 }\n  circuit_breaker: { consecutive_failures: 1000 }\n",
    );
    let u = pool(&set);
    for _ in 0..5 {
        let err = get(&u, "/").await.expect_err("nothing listens");
        // Each request still tries the network: the breaker, not ejection, owns "all down".
        assert_eq!(err.reason(), "upstream_connect_failed");
        assert!(err.is_retryable());
    }
    assert!(health_of(&u, &closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_retried_on_connect_failure_and_503() {
    // Connect failure: every request that starts on the closed port ends on the live one.
    let good = Backend::http().await;
    let set = upstreams(&[closed_endpoint().await, good.url()], LENIENT);
    let u = pool(&set);
    for _ in 0..10 {
        assert_eq!(get(&u, "/").await.expect("retried"), StatusCode::OK);
    }
    assert_eq!(good.hits(), 10);

    // 503 from one endpoint: retried on the other.
    let (unavailable, good) = (Backend::http().await, Backend::http().await);
    unavailable.set_status(503);
    let set = upstreams(&[unavailable.url(), good.url()], LENIENT);
    let u = pool(&set);
    for _ in 0..10 {
        assert_eq!(get(&u, "/").await.expect("request"), StatusCode::OK);
    }
    assert!(unavailable.hits() >= 1, "the 503 endpoint was tried");
    assert_eq!(good.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_a_body_or_unsafe_methods_are_not_retried() {
    // A 503 answer to a POST or a PUT with a body reaches the client as is.
    let (unavailable, good) = (Backend::http().await, Backend::http().await);
    unavailable.set_status(503);
    let set = upstreams(&[unavailable.url(), good.url()], LENIENT);
    let u = pool(&set);
    for method in [Method::POST, Method::PUT] {
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let (status, _) = send(&u, request(method.clone(), "/", Some("payload")))
                .await
                .expect("answer");
            statuses.push(status);
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE],
            "{method}"
        );
    }
    assert_eq!(
        (unavailable.hits(), good.hits()),
        (2, 2),
        "one attempt per request"
    );

    // A POST that cannot connect fails with 502; even an empty POST is not retried.
    let good = Backend::http().await;
    let set = upstreams(&[closed_endpoint().await, good.url()], LENIENT);
    let u = pool(&set);
    let mut failures = Vec::new();
    for body in [Some("payload"), Some("payload"), None, None] {
        if let Err(e) = send(&u, request(Method::POST, "/", body)).await {
            failures.push(e);
        }
    }
    assert_eq!(
        failures.len(),
        2,
        "round robin sent half to the closed port, none retried"
    );
    for e in &failures {
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(e.reason(), "upstream_connect_failed");
        assert_eq!(e.upstream(), "u");
        assert!(
            e.endpoint()
                .is_some_and(|ep| ep.starts_with("http://127.0.0.1:"))
        );
    }
    assert_eq!(good.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_a_burst_of_failures() {
    async fn burst(u: &Arc<Upstream>, n: usize) {
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let u = Arc::clone(u);
            tasks.spawn(async move { get(&u, "/").await });
        }
        while let Some(result) = tasks.join_next().await {
            assert_eq!(
                result.expect("task").expect("answer"),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }

    // 20% of 20 requests: at most 4 retries, with no per-second reserve.
    let failing = Backend::http().await;
    failing.set_status(503);
    let extra =
        format!("{LENIENT}  retries: {{ attempts: 2, budget_ratio: 0.2, min_per_second: 0 }}\n");
    let set = upstreams(&[failing.url()], &extra);
    burst(&pool(&set), 20).await;
    let hits = failing.hits();
    assert!(
        (20..=24).contains(&hits),
        "{hits} hits: 20 requests + at most 4 retries"
    );

    // The same burst with a reserve that covers it: every request is tried three times.
    let failing = Backend::http().await;
    failing.set_status(503);
    let extra =
        format!("{LENIENT}  retries: {{ attempts: 2, budget_ratio: 0.2, min_per_second: 100 }}\n");
    let set = upstreams(&[failing.url()], &extra);
    burst(&pool(&set), 20).await;
    assert_eq!(failing.hits(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoint_times_out_with_504() {
    let slow = Backend::http().await;
    slow.state.delay_ms.store(3000, Relaxed);
    let set = upstreams(
        &[slow.url()],
        "  response_timeout: 200ms\n  retries: { attempts: 0 }\n",
    );
    let u = pool(&set);
    let start = Instant::now();
    let err = get(&u, "/").await.expect_err("too slow");
    let took = start.elapsed();
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(err.reason(), "upstream_timeout");
    assert!(err.is_retryable());
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    // On a kept-alive connection (whose timer stays armed between requests): the timeout
    // counts from each request's start, not from the previous one's.
    slow.state.delay_ms.store(0, Relaxed);
    get(&u, "/").await.expect("fast");
    tokio::time::sleep(Duration::from_millis(120)).await;
    get(&u, "/")
        .await
        .expect("fast again, on the same connection");
    slow.state.delay_ms.store(3000, Relaxed);
    let start = Instant::now();
    let err = get(&u, "/").await.expect_err("too slow");
    let took = start.elapsed();
    assert_eq!(err.reason(), "upstream_timeout");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_fails_fast_then_probes_closed() {
    let backend = Backend::http().await;
    backend.set_status(503);
    let set = upstreams(
        &[backend.url()],
        "  circuit_breaker: { consecutive_failures: 3, open_for: 300ms }\n  retries: { attempts: 0 }\n  outlier: { consecutive_failures: 1000 }\n",
    );
    let u = pool(&set);
    for _ in 0..3 {
        assert_eq!(
            get(&u, "/").await.expect("answer"),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    for _ in 0..10 {
        let start = Instant::now();
        let err = get(&u, "/").await.expect_err("open");
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "fail fast: {:?}",
            start.elapsed()
        );
        assert_eq!(err.kind(), UpstreamErrorKind::CircuitOpen);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.reason(), "upstream_circuit_open");
    }
    assert_eq!(
        backend.hits(),
        3,
        "an open breaker does not touch the network"
    );

    // Still failing after open_for: the probe fails and the breaker opens again.
    sleep(Duration::from_millis(350)).await;
    assert_eq!(
        get(&u, "/").await.expect("probe"),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(backend.hits(), 4);
    assert_eq!(
        get(&u, "/").await.expect_err("open again").reason(),
        "upstream_circuit_open"
    );

    // Recovered: the next probe closes it.
    backend.set_status(200);
    sleep(Duration::from_millis(350)).await;
    for _ in 0..5 {
        assert_eq!(get(&u, "/").await.expect("closed"), StatusCode::OK);
    }
    assert_eq!(backend.hits(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_endpoint_speaks_http2_with_prior_knowledge() {
    let backend = Backend::start(Proto::H2c).await;
    let set = upstreams(&[format!("h2c://{}", backend.addr)], "");
    let u = pool(&set);
    for _ in 0..5 {
        let (status, version) = send(&u, request(Method::GET, "/", None))
            .await
            .expect("h2c");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version, "HTTP/2.0");
    }
    assert_eq!(
        backend.state.connections.load(Relaxed),
        1,
        "one multiplexed connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_negotiates_h2_and_checks_the_certificate() {
    let pki = TestPki::new();
    let backend = Backend::start(Proto::Tls(pki.acceptor())).await;
    let url = format!("https://{}", backend.addr);
    let ca = pki.ca_path.display().to_string();

    let set = upstreams(
        std::slice::from_ref(&url),
        &format!("  tls: {{ ca: \"{ca}\", server_name: localhost }}\n"),
    );
    let (status, version) = send(&pool(&set), request(Method::GET, "/", None))
        .await
        .expect("https");
    assert_eq!(
        (status, version.as_str()),
        (StatusCode::OK, "HTTP/2.0"),
        "ALPN chose h2"
    );

    // The certificate does not name 127.0.0.1: without the server_name override it is refused.
    let set = upstreams(
        std::slice::from_ref(&url),
        &format!("  tls: {{ ca: \"{ca}\" }}\n  retries: {{ attempts: 0 }}\n"),
    );
    let err = get(&pool(&set), "/").await.expect_err("name mismatch");
    assert_eq!(err.reason(), "upstream_connect_failed");
    assert!(err.to_string().contains("certificate"), "{err}");

    // verify: false accepts it anyway (test rigs).
    let set = upstreams(&[url], "  tls: { verify: false }\n");
    assert_eq!(
        get(&pool(&set), "/").await.expect("unverified"),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_requiring_a_client_certificate_gets_the_configured_one() {
    let pki = TestPki::requiring_client_certs();
    let backend = Backend::start(Proto::Tls(pki.acceptor())).await;
    let url = format!("https://{}", backend.addr);
    let ca = pki.ca_path.display().to_string();
    let (cert, key) = pki.client.as_ref().expect("client identity");

    let set = upstreams(
        std::slice::from_ref(&url),
        &format!(
            "  tls: {{ ca: \"{ca}\", server_name: localhost, client_cert: \"{}\", client_key: \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    );
    assert_eq!(
        get(&pool(&set), "/").await.expect("mTLS to the upstream"),
        StatusCode::OK
    );

    // Without a certificate the endpoint refuses the gateway.
    let set = upstreams(
        &[url],
        &format!(
            "  tls: {{ ca: \"{ca}\", server_name: localhost }}\n  retries: {{ attempts: 0 }}\n"
        ),
    );
    get(&pool(&set), "/")
        .await
        .expect_err("refused without a client certificate");

    // A key file that is not a key: a build error naming the field, not a failing request.
    let err = try_upstreams(
        &["https://127.0.0.1:1".into()],
        &format!(
            "  tls: {{ client_cert: \"{}\", client_key: \"{}\" }}\n",
            cert.display(),
            pki.ca_path.display()
        ),
    )
    .err()
    .expect("bad key file");
    assert!(err.to_string().contains("tls.client_key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_a_build_error() {
    let err = try_upstreams(
        &["https://127.0.0.1:1".into()],
        "  tls: { ca: /nonexistent/ca.pem }\n",
    )
    .err()
    .expect("missing CA file");
    assert_eq!(err.kind(), UpstreamErrorKind::Config);
    assert!(err.to_string().contains("tls.ca"), "{err}");
    let err = try_upstreams(&["ftp://127.0.0.1:1".into()], "")
        .err()
        .expect("bad scheme");
    assert!(err.to_string().contains("endpoints[0]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_upstreams_stops_health_checks() {
    let backend = Backend::http().await;
    let set = upstreams(
        &[backend.url()],
        "  health: { path: /healthz, interval: 50ms }\n",
    );
    eventually("health checks to run", || backend.health_hits() >= 3).await;
    drop(set);
    // A check already in flight may still land.
    sleep(Duration::from_millis(100)).await;
    let after_drop = backend.health_hits();
    sleep(Duration::from_millis(400)).await;
    assert_eq!(
        backend.health_hits(),
        after_drop,
        "no checks after the set is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reloads_leave_no_tasks_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let endpoints = [closed_endpoint().await, closed_endpoint().await];
    let baseline = metrics.num_alive_tasks();
    for _ in 0..1000 {
        let set = upstreams(&endpoints, "  health: { path: /healthz, interval: 50ms }\n");
        let weak = Arc::downgrade(&pool(&set));
        drop(set);
        assert!(weak.upgrade().is_none(), "the pool is freed with its set");
    }
    eventually("aborted health-check tasks to finish", || {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
}

/// A CA and a `localhost` server certificate it signed; the CA is written to a temporary file
/// removed on drop.
struct TestPki {
    ca_path: PathBuf,
    server: rustls::ServerConfig,
    /// Certificate and key files of a client the server accepts, when it requires one.
    client: Option<(PathBuf, PathBuf)>,
}

impl TestPki {
    fn new() -> Self {
        Self::build(false)
    }

    /// The same, with a server that requires a client certificate signed by the CA; such a
    /// certificate and its key are written next to the CA.
    fn requiring_client_certs() -> Self {
        Self::build(true)
    }

    fn build(require_client_certs: bool) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf certificate");

        let ca_path = std::env::temp_dir().join(format!(
            "gateway-upstream-test-ca-{}-{}.pem",
            std::process::id(),
            ca_key
                .public_key_raw()
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        std::fs::write(&ca_path, ca.pem()).expect("write CA");

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let (builder, client) = if require_client_certs {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).expect("CA root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            let client_key = KeyPair::generate().expect("client key");
            let mut params =
                CertificateParams::new(vec!["gateway.internal".to_owned()]).expect("client params");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let client_cert = params
                .signed_by(&client_key, &ca, &ca_key)
                .expect("client certificate");
            let cert_path = ca_path.with_extension("client.pem");
            let key_path = ca_path.with_extension("client-key.pem");
            std::fs::write(&cert_path, client_cert.pem()).expect("write client cert");
            std::fs::write(&key_path, client_key.serialize_pem()).expect("write client key");
            (
                builder.with_client_cert_verifier(verifier),
                Some((cert_path, key_path)),
            )
        } else {
            (builder.with_no_client_auth(), None)
        };
        let mut server = builder
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server certificate");
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            ca_path,
            server,
            client,
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::new(self.server.clone()))
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_path);
        if let Some((cert, key)) = &self.client {
            let _ = std::fs::remove_file(cert);
            let _ = std::fs::remove_file(key);
        }
    }
}
