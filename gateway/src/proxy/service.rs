//! The request path, read top to bottom: one function, one comment per stage saying why it sits
//! where it does. Later stages (rate limits, authentication, authorisation, validation, WAF) plug
//! in between routing and the upstream call.

use std::{
    borrow::Cow,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming, SizeHint};

use super::{
    Body, BoxError,
    access_log::AccessLog,
    headers::{self, Added, X_REQUEST_ID},
    identity::TrustedProxies,
    normalize,
    problem::Problem,
    router::{Found, Router},
    stage::{Finding, RequestContext},
    upstream::Upstreams,
};
use crate::{
    config::HttpLimits,
    defense::{L7Blocks, ViolationSink},
    telemetry::events::{EventSink, RequestInfo},
    tls::TlsInfo,
};

/// What one configuration generation serves with; swapped whole on reload, so a request sees
/// one consistent generation from start to end.
pub struct Runtime {
    pub router: Router,
    pub upstreams: Upstreams,
    pub limits: HttpLimits,
    pub trusted: TrustedProxies,
    /// Rate limits and quotas; their state outlives the generation (see `ratelimit::Limiter`).
    pub ratelimit: crate::ratelimit::RateLimits,
    /// Bot signals; `None` without a `bot` section.
    pub bot: Option<crate::bot::Detector>,
    /// Identity headers to strip; the per-route requirements live on the routes.
    pub auth: crate::auth::Auth,
    /// The WAF of this generation (rules compiled once); `None` without a `waf` section.
    pub waf: Option<Arc<crate::waf::Waf>>,
}

/// Shared by every connection of every listener.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub access_log: AccessLog,
    /// Sources the defense loop blocked at L7.
    pub blocked: Arc<L7Blocks>,
    /// Where client faults are reported as evidence; `None` without a `defense` section.
    pub violations: Option<ViolationSink>,
    /// Security events; `None` without `telemetry.events`.
    pub events: Option<EventSink>,
    /// Prometheus request metrics; `None` when nobody scrapes them (tests).
    pub metrics: Option<crate::telemetry::metrics::ProxyMetrics>,
}

/// What is known about a connection before its first request.
pub struct Connection {
    pub listener: Arc<str>,
    /// The client's transport address (from PROXY protocol when the listener uses it).
    pub peer: SocketAddr,
    /// `peer`'s address as a header value (forwarding headers), made once per connection.
    pub peer_value: HeaderValue,
    /// `peer` as `ip:port` (access log), made on first use.
    pub peer_text: std::sync::OnceLock<Box<str>>,
    pub tls: Option<TlsInfo>,
    pub redirect_https_port: Option<u16>,
}

/// What the access log and the response need from a finished request.
#[derive(Default)]
struct Outcome<'r> {
    /// The matched route (of the configuration the request started with).
    route: Option<&'r super::router::Route>,
    code: Option<&'static str>,
    /// The stage that rejected, from the problem's evidence (metrics).
    stage: Option<&'static str>,
    /// WAF rule ids of a WAF rejection (metrics).
    waf_rules: Vec<String>,
    /// What stages noticed without rejecting.
    findings: Vec<Finding>,
}

/// Serves `req` for hyper: the response with every header in its map.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    req: Request<ClientBody>,
) -> Result<Response<Body>, Infallible> {
    let (mut resp, added) = respond(shared, conn, req).await;
    added.insert_into(resp.headers_mut());
    Ok(resp)
}

/// Serves `req`: the response, and the headers the gateway adds to it (request id, security
/// headers), which the gateway's own HTTP/1 encoder writes without inserting them.
pub async fn respond(
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    req: Request<ClientBody>,
) -> (Response<Body>, Added) {
    let started = Instant::now();
    // Cheap: standard methods are not allocated.
    let metrics_method = shared.metrics.as_ref().map(|_| req.method().clone());
    let runtime = shared.runtime.load_full();
    // Made once: the upstream request and the response share its bytes.
    let request_id_value = request_id(req.headers());
    let request_id = request_id_value.to_str().unwrap_or_default();
    let client_ip = runtime.trusted.client_ip(conn.peer.ip(), req.headers());
    // What the access log needs, taken before the request is consumed; nothing when it is off.
    // Clones share the request's bytes: nothing is copied or allocated for it.
    let log_fields = shared.access_log.enabled().then(|| {
        (
            req.method().clone(),
            req.uri().clone(),
            req.headers().get(header::USER_AGENT).cloned(),
        )
    });

    // What security events need, taken before the request is consumed; nothing when they are off.
    let event_fields = shared
        .events
        .as_ref()
        .map(|_| (req.method().clone(), req.uri().clone()));

    // Blocked at L7 (a client behind a trusted proxy, or no XDP here): first thing, before any
    // work is spent on the request.
    let mut added = Added::default();
    let (resp, outcome) = if shared.blocked.contains(client_ip) {
        let problem = Problem::new(StatusCode::FORBIDDEN, "client_blocked");
        let outcome = Outcome {
            code: Some(problem.code),
            ..Outcome::default()
        };
        (problem.into_response(request_id), outcome)
    } else {
        let behind_proxy = runtime.trusted.contains(conn.peer.ip());
        let ids = (request_id, request_id_value.clone());
        let (resp, outcome) = match pipeline(&runtime, &conn, req, ids, client_ip, &mut added).await
        {
            Ok(done) => done,
            Err((problem, outcome)) => {
                // A rejection the client caused is evidence for the defense loop (the weight
                // table decides which codes count).
                if let Some(sink) = &shared.violations {
                    let weight = problem.evidence.as_ref().and_then(|e| e.weight);
                    sink.report_weighted(client_ip.into(), behind_proxy, problem.code, weight);
                }
                if let Some((events, (method, uri))) =
                    shared.events.as_ref().zip(event_fields.as_ref())
                {
                    let info = RequestInfo {
                        request_id,
                        client_ip,
                        behind_proxy,
                        method,
                        uri,
                        listener: &conn.listener,
                        route: outcome.route.map(|r| r.name.as_str()),
                        status: problem.status.as_u16(),
                    };
                    events.on_rejected(&info, &problem, shared.violations.as_ref());
                }
                (problem.into_response(request_id), outcome)
            }
        };
        if let Some(sink) = &shared.violations {
            for f in &outcome.findings {
                sink.report_weighted(client_ip.into(), behind_proxy, f.code, f.evidence.weight);
            }
        }
        if let Some((events, (method, uri))) = shared.events.as_ref().zip(event_fields.as_ref()) {
            let info = RequestInfo {
                request_id,
                client_ip,
                behind_proxy,
                method,
                uri,
                listener: &conn.listener,
                route: outcome.route.map(|r| r.name.as_str()),
                status: resp.status().as_u16(),
            };
            for f in &outcome.findings {
                events.on_finding(&info, f, shared.violations.as_ref());
            }
        }
        (resp, outcome)
    };

    if let Some((method, uri, user_agent)) = log_fields {
        let mut source_buf = [0u8; 64];
        let source_ip = if client_ip == conn.peer.ip() {
            conn.peer_value.to_str().unwrap_or_default()
        } else {
            headers::format_addr(&mut source_buf, client_ip, None)
        };
        let client = conn.peer_text.get_or_init(|| {
            let mut buf = [0u8; 64];
            headers::format_addr(&mut buf, conn.peer.ip(), Some(conn.peer.port())).into()
        });
        shared.access_log.log(&super::access_log::Entry {
            request_id,
            method: method.as_str(),
            status: resp.status().as_u16(),
            duration: started.elapsed(),
            path: uri.path(),
            query: uri.query(),
            source_ip,
            client,
            user_agent: user_agent.as_ref().and_then(|v| v.to_str().ok()),
            listener: &conn.listener,
            route: outcome.route.map(|r| r.name.as_str()),
            upstream: outcome.route.map(|r| r.upstream.as_str()),
            reason: outcome.code,
        });
    }
    if let (Some(m), Some(method)) = (&shared.metrics, &metrics_method) {
        record_metrics(m, method, &resp, outcome, started);
    }
    added.set_request_id(request_id_value);
    (resp, added)
}

/// One request into the Prometheus metrics: by route/method/status, latency by route,
/// rejections by reason and stage, WAF rule matches (rejections and detect-only findings).
fn record_metrics(
    m: &crate::telemetry::metrics::ProxyMetrics,
    method: &http::Method,
    resp: &Response<Body>,
    outcome: Outcome,
    started: Instant,
) {
    m.waf_matches(
        outcome.waf_rules.iter().chain(
            outcome
                .findings
                .iter()
                .filter(|f| f.evidence.stage == "waf")
                .flat_map(|f| &f.evidence.rule_ids),
        ),
    );
    m.record(crate::telemetry::metrics::RequestRecord {
        route: outcome
            .route
            .map(|r| r.metrics.get_or_init(|| m.route(&r.name))),
        method,
        status: resp.status().as_u16(),
        seconds: started.elapsed().as_secs_f64(),
        code: outcome.code,
        stage: outcome.stage,
    });
}

type Failure<'r> = (Problem, Outcome<'r>);

async fn pipeline<'r>(
    runtime: &'r Runtime,
    conn: &Connection,
    req: Request<ClientBody>,
    (request_id, request_id_value): (&str, HeaderValue),
    client_ip: IpAddr,
    response_added: &mut Added,
) -> Result<(Response<Body>, Outcome<'r>), Failure<'r>> {
    let mut outcome = Outcome::default();
    let fail = |problem: Problem, outcome: &mut Outcome<'r>| {
        outcome.code = Some(problem.code);
        if let Some(e) = &problem.evidence {
            outcome.stage = Some(e.stage);
            if e.stage == "waf" {
                outcome.waf_rules = e.rule_ids.clone();
            }
        }
        (problem, std::mem::take(outcome))
    };
    let limits = &runtime.limits;

    // Plain listener that only redirects: nothing else applies.
    if let Some(port) = conn.redirect_https_port {
        return Ok((redirect_https(&req, port), outcome));
    }

    // Limits first: cheapest checks, and nothing later should parse what is oversized.
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > limits.max_uri_bytes {
        return Err(fail(
            Problem::new(StatusCode::URI_TOO_LONG, "uri_too_long"),
            &mut outcome,
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if req.headers().len() > limits.max_headers || header_bytes > limits.max_header_bytes {
        return Err(fail(
            Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            &mut outcome,
        ));
    }
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > limits.max_body_bytes)
    {
        return Err(fail(
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            &mut outcome,
        ));
    }

    // One normalisation, before routing, so routing and every later stage judge the same path.
    // A clone shares the URI's bytes; the path borrows it, not the request (consumed below).
    let uri = req.uri().clone();
    let path = match normalize::normalize(uri.path()) {
        Ok(p) => p,
        Err(e) => {
            return Err(fail(
                Problem::new(StatusCode::BAD_REQUEST, e.reason()).detail(e.detail()),
                &mut outcome,
            ));
        }
    };

    // Route on host + normalised path + method.
    let host_value = request_host(&req);
    let host_no_port = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map_or("", strip_port);
    let (route, params) = match runtime.router.find(host_no_port, &path, req.method()) {
        Found::Route { route, params } => (route, params),
        Found::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut p = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            if let Ok(v) = HeaderValue::from_str(&allow) {
                p = p.header(header::ALLOW, v);
            }
            return Err(fail(p, &mut outcome));
        }
        Found::NotFound => {
            return Err(fail(
                Problem::new(StatusCode::NOT_FOUND, "route_not_found"),
                &mut outcome,
            ));
        }
    };
    outcome.route = Some(route);

    // CORS preflights are answered here, before rate limits and authentication: browsers send
    // them without credentials, and the policy is the gateway's, not the upstream's.
    if let Some(cors) = &route.checks.cors
        && *req.method() == http::Method::OPTIONS
    {
        if crate::validate::Cors::is_preflight(req.method(), req.headers()) {
            return match cors.preflight(req.headers()) {
                Ok(resp) => Ok((resp, outcome)),
                Err(problem) => Err(fail(problem, &mut outcome)),
            };
        }
        if !route.serves(req.method()) {
            return Err(fail(
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
                &mut outcome,
            ));
        }
    }
    // The route's own body limit (validation), within the global one.
    let body_limit = route.checks.body_limit(limits.max_body_bytes);

    // The body, read whole only when a stage on this route judges it.
    let (mut parts, body) = req.into_parts();
    let body = if route.buffer_body {
        match read_body(body, body_limit, limits.body_timeout).await {
            Ok(bytes) => RequestBody::Buffered(bytes),
            Err(problem) => return Err(fail(problem, &mut outcome)),
        }
    } else {
        RequestBody::Streamed(body)
    };

    // Stages, in DESIGN order; each costs nothing on a route that configures none of it.
    let mut ctx = RequestContext {
        request_id,
        client_ip,
        behind_proxy: runtime.trusted.contains(conn.peer.ip()),
        tls: conn.tls.as_ref(),
        route,
        path: &path,
        params: &params,
        body: match &body {
            RequestBody::Buffered(b) => Some(b),
            RequestBody::Streamed(_) => None,
        },
        principal: None,
        findings: Vec::new(),
        response_headers: http::HeaderMap::new(),
    };
    let verdict = stages(runtime, &mut ctx, &mut parts).await;
    outcome.findings = std::mem::take(&mut ctx.findings);
    let stage_headers = std::mem::take(&mut ctx.response_headers);
    // A HEAD response's Content-Length describes a body that is not sent: no filter may judge it.
    let head_request = parts.method == http::Method::HEAD;
    if let Err(mut problem) = verdict {
        // A browser app on an allowed origin may read why (429, 401, 400) it was refused.
        if let Some(cors) = &route.checks.cors {
            problem = cors.decorate(problem, &parts.headers);
        }
        return Err(fail(problem, &mut outcome));
    }

    // Upstream request: rewritten path, hop-by-hop headers gone, forwarding headers ours, body
    // streamed through a size limit.
    let Some(upstream) = runtime.upstreams.get(&route.upstream) else {
        return Err(fail(
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_unknown"),
            &mut outcome,
        ));
    };
    let tls = conn.tls.is_some();
    // The client's target goes as it came (its bytes shared) unless the route rewrites the path
    // or normalisation changed it.
    if route.rewrites_path() || matches!(path, Cow::Owned(_)) {
        let mut target = route.upstream_path(&path);
        if let Some(q) = parts.uri.query() {
            target.push('?');
            target.push_str(q);
        }
        parts.uri = match target.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                return Err(fail(
                    Problem::new(StatusCode::BAD_REQUEST, "bad_request_target"),
                    &mut outcome,
                ));
            }
        };
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    // HTTP/2's `:authority` (or an absolute-form target's authority) becomes Host; a Host it
    // came from is there already.
    if let Some(h) = &host_value
        && parts.headers.get(header::HOST) != Some(h)
    {
        parts.headers.insert(header::HOST, h.clone());
    }
    // The client as every stage sees it; a client-sent X-Real-IP is dropped with the other
    // forwarding headers unless a trusted proxy set it.
    let real_ip = if client_ip == conn.peer.ip() {
        conn.peer_value.clone()
    } else {
        headers::ip_value(client_ip)
    };
    let forwarding = headers::forwarding(
        &mut parts.headers,
        runtime.trusted.contains(conn.peer.ip()),
        &conn.peer_value,
        if tls { "https" } else { "http" },
        host_value.as_ref(),
        request_id_value,
        real_ip,
    );
    parts.version = http::Version::HTTP_11;
    // What became of a streamed body, read if the upstream call fails.
    let mut fault = None;
    let body = match body {
        // No body: nothing to limit or time, and boxing nothing allocates nothing.
        RequestBody::Streamed(ClientBody::Whole(None)) => http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
        RequestBody::Streamed(ClientBody::Whole(Some(bytes))) | RequestBody::Buffered(bytes) => {
            if bytes.len() as u64 > body_limit {
                return Err(fail(
                    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
                    &mut outcome,
                ));
            }
            http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed()
        }
        RequestBody::Streamed(inner) => {
            let flag = Arc::new(AtomicU8::new(BODY_OK));
            fault = Some(Arc::clone(&flag));
            LimitedBody {
                inner,
                remaining: body_limit,
                idle: limits.body_timeout,
                timer: None,
                fault: flag,
            }
            .boxed()
        }
    };
    let fault = || {
        fault
            .as_ref()
            .map_or(BODY_OK, |f| f.load(Ordering::Relaxed))
    };

    let response = match upstream
        .send_with(Request::from_parts(parts, body), &forwarding)
        .await
    {
        Ok(r) => r,
        Err(_) if fault() == BODY_TOO_LARGE => {
            return Err(fail(
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
                &mut outcome,
            ));
        }
        Err(_) if fault() == BODY_TIMED_OUT => {
            return Err(fail(body_timeout(), &mut outcome));
        }
        // The client's fault, not the upstream's: as for a body read whole.
        Err(_) if fault() == BODY_INCOMPLETE => {
            return Err(fail(
                Problem::new(StatusCode::BAD_REQUEST, "body_incomplete"),
                &mut outcome,
            ));
        }
        Err(e) => {
            tracing::warn!(upstream = %route.upstream, error = %e, request_id, "upstream request failed");
            return Err(fail(Problem::new(e.status(), e.reason()), &mut outcome));
        }
    };

    // Response filters: hop-by-hop out, security headers in, upstream identity hidden.
    let (mut parts, mut body) = response.into_parts();
    // The gateway's HTTP/1.1 client keeps the fields outside the map (hop-by-hop ones already
    // marked); into the map only when a stage here reads or extends it.
    let map_read = route.checks.cors.is_some() || route.response_filter.is_some();
    if (map_read || !stage_headers.is_empty())
        && let Some(f) = body.take_fields()
    {
        f.append_to(&mut parts.headers);
    }

    // -- response filters: masking, size cap --
    if let Some(cors) = &route.checks.cors {
        cors.on_response(&mut parts.headers);
    }
    parts.headers.extend(stage_headers);
    // The fields still outside the map are taken after the filter's await: held across it,
    // they would grow the future every request moves.
    let (body, fields) = match &route.response_filter {
        // Boxed: held inline, the filter's future would grow every request's.
        Some(filter) if !head_request => match Box::pin(filter.apply(&mut parts, body)).await {
            Ok(body) => (body, None),
            Err(problem) => return Err(fail(problem, &mut outcome)),
        },
        _ => {
            let fields = body.take_fields();
            (body.boxed(), fields)
        }
    };

    headers::strip_hop_by_hop(&mut parts.headers);
    route
        .response_policy
        .apply(&mut parts.headers, fields, tls, response_added);
    Ok((Response::from_parts(parts, body), outcome))
}

/// Runs the request stages in order: rate limits (per client) -> authentication ->
/// authorisation -> validation -> WAF. Each stage may read and add to `ctx` and edit the
/// request head (`parts`: say, forwarding verified claims as headers) before it goes upstream.
async fn stages(
    runtime: &Runtime,
    ctx: &mut RequestContext<'_>,
    parts: &mut http::request::Parts,
) -> Result<(), Problem> {
    // -- stage: rate limits (per client identity) --
    // Bot signals first: a blocked scanner should not spend anyone's quota.
    if let Some(bot) = &runtime.bot
        && ctx.route.bot_signals
    {
        bot.check(ctx, parts)?;
    }
    if let Some(filter) = &ctx.route.response_filter {
        filter.prepare_request(&mut parts.headers);
    }
    let admission = runtime.ratelimit.check_client(ctx, &parts.headers)?;

    // -- stage: authentication --
    runtime.auth.authenticate(ctx, parts).await?;

    // -- stage: authorisation --
    if let Some(require) = ctx.route.require.as_deref() {
        // Boxed for the reason the authentication sources are (`Auth::authenticate`).
        Box::pin(require.authorize(ctx, parts)).await?;
    }

    // -- stage: validation --
    // After authorisation: an unauthorised caller learns nothing about the schema.
    ctx.route.checks.check(ctx, parts)?;

    // -- stage: rate limits (per consumer: keys from the principal) --
    runtime
        .ratelimit
        .check_consumer(ctx, &parts.headers, admission)?;

    // -- stage: WAF --
    if let (Some(waf), Some(excl)) = (&runtime.waf, &ctx.route.waf) {
        let excl = Arc::clone(excl);
        waf.judge(&excl, ctx, parts)?;
    }

    Ok(())
}

/// A client's request body as the pipeline gets it.
pub enum ClientBody {
    /// Read by hyper as the pipeline asks for it.
    Hyper(Incoming),
    /// Read whole with the head by the gateway's own HTTP/1.1 path (`None`: no body).
    Whole(Option<Bytes>),
    /// The gateway's own HTTP/1.1 path gave up waiting for the rest of it (the body timeout
    /// passed): whoever reads it answers 408, as for a body that stalls while streamed.
    Stalled,
}

impl ClientBody {
    fn stalled(&self) -> bool {
        matches!(self, Self::Stalled)
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            Self::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Self::Stalled => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(body) => body.is_end_stream(),
            Self::Whole(data) => data.is_none(),
            Self::Stalled => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper(body) => body.size_hint(),
            Self::Whole(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::Stalled => SizeHint::default(),
        }
    }
}

/// The request body as it goes upstream.
enum RequestBody {
    /// Streamed through [`LimitedBody`]: the default.
    Streamed(ClientBody),
    /// Read whole because a stage judges it.
    Buffered(Bytes),
}

/// Reads a body whole, refusing (413) once it passes `limit`; a client that pauses longer than
/// `idle` between two pieces gets 408, one that fails mid-body 400.
async fn read_body(mut body: ClientBody, limit: u64, idle: Duration) -> Result<Bytes, Problem> {
    let too_large = || Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    if body.stalled() {
        return Err(body_timeout());
    }
    // One piece (the usual small API body) is kept as it came; only more are copied together.
    let mut first: Option<Bytes> = None;
    let mut rest = bytes::BytesMut::new();
    let mut total = 0u64;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(body_timeout()),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(_))) => {
                return Err(Problem::new(StatusCode::BAD_REQUEST, "body_incomplete"));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing a stage judges
        };
        total += data.len() as u64;
        if total > limit {
            return Err(too_large());
        }
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// A body that stalled: 408 (the connection closes, the rest of the body is never read).
fn body_timeout() -> Problem {
    Problem::new(StatusCode::REQUEST_TIMEOUT, "body_timeout")
}

/// `X-Request-Id` from the client when it is sane (its bytes shared, not copied), else a fresh
/// random one (one allocation, shared by the upstream request and the response).
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID)
        && !id.is_empty()
        && id.len() <= 128
        && id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return id.clone();
    }
    // Hex by hand, a byte at a time: `format!` costs more than the rest of this function (per
    // request), and a 128-bit shift per digit half of it.
    let n: u128 = rand::random();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (pair, b) in id.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// HTTP/1.1 `Host` (its bytes shared), or the HTTP/2 `:authority`.
fn request_host(req: &Request<ClientBody>) -> Option<HeaderValue> {
    match req.headers().get(header::HOST) {
        Some(host) if host.to_str().is_ok() => Some(host.clone()),
        _ => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

fn redirect_https(req: &Request<ClientBody>, port: u16) -> Response<Body> {
    let host = request_host(req);
    let host = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map_or("", strip_port);
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut resp = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// What became of a streamed body, read when the upstream call failed because of it.
const BODY_OK: u8 = 0;
const BODY_TOO_LARGE: u8 = 1;
const BODY_TIMED_OUT: u8 = 2;
/// The client's connection failed or closed mid-body.
const BODY_INCOMPLETE: u8 = 3;

/// Streams the request body to the upstream, failing (and flagging it) once more than the limit
/// has gone through (413 without ever buffering the body) or once the client pauses longer than
/// `idle` between two pieces (408).
struct LimitedBody {
    inner: ClientBody,
    remaining: u64,
    idle: Duration,
    /// Armed only while waiting for the client: a body that is already there starts no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: Arc<AtomicU8>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than the configured limit")]
struct BodyTooLarge;

#[derive(Debug, thiserror::Error)]
#[error("request body stalled longer than the configured timeout")]
struct BodyTimedOut;

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.inner.stalled() {
            this.fault.store(BODY_TIMED_OUT, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            let idle = this.idle;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
            if timer.as_mut().poll(cx).is_ready() {
                this.fault.store(BODY_TIMED_OUT, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
            }
            return Poll::Pending;
        }
        this.timer = None;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.fault.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fault.store(BODY_INCOMPLETE, Ordering::Relaxed);
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_come_off_hosts() {
        assert_eq!(strip_port("api.example.com:8443"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[2001:db8::1]:443"), "2001:db8::1");
    }
}
