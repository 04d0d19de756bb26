//! Listeners and connections: accept, optional PROXY protocol (trusted balancers only), optional
//! TLS, then hyper serving HTTP/1.1 and HTTP/2 with the configured limits. Reload swaps the
//! routing/upstream generation atomically; shutdown stops accepting and drains.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::{
    access_log::AccessLog,
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
    tls: Option<Arc<TlsAcceptor>>,
    task: JoinHandle<()>,
}

/// The running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<ListenerState>,
    bound: Vec<BoundListener>,
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
        let mut bound = Vec::new();
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(settings) => Some(Arc::new(TlsAcceptor::new(settings).map_err(|source| {
                    ProxyError::Tls {
                        name: l.name.clone(),
                        source,
                    }
                })?)),
                None => None,
            };
            let socket = TcpListener::bind(l.address)
                .await
                .map_err(|source| ProxyError::Bind {
                    name: l.name.clone(),
                    addr: l.address,
                    source,
                })?;
            let addr = socket.local_addr().map_err(|source| ProxyError::Bind {
                name: l.name.clone(),
                addr: l.address,
                source,
            })?;
            tracing::info!(listener = %l.name, %addr, tls = tls.is_some(), proxy_protocol = l.proxy_protocol, "listening");
            let task = tokio::spawn(accept_loop(
                socket,
                l.clone(),
                tls.clone(),
                Arc::clone(&shared),
                stop.subscribe(),
                Arc::clone(&connections),
            ));
            listeners.push(ListenerState {
                name: l.name.clone(),
                tls,
                task,
            });
            bound.push(BoundListener {
                name: l.name.clone(),
                addr,
            });
        }
        let quota_flusher = limiter.spawn_flusher(config.rate_limit.flush_interval);
        Ok(Self {
            shared,
            listeners,
            bound,
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

    pub fn listeners(&self) -> &[BoundListener] {
        &self.bound
    }

    /// The address of the listener called `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.iter().find(|b| b.name == name).map(|b| b.addr)
    }

    /// Applies a new configuration: everything is built first, then swapped at once; requests
    /// in flight finish on the generation they started with. Listener addresses and the set of
    /// listeners take effect at restart; certificates reload now.
    pub fn reload(&self, config: &Config) -> Result<(), ProxyError> {
        let current = self.shared.runtime.load();
        let next = runtime(
            config,
            current.ratelimit.limiter(),
            Some(&current.upstreams),
        )?;
        drop(current);
        let mut tls_updates = Vec::new();
        for state in &self.listeners {
            let Some(new) = config.listeners.iter().find(|l| l.name == state.name) else {
                tracing::warn!(listener = %state.name, "listener removed from the file: it stays until restart");
                continue;
            };
            if let (Some(acceptor), Some(settings)) = (&state.tls, &new.tls) {
                tls_updates.push((acceptor, settings, &state.name));
            }
        }
        // Certificates are checked before anything is swapped, so a bad file changes nothing.
        for (_, settings, name) in &tls_updates {
            TlsAcceptor::new(settings).map_err(|source| ProxyError::Tls {
                name: (*name).clone(),
                source,
            })?;
        }
        for (acceptor, settings, name) in tls_updates {
            acceptor
                .reload(settings)
                .map_err(|source| ProxyError::Tls {
                    name: name.clone(),
                    source,
                })?;
        }
        self.shared.runtime.store(Arc::new(next));
        Ok(())
    }

    /// Stops accepting, asks open connections to finish (HTTP/2 GOAWAY, HTTP/1 close after the
    /// current response) and waits up to `timeout` for them.
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.stop.send(true);
        for l in &self.listeners {
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
        for l in &self.listeners {
            l.task.abort();
        }
        self.quota_flusher.abort();
        self.flush_quotas();
    }
}

async fn accept_loop(
    socket: TcpListener,
    config: ListenerConfig,
    tls: Option<Arc<TlsAcceptor>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    connections: Arc<()>,
) {
    let name: Arc<str> = Arc::from(config.name.as_str());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let token = Arc::clone(&connections);
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        let name = Arc::clone(&name);
        let stop = stop.clone();
        let proxy_protocol = config.proxy_protocol;
        let redirect = config.redirect_https_port;
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
        .keep_alive(true)
        // hyper's own ceiling sits above ours so that our problem+json 431 answers first.
        .max_headers(limits.max_headers.saturating_mul(2).max(100));
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
                tls: Some(info),
                redirect_https_port: None,
            });
            let builder = if h2 {
                builder.http2_only()
            } else {
                builder.http1_only()
            };
            run(builder, TokioIo::new(stream), shared, conn, &mut stop).await
        }
        None => {
            let conn = Arc::new(Connection {
                listener,
                peer,
                peer_value: super::headers::ip_value(peer.ip()),
                tls: None,
                redirect_https_port,
            });
            run(builder, TokioIo::new(tcp), shared, conn, &mut stop).await
        }
    }
}

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
        service::handle(Arc::clone(&shared), Arc::clone(&conn), req)
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
