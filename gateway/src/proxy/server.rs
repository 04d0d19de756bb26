//! Listeners and connections: accept, optional PROXY protocol (trusted balancers only), optional
//! TLS, then HTTP/1.1 on the gateway's own path (`http1`) and HTTP/2 (and whatever that path
//! hands over) on hyper, with the configured limits. Reload swaps the
//! routing/upstream generation atomically and applies listener changes (new sockets are bound
//! before anything changes); shutdown stops accepting and drains.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
    task::JoinHandle,
};

use super::{
    access_log::AccessLog,
    http1,
    identity::TrustedProxies,
    proxy_protocol,
    router::Router,
    service::{self, Connection, Runtime, Shared},
    upstream::Upstreams,
};
use crate::{
    bot::Detector,
    config::{AccessLog as AccessLogConfig, Config, HttpLimits, ListenerConfig},
    defense::{L7Blocks, ViolationSink},
    ratelimit::{Limiter, RateLimits},
    tls::{TlsAcceptor, TlsError},
};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("listener `{name}`: binding {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener `{name}`: {source}")]
    Tls { name: String, source: TlsError },
    #[error("route {index}: {reason}")]
    Route { index: usize, reason: String },
    #[error("upstreams: {0}")]
    Upstreams(String),
    #[error("{0}")]
    Auth(String),
    /// The WAF rules did not load (the reason names file:line).
    #[error("waf: {0}")]
    Waf(String),
}

/// A bound listener, as tests and logs see it.
#[derive(Clone, Debug)]
pub struct BoundListener {
    pub name: String,
    pub addr: SocketAddr,
}

struct ListenerState {
    name: String,
    /// As configured: port 0 stays 0, so the same file keeps the same socket on reload.
    configured: SocketAddr,
    bound: SocketAddr,
    /// Read per accepted connection: a reload changes TLS, PROXY protocol or the redirect
    /// without closing the socket.
    settings: Arc<ArcSwap<ListenerSettings>>,
    task: JoinHandle<()>,
}

/// What a listener serves new connections with.
struct ListenerSettings {
    /// Can change too: a listener renamed in the file keeps its socket.
    name: Arc<str>,
    tls: Option<Arc<TlsAcceptor>>,
    proxy_protocol: bool,
    redirect_https_port: Option<u16>,
}

impl ListenerSettings {
    /// Loads and checks the certificates: fails without side effects.
    fn new(l: &ListenerConfig) -> Result<Self, ProxyError> {
        let tls = match &l.tls {
            Some(settings) => Some(Arc::new(TlsAcceptor::new(settings).map_err(|source| {
                ProxyError::Tls {
                    name: l.name.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        Ok(Self {
            name: Arc::from(l.name.as_str()),
            tls,
            proxy_protocol: l.proxy_protocol,
            redirect_https_port: l.redirect_https_port,
        })
    }
}

/// Binds `l`'s address (`SO_REUSEADDR`, as `TcpListener::bind` does). Synchronous, so a
/// reload can bind every new socket before it changes anything.
fn bind(l: &ListenerConfig) -> Result<(TcpListener, SocketAddr), ProxyError> {
    let err = |source| ProxyError::Bind {
        name: l.name.clone(),
        addr: l.address,
        source,
    };
    let socket = if l.address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(l.address).map_err(err)?;
    let listener = socket.listen(1024).map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

/// The running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    /// Changed by reloads (which take `&self`: tests and the admin API share the proxy).
    listeners: Mutex<Vec<ListenerState>>,
    stop: watch::Sender<bool>,
    connections: Arc<()>,
    /// Writes quota counters to the state directory periodically.
    quota_flusher: JoinHandle<()>,
}

/// Builds what one configuration generation needs; fails without side effects.
/// `limiter` carries rate-limit state across generations, `previous` (on reload) what is known
/// about upstream endpoints.
fn runtime(
    config: &Config,
    limiter: Arc<Limiter>,
    previous: Option<&Upstreams>,
) -> Result<Runtime, ProxyError> {
    let mut router = Router::build(&config.routes)
        .map_err(|(index, reason)| ProxyError::Route { index, reason })?;
    let auth =
        crate::auth::build(config.auth.as_ref(), &config.routes).map_err(ProxyError::Auth)?;
    for (route, (authn, require)) in router.routes_mut().iter_mut().zip(auth.routes) {
        // HMAC signatures cover the body.
        route.buffer_body |= authn.as_ref().is_some_and(|a| a.needs_body());
        route.auth = authn;
        route.require = require;
    }
    for (index, route) in router.routes().iter().enumerate() {
        if !config.upstreams.contains_key(&route.upstream) {
            return Err(ProxyError::Route {
                index,
                reason: format!("upstream `{}` is not defined", route.upstream),
            });
        }
    }
    let upstreams = Upstreams::build_after(&config.upstreams, previous)
        .map_err(|e| ProxyError::Upstreams(e.to_string()))?;
    let ratelimit = RateLimits::new(limiter, &config.rate_limit, &router);
    let rl = &config.rate_limit;
    let bot = config
        .bot
        .as_ref()
        .map(|b| Detector::new(b, rl.ipv4_prefix, rl.ipv6_prefix, rl.max_keys));
    Ok(Runtime {
        router,
        upstreams,
        limits: config.http.clone(),
        trusted: TrustedProxies::new(config.trusted_proxies.iter().map(|n| n.0).collect()),
        ratelimit,
        bot,
        auth: auth.auth,
        waf: match &config.waf {
            Some(section) => Some(Arc::new(
                crate::waf::Waf::build(section).map_err(|e| ProxyError::Waf(e.to_string()))?,
            )),
            None => None,
        },
    })
}

/// How the proxy meets the defense loop.
#[derive(Default)]
pub struct DefenseHooks {
    /// Checked first thing per request.
    pub blocked: Arc<L7Blocks>,
    /// Client faults are reported here.
    pub violations: Option<ViolationSink>,
    /// Security events go here.
    pub events: Option<crate::telemetry::events::EventSink>,
    /// Request metrics are recorded here.
    pub metrics: Option<crate::telemetry::metrics::ProxyMetrics>,
}

impl Proxy {
    /// Binds every listener and starts serving, without a defense loop.
    pub async fn start(config: &Config) -> Result<Self, ProxyError> {
        Self::start_with(config, DefenseHooks::default()).await
    }

    /// Binds every listener and starts serving, reporting to and enforcing for `hooks`.
    pub async fn start_with(config: &Config, hooks: DefenseHooks) -> Result<Self, ProxyError> {
        let limiter = Arc::new(Limiter::open(
            &config.state_dir,
            &config.instance,
            &config.rate_limit,
        ));
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime(config, Arc::clone(&limiter), None)?),
            access_log: AccessLog::start(config.access_log == AccessLogConfig::Stdout),
            blocked: hooks.blocked,
            violations: hooks.violations,
            events: hooks.events,
            metrics: hooks.metrics,
        });
        let (stop, _) = watch::channel(false);
        let connections = Arc::new(());
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let settings = ListenerSettings::new(l)?;
            let (socket, addr) = bind(l)?;
            listeners.push(spawn_listener(
                l,
                socket,
                addr,
                settings,
                &shared,
                &stop,
                &connections,
            ));
        }
        let quota_flusher = limiter.spawn_flusher(config.rate_limit.flush_interval);
        Ok(Self {
            shared,
            listeners: Mutex::new(listeners),
            stop,
            connections,
            quota_flusher,
        })
    }

    /// Reads each upstream endpoint's health (upstream, endpoint, up) from the generation in
    /// force at call time: for the metrics, called at scrape time.
    pub fn upstream_health(
        &self,
    ) -> impl Fn() -> Vec<(String, String, bool)> + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            let runtime = shared.runtime.load();
            runtime
                .upstreams
                .iter()
                .flat_map(|(name, u)| {
                    u.endpoints_health()
                        .into_iter()
                        .map(move |(e, up)| (name.to_owned(), e, up))
                })
                .collect()
        }
    }

    /// The listeners accepting now.
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.lock_listeners()
            .iter()
            .map(|l| BoundListener {
                name: l.name.clone(),
                addr: l.bound,
            })
            .collect()
    }

    /// The address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.lock_listeners()
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.bound)
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Vec<ListenerState>> {
        // Nothing panics while holding it; a poisoned list is still the right list.
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a new configuration: everything is built first (routes, upstreams, certificates,
    /// the sockets of new or moved listeners), then swapped at once; if anything fails nothing
    /// changes. Requests in flight finish on the generation they started with. Listeners follow
    /// the file as nginx's reload does: a new one starts accepting, a removed one stops
    /// accepting (its open connections finish), a moved one accepts on its new address only,
    /// and TLS, PROXY protocol and redirect changes apply to new connections without closing the
    /// socket.
    pub fn reload(&self, config: &Config) -> Result<(), ProxyError> {
        let current = self.shared.runtime.load();
        let next = runtime(
            config,
            current.ratelimit.limiter(),
            Some(&current.upstreams),
        )?;
        drop(current);
        let mut running = self.lock_listeners();
        // Everything that can fail, first.
        let mut prepared = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let settings = ListenerSettings::new(l)?;
            // By name; else a listener on the same (non-zero) address whose name is gone from
            // the file: renamed, it keeps its socket.
            let existing = running.iter().position(|r| r.name == l.name).or_else(|| {
                running.iter().position(|r| {
                    r.configured == l.address
                        && l.address.port() != 0
                        && !config.listeners.iter().any(|c| c.name == r.name)
                })
            });
            let socket = match existing {
                Some(i) if running[i].configured == l.address => None,
                _ => Some(bind(l)?),
            };
            prepared.push((l, existing, socket, settings));
        }
        // Then the swap: nothing below fails.
        let mut old: Vec<Option<ListenerState>> = running.drain(..).map(Some).collect();
        for (l, existing, socket, settings) in prepared {
            let previous = existing.and_then(|i| old.get_mut(i).and_then(Option::take));
            match (previous, socket) {
                (Some(mut state), None) => {
                    state.name.clone_from(&l.name);
                    state.settings.store(Arc::new(settings));
                    running.push(state);
                }
                (previous, Some((socket, addr))) => {
                    if let Some(state) = previous {
                        tracing::info!(listener = %l.name, from = %state.bound, to = %addr, "listener moved");
                        state.task.abort();
                    }
                    running.push(spawn_listener(
                        l,
                        socket,
                        addr,
                        settings,
                        &self.shared,
                        &self.stop,
                        &self.connections,
                    ));
                }
                // A kept listener always has its state (names are unique in a valid file).
                (None, None) => {}
            }
        }
        for state in old.into_iter().flatten() {
            tracing::info!(listener = %state.name, addr = %state.bound, "listener removed: no new connections, open ones finish");
            state.task.abort();
        }
        drop(running);
        self.shared.runtime.store(Arc::new(next));
        Ok(())
    }

    /// Stops accepting, asks open connections to finish (HTTP/2 GOAWAY, HTTP/1 close after the
    /// current response) and waits up to `timeout` for them.
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.stop.send(true);
        for l in self.lock_listeners().iter() {
            l.task.abort();
        }
        let deadline = Instant::now() + timeout;
        while Arc::strong_count(&self.connections) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = Arc::strong_count(&self.connections) - 1;
        if left > 0 {
            tracing::warn!(
                connections = left,
                "shutdown timeout: closing connections still open"
            );
        }
        self.flush_quotas();
        self.shared.access_log.flush();
    }

    /// Writes the quota counters now (shutdown, drop): what a restart starts from.
    fn flush_quotas(&self) {
        if let Err(e) = self.shared.runtime.load().ratelimit.limiter().flush() {
            tracing::error!(error = %e, "writing quota state failed");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for l in self.lock_listeners().iter() {
            l.task.abort();
        }
        self.quota_flusher.abort();
        self.flush_quotas();
    }
}

/// Starts accepting on a bound socket.
fn spawn_listener(
    l: &ListenerConfig,
    socket: TcpListener,
    addr: SocketAddr,
    settings: ListenerSettings,
    shared: &Arc<Shared>,
    stop: &watch::Sender<bool>,
    connections: &Arc<()>,
) -> ListenerState {
    tracing::info!(listener = %l.name, %addr, tls = settings.tls.is_some(), proxy_protocol = settings.proxy_protocol, "listening");
    let settings = Arc::new(ArcSwap::from_pointee(settings));
    let task = tokio::spawn(accept_loop(
        socket,
        Arc::clone(&settings),
        Arc::clone(shared),
        stop.subscribe(),
        Arc::clone(connections),
    ));
    ListenerState {
        name: l.name.clone(),
        configured: l.address,
        bound: addr,
        settings,
        task,
    }
}

async fn accept_loop(
    socket: TcpListener,
    settings: Arc<ArcSwap<ListenerSettings>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    connections: Arc<()>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %settings.load().name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let token = Arc::clone(&connections);
        let shared = Arc::clone(&shared);
        let current = settings.load();
        let tls = current.tls.clone();
        let proxy_protocol = current.proxy_protocol;
        let redirect = current.redirect_https_port;
        let name = Arc::clone(&current.name);
        drop(current);
        let stop = stop.clone();
        tokio::spawn(async move {
            let _token = token;
            if let Err(e) = serve(
                tcp,
                peer,
                proxy_protocol,
                redirect,
                tls,
                shared,
                name.clone(),
                stop,
            )
            .await
            {
                tracing::debug!(listener = %name, %peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one connection's whole context, passed once"
)]
async fn serve(
    mut tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    proxy_protocol: bool,
    redirect_https_port: Option<u16>,
    tls: Option<Arc<TlsAcceptor>>,
    shared: Arc<Shared>,
    listener: Arc<str>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let limits: HttpLimits = shared.runtime.load().limits.clone();
    let mut peer = peer;
    if proxy_protocol {
        // Only a configured balancer may tell us who the client is.
        if !shared.runtime.load().trusted.contains(peer.ip()) {
            return Err(format!("PROXY protocol from untrusted peer {peer}").into());
        }
        let header = tokio::time::timeout(
            limits.handshake_timeout,
            proxy_protocol::read_header(&mut tcp),
        )
        .await??;
        if let Some(source) = header {
            peer = source;
        }
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    // hyper refuses a head with more headers than its ceiling itself (a bare 431, before our
    // service sees it); below the ceiling our check answers with problem+json. Its default
    // (100) covers limits up to 100, the default limit included. Any ceiling set here makes
    // hyper build two header arrays of that size per request (1.5k instructions of a 36k
    // proxied request at the default, callgrind), so it is set only for larger limits.
    if limits.max_headers > HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers + 1);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
        .max_local_error_reset_streams(limits.h2_max_pending_resets)
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        .keep_alive_interval(Duration::from_secs(30));

    match tls {
        Some(acceptor) => {
            let (stream, info) =
                tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await??;
            let h2 = info.alpn_h2;
            let conn = Arc::new(Connection {
                listener,
                peer,
                peer_value: super::headers::ip_value(peer.ip()),
                peer_text: std::sync::OnceLock::new(),
                tls: Some(info),
                redirect_https_port: None,
            });
            if h2 {
                let builder = builder.http2_only();
                run(builder, TokioIo::new(stream), shared, conn, &mut stop).await
            } else {
                let builder = builder.http1_only();
                serve_http1(stream, builder, shared, conn, &limits, &mut stop).await
            }
        }
        None => {
            let conn = Arc::new(Connection {
                listener,
                peer,
                peer_value: super::headers::ip_value(peer.ip()),
                peer_text: std::sync::OnceLock::new(),
                tls: None,
                redirect_https_port,
            });
            serve_http1(tcp, builder, shared, conn, &limits, &mut stop).await
        }
    }
}

/// HTTP/1.1 on the gateway's own path (`http1`); hyper, built by `builder`, takes over the
/// connection for whatever that path hands over (the HTTP/2 preface included).
async fn serve_http1<I>(
    io: I,
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    limits: &HttpLimits,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match http1::serve(io, &shared, &conn, limits, stop).await? {
        http1::Served::Done => Ok(()),
        http1::Served::Handover(io) => run(builder, TokioIo::new(io), shared, conn, stop).await,
    }
}

/// hyper's HTTP/1 header-count limit when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

async fn run<I>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        service::handle(
            Arc::clone(&shared),
            Arc::clone(&conn),
            req.map(service::ClientBody::Hyper),
        )
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    if *stop.borrow() {
        connection.as_mut().graceful_shutdown();
    }
    tokio::select! {
        res = connection.as_mut() => return res,
        _ = stop.changed() => connection.as_mut().graceful_shutdown(),
    }
    connection.await
}
