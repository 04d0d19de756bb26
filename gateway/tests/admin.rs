//! The admin API: over the daemon's unix socket (block, list, unblock, a rejected reload; the
//! CLI going through the daemon), on TCP only with the right bearer token, and `/metrics`
//! counting exactly the traffic sent through a real proxy to a real upstream.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use gateway::{
    admin::{AdminServer, AdminState},
    config::Config,
    defense::L7Blocks,
    proxy::server::{DefenseHooks, Proxy},
    telemetry::metrics::{Metrics, sample},
};
use support::backend::Backend;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gw-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP/1.1 exchange on any stream; (status, body).
async fn exchange<S>(mut s: S, method: &str, path: &str, headers: &str, body: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

async fn unix(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let s = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect admin socket");
    exchange(s, method, path, "X-Gateway-Actor: cli:tester\r\n", body).await
}

async fn tcp(addr: std::net::SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    exchange(s, method, path, headers, "").await
}

async fn get(port: u16, path: &str) -> u16 {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect proxy");
    exchange(s, "GET", path, "", "").await.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real binary, L7 only (no XDP, no root needed).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_blocks_lists_unblocks_and_refuses_a_bad_reload() {
    let backend = Backend::start("app").await;
    let dir = TempDir::new("unix");
    let port = free_port();
    let file = dir.0.join("gw.yaml");
    let yaml = format!(
        "instance: admin-test\nstate_dir: {}\nlisteners: [{{ name: web, address: \"127.0.0.1:{port}\" }}]\n\
         access_log: off\nupstreams: {{ app: {{ endpoints: [\"{}\"] }} }}\n\
         routes: [{{ match: {{ prefix: / }}, upstream: app }}]\n",
        dir.0.display(),
        backend.url()
    );
    std::fs::write(&file, &yaml).expect("write config");
    let gateway = env!("CARGO_BIN_EXE_gateway");
    let socket = dir.0.join("admin-test").join("admin.sock");
    let daemon = start_daemon(&file, &socket).await;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the socket is for its owner only");
    assert_eq!(unix(&socket, "GET", "/live", "").await.0, 200);
    assert_eq!(unix(&socket, "GET", "/ready", "").await.0, 200);
    assert_eq!(get(port, "/x").await, 200);

    // Block the test's own address: listed, and the proxy refuses it at once.
    let (status, body) = unix(
        &socket,
        "POST",
        "/v1/blocks",
        r#"{"target": "127.0.0.1", "ttl": "10m", "reason": "admin test"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, list) = unix(&socket, "GET", "/v1/blocks", "").await;
    assert_eq!(status, 200);
    let rows: serde_json::Value = serde_json::from_str(&list).expect("json");
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["address"] == "127.0.0.1/32"))
        .unwrap_or_else(|| panic!("block not listed: {list}"));
    assert!(
        row["ttl_seconds"]
            .as_u64()
            .is_some_and(|t| t > 500 && t <= 600),
        "{row}"
    );
    assert_eq!(get(port, "/x").await, 403);
    let metrics = unix(&socket, "GET", "/metrics", "").await.1;
    assert_eq!(
        sample(
            &metrics,
            "gateway_rejections_total",
            &[("reason", "client_blocked"), ("stage", "defense")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "gateway_denylist_entries",
            &[("origin", "l7-proxy")]
        ),
        Some(1.0)
    );

    // Unblock: gone from the list, traffic passes; a second unblock is a 404.
    let (status, body) = unix(
        &socket,
        "DELETE",
        "/v1/blocks",
        r#"{"target": "127.0.0.1"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(unix(&socket, "GET", "/v1/blocks", "").await.1.trim(), "[]");
    assert_eq!(get(port, "/x").await, 200);
    assert_eq!(
        unix(
            &socket,
            "DELETE",
            "/v1/blocks",
            r#"{"target": "127.0.0.1"}"#
        )
        .await
        .0,
        404
    );
    // Bad input changes nothing.
    assert_eq!(
        unix(&socket, "POST", "/v1/blocks", r#"{"target": "10.0.0.300"}"#)
            .await
            .0,
        400
    );

    // The CLI goes through the daemon (no fallback warning) and sees what the API did.
    let out = Command::new(gateway)
        .args(["--config"])
        .arg(&file)
        .args(["block", "add", "192.0.2.44", "--ttl", "5m"])
        .output()
        .expect("cli");
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("no daemon answers"),
        "{out:?}"
    );
    assert!(
        unix(&socket, "GET", "/v1/blocks", "")
            .await
            .1
            .contains("192.0.2.44/32")
    );
    // Journaled before it was applied, naming the CLI user.
    let journal =
        std::fs::read_to_string(dir.0.join("admin-test").join("journal.jsonl")).expect("journal");
    let rec = journal
        .lines()
        .find(|l| l.contains("192.0.2.44/32"))
        .unwrap_or_else(|| panic!("not journaled: {journal}"));
    assert!(
        rec.contains("\"actor\":\"cli:") && rec.contains("l7-proxy"),
        "{rec}"
    );

    // A broken file: the reload is refused with file:line, the running config keeps serving.
    std::fs::write(
        &file,
        yaml.replace("access_log: off", "access_log: off\nbogus_key: 1"),
    )
    .expect("write");
    let (status, body) = unix(&socket, "POST", "/v1/reload", "").await;
    assert_eq!(status, 422, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).expect("json");
    let msg = err["error"].as_str().unwrap_or_default();
    assert!(msg.contains("gw.yaml:5:"), "{msg}");
    assert!(msg.contains("bogus_key"), "{msg}");
    assert_eq!(get(port, "/x").await, 200);

    // The log level changes at run time; a filter that does not parse changes nothing.
    let (status, body) = unix(&socket, "PUT", "/v1/log-level", r#"{"filter": "debug"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        unix(&socket, "GET", "/v1/log-level", "")
            .await
            .1
            .contains("debug")
    );
    let (status, _) = unix(&socket, "PUT", "/v1/log-level", r#"{"filter": "=[nope"}"#).await;
    assert_eq!(status, 400);
    assert!(
        unix(&socket, "GET", "/v1/log-level", "")
            .await
            .1
            .contains("debug")
    );

    // A good file reloads.
    std::fs::write(&file, &yaml).expect("write");
    assert_eq!(unix(&socket, "POST", "/v1/reload", "").await.0, 200);

    // A crash and a restart: the proxy-enforced block comes back from the journal; the one
    // lifted above does not.
    drop(daemon);
    let _daemon = start_daemon(&file, &socket).await;
    let list = unix(&socket, "GET", "/v1/blocks", "").await.1;
    assert!(list.contains("192.0.2.44/32"), "{list}");
    assert!(!list.contains("127.0.0.1/32"), "{list}");
    assert_eq!(get(port, "/x").await, 200);
}

/// `gateway run` on `file`, once its admin socket answers.
async fn start_daemon(file: &Path, socket: &Path) -> Daemon {
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["run", "--config"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gateway"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::UnixStream::connect(socket).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no admin socket at {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon
}

fn admin_config(yaml: &str) -> Result<Config, gateway::config::ConfigError> {
    Config::parse(Path::new("gw.yaml"), yaml)
}

#[test]
fn a_tcp_admin_listener_without_token_or_mtls_is_rejected_by_check() {
    let e = admin_config("instance: a\nadmin:\n  tcp: { address: \"127.0.0.1:9901\" }\n")
        .expect_err("unauthenticated TCP");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.reason.contains("never unauthenticated"), "{e}");
    admin_config(
        "instance: a\nadmin:\n  tcp: { address: \"127.0.0.1:9901\", tokens: [{ id: ops, env: GW_TOKEN }] }\n",
    )
    .expect("token-protected TCP is fine");
}

/// An admin server over TCP with one token, in process.
async fn tcp_admin(dir: &TempDir, metrics: Metrics) -> (AdminServer, Arc<L7Blocks>) {
    let token_file = dir.0.join("token");
    std::fs::write(&token_file, "correct-horse-battery-staple\n").expect("token");
    let yaml = format!(
        "admin:\n  socket: {}\n  tcp:\n    address: \"127.0.0.1:0\"\n    tokens: [{{ id: grafana, file: {} }}]\n",
        dir.0.join("admin.sock").display(),
        token_file.display()
    );
    let config = admin_config(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let l7 = Arc::new(L7Blocks::default());
    let state = AdminState {
        defense: None,
        l7: Arc::clone(&l7),
        journal: None,
        metrics: Arc::new(metrics),
        reload: None,
        ready: Arc::new(true.into()),
    };
    let socket = config
        .admin
        .socket_path(&config.state_dir, &config.instance);
    let server = AdminServer::start(&config.admin, &socket, state)
        .await
        .expect("admin starts");
    (server, l7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_admin_calls_need_the_right_bearer_token() {
    let dir = TempDir::new("tcp");
    let (server, l7) = tcp_admin(&dir, Metrics::new()).await;
    let addr = server.tcp_addr().expect("tcp bound");

    let (status, _) = tcp(addr, "GET", "/v1/blocks", "").await;
    assert_eq!(status, 401, "no token");
    let (status, _) = tcp(
        addr,
        "GET",
        "/metrics",
        "Authorization: Bearer wrong-token-of-some-length\r\n",
    )
    .await;
    assert_eq!(status, 401, "wrong token");
    let (status, _) = tcp(
        addr,
        "GET",
        "/metrics",
        "Authorization: Basic Z3JhZmFuYTp4\r\n",
    )
    .await;
    assert_eq!(status, 401, "not a bearer token");
    let auth = "Authorization: Bearer correct-horse-battery-staple\r\n";
    let (status, body) = tcp(addr, "GET", "/metrics", auth).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        sample(&body, "gateway_admin_refused_total", &[]),
        Some(3.0),
        "the three refused calls are counted: {body}"
    );

    // A change made with the token: applied, nothing changed by the refused calls.
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, body) = exchange(
        s,
        "POST",
        "/v1/blocks",
        auth,
        r#"{"target": "198.51.100.7"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(l7.list().len(), 1);
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, _) = exchange(s, "POST", "/v1/blocks", "", r#"{"target": "198.51.100.8"}"#).await;
    assert_eq!(status, 401);
    assert_eq!(l7.list().len(), 1, "a refused call changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_traffic_sent() {
    let backend = Backend::start("app").await;
    let yaml = format!(
        "listeners: [{{ name: web, address: \"127.0.0.1:0\" }}]\naccess_log: off\n\
         upstreams: {{ app: {{ endpoints: [\"{}\"] }} }}\n\
         routes: [{{ name: orders, match: {{ prefix: /orders }}, upstream: app }}]\n",
        backend.url()
    );
    let config = admin_config(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut metrics = Metrics::new();
    let hooks = DefenseHooks {
        metrics: Some(metrics.proxy()),
        ..DefenseHooks::default()
    };
    let proxy = Proxy::start_with(&config, hooks).await.expect("proxy");
    metrics.register_collector(gateway::telemetry::metrics::upstream_collector(
        proxy.upstream_health(),
    ));
    let port = proxy.addr("web").expect("bound").port();
    let dir = TempDir::new("metrics");
    let (server, _) = tcp_admin(&dir, metrics).await;

    const N: usize = 7;
    const M: usize = 3;
    for i in 0..N {
        assert_eq!(get(port, &format!("/orders/{i}")).await, 200);
    }
    for i in 0..M {
        assert_eq!(get(port, &format!("/nothing/{i}")).await, 404);
    }
    let (status, text) = tcp(
        server.tcp_addr().expect("tcp"),
        "GET",
        "/metrics",
        "Authorization: Bearer correct-horse-battery-staple\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let get = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(
        get(
            "gateway_http_requests_total",
            &[("route", "orders"), ("method", "GET"), ("status", "200")]
        ),
        Some(N as f64),
        "{text}"
    );
    assert_eq!(
        get(
            "gateway_http_requests_total",
            &[("route", "none"), ("method", "GET"), ("status", "404")]
        ),
        Some(M as f64)
    );
    assert_eq!(
        get(
            "gateway_rejections_total",
            &[("reason", "route_not_found"), ("stage", "proxy")]
        ),
        Some(M as f64)
    );
    assert_eq!(
        get(
            "gateway_http_request_duration_seconds_count",
            &[("route", "orders")]
        ),
        Some(N as f64)
    );
    assert_eq!(
        get(
            "gateway_upstream_endpoint_up",
            &[("upstream", "app"), ("endpoint", backend.url().as_str())]
        ),
        Some(1.0)
    );
    // Nothing else was answered.
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("gateway_http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(total, (N + M) as f64, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_admin_with_required_client_certificates_names_the_certificate() {
    let pki = support::pki::Pki::new();
    let server_cert = pki.server("admin", &["admin.test"]);
    let client = pki.client("ops", "ops-bot", Vec::new());
    let dir = TempDir::new("mtls");
    let yaml = format!(
        "admin:\n  socket: {}\n  tcp:\n    address: \"127.0.0.1:0\"\n    tls:\n      certificates: [{{ cert: {}, key: {} }}]\n      client_auth: required\n      client_ca: {}\n",
        dir.0.join("admin.sock").display(),
        server_cert.cert.display(),
        server_cert.key.display(),
        pki.ca_pem.display()
    );
    let config = admin_config(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let l7 = Arc::new(L7Blocks::default());
    let state = AdminState {
        defense: None,
        l7: Arc::clone(&l7),
        journal: None,
        metrics: Arc::new(Metrics::new()),
        reload: None,
        ready: Arc::new(true.into()),
    };
    let socket = config
        .admin
        .socket_path(&config.state_dir, &config.instance);
    let server = AdminServer::start(&config.admin, &socket, state)
        .await
        .expect("admin starts");
    let addr = server.tcp_addr().expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("admin.test").expect("name");
    let versions = rustls::ALL_VERSIONS;

    // With the certificate: the change is made and the actor names the certificate.
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(versions, &[], Some(&client))));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .expect("handshake");
    let (status, body) = exchange(
        tls,
        "POST",
        "/v1/blocks",
        "",
        r#"{"target": "203.0.113.9"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let actor = answer["actor"].as_str().unwrap_or_default();
    assert!(
        actor.starts_with("admin:cert:") && actor.contains("ops-bot"),
        "{answer}"
    );
    assert_eq!(l7.list().len(), 1);

    // Without one: no session, no answer, nothing changed.
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(versions, &[], None)));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let refused = match connector.connect(name, tcp).await {
        Err(_) => true,
        // TLS 1.3: the server's refusal arrives after the client's handshake finished.
        Ok(tls) => exchange(tls, "GET", "/v1/blocks", "", "").await.0 == 0,
    };
    assert!(refused, "a client without a certificate was served");
    assert_eq!(l7.list().len(), 1);
}
