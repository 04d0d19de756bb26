//! The admin API: JSON over HTTP on a unix socket (file permissions are the authentication),
//! optionally on TCP behind a bearer token or mTLS (never unauthenticated). Every change goes
//! through [`Defense`](crate::defense::Defense), the single writer, journal first, with the
//! actor recorded: `admin:<token id>`, `admin:cert:<subject>`, or what the CLI sends
//! (`cli:<user>`) on the socket. Also serves `/metrics`, `/live` and `/ready`.
//!
//! Endpoints: `GET|POST|DELETE /v1/blocks`, `GET|POST|DELETE /v1/allowlist`, `GET /v1/stats`,
//! `POST /v1/reload`, `GET|PUT /v1/log-level`, `GET /metrics`, `GET /live`, `GET /ready`.

mod api;
mod auth;
pub mod client;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

pub use api::{block_rows, stat_rows};
pub use auth::Tokens;

use crate::{
    config::AdminSection,
    defense::{Action, Defense, Journal, JournalError, L7Blocks},
    telemetry::metrics::Metrics,
    tls::TlsAcceptor,
};

/// Open connections on the TCP listener at once.
const MAX_TCP_CONNECTIONS: usize = 64;

/// The header the CLI names its user in (`cli:<user>`); believed on the unix socket only.
pub const ACTOR_HEADER: &str = "x-gateway-actor";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "admin socket {}: another daemon answers there; stop it or give this one another socket",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("admin TCP listener {addr}: {source}")]
    Tcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin token `{id}`: {reason}")]
    Token { id: String, reason: String },
    #[error("admin TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A reload asked for over the API; the daemon answers with the outcome (the same path as
/// SIGHUP).
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// What the API works on.
pub struct AdminState {
    /// The kernel maps and journal, when XDP runs; without them blocks are enforced in the
    /// proxy only.
    pub defense: Option<Arc<Defense>>,
    pub l7: Arc<L7Blocks>,
    /// The audit journal for blocks enforced in the proxy (kernel changes are journaled by
    /// `defense`); `None` leaves them unjournaled (tests).
    pub journal: Option<Arc<Journal>>,
    pub metrics: Arc<Metrics>,
    /// Where reloads are sent; `None` answers 503.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// Turned on once the daemon serves (`/ready`).
    pub ready: Arc<AtomicBool>,
}

/// The running listeners; dropping it stops them and removes the socket file.
pub struct AdminServer {
    socket: PathBuf,
    tcp_addr: Option<std::net::SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds the unix socket (and the TCP listener when configured) and serves.
    pub async fn start(
        section: &AdminSection,
        socket: &Path,
        state: AdminState,
    ) -> Result<Self, AdminError> {
        let tokens = match &section.tcp {
            Some(tcp) => Tokens::load(&tcp.tokens)?,
            None => Tokens::default(),
        };
        let tls = match section.tcp.as_ref().and_then(|t| t.tls.as_ref()) {
            Some(settings) => Some(Arc::new(TlsAcceptor::new(settings)?)),
            None => None,
        };
        let state = Arc::new(state);
        let unix = bind_unix(socket, section.socket_mode).await?;
        let mut tasks = vec![tokio::spawn(unix_loop(unix, Arc::clone(&state)))];
        let mut tcp_addr = None;
        if let Some(tcp) = &section.tcp {
            let listener =
                TcpListener::bind(tcp.address)
                    .await
                    .map_err(|source| AdminError::Tcp {
                        addr: tcp.address,
                        source,
                    })?;
            let addr = listener.local_addr().map_err(|source| AdminError::Tcp {
                addr: tcp.address,
                source,
            })?;
            tracing::info!(%addr, tokens = tokens.len(), mtls = tls.is_some(), "admin API on TCP");
            tcp_addr = Some(addr);
            tasks.push(tokio::spawn(tcp_loop(
                listener,
                Arc::new(tokens),
                tls,
                Arc::clone(&state),
            )));
        }
        tracing::info!(socket = %socket.display(), mode = format!("{:04o}", section.socket_mode), "admin API on unix socket");
        Ok(Self {
            socket: socket.to_owned(),
            tcp_addr,
            tasks,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The bound TCP address (the port, when the file asked for port 0).
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp_addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Binds the socket with its mode; a stale file left by a killed daemon is replaced, a live
/// daemon's socket is not.
async fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, AdminError> {
    let err = |source| AdminError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AdminError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    // Created under a umask that leaves nothing to others, then set to the configured mode, so
    // there is no window in which the socket is more open than asked.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(err)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

/// Who is calling, established by the transport before any request is read.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// On the unix socket: the peer's uid (the CLI also names its user in [`ACTOR_HEADER`]).
    Unix { uid: Option<u32> },
    /// On TCP: a verified client certificate, or nothing yet (a token must follow).
    Tcp { cert_subject: Option<String> },
}

async fn unix_loop(listener: UnixListener, state: Arc<AdminState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let caller = Caller::Unix { uid };
            serve(
                TokioIo::new(stream),
                state,
                Arc::new(Tokens::default()),
                caller,
            )
            .await;
        });
    }
}

async fn tcp_loop(
    listener: TcpListener,
    tokens: Arc<Tokens>,
    tls: Option<Arc<TlsAcceptor>>,
    state: Arc<AdminState>,
) {
    // Anyone who can reach the port can open connections before authenticating: bound them.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "admin TCP connection refused: too many open");
            continue;
        };
        let state = Arc::clone(&state);
        let tokens = Arc::clone(&tokens);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
                    let Ok(Ok((stream, info))) = accepted else {
                        tracing::debug!(%peer, "admin TLS handshake failed");
                        return;
                    };
                    let caller = Caller::Tcp {
                        cert_subject: info.client.map(|c| c.subject),
                    };
                    serve(TokioIo::new(stream), state, tokens, caller).await;
                }
                None => {
                    let caller = Caller::Tcp { cert_subject: None };
                    serve(TokioIo::new(tcp), state, tokens, caller).await;
                }
            }
        });
    }
}

async fn serve<I>(io: I, state: Arc<AdminState>, tokens: Arc<Tokens>, caller: Caller)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        api::handle(Arc::clone(&state), Arc::clone(&tokens), caller.clone(), req)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// Puts the proxy-enforced blocks of the journal (operator blocks without XDP, and clients
/// behind a trusted proxy) that have not expired back into `l7`, with their remaining time;
/// returns how many.
pub fn restore_l7(journal: &Journal, l7: &L7Blocks) -> Result<usize, JournalError> {
    let mut standing: std::collections::HashMap<String, Option<u64>> = Default::default();
    for r in journal.read()? {
        match r.action {
            Action::Block if r.origin == api::L7_ORIGIN => {
                standing.insert(r.target, r.expires);
            }
            Action::Block => {
                standing.remove(&r.target);
            }
            Action::Unblock => {
                standing.remove(&r.target);
            }
            _ => {}
        }
    }
    let now = crate::xdp::unix_now();
    let mut restored = 0;
    for (target, expires) in standing {
        let Ok(net) = target.parse::<ipnet::IpNet>() else {
            continue;
        };
        let left = match expires {
            Some(e) if e <= now => continue,
            Some(e) => Duration::from_secs(e - now),
            None => api::L7_PERMANENT,
        };
        l7.insert(net, std::time::Instant::now() + left);
        restored += 1;
    }
    Ok(restored)
}
